"""Multi-head self- and cross-attention on top of :func:`formers.core.attention.attention`.

Notation: ``b`` batch, ``n`` query length, ``m`` key/value (context) length, ``h`` heads, ``d`` head_dim.
Mask conventions are those of :mod:`formers.kernels.masks`: ``attn_bias`` is an additive float bias broadcastable to
``(b, h, n, m)``; ``key_padding_mask`` is bool ``(b, m)`` with ``True`` = padding key; ``causal`` is bottom-right
aligned; a query that sees no key outputs zeros (before the output projection).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.attention import AttentionBackendMixin, attention
from formers.core.layers._checks import check_positive, check_probability, check_tokens, resolve_head_dim
from formers.core.layers.create import LayerType, get_norm_layer
from formers.core.layers.drop import Dropout
from formers.core.layers.kv_cache import KVCache
from formers.core.varlen import varlen_attention

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(AttentionBackendMixin, nn.Module):
    """Multi-head attention (Vaswani et al. 2017) with a pluggable kernel backend.

    Built as self-attention when ``kv_dim is None``: one fused ``qkv`` projection of ``x``. Built as cross-attention
    when ``kv_dim`` is given: a ``q`` projection of ``x`` and a fused ``kv`` projection of ``context`` (whose width
    is ``kv_dim``; pass ``kv_dim=dim`` for a same-width context). The fused weights stack ``[q; k; v]`` (``[k; v]``)
    with heads contiguous, the layout of :class:`torch.nn.MultiheadAttention` and timm.

    Args:
        dim: width of the queries ``x`` and of the output.
        num_heads: number of attention heads.
        qkv_bias: add biases to the input projections.
        attn_drop: dropout on the attention probabilities (training only).
        proj_drop: dropout after the output projection.
        head_dim: width of each head (default ``dim // num_heads``, which must then divide evenly).
        kv_dim: width of ``context``; ``None`` builds a self-attention layer.
        qk_norm: normalise queries and keys per head with ``norm_layer`` (ViT-22B, Dehghani et al. 2023).
        norm_layer: norm used by ``qk_norm``.
        backend: attention backend name, ``"auto"`` by default (see ``python -m formers.core.attention``); it serves
            the dense and the packed calls alike (:class:`~formers.core.attention.AttentionBackendMixin`).

    Shapes:
        - x: ``(batch, len_q, dim)``
        - context: ``(batch, len_k, kv_dim)`` (cross-attention only)
        - attn_bias: float, broadcastable to ``(batch, num_heads, len_q, len_k)``
        - key_padding_mask: bool ``(batch, len_k)``, ``True`` = ignore this key
        - output: ``(batch, len_q, dim)``
        - incremental decoding (``kv_cache`` given, self-attention only): x ``(batch, new, dim)``; the keys and values
          of ``x`` are appended to the cache and the queries attend to all of it (``len_k = cache length``; a
          ``key_padding_mask`` then covers the cached keys and the new ones). See :mod:`formers.core.layers.kv_cache`
        - ``num_queries=n`` (dense self-attention): output ``(batch, n, dim)``, the outputs of the first ``n`` tokens
          only; every token is still a key and a value. For a last layer whose other rows nobody reads (iTransformer's
          time-feature tokens): the query and output projections of those rows are never computed
        - packed self-attention (``cu_seqlens`` given): x ``(total_tokens, dim)``, cu_seqlens int ``(batch + 1,)``,
          output ``(total_tokens, dim)``; each sequence attends only to itself (:func:`formers.core.varlen.pack`);
          attn_bias, if any, is packed per sequence: float ``(num_heads, sum_i len_i ** 2)``, sequence ``i``'s
          ``(len_i, len_i)`` block row-major (:func:`formers.core.varlen.varlen_attention`)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        head_dim: int | None = None,
        kv_dim: int | None = None,
        qk_norm: bool = False,
        norm_layer: LayerType = "layernorm",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        head_dim = resolve_head_dim(owner, dim, num_heads, head_dim)
        check_positive(owner, kv_dim=kv_dim)
        check_probability(owner, attn_drop=attn_drop, proj_drop=proj_drop)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.kv_dim = kv_dim
        self.backend = backend
        self.attn_drop = attn_drop
        inner = num_heads * head_dim
        if kv_dim is None:
            self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, inner, bias=qkv_bias)
            self.kv = nn.Linear(kv_dim, 2 * inner, bias=qkv_bias)
        norm = get_norm_layer(norm_layer)
        self.q_norm = norm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = Dropout(proj_drop)

    @property
    def is_cross_attention(self) -> bool:
        return self.kv_dim is not None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        attn_bias: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        kv_cache: KVCache | None = None,
        num_queries: int | None = None,
    ) -> Tensor:
        if num_queries is not None:
            self._check_num_queries(num_queries, x, context, kv_cache, cu_seqlens)
        if cu_seqlens is not None:
            if kv_cache is not None:
                raise ValueError(f"{type(self).__name__}: kv_cache and cu_seqlens (packed tokens) cannot be combined")
            return self._forward_packed(x, context, attn_bias, key_padding_mask, causal, cu_seqlens, max_seqlen)
        self._check_inputs(x, context)
        q, k, v = self._project(x, context) if num_queries is None else self._project_first(x, num_queries)
        q, k = self.q_norm(q), self.k_norm(k)
        if kv_cache is not None:
            k, v = self._cached(kv_cache, k, v)
        out = attention(
            q,
            k,
            v,
            attn_bias=attn_bias,
            causal=causal,
            key_padding_mask=key_padding_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            backend=self.backend,
        )
        out = out.transpose(1, 2).flatten(2)  # (b, h, n, d) -> (b, n, h * d)
        return self.proj_drop(self.proj(out))

    def _cached(self, kv_cache: KVCache, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the step's keys/values to ``kv_cache`` and return all of them (self-attention only)."""
        if self.is_cross_attention:
            raise ValueError(f"{type(self).__name__}: kv_cache caches self-attention only")
        if not isinstance(kv_cache, KVCache):
            raise TypeError(f"{type(self).__name__}: kv_cache must be a KVCache, got {type(kv_cache).__name__}")
        return kv_cache.append(k, v)

    def _forward_packed(
        self,
        x: Tensor,
        context: Tensor | None,
        attn_bias: Tensor | None,
        key_padding_mask: Tensor | None,
        causal: bool,
        cu_seqlens: Tensor,
        max_seqlen: int | None,
    ) -> Tensor:
        """Self-attention on packed tokens ``(total, dim)``, block-diagonal over the sequences of ``cu_seqlens``, with
        an optional packed per-sequence ``attn_bias`` (checked by :func:`~formers.core.varlen.varlen_attention`)."""
        self._check_packed_inputs(x, context, attn_bias, key_padding_mask)
        qkv = self.qkv(x).reshape(x.shape[0], 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(1)  # each (total, h, d)
        q, k = self.q_norm(q), self.k_norm(k)
        out = varlen_attention(
            q,
            k,
            v,
            cu_seqlens,
            max_seqlen_q=max_seqlen,
            max_seqlen_k=max_seqlen,
            causal=causal,
            dropout_p=self.attn_drop if self.training else 0.0,
            attn_bias=attn_bias,
            backend=self.backend,
        )
        return self.proj_drop(self.proj(out.flatten(1)))

    def _check_packed_inputs(
        self, x: Tensor, context: Tensor | None, attn_bias: Tensor | None, key_padding_mask: Tensor | None
    ) -> None:
        name = type(self).__name__
        if self.is_cross_attention or context is not None:
            raise ValueError(f"{name}: cu_seqlens (packed tokens) is supported for self-attention only")
        if key_padding_mask is not None:
            raise ValueError(f"{name}: packed tokens (cu_seqlens) carry no padding; pass no key_padding_mask")
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{name}: with cu_seqlens, x must be packed (total_tokens, {self.dim}), got {getattr(x, 'shape', x)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating tensor, got {x.dtype}")

    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``q``: ``(b, h, n, d)``; ``k``, ``v``: ``(b, h, m, d)``."""
        batch, len_q, _ = x.shape
        if context is None:
            qkv = self.qkv(x).reshape(batch, len_q, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            return qkv.unbind(0)
        q = self.q(x).reshape(batch, len_q, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(batch, context.shape[1], 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        return q, k, v

    def _project_first(self, x: Tensor, num_queries: int) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention ``q`` of the first ``num_queries`` tokens ``(b, h, n, d)``; ``k``, ``v`` of all of them."""
        batch, length, _ = x.shape
        inner = self.num_heads * self.head_dim
        weight_q, weight_kv = self.qkv.weight.split([inner, 2 * inner])
        bias_q, bias_kv = (None, None) if self.qkv.bias is None else self.qkv.bias.split([inner, 2 * inner])
        q = F.linear(x[:, :num_queries], weight_q, bias_q)
        q = q.reshape(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
        kv = F.linear(x, weight_kv, bias_kv).reshape(batch, length, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _check_num_queries(
        self, num_queries: int, x: Tensor, context: Tensor | None, kv_cache: KVCache | None, cu_seqlens: Tensor | None
    ) -> None:
        name = type(self).__name__
        if self.is_cross_attention or context is not None or kv_cache is not None or cu_seqlens is not None:
            raise ValueError(f"{name}: num_queries serves dense self-attention only (no context, kv_cache, cu_seqlens)")
        if isinstance(num_queries, bool) or not isinstance(num_queries, int) or not 1 <= num_queries <= x.shape[-2]:
            raise ValueError(f"{name}: num_queries must be an integer in [1, {x.shape[-2]}], got {num_queries!r}")

    def _check_inputs(self, x: Tensor, context: Tensor | None) -> None:
        name = type(self).__name__
        check_tokens(name, "x", x, self.dim)
        if self.is_cross_attention:
            if context is None:
                raise ValueError(f"{name}: built for cross-attention (kv_dim={self.kv_dim}); pass a context tensor")
            check_tokens(name, "context", context, self.kv_dim)
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"{name}: x and context batch sizes differ: {x.shape[0]} vs {context.shape[0]}")
            if context.dtype != x.dtype:
                raise TypeError(f"{name}: x and context dtypes differ: {x.dtype} vs {context.dtype}")
        elif context is not None:
            raise ValueError(
                f"{name}: built for self-attention (kv_dim=None); build it with kv_dim to attend a context"
            )

    def extra_repr(self) -> str:
        kind = "self-attention" if self.kv_dim is None else f"cross-attention, kv_dim={self.kv_dim}"
        return f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, {kind}, backend={self.backend!r}"

"""Transformer blocks: self-attention + MLP (:class:`TransformerBlock`), cross-attention + MLP
(:class:`CrossAttentionBlock`), each pre-norm (``norm_first=True``) or post-norm (``norm_first=False``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from formers.core.layers._checks import check_tokens
from formers.core.layers.attention import MultiHeadAttention
from formers.core.layers.create import LayerType, get_norm_layer
from formers.core.layers.drop import DropPath, LayerScale, drop_path
from formers.core.layers.kv_cache import KVCache
from formers.core.layers.mlp import get_mlp_layer

__all__ = ["TransformerBlock", "CrossAttentionBlock"]


def _residual_branch_extras(dim: int, drop_path: float, layer_scale_init: float | None) -> tuple[nn.Module, nn.Module]:
    scale = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
    path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
    return scale, path


def _build_mlp(
    dim: int,
    mlp_ratio: float,
    mlp_layer: str | Callable[..., nn.Module],
    act_layer: LayerType | None,
    drop: float,
) -> nn.Module:
    # act_layer=None keeps the MLP's own default (GELU for "mlp"/"geglu", SiLU for "swiglu", sigmoid for "glu").
    act = {} if act_layer is None else {"act_layer": act_layer}
    return get_mlp_layer(mlp_layer)(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop, **act)


def _packed_drop_path(module: nn.Module, cu_seqlens: Tensor) -> Callable[[Tensor], Tensor]:
    """Stochastic depth per *sequence* on packed tokens ``(total, dim)`` (one draw per sequence, not per token)."""
    if not isinstance(module, DropPath) or not module.training or module.drop_prob == 0.0:
        return module
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()

    def apply(x: Tensor) -> Tensor:
        keep = drop_path(x.new_ones(lengths.numel(), 1), module.drop_prob, True, module.scale_by_keep)
        return x * keep.repeat_interleave(lengths, dim=0, output_size=x.shape[0])

    return apply


class TransformerBlock(nn.Module):
    """Self-attention then MLP, each in a residual branch (Vaswani et al. 2017).

    Pre-norm (``norm_first=True``; GPT-2, ViT)::

        x = x + drop_path(ls1(attn(norm1(x))))
        x = x + drop_path(ls2(mlp(norm2(x))))

    Post-norm (``norm_first=False``; original Transformer, BERT)::

        x = norm1(x + drop_path(ls1(attn(x))))
        x = norm2(x + drop_path(ls2(mlp(x))))

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim`` (for gated MLPs: width of gate and value each).
        mlp_layer: ``"mlp"``, ``"glu"``, ``"geglu"``, ``"swiglu"`` or an MLP constructor (see :mod:`.mlp`).
        qkv_bias: biases in the attention input projections.
        qk_norm: normalise queries and keys per head.
        proj_drop: dropout after the attention output projection and inside the MLP.
        attn_drop: dropout on the attention probabilities.
        drop_path: stochastic depth rate of both residual branches.
        layer_scale_init: initial :class:`LayerScale` value (CaiT); ``None`` disables layer scale.
        norm_first: pre-norm when ``True``, post-norm when ``False``.
        norm_layer: norm name or constructor (``"layernorm"``, ``"rmsnorm"``, ``partial(nn.LayerNorm, eps=1e-6)``).
        act_layer: MLP activation; ``None`` keeps the MLP's default.
        backend: attention backend name.

    Shapes:
        - x: ``(batch, length, dim)``
        - attn_bias: float, broadcastable to ``(batch, num_heads, length, length)``
        - key_padding_mask: bool ``(batch, length)``, ``True`` = padding
        - output: ``(batch, length, dim)``
        - packed (``cu_seqlens`` given): x and output ``(total_tokens, dim)``, cu_seqlens int ``(batch + 1,)``; no
          attn_bias / key_padding_mask (see :mod:`formers.core.varlen`)
        - incremental decoding (``kv_cache`` given): x and output ``(batch, new, dim)``, the attention sees the
          cached tokens too (:class:`~formers.core.layers.KVCache`; key_padding_mask ``(batch, cached + new)``)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mlp_layer: str | Callable[..., nn.Module] = "mlp",
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = None,
        norm_first: bool = True,
        norm_layer: LayerType = "layernorm",
        act_layer: LayerType | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm_first = norm_first
        norm = get_norm_layer(norm_layer)
        self.norm1 = norm(dim)
        self.attn = MultiHeadAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            norm_layer=norm_layer,
            backend=backend,
        )
        self.ls1, self.drop_path1 = _residual_branch_extras(dim, drop_path, layer_scale_init)
        self.norm2 = norm(dim)
        self.mlp = _build_mlp(dim, mlp_ratio, mlp_layer, act_layer, proj_drop)
        self.ls2, self.drop_path2 = _residual_branch_extras(dim, drop_path, layer_scale_init)

    def forward(
        self,
        x: Tensor,
        *,
        attn_bias: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        masks = {"attn_bias": attn_bias, "key_padding_mask": key_padding_mask, "causal": causal}
        if kv_cache is not None:  # only when given: attention layers swapped in by users need not know the argument
            masks["kv_cache"] = kv_cache
        drop1, drop2 = self.drop_path1, self.drop_path2
        if cu_seqlens is None:
            check_tokens(type(self).__name__, "x", x, self.dim)  # before the norm, which would fail less clearly
        else:  # packed tokens (total, dim): norms and MLP run per token, attention per sequence
            masks.update(cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
            drop1, drop2 = (_packed_drop_path(m, cu_seqlens) for m in (drop1, drop2))
        if self.norm_first:
            x = x + drop1(self.ls1(self.attn(self.norm1(x), **masks)))
            return x + drop2(self.ls2(self.mlp(self.norm2(x))))
        x = self.norm1(x + drop1(self.ls1(self.attn(x, **masks))))
        return self.norm2(x + drop2(self.ls2(self.mlp(x))))


class CrossAttentionBlock(nn.Module):
    """Cross-attention from ``x`` to ``context`` then MLP, each in a residual branch (Perceiver, decoder layers).

    Pre-norm (``norm_first=True``) normalises the context with its own norm, as in Perceiver IO::

        x = x + drop_path(ls1(attn(norm1(x), norm_context(context))))
        x = x + drop_path(ls2(mlp(norm2(x))))

    Post-norm (``norm_first=False``; original Transformer decoder) leaves the context as it is::

        x = norm1(x + drop_path(ls1(attn(x, context))))
        x = norm2(x + drop_path(ls2(mlp(x))))

    Args:
        dim: width of ``x``.
        num_heads: attention heads.
        kv_dim: width of ``context`` (default ``dim``).
        mlp_ratio, mlp_layer, qkv_bias, qk_norm, proj_drop, attn_drop, drop_path, layer_scale_init, norm_first,
            norm_layer, act_layer, backend: as in :class:`TransformerBlock`.

    Shapes:
        - x: ``(batch, len_q, dim)``
        - context: ``(batch, len_k, kv_dim)``
        - attn_bias: float, broadcastable to ``(batch, num_heads, len_q, len_k)``
        - key_padding_mask: bool ``(batch, len_k)``, ``True`` = padding context token
        - output: ``(batch, len_q, dim)``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_dim: int | None = None,
        mlp_ratio: float = 4.0,
        mlp_layer: str | Callable[..., nn.Module] = "mlp",
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = None,
        norm_first: bool = True,
        norm_layer: LayerType = "layernorm",
        act_layer: LayerType | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        self.dim, self.kv_dim = dim, kv_dim
        self.norm_first = norm_first
        norm = get_norm_layer(norm_layer)
        self.norm1 = norm(dim)
        self.norm_context = norm(kv_dim) if norm_first else nn.Identity()
        self.attn = MultiHeadAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            kv_dim=kv_dim,
            norm_layer=norm_layer,
            backend=backend,
        )
        self.ls1, self.drop_path1 = _residual_branch_extras(dim, drop_path, layer_scale_init)
        self.norm2 = norm(dim)
        self.mlp = _build_mlp(dim, mlp_ratio, mlp_layer, act_layer, proj_drop)
        self.ls2, self.drop_path2 = _residual_branch_extras(dim, drop_path, layer_scale_init)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        *,
        attn_bias: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        check_tokens(type(self).__name__, "x", x, self.dim)
        check_tokens(type(self).__name__, "context", context, self.kv_dim)
        masks = {"attn_bias": attn_bias, "key_padding_mask": key_padding_mask, "causal": causal}
        if self.norm_first:
            attn = self.attn(self.norm1(x), self.norm_context(context), **masks)
            x = x + self.drop_path1(self.ls1(attn))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        x = self.norm1(x + self.drop_path1(self.ls1(self.attn(x, context, **masks))))
        return self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))

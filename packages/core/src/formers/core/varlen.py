"""Padding-free ("varlen") batches: pack a padded batch into one token tensor, attend block-diagonally, unpack.

A padded batch ``(batch, seq_len, ...)`` with a ``key_padding_mask`` (``True`` = padding) becomes a packed tensor
``(total_tokens, ...)`` holding only the real tokens, sequence after sequence, plus ``cu_seqlens``: int32 cumulative
offsets of length ``batch + 1`` starting at 0 (FlashAttention's varlen layout). Linear layers, norms and MLPs run on
the packed tokens unchanged; attention runs through :func:`varlen_attention`, where each sequence attends only to
itself.

Backends: those of :mod:`formers.core.attention.backends` that have a varlen kernel (``python -m
formers.core.attention`` lists them): the same names as for dense calls (``"reference"``, ``"sdpa"`` - one fused SDPA
call per sequence, ``auto`` on CPU -, ``"xformers"`` and ``"triton"`` - ``auto`` on CUDA -, ``"cpu_bf16"`` - ``auto``
for bf16 training on a CPU with native bf16 (without it ``auto`` computes bf16 calls in fp32) -, ``"cpu_matmul"``)
plus the packed-only ``"sdpa_loop"`` (the kernel of ``"sdpa"``), ``"sdpa_blockmask"`` and ``"nested"``.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from formers.core.attention import AttentionCall, forced_backend
from formers.core.attention.api import check_attention_sizes, check_scale, fp32_compute
from formers.core.attention.backends import dispatch
from formers.kernels.masks import check_key_padding_mask

__all__ = [
    "PackedBatch",
    "pack",
    "unpack",
    "cu_seqlens_from_lengths",
    "lengths_from_cu_seqlens",
    "varlen_attention",
]


# ------------------------------------------------------------------------------------------------ packing helpers


@dataclass(frozen=True)
class PackedBatch:
    """A packed batch and what is needed to unpack it.

    Shapes:
        - data: ``(total, ...)``
        - cu_seqlens: int32 ``(batch + 1,)``
        - indices: int64 ``(total,)``, flat positions of the real tokens in the padded ``(batch * seq_len)`` layout
    """

    data: Tensor
    cu_seqlens: Tensor
    max_seqlen: int
    indices: Tensor
    batch: int
    seq_len: int

    @classmethod
    def from_padded(cls, x: Tensor, key_padding_mask: Tensor | None) -> PackedBatch:
        """Pack ``x`` ``(batch, seq_len, ...)``; ``key_padding_mask`` ``(batch, seq_len)``, ``True`` = padding."""
        data, cu_seqlens, max_seqlen, indices = pack(x, key_padding_mask)
        return cls(data, cu_seqlens, max_seqlen, indices, x.shape[0], x.shape[1])

    def unpack(self, packed: Tensor | None = None) -> Tensor:
        """Scatter ``packed`` (default: :attr:`data`) back to ``(batch, seq_len, ...)`` with zeros at padding."""
        return unpack(self.data if packed is None else packed, self.indices, self.batch, self.seq_len)


def cu_seqlens_from_lengths(lengths: Tensor | list[int]) -> Tensor:
    """Cumulative offsets ``[0, l0, l0 + l1, ...]`` as int32.

    Shapes:
        - lengths: ``(batch,)`` non-negative integers
        - output: int32 ``(batch + 1,)``
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(
            f"cu_seqlens_from_lengths: lengths must be a 1-D integer tensor, got {lengths.dtype} "
            f"of shape {tuple(lengths.shape)}"
        )
    if bool((lengths < 0).any()):
        raise ValueError(f"cu_seqlens_from_lengths: lengths must be >= 0, got {lengths.tolist()}")
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = lengths.cumsum(0)
    return cu


def lengths_from_cu_seqlens(cu_seqlens: Tensor) -> Tensor:
    """Sequence lengths ``(batch,)`` from offsets ``(batch + 1,)``."""
    return cu_seqlens[1:] - cu_seqlens[:-1]


def pack(x: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor, int, Tensor]:
    """Keep the real tokens of a padded batch, sequence after sequence.

    Real tokens need not be left-aligned: whatever ``key_padding_mask`` marks ``False`` is kept, in order.

    Args:
        x: padded batch.
        key_padding_mask: bool, ``True`` = padding; ``None`` keeps every token.

    Returns:
        ``(packed, cu_seqlens, max_seqlen, indices)``; ``indices`` feeds :func:`unpack`.

    Shapes:
        - x: ``(batch, seq_len, ...)``
        - key_padding_mask: bool ``(batch, seq_len)``
        - packed: ``(total, ...)``; cu_seqlens: int32 ``(batch + 1,)``; indices: int64 ``(total,)``
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"pack: x must be a tensor (batch, seq_len, ...), got {getattr(x, 'shape', type(x))}")
    batch, seq_len = x.shape[:2]
    if key_padding_mask is None:
        key_padding_mask = torch.zeros(batch, seq_len, dtype=torch.bool, device=x.device)
    check_key_padding_mask("pack", key_padding_mask, (batch, seq_len), x.device)
    keep = ~key_padding_mask
    lengths = keep.sum(dim=1)
    indices = keep.flatten().nonzero().flatten()
    packed = x.flatten(0, 1)[indices]
    max_seqlen = int(lengths.max()) if batch else 0
    return packed, cu_seqlens_from_lengths(lengths), max_seqlen, indices


def unpack(packed: Tensor, indices: Tensor, batch: int, seq_len: int) -> Tensor:
    """Scatter packed tokens back into a padded batch; padding positions are zeros. Differentiable.

    Shapes:
        - packed: ``(total, ...)``; indices: int64 ``(total,)`` from :func:`pack`
        - output: ``(batch, seq_len, ...)``
    """
    if packed.shape[0] != indices.shape[0]:
        raise ValueError(f"unpack: packed has {packed.shape[0]} tokens but indices has {indices.shape[0]}")
    out = packed.new_zeros(batch * seq_len, *packed.shape[1:])
    out = out.index_copy(0, indices, packed)
    return out.unflatten(0, (batch, seq_len))


# ---------------------------------------------------------------------------------------------------- dispatch


def varlen_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor | None = None,
    *,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    attn_bias: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Block-diagonal attention over packed sequences: sequence ``i`` of ``q`` attends to sequence ``i`` of ``k``.

    Args:
        q, k, v: packed query, key and value.
        cu_seqlens_q: int32/int64 offsets of the query sequences (``[0, ..., total_q]``, non-decreasing).
        cu_seqlens_k: offsets of the key sequences; default ``cu_seqlens_q`` (self-attention).
        max_seqlen_q, max_seqlen_k: accepted for FlashAttention-style call sites; unused by the CPU kernels.
        causal: within each sequence, query ``i`` sees keys ``j <= i + len_k - len_q`` (bottom-right aligned).
        scale: score scale, default ``head_dim ** -0.5``.
        dropout_p: dropout on the attention probabilities (training only).
        attn_bias: packed per-sequence additive float bias (``-inf`` removes a key): sequence ``i``'s ``(len_q_i,
            len_k_i)`` block per head, flattened row-major, the blocks concatenated in sequence order (Graphormer's
            per-graph spatial bias). Served by the per-sequence backends (``reference``, ``sdpa`` / ``sdpa_loop``,
            ``cpu_bf16``, ``cpu_matmul``); the others refuse the call saying so.
        backend: ``"auto"`` or a registered backend with a varlen kernel; a forced backend that cannot serve the
            call (or has no varlen kernel) raises :class:`~formers.core.attention.BackendUnavailableError` saying
            why. Under ``"auto"``, a backend forced with :func:`~formers.core.attention.use_backend` is used.

    Shapes:
        - q: ``(total_q, heads, head_dim)``; k: ``(total_k, heads, head_dim)``; v: ``(total_k, heads, head_dim_v)``
        - cu_seqlens_q, cu_seqlens_k: ``(batch + 1,)``
        - attn_bias: float ``(heads, sum_i len_q_i * len_k_i)``
        - output: ``(total_q, heads, head_dim_v)``; a query that sees no key yields zeros
    """
    cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    call = _validate(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, dropout_p, attn_bias)
    check_scale("varlen_attention", scale)
    del max_seqlen_q, max_seqlen_k
    impl, in_fp32 = dispatch(call, forced_backend() if backend == "auto" else backend)
    dtype, compute = v.dtype, contextlib.nullcontext()
    if in_fp32:  # bf16 on a CPU that emulates it: the fp32 kernels are many times faster
        q, k, v, compute = q.float(), k.float(), v.float(), fp32_compute()
        attn_bias = None if attn_bias is None else attn_bias.float()
    bias = {} if attn_bias is None else {"attn_bias": attn_bias}  # kernels without bias support never see the key
    with compute:
        out = impl.varlen_kernel(
            q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale, dropout_p=dropout_p, **bias
        )
    return out.to(dtype)


def _validate(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_q: Tensor,
    cu_k: Tensor,
    causal: bool,
    dropout_p: float,
    attn_bias: Tensor | None = None,
) -> AttentionCall:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"varlen_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(
                f"varlen_attention: {name} must have rank 3 (total_tokens, heads, head_dim), got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"varlen_attention: {name} must be a floating tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"varlen_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"varlen_attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape[1] != q.shape[1] or v.shape[1] != q.shape[1]:
        raise ValueError(f"varlen_attention: q, k, v must share heads, got {q.shape[1]}, {k.shape[1]}, {v.shape[1]}")
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"varlen_attention: q and k head_dim differ: {q.shape[2]} vs {k.shape[2]}")
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"varlen_attention: k and v token counts differ: {k.shape[0]} vs {v.shape[0]}")
    check_attention_sizes("varlen_attention", heads=q.shape[1], head_dim=q.shape[2], head_dim_v=v.shape[2])
    lens_q = _check_cu_seqlens("cu_seqlens_q", cu_q, q)
    lens_k = _check_cu_seqlens("cu_seqlens_k", cu_k, k)
    if cu_q.numel() != cu_k.numel():
        raise ValueError(
            f"varlen_attention: cu_seqlens_q and cu_seqlens_k describe different batch sizes: "
            f"{cu_q.numel() - 1} vs {cu_k.numel() - 1}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"varlen_attention: dropout_p must be in [0, 1), got {dropout_p}")
    heads = q.shape[1]
    pairs = sum(a * b for a, b in zip(lens_q, lens_k, strict=True))
    if attn_bias is not None:
        _check_packed_bias(attn_bias, q, heads, pairs, lens_q, lens_k)
    return AttentionCall(
        device_type=q.device.type,
        dtype=q.dtype,
        len_q=max(lens_q),
        len_k=max(lens_k),
        head_dim=q.shape[2],
        has_bias=attn_bias is not None,
        causal=causal,
        has_padding=False,
        dropout=dropout_p > 0.0,
        needs_grad=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)),
        batch=len(lens_q),
        heads=heads,
        bias_needs_grad=torch.is_grad_enabled() and attn_bias is not None and attn_bias.requires_grad,
        packed=True,
        num_scores=heads * pairs,
    )


def _check_packed_bias(bias: Tensor, q: Tensor, heads: int, pairs: int, lens_q: list[int], lens_k: list[int]) -> None:
    """The packed bias must be a float ``(heads, sum_i len_q_i * len_k_i)`` tensor on the device of ``q``."""
    if not isinstance(bias, Tensor):
        raise TypeError(f"varlen_attention: attn_bias must be a torch.Tensor, got {type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"varlen_attention: attn_bias must be a floating tensor, got {bias.dtype}")
    if bias.device != q.device:
        raise ValueError(f"varlen_attention: attn_bias is on {bias.device} but q is on {q.device}")
    if tuple(bias.shape) != (heads, pairs):
        shown = ", ".join(f"{a}x{b}" for a, b in zip(lens_q[:4], lens_k[:4], strict=True))
        more = ", ..." if len(lens_q) > 4 else ""
        raise ValueError(
            f"varlen_attention: a packed attn_bias must have shape (heads, sum_i len_q_i * len_k_i) = "
            f"({heads}, {pairs}) (blocks {shown}{more}, each row-major, in sequence order), got {tuple(bias.shape)}"
        )


def _check_cu_seqlens(name: str, cu: Tensor, packed: Tensor) -> list[int]:
    """Check the offsets against the packed tensor; return the sequence lengths (one host sync)."""
    if not isinstance(cu, Tensor):
        raise TypeError(f"varlen_attention: {name} must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"varlen_attention: {name} must be int32 or int64, got {cu.dtype}")
    if cu.device != packed.device:
        raise ValueError(f"varlen_attention: {name} is on {cu.device} but the packed tensors are on {packed.device}")
    if cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(
            f"varlen_attention: {name} must be 1-D with batch + 1 >= 2 entries, got shape {tuple(cu.shape)}"
        )
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"varlen_attention: {name} must start at 0, got {values[0]}")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"varlen_attention: {name} must be non-decreasing, got {values}")
    if values[-1] != packed.shape[0]:
        raise ValueError(
            f"varlen_attention: {name} ends at {values[-1]} but the packed tensor has {packed.shape[0]} tokens"
        )
    return [b - a for a, b in itertools.pairwise(values)]

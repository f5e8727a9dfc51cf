"""Padding-free ("varlen") batches: pack a padded batch into one token tensor, attend block-diagonally, unpack.

A padded batch ``(batch, seq_len, ...)`` with a ``key_padding_mask`` (``True`` = padding) becomes a packed tensor
``(total_tokens, ...)`` holding only the real tokens, sequence after sequence, plus ``cu_seqlens``: int32 cumulative
offsets of length ``batch + 1`` starting at 0 (FlashAttention's varlen layout). Linear layers, norms and MLPs run on
the packed tokens unchanged; attention runs through :func:`varlen_attention`, where each sequence attends only to
itself.

Backends of :func:`varlen_attention` (``backend=``):

* ``"reference"``: plain math per sequence, the test oracle (any device).
* ``"sdpa_loop"`` (alias ``"sdpa"``): one fused SDPA call per sequence (any device); ``auto`` picks it on CPU: fastest
  measured at every size tried, forward and backward (``benchmarks/varlen.py``).
* ``"sdpa_blockmask"``: one SDPA call over the packed batch with a dense ``(total_q, total_k)`` block-diagonal mask
  (any device; memory ``O(total²)``); 3-4x slower than the loop on CPU, kept as a second implementation.
* ``"nested"``: SDPA on ``torch.nested`` jagged tensors (no causal); 4-10x slower than the loop on CPU in torch 2.10.
* ``"xformers"``: xformers ``BlockDiagonalMask`` + ``memory_efficient_attention``, CUDA only; ``auto`` on CUDA.
* ``"cpu_bf16"``: bf16 matmuls with fp32 softmax statistics per sequence (:mod:`formers.kernels.matmul`);
  ``auto`` for bf16 training on CPU (SDPA's bf16 backward is slower than its fp32 one there); no dropout.
* ``"triton"``: the fused Triton kernel over ``cu_seqlens`` (:mod:`formers.kernels.triton.attention`), CUDA (CPU
  only under ``TRITON_INTERPRET=1``); ``auto`` on CUDA when xformers cannot serve the call; no dropout.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from formers.core.attention import BackendUnavailableError, forced_backend
from formers.kernels.masks import check_key_padding_mask
from formers.kernels.triton import triton_device_reason, triton_unavailable_reason
from formers.kernels.varlen import (
    varlen_bf16_matmul_attention,
    varlen_nested_attention,
    varlen_reference_attention,
    varlen_sdpa_blockmask_attention,
    varlen_sdpa_loop_attention,
    varlen_xformers_attention,
)
from formers.kernels.xformers_ops import xformers_unavailable_reason

__all__ = [
    "PackedBatch",
    "pack",
    "unpack",
    "cu_seqlens_from_lengths",
    "lengths_from_cu_seqlens",
    "varlen_attention",
    "VARLEN_BACKENDS",
    "varlen_backend_unavailable",
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


@dataclass(frozen=True)
class _VarlenBackend:
    """A varlen kernel, the devices ``auto`` may use it on, and why it cannot serve a call (``None``: it can)."""

    kernel: Callable[..., Tensor]
    devices: tuple[str, ...]  # informational: where the kernel is meant to run
    refuses: Callable[[Tensor, bool, float], str | None] = lambda q, causal, dropout_p: None  # call-level
    unavailable: Callable[[], str | None] = lambda: None  # machine-level (library missing, no CUDA...)
    description: str = ""

    def refusal(self, q: Tensor, causal: bool, dropout_p: float = 0.0) -> str | None:
        return self.unavailable() or self.refuses(q, causal, dropout_p)


def _nested_refuses(q: Tensor, causal: bool, dropout_p: float) -> str | None:
    return "jagged-tensor SDPA has no causal mode here" if causal else None


def _xformers_refuses(q: Tensor, causal: bool, dropout_p: float) -> str | None:
    if q.device.type != "cuda":
        return f"xformers runs on CUDA tensors only, got {q.device.type}"
    return None


_SDPA_LOOP = _VarlenBackend(
    varlen_sdpa_loop_attention, ("cpu", "cuda", "mps"), description="one fused SDPA call per sequence"
)

# Every dense backend of formers.core.attention has an entry under its own name, so that MultiHeadAttention(backend=)
# and use_backend() reach the packed path too: "sdpa" is the per-sequence SDPA loop.
VARLEN_BACKENDS: dict[str, _VarlenBackend] = {
    "reference": _VarlenBackend(varlen_reference_attention, (), description="plain math per sequence (the oracle)"),
    "sdpa": dataclasses.replace(_SDPA_LOOP, description="alias of sdpa_loop (the varlen path of backend='sdpa')"),
    "sdpa_loop": _SDPA_LOOP,
    "sdpa_blockmask": _VarlenBackend(
        varlen_sdpa_blockmask_attention, ("cpu", "mps"), description="one SDPA call, dense block-diagonal mask"
    ),
    "nested": _VarlenBackend(
        varlen_nested_attention, (), _nested_refuses, description="SDPA on torch.nested jagged tensors (no causal)"
    ),
    "xformers": _VarlenBackend(
        varlen_xformers_attention,
        ("cuda",),
        _xformers_refuses,
        xformers_unavailable_reason,
        "xformers BlockDiagonalMask + memory_efficient_attention (CUDA)",
    ),
}


def _triton_varlen(q, k, v, cu_q, cu_k, *, causal=False, scale=None, dropout_p=0.0) -> Tensor:
    from formers.kernels.triton.attention import triton_varlen_attention  # imports triton on first use only

    return triton_varlen_attention(q, k, v, cu_q, cu_k, causal=causal, scale=scale, dropout_p=dropout_p)


def _triton_refuses(q: Tensor, causal: bool, dropout_p: float) -> str | None:
    reason = triton_device_reason(q.device)
    if reason is not None:
        return reason
    if dropout_p > 0.0:
        return "the Triton kernel has no attention dropout (use sdpa_loop, or dropout_p=0)"
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"the Triton kernel takes float32/bfloat16/float16, got {q.dtype}"
    return None


VARLEN_BACKENDS["triton"] = _VarlenBackend(
    _triton_varlen,
    ("cuda",),
    _triton_refuses,
    triton_unavailable_reason,
    "fused Triton kernel over cu_seqlens (no per-sequence loop, no mask tensor) - CUDA",
)


def _cpu_bf16_refuses(q: Tensor, causal: bool, dropout_p: float) -> str | None:
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return f"cpu_bf16 takes bfloat16 CPU tensors, got {q.dtype} on {q.device.type}"
    if dropout_p > 0.0:
        return "cpu_bf16 has no attention dropout (use sdpa_loop, or dropout_p=0)"
    return None


VARLEN_BACKENDS["cpu_bf16"] = _VarlenBackend(
    varlen_bf16_matmul_attention,
    ("cpu",),
    _cpu_bf16_refuses,
    description="bf16 matmuls + fp32 softmax per sequence (CPU bf16 training: SDPA's bf16 backward is slow on CPU)",
)


def varlen_backend_unavailable(name: str) -> str | None:
    """Why varlen backend ``name`` cannot run on this machine at all (``None``: it can), for the listing."""
    return VARLEN_BACKENDS[name].unavailable()


def _auto_backend(q: Tensor, causal: bool, dropout_p: float) -> str:
    """xformers, then the Triton kernel, on CUDA when they can serve the call; else one SDPA call per sequence
    (fastest measured on CPU at every size tried, from 64 sequences of 1-32 tokens to 32 of 64-1024: see
    benchmarks/varlen.py)."""
    if q.device.type == "cuda":
        for name in ("xformers", "triton"):  # one fused kernel over the packed batch beats a per-sequence loop
            if VARLEN_BACKENDS[name].refusal(q, causal, dropout_p) is None:
                return name
    training = torch.is_grad_enabled() and q.requires_grad
    if training and VARLEN_BACKENDS["cpu_bf16"].refusal(q, causal, dropout_p) is None:
        return "cpu_bf16"  # bf16 training on CPU: SDPA's bf16 backward is slower than its fp32 one
    return "sdpa_loop"


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
        backend: ``"auto"`` or a name of :data:`VARLEN_BACKENDS`; a forced backend that cannot serve the call raises
            :class:`~formers.core.attention.BackendUnavailableError` saying why. Under ``"auto"``, a backend forced
            with :func:`~formers.core.attention.use_backend` is used (each dense backend has a varlen entry of
            the same name).

    Shapes:
        - q: ``(total_q, heads, head_dim)``; k: ``(total_k, heads, head_dim)``; v: ``(total_k, heads, head_dim_v)``
        - cu_seqlens_q, cu_seqlens_k: ``(batch + 1,)``
        - output: ``(total_q, heads, head_dim_v)``; a query that sees no key yields zeros
    """
    cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    _validate(q, k, v, cu_seqlens_q, cu_seqlens_k, dropout_p)
    del max_seqlen_q, max_seqlen_k
    if backend == "auto" and (forced := forced_backend()) is not None:
        if forced not in VARLEN_BACKENDS:
            raise BackendUnavailableError(
                f"attention backend {forced!r} (forced by use_backend) has no varlen kernel for packed tokens; "
                f"varlen backends: {sorted(VARLEN_BACKENDS)}"
            )
        backend = forced
    if backend == "auto":
        backend = _auto_backend(q, causal, dropout_p)
    elif backend not in VARLEN_BACKENDS:
        raise ValueError(f"unknown varlen backend {backend!r}; choose 'auto' or one of {sorted(VARLEN_BACKENDS)}")
    impl = VARLEN_BACKENDS[backend]
    reason = impl.refusal(q, causal, dropout_p)
    if reason is not None:
        raise BackendUnavailableError(f"varlen backend {backend!r} cannot serve this call: {reason}")
    return impl.kernel(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale, dropout_p=dropout_p)


def _validate(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, dropout_p: float) -> None:
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
    _check_cu_seqlens("cu_seqlens_q", cu_q, q)
    _check_cu_seqlens("cu_seqlens_k", cu_k, k)
    if cu_q.numel() != cu_k.numel():
        raise ValueError(
            f"varlen_attention: cu_seqlens_q and cu_seqlens_k describe different batch sizes: "
            f"{cu_q.numel() - 1} vs {cu_k.numel() - 1}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"varlen_attention: dropout_p must be in [0, 1), got {dropout_p}")


def _check_cu_seqlens(name: str, cu: Tensor, packed: Tensor) -> None:
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

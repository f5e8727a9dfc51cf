"""``attention()``: one entry point for scaled dot-product attention with pluggable backends.

Shapes (every backend)::

    q: (batch, heads, len_q, head_dim)      k: (batch, heads, len_k, head_dim)      v: (batch, heads, len_k, head_dim_v)
    attn_bias: float, broadcastable to (batch, heads, len_q, len_k)
    key_padding_mask: bool (batch, len_k), True = padding key, ignored
    out: (batch, heads, len_q, head_dim_v)

Mask semantics are defined once in :mod:`formers.kernels.masks`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from formers.core.attention.backends import (
    AttentionCall,
    BackendUnavailableError,
    all_backends,
    check_backend_name,
    dispatch,
)
from formers.kernels.masks import check_key_padding_mask

__all__ = [
    "attention",
    "use_backend",
    "forced_backend",
    "mask_to_bias",
    "BackendInfo",
    "BackendUnavailableError",
    "list_backends",
    "available_backends",
]

# The backend forced by use_backend(). A plain module global on purpose, not a ContextVar: torch.compile (dynamo)
# cannot trace ContextVar.get() and would break the graph at every attention call, whereas a global is read at trace
# time and guarded (changing it recompiles). The price: the setting is process-wide, not per thread.
_FORCED_BACKEND: list[str | None] = [None]


def forced_backend() -> str | None:
    """The backend forced by the innermost :func:`use_backend` block, ``None`` outside one (or under ``"auto"``).

    Other dispatchers (the packed/varlen path in :mod:`formers.core.varlen`) read it so one ``use_backend`` block
    routes every attention call of a model.
    """
    return _FORCED_BACKEND[-1]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Route every ``backend="auto"`` call inside the block, dense or packed, to ``name`` (e.g. run a whole model on
    the oracle). A call the backend cannot serve raises :class:`BackendUnavailableError`, as ``backend=name`` would.

    Blocks nest; the setting is process-wide (see ``_FORCED_BACKEND``), so it also holds inside ``torch.compile``.
    """
    check_backend_name(name)  # unknown names fail here, not at the first attention call
    _FORCED_BACKEND.append(None if name == "auto" else name)
    try:
        yield
    finally:
        _FORCED_BACKEND.pop()


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_bias: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """Scaled dot-product attention ``softmax(q kᵀ · scale + bias) v`` on ``(batch, heads, len, head_dim)`` tensors.

    Args:
        q, k, v: query, key and value; ``k`` and ``v`` share their length, ``q`` and ``k`` their head_dim.
        attn_bias: additive float bias broadcastable to ``(batch, heads, len_q, len_k)`` (``-inf`` removes a key).
        causal: query ``i`` sees keys ``j <= i + len_k - len_q`` (bottom-right aligned).
        key_padding_mask: bool ``(batch, len_k)``; ``True`` marks padding keys to ignore.
        dropout_p: dropout on the attention probabilities; pass ``0.0`` in eval (modules do this for you).
        scale: score scale, default ``head_dim ** -0.5``.
        backend: ``"auto"`` (fastest backend that can serve the call) or a name from :func:`available_backends`
            with a dense kernel. A forced backend that cannot serve the call raises :class:`BackendUnavailableError`
            saying why. On a CPU without native bf16 (:func:`formers.core.machine.native_bf16`) ``auto`` computes
            bf16 calls in fp32 and returns bf16: there a bf16 matmul is ~60x slower than fp32.

    Returns:
        ``(batch, heads, len_q, head_dim_v)`` in the dtype of ``v``. A query that sees no key yields zeros.
    """
    call = _validate(q, k, v, attn_bias, causal, key_padding_mask, dropout_p)
    check_scale("attention", scale)
    impl, in_fp32 = dispatch(call, _FORCED_BACKEND[-1] if backend == "auto" else backend)
    if not in_fp32:
        return impl.kernel(q, k, v, attn_bias, causal, key_padding_mask, dropout_p, scale)
    with fp32_compute():
        bias = None if attn_bias is None else attn_bias.float()
        out = impl.kernel(q.float(), k.float(), v.float(), bias, causal, key_padding_mask, dropout_p, scale)
    return out.to(v.dtype)


def fp32_compute() -> contextlib.AbstractContextManager:
    """Where ``auto`` computes emulated-bf16 attention in fp32: CPU autocast off, or SDPA and matmuls would run in bf16
    again (autocast casts them down)."""
    return torch.autocast("cpu", enabled=False)


def _validate(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None,
    causal: bool,
    key_padding_mask: Tensor | None,
    dropout_p: float,
) -> AttentionCall:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"attention: {name} must have rank 4 (batch, heads, length, head_dim), got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"attention: {name} must be a floating tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    batch, heads, len_q, head_dim = q.shape
    if k.shape[:2] != (batch, heads) or v.shape[:2] != (batch, heads):
        raise ValueError(
            "attention: q, k, v must share (batch, heads), got "
            f"{tuple(q.shape[:2])}, {tuple(k.shape[:2])}, {tuple(v.shape[:2])}"
        )
    if k.shape[-1] != head_dim:
        raise ValueError(f"attention: q and k head_dim differ: {head_dim} vs {k.shape[-1]}")
    len_k = k.shape[-2]
    if v.shape[-2] != len_k:
        raise ValueError(f"attention: k and v lengths differ: {len_k} vs {v.shape[-2]}")
    check_attention_sizes("attention", heads=heads, head_dim=head_dim, head_dim_v=v.shape[-1])
    if len_q < 1 or len_k < 1:
        raise ValueError(f"attention: len_q and len_k must be >= 1, got {len_q} and {len_k} (an empty sequence)")
    if attn_bias is not None:
        _check_bias_tensor(attn_bias, q)
        try:
            shape = torch.broadcast_shapes(attn_bias.shape, (batch, heads, len_q, len_k))
        except RuntimeError:
            shape = None
        if shape != (batch, heads, len_q, len_k):
            raise ValueError(
                f"attention: attn_bias of shape {tuple(attn_bias.shape)} does not broadcast to "
                f"(batch, heads, len_q, len_k) = {(batch, heads, len_q, len_k)}"
            )
    if key_padding_mask is not None:
        check_key_padding_mask("attention", key_padding_mask, (batch, len_k), q.device)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    return AttentionCall(
        device_type=q.device.type,
        dtype=q.dtype,
        len_q=len_q,
        len_k=len_k,
        head_dim=head_dim,
        has_bias=attn_bias is not None,
        causal=causal,
        has_padding=key_padding_mask is not None,
        dropout=dropout_p > 0.0,
        needs_grad=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)),
        batch=batch,
        heads=heads,
        bias_needs_grad=torch.is_grad_enabled() and attn_bias is not None and attn_bias.requires_grad,
        num_scores=batch * heads * len_q * len_k,
    )


def check_attention_sizes(owner: str, *, heads: int, head_dim: int, head_dim_v: int) -> None:
    """Refuse sizes that crash kernels instead of failing cleanly (0 heads kills the interpreter in CPU SDPA)."""
    for name, size in (("heads", heads), ("head_dim", head_dim), ("head_dim of v", head_dim_v)):
        if size < 1:
            raise ValueError(f"{owner}: {name} must be >= 1, got {size}")


def check_scale(owner: str, scale: float | None) -> None:
    """Refuse a NaN or infinite score scale: every kernel would return NaN without a word."""
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"{owner}: scale must be a finite number (or None for head_dim ** -0.5), got {scale}")


def _check_bias_tensor(bias: Tensor, q: Tensor) -> None:
    if not isinstance(bias, Tensor):
        raise TypeError(f"attention: attn_bias must be a torch.Tensor, got {type(bias).__name__}")
    if bias.device != q.device:
        raise ValueError(f"attention: attn_bias is on {bias.device} but q is on {q.device}")
    if not bias.is_floating_point():
        hint = (
            " (convert a boolean keep-mask with formers.core.attention.mask_to_bias)"
            if bias.dtype == torch.bool
            else ""
        )
        raise TypeError(f"attention: attn_bias must be a floating tensor, got {bias.dtype}{hint}")


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend: can it run here (and why not), and does it serve dense and/or packed calls."""

    name: str
    available: bool
    reason: str | None
    description: str
    dense: bool = True
    varlen: bool = False


def list_backends() -> list[BackendInfo]:
    """Every registered backend, whether it can run on this machine, why not, and its dense / varlen kernels."""
    infos = []
    for b in all_backends():
        reason = b.unavailable()
        infos.append(BackendInfo(b.name, reason is None, reason, b.description, b.serves_dense, b.serves_varlen))
    return infos


def available_backends(*, dense: bool = False, varlen: bool = False) -> list[str]:
    """Names of the backends that can run on this machine (for some device); only those with a dense / varlen
    kernel when asked."""
    return [
        info.name
        for info in list_backends()
        if info.available and (info.dense or not dense) and (info.varlen or not varlen)
    ]


def mask_to_bias(keep: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Turn a boolean keep-mask (``True`` = attend) into an additive bias (0 / ``-inf``)."""
    if keep.dtype != torch.bool:
        raise TypeError(f"mask_to_bias: expected a torch.bool mask, got {keep.dtype}")
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, float("-inf"))

"""The attention backends and how ``backend="auto"`` chooses between them.

A backend is a kernel from :mod:`formers.kernels` plus two questions it answers: can it run on this machine at all
(:attr:`AttentionBackend.unavailable`), and can it serve this particular call (:attr:`AttentionBackend.rejects`).
Both return ``None`` for yes and a human-readable reason for no; the reasons are what a forced backend raises and
what ``python -m formers.core.attention`` lists. New kernels join with :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from formers.kernels.matmul import matmul_attention
from formers.kernels.reference import reference_attention
from formers.kernels.sdpa import sdpa_attention
from formers.kernels.triton import triton_device_reason, triton_unavailable_reason
from formers.kernels.xformers_ops import xformers_attention, xformers_unavailable_reason

__all__ = ["AttentionCall", "AttentionBackend", "BackendUnavailableError", "register_backend", "get_backend"]


class BackendUnavailableError(RuntimeError):
    """A forced attention backend cannot serve a call; the message says why."""


@dataclass(frozen=True)
class AttentionCall:
    """What a backend needs to know to accept or refuse a call."""

    device_type: str
    dtype: torch.dtype
    len_q: int
    len_k: int
    head_dim: int
    has_bias: bool
    causal: bool
    has_padding: bool
    dropout: bool
    needs_grad: bool
    batch: int = 1
    heads: int = 1
    bias_needs_grad: bool = False


KernelFn = Callable[..., Tensor]


@dataclass(frozen=True)
class AttentionBackend:
    """One attention implementation behind :func:`formers.core.attention.attention`.

    Args:
        name: what users pass as ``backend=``.
        kernel: ``fn(q, k, v, attn_bias, causal, key_padding_mask, dropout_p, scale) -> out``.
        description: one line for the availability listing.
        priority: ``auto`` tries backends in increasing priority per device; ``None`` means never chosen by ``auto``.
        unavailable: ``() -> reason | None``; machine-level (library missing, no CUDA...).
        rejects: ``(AttentionCall) -> reason | None``; call-level (device, dtype, mask kind...).
    """

    name: str
    kernel: KernelFn
    description: str
    priority: dict[str, int]
    unavailable: Callable[[], str | None] = lambda: None
    rejects: Callable[[AttentionCall], str | None] = lambda call: None

    def refusal(self, call: AttentionCall) -> str | None:
        return self.unavailable() or self.rejects(call)


_BACKENDS: dict[str, AttentionBackend] = {}


def register_backend(backend: AttentionBackend, *, replace: bool = False) -> AttentionBackend:
    if backend.name == "auto":
        raise ValueError("'auto' is reserved for dispatch and cannot name a backend")
    if backend.name in _BACKENDS and not replace:
        raise ValueError(f"attention backend {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> AttentionBackend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; choose 'auto' or one of {sorted(_BACKENDS)}") from None


def all_backends() -> list[AttentionBackend]:
    return list(_BACKENDS.values())


def select_backend(call: AttentionCall) -> AttentionBackend:
    """The first backend, by priority for the call's device, that can serve the call."""
    ranked = sorted(
        (b for b in _BACKENDS.values() if call.device_type in b.priority), key=lambda b: b.priority[call.device_type]
    )
    reasons = []
    for backend in ranked:
        reason = backend.refusal(call)
        if reason is None:
            return backend
        reasons.append(f"{backend.name}: {reason}")
    raise BackendUnavailableError(
        f"no attention backend can serve this call on {call.device_type}: {'; '.join(reasons)}"
    )


def _xformers_rejects(call: AttentionCall) -> str | None:
    if call.device_type != "cuda":
        return f"xformers runs on CUDA tensors only, got {call.device_type}"
    if call.head_dim > 256:
        return f"head_dim {call.head_dim} > 256 is not supported by xformers' kernels"
    return None


register_backend(
    AttentionBackend(
        name="reference",
        kernel=reference_attention,
        description="plain matmul-softmax-matmul in float32; the test oracle (memory O(L²))",
        priority={"cpu": 100, "cuda": 100, "mps": 100},
    )
)
register_backend(
    AttentionBackend(
        name="sdpa",
        kernel=sdpa_attention,
        description="torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient / math)",
        priority={"cpu": 10, "cuda": 10, "mps": 10},
    )
)
register_backend(
    AttentionBackend(
        name="xformers",
        kernel=xformers_attention,
        description="xformers.ops.memory_efficient_attention (CUDA)",
        priority={"cuda": 20},
        unavailable=xformers_unavailable_reason,
        rejects=_xformers_rejects,
    )
)


def _triton_kernel(*args) -> Tensor:
    from formers.kernels.triton.attention import triton_attention  # imports triton on first use only

    return triton_attention(*args)


_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton_rejects(call: AttentionCall) -> str | None:
    reason = triton_device_reason(torch.device(call.device_type))
    if reason is not None:
        return reason
    if call.dtype not in _TRITON_DTYPES:
        return f"the Triton kernel takes float32/bfloat16/float16, got {call.dtype}"
    if call.dropout:
        return "the Triton kernel has no attention dropout (use sdpa, or dropout_p=0)"
    if call.head_dim > 256:
        return f"head_dim {call.head_dim} > 256 is not supported by the Triton kernel"
    return None


# auto on CUDA keeps SDPA first: the Triton kernel has not been timed against SDPA's flash / memory-efficient kernels
# on a GPU yet (benchmarks/gpu_attention.py does that); it is chosen by auto when SDPA is absent or refuses a call.
register_backend(
    AttentionBackend(
        name="triton",
        kernel=_triton_kernel,
        description="fused Triton kernel (online softmax, fp32 stats; bias/causal/padding; Triton backward) - CUDA",
        priority={"cuda": 15},
        unavailable=triton_unavailable_reason,
        rejects=_triton_rejects,
    )
)


def _matmul_training_refusal(name: str, call: AttentionCall, max_bytes: int) -> str | None:
    """What the explicit-backward matmul kernel cannot take: dropout, a call without gradients, too large scores."""
    if call.dropout:
        return f"{name} has no attention dropout (use sdpa, or dropout_p=0)"
    if not call.needs_grad:
        return f"{name} is for training; without gradients SDPA's fused forward is as fast and O(L) in memory"
    probs = call.batch * call.heads * call.len_q * call.len_k * call.dtype.itemsize
    if probs > max_bytes:
        return (
            f"{name} would keep {probs / 2**30:.1f} GiB of probabilities for the backward (cap {max_bytes / 2**30} GiB)"
        )
    return None


def _cpu_bf16_rejects(call: AttentionCall) -> str | None:
    if call.device_type != "cpu" or call.dtype != torch.bfloat16:
        return f"cpu_bf16 takes bfloat16 CPU tensors, got {call.dtype} on {call.device_type}"
    return _matmul_training_refusal("cpu_bf16", call, max_bytes=1 << 29)


# Auto picks it for bf16 training on CPU only (see formers.kernels.matmul for the measurements).
register_backend(
    AttentionBackend(
        name="cpu_bf16",
        kernel=matmul_attention,
        description="bf16 matmuls + fp32 softmax statistics, explicit backward (CPU bf16 training; memory O(L²))",
        priority={"cpu": 5},
        rejects=_cpu_bf16_rejects,
    )
)


def _cpu_matmul_rejects(call: AttentionCall) -> str | None:
    if call.device_type != "cpu":  # attention() has already refused non-floating inputs
        return f"cpu_matmul takes CPU tensors, got {call.device_type}"
    if call.needs_grad and not call.bias_needs_grad:
        return "cpu_matmul is for training with a learned bias (SDPA then runs unfused); otherwise SDPA is faster"
    return _matmul_training_refusal("cpu_matmul", call, max_bytes=1 << 30)


# The same kernel for CPU training with a bias that needs a gradient (Swin's relative position bias, Graphormer's
# spatial bias): SDPA has no fused kernel for a bias gradient and its math path is slower (formers.kernels.matmul).
register_backend(
    AttentionBackend(
        name="cpu_matmul",
        kernel=matmul_attention,
        description="matmul-softmax-matmul, explicit backward (CPU training with a learned bias; memory O(L²))",
        priority={"cpu": 6},
        rejects=_cpu_matmul_rejects,
    )
)

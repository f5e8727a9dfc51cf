"""The attention backends and how ``backend="auto"`` chooses between them, for dense and packed (varlen) calls.

A backend is one registry entry with a name, a dense kernel (:class:`~formers.kernels.protocols.DenseKernel`, for
:func:`formers.core.attention.attention`) and/or a varlen kernel (:class:`~formers.kernels.protocols.VarlenKernel`,
for :func:`formers.core.varlen.varlen_attention` and packed layers), plus two questions it answers: can it run on
this machine at all (:attr:`AttentionBackend.unavailable`), and can it serve this particular call, dense or packed
(:attr:`AttentionBackend.rejects`, one :class:`AttentionCall` describes both). Both return ``None`` for yes and a
human-readable reason for no; the reasons are what a forced backend raises and what ``python -m
formers.core.attention`` lists. A name therefore means the same thing for ``backend=``, ``use_backend()`` and
:func:`~formers.core.attention.set_attention_backend`, on dense and on packed input. New kernels join with
:func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch

from formers.core import machine
from formers.kernels.matmul import matmul_attention
from formers.kernels.protocols import DenseKernel, VarlenKernel
from formers.kernels.reference import reference_attention
from formers.kernels.sdpa import sdpa_attention
from formers.kernels.triton import triton_device_reason, triton_unavailable_reason
from formers.kernels.varlen import (
    varlen_matmul_attention,
    varlen_nested_attention,
    varlen_reference_attention,
    varlen_sdpa_blockmask_attention,
    varlen_sdpa_loop_attention,
    varlen_xformers_attention,
)
from formers.kernels.xformers_ops import xformers_attention, xformers_unavailable_reason

__all__ = [
    "AttentionCall",
    "AttentionBackend",
    "BackendUnavailableError",
    "register_backend",
    "get_backend",
    "backend_names",
    "emulated_bf16",
    "dispatch",
]


class BackendUnavailableError(RuntimeError):
    """A forced attention backend cannot serve a call; the message says why."""


@dataclass(frozen=True)
class AttentionCall:
    """What a backend needs to know to accept or refuse a call, dense or packed.

    For a packed call (``packed=True``) ``batch`` counts the sequences, ``len_q`` / ``len_k`` are the longest query /
    key sequence, there is never a padding mask, and ``has_bias`` means a packed per-sequence bias (served only by
    backends with :attr:`AttentionBackend.varlen_bias`). ``num_scores`` is the number of attention scores the call
    computes (``batch * heads * len_q * len_k`` dense, ``heads * sum(len_q_i * len_k_i)`` packed).
    """

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
    packed: bool = False
    num_scores: int = 0

    @property
    def kind(self) -> str:
        return "packed (varlen)" if self.packed else "dense"


def _no_reason(*_args: object) -> str | None:
    return None


@dataclass(frozen=True)
class AttentionBackend:
    """One attention implementation behind ``attention()`` (dense) and ``varlen_attention()`` (packed).

    Args:
        name: what users pass as ``backend=``.
        kernel: the dense kernel, or ``None`` for a backend that serves packed tokens only.
        description: one line for the availability listing.
        priority: ``auto`` tries backends in increasing priority per device on dense calls; a device missing from it
            means never chosen by ``auto`` there.
        unavailable: ``() -> reason | None``; machine-level (library missing, no CUDA...).
        rejects: ``(AttentionCall) -> reason | None``; call-level (device, dtype, mask kind, packed...).
        varlen_kernel: the kernel for packed tokens, or ``None`` for a backend that serves dense calls only.
        varlen_priority: as ``priority``, for packed calls.
        varlen_bias: the varlen kernel takes a packed per-sequence ``attn_bias``
            (:func:`formers.core.varlen.varlen_attention`); packed calls with a bias are refused otherwise.
    """

    name: str
    kernel: DenseKernel | None
    description: str
    priority: Mapping[str, int] = field(default_factory=dict)
    unavailable: Callable[[], str | None] = _no_reason
    rejects: Callable[[AttentionCall], str | None] = _no_reason
    varlen_kernel: VarlenKernel | None = None
    varlen_priority: Mapping[str, int] = field(default_factory=dict)
    varlen_bias: bool = False

    def __post_init__(self) -> None:
        if self.kernel is None and self.varlen_kernel is None:
            raise ValueError(f"attention backend {self.name!r} needs a dense kernel, a varlen kernel or both")

    @property
    def serves_dense(self) -> bool:
        return self.kernel is not None

    @property
    def serves_varlen(self) -> bool:
        return self.varlen_kernel is not None

    def refusal(self, call: AttentionCall) -> str | None:
        """Why this backend cannot serve ``call`` (``None``: it can)."""
        if call.packed and self.varlen_kernel is None:
            return (
                f"{self.name} has no varlen kernel for packed tokens (cu_seqlens); backends that have one: "
                f"{backend_names(varlen=True)}"
            )
        if not call.packed and self.kernel is None:
            return f"{self.name} serves packed tokens (cu_seqlens) only; dense backends: {backend_names(dense=True)}"
        if call.packed and call.has_bias and not self.varlen_bias:
            with_bias = sorted(b.name for b in _BACKENDS.values() if b.varlen_bias)
            return (
                f"{self.name}'s varlen kernel takes no packed attention bias (one block per sequence); backends whose "
                f"varlen kernel does: {with_bias}"
            )
        return self.unavailable() or self.rejects(call)

    def auto_rank(self, call: AttentionCall) -> int | None:
        """Where ``auto`` tries this backend for ``call`` (lower first), ``None`` when it never does."""
        return (self.varlen_priority if call.packed else self.priority).get(call.device_type)


_BACKENDS: dict[str, AttentionBackend] = {}


def register_backend(backend: AttentionBackend, *, replace: bool = False) -> AttentionBackend:
    """Add ``backend`` to the registry (``replace=True`` overwrites an entry of the same name)."""
    if backend.name == "auto":
        raise ValueError("'auto' is reserved for dispatch and cannot name a backend")
    if backend.name in _BACKENDS and not replace:
        raise ValueError(f"attention backend {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> AttentionBackend:
    """The backend registered as ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attention backend {name!r}; choose 'auto' or one of {sorted(_BACKENDS)}") from None


def check_backend_name(name: str) -> str:
    """``name`` itself when it is ``"auto"`` or a registered backend, else ``ValueError`` listing the names."""
    if name != "auto":
        get_backend(name)
    return name


def backend_names(*, dense: bool = False, varlen: bool = False) -> list[str]:
    """Sorted names of the registered backends (only those with a dense / varlen kernel when asked)."""
    return sorted(
        b.name for b in _BACKENDS.values() if (not dense or b.serves_dense) and (not varlen or b.serves_varlen)
    )


def all_backends() -> list[AttentionBackend]:
    return list(_BACKENDS.values())


def select_backend(call: AttentionCall) -> AttentionBackend:
    """The first backend, by priority for the call's device and kind, that can serve the call."""
    ranked = sorted((b for b in _BACKENDS.values() if b.auto_rank(call) is not None), key=lambda b: b.auto_rank(call))
    reasons = []
    for backend in ranked:
        reason = backend.refusal(call)
        if reason is None:
            return backend
        reasons.append(f"{backend.name}: {reason}")
    raise BackendUnavailableError(
        f"no attention backend can serve this {call.kind} call on {call.device_type}: {'; '.join(reasons)}"
    )


def emulated_bf16(call: AttentionCall) -> AttentionCall | None:
    """The fp32 call ``auto`` serves instead of ``call`` when ``call`` is bf16 on a CPU that emulates bf16 (a bf16
    matmul ~60x slower than fp32 there, :mod:`formers.core.machine`), else ``None``: the caller upcasts q/k/v/bias,
    runs the fp32 kernel with autocast off and casts the output back to bf16."""
    if call.device_type != "cpu" or call.dtype != torch.bfloat16 or machine.native_bf16():
        return None
    return replace(call, dtype=torch.float32)


def dispatch(call: AttentionCall, name: str | None) -> tuple[AttentionBackend, bool]:
    """:func:`resolve_backend`'s choice for ``call``, and whether to run it in fp32: ``auto`` (``name is None``) on a
    bf16 call that this CPU emulates picks the fp32 call's backend (:func:`emulated_bf16`), and the caller then
    upcasts the inputs, computes with autocast off and casts the output back."""
    fp32_call = emulated_bf16(call) if name is None else None
    if fp32_call is None:
        return resolve_backend(call, name), False
    return select_backend(fp32_call), True


def resolve_backend(call: AttentionCall, name: str | None) -> AttentionBackend:
    """The backend that serves ``call``: ``name`` when given (raising why it cannot), else ``auto``'s choice."""
    if name is None:
        return select_backend(call)
    impl = get_backend(name)
    reason = impl.refusal(call)
    if reason is not None:
        raise BackendUnavailableError(f"attention backend {name!r} cannot serve this {call.kind} call: {reason}")
    return impl


_ALL_DEVICES = ("cpu", "cuda", "mps")


def _everywhere(priority: int) -> dict[str, int]:
    return dict.fromkeys(_ALL_DEVICES, priority)


def _xformers_rejects(call: AttentionCall) -> str | None:
    if call.device_type != "cuda":
        return f"xformers runs on CUDA tensors only, got {call.device_type}"
    if call.head_dim > 256:
        return f"head_dim {call.head_dim} > 256 is not supported by xformers' kernels"
    return None


def _nested_rejects(call: AttentionCall) -> str | None:
    return "jagged-tensor SDPA has no causal mode here" if call.causal else None


def _triton_kernel(*args: object) -> torch.Tensor:
    from formers.kernels.triton.attention import triton_attention  # imports triton on first use only

    return triton_attention(*args)


def _triton_varlen_kernel(*args: object, attn_bias: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
    # The Triton kernel's own attn_bias is indexed by position (batch, heads, max_len_q, max_len_k), not the packed
    # per-sequence layout of the VarlenKernel protocol; dispatch refuses packed bias calls for it (varlen_bias=False).
    if attn_bias is not None:
        raise NotImplementedError("the triton backend's varlen kernel takes no packed per-sequence attn_bias")
    from formers.kernels.triton.attention import triton_varlen_attention  # imports triton on first use only

    return triton_varlen_attention(*args, **kwargs)


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


def _matmul_training_refusal(name: str, call: AttentionCall, max_bytes: int) -> str | None:
    """What the explicit-backward matmul kernel cannot take: dropout, a call without gradients, too large scores."""
    if call.dropout:
        return f"{name} has no attention dropout (use sdpa, or dropout_p=0)"
    if not call.needs_grad:
        return f"{name} is for training; without gradients SDPA's fused forward is as fast and O(L) in memory"
    probs = call.num_scores * call.dtype.itemsize
    if probs > max_bytes:
        return (
            f"{name} would keep {probs / 2**30:.1f} GiB of probabilities for the backward (cap {max_bytes / 2**30} GiB)"
        )
    return None


# Decided once, here: CPU dispatch asks on every call, and inside a torch.compile trace it must find the answer cached
# (reading /proc/cpuinfo and torch's CPU capability there would break the graph).
machine.bf16_emulation_reason()


def _cpu_bf16_unavailable() -> str | None:
    if machine.native_bf16():
        return None
    return f"bf16 is emulated on this CPU, far slower than fp32: {machine.bf16_emulation_reason()}"


def _cpu_bf16_rejects(call: AttentionCall) -> str | None:
    if call.device_type != "cpu" or call.dtype != torch.bfloat16:
        return f"cpu_bf16 takes bfloat16 CPU tensors, got {call.dtype} on {call.device_type}"
    return _matmul_training_refusal("cpu_bf16", call, max_bytes=1 << 29)


def _cpu_matmul_rejects(call: AttentionCall) -> str | None:
    if call.device_type != "cpu":  # attention() has already refused non-floating inputs
        return f"cpu_matmul takes CPU tensors, got {call.device_type}"
    if not call.packed and call.needs_grad and not call.bias_needs_grad:
        return "cpu_matmul is for training with a learned bias (SDPA then runs unfused); otherwise SDPA is faster"
    return _matmul_training_refusal("cpu_matmul", call, max_bytes=1 << 30)


register_backend(
    AttentionBackend(
        name="reference",
        kernel=reference_attention,
        varlen_kernel=varlen_reference_attention,
        description="plain matmul-softmax-matmul in float32 (per sequence when packed); the test oracle, memory O(L²)",
        priority=_everywhere(100),
        varlen_priority=_everywhere(100),
        varlen_bias=True,
    )
)
# auto on CPU: fastest measured for packed tokens at every size tried, forward and backward (benchmarks/varlen.py).
register_backend(
    AttentionBackend(
        name="sdpa",
        kernel=sdpa_attention,
        varlen_kernel=varlen_sdpa_loop_attention,
        description="torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient / math); packed: "
        "one SDPA call per sequence",
        priority=_everywhere(10),
        varlen_priority=_everywhere(10),
        varlen_bias=True,
    )
)
register_backend(
    AttentionBackend(
        name="sdpa_loop",
        kernel=None,
        varlen_kernel=varlen_sdpa_loop_attention,
        description="packed only: one fused SDPA call per sequence or run of equal-length ones (the varlen kernel of "
        "'sdpa')",
        varlen_bias=True,
    )
)
register_backend(
    AttentionBackend(
        name="sdpa_blockmask",
        kernel=None,
        varlen_kernel=varlen_sdpa_blockmask_attention,
        description="packed only: one SDPA call with a dense block-diagonal mask (memory O(total²); 3-4x slower "
        "than sdpa on CPU)",
    )
)
register_backend(
    AttentionBackend(
        name="nested",
        kernel=None,
        varlen_kernel=varlen_nested_attention,
        description="packed only: SDPA on torch.nested jagged tensors, no causal (4-10x slower than sdpa on CPU)",
        rejects=_nested_rejects,
    )
)
# Packed tokens on CUDA: one fused kernel over the whole batch beats a per-sequence loop, xformers first.
register_backend(
    AttentionBackend(
        name="xformers",
        kernel=xformers_attention,
        varlen_kernel=varlen_xformers_attention,
        description="xformers.ops.memory_efficient_attention; packed: BlockDiagonalMask (CUDA)",
        priority={"cuda": 20},
        varlen_priority={"cuda": 2},
        unavailable=xformers_unavailable_reason,
        rejects=_xformers_rejects,
    )
)
# auto on CUDA keeps SDPA first for dense calls: the Triton kernel has not been timed against SDPA's flash /
# memory-efficient kernels on a GPU yet (benchmarks/gpu_attention.py does that); it is chosen by auto when SDPA is
# absent or refuses a call.
register_backend(
    AttentionBackend(
        name="triton",
        kernel=_triton_kernel,
        varlen_kernel=_triton_varlen_kernel,
        description="fused Triton kernel (online softmax, fp32 stats; bias/causal/padding/cu_seqlens; Triton "
        "backward) - CUDA",
        priority={"cuda": 15},
        varlen_priority={"cuda": 3},
        unavailable=triton_unavailable_reason,
        rejects=_triton_rejects,
    )
)
# Auto picks it for bf16 training on CPU only (see formers.kernels.matmul for the measurements), dense or packed, and
# only where bf16 is native (AVX512-BF16 / AMX): elsewhere auto computes bf16 calls in fp32 (emulated_bf16).
register_backend(
    AttentionBackend(
        name="cpu_bf16",
        kernel=matmul_attention,
        varlen_kernel=varlen_matmul_attention,
        description="bf16 matmuls + fp32 softmax statistics, explicit backward (CPU bf16 training where bf16 is "
        "native; memory O(L²))",
        priority={"cpu": 5},
        varlen_priority={"cpu": 5},
        unavailable=_cpu_bf16_unavailable,
        rejects=_cpu_bf16_rejects,
        varlen_bias=True,
    )
)
# The same kernel for CPU training with a bias that needs a gradient (Swin's relative position bias, Graphormer's
# spatial bias): SDPA has no fused kernel for a bias gradient and its math path is slower (formers.kernels.matmul).
# Packed calls, with or without a packed bias: auto never picks it. Measured on Graphormer's packed training steps with
# a learned bias (benchmarks/graphormer.py --compare-backends --attention-dropout 0, 1 thread, two runs): 0.98-1.09x
# the step time of sdpa's per-sequence loop, i.e. no gain, and Graphormer's attention dropout rules it out anyway.
# Forced, it trains per sequence.
register_backend(
    AttentionBackend(
        name="cpu_matmul",
        kernel=matmul_attention,
        varlen_kernel=varlen_matmul_attention,
        description="matmul-softmax-matmul, explicit backward (CPU training with a learned bias; memory O(L²))",
        priority={"cpu": 6},
        rejects=_cpu_matmul_rejects,
        varlen_bias=True,
    )
)

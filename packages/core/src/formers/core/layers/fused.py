"""Fused small ops with one dispatch: Triton kernels on CUDA, the measured-fastest path on CPU.

* :func:`bias_gelu`: ``gelu(x + bias)`` (the MLP's first activation).
* :func:`add_layer_norm` / :func:`add_rms_norm`: ``s = x + residual``; ``(norm(s), s)`` (pre-norm residual streams).
* :func:`masked_softmax`: ``softmax(x * scale + mask)`` over the last dim, fully masked rows give zeros.
* :class:`AddLayerNorm` / :class:`AddRMSNorm`: the norms as modules (state dicts of ``nn.LayerNorm`` / ``nn.RMSNorm``).

``impl``: ``"auto"``, ``"eager"``, ``"compile"`` (``torch.compile`` of the eager function, cached per op) or
``"triton"`` (CUDA, or CPU under ``TRITON_INTERPRET=1``). ``auto`` runs Triton on CUDA; on CPU it follows
``benchmarks/fused_ops.py`` (1 thread, medians; :data:`CPU_MEASUREMENTS`): Inductor's fused bias + GELU beat eager
1.55-1.75x in fp32 (1.08-1.68x in bf16) at ``32 x 512 x 2048``, so ``auto`` compiles it for tensors of at least
:data:`CPU_COMPILE_MIN_NUMEL` elements (the one-off compile costs seconds; a compile failure falls back to eager for
good); residual + LayerNorm gained nothing from compile (0.96-1.14x), so it stays eager, as does the softmax.

Statistics (mean, variance, softmax max and sum) are fp32 on every path, whatever the input dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.kernels.triton import triton_device_reason

__all__ = [
    "bias_gelu",
    "add_layer_norm",
    "add_rms_norm",
    "masked_softmax",
    "AddLayerNorm",
    "AddRMSNorm",
    "IMPLS",
    "CPU_MEASUREMENTS",
    "CPU_COMPILE_MIN_NUMEL",
]

IMPLS = ("auto", "eager", "compile", "triton")

# eager / torch.compile median time ratios (> 1: compile is faster) from benchmarks/fused_ops.py, 1 thread, on the
# shared 2-core Zen 5 CPU (bias_gelu at 32x512x2048, add_layer_norm at 32x512x512).
CPU_MEASUREMENTS: dict[str, dict[str, float]] = {
    "bias_gelu/fp32": {"fwd": 1.75, "fwd_bwd": 1.55},
    "bias_gelu/bf16": {"fwd": 1.68, "fwd_bwd": 1.08},
    "add_layer_norm/fp32": {"fwd": 0.96, "fwd_bwd": 1.03},
    "add_layer_norm/bf16": {"fwd": 0.98, "fwd_bwd": 1.14},
}
CPU_COMPILE_MIN_NUMEL = 1 << 22  # below ~4M elements the op is cheap and a compile is not worth its seconds
_COMPILE_FAILED: set[str] = set()


# ------------------------------------------------------------------------------------------------------ eager paths


def _bias_gelu_eager(x: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
    return F.gelu(x if bias is None else x + bias, approximate=approximate)


def _add_norm_eager(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None, eps: float, rms: bool
) -> tuple[Tensor, Tensor]:
    total = x if residual is None else x + residual
    shape = (x.shape[-1],)
    # CPU/CUDA layer_norm and rms_norm accumulate reduced-precision inputs in fp32 (opmath) already.
    out = F.rms_norm(total, shape, weight, eps) if rms else F.layer_norm(total, shape, weight, bias, eps)
    return out, total


def _masked_softmax_eager(x: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    z = x.float() * scale if scale != 1.0 else x.float()
    if mask is not None:
        z = z + mask.float()
    probs = torch.softmax(z, dim=-1)
    probs = probs.masked_fill(torch.isneginf(z.amax(dim=-1, keepdim=True)), 0.0)  # fully masked row: zeros, not NaN
    return probs.to(x.dtype)


@functools.cache
def _compiled(name: str) -> Callable:
    fn = {"bias_gelu": _bias_gelu_eager, "add_norm": _add_norm_eager, "masked_softmax": _masked_softmax_eager}[name]
    return torch.compile(fn)  # default dynamic: after one recompile, varying token counts reuse one graph


def _resolve(impl: str, device: torch.device, op: str, numel: int = 0) -> str:
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        if device.type == "cuda" and triton_device_reason(device) is None:
            return "triton"
        if device.type == "cpu" and op == "bias_gelu" and numel >= CPU_COMPILE_MIN_NUMEL and op not in _COMPILE_FAILED:
            return "compile"
        return "eager"
    if impl == "triton":
        reason = triton_device_reason(device)
        if reason is not None:
            raise RuntimeError(f"{op}: impl='triton' cannot run here: {reason}")
    return impl


# -------------------------------------------------------------------------------------------------------- checks


def _check_floating(op: str, name: str, t: Tensor | None, x: Tensor | None = None) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating tensor, got {t.dtype}")
    if x is not None and t.device != x.device:
        raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")


def _check_vector(op: str, name: str, t: Tensor | None, x: Tensor) -> None:
    _check_floating(op, name, t, x)
    if t is not None and tuple(t.shape) != (x.shape[-1],):
        raise ValueError(f"{op}: {name} must have shape ({x.shape[-1]},) (x's last dim), got {tuple(t.shape)}")


# ------------------------------------------------------------------------------------------------------ public ops


def bias_gelu(x: Tensor, bias: Tensor | None = None, approximate: str = "none", *, impl: str = "auto") -> Tensor:
    """``gelu(x + bias)``; ``approximate``: ``"none"`` (erf) or ``"tanh"``.

    Shapes:
        - x: ``(..., N)``; bias: ``(N,)``; output: ``(..., N)``
    """
    _check_floating("bias_gelu", "x", x)
    _check_vector("bias_gelu", "bias", bias, x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"bias_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    path = _resolve(impl, x.device, "bias_gelu", x.numel())
    if path == "triton":
        from formers.kernels.triton.ops import triton_bias_gelu

        return triton_bias_gelu(x, bias, approximate)
    if path == "compile" and impl == "auto":
        try:
            return _compiled("bias_gelu")(x, bias, approximate)
        except Exception:  # noqa: BLE001 - any Inductor/toolchain failure: eager is always correct
            _COMPILE_FAILED.add("bias_gelu")
            return _bias_gelu_eager(x, bias, approximate)
    fn = _compiled("bias_gelu") if path == "compile" else _bias_gelu_eager
    return fn(x, bias, approximate)


def _add_norm(op, x, residual, weight, bias, eps, rms, impl) -> tuple[Tensor, Tensor]:
    _check_floating(op, "x", x)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{op}: x must have a non-empty last dim, got shape {tuple(x.shape)}")
    _check_floating(op, "residual", residual, x)
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"{op}: residual shape {tuple(residual.shape)} differs from x shape {tuple(x.shape)}")
    _check_vector(op, "weight", weight, x)
    _check_vector(op, "bias", bias, x)
    path = _resolve(impl, x.device, op)
    if path == "triton":
        from formers.kernels.triton.ops import triton_add_norm

        return triton_add_norm(x, residual, weight, bias, eps=eps, rms=rms, return_sum=True)
    fn = _compiled("add_norm") if path == "compile" else _add_norm_eager
    return fn(x, residual, weight, bias, eps, rms)


def add_layer_norm(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """``s = x + residual``; returns ``(layer_norm(s), s)`` (``residual=None``: ``s = x``).

    Shapes:
        - x, residual: ``(..., N)``; weight, bias: ``(N,)``; outputs: ``(..., N)``
    """
    return _add_norm("add_layer_norm", x, residual, weight, bias, eps, False, impl)


def add_rms_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor | None = None, eps: float = 1e-6, *, impl: str = "auto"
) -> tuple[Tensor, Tensor]:
    """``s = x + residual``; returns ``(rms_norm(s), s)`` (``residual=None``: ``s = x``).

    Shapes:
        - x, residual: ``(..., N)``; weight: ``(N,)``; outputs: ``(..., N)``
    """
    return _add_norm("add_rms_norm", x, residual, weight, None, eps, True, impl)


def masked_softmax(x: Tensor, mask: Tensor | None = None, scale: float = 1.0, *, impl: str = "auto") -> Tensor:
    """``softmax(x * scale + mask)`` over the last dim in fp32, returned in ``x``'s dtype; a row whose entries are
    all ``-inf`` gives zeros.

    Shapes:
        - x: ``(..., N)`` (at most 4 dims on the Triton path); mask: float, broadcastable to ``x``; output: like ``x``
    """
    _check_floating("masked_softmax", "x", x)
    _check_floating("masked_softmax", "mask", mask, x)
    if mask is not None:
        try:
            shape = torch.broadcast_shapes(mask.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"masked_softmax: mask of shape {tuple(mask.shape)} does not broadcast to x's {tuple(x.shape)}"
            )
    path = _resolve(impl, x.device, "masked_softmax")
    if path == "triton":
        if x.dim() > 4:
            raise ValueError(f"masked_softmax: the Triton path takes at most 4 dims, got shape {tuple(x.shape)}")
        from formers.kernels.triton.ops import triton_masked_softmax

        return triton_masked_softmax(x, mask, scale)
    fn = _compiled("masked_softmax") if path == "compile" else _masked_softmax_eager
    return fn(x, mask, scale)


# --------------------------------------------------------------------------------------------------------- modules


class AddLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose forward also adds a residual: ``forward(x, residual) -> (norm(x + residual), sum)``.

    Same parameters and state dict as :class:`torch.nn.LayerNorm`; ``impl`` as in :func:`add_layer_norm`.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5, bias: bool = True, impl: str = "auto") -> None:
        super().__init__(normalized_shape, eps=eps, bias=bias)
        if impl not in IMPLS:
            raise ValueError(f"AddLayerNorm: impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return add_layer_norm(x, residual, self.weight, self.bias, self.eps, impl=self.impl)


class AddRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose forward also adds a residual: ``forward(x, residual) -> (norm(x + residual), sum)``."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, impl: str = "auto") -> None:
        super().__init__(normalized_shape, eps=eps)
        if impl not in IMPLS:
            raise ValueError(f"AddRMSNorm: impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return add_rms_norm(x, residual, self.weight, self.eps, impl=self.impl)

"""Precision that cannot backfire: bf16 only where the hardware runs it natively.

bf16 halves memory traffic where the hardware has bf16 arithmetic (CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or
AMX). Elsewhere it is emulated and slow: measured on an AVX2-only AMD EPYC with 1 thread, a 512x512 bf16 matmul is
~60x slower than fp32, an iTransformer ETTh1 training step 12x and an Autoformer / Informer step ~30x. So formers'
default precision is ``"auto"``::

    formers-core fit --config CFG                              # precision auto: bf16-mixed where native, else 32-true
    formers-core fit --config CFG --trainer.precision 32-true  # or any Lightning precision, as given

    from formers.core.precision import autocast, resolve_precision
    Trainer(precision=resolve_precision("auto"))               # plain Lightning
    with autocast("cpu"):                                      # plain PyTorch: bf16 autocast where native, else no-op
        loss = model(x).loss

An explicit bf16 request on a CPU without native bf16 runs as asked, with one :class:`BF16EmulationWarning` per
process. ``python -m formers.core.attention`` says whether bf16 is native here, and why not.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

from formers.core import machine

__all__ = ["BF16EmulationWarning", "autocast", "autocast_dtype", "explain_precision", "resolve_precision"]

# The slowdowns quoted by the warning, measured on an AVX2-only AMD EPYC, 1 thread (issue 15).
_SLOWDOWN = (
    "measured on an AVX2 EPYC, 1 thread: a 512x512 bf16 matmul ~60x slower than fp32, an iTransformer training step "
    "12x, Autoformer / Informer ~30x"
)
_WARNED: list[bool] = []  # once per process


class BF16EmulationWarning(UserWarning):
    """bf16 was requested on a CPU that emulates it (no AVX512-BF16 / AMX, or capped by the environment)."""


def _device_type(accelerator: Any) -> str:
    """``"cuda"``, ``"cpu"`` or another device type for a Lightning ``accelerator`` (name or instance)."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__
    name = name.lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"  # Lightning's auto would also pick MPS / TPU
    if name in ("gpu", "cuda") or name.startswith("cuda"):
        return "cuda"
    return "cpu" if name.startswith("cpu") else name


def _cuda_bf16() -> bool:
    # including_emulation=False: pre-Ampere GPUs "support" bf16 only by emulation, which is what auto avoids
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def _bf16_reason(device: str) -> tuple[bool, str]:
    """Whether bf16 is native on ``device`` here, and the reason in words."""
    if device == "cuda":
        if _cuda_bf16():
            return True, f"{torch.cuda.get_device_name(0)} has native bf16"
        return False, "this GPU has no native bf16 (compute capability < 8.0)"
    if device == "cpu":
        if machine.native_bf16():
            capability = torch.backends.cpu.get_cpu_capability()
            return True, f"{machine.cpu_model()} has native bf16 (torch CPU capability {capability})"
        return False, f"bf16 is emulated on this CPU: {machine.bf16_emulation_reason()}"
    return False, f"formers does not choose bf16 on {device} automatically"


def explain_precision(accelerator: Any = "auto") -> tuple[str, str]:
    """What ``"auto"`` resolves to for ``accelerator`` and why: ``("bf16-mixed" | "32-true", reason)``."""
    device = _device_type(accelerator)
    native, reason = _bf16_reason(device)
    return ("bf16-mixed" if native else "32-true"), reason


def _is_bf16(precision: Any) -> bool:
    return isinstance(precision, str) and precision.startswith("bf16")


def resolve_precision(precision: Any = "auto", accelerator: Any = "auto") -> Any:
    """A Lightning precision for ``Trainer(precision=...)``: ``"auto"`` becomes ``"bf16-mixed"`` where bf16 is native
    (CUDA with bf16 arithmetic, a CPU with :func:`~formers.core.machine.native_bf16`) and ``"32-true"`` elsewhere.

    Any other value is returned as given (``None`` too: Lightning's default). A bf16 request (``"bf16-mixed"``,
    ``"bf16-true"``, ``"bf16"``) for a CPU without native bf16 warns once per process with
    :class:`BF16EmulationWarning`: it runs, many times slower than fp32.
    """
    if precision == "auto":
        return explain_precision(accelerator)[0]
    if _is_bf16(precision) and _device_type(accelerator) == "cpu" and not machine.native_bf16():
        _warn_emulated(precision)
    return precision


def _warn_emulated(precision: str) -> None:
    if _WARNED:
        return
    _WARNED.append(True)
    warnings.warn(
        f"precision {precision!r} on a CPU without native bf16 ({machine.bf16_emulation_reason()}): bf16 is emulated "
        f"and slow here ({_SLOWDOWN}). Use precision 'auto' (bf16 only where native) or '32-true'; "
        "`python -m formers.core.attention` shows this machine's bf16 support.",
        BF16EmulationWarning,
        stacklevel=3,
    )


def autocast_dtype(device: str | torch.device = "cpu") -> torch.dtype | None:
    """``torch.bfloat16`` where bf16 is native on ``device``'s type, ``None`` (stay in fp32) elsewhere.

    fp16 is never proposed: it needs a gradient scaler, and CPUs emulate it as well.
    """
    device_type = torch.device(device).type
    return torch.bfloat16 if _bf16_reason(device_type)[0] else None


def autocast(device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 where bf16 is native on ``device``'s type, a no-op context elsewhere."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)

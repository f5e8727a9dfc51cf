"""Triton kernels (CUDA; on CPU only through Triton's interpreter, ``TRITON_INTERPRET=1``, for tests).

* :mod:`~formers.kernels.triton.attention`: fused attention forward and backward (FlashAttention-2 style online
  softmax with fp32 statistics) with an additive per-head bias, key padding, causal, and varlen (``cu_seqlens``).

The op is a :class:`torch.autograd.Function` whose forward and backward are Triton kernels.

``TRITON_INTERPRET`` must be set before ``triton`` is first imported; this package imports triton lazily (on the
first kernel call) so that importing :mod:`formers.core` never pays for it.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["triton_unavailable_reason", "triton_device_reason", "interpreter_active"]


def interpreter_active() -> bool:
    """``True`` when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_unavailable_reason() -> str | None:
    """``None`` when the Triton kernels can run on this machine (CUDA, or the interpreter), else why not."""
    if not _triton_installed():
        return "triton is not installed"
    if interpreter_active() or torch.cuda.is_available():
        return None
    return "Triton kernels need a CUDA GPU (on CPU they run only under TRITON_INTERPRET=1, for tests)"


def triton_device_reason(device: torch.device) -> str | None:
    """``None`` when the Triton kernels can take tensors on ``device``, else why not."""
    reason = triton_unavailable_reason()
    if reason is not None:
        return reason
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreter_active():
        return None
    return f"Triton kernels run on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1), got {device.type}"

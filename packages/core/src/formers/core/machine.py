"""Know the machine: one report of what decides formers' CPU speed and its numbers, recorded next to every result.

CPU kernels differ by instruction set (torch dispatches AVX2 or AVX-512 code, oneDNN picks its own ISA), so a metric
is reproducible byte for byte only on the same CPU kind with the same thread count; the report names both. Usage::

    python -m formers.core.attention      # prints it (with the attention backends)
    <run_dir>/machine.json                # written by formers.core.callbacks.MachineInfo for every CLI run

Emulate an AVX2-only CPU on an AVX-512 one with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (both are read at
import, so set them before Python starts); the report lists the overrides in force.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["ENV_OVERRIDES", "cpu_flags", "format_machine_report", "machine_report", "native_bf16"]

# Environment variables that change which CPU kernels run, or how many threads they use.
ENV_OVERRIDES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# /proc/cpuinfo flags that make bf16 native on a CPU (AVX512-BF16 dot products, AMX tiles).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo(path: str | os.PathLike[str] = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """Model name and flags of the first processor in ``path`` (empty where the file does not exist: not Linux)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_flags(path: str | os.PathLike[str] = "/proc/cpuinfo") -> set[str]:
    """The CPU's instruction-set flags as Linux reports them (empty set elsewhere)."""
    return _cpuinfo(path)[1]


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX), i.e. bf16 matmuls are not emulated."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in _BF16_FLAGS)


def _gpu() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_report(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """What ran a result: CPU kind (torch capability, bf16/AMX instructions, model), threads, versions, GPU, overrides.

    ``cpu.capability`` is the kernel set torch dispatches to (after ``ATEN_CPU_CAPABILITY``), so two results with the
    same capability, ``torch.threads`` and versions are expected to be byte-identical; across capabilities they agree
    only within the tolerance that tests/test_reproducibility.py documents.
    """
    model, flags = _cpuinfo(cpuinfo)
    return {
        "cpu": {
            "model": model or platform.processor() or platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags,
            "native_bf16": native_bf16(flags),
            "cores": os.cpu_count(),
        },
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads()},
        "python": platform.python_version(),
        "gpu": _gpu(),
        "env": {name: os.environ[name] for name in ENV_OVERRIDES if name in os.environ},
    }


def format_machine_report(report: dict[str, Any] | None = None) -> str:
    """The report as two human-readable lines (what ``python -m formers.core.attention`` prints first)."""
    r = machine_report() if report is None else report
    cpu = r["cpu"]
    isa = "+".join(name for name in ("avx2", "avx512", "avx512_bf16", "amx") if cpu[name]) or "none reported"
    env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "none"
    return (
        f"CPU: {cpu['model']} | {cpu['cores']} cores | torch capability {cpu['capability']} | ISA {isa} | "
        f"native bf16: {'yes' if cpu['native_bf16'] else 'no'}\n"
        f"torch {r['torch']['version']} | threads {r['torch']['threads']} | python {r['python']} | "
        f"GPU: {r['gpu'] or 'none'} | env overrides: {env}"
    )

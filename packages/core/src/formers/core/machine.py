"""Know the machine: one report of what decides formers' CPU speed and its numbers, recorded next to every result.

CPU kernels differ by instruction set (torch dispatches AVX2 or AVX-512 code, oneDNN picks its own ISA), so a metric
is reproducible byte for byte only on the same CPU kind with the same thread count; the report names both. Usage::

    python -m formers.core.attention      # prints it (with the attention backends)
    <run_dir>/machine.json                # written by formers.core.callbacks.MachineInfo for every CLI run

Emulate an AVX2-only CPU on an AVX-512 one with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (both are read at
import, so set them before Python starts); the report lists the overrides in force.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Set
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ENV_OVERRIDES",
    "bf16_emulation_reason",
    "bf16_instructions",
    "cpu_flags",
    "cpu_model",
    "format_machine_report",
    "machine_report",
    "native_bf16",
    "onednn_allows_bf16",
]

# Environment variables that change which CPU kernels run, or how many threads they use.
ENV_OVERRIDES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# /proc/cpuinfo flags that make bf16 native on a CPU (AVX512-BF16 dot products, AMX tiles).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=8)
def _cpuinfo(path: str | os.PathLike[str] = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """Model name and flags of the first processor in ``path`` (empty where the file does not exist: not Linux).

    Cached per path: attention dispatch asks whether bf16 is native on every bf16 CPU call.
    """
    try:
        text = Path(path).read_text()
    except OSError:
        return "", frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def cpu_flags(path: str | os.PathLike[str] = "/proc/cpuinfo") -> set[str]:
    """The CPU's instruction-set flags as Linux reports them (empty set elsewhere)."""
    return set(_cpuinfo(path)[1])


def cpu_model(path: str | os.PathLike[str] = "/proc/cpuinfo") -> str:
    """The CPU's model name (``platform`` 's guess where ``path`` does not exist)."""
    return _cpuinfo(path)[0] or platform.processor() or platform.machine()


def bf16_instructions(flags: Set[str] | None = None) -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX), whatever this process is allowed to use."""
    flags = _cpuinfo("/proc/cpuinfo")[1] if flags is None else flags
    return any(f in flags for f in _BF16_FLAGS)


def onednn_allows_bf16(isa: str | None = None) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` (``isa``, default: the environment's) leaves oneDNN its bf16 kernels.

    Unset, ``ALL`` / ``DEFAULT`` and the ISAs from AVX512_CORE_BF16 up (AMX, AVX10) do; AVX2, AVX512_CORE,
    AVX512_CORE_VNNI, AVX2_VNNI, SSE41 ... cap oneDNN below bf16, so its bf16 matmuls fall back to emulation.
    """
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if isa is None else isa
    isa = isa.strip().upper()
    return isa in ("", "ALL", "DEFAULT") or "BF16" in isa or "AMX" in isa or isa.startswith("AVX10")


# bf16_emulation_reason() of this process: the CPU, ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA are fixed once torch
# has loaded, so it is decided once (a plain global: torch.compile reads it without a graph break once it is set).
_HERE: list[str | None] = []


def bf16_emulation_reason(
    flags: Set[str] | None = None,
    *,
    capability: str | None = None,
    onednn_isa: str | None = None,
    model: str | None = None,
) -> str | None:
    """Why bf16 is emulated in this process (``None``: it is native), naming the CPU and what caps it.

    Native needs all three: bf16 instructions on the CPU (AVX512-BF16 or AMX), torch dispatching AVX-512 kernels
    (``torch.backends.cpu.get_cpu_capability()``, lowered by ``ATEN_CPU_CAPABILITY``) and oneDNN not capped below
    bf16 (``ONEDNN_MAX_CPU_ISA``). Arguments left out are read from this machine and process; without any, the answer
    is computed once per process.
    """
    if flags is None and capability is None and onednn_isa is None and model is None:
        if not _HERE:
            _HERE.append(_emulation_reason(None, None, None, None))
        return _HERE[0]
    return _emulation_reason(flags, capability, onednn_isa, model)


def _emulation_reason(
    flags: Set[str] | None, capability: str | None, onednn_isa: str | None, model: str | None
) -> str | None:
    forced = os.environ.get("ATEN_CPU_CAPABILITY") if capability is None else None
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    if not bf16_instructions(flags):
        model = model or (cpu_model() if flags is None else "this CPU")
        return f"{model} has no AVX512-BF16 or AMX instructions (torch CPU capability {capability})"
    if not capability.upper().startswith("AVX512"):
        how = f" (ATEN_CPU_CAPABILITY={forced})" if forced else ""
        return f"torch dispatches {capability} kernels{how} although the CPU has bf16 instructions"
    if not onednn_allows_bf16(onednn_isa):
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA") if onednn_isa is None else onednn_isa
        return f"ONEDNN_MAX_CPU_ISA={isa} caps oneDNN below bf16 although the CPU has bf16 instructions"
    return None


def native_bf16(flags: Set[str] | None = None, *, capability: str | None = None, onednn_isa: str | None = None) -> bool:
    """Whether bf16 matmuls run natively in this process, not emulated (see :func:`bf16_emulation_reason`).

    On a CPU without bf16 instructions (AVX2-only) a bf16 matmul is ~60x slower than fp32 and a bf16-autocast
    training step 12-30x slower, so formers uses bf16 on CPU only where this is true. Without arguments the answer
    for this machine and process (cached); pass ``flags`` / ``capability`` / ``onednn_isa`` to ask about another.
    """
    return bf16_emulation_reason(flags, capability=capability, onednn_isa=onednn_isa) is None


def _gpu() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_report(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """What ran a result: CPU kind (torch capability, bf16/AMX instructions, model), threads, versions, GPU, overrides.

    ``cpu.bf16_instructions`` says whether the CPU has AVX512-BF16 / AMX; ``cpu.native_bf16`` whether this process
    uses them (torch's capability and ``ONEDNN_MAX_CPU_ISA`` may rule them out), with the reason when not.

    ``cpu.capability`` is the kernel set torch dispatches to (after ``ATEN_CPU_CAPABILITY``), so two results with the
    same capability, ``torch.threads`` and versions are expected to be byte-identical; across capabilities they agree
    only within the tolerance that tests/test_reproducibility.py documents.
    """
    model, flags = _cpuinfo(cpuinfo)
    model = model or platform.processor() or platform.machine()
    emulated = bf16_emulation_reason(flags, model=model)
    return {
        "cpu": {
            "model": model,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags,
            "bf16_instructions": bf16_instructions(flags),
            "native_bf16": emulated is None,  # in this process: instructions, AVX-512 kernels, oneDNN not capped
            "bf16_emulated_because": emulated,
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
        f"bf16 instructions: {'yes' if cpu.get('bf16_instructions') else 'no'} | native bf16: "
        f"{'yes' if cpu['native_bf16'] else 'no, ' + str(cpu.get('bf16_emulated_because'))}\n"
        f"torch {r['torch']['version']} | threads {r['torch']['threads']} | python {r['python']} | "
        f"GPU: {r['gpu'] or 'none'} | env overrides: {env}"
    )

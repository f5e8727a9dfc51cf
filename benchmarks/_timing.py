"""Small timing helpers shared by the benchmarks: thread pinning, interleaved repeats, medians, matmul ceiling.

Rules these helpers encode (see the CPU measurements in the project notes): pin the thread count, warm every
candidate up before timing, interleave the candidates inside each repeat so that machine noise hits all of them
alike, and report the median (typical) and the minimum (least disturbed). Compare candidates by ratios measured in
the same run, never by absolute times across runs or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from formers.core.machine import machine_report

__all__ = [
    "ISAS",
    "Timing",
    "device_sync",
    "interleaved_timings",
    "matmul_candidate",
    "pin_threads",
    "load_average",
    "compute_bound",
    "add_isa_argument",
    "isa_in_force",
    "isa_run",
    "run_per_isa",
]

# The CPU kernel sets a benchmark can be timed with, as environment overrides read when torch starts: "native" is what
# this CPU runs by default; "avx2" makes torch dispatch its AVX2 kernels and caps oneDNN at AVX2, so an AVX-512
# machine also times what users of AVX2-only CPUs get (formers.core.machine).
ISAS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


@dataclass(frozen=True)
class Timing:
    """Summary of repeated wall-clock measurements of one candidate, in seconds."""

    median: float
    best: float
    samples: tuple[float, ...]

    @classmethod
    def from_samples(cls, samples: list[float]) -> Timing:
        """Summarise raw samples (at least one)."""
        return cls(median=statistics.median(samples), best=min(samples), samples=tuple(samples))


def pin_threads(threads: int) -> int:
    """Set torch's intra-op thread count and return the value torch reports afterwards."""
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_average() -> float:
    """One-minute load average (-1 where the platform has none): a noise indicator to report with timings."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return -1.0


def device_sync(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    device_sync(device)
    start = time.perf_counter()
    fn()
    device_sync(device)
    return time.perf_counter() - start


def interleaved_timings(
    candidates: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int, device: torch.device
) -> dict[str, Timing]:
    """Time every candidate ``repeats`` times, one call of each per round, rotating the order every round.

    Every candidate is first called ``warmup`` times (allocator, thread pool and lazy-init costs land there).
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            _time_once(candidates[name], device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(repeats):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_time_once(candidates[name], device))
    return {name: Timing.from_samples(samples[name]) for name in names}


def matmul_candidate(size: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], object], float]:
    """A plain ``size x size`` matmul (the practical compute ceiling for ``dtype``) and its FLOPs (``2 * size**3``).

    Time it interleaved with the kernels it is compared to, so that both see the same machine load.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    return (lambda: a @ b), 2.0 * size**3


def write_json(path: Path | None, metrics: Mapping) -> None:
    """Write a benchmark's metrics as indented JSON (creating the folder); ``None`` writes nothing.

    Every benchmark JSON records the machine it ran on under ``machine`` (formers.core.machine.machine_report): CPU
    kernels and speeds depend on the CPU kind, so numbers without it cannot be compared.
    """
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**metrics, "machine": machine_report()}, indent=2) + "\n")


def _without_option(argv: Sequence[str], option: str, takes: int) -> list[str]:
    """``argv`` without ``option`` and the ``takes`` values after it (also ``--option=value``)."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg == option:
            skip = takes
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--isa`` option every CPU benchmark takes (see :func:`run_per_isa`)."""
    parser.add_argument(
        "--isa", nargs="+", default=["native"], choices=list(ISAS), help="CPU kernel sets to time, one run each"
    )


def isa_run(runs: Mapping[str, dict], isa: str) -> dict:
    """The metrics of ``isa`` in :func:`run_per_isa`'s result, following a ``same_as`` entry to the run it repeats."""
    run = runs[isa]
    return runs[run["same_as"]] if "same_as" in run else run


def isa_in_force(isa: str) -> bool:
    """Whether this Python already runs with ``isa``'s environment (``native``: no override set)."""
    if isa == "native":
        return not any(name in os.environ for name in ISAS["avx2"])
    return all(os.environ.get(name) == value for name, value in ISAS[isa].items())


def run_per_isa(script: str | Path, argv: Sequence[str], isas: Sequence[str]) -> dict[str, dict]:
    """Run the benchmark ``script`` once per CPU kernel set in ``isas`` (keys of :data:`ISAS`), each in a fresh
    Python with that set's environment, one after the other; returns ``{isa: that run's metrics JSON}``.

    ``argv`` is the benchmark's own command line (its ``--isa`` and ``--metrics-json`` are replaced). A set that this
    CPU already runs natively (``avx2`` on an AVX2-only CPU) is not timed twice: its entry is ``{"same_as": "native"}``.
    Ratios compare candidates timed in the same run, so each set's ratios stand on their own.
    """
    argv = _without_option(_without_option(argv, "--isa", len(isas)), "--metrics-json", 1)
    native = torch.backends.cpu.get_cpu_capability().lower()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for isa in isas:
            if isa != "native" and "native" in isas and native == ISAS[isa].get("ATEN_CPU_CAPABILITY"):
                results[isa] = {"same_as": "native", "capability": native.upper()}
                continue
            out = Path(tmp) / f"{isa}.json"
            env = {**os.environ, **ISAS[isa]}
            print(f"--- {isa} kernels ({' '.join(f'{k}={v}' for k, v in ISAS[isa].items()) or 'no override'})")
            command = [sys.executable, str(script), *argv, "--isa", isa, "--metrics-json", str(out)]
            subprocess.run(command, env=env, check=True)
            results[isa] = json.loads(out.read_text())
    return results


# ATen ops that are dense matrix products (GEMM / convolution / fused attention): the arithmetic every
# implementation of the same model must do; the rest (element-wise, norms, copies, dropout masks, optimizer) is
# what an implementation can make cheaper.
GEMM_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "aten::_fft_r2c",
        "aten::_fft_c2r",
    }
)


def compute_bound(fn: Callable[[], object], repeats: int = 2) -> dict[str, float]:
    """Profile ``repeats`` calls of ``fn`` (after one warm-up) and split the CPU time into dense products
    (:data:`GEMM_OPS`) and the rest: ``{"total_s", "gemm_s", "gemm_share", "bound"}`` per call, where ``bound =
    total / gemm`` is the largest speed-up any implementation with the same products could reach over this one
    (everything else free). Profiler overhead inflates small ops a little, so the bound is generous."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / repeats
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6 / repeats
    return {"total_s": total, "gemm_s": gemm, "gemm_share": gemm / total, "bound": total / gemm if gemm else 0.0}

"""Small timing helpers shared by the benchmarks: thread pinning, interleaved repeats, medians, matmul ceiling.

Rules these helpers encode (see the CPU measurements in the project notes): pin the thread count, warm every
candidate up before timing, interleave the candidates inside each repeat so that machine noise hits all of them
alike, and report the median (typical) and the minimum (least disturbed). Compare candidates by ratios measured in
the same run, never by absolute times across runs or machines.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from formers.core.machine import machine_report

__all__ = ["Timing", "device_sync", "interleaved_timings", "matmul_candidate", "pin_threads", "load_average"]


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

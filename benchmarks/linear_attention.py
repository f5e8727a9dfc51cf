"""Benchmark Galerkin linear attention against softmax attention (torch SDPA and naive), time and memory.

Speed: at one size (default ``B=1, H=1, n=8192, d=64``, the issue's target "Galerkin ≥ 20x softmax attention"),
Galerkin attention (:func:`formers.kernels.linear.galerkin_attention`), ``F.scaled_dot_product_attention`` and naive
matmul-softmax-matmul attention are timed interleaved, forward and forward+backward, with pinned threads; medians,
best times and the ratios ``softmax / galerkin`` (> 1 = Galerkin faster) are reported.

Memory: for each length in ``--mem-lengths`` the peak of the bytes held by live tensors produced by aten ops
during one forward+backward is recorded with a ``TorchDispatchMode`` (inputs excluded; allocator caching and the
scratch buffers inside a fused kernel such as SDPA's CPU flash kernel are not seen). Galerkin grows linearly in
``n``; naive softmax attention quadratically.

Usage::

    python benchmarks/linear_attention.py --threads 2 --metrics-json results/bench/linear_attention.json
    python benchmarks/linear_attention.py --tiny   # seconds, for the test-suite

Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import math
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from _timing import interleaved_timings, load_average, pin_threads, write_json
from formers.kernels.linear import galerkin_attention

CANDIDATES = ("galerkin", "sdpa", "naive")
MEM_CANDIDATES = ("galerkin", "sdpa", "naive")


def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q kᵀ/√d) v`` with the full score matrix."""
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return torch.matmul(scores.softmax(dim=-1), v)


KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "galerkin": galerkin_attention,
    "sdpa": F.scaled_dot_product_attention,
    "naive": naive_attention,
}


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live storages created by aten ops inside the mode (tracked by tensor lifetime)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage data_ptr -> [nbytes, number of live tensors on it]
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor) and t.device.type == "cpu":
                self._track(t)
        return out

    def _track(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self.live:
            self.live[key] = [storage.nbytes(), 0]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self.live[key][1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]


def make_inputs(batch: int, heads: int, length: int, head_dim: int, grad: bool) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, heads, length, head_dim, generator=gen).requires_grad_(grad) for _ in range(3)]


def run_once(name: str, inputs: list[Tensor], backward: bool) -> None:
    out = KERNELS[name](*inputs)
    if backward:
        out.sum().backward()
        for t in inputs:
            t.grad = None


def measure_speed(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for mode, backward in (("fwd", False), ("fwd_bwd", True)):
        inputs = make_inputs(args.batch, args.heads, args.length, args.head_dim, backward)
        names = [n for n in CANDIDATES if not (n == "naive" and args.skip_naive)]
        candidates = {n: (lambda n=n, i=inputs, b=backward: _guarded(n, i, b)) for n in names}
        timings = interleaved_timings(candidates, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
        group = {f"{n}_median_s": t.median for n, t in timings.items()} | {
            f"{n}_best_s": t.best for n, t in timings.items()
        }
        for n in names[1:]:
            group[f"{n}_vs_galerkin"] = timings[n].median / timings["galerkin"].median
        results[mode] = group
    return results


def _guarded(name: str, inputs: list[Tensor], backward: bool) -> None:
    with torch.enable_grad() if backward else torch.no_grad():
        run_once(name, inputs, backward)


def measure_memory(args: argparse.Namespace) -> list[dict[str, int]]:
    rows = []
    for length in args.mem_lengths:
        row = {"n": length}
        for name in MEM_CANDIDATES:
            inputs = make_inputs(args.batch, args.heads, length, args.head_dim, grad=True)
            with PeakTensorMemory() as tracker:
                run_once(name, inputs, backward=True)
            row[f"{name}_peak_bytes"] = tracker.peak
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mem-lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--skip-naive", action="store_true", help="time only galerkin and sdpa")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--metrics-json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.threads, args.length, args.head_dim, args.repeats, args.warmup = 1, 64, 8, 1, 0
        args.mem_lengths = [32, 64]
    return args


def report(metrics: dict) -> None:
    shape = metrics["shape"]
    print(f"threads={metrics['threads']} load={metrics['load_average']:.2f} shape={shape}")
    for mode, group in metrics["speed"].items():
        parts = [f"{k[:-9]} {group[k] * 1e3:.2f} ms" for k in group if k.endswith("_median_s")]
        ratios = [f"{k[:-12]} / galerkin = {v:.1f}x" for k, v in group.items() if k.endswith("_vs_galerkin")]
        print(f"{mode:8s} " + ", ".join(parts) + " | " + ", ".join(ratios))
    print(f"{'n':>7s} " + " ".join(f"{n + ' MiB':>14s}" for n in MEM_CANDIDATES))
    for row in metrics["memory"]:
        print(f"{row['n']:7d} " + " ".join(f"{row[f'{n}_peak_bytes'] / 2**20:14.2f}" for n in MEM_CANDIDATES))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    metrics = {
        "threads": threads,
        "load_average": load_average(),
        "shape": {"batch": args.batch, "heads": args.heads, "length": args.length, "head_dim": args.head_dim},
        "speed": measure_speed(args),
        "memory": measure_memory(args),
    }
    report(metrics)
    write_json(args.metrics_json, metrics)
    return metrics


if __name__ == "__main__":
    main()

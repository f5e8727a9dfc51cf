"""Benchmark Swin window attention: formers ``WindowAttention`` (via ``attention()``) vs naive matmul-softmax-matmul.

Shape (default): Swin-T stage 1, ``B=8``, a ``56 x 56`` token map, ``C=96``, 3 heads, window 7, shifted by 3, i.e.
``8 * 64 = 512`` windows of 49 tokens with the relative position bias plus the ``(64, 49, 49)`` shift mask. Both
candidates share one :class:`~formers.core.layers.window_attention.WindowAttention` module (same weights, same
``qkv`` / ``proj`` linears); only the attention core differs:

- ``formers``: the module's forward: bias + mask folded into one ``attn_bias`` and passed to
  :func:`formers.core.attention.attention` (``backend="auto"``: SDPA with an additive mask on CPU);
- ``naive``: the official Swin code path, ``q * scale @ kᵀ + bias``, ``view(B, nW, h, N, N) + mask``, softmax, ``@ v``.

Forward (no grad) and forward+backward (input and weights require grad) are timed interleaved with pinned threads;
medians, best times and the ratio ``naive / formers`` (> 1 = formers faster) are reported, plus the max abs
difference of the two outputs.

Usage::

    python benchmarks/window_attention.py --threads 2 --metrics-json results/bench/window_attention.json
    python benchmarks/window_attention.py --tiny   # seconds, for the test-suite

Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import interleaved_timings, load_average, pin_threads, write_json
from formers.core.layers.window_attention import WindowAttention, shifted_window_mask, window_partition

CANDIDATES = ("formers", "naive")


def naive_window_attention(layer: WindowAttention, x: Tensor, mask: Tensor | None) -> Tensor:
    """The official Swin ``WindowAttention.forward`` arithmetic with ``layer``'s weights."""
    b_, n, c = x.shape
    h = layer.num_heads
    qkv = F.linear(x, layer.qkv.weight, layer.qkv.bias).reshape(b_, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * layer.scale) @ k.transpose(-2, -1)
    attn = attn + layer.relative_position_bias().unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(b_ // nw, nw, h, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, h, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b_, n, c)
    return F.linear(out, layer.proj.weight, layer.proj.bias)


def make_inputs(args: argparse.Namespace, grad: bool) -> tuple[WindowAttention, Tensor, Tensor | None]:
    torch.manual_seed(0)
    layer = WindowAttention(args.dim, args.heads, args.window).eval()
    layer.requires_grad_(grad)
    x = torch.randn(args.batch, args.size, args.size, args.dim)
    windows = window_partition(x, args.window).reshape(-1, args.window**2, args.dim).contiguous()
    windows.requires_grad_(grad)
    mask = shifted_window_mask(args.size, args.size, args.window, args.shift) if args.shift else None
    return layer, windows, mask


def _kernels() -> dict[str, Callable[[WindowAttention, Tensor, Tensor | None], Tensor]]:
    return {"formers": lambda layer, x, mask: layer(x, mask), "naive": naive_window_attention}


def run_once(name: str, inputs: tuple[WindowAttention, Tensor, Tensor | None], backward: bool) -> None:
    layer, x, mask = inputs
    with torch.enable_grad() if backward else torch.no_grad():
        out = _kernels()[name](layer, x, mask)
        if backward:
            out.sum().backward()
    if backward:
        x.grad = None
        layer.zero_grad(set_to_none=True)


def max_abs_diff(args: argparse.Namespace) -> float:
    layer, x, mask = make_inputs(args, grad=False)
    with torch.no_grad():
        return (layer(x, mask) - naive_window_attention(layer, x, mask)).abs().max().item()


def measure_speed(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for mode, backward in (("fwd", False), ("fwd_bwd", True)):
        inputs = make_inputs(args, backward)
        candidates = {n: (lambda n=n, i=inputs, b=backward: run_once(n, i, b)) for n in CANDIDATES}
        timings = interleaved_timings(candidates, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
        group = {f"{n}_median_s": t.median for n, t in timings.items()}
        group |= {f"{n}_best_s": t.best for n, t in timings.items()}
        group["naive_vs_formers"] = timings["naive"].median / timings["formers"].median
        results[mode] = group
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=56, help="side of the token map (Swin-T stage 1: 56)")
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--shift", type=int, default=3, help="0 = W-MSA (no mask), window // 2 = SW-MSA")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--metrics-json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.size, args.dim, args.heads, args.window, args.shift = 1, 8, 16, 2, 4, 2
        args.repeats, args.warmup = 1, 1
    return args


def report(metrics: dict) -> None:
    a = metrics["args"]
    print(
        f"threads={metrics['threads']} load={metrics['load_average']:.2f} B={a['batch']} map={a['size']}x{a['size']} "
        f"C={a['dim']} heads={a['heads']} window={a['window']} shift={a['shift']} "
        f"max|formers-naive|={metrics['max_abs_diff']:.2e}"
    )
    for mode, group in metrics["speed"].items():
        parts = [
            f"{n} {group[f'{n}_median_s'] * 1e3:.2f} ms (best {group[f'{n}_best_s'] * 1e3:.2f})" for n in CANDIDATES
        ]
        print(f"{mode:8s} " + ", ".join(parts) + f" | naive/formers {group['naive_vs_formers']:.2f}x")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    metrics = {
        "threads": threads,
        "load_average": load_average(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "max_abs_diff": max_abs_diff(args),
        "speed": measure_speed(args),
    }
    report(metrics)
    write_json(args.metrics_json, metrics)
    return metrics


if __name__ == "__main__":
    main()

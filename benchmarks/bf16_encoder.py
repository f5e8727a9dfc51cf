"""Benchmark CPU bf16 autocast training against fp32 for a padding-free (varlen) transformer encoder, in one run.

The issue's target: a 6-layer encoder (d=512, 8 heads, MLP 4x), a batch of 32 sequences with lengths uniform in
``[64, 1024]``, packed (``cu_seqlens``, no padding), trains under ``torch.autocast("cpu", torch.bfloat16)`` >= 2.5x
faster than in fp32, with a short fit's loss curve within tolerance of fp32's.

* ``steps``: one training step = forward + MSE loss on a per-token regression head + backward + AdamW step, fp32
  master weights in both cases. ``fp32`` and ``bf16`` are two copies of one initialisation, timed interleaved
  (``_timing.interleaved_timings``) at each thread count of ``--threads``; reported: median / min seconds and
  ``fp32 / bf16`` from medians (> 1 = bf16 faster). ``--compare-sdpa`` adds bf16 with torch's SDPA attention
  (the path ``auto`` took before the ``cpu_bf16`` kernel).
* ``profile`` (``--profile``): torch.profiler's top ops by self CPU time for one step of each, at the first thread
  count (where the time goes).
* ``fit`` (``--fit-steps N``): N AdamW steps of a small sequence classifier in fp32 and in bf16 autocast from the
  same initialisation and data; reported: both loss curves and the largest gap between their 5-step running
  means, relative to the initial loss.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bf16_encoder.py --threads 1 2 --metrics-json results/bench/bf16.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from _timing import interleaved_timings, load_average, pin_threads, write_json
from formers.core.attention import use_backend
from formers.core.models.encoder import TransformerEncoder
from formers.core.varlen import cu_seqlens_from_lengths


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    """CPU bf16 autocast when ``enabled`` (matmuls in bf16; norms and softmax statistics stay fp32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


class PackedRegressor(nn.Module):
    """Encoder on packed tokens plus a linear per-token head (the timed model)."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(dim, depth, heads)
        self.head = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        return self.head(self.encoder(x, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen))


def train_step_fn(
    model: nn.Module, bf16: bool, x: Tensor, target: Tensor, cu: Tensor, max_len: int, backend: str = "auto"
) -> Callable:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        with autocast(bf16), use_backend(backend):
            out = model(x, cu, max_len)
        loss = nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def make_batch(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor, int]:
    gen = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.batch,), generator=gen)
    total = int(lengths.sum())
    x = torch.randn(total, args.dim, generator=gen)
    target = torch.randn(total, args.dim, generator=gen)
    return x, target, cu_seqlens_from_lengths(lengths), int(lengths.max())


def measure_steps(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    base = PackedRegressor(args.dim, args.depth, args.heads)
    x, target, cu, max_len = make_batch(args)
    steps = {
        "fp32": train_step_fn(copy.deepcopy(base), False, x, target, cu, max_len),
        "bf16": train_step_fn(copy.deepcopy(base), True, x, target, cu, max_len),
    }
    if args.compare_sdpa:  # bf16 with torch's SDPA (the path before the cpu_bf16 kernel)
        steps["bf16_sdpa"] = train_step_fn(copy.deepcopy(base), True, x, target, cu, max_len, backend="sdpa")
    result = {"total_tokens": x.shape[0]}
    for threads in args.threads:
        pin_threads(threads)
        t = interleaved_timings(steps, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
        result[f"threads_{threads}"] = {
            **{name: {"median_s": round(v.median, 3), "min_s": round(v.best, 3)} for name, v in t.items()},
            "speedup": round(t["fp32"].median / t["bf16"].median, 3),
            "speedup_min": round(t["fp32"].best / t["bf16"].best, 3),
        }
        if "bf16_sdpa" in t:
            result[f"threads_{threads}"]["speedup_bf16_sdpa"] = round(t["fp32"].median / t["bf16_sdpa"].median, 3)
    if args.profile:
        pin_threads(args.threads[0])
        result["profile"] = {name: profile_step(fn, args.profile_top) for name, fn in steps.items()}
    return result


def profile_step(step: Callable[[], float], top: int) -> list[dict]:
    """Top ops of one step by self CPU time: name, self ms, share of the step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls": e.count,
        }
        for e in events[:top]
    ]


# ----------------------------------------------------------------------------------------------------------- fit


class PackedClassifier(nn.Module):
    """Token embedding + encoder on packed tokens + mean pooling per sequence + linear head."""

    def __init__(self, vocab: int, dim: int, depth: int, heads: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = TransformerEncoder(dim, depth, heads)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: Tensor, cu: Tensor, max_len: int) -> Tensor:
        h = self.encoder(self.embed(tokens), cu_seqlens=cu, max_seqlen=max_len)
        lengths = (cu[1:] - cu[:-1]).tolist()
        pooled = torch.stack([part.mean(0) for part in h.split(lengths)])
        return self.head(pooled)


def fit_curves(
    steps: int, *, dim: int = 64, depth: int = 2, heads: int = 4, batch: int = 16, seed: int = 0, lr: float = 3e-3
) -> dict[str, list[float]]:
    """Loss curves of ``steps`` AdamW steps in fp32 and in bf16 autocast, same initialisation and data.

    Task: is token 1 more frequent than token 2 in the sequence (vocab 8, lengths 8-32): learnable in a few steps.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    base = PackedClassifier(8, dim, depth, heads, 2)
    batches = []
    for _ in range(steps):
        lengths = torch.randint(8, 33, (batch,), generator=gen)
        tokens = torch.randint(0, 8, (int(lengths.sum()),), generator=gen)
        labels = torch.stack([(p == 1).sum() > (p == 2).sum() for p in tokens.split(lengths.tolist())]).long()
        batches.append((tokens, cu_seqlens_from_lengths(lengths), int(lengths.max()), labels))
    curves = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        model = copy.deepcopy(base)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        losses = []
        for tokens, cu, max_len, labels in batches:
            with autocast(bf16):
                logits = model(tokens, cu, max_len)
            loss = nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(round(loss.item(), 5))
        curves[name] = losses
    return curves


def curve_gap(curves: dict[str, list[float]], window: int = 5) -> float:
    """Largest |bf16 - fp32| gap between the curves' running means over ``window`` steps, relative to the initial
    fp32 loss. (Single late steps are noisy: two runs that drift apart by rounding see different minibatch losses.)"""

    def smooth(xs: list[float]) -> list[float]:
        return [sum(xs[i : i + window]) / window for i in range(max(1, len(xs) - window + 1))]

    a, b = smooth(curves["fp32"]), smooth(curves["bf16"])
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) / curves["fp32"][0]


# ---------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-len", type=int, default=64)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compare-sdpa", action="store_true", help="also time bf16 with SDPA attention")
    p.add_argument("--profile", action="store_true", help="profile one step of each at the first thread count")
    p.add_argument("--profile-top", type=int, default=12)
    p.add_argument("--fit-steps", type=int, default=0, help="also compare fp32 and bf16 loss curves (0: skip)")
    p.add_argument("--skip-steps", action="store_true", help="only the fit")
    p.add_argument("--metrics-json", "--json", dest="json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or min(args.threads) < 1 or not 1 <= args.min_len <= args.max_len:
        p.error("need --repeats >= 1, --warmup >= 0, --threads >= 1, 1 <= --min-len <= --max-len")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    metrics: dict = {
        "env": {
            "torch": torch.__version__,
            "batch": args.batch,
            "lengths": [args.min_len, args.max_len],
            "dim": args.dim,
            "depth": args.depth,
            "heads": args.heads,
            "repeats": args.repeats,
            "load_avg_start": round(load_average(), 2),
        }
    }
    if not args.skip_steps:
        metrics["steps"] = res = measure_steps(args)
        print(f"bf16 autocast vs fp32 training step, {res['total_tokens']} packed tokens, batch {args.batch}")
        for threads in args.threads:
            r = res[f"threads_{threads}"]
            print(
                f"  {threads} thread(s): fp32 {r['fp32']['median_s']:.3f} s  bf16 {r['bf16']['median_s']:.3f} s  "
                f"fp32/bf16 {r['speedup']:.2f}x (min {r['speedup_min']:.2f}x)"
                + (f"  fp32/bf16-with-SDPA {r['speedup_bf16_sdpa']:.2f}x" if "speedup_bf16_sdpa" in r else "")
            )
        for name, rows in res.get("profile", {}).items():
            print(f"  profile {name}: " + ", ".join(f"{r['op']} {r['share']:.0%}" for r in rows[:8]))
    if args.fit_steps:
        curves = fit_curves(args.fit_steps, seed=args.seed)
        metrics["fit"] = {**curves, "max_rel_gap": round(curve_gap(curves), 4)}
        print(
            f"fit {args.fit_steps} steps: fp32 {curves['fp32'][0]:.3f}->{curves['fp32'][-1]:.3f}, bf16 "
            f"{curves['bf16'][0]:.3f}->{curves['bf16'][-1]:.3f}, max gap {metrics['fit']['max_rel_gap']:.2%}"
        )
    metrics["env"]["load_avg_end"] = round(load_average(), 2)
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

"""Benchmark ``formers.core.attention.attention`` backends against naive PyTorch attention, measured in one run.

For each dtype (fp32, bf16), case (dense; additive ``(B, H, L, L)`` bias; ``learned_bias``: a ``(1, H, L, L)`` bias that
gets a gradient, as Swin's relative position bias; causal) and mode (forward, forward+backward)
every available backend is timed interleaved with naive matmul-softmax-matmul attention and with a plain square
matmul (the practical compute ceiling of the machine, so it sees the same load as the kernels). Reported per
candidate: median and best time, the speed ratio ``naive / backend`` (from medians, > 1 = faster than naive; also
from best times), GFLOP/s, and that GFLOP/s as a fraction of the matmul's GFLOP/s in the same group.

FLOP convention (as in the FlashAttention benchmarks): forward ``4·B·H·L²·D``, forward+backward ``3×`` that (backward
= 2× forward), causal counts half (only the useful lower triangle). Naive attention computes the full square anyway;
the ratios do not depend on the convention.

Usage::

    python benchmarks/attention.py --threads 2 --batch 8 --heads 8 --length 1024 --head-dim 64 \\
        --metrics-json results/bench/attention.json --plot-tsv results/bench/attention.tsv

The DVC stage ``bench_attention`` (root ``dvc.yaml``) runs it with the ``bench:`` section of ``params.yaml``.
Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from _timing import Timing, interleaved_timings, load_average, matmul_candidate, pin_threads, write_json
from formers.core.attention import BackendUnavailableError, attention, available_backends

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CASES = ("dense", "bias", "learned_bias", "causal")
MODES = ("fwd", "fwd_bwd")
NAIVE = "naive"
MATMUL = "matmul"


@dataclass(frozen=True)
class Shape:
    """Attention problem size: q, k, v are ``(batch, heads, length, head_dim)``."""

    batch: int
    heads: int
    length: int
    head_dim: int


@dataclass
class Row:
    """One measured candidate of one (dtype, case, mode) group; a plot/TSV row."""

    dtype: str
    case: str
    mode: str
    impl: str
    median_ms: float
    min_ms: float
    gflops: float
    frac_of_matmul: float
    vs_naive: float
    vs_naive_min: float
    max_abs_err: float

    @property
    def name(self) -> str:
        return f"{self.dtype} {self.case} {self.mode} {self.impl}"


# ---------------------------------------------------------------------------------------------------------- inputs


def make_inputs(shape: Shape, dtype: torch.dtype, case: str, device: torch.device, grad: bool) -> dict[str, Tensor]:
    """Random q, k, v (and bias for the ``bias`` case, output gradient for backward), seeded for reproducibility."""
    gen = torch.Generator(device="cpu").manual_seed(1234)
    dims = (shape.batch, shape.heads, shape.length, shape.head_dim)

    def rand(*size: int) -> Tensor:
        return torch.randn(*size, generator=gen).to(device=device, dtype=dtype)

    inputs = {name: rand(*dims).requires_grad_(grad) for name in ("q", "k", "v")}
    if case == "bias":
        inputs["bias"] = rand(shape.batch, shape.heads, shape.length, shape.length)
    if case == "learned_bias":
        inputs["bias"] = rand(1, shape.heads, shape.length, shape.length).requires_grad_(grad)
    if grad:
        inputs["grad_out"] = rand(*dims)
    return inputs


def naive_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, causal_mask: Tensor | None) -> Tensor:
    """Textbook attention in the input dtype: ``softmax(q kᵀ / √d + bias) v``; ``causal_mask``: True = hidden."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if bias is not None:
        scores = scores + bias
    if causal_mask is not None:
        scores = scores.masked_fill(causal_mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def forward_fn(impl: str, inputs: dict[str, Tensor], case: str) -> Callable[[], Tensor]:
    """A zero-argument forward call of ``impl`` (``naive`` or a backend name) on ``inputs``."""
    q, k, v, bias = inputs["q"], inputs["k"], inputs["v"], inputs.get("bias")
    causal = case == "causal"
    if impl == NAIVE:
        length = q.shape[-2]
        mask = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1) if causal else None
        return lambda: naive_attention(q, k, v, bias, mask)
    return lambda: attention(q, k, v, attn_bias=bias, causal=causal, backend=impl)


def timed_fn(forward: Callable[[], Tensor], inputs: dict[str, Tensor], mode: str) -> Callable[[], object]:
    """Wrap a forward call for ``mode``: forward only under ``no_grad``, or forward + ``autograd.grad`` for q, k, v
    (and a learned bias)."""
    if mode == "fwd":

        def run_fwd() -> Tensor:
            with torch.no_grad():
                return forward()

        return run_fwd
    leaves = tuple(t for name, t in inputs.items() if name != "grad_out" and t.requires_grad)
    return lambda: torch.autograd.grad(forward(), leaves, inputs["grad_out"])


# ----------------------------------------------------------------------------------------------------- measuring


def attention_flops(shape: Shape, mode: str, causal: bool) -> float:
    """FLOPs of one call: forward ``4·B·H·L²·D``, ×3 with backward, ×½ when causal."""
    fwd = 4.0 * shape.batch * shape.heads * shape.length**2 * shape.head_dim
    return fwd * (3.0 if mode == "fwd_bwd" else 1.0) * (0.5 if causal else 1.0)


def float32_expected(inputs: dict[str, Tensor], case: str) -> Tensor:
    """Naive attention in float32 on the same (possibly bf16-rounded) inputs: what every candidate is compared to."""
    as32 = {name: t.detach().float() for name, t in inputs.items()}
    with torch.no_grad():
        return forward_fn(NAIVE, as32, case)()


def runnable_candidates(
    backends: list[str], inputs: dict[str, Tensor], case: str, mode: str
) -> tuple[dict[str, Callable[[], object]], dict[str, float], dict[str, str]]:
    """Timed calls of naive + every backend that serves this call, their max abs error vs float32, refusals.

    Each candidate is called once in ``mode`` here (so a backend that refuses only with grad is caught); that call
    doubles as a warm-up.
    """
    expected = float32_expected(inputs, case)
    fns, errors, refused = {}, {}, {}
    for name in [NAIVE, *backends]:
        forward = forward_fn(name, inputs, case)
        fn = timed_fn(forward, inputs, mode)
        try:
            fn()
        except (BackendUnavailableError, NotImplementedError) as exc:
            refused[name] = str(exc).splitlines()[0]
            continue
        # same grad mode as the timed call: a backend may serve only training calls (cpu_bf16)
        errors[name] = (forward().detach().float() - expected).abs().max().item()
        fns[name] = fn
    return fns, errors, refused


def measure_group(args: argparse.Namespace, dtype_name: str, case: str, mode: str) -> tuple[list[Row], dict[str, str]]:
    """Measure naive, every runnable backend and the matmul for one (dtype, case, mode); rows and refusal reasons."""
    shape = Shape(args.batch, args.heads, args.length, args.head_dim)
    inputs = make_inputs(shape, DTYPES[dtype_name], case, args.device, grad=mode == "fwd_bwd")
    fns, errors, refused = runnable_candidates(args.backends, inputs, case, mode)
    fns[MATMUL], matmul_flops = matmul_candidate(args.matmul_size, DTYPES[dtype_name], args.device)
    timings = interleaved_timings(fns, repeats=args.repeats, warmup=args.warmup, device=args.device)
    ceiling = matmul_flops / timings[MATMUL].median / 1e9
    flops = attention_flops(shape, mode, causal=case == "causal")
    rows = [
        make_row((dtype_name, case, mode, name), timing, timings[NAIVE], flops, ceiling, errors[name])
        for name, timing in timings.items()
        if name != MATMUL
    ]
    rows.append(make_row((dtype_name, case, mode, MATMUL), timings[MATMUL], None, matmul_flops, ceiling, math.nan))
    del inputs, fns
    gc.collect()
    return rows, refused


def make_row(
    key: tuple[str, str, str, str], timing: Timing, naive: Timing | None, flops: float, ceiling: float, err: float
) -> Row:
    """One report row for ``key`` = (dtype, case, mode, impl); ratios vs ``naive`` (NaN for the matmul itself)."""
    gflops = flops / timing.median / 1e9
    return Row(
        *key,
        median_ms=timing.median * 1e3,
        min_ms=timing.best * 1e3,
        gflops=gflops,
        frac_of_matmul=gflops / ceiling,
        vs_naive=naive.median / timing.median if naive is not None else math.nan,
        vs_naive_min=naive.best / timing.best if naive is not None else math.nan,
        max_abs_err=err,
    )


def best_ceilings(rows: list[Row]) -> dict[str, float]:
    """Per dtype, the highest matmul GFLOP/s of any group: the least disturbed estimate of the ceiling."""
    ceilings: dict[str, float] = {}
    for row in rows:
        if row.impl == MATMUL:
            ceilings[row.dtype] = max(ceilings.get(row.dtype, 0.0), row.gflops)
    return ceilings


# ------------------------------------------------------------------------------------------------------- reports


def _r(x: float) -> float:
    """Round to 4 significant digits for the reports."""
    return float(f"{x:.4g}") if math.isfinite(x) else x


def metrics_dict(rows: list[Row], env: dict[str, object]) -> dict[str, object]:
    """Nested metrics for DVC: ``<case>.<mode>.<dtype>.<impl>_vs_naive`` (+ ``_gflops, _frac_matmul, _max_abs_err``).

    Times and best-time ratios are left to the TSV, to keep ``dvc metrics show/diff`` readable.
    """
    out: dict[str, object] = {"env": env, MATMUL: {f"{d}_gflops": _r(g) for d, g in best_ceilings(rows).items()}}
    for row in rows:
        group = out.setdefault(row.case, {}).setdefault(row.mode, {}).setdefault(row.dtype, {})
        if row.impl == MATMUL:
            group["matmul_gflops"] = _r(row.gflops)
            continue
        if row.impl != NAIVE:
            group[f"{row.impl}_vs_naive"] = _r(row.vs_naive)
        group[f"{row.impl}_gflops"] = _r(row.gflops)
        group[f"{row.impl}_frac_matmul"] = _r(row.frac_of_matmul)
        group[f"{row.impl}_max_abs_err"] = _r(row.max_abs_err)
    return out


PLOT_FIELDS = ("name", "dtype", "case", "mode", "impl", "median_ms", "min_ms", "gflops", "frac_of_matmul", "vs_naive")
PLOT_EXTRA = ("vs_naive_min", "max_abs_err")


def _tsv_value(value: object) -> object:
    if isinstance(value, float):
        return _r(value) if math.isfinite(value) else ""
    return value


def write_tsv(rows: list[Row], path: Path) -> None:
    """One row per candidate (matmul included; its ratio columns empty), for ``dvc plots``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*PLOT_FIELDS, *PLOT_EXTRA], delimiter="\t")
        writer.writeheader()
        for row in rows:
            writer.writerow({"name": row.name, **{k: _tsv_value(v) for k, v in asdict(row).items()}})


def format_table(rows: list[Row], refused: dict[str, str]) -> str:
    """Human-readable table, grouped by dtype/case/mode."""
    header = f"{'dtype':<5} {'case':<7} {'mode':<8} {'impl':<10} {'median ms':>10} {'min ms':>9} "
    header += f"{'GFLOP/s':>8} {'%matmul':>8} {'x naive':>8} {'max err':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        ratio = f"{row.vs_naive:>8.2f}" if math.isfinite(row.vs_naive) else f"{'-':>8}"
        err = f"{row.max_abs_err:>9.2e}" if math.isfinite(row.max_abs_err) else f"{'-':>9}"
        lines.append(
            f"{row.dtype:<5} {row.case:<7} {row.mode:<8} {row.impl:<10} {row.median_ms:>10.2f} {row.min_ms:>9.2f} "
            f"{row.gflops:>8.1f} {100 * row.frac_of_matmul:>7.1f}% {ratio} {err}"
        )
    ceilings = best_ceilings(rows)
    lines.append("matmul ceiling (best group): " + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in ceilings.items()))
    lines += [f"skipped {key}: {reason}" for key, reason in refused.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- main


def _csv_list(choices: tuple[str, ...] | None = None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if choices is not None and item not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the DVC stage fills them from ``params.yaml``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds, candidates interleaved in each")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each candidate first")
    p.add_argument("--matmul-size", type=int, default=2048, help="square matmul timed with every group (ceiling)")
    p.add_argument("--dtypes", type=_csv_list(tuple(DTYPES)), default=list(DTYPES))
    p.add_argument("--cases", type=_csv_list(CASES), default=list(CASES))
    p.add_argument("--modes", type=_csv_list(MODES), default=list(MODES))
    p.add_argument("--backends", type=_csv_list(), default=None, help="default: available_backends(dense=True)")
    p.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    p.add_argument("--metrics-json", type=Path, default=None, help="nested metrics JSON (DVC metrics)")
    p.add_argument("--plot-tsv", type=Path, default=None, help="one row per candidate (DVC plots)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("need --repeats >= 1, --warmup >= 0, --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print the table, write the requested reports; returns the metrics dict."""
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    args.backends = args.backends if args.backends is not None else available_backends(dense=True)
    load_start = load_average()
    rows, refused = [], {}
    for dtype in args.dtypes:
        for case in args.cases:
            for mode in args.modes:
                group_rows, group_refused = measure_group(args, dtype, case, mode)
                rows += group_rows
                refused.update({f"{dtype}/{case}/{mode}/{name}": why for name, why in group_refused.items()})
    env = {
        "threads": threads,
        "batch": args.batch,
        "heads": args.heads,
        "length": args.length,
        "head_dim": args.head_dim,
        "repeats": args.repeats,
        "load_avg_start": _r(load_start),
        "load_avg_end": _r(load_average()),
    }
    print(
        f"torch {torch.__version__} | device {args.device} | threads {threads} | "
        f"B={args.batch} H={args.heads} L={args.length} D={args.head_dim} | repeats {args.repeats} "
        f"(+{args.warmup} warm-up) | backends {args.backends} | load avg {load_start:.2f} -> {load_average():.2f}"
    )
    print(format_table(rows, refused))
    metrics = metrics_dict(rows, env)
    write_json(args.metrics_json, metrics)
    if args.plot_tsv is not None:
        write_tsv(rows, args.plot_tsv)
    return metrics


if __name__ == "__main__":
    main()

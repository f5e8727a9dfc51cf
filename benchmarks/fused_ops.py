"""Benchmark fused small ops on CPU: eager torch vs ``torch.compile`` (Inductor C++ codegen) in one run.

Ops at transformer shapes (defaults: bias + GELU on ``32 x 512 x 2048`` - the MLP hidden layer of d=512, 32
sequences of 512 tokens - and residual add + LayerNorm on ``32 x 512 x 512``), in fp32 and bf16, forward (under
``no_grad``) and forward+backward. ``eager`` is what :mod:`formers.core.layers.fused` runs on CPU; ``compiled`` is
the same function through ``torch.compile(dynamic=False)`` (compile time is paid in the warm-up, not timed, and
reported separately). Reported: median / min ms and ``eager / compiled`` (> 1 = compile pays) from medians.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fused_ops.py --threads 1 --json results/bench/fused_ops.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import interleaved_timings, load_average, pin_threads, write_json

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bias_gelu_eager(x: Tensor, bias: Tensor) -> Tensor:
    return F.gelu(x + bias)


def add_layer_norm_eager(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    total = x + residual
    return F.layer_norm(total, (x.shape[-1],), weight, bias), total


def _inputs(op: str, shape: tuple[int, ...], dtype: torch.dtype, grad: bool) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = shape[-1]
    if op == "bias_gelu":
        tensors = [torch.randn(shape, generator=gen), torch.randn(n, generator=gen)]
    else:
        tensors = [torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)]
        tensors += [torch.randn(n, generator=gen), torch.randn(n, generator=gen)]
    return [t.to(dtype).requires_grad_(grad) for t in tensors]


def _candidate(fn: Callable, inputs: list[Tensor], mode: str) -> Callable[[], object]:
    if mode == "fwd":

        def run_fwd() -> object:
            with torch.no_grad():
                return fn(*inputs)

        return run_fwd

    def run_fwd_bwd() -> object:
        out = fn(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        return torch.autograd.grad(outs, inputs, [torch.ones_like(o) for o in outs])

    return run_fwd_bwd


def bench_op(op: str, shape: tuple[int, ...], dtype_name: str, repeats: int, warmup: int, compile: bool) -> dict:
    eager = bias_gelu_eager if op == "bias_gelu" else add_layer_norm_eager
    compiled = torch.compile(eager, dynamic=False) if compile else None
    results = {}
    for mode in ("fwd", "fwd_bwd"):
        inputs = _inputs(op, shape, DTYPES[dtype_name], grad=mode == "fwd_bwd")
        cands = {"eager": _candidate(eager, inputs, mode)}
        row: dict = {}
        if compiled is not None:
            cands["compiled"] = _candidate(compiled, inputs, mode)
            start = time.perf_counter()
            cands["compiled"]()  # compile outside the timings
            row["compile_s"] = round(time.perf_counter() - start, 1)
            with torch.no_grad():
                got, want = _tuple(compiled(*inputs)), _tuple(eager(*inputs))
            row["max_abs_err"] = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, want, strict=True))
        timings = interleaved_timings(cands, repeats=repeats, warmup=warmup, device=torch.device("cpu"))
        for name, t in timings.items():
            row[name] = {"median_ms": round(t.median * 1e3, 3), "min_ms": round(t.best * 1e3, 3)}
        if compiled is not None:
            row["eager_over_compiled"] = round(timings["eager"].median / timings["compiled"].median, 3)
            row["eager_over_compiled_min"] = round(timings["eager"].best / timings["compiled"].best, 3)
        results[mode] = row
    return results


def _tuple(out: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gelu-shape", type=int, nargs="+", default=[32, 512, 2048])
    parser.add_argument("--ln-shape", type=int, nargs="+", default=[32, 512, 512])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="time eager only (no Inductor)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    threads = pin_threads(args.threads)
    metrics: dict = {"threads": threads, "load_average": load_average(), "ops": {}}
    for op, shape in (("bias_gelu", tuple(args.gelu_shape)), ("add_layer_norm", tuple(args.ln_shape))):
        for dtype_name in args.dtypes:
            key = f"{op}/{dtype_name}"
            res = bench_op(op, shape, dtype_name, args.repeats, args.warmup, not args.no_compile)
            metrics["ops"][key] = res
            for mode in ("fwd", "fwd_bwd"):
                r = res[mode]
                line = f"{key:<22} {mode:<8} eager {r['eager']['median_ms']:9.2f} ms"
                if "compiled" in r:
                    line += (
                        f"  compiled {r['compiled']['median_ms']:9.2f} ms  eager/compiled "
                        f"{r['eager_over_compiled']:.2f}x (min {r['eager_over_compiled_min']:.2f}x)  "
                        f"(compile {r['compile_s']} s, err {r['max_abs_err']:.1e})"
                    )
                print(line)
    metrics["load_average_end"] = load_average()
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

"""Benchmark one training step (forward + MSE backward + Adam) of the formers.timeseries forecasters.

Default: the paper ETTh1 configurations (``create_model(name)`` defaults: seq_len 96, label_len 48, pred_len 96,
7 variates, hourly timeF marks; Informer/Autoformer d_model 512 / d_ff 2048, iTransformer 256 / 256), batch 32,
1 CPU thread. Each model's fp32 step and bf16-autocast step are timed interleaved (same machine noise); the median
seconds per step, the best, and the bf16/fp32 ratio (< 1 = bf16 faster) are reported. Reference-code timings on the
same kind of machine (1 thread, batch 32): about 0.15 s/step iTransformer, 3.1-3.5 s/step Informer and Autoformer.

Usage::

    python benchmarks/timeseries_step.py --metrics-json results/bench/timeseries_step.json
    python benchmarks/timeseries_step.py --models itransformer --steps 10
    python benchmarks/timeseries_step.py --tiny   # registry test configs, seconds (smoke test)

Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from _timing import interleaved_timings, load_average, pin_threads, write_json
from formers.core.registry import create_model, get_model_entry

MODELS = ("itransformer", "autoformer", "informer")
DTYPES = ("fp32", "bf16")


def make_step(name: str, batch: int, dtype: str, device: torch.device, tiny: bool) -> tuple[Callable[[], float], int]:
    """A closure running one training step of a fresh ``name`` model, and the model's parameter count."""
    torch.manual_seed(0)
    kwargs = get_model_entry(name).test_kwargs if tiny else {}
    model = create_model(name, **kwargs).to(device).train()
    inputs = model.example_inputs(batch)
    target = torch.randn(model.expected_output_shape(batch), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.mse_loss(model(**inputs).float(), target)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, model.num_parameters()


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    steps, params = {}, 0
    for dtype in args.dtypes:
        steps[dtype], params = make_step(name, args.batch, dtype, device, args.tiny)
    timings = interleaved_timings(steps, repeats=args.steps, warmup=args.warmup, device=device)
    result: dict[str, float] = {"params": params}
    for dtype, timing in timings.items():
        result[f"{dtype}_s_per_step"] = timing.median
        result[f"{dtype}_best_s"] = timing.best
    if {"fp32", "bf16"} <= set(timings):
        result["bf16_over_fp32"] = timings["bf16"].median / timings["fp32"].median
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and dtype (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="the registry's tiny test configurations (smoke test)")
    parser.add_argument("--metrics-json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.threads < 1 or args.warmup < 0:
        parser.error("--steps, --batch and --threads must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    threads = pin_threads(args.threads)
    metrics: dict = {
        "config": {"batch": args.batch, "threads": threads, "device": str(device), "tiny": args.tiny},
        "load_average": load_average(),
    }
    print(f"one training step (fwd + bwd + Adam), batch {args.batch}, {threads} thread(s), {device}")
    print(f"{'model':<14}{'params':>12}" + "".join(f"{d + ' s/step':>14}" for d in args.dtypes) + f"{'bf16/fp32':>11}")
    for name in args.models:
        result = measure(name, args, device)
        metrics[name] = result
        cells = "".join(f"{result[f'{d}_s_per_step']:>14.4f}" for d in args.dtypes)
        ratio = f"{result['bf16_over_fp32']:>11.2f}" if "bf16_over_fp32" in result else f"{'-':>11}"
        print(f"{name:<14}{result['params']:>12,}{cells}{ratio}", flush=True)
    metrics["load_average_after"] = load_average()
    write_json(args.metrics_json, metrics)
    return metrics


if __name__ == "__main__":
    main()

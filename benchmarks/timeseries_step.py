"""Benchmark one training step (forward + MSE backward + Adam) of the formers.timeseries forecasters.

Default: the paper ETTh1 configurations (``create_model(name)`` defaults: seq_len 96, label_len 48, pred_len 96,
7 variates, hourly timeF marks; Informer/Autoformer d_model 512 / d_ff 2048, iTransformer 256 / 256), batch 32,
1 CPU thread. Each model's fp32 step and bf16-autocast step are timed interleaved (same machine noise); the median
seconds per step, the best, and the bf16/fp32 ratio (< 1 = bf16 faster) are reported. Reference-code timings on the
same kind of machine (1 thread, batch 32): about 0.15 s/step iTransformer, 3.1-3.5 s/step Informer and Autoformer.

``--reference`` adds a third candidate to each model's interleaved rounds: the line-by-line transcription of the
reference code (TSLib / Informer2020 / thuml iTransformer) that the equivalence tests use
(``tests/timeseries/_tslib_reference.py``), in fp32, with the same inputs, and reports ours-fp32 / reference
(< 1 = ours faster). Both train with the papers' dropout of 0.1.

Usage::

    python benchmarks/timeseries_step.py --metrics-json results/bench/timeseries_step.json
    python benchmarks/timeseries_step.py --models itransformer --steps 10
    python benchmarks/timeseries_step.py --reference     # + the reference code, same rounds (CPU)
    python benchmarks/timeseries_step.py --tiny   # registry test configs, seconds (smoke test)
    python benchmarks/timeseries_step.py --reference --dtypes fp32 --isa native avx2   # both CPU kernel sets

``--isa native avx2`` runs the whole benchmark once per CPU kernel set, each in a fresh Python (torch reads the
overrides at start-up): this CPU's own kernels, then torch's AVX2 kernels with oneDNN capped at AVX2, which is what an
AVX2-only CPU runs (on an AVX2-only CPU the second is the first and is not repeated). The JSON then holds one entry per
set under ``isa_runs``, each with its machine record.

Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from _timing import (
    add_isa_argument,
    compute_bound,
    interleaved_timings,
    isa_in_force,
    isa_run,
    load_average,
    pin_threads,
    run_per_isa,
    write_json,
)
from formers.core.optim import fused_by_default
from formers.core.registry import create_model, get_model_entry

MODELS = ("itransformer", "autoformer", "informer")
DTYPES = ("fp32", "bf16")
# timed rounds per model when --steps is not given: a 0.05 s iTransformer step needs many for a stable median
DEFAULT_STEPS = {"itransformer": 30, "autoformer": 5, "informer": 5}
REFERENCE_FILE = Path(__file__).resolve().parents[1] / "tests" / "timeseries" / "_tslib_reference.py"
REFERENCE_CLASSES = {
    "itransformer": "ITransformerReference",
    "autoformer": "AutoformerReference",
    "informer": "InformerReference",
}


# The ETTh1 paper configurations (create_model's defaults), as the reference transcriptions take them.
_ETTH1 = {"seq_len": 96, "label_len": 48, "pred_len": 96, "enc_in": 7, "dec_in": 7, "c_out": 7, "n_heads": 8}
_ENCODER_DECODER = {**_ETTH1, "d_model": 512, "d_ff": 2048, "e_layers": 2, "d_layers": 1, "factor": 3, "dropout": 0.1}
REFERENCE_CONFIGS = {
    "itransformer": {**_ETTH1, "d_model": 256, "d_ff": 256, "e_layers": 2, "dropout": 0.1},
    "autoformer": {**_ENCODER_DECODER, "moving_avg": 25},
    "informer": _ENCODER_DECODER,
}


def _model_kwargs(name: str, tiny: bool) -> dict:
    return dict(get_model_entry(name).test_kwargs) if tiny else {}


def _training_step(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    autocast: torch.autocast,
    optimizer_kwargs: dict,
) -> Callable[[], float]:
    """A closure running one training step (fwd, MSE, bwd, Adam) of ``model`` on fixed inputs."""
    optimizer = torch.optim.Adam(model.parameters(), **optimizer_kwargs)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.mse_loss(model(**inputs).float(), target)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def make_step(
    name: str, dtype: str, device: torch.device, tiny: bool, batch: tuple[dict, torch.Tensor]
) -> tuple[Callable[[], float], int]:
    """A closure running one training step of a fresh ``name`` model on ``batch`` (inputs, target), and the model's
    parameter count."""
    torch.manual_seed(0)
    model = create_model(name, **_model_kwargs(name, tiny)).to(device).train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    # Adam as formers' CLI builds it: torch's fused kernel (formers.core.optim.fused_by_default)
    adam = fused_by_default(torch.optim.Adam, {"lr": 1e-4}, model.parameters())
    return _training_step(model, *batch, autocast, adam), model.num_parameters()


@functools.cache
def _reference_module():
    spec = importlib.util.spec_from_file_location("_tslib_reference", REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_reference_step(name: str, tiny: bool, batch: tuple[dict, torch.Tensor]) -> tuple[Callable[[], float], int]:
    """A closure running one fp32 CPU training step of the reference transcription on ``batch``, and its parameter
    count."""
    torch.manual_seed(0)
    config = {**REFERENCE_CONFIGS[name], **_model_kwargs(name, tiny)}
    model = getattr(_reference_module(), REFERENCE_CLASSES[name])(config).train()
    params = sum(p.numel() for p in model.parameters())
    # the reference code's optimizer: torch.optim.Adam(model.parameters(), lr=...), the default implementation
    return _training_step(model, *batch, torch.autocast("cpu", enabled=False), {"lr": 1e-4}), params


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    # one batch for every candidate, laid out as the data pipeline builds it (seed 0)
    torch.manual_seed(0)
    layout = create_model(name, **_model_kwargs(name, args.tiny))
    inputs, target = layout.example_inputs(args.batch), torch.randn(layout.expected_output_shape(args.batch))
    device_batch = ({key: value.to(device) for key, value in inputs.items()}, target.to(device))
    steps, params = {}, 0
    for dtype in args.dtypes:
        steps[dtype], params = make_step(name, dtype, device, args.tiny, device_batch)
    result: dict[str, float] = {"params": params}
    if args.reference:  # CPU only (parse_args)
        steps["reference"], result["reference_params"] = make_reference_step(name, args.tiny, (inputs, target))
    repeats = result["rounds"] = args.steps or DEFAULT_STEPS[name]
    timings = interleaved_timings(steps, repeats=repeats, warmup=args.warmup, device=device)
    for candidate, timing in timings.items():
        result[f"{candidate}_s_per_step"] = timing.median
        result[f"{candidate}_best_s"] = timing.best
    if {"fp32", "bf16"} <= set(timings):
        result["bf16_over_fp32"] = timings["bf16"].median / timings["fp32"].median
    if {"fp32", "reference"} <= set(timings):
        result["fp32_over_reference"] = timings["fp32"].median / timings["reference"].median
    if args.profile:  # where each candidate's time goes: dense products vs the rest (what bounds a speed-up)
        result["profile"] = {candidate: compute_bound(step) for candidate, step in steps.items()}
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--steps", type=int, default=None, help=f"timed steps per candidate (median reported); default {DEFAULT_STEPS}"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="the registry's tiny test configurations (smoke test)")
    parser.add_argument(
        "--reference", action="store_true", help="also time the reference-code transcription (fp32, CPU only)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile each candidate: share of the step in GEMM/conv/FFT ops and the speed-up bound it sets",
    )
    add_isa_argument(parser)
    parser.add_argument("--metrics-json", type=Path, default=None)
    args = parser.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or args.batch < 1 or args.threads < 1 or args.warmup < 0:
        parser.error("--steps, --batch and --threads must be >= 1, --warmup >= 0")
    if args.reference and args.device != "cpu":
        parser.error("--reference runs the reference transcription, which is CPU-only; drop it or use --device cpu")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if len(args.isa) > 1 or not isa_in_force(args.isa[0]):
        return _main_per_isa(args, sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    threads = pin_threads(args.threads)
    metrics: dict = {
        "config": {"batch": args.batch, "threads": threads, "device": str(device), "tiny": args.tiny},
        "load_average": load_average(),
    }
    print(f"one training step (fwd + bwd + Adam), batch {args.batch}, {threads} thread(s), {device}")
    candidates = [*args.dtypes, *(["reference"] if args.reference else [])]
    ratios = {"bf16_over_fp32": "bf16/fp32", **({"fp32_over_reference": "fp32/ref"} if args.reference else {})}
    header = "".join(f"{c + ' s/step':>17}" for c in candidates) + "".join(f"{r:>11}" for r in ratios.values())
    print(f"{'model':<14}{'params':>12}{header}")
    for name in args.models:
        result = measure(name, args, device)
        metrics[name] = result
        cells = "".join(f"{result[f'{c}_s_per_step']:>17.4f}" for c in candidates)
        cells += "".join(f"{result[key]:>11.2f}" if key in result else f"{'-':>11}" for key in ratios)
        print(f"{name:<14}{result['params']:>12,}{cells}", flush=True)
        for candidate, share in result.get("profile", {}).items():
            print(
                f"{'':<14}{candidate}: {share['gemm_share']:.0%} of {share['total_s']:.4f} s in GEMM/conv/FFT "
                f"(any implementation of these products is at most {share['bound']:.2f}x faster)"
            )
    metrics["load_average_after"] = load_average()
    write_json(args.metrics_json, metrics)
    return metrics


def _main_per_isa(args: argparse.Namespace, argv: list[str]) -> dict:
    """One run per CPU kernel set (``--isa``), then the ratios side by side."""
    runs = run_per_isa(__file__, argv, args.isa)
    ratio = "fp32_over_reference" if args.reference else "bf16_over_fp32"
    print(f"\n{ratio} per CPU kernel set (< 1: the first is faster)")
    print(f"{'model':<14}" + "".join(f"{isa:>12}" for isa in args.isa))
    for name in args.models:
        cells = []
        for isa in args.isa:
            run = isa_run(runs, isa)
            cells.append(f"{run[name][ratio]:>12.2f}" if ratio in run.get(name, {}) else f"{'-':>12}")
        print(f"{name:<14}" + "".join(cells))
    metrics = {"isa_runs": runs}
    write_json(args.metrics_json, metrics)
    return metrics


if __name__ == "__main__":
    main()

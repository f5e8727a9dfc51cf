"""Benchmark formers.vision models against timm's implementation of the same model (PiT, CrossViT, Swin).

For each model name (the same in formers and timm for these families), both implementations are built with the
same keyword arguments, timm's random weights are loaded into ours through the family's checkpoint filter (so the
logits can be compared: ``max_abs_diff``), and two modes are timed, interleaved with pinned threads:

- ``infer``: eval mode, ``torch.no_grad()``, a forward pass on a batch of ``--batch`` images;
- ``train``: train mode, forward + cross-entropy + backward on a batch of ``--train-batch`` images.

Throughputs are images per second from the median round (``*_img_s``), plus ``formers_vs_timm`` = formers
throughput / timm throughput (> 1: formers faster). ``--bf16`` runs both under ``torch.autocast(bfloat16)``.

Usage::

    python benchmarks/vision_throughput.py --threads 1 --metrics-json results/bench/vision_throughput.json
    python benchmarks/vision_throughput.py --models pit_s_224 --img-size 224 --batch 16 --bf16
    python benchmarks/vision_throughput.py --tiny     # seconds: the registry's tiny test sizes, for the test-suite
    python benchmarks/vision_throughput.py --isa native avx2   # this CPU's kernels, then torch/oneDNN's AVX2 ones

``--isa`` runs the benchmark once per CPU kernel set in a fresh Python (see ``_timing.run_per_isa``); the JSON then
holds one run per set under ``isa_runs``.

Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

import formers.vision as fv
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
from formers.core.registry import get_model_entry

DEFAULT_MODELS = ("pit_ti_224", "crossvit_tiny_240", "swin_tiny_patch4_window7_224")
MODES = ("infer", "train")


def build_pair(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """``(formers model, timm model)`` with the same architecture and timm's (random) weights in both."""
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, **kwargs)
    ours = fv.create_model(name, **kwargs)
    fv.load_into(ours, reference.state_dict(), filter_fn=get_model_entry(name).filter_fn, source=f"timm {name}")
    return ours, reference


def _images(model: nn.Module, batch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, *model.pretrained_cfg["input_size"], generator=gen)


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def candidate(model: nn.Module, mode: str, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    """A zero-argument callable running one timed step of ``mode``."""
    target = torch.randint(0, model.num_classes, (x.shape[0],), generator=torch.Generator().manual_seed(2))

    def infer() -> None:
        with torch.no_grad(), _autocast(bf16):
            model(x)

    def train() -> None:
        model.zero_grad(set_to_none=True)
        with _autocast(bf16):
            loss = F.cross_entropy(model(x).float(), target)
        loss.backward()

    return infer if mode == "infer" else train


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(get_model_entry(name).test_kwargs) if args.tiny else {}
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    ours, reference = build_pair(name, kwargs)
    result: dict[str, Any] = {
        "params": {
            impl: sum(p.numel() for p in m.parameters()) for impl, m in (("formers", ours), ("timm", reference))
        },
        "input_size": list(ours.pretrained_cfg["input_size"]),
    }
    x = _images(ours, args.batch)
    with torch.no_grad():
        ours.eval(), reference.eval()
        result["max_abs_diff"] = (ours(x) - reference(x)).abs().max().item()
    for mode in MODES:
        batch = args.batch if mode == "infer" else args.train_batch
        x = _images(ours, batch)
        for model in (ours, reference):
            model.train(mode == "train")
        timings = interleaved_timings(
            {
                "formers": candidate(ours, mode, x, args.bf16),
                "timm": candidate(reference, mode, x, args.bf16),
            },
            repeats=args.repeats,
            warmup=args.warmup,
            device=torch.device("cpu"),
        )
        group = {f"{impl}_img_s": batch / t.median for impl, t in timings.items()}
        group.update({f"{impl}_best_img_s": batch / t.best for impl, t in timings.items()})
        group["formers_vs_timm"] = group["formers_img_s"] / group["timm_img_s"]
        group["batch"] = batch
        if args.profile:  # share of the step in dense products: what bounds any speed-up over timm
            group["profile"] = {
                impl: compute_bound(candidate(model, mode, x, args.bf16))
                for impl, model in (("formers", ours), ("timm", reference))
            }
        result[mode] = group
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated names (formers = timm)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="inference batch")
    parser.add_argument("--train-batch", type=int, default=8, help="training (forward + backward) batch")
    parser.add_argument("--img-size", type=int, default=None, help="input side (default: each model's own)")
    parser.add_argument("--bf16", action="store_true", help="run under torch.autocast(bfloat16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, candidates interleaved in each")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the registry's tiny test sizes (smoke test)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile both: share of the step in GEMM/conv ops and the speed-up bound it sets",
    )
    add_isa_argument(parser)
    parser.add_argument("--metrics-json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in fv.list_models() or not timm.is_model(m)]
    if unknown:
        parser.error(f"not a model of both formers.vision and timm: {', '.join(unknown)}")
    return args


def report(metrics: dict[str, Any]) -> None:
    env = metrics["env"]
    print(f"threads={env['threads']} bf16={env['bf16']} load={env['load_average']:.2f}  (images/s, median round)")
    print(f"{'model':32s} {'mode':6s} {'batch':>5s} {'formers':>10s} {'timm':>10s} {'ratio':>7s}  max|dlogits|")
    for name in env["models"]:
        m = metrics[name]
        for mode in MODES:
            g = m[mode]
            print(
                f"{name:32s} {mode:6s} {g['batch']:5d} {g['formers_img_s']:10.1f} {g['timm_img_s']:10.1f} "
                f"{g['formers_vs_timm']:7.2f}  {m['max_abs_diff']:.2e}"
            )
            for impl, share in g.get("profile", {}).items():
                print(
                    f"{'':39s}{impl}: {share['gemm_share']:.0%} in GEMM/conv (at most {share['bound']:.2f}x faster "
                    "with the same products)"
                )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if len(args.isa) > 1 or not isa_in_force(args.isa[0]):
        return _main_per_isa(args, sys.argv[1:] if argv is None else argv)
    threads = pin_threads(args.threads)
    metrics: dict[str, Any] = {
        "env": {
            "threads": threads,
            "bf16": args.bf16,
            "tiny": args.tiny,
            "repeats": args.repeats,
            "models": args.models,
            "torch": torch.__version__,
            "timm": timm.__version__,
        }
    }
    for name in args.models:
        metrics[name] = measure(name, args)
    metrics["env"]["load_average"] = load_average()
    report(metrics)
    write_json(args.metrics_json, metrics)
    return metrics


def _main_per_isa(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """One run per CPU kernel set (``--isa``), then formers/timm throughput ratios side by side."""
    runs = run_per_isa(__file__, argv, args.isa)
    print("\nformers / timm throughput per CPU kernel set (> 1: formers faster)")
    print(f"{'model':32s} {'mode':6s}" + "".join(f"{isa:>10s}" for isa in args.isa))
    for name in args.models:
        for mode in MODES:
            cells = []
            for isa in args.isa:
                run = isa_run(runs, isa)
                cells.append(f"{run[name][mode]['formers_vs_timm']:10.2f}")
            print(f"{name:32s} {mode:6s}" + "".join(cells))
    metrics = {"isa_runs": runs}
    write_json(args.metrics_json, metrics)
    return metrics


if __name__ == "__main__":
    main()

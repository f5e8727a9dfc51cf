"""Benchmark formers' kMaX-DeepLab against the official modules' arithmetic (the test oracle), in one run.

The official side is ``tests/vision/kmax_official.py``: bytedance/kmax-deeplab's modules rewritten in plain torch
(detectron2-free, the same einsums, permutes, fp32 islands and module tree), built for the benchmarked input size
as the official model must be. Both models get the same weights (the official random initialisation, copied into
formers' model through ``checkpoint_filter_fn``); the run first checks that their eval outputs agree.

Sections (threads pinned, candidates interleaved in every round, medians of ``--repeats`` rounds after ``--warmup``;
``formers_speedup`` = official median / formers median, > 1 means formers is faster):

* ``fp32`` / ``bf16`` (``--dtypes``; bf16 = ``torch.autocast(bfloat16)`` on the device), each with
  ``infer``: eval mode, ``torch.no_grad()``, one forward of ``--batch`` images; and
  ``train``: train mode, forward + the kMaX loss (``formers.vision.segmentation.criterion.KMaXCriterion`` with its
  official weights on generated panoptic targets; a sum of squares of every output if the criterion is missing) +
  backward, ``--train-batch`` images. fp32 runs at ``--size``, bf16 at ``--bf16-size`` (on CPUs without AVX-512
  bf16 instructions bf16 is ~10-60x slower than fp32: keep it small there);
* ``memory``: the peak memory of one step of each mode at ``--mem-size`` (default 641 x 641), fp32. On CPU each
  (implementation, mode) runs in a fresh subprocess (glibc's mmap threshold fixed at 64 KiB, so freed tensor
  buffers leave the resident set): model and inputs are built, one step warms up, the kernel's peak-RSS counter is
  reset (``/proc/self/clear_refs`` = 5) and the peak resident set (``VmHWM``) of a second step is read;
  ``step_mib`` is that peak minus the resident set just before the step (what the step itself needs: activations,
  saved tensors, gradients, the loss), ``peak_mib`` the whole process (interpreter, libraries, weights included).
  Where the counter cannot be reset, ``ru_maxrss`` (which also covers the model construction) is reported and the
  method says so. On CUDA: ``torch.cuda.max_memory_allocated`` around the step.

Usage::

    python benchmarks/kmax.py --threads 1                      # results/bench/kmax.json
    python benchmarks/kmax.py --quick --json /tmp/kmax.json    # a minute or two: small sizes, 2 rounds
    python benchmarks/kmax.py --device cuda --size 641 --bf16-size 641 --mem-size 1281

Nothing here asserts absolute times: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from _timing import Timing, device_sync, interleaved_timings, load_average, pin_threads, write_json

ROOT = Path(__file__).resolve().parents[1]
ORACLE_PATH = ROOT / "tests" / "vision" / "kmax_official.py"
DTYPES = ("fp32", "bf16")
MODES = ("infer", "train")
IMPLS = ("formers", "official")
# "r50": the COCO R-50 configuration; "r18_narrow": detectron2's R-18 trunk and a 4x narrower pixel decoder, 32
# queries (the official code's hard-coded widths kept): a cheap stand-in for smoke tests
MODELS = {
    "r50": {"oracle": {"depth": 50}, "formers": {"backbone": "resnet50"}},
    "r18_narrow": {
        "oracle": {"depth": 18, "pixel_dec_channels": (128, 64, 32, 16), "num_queries": 32},
        "formers": {"backbone": "resnet18", "dec_channels": (128, 64, 32, 16), "num_queries": 32},
    },
}
NUM_CLASSES = 133


def oracle_module() -> ModuleType:
    """``tests/vision/kmax_official.py`` loaded by path."""
    spec = importlib.util.spec_from_file_location("_kmax_official_oracle", ORACLE_PATH)
    assert spec is not None and spec.loader is not None, ORACLE_PATH
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build(model: str, size: tuple[int, int], impls: tuple[str, ...] = IMPLS, seed: int = 0) -> dict[str, nn.Module]:
    """The requested implementations of ``model`` for inputs of ``size``, on the CPU, with the same weights."""
    from formers.vision.models.kmax import KMaXDeepLab, checkpoint_filter_fn

    cfg = MODELS[model]
    oracle_kwargs = dict(cfg["oracle"])
    depth = oracle_kwargs.pop("depth")
    torch.manual_seed(seed)
    ko = oracle_module()
    official = ko.build_official_kmax(
        ko.official_resnet(depth), num_classes=NUM_CLASSES, image_size=size, **oracle_kwargs
    )
    out: dict[str, nn.Module] = {}
    if "formers" in impls:
        ours = KMaXDeepLab(num_classes=NUM_CLASSES, **cfg["formers"])
        ours.load_state_dict(checkpoint_filter_fn(official.state_dict(), ours), strict=True)
        out["formers"] = ours
    if "official" in impls:
        out["official"] = official
    else:
        del official
        gc.collect()  # the memory section measures formers' model alone
    return out


def make_batch(batch: int, size: tuple[int, int], num_classes: int = NUM_CLASSES, seed: int = 1):
    """Images in [-1, 1] and generated panoptic targets at stride 4: each image is cut into a 3 x 3 grid of
    rectangles with random classes (the last one void)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, *size, generator=gen) * 2 - 1
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    targets, semantic = [], torch.full((batch, h, w), num_classes, dtype=torch.long)
    rows, cols = torch.linspace(0, h, 4).long(), torch.linspace(0, w, 4).long()
    for b in range(batch):
        masks, labels = [], []
        for i in range(3):
            for j in range(3):
                if i == j == 2:
                    continue  # void
                mask = torch.zeros(h, w)
                mask[rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = 1
                label = int(torch.randint(0, num_classes, (1,), generator=gen))
                semantic[b][mask.bool()] = label
                masks.append(mask)
                labels.append(label)
        targets.append({"labels": torch.tensor(labels), "masks": torch.stack(masks)})
    return images, targets, semantic


def make_loss(num_classes: int = NUM_CLASSES) -> tuple[Callable[..., Tensor], str]:
    """``loss(outputs, targets, semantic) -> scalar``: formers' kMaX criterion, else a surrogate."""
    try:
        from formers.vision.segmentation.criterion import KMaXCriterion
    except ImportError:

        def surrogate(outputs: dict, targets: list, semantic: Tensor) -> Tensor:
            leaves = [
                outputs[k] for k in ("pred_logits", "pred_masks", "pixel_feature", "aux_semantic_pred") if k in outputs
            ]
            leaves += [a[k] for a in outputs["aux_outputs"] for k in ("pred_logits", "pred_masks", "pixel_feature")]
            return sum(t.float().square().mean() for t in leaves)

        return surrogate, "surrogate: sum of mean squares of every output"
    criterion = KMaXCriterion(num_classes)

    def kmax_loss(outputs: dict, targets: list, semantic: Tensor) -> Tensor:
        gen = torch.Generator(device=outputs["pred_masks"].device).manual_seed(0)
        return sum(criterion(outputs, targets, semantic=semantic, generator=gen).values())

    return kmax_loss, "formers.vision.segmentation.criterion.KMaXCriterion (official weights)"


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def step_fn(model: nn.Module, mode: str, batch: tuple, loss_fn: Callable, device: torch.device, bf16: bool):
    """A zero-argument callable running one step of ``mode`` (the model is put in the matching mode)."""
    images, targets, semantic = batch
    model.train(mode == "train")
    params = [p for p in model.parameters() if p.requires_grad]

    def infer() -> None:
        with torch.no_grad(), _autocast(device, bf16):
            model(images)

    def train() -> None:
        for p in params:
            p.grad = None
        with _autocast(device, bf16):
            outputs = model(images)
        loss_fn(outputs, targets, semantic).backward()

    return infer if mode == "infer" else train


def _to(batch: tuple, device: torch.device) -> tuple:
    images, targets, semantic = batch
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return images.to(device), targets, semantic.to(device)


@torch.no_grad()
def max_rel_diff(models: dict[str, nn.Module], images: Tensor) -> float:
    """max over outputs of max |formers - official| / max |official| (eval mode, fp32)."""
    for m in models.values():
        m.eval()
    a, b = models["official"](images), models["formers"](images)
    pairs = [(a[k], b[k]) for k in ("pred_logits", "pred_masks", "pixel_feature")]
    pairs += [(x[k], y[k]) for x, y in zip(a["aux_outputs"], b["aux_outputs"], strict=True) for k in x]
    return max(
        ((y.double() - x.double()).abs().max() / x.double().abs().max().clamp_min(1e-300)).item() for x, y in pairs
    )


def ms(t: Timing) -> dict[str, float]:
    return {"median_ms": round(t.median * 1e3, 2), "min_ms": round(t.best * 1e3, 2)}


def time_dtype(args: argparse.Namespace, dtype: str, loss_fn: Callable, device: torch.device) -> dict[str, Any]:
    size = args.size if dtype == "fp32" else args.bf16_size
    models = {k: m.to(device) for k, m in build(args.model, size).items()}
    result: dict[str, Any] = {"size": list(size)}
    for mode in args.modes:
        n = args.batch if mode == "infer" else args.train_batch
        batch = _to(make_batch(n, size), device)
        timings = interleaved_timings(
            {impl: step_fn(m, mode, batch, loss_fn, device, dtype == "bf16") for impl, m in models.items()},
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
        )
        group: dict[str, Any] = {"batch": n, **{impl: ms(t) for impl, t in timings.items()}}
        group["formers_speedup"] = round(timings["official"].median / timings["formers"].median, 3)
        result[mode] = group
    return result


# ------------------------------------------------------------------------------------------------------ memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One (implementation, mode) memory measurement in this (fresh) process; see the module docstring."""
    pin_threads(spec["threads"])
    device = torch.device(spec["device"])
    size = tuple(spec["size"])
    model = build(spec["model"], size, impls=(spec["impl"],))[spec["impl"]].to(device)
    loss_fn, _ = make_loss()
    n = spec["batch"] if spec["mode"] == "infer" else spec["train_batch"]
    step = step_fn(model, spec["mode"], _to(make_batch(n, size), device), loss_fn, device, False)
    step()  # warm-up: one-time state (thread pools, kernel caches) is not the step's
    for p in model.parameters():
        p.grad = None  # the measured step allocates its gradients itself
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "method": "torch.cuda.max_memory_allocated",
            "peak_mib": peak / 2**20,
            "step_mib": (peak - before) / 2**20,
        }
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        before = _status_kib("VmRSS")
        step()
        peak = _status_kib("VmHWM")
        method = "peak RSS (VmHWM after clear_refs) of the second step in a fresh subprocess"
    except OSError:
        before = _status_kib("VmRSS")
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; includes construction
        method = "ru_maxrss of a fresh subprocess (includes model construction: an upper bound)"
    return {"method": method, "peak_mib": peak / 1024, "step_mib": (peak - before) / 1024}


# glibc: a fixed mmap threshold (no dynamic raise after frees) so large tensor buffers are mmapped and given back to
# the kernel when freed; the resident set then follows the live tensors instead of keeping the warm-up's heap
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def measure_memory(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    result: dict[str, Any] = {"size": list(args.mem_size), "dtype": "fp32"}
    for mode in args.mem_modes:
        group: dict[str, Any] = {}
        for impl in IMPLS:
            spec = {
                "impl": impl,
                "mode": mode,
                "model": args.model,
                "size": list(args.mem_size),
                "threads": args.threads,
                "device": str(device),
                "batch": args.batch,
                "train_batch": args.train_batch,
            }
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=CHILD_ENV)
            if proc.returncode != 0:
                raise RuntimeError(f"memory subprocess {impl}/{mode} failed:\n{proc.stderr[-3000:]}")
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            result["method"] = child.pop("method")
            group[impl] = {k: round(v, 1) for k, v in child.items()}
        group["batch"] = args.batch if mode == "infer" else args.train_batch
        group["official_vs_formers_step_mib"] = round(
            group["official"]["step_mib"] / max(group["formers"]["step_mib"], 1e-9), 3
        )
        result[mode] = group
    return result


# -------------------------------------------------------------------------------------------------------- main


def _size(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    h, w = (parts * 2)[:2] if len(parts) == 1 else parts
    if len(parts) > 2 or min(h, w) < 33:
        raise argparse.ArgumentTypeError(f"expected H or HxW with H, W >= 33, got {text!r}")
    return h, w


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="r50")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtypes", default="fp32,bf16", help=f"timed dtypes, subset of {','.join(DTYPES)}")
    parser.add_argument("--size", type=_size, default=(257, 257), help="fp32 input, H or HxW (default 257)")
    parser.add_argument("--bf16-size", type=_size, default=(97, 97), help="bf16 input (default 97: CPU bf16 is slow)")
    parser.add_argument("--mem-size", type=_size, default=(641, 641), help="memory input (default 641)")
    parser.add_argument("--modes", default="infer,train", help=f"timed modes, subset of {','.join(MODES)}")
    parser.add_argument("--mem-modes", default="infer,train", help="modes of the memory section ('' skips it)")
    parser.add_argument("--batch", type=int, default=1, help="inference batch")
    parser.add_argument("--train-batch", type=int, default=2, help="training batch (BatchNorm needs > 1 sample)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, candidates interleaved in each")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="65 px timings, 129 px memory, 2 rounds")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "bench" / "kmax.json")
    parser.add_argument("--no-json", action="store_true", help="write nothing")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.bf16_size, args.mem_size, args.repeats, args.warmup = (65, 65), (65, 65), (129, 129), 2, 1
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.modes = [m for m in args.modes.split(",") if m]
    args.mem_modes = [m for m in args.mem_modes.split(",") if m]
    if any(d not in DTYPES for d in args.dtypes) or not (args.dtypes or args.mem_modes):
        parser.error(f"--dtypes: choose from {', '.join(DTYPES)} ('' with --mem-modes: memory only)")
    if not args.modes or any(m not in MODES for m in args.modes + args.mem_modes):
        parser.error(f"--modes / --mem-modes: choose from {', '.join(MODES)}")
    if args.train_batch < 2 or args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("need --batch >= 1, --train-batch >= 2, --repeats >= 1, --warmup >= 0, --threads >= 1")
    return args


def report(metrics: dict[str, Any]) -> None:
    env = metrics["env"]
    print(
        f"kMaX {env['model']}: formers vs official  threads={env['threads']} device={env['device']} "
        f"load={env['load_average']:.2f}  max rel diff (fp32 eval) {metrics['max_rel_diff']:.1e}"
    )
    print(
        f"{'dtype':5s} {'mode':6s} {'size':>9s} {'batch':>5s} {'formers ms':>11s} {'official ms':>12s} {'speedup':>8s}"
    )
    for dtype in env["dtypes"]:
        d = metrics[dtype]
        for mode in env["modes"]:
            g = d[mode]
            print(
                f"{dtype:5s} {mode:6s} {'x'.join(map(str, d['size'])):>9s} {g['batch']:5d} "
                f"{g['formers']['median_ms']:11.1f} {g['official']['median_ms']:12.1f} {g['formers_speedup']:8.2f}"
            )
    mem = metrics.get("memory")
    if mem:
        print(f"memory at {'x'.join(map(str, mem['size']))} ({mem['method']}), MiB:")
        for mode in MODES:
            if mode in mem:
                g = mem[mode]
                f, o = g["formers"], g["official"]
                print(
                    f"  {mode:6s} step: formers {f['step_mib']:8.1f}  official {o['step_mib']:8.1f}"
                    f"   peak: formers {f['peak_mib']:8.1f}  official {o['peak_mib']:8.1f}"
                )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.memory_child is not None:
        result = memory_child(json.loads(args.memory_child))
        print(json.dumps(result))
        return result
    threads = pin_threads(args.threads)
    device = torch.device(args.device)
    loss_fn, loss_name = make_loss()
    metrics: dict[str, Any] = {
        "env": {
            "model": args.model,
            "threads": threads,
            "device": str(device),
            "dtypes": args.dtypes,
            "modes": args.modes,
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "loss": loss_name,
            "torch": torch.__version__,
        }
    }
    size = args.size
    models = build(args.model, size)
    metrics["params"] = {impl: sum(p.numel() for p in m.parameters()) for impl, m in models.items()}
    metrics["max_rel_diff"] = max_rel_diff(models, make_batch(args.batch, size)[0])
    del models
    for dtype in args.dtypes:
        metrics[dtype] = time_dtype(args, dtype, loss_fn, device)
        device_sync(device)
    if args.mem_modes:
        metrics["memory"] = measure_memory(args, device)
    metrics["env"]["load_average"] = load_average()
    report(metrics)
    if not args.no_json:
        write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

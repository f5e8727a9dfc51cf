"""Benchmark formers-pde in one run: each model's training step against its official code's arithmetic and against
neuraloperator's FNO at an equal parameter budget, Galerkin vs softmax attention as the grid grows, and GNOT's
padding-free batches against padded ones.

Sections (fp32, one training step = forward, relative-L2 loss, backward; threads pinned; candidates interleaved,
medians of ``--repeats`` rounds; ratios > 1 mean formers is faster):

* ``official``: formers vs a test oracle that follows the official forward step by step (the oracles of
  ``tests/pde/test_{galerkin,factformer,gnot}.py``, the same weights): the Galerkin transformer (Burgers config,
  n = 512, batch 8), FactFormer (Darcy config at ``--darcy-size``, batch 4) and GNOT (``gnot_small``, 8 ragged heat-like
  point sets of 300..2000 points; the official code pads them and has no mask, formers packs them);
* ``fno``: the same transformers vs neuraloperator's FNO whose width is chosen so its parameter count matches the
  transformer's (the comparison a user makes), on the same input;
* ``attention_memory``: one Galerkin attention layer vs softmax attention (formers.core ``MultiHeadAttention``, the
  ``auto`` backend) of the same width as n grows: step time and the bytes autograd saves for the backward pass
  (O(n·d) vs O(n²) unless the softmax backend is a fused, memory-efficient one, which the JSON names);
* ``gnot_batching``: GNOT's step on the ragged batch packed (padding-free), padded with masks, and one sample at a time.

Usage::

    python benchmarks/pde.py --threads 1 --json results/bench/pde.json
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from _timing import Timing, interleaved_timings, load_average, pin_threads, write_json
from formers.core.layers import MultiHeadAttention
from formers.core.layers.linear_attention import LinearAttention
from formers.core.registry import create_model
from formers.pde.pointcloud import collate_point_clouds, pack_point_clouds
from formers.pde.task import relative_l2, relative_l2_packed

TESTS = Path(__file__).resolve().parents[1] / "tests" / "pde"
CPU = torch.device("cpu")


def oracle_module(name: str) -> ModuleType:
    """``tests/pde/test_<name>.py``: the official-arithmetic oracle of a family (loaded by path, as a module)."""
    path = TESTS / f"test_{name}.py"
    spec = importlib.util.spec_from_file_location(f"_pde_oracle_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def step(forward: Callable[[], Tensor], target: Tensor, params: list[Tensor]) -> Callable[[], None]:
    """One training step: forward, relative L2, backward (gradients cleared first)."""

    def run() -> None:
        for p in params:
            p.grad = None
        relative_l2(forward(), target).mean().backward()

    return run


def ms(t: Timing) -> dict[str, float]:
    return {"median_ms": round(t.median * 1e3, 2), "min_ms": round(t.best * 1e3, 2)}


def compare(candidates: dict[str, Callable[[], None]], args: argparse.Namespace, base: str) -> dict[str, object]:
    timings = interleaved_timings(candidates, repeats=args.repeats, warmup=args.warmup, device=CPU)
    out: dict[str, object] = {name: ms(t) for name, t in timings.items()}
    for name, t in timings.items():
        if name != base:
            out[f"{name}_vs_{base}"] = round(t.median / timings[base].median, 3)
    return out


def fno_at_budget(params: int, n_modes: tuple[int, ...], n_layers: int = 4) -> nn.Module:
    """neuraloperator's FNO (formers' grid wrapper) with the width whose parameter count is closest to ``params``."""
    best, best_gap = None, None
    for width in range(8, 257, 4):
        model = create_model("fno_burgers" if len(n_modes) == 1 else "fno_darcy", n_modes=n_modes,
                             hidden_channels=width, n_layers=n_layers)  # fmt: skip
        gap = abs(model.num_parameters() - params)
        if best_gap is not None and gap > best_gap:
            break
        best, best_gap = model, gap
    assert best is not None
    return best


# --------------------------------------------------------------------------------------------------------- models
def galerkin_cases(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, object]]:
    oracle = oracle_module("galerkin")
    model = create_model("galerkin_burgers")
    sd = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in oracle.load_official(model).items()}
    gen = torch.Generator().manual_seed(0)
    n = args.burgers_n
    x, y = torch.randn(8, n, 1, generator=gen), torch.randn(8, n, 1, generator=gen)
    fno = fno_at_budget(model.num_parameters(), (16,))
    ours = step(lambda: model(x), y, list(model.parameters()))
    official = step(lambda: oracle.oracle_burgers(x, sd, depth=4, n_head=1, kind="galerkin", modes=16), y,
                    [v for v in sd.values() if v.requires_grad])  # fmt: skip
    vs_official = compare({"formers": ours, "official": official}, args, "formers")
    vs_fno = compare({"formers": ours, "fno": step(lambda: fno(x), y, list(fno.parameters()))}, args, "formers")
    sizes = {"model": "galerkin_burgers", "batch": 8, "n": n, "params": model.num_parameters()}
    return {**sizes, **vs_official}, {**sizes, "fno_params": fno.num_parameters(), **vs_fno}


def factformer_cases(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, object]]:
    oracle = oracle_module("factformer")
    n = args.darcy_size
    torch.manual_seed(0)
    official = oracle.OfficialDarcy(1, 1, dim=128, depth=3, heads=12, dim_head=64, kernel_multiplier=2, resolution=n)
    model = oracle.copy_into(create_model("factformer_darcy"), official, "factformer_darcy")
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, n, n, 1, generator=gen), torch.randn(4, n, n, 1, generator=gen)
    pos = [oracle.official_pos(n, 1.0, dtype=torch.float32)] * 2
    fno = fno_at_budget(model.num_parameters(), (12, 12))
    ours = step(lambda: model(x), y, list(model.parameters()))
    vs_official = compare({"formers": ours, "official": step(lambda: official(x, pos), y, list(official.parameters()))},
                          args, "formers")  # fmt: skip
    vs_fno = compare({"formers": ours, "fno": step(lambda: fno(x), y, list(fno.parameters()))}, args, "formers")
    sizes = {"model": "factformer_darcy", "batch": 4, "grid": n, "params": model.num_parameters()}
    return {**sizes, **vs_official}, {**sizes, "fno_params": fno.num_parameters(), **vs_fno}


def ragged_samples(count: int, seed: int, kw: dict, max_points: int = 2000) -> list[dict]:
    """Heat-like point sets: ``count`` meshes of 300..``max_points`` points, boundary rows n/8, source rows n."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(300, max_points + 1, (count,), generator=gen).tolist()
    return [
        {
            "coords": torch.rand(n, kw["coord_dim"], generator=gen),
            "functions": (torch.randn(n // 8 + 1, 3, generator=gen), torch.randn(n, 3, generator=gen)),
            "params": torch.randn(kw["params_dim"], generator=gen),
            "target": torch.randn(n, 1, generator=gen),
        }
        for n in sizes
    ]


def gnot_cases(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, object]]:
    oracle = oracle_module("gnot")
    kw = {"coord_dim": 2, "function_channels": (3, 3), "params_dim": 1, "out_channels": 1, "hidden_dim": 64,
          "num_layers": 3, "num_heads": 1, "num_experts": 1, "ffn_ratio": 4, "mlp_layers": 3}  # fmt: skip
    official = oracle.official_for(kw)
    model = create_model("gnot_small", **{k: kw[k] for k in ("coord_dim", "function_channels", "params_dim")})
    model.load_state_dict(oracle.checkpoint_filter_fn(official.state_dict(), model))
    samples = ragged_samples(args.gnot_samples, 0, kw, args.gnot_max_points)
    packed_in, packed_target = pack_point_clouds(samples)
    padded_in, padded_target = collate_point_clouds(samples)
    params = list(model.parameters())

    def packed() -> None:
        for p in params:
            p.grad = None
        relative_l2_packed(model(**packed_in), packed_target["values"], packed_target["lengths"]).mean().backward()

    def padded() -> None:
        for p in params:
            p.grad = None
        relative_l2(model(**padded_in), padded_target["values"], padded_target["padding"]).mean().backward()

    singles = [collate_point_clouds([s]) for s in samples]

    def one_at_a_time() -> None:
        for p in params:
            p.grad = None
        for inputs, target in singles:
            (relative_l2(model(**inputs), target["values"]).mean() / len(singles)).backward()

    x = torch.cat([padded_in["coords"]], dim=-1)
    u_p = padded_in["params"]

    def official_step() -> None:  # the official code: padded, no mask (its outputs on real points are wrong)
        for p in official.parameters():
            p.grad = None
        out = official(x, u_p, list(padded_in["functions"]))
        relative_l2(out, padded_target["values"], padded_target["padding"]).mean().backward()

    lengths = [int(s["coords"].shape[0]) for s in samples]
    sizes = {"model": "gnot_small", "samples": len(samples), "points": lengths,
             "padding_fraction": round(1 - sum(lengths) / (len(lengths) * max(lengths)), 3)}  # fmt: skip
    vs_official = compare({"formers": packed, "official": official_step}, args, "formers")
    batching = compare({"packed": packed, "padded": padded, "one_at_a_time": one_at_a_time}, args, "packed")
    return {**sizes, **vs_official}, {**sizes, **batching}


def saved_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``fn()`` (distinct storages counted once)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def attention_row(galerkin: nn.Module, softmax: nn.Module, n: int, dim: int, args: argparse.Namespace) -> dict:
    x = torch.randn(1, n, dim, requires_grad=True)
    target = torch.randn(1, n, dim)
    row: dict[str, object] = {"n": n, "galerkin_saved_mb": round(saved_bytes(lambda: galerkin(x)) / 2**20, 2)}
    candidates = {"galerkin": step(lambda: galerkin(x), target, [x])}
    if n <= args.softmax_max_length:
        row["softmax_saved_mb"] = round(saved_bytes(lambda: softmax(x)) / 2**20, 2)
        candidates["softmax"] = step(lambda: softmax(x), target, [x])
    row.update(compare(candidates, argparse.Namespace(repeats=max(3, args.repeats // 2), warmup=1), "galerkin"))
    return row


def attention_memory(args: argparse.Namespace) -> list[dict[str, object]]:
    dim, heads = 128, 4
    galerkin, softmax = LinearAttention(dim, heads, kind="galerkin"), MultiHeadAttention(dim, heads)
    rows = []
    for n in args.lengths:
        row = attention_row(galerkin, softmax, n, dim, args)
        rows.append(row)
        print(f"attention n={n}: {row}", flush=True)
    return rows


# --------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--burgers-n", type=int, default=512, help="Burgers grid of the Galerkin step (paper: 512)")
    parser.add_argument("--gnot-samples", type=int, default=8, help="ragged point sets in GNOT's batch")
    parser.add_argument("--gnot-max-points", type=int, default=2000, help="largest point set (smallest: 300)")
    parser.add_argument("--darcy-size", type=int, default=31, help="FactFormer's Darcy grid (the pipeline's 31)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 32768])
    parser.add_argument("--softmax-max-length", type=int, default=8192, help="longest n for softmax attention")
    parser.add_argument("--sections", nargs="+", default=["official", "fno", "attention_memory", "gnot_batching"])
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    torch.manual_seed(0)
    metrics: dict[str, object] = {"env": {"threads": threads, "repeats": args.repeats, "load_before": load_average()}}
    if {"official", "fno", "gnot_batching"} & set(args.sections):
        galerkin_official, galerkin_fno = galerkin_cases(args)
        print(f"galerkin: {galerkin_official}\n          {galerkin_fno}", flush=True)
        factformer_official, factformer_fno = factformer_cases(args)
        print(f"factformer: {factformer_official}\n            {factformer_fno}", flush=True)
        gnot_official, gnot_batching = gnot_cases(args)
        print(f"gnot: {gnot_official}\n      {gnot_batching}", flush=True)
        metrics["official"] = {"galerkin": galerkin_official, "factformer": factformer_official, "gnot": gnot_official}
        metrics["fno"] = {"galerkin": galerkin_fno, "factformer": factformer_fno}
        metrics["gnot_batching"] = gnot_batching
    if "attention_memory" in args.sections:
        metrics["attention_memory"] = attention_memory(args)
    metrics["env"]["load_after"] = load_average()
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

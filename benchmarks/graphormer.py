"""Benchmark Graphormer's padding-free training step against the official padded layout, in one run.

Two workloads, each a full training step (forward from the PyG ``Batch``, loss, backward) of the same model and
weights, fp32:

* ``molecules``: real molecules (the first ``--molecules`` SMILES of ``../shared/data/graph/zinc_jtvae/test.txt``
  through PyG ``from_smiles`` and :class:`~formers.graph.encodings.shortest_paths.ShortestPaths`) on
  ``graphormer_molecules`` (Slim: 12 layers, d 80, 8 heads; multi-hop edge encoding, 5 hops); one regression output.
* ``sbm``: PATTERN-sized graphs (``--sbm-graphs`` graphs of ``--sbm-min``..``--sbm-max`` nodes, SBM-like: 5 random
  communities, edge probability 0.5 inside / 0.35 across; generated here with torch, for timing only) on the Slim
  architecture with node-level outputs (2 classes), no edge features.

Candidates: ``padding_free`` (:meth:`Graphormer.forward`: packed tokens, packed per-graph bias, block-diagonal
``varlen_attention``) and ``padded`` (:meth:`Graphormer.forward_padded`: the official collator's layout, every graph
padded to the batch's largest, a dense ``(G, H, T, T)`` bias with ``-inf`` on padding keys, dense attention). The
padded baseline builds its bias from the same per-pair computation and only then pads it, so the ratio measures the
padding of the transformer layers and of the bias, not the official O(n² · hops) ``edge_input`` gathers (a lower
bound on the gain over the official code). ``--compare-backends`` adds the padding-free step with the packed attention
forced to ``sdpa`` and to ``cpu_matmul`` (the measurement behind ``auto``'s choice for packed calls whose bias needs a
gradient; ``cpu_matmul`` has no attention dropout: pass ``--attention-dropout 0``). Outputs of the two layouts are
compared on the real nodes (eval mode) in the same run.

Candidates are timed interleaved (``_timing.interleaved_timings``), threads pinned; reported: median and min ms per
step and the ratio ``padded / padding_free`` of medians (> 1 = padding-free faster). Ratios are the result; absolute
times depend on the machine and its load (both recorded in the JSON).

Usage::

    python benchmarks/graphormer.py --threads 2 --json results/bench/graphormer.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_smiles

from _timing import Timing, interleaved_timings, load_average, pin_threads, write_json
from formers.core.attention import use_backend
from formers.core.registry import create_model
from formers.graph.encodings.shortest_paths import ShortestPaths
from formers.graph.models.graphormer import Graphormer

SMILES_FILE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "graph" / "zinc_jtvae" / "test.txt"


# --------------------------------------------------------------------------------------------------------- data


def molecule_batch(path: Path, count: int) -> Batch:
    """The first ``count`` parseable SMILES of ``path`` as one PyG ``Batch`` with shortest paths."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the ZINC SMILES file is missing (pass --smiles PATH)")
    graphs, transform = [], ShortestPaths()
    with path.open() as lines:
        for line in lines:
            smiles = line.strip()
            if not smiles:
                continue
            mol = from_smiles(smiles)
            if mol.num_nodes:
                graphs.append(transform(Data(x=mol.x, edge_index=mol.edge_index, edge_attr=mol.edge_attr)))
            if len(graphs) == count:
                break
    if len(graphs) < count:
        raise ValueError(f"{path}: {len(graphs)} molecules, fewer than the {count} asked for")
    batch = Batch.from_data_list(graphs)
    batch.y = torch.randn(batch.num_graphs, 1, generator=torch.Generator().manual_seed(0))
    return batch


def sbm_batch(count: int, min_nodes: int, max_nodes: int, seed: int) -> Batch:
    """``count`` SBM-like graphs (5 communities, p = 0.5 inside, q = 0.35 across), node signal in [0, 3), 2 labels."""
    gen = torch.Generator().manual_seed(seed)
    graphs, transform = [], ShortestPaths(with_next=False)
    for _ in range(count):
        n = int(torch.randint(min_nodes, max_nodes + 1, (), generator=gen))
        community = torch.randint(0, 5, (n,), generator=gen)
        prob = torch.where(community[:, None] == community[None, :], 0.5, 0.35)
        upper = torch.triu(torch.rand(n, n, generator=gen) < prob, diagonal=1)
        edge_index = (upper | upper.T).nonzero().t().contiguous()
        x = torch.randint(0, 3, (n, 1), generator=gen)
        y = torch.randint(0, 2, (n,), generator=gen)
        graphs.append(transform(Data(x=x, edge_index=edge_index, y=y, num_nodes=n)))
    return Batch.from_data_list(graphs)


# ---------------------------------------------------------------------------------------------------- measuring


def _ms(t: Timing) -> dict[str, float]:
    return {"median_ms": round(t.median * 1e3, 2), "min_ms": round(t.best * 1e3, 2)}


def training_step(model: Graphormer, batch: Batch, forward: Callable[[Batch], torch.Tensor]) -> Callable[[], None]:
    node_level = model.node_level

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = forward(batch)
        loss = F.cross_entropy(out, batch.y) if node_level else F.mse_loss(out, batch.y)
        loss.backward()

    return step


def sizes(batch: Batch) -> dict[str, int]:
    tokens = (batch.ptr[1:] - batch.ptr[:-1]) + 1  # graph token + nodes
    longest = int(tokens.max())
    return {
        "graphs": batch.num_graphs,
        "nodes": batch.num_nodes,
        "min_nodes": int(tokens.min()) - 1,
        "max_nodes": longest - 1,
        "tokens": int(tokens.sum()),
        "padded_tokens": batch.num_graphs * longest,
        "score_pairs": int((tokens * tokens).sum()),
        "padded_score_pairs": batch.num_graphs * longest * longest,
    }


def measure(model: Graphormer, batch: Batch, args: argparse.Namespace) -> dict[str, object]:
    model.eval()
    with torch.no_grad():
        diff = (model(batch) - model.forward_padded(batch)).abs().max().item()
    model.train()
    candidates = {
        "padding_free": training_step(model, batch, model.forward),
        "padded": training_step(model, batch, model.forward_padded),
    }
    if args.compare_backends:
        for name in ("sdpa", "cpu_matmul"):
            step = training_step(model, batch, model.forward)

            def forced(step=step, name=name) -> None:
                with use_backend(name):
                    step()

            candidates[f"padding_free[{name}]"] = forced
    timings = interleaved_timings(candidates, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
    base = timings["padding_free"]
    return {
        "sizes": sizes(batch),
        "max_abs_output_diff": diff,
        "times": {name: _ms(t) for name, t in timings.items()},
        "speedup_padded_over_padding_free": round(timings["padded"].median / base.median, 3),
        "speedup_min": round(timings["padded"].best / base.best, 3),
        "vs_padding_free": {name: round(t.median / base.median, 3) for name, t in timings.items()},
    }


def build_models(args: argparse.Namespace) -> dict[str, tuple[Graphormer, Batch]]:
    torch.manual_seed(args.seed)
    slim = {"num_layers": args.layers, "attention_dropout": args.attention_dropout}
    workloads = {}
    if args.molecules:
        workloads["molecules"] = (
            create_model("graphormer_molecules", **slim),
            molecule_batch(args.smiles, args.molecules),
        )
    if args.sbm_graphs:
        model = create_model(
            "graphormer_molecules", num_atom_types=3, num_bond_types=None, out_dim=2, node_level=True, **slim
        )
        workloads["sbm"] = (model, sbm_batch(args.sbm_graphs, args.sbm_min, args.sbm_max, args.seed))
    return workloads


def print_table(metrics: dict) -> None:
    env = metrics["env"]
    print(f"threads {env['threads']}, repeats {env['repeats']}, load {env['load_avg_start']} -> {env['load_avg_end']}")
    for name, result in metrics["workloads"].items():
        s = result["sizes"]
        print(
            f"\n{name}: {s['graphs']} graphs, {s['min_nodes']}..{s['max_nodes']} nodes, tokens {s['tokens']} "
            f"(padded {s['padded_tokens']}), score pairs {s['score_pairs']} (padded {s['padded_score_pairs']}); "
            f"max |padded - padding-free| output {result['max_abs_output_diff']:.2e}"
        )
        print(f"  {'candidate':<26} {'median ms':>10} {'min ms':>9} {'time / padding-free':>20}")
        for cand, t in result["times"].items():
            print(f"  {cand:<26} {t['median_ms']:>10.1f} {t['min_ms']:>9.1f} {result['vs_padding_free'][cand]:>20.2f}")
        print(f"  speedup padded / padding-free: {result['speedup_padded_over_padding_free']:.2f}x median, "
              f"{result['speedup_min']:.2f}x min")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--smiles", type=Path, default=SMILES_FILE, help="SMILES file, one per line")
    p.add_argument("--molecules", type=int, default=128, help="molecules per batch (0: skip)")
    p.add_argument("--sbm-graphs", type=int, default=16, help="SBM graphs per batch (0: skip)")
    p.add_argument("--sbm-min", type=int, default=100)
    p.add_argument("--sbm-max", type=int, default=140)
    p.add_argument("--layers", type=int, default=12, help="transformer layers (Slim: 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds, candidates interleaved in each")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each candidate first")
    p.add_argument("--attention-dropout", type=float, default=0.1, help="Slim's 0.1; cpu_matmul needs 0")
    p.add_argument("--compare-backends", action="store_true", help="also time padding-free with sdpa / cpu_matmul")
    p.add_argument("--json", type=Path, default=None, help="write the metrics here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print the table, write the JSON; returns the metrics dict."""
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    load_start = load_average()
    workloads = {name: measure(model, batch, args) for name, (model, batch) in build_models(args).items()}
    env = {
        "threads": threads,
        "layers": args.layers,
        "attention_dropout": args.attention_dropout,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "load_avg_start": round(load_start, 2),
        "load_avg_end": round(load_average(), 2),
    }
    metrics = {"env": env, "workloads": workloads}
    print_table(metrics)
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

"""Benchmark one training step (forward + L1 backward + Adam) of the Graph Transformer against PyG's obvious
alternatives, on real molecule batches.

Contenders, all at width 64 with 10 layers (the GT ZINC configuration), on the same batch:

* ``gt``: ``graph_transformer_molecules`` (this repository; edge-gated sparse attention, node + edge streams, BN,
  LapPE 8 with the per-batch sign flip);
* ``transformerconv``: a stack of PyG ``TransformerConv`` (UniMP attention over the edges, edge embeddings added to
  keys and values, 8 heads), each followed like a GT layer by residual + BatchNorm, FFN 2x + residual + BatchNorm;
  LapPE 8 added to the input, mean pool, the same MLP head;
* ``gps``: PyG ``GPSConv`` with a ``GINEConv`` local MPNN as in PyG ``examples/graph_gps.py`` (4 heads, attention
  dropout 0.5, RWSE 20 -> BatchNorm -> Linear(20, 8) concatenated to a 56-wide atom embedding, add pool, MLP
  64 -> 32 -> 16 -> 1): dense global attention over every graph of the batch, plus message passing.

Atoms and bonds are PyG ``from_smiles`` features (9 and 3 categorical columns, one embedding per column, summed: the
same encoder for every contender), for the first ``--molecules`` SMILES of the ZINC test split
(``../shared/data/graph/zinc_jtvae/test.txt``, relative to the checkout); the regression target is RDKit's Crippen
logP (standardized). Encodings (LapPE 8, RWSE 20) are computed once, before timing, as the data stage does.

Threads are pinned (``--threads``, default 1), every contender is warmed up, then timed one step per round with the
order rotating each round; medians (and bests) and the ratios ``gt / other`` (< 1: GT faster) are printed and, with
``--json PATH``, written with the machine report. Compare ratios within a run, never absolute times across runs.

Usage::

    python benchmarks/graph_transformer.py --json results/bench/graph_transformer.json
    python benchmarks/graph_transformer.py --molecules 256 --rounds 20 --threads 2
    python benchmarks/graph_transformer.py --tiny --molecules 8 --rounds 1   # smoke test (registry test sizes)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import TransformerConv, global_mean_pool
from torch_geometric.transforms import AddRandomWalkPE
from torch_geometric.utils import from_smiles

from _timing import interleaved_timings, load_average, pin_threads, write_json
from formers.core.registry import create_model, get_model_entry
from formers.graph.encodings.laplacian import LaplacianPE
from formers.graph.models.encoders import MOLECULE_ATOM_VOCAB, MOLECULE_BOND_VOCAB, CategoricalEncoder
from formers.graph.models.graph_transformer import MLPReadout

CONTENDERS = ("gt", "transformerconv", "gps")
DEFAULT_SMILES = Path(__file__).resolve().parents[2] / "shared" / "data" / "graph" / "zinc_jtvae" / "test.txt"
PE_DIM, RWSE_DIM = 8, 20


class TransformerConvNet(nn.Module):
    """PyG ``TransformerConv`` in the GT layer's place: conv -> residual -> BN -> FFN(2x) -> residual -> BN."""

    def __init__(self, dim: int, num_layers: int, heads: int) -> None:
        super().__init__()
        self.atom_encoder = CategoricalEncoder(MOLECULE_ATOM_VOCAB, dim)
        self.bond_encoder = CategoricalEncoder(MOLECULE_BOND_VOCAB, dim)
        self.pe_encoder = nn.Linear(PE_DIM, dim)
        self.convs = nn.ModuleList(
            TransformerConv(dim, dim // heads, heads=heads, edge_dim=dim) for _ in range(num_layers)
        )
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)) for _ in range(num_layers)
        )
        self.norms1 = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(num_layers))
        self.norms2 = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(num_layers))
        self.head = MLPReadout(dim, 1)

    def forward(self, data: Batch) -> Tensor:
        h = self.atom_encoder(data.x) + self.pe_encoder(data.lap_pe)
        e = self.bond_encoder(data.edge_attr)
        for conv, ffn, norm1, norm2 in zip(self.convs, self.ffns, self.norms1, self.norms2, strict=True):
            h = norm1(h + conv(h, data.edge_index, e))
            h = norm2(h + ffn(h))
        return self.head(global_mean_pool(h, data.batch, data.num_graphs))


def molecule_batch(path: Path, count: int) -> tuple[Batch, Tensor]:
    """The first ``count`` parsable SMILES of ``path`` as one batch (LapPE 8, RWSE 20) and their standardized logP."""
    from rdkit import Chem
    from rdkit.Chem import Crippen

    lap_pe, rwse = LaplacianPE(PE_DIM), AddRandomWalkPE(RWSE_DIM, attr_name="rwse")
    graphs, logp = [], []
    with path.open() as lines:
        for line in lines:
            smiles = line.strip()
            mol = Chem.MolFromSmiles(smiles) if smiles else None
            if mol is None:
                continue
            graphs.append(rwse(lap_pe(from_smiles(smiles))))
            logp.append(Crippen.MolLogP(mol))
            if len(graphs) == count:
                break
    if len(graphs) < count:
        raise SystemExit(f"{path}: only {len(graphs)} parsable SMILES, --molecules asks for {count}")
    target = torch.tensor(logp)
    return Batch.from_data_list(graphs), ((target - target.mean()) / target.std().clamp_min(1e-6)).unsqueeze(1)


def build(name: str, tiny: bool) -> nn.Module:
    """A fresh contender at the GT ZINC width/depth (or the registry's tiny GT sizes with ``tiny``)."""
    sizes = get_model_entry("graph_transformer_molecules").test_kwargs if tiny else {}
    dim, layers = sizes.get("hidden_dim", 64), sizes.get("num_layers", 10)
    torch.manual_seed(0)
    if name == "gt":
        return create_model("graph_transformer_molecules", **sizes)
    if name == "transformerconv":
        return TransformerConvNet(dim, layers, heads=sizes.get("num_heads", 8))
    # PyG's examples/graph_gps.py model, as registered (rwse_dim 8 of the channels; 4 at tiny widths)
    return create_model(
        "gps_molecules",
        channels=dim,
        num_layers=layers,
        heads=sizes.get("num_heads", 4),
        rwse_dim=PE_DIM if dim > 2 * PE_DIM else 4,
    )


def training_step(model: nn.Module, batch: Batch, target: Tensor) -> Callable[[], float]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(batch), target)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--smiles", type=Path, default=DEFAULT_SMILES, help="one SMILES per line")
    parser.add_argument("--molecules", type=int, default=128, help="molecules per batch (GT ZINC batch: 128)")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="the registry's tiny GT sizes for every contender")
    parser.add_argument("--json", type=Path, default=None, help="write the metrics (and the machine) here")
    args = parser.parse_args(argv)
    if args.molecules < 1 or args.rounds < 1 or args.threads < 1 or args.warmup < 0:
        parser.error("--molecules, --rounds and --threads must be >= 1, --warmup >= 0")
    if not args.smiles.is_file():
        parser.error(f"--smiles {args.smiles}: no such file (the shared data lives in ../shared/data/graph)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    threads = pin_threads(args.threads)
    batch, target = molecule_batch(args.smiles, args.molecules)
    batch, target = batch.to(device), target.to(device)
    models = {name: build(name, args.tiny).to(device) for name in args.contenders}
    steps = {name: training_step(model, batch, target) for name, model in models.items()}
    metrics: dict = {
        "config": {
            "molecules": args.molecules,
            "nodes": batch.num_nodes,
            "edges": batch.edge_index.shape[1],
            "rounds": args.rounds,
            "threads": threads,
            "device": str(device),
            "tiny": args.tiny,
            "smiles": args.smiles.name,
        },
        "load_average": load_average(),
    }
    print(
        f"one training step (fwd + L1 bwd + Adam), {args.molecules} molecules ({batch.num_nodes} atoms, "
        f"{batch.edge_index.shape[1]} directed bonds), {threads} thread(s), {device}"
    )
    timings = interleaved_timings(steps, repeats=args.rounds, warmup=args.warmup, device=device)
    print(f"{'contender':<17}{'params':>10}{'median s':>11}{'best s':>10}{'gt/this':>9}")
    for name, timing in timings.items():
        params = sum(p.numel() for p in models[name].parameters())
        result = {"params": params, "s_per_step": timing.median, "best_s": timing.best}
        if "gt" in timings and name != "gt":
            result["gt_over_this"] = timings["gt"].median / timing.median
        metrics[name] = result
        ratio = f"{result['gt_over_this']:>9.2f}" if "gt_over_this" in result else f"{'-':>9}"
        print(f"{name:<17}{params:>10,}{timing.median:>11.4f}{timing.best:>10.4f}{ratio}", flush=True)
    metrics["load_average_after"] = load_average()
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

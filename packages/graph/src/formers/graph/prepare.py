"""One-time preparation of a graph dataset: build the graphs, compute the structural encodings once, save the splits.

Command line (one dataset per call)::

    python -m formers.graph.prepare {hiv,esol,zinc,pattern,cluster} --raw ../shared/data/graph \\
        --out data/graph/<name> [--pe-dim K] [--encodings lap,spd,rwse | --no-encodings] \\
        [--sizes TRAIN VAL TEST] [--seed S] [--limit N]

Steps:

1. **Graphs** (:func:`build_dataset`): HIV / ESOL from the MoleculeNet CSVs with PyG's ``from_smiles`` features and
   a scaffold split; ZINC from JT-VAE's SMILES files and the 12k-subset index files (:mod:`formers.graph.molecules`:
   the training set is not the paper's); PATTERN / CLUSTER from the SBM generator (:mod:`formers.graph.sbm`).
2. **Encodings**, computed here once and stored on every graph, never per epoch (:func:`make_encoders`): ``lap``:
   :class:`formers.graph.encodings.laplacian.LaplacianPE` ``(n, pe_dim)`` as ``lap_pe``; ``spd``:
   :class:`formers.graph.encodings.shortest_paths.ShortestPaths`; ``rwse``: PyG's ``AddRandomWalkPE(20,
   attr_name="rwse")``.
3. **Files** in ``--out``: ``train.pt`` / ``val.pt`` / ``test.pt`` (PyG's ``InMemoryDataset`` collation ``(data
   dict, slices)``, the two-element form ``InMemoryDataset.load`` reads; plain tensors, lists and dicts, so
   ``torch.load(weights_only=True)`` opens them even without importing PyG; compact integer dtypes, see
   :func:`save_split`; :class:`formers.graph.data.PreparedGraphs` reads them), ``meta.json`` (dataset, task kind,
   model sizes, encodings, split sizes, vocabularies, source files with sha256, generator parameters, versions,
   timings) and ``split.json`` (which source rows / generator draws form each split, in the order of the ``.pt``
   files).

``--out`` must be missing, empty, or a folder this command wrote before (it carries the ``.formers-generated``
marker); anything else is refused and left alone. The graphs are built and encoded in memory first, so a failed
run leaves an earlier output untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.transforms import AddRandomWalkPE, BaseTransform
from torch_geometric.utils.smiles import e_map, x_map
from tqdm import tqdm

from formers.core.runsafety import GENERATOR_MARKER, OutputOverwriteError, claim_output_dir, refuse_overwrite
from formers.graph import molecules, sbm

__all__ = [
    "DATASETS",
    "DEFAULT_PE_DIM",
    "ENCODINGS",
    "FORMAT_VERSION",
    "GENERATOR",
    "RWSE_WALK_LENGTH",
    "BuiltDataset",
    "build_dataset",
    "encode_graphs",
    "main",
    "make_encoders",
    "prepare",
    "save_split",
]

GENERATOR = "formers.graph.prepare"
FORMAT_VERSION = 1
DATASETS = ("hiv", "esol", "zinc", "pattern", "cluster")
SPLITS = ("train", "val", "test")
#: LapPE dimensions of the official Graph Transformer configs (ZINC 8, PATTERN 2, CLUSTER 10); 8 for HIV / ESOL
DEFAULT_PE_DIM = {"hiv": 8, "esol": 8, "zinc": 8, "pattern": 2, "cluster": 10}
ENCODINGS = ("lap", "spd", "rwse")
_COMPACT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32)
RWSE_WALK_LENGTH = 20  # GraphGPS / PyG's GPS example
DEFAULT_SIZES = {"pattern": (10_000, 2_000, 2_000), "cluster": (10_000, 1_000, 1_000)}


@dataclass
class BuiltDataset:
    """Graphs of the three splits plus what ``meta.json`` and ``split.json`` record about them."""

    splits: dict[str, list[Data]]
    meta: dict[str, Any]
    split_record: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sources(raw: Path, relative: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": _sha256(raw / name), "bytes": (raw / name).stat().st_size} for name in relative}


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("formers-graph", "formers-core", "torch", "torch_geometric", "rdkit", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _require_raw(raw: Path, relative: Sequence[str]) -> None:
    missing = [name for name in relative if not (raw / name).is_file()]
    if missing:
        raise ValueError(
            f"raw data folder {raw} lacks {missing}: pass --raw the shared graph data folder "
            "(../shared/data/graph from the repository root; see its SOURCES.md)"
        )


def _target_stats(graphs: Sequence[Data]) -> dict[str, float]:
    values = torch.cat([graph.y.reshape(-1) for graph in graphs]).double() if graphs else torch.zeros(0)
    if values.numel() == 0:
        return {}
    stats = {"mean": values.mean(), "std": values.std(unbiased=False), "min": values.min(), "max": values.max()}
    return {name: float(value) for name, value in stats.items()}


# ------------------------------------------------------------------------------------------------ builders


def _build_molecule_csv(spec: molecules.MoleculeCsv, raw: Path, limit: int | None, progress: bool) -> BuiltDataset:
    _require_raw(raw, [spec.path])
    table = molecules.read_molecule_csv(raw / spec.path, spec, limit=limit, progress=progress)
    if not table.graphs:
        raise ValueError(f"{raw / spec.path}: no usable molecule")
    scaffolds = [molecules.murcko_scaffold(mol) for mol in table.mols]
    positions = molecules.scaffold_split(scaffolds)
    splits = {name: [table.graphs[i] for i in positions[name]] for name in SPLITS}
    atom_sizes, bond_sizes = molecules.ogb_atom_bond_sizes()
    meta = {
        "dataset": spec.name,
        "task": spec.task,
        "featurizer": "from_smiles",
        "num_atom_types": atom_sizes,
        "num_bond_types": bond_sizes,
        "out_dim": 1,
        "target": {"column": spec.target_column, **{name: _target_stats(splits[name]) for name in SPLITS}},
        "vocabularies": {"atom_columns": list(x_map), "bond_columns": list(e_map)},
        "sources": _sources(raw, [spec.path]),
        "skipped_rows": {str(row): reason for row, reason in sorted(table.skipped.items())},
        "split": {"method": "scaffold", "fractions": [0.8, 0.1, 0.1], "include_chirality": False},
    }
    record = {
        "source": spec.path,
        "unit": f"0-based data row of {spec.path} (header excluded)",
        "method": "OGB/deepchem scaffold split: Bemis-Murcko scaffolds (includeChirality=False), scaffold sets "
        "ordered by (size, first row) descending, filled greedily 80/10/10",
        **{name: [table.rows[i] for i in positions[name]] for name in SPLITS},
        "skipped": sorted(table.skipped),
    }
    return BuiltDataset(splits, meta, record)


_ZINC_FILES = {
    "valid": "zinc_jtvae/valid.txt",
    "test": "zinc_jtvae/test.txt",
    "val_index": "zinc_subset_index/val.index",
    "test_index": "zinc_subset_index/test.index",
}


def _build_zinc(raw: Path, limit: int | None, progress: bool) -> BuiltDataset:
    _require_raw(raw, list(_ZINC_FILES.values()))
    texts = {name: molecules.read_smiles_lines(raw / _ZINC_FILES[name], limit=limit) for name in ("valid", "test")}
    parsed: dict[str, list[Any]] = {}
    for name, smiles in texts.items():
        source = str(raw / _ZINC_FILES[name])
        parsed[name] = [
            molecules.parse_smiles(text, source=source, row=row)
            for row, text in enumerate(tqdm(smiles, desc=f"zinc: parse {name}", disable=not progress))
        ]
    indices = {}
    for name in ("val_index", "test_index"):
        index = molecules.read_index_file(raw / _ZINC_FILES[name])
        size = len(texts["valid" if name == "val_index" else "test"])
        indices[name] = [i for i in index if i < size] if limit is not None else index
    rows = molecules.zinc_split_rows(
        texts["valid"],
        texts["test"],
        indices["val_index"],
        indices["test_index"],
        canonical=[Chem.MolToSmiles(mol) for mol in parsed["valid"]],
        canonical_test=[Chem.MolToSmiles(mol) for mol in parsed["test"]],
    )
    chosen = {"train": ("valid", rows["train"]), "val": ("valid", rows["val"]), "test": ("test", rows["test"])}
    keys = {
        name: [molecules.zinc_atom_keys(parsed[file][row]) for row in picked] for name, (file, picked) in chosen.items()
    }
    vocabulary = molecules.zinc_vocabulary(k for name in SPLITS for k in keys[name])
    if len(vocabulary) > molecules.ZINC_NUM_ATOM_TYPES:
        raise ValueError(
            f"ZINC: {len(vocabulary)} atom types found, more than the {molecules.ZINC_NUM_ATOM_TYPES} of the official "
            f"atom dictionary: {vocabulary}"
        )
    unofficial = [key for key in vocabulary if key not in molecules.ZINC_OFFICIAL_ATOM_TYPES]
    if unofficial:
        raise ValueError(f"ZINC: atom types {unofficial} are not in benchmarking-gnns' atom dictionary")
    ids = {key: i for i, key in enumerate(vocabulary)}
    splits = {}
    for name, (file, picked) in chosen.items():
        graphs = []
        for row, atom_keys in zip(
            tqdm(picked, desc=f"zinc: {name} graphs", disable=not progress), keys[name], strict=True
        ):
            mol = parsed[file][row]
            graph = molecules.zinc_graph(mol, texts[file][row], ids, atom_keys)
            graph.y = torch.tensor([[molecules.normalized_penalized_logp(mol)]], dtype=torch.float32)
            graphs.append(graph)
        splits[name] = graphs
    counts = Counter(key for name in SPLITS for atom_keys in keys[name] for key in atom_keys)
    meta = {
        "dataset": "zinc",
        "task": "graph_regression",
        "featurizer": "zinc",
        "num_atom_types": molecules.ZINC_NUM_ATOM_TYPES,
        "num_bond_types": molecules.ZINC_NUM_BOND_TYPES,
        "out_dim": 1,
        "target": {
            "name": "normalised penalised logP (logP_SA_cycle_normalized)",
            **{name: _target_stats(splits[name]) for name in SPLITS},
        },
        "vocabularies": {
            "atom_types": vocabulary,
            "atom_type_counts": {key: counts[key] for key in vocabulary},
            "bond_types": ["NONE", "SINGLE", "DOUBLE", "TRIPLE"],
        },
        "sources": _sources(raw, list(_ZINC_FILES.values())),
        "split": {"method": "zinc_subset_index", "train_is_paper_train": False},
        "notes": "ZINC-full train is not available: train = the valid.txt molecules outside val.index (and not equal "
        "to a val/test molecule), NOT the paper's 10,000 training graphs; val and test are the 12k subset's.",
    }
    record = {
        "unit": "0-based line of the source file",
        "train": {"source": _ZINC_FILES["valid"], "rows": rows["train"]},
        "val": {"source": _ZINC_FILES["valid"], "rows": rows["val"], "selected_by": _ZINC_FILES["val_index"]},
        "test": {"source": _ZINC_FILES["test"], "rows": rows["test"], "selected_by": _ZINC_FILES["test_index"]},
        "dropped_from_train": rows["dropped"],
    }
    return BuiltDataset(splits, meta, record)


def _build_sbm(name: str, sizes: Sequence[int], seed: int, progress: bool) -> BuiltDataset:
    with tqdm(total=sum(sizes), desc=f"{name}: generate", disable=not progress) as bar:
        if name == "pattern":
            params: sbm.PatternParams | sbm.ClusterParams = sbm.PatternParams()
            generated = sbm.pattern_splits(sizes, seed=seed, params=params, progress=bar.update)
            vocab, classes = params.vocab_size, 2
        else:
            params = sbm.ClusterParams()
            generated = sbm.cluster_splits(sizes, seed=seed, params=params, progress=bar.update)
            vocab, classes = params.num_communities + 1, params.num_communities
    splits = {split: [graph.to_data() for graph in graphs] for split, graphs in generated.items()}
    label_counts = {
        split: np.bincount(np.concatenate([g.labels for g in graphs]), minlength=classes).tolist()
        for split, graphs in generated.items()
    }
    meta = {
        "dataset": name,
        "task": "node_classification",
        "featurizer": "sbm",
        "num_atom_types": vocab,
        "num_bond_types": None,
        "num_classes": classes,
        "vocabularies": {"signal": list(range(vocab)), "classes": list(range(classes))},
        "label_counts": label_counts,
        "sources": {},
        "generator_params": {**params.as_dict(), "seed": seed, "sizes": list(sizes)},
    }
    record = {
        "method": f"formers.graph.sbm.{name}_splits",
        "seed": seed,
        "sizes": dict(zip(SPLITS, (int(s) for s in sizes), strict=True)),
    }
    if name == "pattern":
        record["pattern_instance"] = {
            split: [j * params.num_patterns // len(graphs) for j in range(len(graphs))]  # type: ignore[union-attr]
            for split, graphs in generated.items()
        }
    return BuiltDataset(splits, meta, record)


def build_dataset(
    name: str,
    raw: str | Path | None = None,
    *,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> BuiltDataset:
    """The graphs of dataset ``name`` (no encodings yet) and their metadata.

    Args:
        name: one of :data:`DATASETS`.
        raw: the shared graph data folder (molecule datasets).
        sizes: train / val / test graph counts (PATTERN / CLUSTER; default: the paper's).
        seed: generator seed (PATTERN / CLUSTER).
        limit: molecule datasets: read only the first ``limit`` rows of each source file (a quick check; the splits
            are then not the benchmark's).
        progress: show progress bars.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if name in ("pattern", "cluster"):
        if limit is not None:
            raise ValueError(f"{name} is generated: use --sizes instead of --limit")
        return _build_sbm(name, tuple(sizes or DEFAULT_SIZES[name]), seed, progress)
    if sizes is not None:
        raise ValueError(f"{name} has fixed splits: --sizes applies to pattern and cluster only")
    if raw is None:
        raise ValueError(f"{name} is read from the shared data: pass --raw ../shared/data/graph")
    raw = Path(raw)
    if name == "zinc":
        return _build_zinc(raw, limit, progress)
    return _build_molecule_csv(molecules.MOLECULE_DATASETS[name], raw, limit, progress)


# ------------------------------------------------------------------------------------------------ encodings


def make_encoders(
    pe_dim: int, encodings: Sequence[str] = ENCODINGS, *, edge_features: bool = True
) -> list[BaseTransform]:
    """The structural-encoding transforms, in :data:`ENCODINGS` order (``lap``, ``spd``, ``rwse``).

    Args:
        pe_dim: Laplacian PE dimension.
        encodings: which encodings.
        edge_features: the graphs have edge features: the shortest paths then also store each path's next hops
            (``spd_next``, for Graphormer's multi-hop edge encoding); without them only the distances.
    """
    unknown = [name for name in encodings if name not in ENCODINGS]
    if unknown:
        raise ValueError(f"unknown encoding(s) {unknown}; choose from {list(ENCODINGS)}")
    transforms: list[BaseTransform] = []
    if "lap" in encodings:
        from formers.graph.encodings.laplacian import LaplacianPE

        transforms.append(LaplacianPE(pe_dim, attr_name="lap_pe"))
    if "spd" in encodings:
        try:
            from formers.graph.encodings.shortest_paths import ShortestPaths
        except ImportError as err:
            raise ValueError(
                f"the shortest-path encoding is not available ({err}); prepare without it: --encodings lap,rwse"
            ) from err
        transforms.append(ShortestPaths(with_next=edge_features))
    if "rwse" in encodings:
        transforms.append(AddRandomWalkPE(RWSE_WALK_LENGTH, attr_name="rwse"))
    return transforms


def encode_graphs(
    graphs: Sequence[Data], transforms: Sequence[BaseTransform], *, progress: bool = False, desc: str = "encode"
) -> list[Data]:
    """``graphs`` with ``transforms`` applied in order (PyG transforms return a shallow copy of each graph)."""
    encoded = []
    for graph in tqdm(graphs, desc=desc, disable=not progress or not transforms):
        for transform in transforms:
            graph = transform(graph)
        encoded.append(graph)
    return encoded


def _encoding_meta(encodings: Sequence[str], transforms: Sequence[BaseTransform]) -> dict[str, Any]:
    """``{name: {"transform": class path, "repr": repr}}`` of the encodings applied (``make_encoders`` order)."""
    return {
        name: {"transform": f"{type(t).__module__}.{type(t).__qualname__}", "repr": repr(t)}
        for name, t in zip(encodings, transforms, strict=True)
    }


# ------------------------------------------------------------------------------------------------ files


def save_split(graphs: Sequence[Data], path: str | Path) -> dict[str, str]:
    """Collate ``graphs`` as PyG's ``InMemoryDataset.save`` does and write ``(data.to_dict(), slices)``.

    ``InMemoryDataset.save`` appends the ``Data`` class as a third element, which ``torch.load(weights_only=True)``
    accepts only after ``import torch_geometric`` (it registers the class as safe); without it the file holds plain
    types only and ``InMemoryDataset.load`` still reads it (its two-element form, ``Data`` by default).

    Every int64 tensor is stored in the smallest integer dtype that holds its values (``uint8``, ``int8``, ``int16``
    or ``int32``): PATTERN's ``edge_index`` alone would take 1.3 GB as int64. The collation keeps graph-local node
    ids (``increment=False``), so the values stay small. :class:`formers.graph.data.PreparedGraphs` widens them back
    to int64 per graph, from the returned ``{attribute: stored dtype}`` that ``meta.json`` records.
    """
    if not graphs:
        raise ValueError(f"refusing to write an empty split to {path}")
    data, slices = InMemoryDataset.collate(list(graphs))
    stored = data.to_dict()
    compacted = {}
    for key, value in stored.items():
        if isinstance(value, torch.Tensor) and value.dtype == torch.int64 and value.numel():
            low, high = int(value.min()), int(value.max())
            for dtype in _COMPACT_DTYPES:
                if torch.iinfo(dtype).min <= low and high <= torch.iinfo(dtype).max:
                    stored[key], compacted[key] = value.to(dtype), str(dtype).removeprefix("torch.")
                    break
    torch.save((stored, slices), str(path))
    return compacted


def _check_claimable(out: Path) -> None:
    """Refuse early what :func:`claim_output_dir` would refuse at writing time (a file, a foreign folder)."""
    if out.exists() and not out.is_dir():
        raise OutputOverwriteError(f"output {out} exists and is not a folder; {GENERATOR} writes a folder")
    if out.is_dir() and any(out.iterdir()):
        marker = out / GENERATOR_MARKER
        try:
            ours = json.loads(marker.read_text()).get("generator") == GENERATOR if marker.is_file() else False
        except (ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputOverwriteError(
                f"output folder {out} is not empty and was not made by {GENERATOR} (no {GENERATOR_MARKER} marker): "
                "refusing to replace its contents; choose an empty or new folder, or remove it yourself"
            )


def _json_text(value: Any, depth: int = 0) -> str:
    """JSON with one line per dictionary entry and every list on one line (split.json's index lists stay short)."""
    if isinstance(value, dict) and value:
        pad = " " * (depth + 1)
        entries = [f"{pad}{json.dumps(str(key))}: {_json_text(item, depth + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(entries) + "\n" + " " * depth + "}"
    return json.dumps(value)


def _json(path: Path, value: Any) -> None:
    path.write_text(_json_text(value) + "\n")


def prepare(
    name: str,
    out: str | Path,
    raw: str | Path | None = None,
    *,
    pe_dim: int | None = None,
    encodings: Sequence[str] = ENCODINGS,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Build, encode and save dataset ``name`` into ``out``; returns the ``meta.json`` content.

    Raises:
        ValueError: bad arguments, unreadable sources, or an ``out`` folder this function did not write
            (``OutputOverwriteError``; nothing is deleted).
    """
    pe_dim = DEFAULT_PE_DIM.get(name, 8) if pe_dim is None else pe_dim
    if not isinstance(pe_dim, int) or pe_dim < 1:
        raise ValueError(f"pe_dim must be a positive integer, got {pe_dim!r}")
    encodings = [name_ for name_ in ENCODINGS if name_ in encodings]
    transforms = make_encoders(pe_dim, encodings, edge_features=name not in ("pattern", "cluster"))
    out = Path(out)
    if raw is not None:
        refuse_overwrite(out, [raw])
    _check_claimable(out)  # before the work; claim_output_dir decides again when writing
    timings = {}
    start = time.perf_counter()
    built = build_dataset(name, raw, sizes=sizes, seed=seed, limit=limit, progress=progress)
    timings["build_s"] = round(time.perf_counter() - start, 2)
    log(f"{name}: built {', '.join(f'{len(built.splits[s])} {s}' for s in SPLITS)} graphs in {timings['build_s']} s")
    empty = [split for split in SPLITS if not built.splits[split]]
    if empty:
        raise ValueError(f"{name}: the {empty} split(s) are empty; use more data (--limit/--sizes)")
    start = time.perf_counter()
    for split in SPLITS:
        desc = f"{name}: encode {split}"
        built.splits[split] = encode_graphs(built.splits[split], transforms, progress=progress, desc=desc)
    timings["encode_s"] = round(time.perf_counter() - start, 2)
    log(f"{name}: encodings {encodings or 'none'} in {timings['encode_s']} s")
    meta = {
        "format": FORMAT_VERSION,
        "generator": GENERATOR,
        **built.meta,
        "pe_dim": pe_dim if "lap" in encodings else None,
        "encodings": _encoding_meta(encodings, transforms),
        "rwse_walk_length": RWSE_WALK_LENGTH if "rwse" in encodings else None,
        "split_sizes": {split: len(built.splits[split]) for split in SPLITS},
        "num_nodes": {split: int(sum(g.num_nodes for g in built.splits[split])) for split in SPLITS},
        "split_file": "split.json",
        "limit": limit,
        "versions": _versions(),
    }
    start = time.perf_counter()
    claim_output_dir(out, GENERATOR)
    meta["stored_dtypes"] = {split: save_split(built.splits[split], out / f"{split}.pt") for split in SPLITS}
    _json(out / "split.json", built.split_record)
    timings["save_s"] = round(time.perf_counter() - start, 2)
    meta["timings"] = timings
    meta["bytes"] = {f"{split}.pt": (out / f"{split}.pt").stat().st_size for split in SPLITS}
    _json(out / "meta.json", meta)  # written last: a folder with meta.json is complete
    log(f"{name}: wrote {out} ({sum(meta['bytes'].values()) / 2**20:.1f} MiB) in {timings['save_s']} s")
    return meta


def _encodings_argument(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in names if item not in ENCODINGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown encoding(s) {unknown}; choose from {','.join(ENCODINGS)}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m formers.graph.prepare",
        description="Build a graph dataset once: graphs, structural encodings, train/val/test files and meta.json.",
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--raw", default="../shared/data/graph", help="shared graph data folder (molecule datasets)")
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default data/graph/<dataset>); missing, empty, or written by this command before",
    )
    parser.add_argument(
        "--pe-dim",
        type=int,
        default=None,
        help="Laplacian PE dimension (default: ZINC/HIV/ESOL 8, PATTERN 2, CLUSTER 10)",
    )
    parser.add_argument(
        "--encodings",
        type=_encodings_argument,
        default=list(ENCODINGS),
        help="comma-separated subset of lap,spd,rwse (default: all)",
    )
    parser.add_argument("--no-encodings", action="store_true", help="store the graphs without structural encodings")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=None,
        help="graph counts (pattern, cluster; default: the paper's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (pattern, cluster)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="molecule datasets: only the first N rows of each source file (a quick check, not the benchmark split)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    out = args.out or f"data/graph/{args.dataset}"
    raw = None if args.dataset in ("pattern", "cluster") else args.raw
    try:
        prepare(
            args.dataset,
            out,
            raw,
            pe_dim=args.pe_dim,
            encodings=[] if args.no_encodings else args.encodings,
            sizes=args.sizes,
            seed=args.seed,
            limit=args.limit,
            progress=not args.quiet,
            log=print,
        )
    except ValueError as err:  # OutputOverwriteError and MoleculeError included
        parser.exit(1, f"error: {err}\n")


if __name__ == "__main__":
    main()

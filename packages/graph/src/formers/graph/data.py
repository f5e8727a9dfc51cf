"""The graph data module: the splits a ``python -m formers.graph.prepare`` folder holds, as PyG batches.

A prepared folder (:mod:`formers.graph.prepare`) has ``train.pt`` / ``val.pt`` / ``test.pt`` (graphs with their
structural encodings, computed once), ``meta.json`` and ``split.json``. :class:`GraphDataModule` reads it, batches with
PyG's ``Batch.from_data_list``, tells the model its sizes from ``meta.json`` (:meth:`GraphDataModule.model_sizes`)
and stores in every checkpoint what ``predict`` needs to featurize new SMILES the same way
(:meth:`GraphDataModule.state_dict`, :func:`featurize_smiles_like`).

Batches are PyG ``Batch`` objects: ``x``, ``edge_index``, ``edge_attr`` (molecules), ``y``, ``batch``, ``ptr`` and the
encodings (``lap_pe``, ``rwse``, the shortest-path tensors); graph tasks have ``y`` float ``(num_graphs, 1)``, node
tasks ``y`` long ``(num_nodes,)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data, InMemoryDataset

from formers.core.data import SplitDataModule
from formers.graph.molecules import featurize_smiles
from formers.graph.prepare import DATASETS, FORMAT_VERSION, encode_graphs, make_encoders

__all__ = ["GraphDataModule", "PreparedGraphs", "collate_graphs", "featurize_smiles_like", "read_meta"]

SPLITS = ("train", "val", "test")
#: meta.json entries a checkpoint keeps (what predict and a resume check need)
STATE_KEYS = (
    "format", "dataset", "task", "featurizer", "num_atom_types", "num_bond_types", "out_dim", "num_classes", "pe_dim",
    "encodings", "vocabularies", "split_sizes", "sources", "generator_params", "limit",
)  # fmt: skip
#: entries that must agree between a checkpoint and the data it resumes on
_COMPATIBLE_KEYS = (
    "dataset",
    "task",
    "featurizer",
    "num_atom_types",
    "num_bond_types",
    "out_dim",
    "num_classes",
    "pe_dim",
    "encodings",
    "vocabularies",
)


def _prepare_command(root: Path) -> str:
    name = root.name if root.name in DATASETS else "{" + ",".join(DATASETS) + "}"
    return f"python -m formers.graph.prepare {name} --raw ../shared/data/graph --out {root}"


def read_meta(root: str | Path) -> dict[str, Any]:
    """``<root>/meta.json`` of a prepared folder.

    Raises:
        ValueError: the folder or its ``meta.json`` is missing (naming the command that makes it), unreadable, or
            of another format version.
    """
    root = Path(root)
    path = root / "meta.json"
    if not path.is_file():
        what = "does not exist" if not root.exists() else "has no meta.json (not prepared, or an interrupted run)"
        raise ValueError(f"graph data folder {root} {what}; make it with `{_prepare_command(root)}`")
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); prepare the folder again: `{_prepare_command(root)}`"
        ) from err
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format {meta.get('format')!r}, this formers-graph reads format {FORMAT_VERSION}; prepare the "
            f"folder again: `{_prepare_command(root)}`"
        )
    return meta


class PreparedGraphs(InMemoryDataset):
    """One split of a prepared folder: ``torch.load(path, weights_only=True)`` of PyG's ``InMemoryDataset`` storage
    ``(data dict, slices)`` (``InMemoryDataset.save``'s ``(data dict, slices, Data)`` is read too); ``dataset[i]`` is
    graph ``i`` (a ``Data``).

    Integer attributes the preparation stored in a smaller dtype (``meta.json``'s ``stored_dtypes``, e.g. PATTERN's
    ``edge_index`` as ``uint8``) stay small in memory and are widened back to int64 per graph in :meth:`get`, so
    batches have PyG's usual dtypes.

    Args:
        path: ``<folder>/<split>.pt``.
        widen: the attributes to widen to int64 (``None``: those ``<folder>/meta.json`` lists for this split).
    """

    def __init__(self, path: str | Path, widen: Sequence[str] | None = None) -> None:
        super().__init__(root=None)
        self.path = Path(path)
        if widen is None:
            meta_path = self.path.parent / "meta.json"
            stored = json.loads(meta_path.read_text()).get("stored_dtypes", {}) if meta_path.is_file() else {}
            widen = list(stored.get(self.path.stem, {}))
        self.widen = tuple(widen)
        if not self.path.is_file():
            raise ValueError(
                f"prepared split {self.path} is missing; prepare again: `{_prepare_command(self.path.parent)}`"
            )
        try:
            stored = torch.load(self.path, weights_only=True)
        except Exception as err:  # unpickling errors of every kind: a truncated or foreign file
            raise ValueError(f"{self.path} is not a prepared graph split ({type(err).__name__}: {err})") from err
        if not (isinstance(stored, tuple) and len(stored) in (2, 3) and isinstance(stored[0], dict)):
            raise ValueError(f"{self.path} is not in InMemoryDataset's (data dict, slices) storage format")
        if len(stored) == 3 and stored[2] is not Data:
            raise ValueError(f"{self.path} holds {stored[2]!r} graphs, expected torch_geometric.data.Data")
        self.data, self.slices = Data.from_dict(stored[0]), stored[1]

    def get(self, idx: int) -> Data:
        data = super().get(idx)
        for key in self.widen:
            if key in data:
                data[key] = data[key].long()
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)}, {self.path})"


def collate_graphs(graphs: Sequence[Data]) -> Batch:
    """PyG's batching of a list of graphs (a module-level function, so worker processes can pickle it)."""
    return Batch.from_data_list(list(graphs))


class GraphDataModule(SplitDataModule):
    """Train / val / test graphs of a prepared folder (module docstring).

    Args:
        root: the folder ``python -m formers.graph.prepare`` wrote (``meta.json``, ``{train,val,test}.pt``).
        batch_size: graphs per batch (GT: ZINC 128, PATTERN 26, CLUSTER 32; Graphormer ZINC 256).
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory for faster host-to-GPU copies.
        drop_last_train: drop the last partial training batch.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last_train: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.drop_last_train = drop_last_train

    # ------------------------------------------------------------------------------------------ SplitDataModule
    def build_splits(self) -> dict[str, Dataset]:
        return {split: PreparedGraphs(self.root / f"{split}.pt") for split in SPLITS}

    def _all_sizes(self) -> dict[str, Any]:
        meta = self.meta
        sizes: dict[str, Any] = {"num_atom_types": meta["num_atom_types"], "num_bond_types": meta["num_bond_types"]}
        if meta["task"] == "node_classification":
            sizes["num_classes"] = meta["num_classes"]
        else:
            sizes["out_dim"] = meta["out_dim"]
        # not pe_dim: a model's Laplacian PE width is its own hyper-parameter (set in its config); the stored LapPE
        # is ordered by eigenvalue, so a model takes its first pe_dim columns (and says so when there are fewer)
        return sizes

    def model_sizes(self) -> dict[str, Any]:
        """``num_atom_types`` (int, or per-column sizes for ``from_smiles`` features), ``num_bond_types`` (same, or
        ``None``: no edge features) and ``out_dim`` (graph tasks) or ``num_classes`` (node tasks)."""
        return self._all_sizes()

    def collate(self):
        return collate_graphs

    def drop_last(self, split: str, dataset: Dataset) -> bool:
        return split == "train" and self.drop_last_train

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What predict needs (plain types: checkpoints load with ``weights_only=True``): the task kind, the featurizer
        and its vocabularies, the sizes and the encodings with their parameters."""
        return {"meta": {key: self.meta[key] for key in STATE_KEYS if key in self.meta}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume: refuse a checkpoint made on differently prepared data (other vocabulary, sizes, encodings)."""
        saved = state_dict.get("meta", {})
        for key in _COMPATIBLE_KEYS:
            if key in saved and saved[key] != self.meta.get(key):
                raise ValueError(
                    f"the checkpoint was trained on data with {key}={saved[key]!r}, {self.root} has "
                    f"{self.meta.get(key)!r}; resume on the folder it was trained on"
                )

    # ------------------------------------------------------------------------------------------ predict
    @staticmethod
    def featurize(
        smiles: Sequence[str], state: dict[str, Any], source: str = "input"
    ) -> tuple[list[Data], list[int], dict[int, str]]:
        """:func:`featurize_smiles_like` with a checkpoint's data state (``state_dict()``)."""
        return featurize_smiles_like(smiles, state.get("meta", state), source=source)


def featurize_smiles_like(
    smiles: Sequence[str], meta: dict[str, Any], *, source: str = "input"
) -> tuple[list[Data], list[int], dict[int, str]]:
    """Graphs of user SMILES made exactly as the prepared data ``meta`` describes: the same featurizer (PyG
    ``from_smiles``, or ZINC atom types from the stored vocabulary) and the same encodings with the same parameters.

    Returns:
        ``(graphs, rows, errors)``: the graphs of the good rows, their 0-based row numbers, and ``{row: message}`` for
        every bad row (unparsable SMILES, no atoms, an atom type the model has no embedding for), so the caller
        reports each one and predicts the rest.

    Raises:
        ValueError: the data is not molecular (PATTERN / CLUSTER models take graphs, not SMILES).
    """
    featurizer = meta.get("featurizer")
    if featurizer not in ("from_smiles", "zinc"):
        raise ValueError(
            f"a model trained on {meta.get('dataset')!r} ({meta.get('task')}) takes graphs, not SMILES: only "
            "molecule datasets (hiv, esol, zinc) can featurize SMILES"
        )
    vocabulary = meta.get("vocabularies", {}).get("atom_types") if featurizer == "zinc" else None
    graphs, rows, errors = featurize_smiles(smiles, featurizer=featurizer, zinc_vocabulary=vocabulary, source=source)
    encodings = list(meta.get("encodings", {}))
    transforms = make_encoders(meta.get("pe_dim") or 1, encodings)  # pe_dim is None only without "lap"
    stored = {name: spec.get("repr") for name, spec in meta.get("encodings", {}).items()}
    made = {name: repr(transform) for name, transform in zip(encodings, transforms, strict=True)}
    if any(stored[name] is not None and stored[name] != made[name] for name in encodings):
        raise ValueError(f"the data was encoded with {stored}, this formers-graph makes {made}: they must agree")
    return encode_graphs(graphs, transforms), rows, errors

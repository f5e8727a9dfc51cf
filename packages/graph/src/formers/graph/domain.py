"""``formers-graph``: the graph domain's declaration (tasks, data, predict).

Usage::

    python -m formers.graph.prepare zinc --out data/graph/zinc          # once: graphs + encodings (or dvc repro)
    formers-graph fit --config pipelines/graph/zinc_graph_transformer.yaml [--run_dir DIR] [--ckpt_path last]
    formers-graph test --config pipelines/graph/zinc_graph_transformer.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-graph predict --ckpt <run_dir>/checkpoints/best.ckpt molecules.csv --out predictions.csv

``predict`` takes SMILES (a ``.txt`` file with one per line, or a ``.csv`` with a ``smiles`` column) for a model
trained on molecules, featurized and encoded exactly as its training data was (the data state stored in the
checkpoint), and writes one CSV row per molecule: ``source, row, smiles, prediction`` (a regression value, or the
positive-class probability for a binary task). A bad row (unparsable SMILES, no atoms, an atom type the model never
saw) is reported with its file and row, and the other rows are still predicted. It also takes a prepared split file
(``data/graph/<dataset>/test.pt``) for any model, SBM node classifiers included: one row per graph (or per node).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from formers.core.domain import Domain, TrainedRun
from formers.core.predict import InputError, Predictor, check_finite

if TYPE_CHECKING:  # PyG, RDKit (featurization) and the tasks load when predict runs: the script starts without them
    from torch import Tensor
    from torch_geometric.data import Data

__all__ = ["DOMAIN", "GraphPredictor", "main", "read_smiles_file"]


def read_smiles_file(path: Path) -> list[str]:
    """SMILES of a ``.txt`` (one per line, blank lines kept as bad rows so row numbers match the file) or a ``.csv``
    with a ``smiles`` column (any case)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it: {err}") from err
    if path.suffix.lower() != ".csv":
        return [line.strip() for line in text.splitlines()]
    reader = csv.DictReader(io.StringIO(text))
    column = next((name for name in reader.fieldnames or [] if name.strip().lower() == "smiles"), None)
    if column is None:
        raise InputError(f"{path}: no 'smiles' column (columns: {reader.fieldnames})")
    return [(row.get(column) or "").strip() for row in reader]


@dataclass
class GraphPredictor(Predictor):
    """Predictions for SMILES files (molecule models) or prepared split files (any model)."""

    inputs_help: str = "SMILES files (.txt one per line, .csv with a 'smiles' column) or prepared split files (.pt)"
    out_help: str = "output CSV (default: standard output)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch-size", type=int, default=128, help="graphs per forward pass")

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        if not inputs:
            raise ValueError("give at least one SMILES file or prepared split file")
        rows: list[list[str]] = []
        for path in inputs:
            try:
                rows += self._predict_file(run, path, options.batch_size)
            except InputError as err:
                self.report(str(err))
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([self._header(run), *rows])
        text = buffer.getvalue()
        return self.emit(text, options, f"{len(rows)} predictions")

    # ------------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _header(run: TrainedRun) -> list[str]:
        from formers.graph.task import GraphBinaryTask, NodeClassificationTask

        if isinstance(run.task, NodeClassificationTask):
            return ["source", "graph", "node", "prediction"]
        name = "probability" if isinstance(run.task, GraphBinaryTask) else "prediction"
        return ["source", "row", "smiles", name]

    def _predict_file(self, run: TrainedRun, path: Path, batch_size: int) -> list[list[str]]:
        from formers.graph.data import GraphDataModule, PreparedGraphs
        from formers.graph.task import NodeClassificationTask

        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if path.suffix == ".pt":
            graphs = list(PreparedGraphs(path))
            outputs = _forward(run, graphs, batch_size, path)
            if isinstance(run.task, NodeClassificationTask):
                return [
                    [str(path), str(g), str(node), str(int(label))]
                    for g, out in enumerate(outputs)
                    for node, label in enumerate(out.argmax(dim=-1).tolist())
                ]
            return [
                [str(path), str(g), getattr(graphs[g], "smiles", ""), _value(run, out)] for g, out in enumerate(outputs)
            ]
        if isinstance(run.task, NodeClassificationTask):
            raise InputError(f"{path}: a node classifier (SBM) takes prepared graph files (.pt), not SMILES")
        smiles = read_smiles_file(path)
        try:
            graphs, good_rows, errors = GraphDataModule.featurize(smiles, run.data_state, source=str(path))
        except ValueError as err:
            raise InputError(f"{path}: {err}") from err
        for message in errors.values():
            self.report(message)
        if not graphs:
            return []
        outputs = _forward(run, graphs, batch_size, path)
        return [
            [str(path), str(row), smiles[row], _value(run, out)] for row, out in zip(good_rows, outputs, strict=True)
        ]


def _forward(run: TrainedRun, graphs: Sequence[Data], batch_size: int, source: Path) -> list[Tensor]:
    """Per graph: the model's output rows (one row for graph tasks, one per node for node tasks)."""
    from torch_geometric.data import Batch

    outputs: list[Tensor] = []
    device = next(run.task.parameters()).device
    for start in range(0, len(graphs), batch_size):
        batch = Batch.from_data_list(list(graphs[start : start + batch_size])).to(device)
        out = run.task(batch).float().cpu()
        check_finite(out, "predictions", source)
        if out.shape[0] == batch.num_graphs:
            outputs += list(out.unbind(0))
        else:
            outputs += list(out.split(torch.diff(batch.ptr.cpu()).tolist()))
    return outputs


def _value(run: TrainedRun, out: Tensor) -> str:
    from formers.graph.task import GraphBinaryTask

    out = torch.sigmoid(out) if isinstance(run.task, GraphBinaryTask) else out
    return ";".join(f"{v:.6g}" for v in out.reshape(-1).tolist())


DOMAIN = Domain(
    name="graph",
    description="formers-graph: graph transformers (Graph Transformer, Graphormer) and PyG's GPS on PyG batches.",
    data_class="formers.graph.data.GraphDataModule",
    predictor=GraphPredictor(),
)
main = DOMAIN.main

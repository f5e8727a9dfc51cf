"""``formers-pde``: the PDE domain's declaration (task, data, predict).

Usage::

    python -m formers.pde.solvers.burgers --out data/pde/burgers.h5           # once: the data (or dvc repro)
    formers-pde fit --config pipelines/pde/burgers_galerkin.yaml [--run_dir DIR] [--ckpt_path last]
    formers-pde test --config pipelines/pde/burgers_galerkin.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-pde predict --ckpt <run_dir>/checkpoints/best.ckpt data/pde/burgers.h5 --out prediction.h5

``predict`` takes stored input fields and writes the predicted fields (HDF5, physical units) and a figure of
prediction | truth | error beside them (``<out>.png``):

- a dataset file of :mod:`formers.pde.solvers` (``--split``, default ``test``; the truth is read too, and the
  relative L2 error of every sample is written and printed);
- for grid models, a ``.npy`` array of input fields ``(N, *spatial)`` or ``(N, *spatial, C)`` at **any resolution**
  the model takes (``--subsample`` takes every s-th point of a dataset file's stored grid; 1 = the stored fine grid,
  a zero-shot super-resolution run when the model was trained coarser);
- for trajectory models, the first ``T_in`` frames of each trajectory, rolled out for ``--frames`` frames.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from formers.core.domain import Domain, TrainedRun
from formers.core.predict import InputError, Predictor, check_finite

if TYPE_CHECKING:  # the data, task, plots and h5py load when predict runs: the script starts without Lightning
    from torch import Tensor

    from formers.pde.data import Normalizer

__all__ = ["DOMAIN", "PDEPredictor", "main"]


@dataclass
class PDEPredictor(Predictor):
    """Predicted fields for stored inputs (see the module docstring)."""

    inputs_help: str = "a dataset file of formers.pde.solvers (.h5) or input fields (.npy, grid models)"
    out_help: str = "output HDF5 file of the predictions (required; the figure goes to <out>.png)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--split", default="test", help="split of a dataset file (default: test)")
        parser.add_argument("--subsample", type=int, default=None, help="grid step on a dataset file's stored grid "
                            "(default: the training resolution; 1: the finest)")  # fmt: skip
        parser.add_argument("--limit", type=int, default=None, help="at most this many samples")
        parser.add_argument("--frames", type=int, default=None, help="rollout length (trajectory models)")
        parser.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        from formers.pde.data import Normalizer
        from formers.pde.plots import plot_fields
        from formers.pde.task import relative_l2

        if len(inputs) != 1:
            raise ValueError("give exactly one input file (.h5 dataset or .npy fields)")
        if options.out is None:
            raise ValueError("give --out OUT.h5: predicted fields are written to an HDF5 file, not printed")
        if options.limit is not None and options.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {options.limit}")
        path, out = inputs[0], Path(options.out)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        kind = run.data_state.get("kind", "grid")
        normalizer = Normalizer(**run.data_state["normalizer"])
        if kind == "pointcloud":
            return self._point_cloud(run, path, out, normalizer, options)
        x, truth = self._grid_inputs(run, path, normalizer, options)
        frames = options.frames or (truth.shape[-1] if truth is not None and kind == "trajectory" else None)
        pred = _batched(run.task, x, options.batch_size, frames, path)
        scale = run.data_state["normalizer"]["rms"] if kind == "grid" else [normalizer.rms[0]]
        pred = pred * pred.new_tensor(scale)
        errors = relative_l2(pred, truth) if truth is not None and truth.shape == pred.shape else None
        _write_h5(
            out,
            {
                "prediction": pred.numpy(),
                **({"truth": truth.numpy()} if truth is not None else {}),
                **({"rel_l2": errors.numpy()} if errors is not None else {}),
            },  # fmt: skip
            {"source": str(path), "checkpoint": str(run.path), "model": run.hparams.get("model", "")},
        )
        figure = plot_fields(pred.numpy(), None if truth is None else truth.numpy(), out.with_suffix(".png"),
                             f"{run.hparams.get('model', '')} on {path.name} ({tuple(pred.shape[1:-1])})")  # fmt: skip
        summary = f"wrote {out} and {figure} ({pred.shape[0]} samples at {tuple(pred.shape[1:-1])})"
        if errors is not None:
            summary += f"; relative L2 mean {errors.mean():.4e} (median {errors.median():.4e})"
        return summary

    # ------------------------------------------------------------------------------------------ inputs
    def _grid_inputs(
        self, run: TrainedRun, path: Path, normalizer: Normalizer, options: argparse.Namespace
    ) -> tuple[Tensor, Tensor | None]:
        from formers.pde.data import read_split, subsample_grid

        state, kind = run.data_state, run.data_state.get("kind", "grid")
        step = options.subsample or int(state.get("subsample", 1))
        if path.suffix == ".npy":
            if kind != "grid":
                raise InputError(f"{path}: a trajectory model takes a dataset file (.h5), not .npy fields")
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as err:
                raise InputError(f"{path}: not a numeric .npy array ({err})") from err
            fields = torch.from_numpy(np.asarray(array, np.float32))
            dims = int(state.get("spatial_dims", fields.ndim - 1))
            if fields.ndim == dims:
                fields = fields.unsqueeze(0)
            if fields.ndim == dims + 1:
                fields = fields.unsqueeze(-1)
            if fields.ndim != dims + 2:
                raise InputError(
                    f"{path}: expected (N, {'n, ' * dims}C) fields for a {dims}-D model, got {array.shape}"
                )
            return normalizer.inputs(fields), None
        try:
            if kind == "trajectory":
                frames = torch.from_numpy(
                    np.asarray(read_split(path, options.split, [state["key"]], options.limit)[state["key"]], np.float32)
                ).permute(0, 2, 3, 1)
                frames = subsample_grid(frames, step, 2) / normalizer.rms[0]
                t_in = int(state["t_in"])
                horizon = options.frames or int(state.get("rollout", 1))
                return frames[..., :t_in], frames[..., t_in : t_in + horizon] * normalizer.rms[0]
            arrays = read_split(path, options.split, ["a", "u"], options.limit)
        except ValueError as err:
            raise InputError(str(err)) from err
        dims = int(state["spatial_dims"])
        a, u = (torch.from_numpy(np.asarray(arrays[k], np.float32)) for k in ("a", "u"))
        a, u = (t.unsqueeze(-1) if t.ndim == dims + 1 else t for t in (a, u))
        if state.get("inverse"):
            a, u = u, a
        a, u = subsample_grid(a, step, dims), subsample_grid(u, step, dims)
        return normalizer.inputs(a), u

    def _point_cloud(
        self, run: TrainedRun, path: Path, out: Path, normalizer: Normalizer, options: argparse.Namespace
    ) -> str:
        from formers.pde.data import PointCloudDataModule, PointCloudDataset
        from formers.pde.plots import plot_point_cloud
        from formers.pde.pointcloud import collate_point_clouds
        from formers.pde.task import relative_l2

        data = PointCloudDataModule(str(path), functions=run.data_state["functions"], limit=options.limit)
        data.load_state_dict(run.data_state)
        try:
            arrays = data._read(options.split)
        except ValueError as err:
            raise InputError(str(err)) from err
        dataset = PointCloudDataset(arrays, data.functions, normalizer)
        preds, truths, coords = [], [], []
        for start in range(0, len(dataset), options.batch_size):
            samples = [dataset[i] for i in range(start, min(start + options.batch_size, len(dataset)))]
            inputs, target = collate_point_clouds(samples)
            y = run.task.predict_fields(inputs).float()
            check_finite(y, "predictions", path)
            for i, s in enumerate(samples):
                n = s["coords"].shape[0]
                preds.append(normalizer.outputs_to_physical(y[i, :n]))
                truths.append(normalizer.outputs_to_physical(s["target"]))
                coords.append(s["coords"])
        errors = torch.cat([relative_l2(p[None], t[None]) for p, t in zip(preds, truths, strict=True)])
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in preds])]).astype(np.int64)
        _write_h5(
            out,
            {
                "prediction": torch.cat(preds).numpy(),
                "truth": torch.cat(truths).numpy(),
                "coords": torch.cat(coords).numpy(),
                "offsets": offsets,
                "rel_l2": errors.numpy(),
            },  # fmt: skip
            {"source": str(path), "checkpoint": str(run.path), "model": run.hparams.get("model", "")},
        )
        cells = _cells(path, options.split, len(preds))
        figure = plot_point_cloud([c.numpy() for c in coords], [p.numpy() for p in preds],
                                  [t.numpy() for t in truths], out.with_suffix(".png"),
                                  f"{run.hparams.get('model', '')} on {path.name}", cells)  # fmt: skip
        return (
            f"wrote {out} and {figure} ({len(preds)} samples); relative L2 mean {errors.mean():.4e} "
            f"(median {errors.median():.4e})"
        )


def _cells(path: Path, split: str, count: int) -> list[np.ndarray | None] | None:
    """The stored triangles of the first ``count`` meshes (node indices local to each mesh), when the file has them."""
    import h5py

    with h5py.File(path, "r") as file:
        group = file[split]
        if "cells" not in group:
            return None
        cells, offsets = group["cells"], group["cells_offsets"]
        return [np.asarray(cells[int(offsets[i]) : int(offsets[i + 1])]) for i in range(min(count, 3))]


def _batched(task: Any, x: Tensor, batch_size: int, frames: int | None, source: Path) -> Tensor:
    outs = []
    for start in range(0, x.shape[0], batch_size):
        y = task.predict_fields(x[start : start + batch_size], frames).float()
        check_finite(y, "predictions", source)
        outs.append(y)
    return torch.cat(outs)


def _write_h5(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write atomically (a killed predict never leaves half a file under ``path``)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with h5py.File(partial, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
        file.attrs.update(attrs)
    os.replace(partial, path)


DOMAIN = Domain(
    name="pde",
    description="formers-pde: neural-operator transformers for PDEs (Galerkin/Fourier transformer, FactFormer, GNOT) "
    "and neuraloperator's FNO, on data made by the package's own solvers.",
    task_class="formers.pde.task.OperatorTask",
    data_class="formers.pde.data.PDEDataModule",
    predictor=PDEPredictor(),
)
main = DOMAIN.main

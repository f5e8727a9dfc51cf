"""neuraloperator's small Darcy files as formers-pde datasets: a cross-check of the loaders on data made elsewhere.

neuraloperator 2.0 ships ``darcy_train_16.pt`` (1000 samples), ``darcy_test_16.pt`` and ``darcy_test_32.pt`` (the same
50 test cases at 16 x 16 and 32 x 32): dicts with ``x`` (bool coefficient mask) and ``y`` (pressure). This module
reads them with ``torch.load(weights_only=True)`` (tensors only: nothing is unpickled) and writes the formers-pde HDF5
layout (:mod:`formers.pde.solvers.store`), so every formers-pde model and neuraloperator's FNO train on them through
the same pipeline:

- ``<out>/darcy16.h5``: ``train`` (the first ``1000 - val`` training samples), ``val`` (the last ``val``), ``test``;
- ``<out>/darcy32.h5``: ``test`` only (the 32 x 32 versions of the same test cases), for zero-shot evaluation with
  ``formers-pde predict --ckpt ... <out>/darcy32.h5``.

Usage::

    python -m formers.pde.neuralop_files --src ../shared/data/pde/neuraloperator_small --out data/pde/neuralop
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from formers.pde.solvers.store import write_dataset

__all__ = ["load_pt_pair", "convert", "main"]


def load_pt_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one neuraloperator ``.pt`` file as float32 arrays.

    Raises:
        ValueError: a missing file, a file that a safe load refuses, or one without ``x`` / ``y`` tensors.
    """
    if not path.is_file():
        raise ValueError(
            f"{path}: no such file (the neuraloperator files are in ../shared/data/pde/neuraloperator_small)"
        )
    try:
        stored = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # unpickling errors of every kind: a truncated or foreign file
        raise ValueError(f"{path}: not a tensors-only torch file ({type(err).__name__}: {err})") from err
    if not isinstance(stored, dict) or not all(isinstance(stored.get(k), torch.Tensor) for k in ("x", "y")):
        raise ValueError(f"{path}: expected a dict with tensors 'x' and 'y', got {type(stored).__name__}")
    x, y = stored["x"].float().numpy(), stored["y"].float().numpy()
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"{path}: x {x.shape} and y {y.shape} must both be (N, s, s)")
    return x, y


def convert(src: Path, out: Path, val: int = 100, overwrite: bool = False) -> list[Path]:
    """Write ``darcy16.h5`` and ``darcy32.h5`` under ``out`` (see the module docstring)."""
    train_x, train_y = load_pt_pair(src / "darcy_train_16.pt")
    if not 0 < val < len(train_x):
        raise ValueError(f"val must be in 1..{len(train_x) - 1}, got {val}")
    test16 = load_pt_pair(src / "darcy_test_16.pt")
    test32 = load_pt_pair(src / "darcy_test_32.pt")
    attrs = {
        "equation": "Darcy flow (neuraloperator's small files; coefficient mask -> pressure)",
        "solver": "neuraloperator 2.0 package data (not generated here)",
        "source": str(src),
        "seed": -1,
    }
    split = len(train_x) - val
    first = write_dataset(
        out / "darcy16.h5",
        {
            "train": {"a": train_x[:split], "u": train_y[:split]},
            "val": {"a": train_x[split:], "u": train_y[split:]},
            "test": {"a": test16[0], "u": test16[1]},
        },
        {**attrs, "fine_grid": 16},
        overwrite=overwrite,
    )
    second = write_dataset(
        out / "darcy32.h5", {"test": {"a": test32[0], "u": test32[1]}}, {**attrs, "fine_grid": 32}, overwrite=overwrite
    )
    return [first, second]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m formers.pde.neuralop_files", description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="folder with neuraloperator's darcy_*.pt files")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--val", type=int, default=100, help="training samples held out for validation")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    options = parser.parse_args(argv)
    paths = convert(options.src, options.out, options.val, options.overwrite)
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()

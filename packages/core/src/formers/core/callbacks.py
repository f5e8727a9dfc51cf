"""Lightning callbacks of the formers training spine.

:class:`MetricsJSON` writes the run's final metrics to one JSON file that a DVC stage declares under ``metrics:``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

__all__ = ["MetricsJSON", "flatten_metrics", "nest_metrics", "write_json_atomic"]


class MetricsJSON(Callback):
    """Dump ``trainer.callback_metrics`` as plain floats to a JSON file at the end of fit, validate and test.

    Layout (``nested=True``, the default, the same as ``dvclive/metrics.json``): metric names are split on ``/``, so
    ``train/loss``, ``val/acc`` and ``test/acc`` become::

        {"epoch": 3, "step": 24,
         "train": {"loss": 0.41, "loss_epoch": 0.52, "loss_step": 0.41},
         "val": {"acc": 0.91, "loss": 0.33},
         "test": {"acc": 0.90, "loss": 0.35}}

    With ``nested=False`` the keys stay as logged (``{"val/acc": 0.91, ...}``). ``epoch`` (epochs completed) and
    ``step`` (optimizer steps, ``trainer.global_step``) are written at the end of ``fit``. If two names clash
    (``val`` and ``val/acc``), the file is written flat with a warning rather than not at all.

    ``fit`` starts the file afresh, so stale keys of an earlier run never survive; ``validate`` and ``test`` merge their
    metrics into the existing file, so a later ``test`` run in the same run directory adds ``test/*`` next to the fit
    metrics. Non-finite values are written as ``null`` (JSON has no NaN). Only global rank zero writes, through a
    temporary file and an atomic rename, so a killed run never leaves a truncated file.

    Args:
        path: output file, e.g. ``runs/core/tiny/metrics.json``.
        nested: split metric names on ``/`` into nested objects (``True``) or keep them flat (``False``).
    """

    def __init__(self, path: str | os.PathLike[str] = "metrics.json", nested: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.nested = nested

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        extra = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        self._write(trainer, {**extra, **_to_floats(trainer.callback_metrics)}, merge=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # during fit, on_fit_end writes everything once; a stand-alone `validate` run merges its metrics
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, _to_floats(trainer.callback_metrics), merge=True)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, _to_floats(trainer.callback_metrics), merge=True)

    def _write(self, trainer: pl.Trainer, metrics: dict[str, Any], merge: bool) -> None:
        if not trainer.is_global_zero:
            return
        payload = flatten_metrics(_read_json(self.path)) if merge else {}
        payload.update(metrics)
        if self.nested:
            try:
                payload = nest_metrics(payload)
            except ValueError as err:  # never lose the metrics of a finished run over a naming clash
                rank_zero_warn(f"MetricsJSON writes {self.path} flat: {err}")
        write_json_atomic(self.path, payload)


def _to_floats(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Plain Python floats (``None`` for NaN/inf) of scalar tensors and numbers, sorted by name."""
    out: dict[str, float | None] = {}
    for name in sorted(metrics):
        value = metrics[name]
        value = value.detach().float().item() if isinstance(value, Tensor) else float(value)
        out[name] = value if math.isfinite(value) else None
    return out


def nest_metrics(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """``{"val/acc": 1.0}`` -> ``{"val": {"acc": 1.0}}``.

    Raises:
        ValueError: when one name is a prefix group of another (``"val"`` and ``"val/acc"``).
    """
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(sep)
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"metric {name!r} clashes with metric {part!r}; log one of them under another name")
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"metric {name!r} clashes with the metric group {name + sep}*")
        node[leaf] = value
    return nested


def flatten_metrics(nested: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Inverse of :func:`nest_metrics` (flat input is returned unchanged)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, sep, name))
        else:
            flat[name] = value
    return flat


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open() as f:
        return json.load(f)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

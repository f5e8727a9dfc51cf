"""Loggers whose history continues across a resume without duplicate or stale steps.

A run killed after its last checkpoint has already logged some steps past it; the resumed run logs those steps
again, with other values. Lightning's ``CSVLogger`` deletes ``metrics.csv`` of a non-empty log folder, so after a
resume it holds only the resumed part; ``DVCLiveLogger(resume=True)`` appends to its ``.tsv`` histories, so they hold
the steps after the checkpoint twice.

With ``resume=True`` both loggers here keep their files and, at the first metrics logged by the resumed run (step
``s``), drop every row with a step ``>= s``: what the killed run logged after the checkpoint it resumes from.
Lightning logs the epoch-end metrics of a checkpointed epoch at a step below the checkpoint's, so they stay. The
result is the history of the uninterrupted run, row for row. With ``resume=False`` (a fresh run) they behave as
Lightning's and DVCLive's loggers.

dvclive (which brings dvc) is the training extra (``pip install 'formers-core[train]'``), not a dependency of a model
import: ``ResumableDVCLiveLogger`` (defined in ``formers.core._dvclive_logger``) is imported on first access, and
names the extra when dvclive is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

# ResumableDVCLiveLogger: served by the module __getattr__ below
__all__ = ["ResumableCSVLogger", "ResumableDVCLiveLogger", "truncate_history"]  # noqa: F822


def truncate_history(path: str | os.PathLike[str], first_new_step: int, delimiter: str = ",") -> int:
    """Drop the rows of a CSV/TSV history file whose ``step`` column is ``>= first_new_step``; returns rows dropped.

    The file is rewritten through a temporary file in its folder and ``os.replace``; kept rows are copied as text,
    byte for byte. A file without a ``step`` column is left alone.
    """
    path = Path(path)
    lines = path.read_bytes().decode().splitlines(keepends=True)
    if not lines:
        return 0
    header = next(csv.reader([lines[0]], delimiter=delimiter))
    if "step" not in header:
        return 0
    column = header.index("step")
    kept = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line], delimiter=delimiter), [])
        if len(row) > column and row[column] and int(float(row[column])) >= first_new_step:
            continue
        kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes("".join(kept).encode())
        os.replace(tmp, path)
    return dropped


class _ResumableExperimentWriter(ExperimentWriter):
    """CSV writer that keeps an existing ``metrics.csv`` and truncates it at the first step logged."""

    def __init__(self, log_dir: str, resume: bool) -> None:
        self._resume = resume
        self._truncated = not resume
        super().__init__(log_dir)
        if resume and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:
        if not self._resume:
            super()._check_log_dir_exists()

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if not self._truncated:
            self._truncated = True
            first = len(self.metrics) if step is None else step
            if os.path.isfile(self.metrics_file_path):
                truncate_history(self.metrics_file_path, first)
        super().log_metrics(metrics_dict, step)


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that, with ``resume=True``, continues ``metrics.csv`` instead of deleting it.

    Args:
        resume: keep the existing ``metrics.csv`` and drop its rows from the first step this run logs on.
        *args, **kwargs: as ``CSVLogger`` (``save_dir``, ``name``, ``version`` ...).
    """

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume = resume

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableExperimentWriter(log_dir=self.log_dir, resume=self.resume)
        return self._experiment


def __getattr__(name: str) -> Any:
    # PEP 562, as formers.core.checkpoint_io does for its Lightning plugin: ``formers.core.loggers.
    # ResumableDVCLiveLogger`` (a config's class_path) imports dvclive, the optional training extra, only here
    if name == "ResumableDVCLiveLogger":
        if importlib.util.find_spec("dvclive") is None:
            raise ImportError(
                "formers.core.loggers.ResumableDVCLiveLogger needs dvclive, part of the training extra: "
                "pip install 'formers-core[train]' (or 'formers-<domain>[train]')"
            )
        from formers.core._dvclive_logger import ResumableDVCLiveLogger

        return ResumableDVCLiveLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""Nothing lost, nothing silent: checks at the edges of a run that every domain shares.

* :func:`check_finite`: every ``predict`` path calls it on its outputs; NaN or inf raises :class:`NonFiniteError`
  (a ``ValueError``, which the CLI turns into a non-zero exit) naming what and where.
* :func:`refuse_overwrite`: an output path that is one of the inputs (same file after resolving links, or
  ``os.path.samefile``) raises :class:`OutputOverwriteError` before anything is written.
* :func:`claim_output_dir` / :func:`mark_output_dir`: a generator writes only into a missing or empty folder, or one
  that carries its own marker file (a folder it made before); anything else is refused, never deleted.

No Lightning import here (the CLIs' start-up and the predict paths import this module); the training-time guard,
:class:`formers.core.callbacks.RunDirTransaction`, lives with the other callbacks.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "GENERATOR_MARKER",
    "NonFiniteError",
    "OutputOverwriteError",
    "check_finite",
    "claim_output_dir",
    "mark_output_dir",
    "refuse_overwrite",
]

GENERATOR_MARKER = ".formers-generated"


class NonFiniteError(ValueError):
    """Model outputs (or inputs) with NaN or infinite values."""


class OutputOverwriteError(ValueError):
    """An output path that would overwrite an input or a folder its writer did not create."""


# ------------------------------------------------------------------------------------------------ finite outputs


def check_finite(values: Any, what: str, source: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`NonFiniteError` when ``values`` hold NaN or +-inf.

    Args:
        values: a tensor, numpy array, number, or a (nested) list / tuple / dict of them.
        what: what the values are, e.g. ``"forecast"``, ``"class probabilities"``.
        source: where they come from (input file, checkpoint), named in the message.

    Raises:
        NonFiniteError: e.g. ``"forecast for data/x.csv has 12 non-finite values (NaN: 12, inf: 0), first at index
            (0, 3, 1): the model or its input overflowed; check the input's scale and the checkpoint"``.
    """
    for key, array in _arrays(values, ()):
        finite = np.isfinite(array)
        if finite.all():
            continue
        bad = np.argwhere(~finite)
        nan, count = int(np.isnan(array).sum()), int(bad.shape[0])
        where = f" for {source}" if source is not None else ""
        index = (*key, *(int(i) for i in bad[0]))
        raise NonFiniteError(
            f"{what}{where} has {count} non-finite values (NaN: {nan}, inf: {count - nan}), first at index {index}: "
            "the model or its input overflowed; check the input's scale (values beyond float32, about 3.4e38, "
            "become inf) and that the checkpoint's weights are finite"
        )


def _arrays(values: Any, key: tuple) -> Iterable[tuple[tuple, np.ndarray]]:
    if isinstance(values, torch.Tensor):
        if values.is_floating_point():  # bf16/fp16 as float32: numpy has no bfloat16
            yield key, values.detach().float().cpu().numpy()
    elif isinstance(values, np.ndarray):
        if np.issubdtype(values.dtype, np.inexact):
            yield key, values
    elif isinstance(values, float):
        yield key, np.asarray(values)
    elif isinstance(values, dict):
        for name, value in values.items():
            yield from _arrays(value, (*key, name))
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            yield from _arrays(value, (*key, i))


# --------------------------------------------------------------------------------------------- outputs vs inputs


def refuse_overwrite(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Raise :class:`OutputOverwriteError` when ``out`` is one of ``inputs`` (or a folder holding one of them).

    Paths are compared after resolving links and ``..``; existing files also by ``os.path.samefile`` (hard links,
    bind mounts). ``None`` inputs are skipped.
    """
    out_path = Path(out)
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        if _same_path(out_path, source):
            raise OutputOverwriteError(
                f"output {out_path} is the input {source}: writing it would destroy the input; choose another output"
            )
        if out_path.resolve() in source.resolve().parents:
            raise OutputOverwriteError(f"output {out_path} is a folder that holds the input {source}")


def _same_path(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def claim_output_dir(out: str | os.PathLike[str], generator: str) -> Path:
    """Make ``out`` ready for a generator to (re)write, without ever deleting what someone else put there.

    * missing or empty folder: created, marked (:func:`mark_output_dir`) and returned;
    * a folder with this generator's marker (written by an earlier run): emptied and returned;
    * anything else (a file, a folder of other files, another generator's folder): :class:`OutputOverwriteError`.

    The marker is written before the first file, so an interrupted generation is recognised and redone next time.

    Args:
        out: the output folder.
        generator: the generator's name (e.g. ``"formers.vision.synthetic"``), stored in the marker.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputOverwriteError(f"output {out} exists and is not a folder; {generator} writes a folder")
    if out.is_dir() and any(out.iterdir()):
        if _marker_generator(out) != generator:
            raise OutputOverwriteError(
                f"output folder {out} is not empty and was not made by {generator} (no {GENERATOR_MARKER} marker): "
                "refusing to replace its contents; choose an empty or new folder, or remove it yourself"
            )
        shutil.rmtree(out)
    mark_output_dir(out, generator)
    return out


def mark_output_dir(out: str | os.PathLike[str], generator: str) -> None:
    """Create ``out`` and write the marker that lets ``generator`` replace it later."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / GENERATOR_MARKER).write_text(json.dumps({"generator": generator}) + "\n")


def _marker_generator(out: Path) -> str | None:
    marker = out / GENERATOR_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text()).get("generator")
    except (ValueError, AttributeError):
        return None

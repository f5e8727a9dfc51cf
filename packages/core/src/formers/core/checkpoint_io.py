"""Checkpoint files that survive a kill, and load errors that name the file.

* :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin) writes every checkpoint to a temporary file in
  the checkpoint's own folder, flushes and fsyncs it, renames it over the target (``os.replace``) and fsyncs the
  folder. Lightning 2.6's ``TorchCheckpointIO`` goes through ``fsspec``'s transaction instead, whose local file is a
  ``tempfile.mkstemp()`` in ``$TMPDIR``: when that is another filesystem, the final ``shutil.move`` is a copy, and a
  kill during the copy leaves a truncated ``last.ckpt`` ("failed finding central directory"). Here a kill at any point
  leaves the old or the new file, complete.
* :func:`load_checkpoint_file` loads a training checkpoint with ``weights_only=True`` by default and turns every
  failure (missing, truncated, not a checkpoint, pickled objects) into one :class:`CheckpointError` naming the
  file. :class:`AtomicCheckpointIO` loads through it, so ``--ckpt_path`` errors name the file too. Official
  released checkpoints written by timm's ``CheckpointSaver`` or DeiT-style training scripts (T2T-ViT, CrossViT)
  carry their training metadata (``args``: an ``argparse.Namespace``; epoch, optimizer / scaler state, metric):
  the safe load admits exactly the harmless types of :data:`SAFE_CHECKPOINT_GLOBALS` on top of torch's own
  allow-list; any other pickled global is refused and named, never imported.
* :func:`checkpoint_model_mismatch` says in one sentence which model a checkpoint was trained for when it is not the
  requested one.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "AtomicCheckpointIO",  # noqa: F822 (module __getattr__: defined on first use)
    "CheckpointError",
    "SAFE_CHECKPOINT_GLOBALS",
    "checkpoint_model_mismatch",
    "load_checkpoint_file",
    "save_atomic",
]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PREFIX = b"\x80"  # the legacy format starts with a pickle protocol opcode
# Types a weights-only load may rebuild beyond torch's defaults (tensors, containers, numbers, torch.Size...): plain
# attribute bags with no behaviour on unpickling. argparse.Namespace: the ``args`` of timm's CheckpointSaver and of
# DeiT-style ``main.py`` checkpoints (the official T2T-ViT / CrossViT releases); its optimizer / amp-scaler / metric
# entries are plain containers already.
SAFE_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
_TRUNCATION_MESSAGES = ("failed finding central directory", "failed reading zip archive", "file read failed")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message names the file and the reason."""


def save_atomic(checkpoint: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(checkpoint)`` to ``path`` through a temporary file in the same folder, fsync and ``os.replace``.

    The folder is fsynced after the rename, so after a crash of the machine the directory entry points to the old or
    the new file, never to a partial one. The temporary file is removed when the write fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is as readable as Lightning's
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles: the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint_file(
    path: str | os.PathLike[str], map_location: Any = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """Load a checkpoint file, raising :class:`CheckpointError` with the path for every kind of bad file.

    Args:
        path: the checkpoint file.
        map_location: as ``torch.load``.
        weights_only: ``True`` (default) loads tensors and plain containers only: no pickled code runs.

    Raises:
        CheckpointError: missing file, a folder, an empty or truncated file, a file that is not a PyTorch
            checkpoint, a checkpoint holding pickled objects (with ``weights_only``), or one that is not a dict.
    """
    path = Path(path)
    _check_is_file(path)
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted write? Use an earlier one")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_PREFIX)):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it starts with {head!r}, not a zip archive or a pickle"
        )
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):  # scoped: torch's global list untouched
            checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_unpickling_message(path, err, weights_only)) from err
    except (EOFError, RuntimeError, OSError) as err:
        if _is_truncation(err):
            raise CheckpointError(
                f"checkpoint {path} is truncated ({size_text(path)}; {_first_line(err)}): it was not written to the "
                "end, e.g. a run killed while saving. Resume from an earlier checkpoint"
            ) from err
        raise CheckpointError(f"cannot load checkpoint {path}: {_first_line(err)}") from err
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return dict(checkpoint)


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")


def _is_truncation(err: BaseException) -> bool:
    if isinstance(err, EOFError):
        return True
    if isinstance(err, OSError) and err.errno == errno.EINVAL:  # seek past the end of a short file
        return True
    return any(message in str(err) for message in _TRUNCATION_MESSAGES)


def _unpickling_message(path: Path, err: pickle.UnpicklingError, weights_only: bool) -> str:
    if weights_only:
        refused = _refused_globals(path, err)
        what = f"the global {', '.join(refused)}" if refused else _first_line(err)
        return (
            f"checkpoint {path} holds pickled Python objects ({what}) that a safe load (weights_only=True) refuses: "
            f"only tensors, plain containers and {', '.join(_qualname(t) for t in SAFE_CHECKPOINT_GLOBALS)} are "
            "loaded, no pickled code runs. It was not written by formers or an official training script, or it "
            "stored objects instead of tensors"
        )
    return f"checkpoint {path} is not a readable pickle: {_first_line(err)}"


def _refused_globals(path: Path, err: BaseException) -> list[str]:
    """The globals a safe load refused: listed from the zip archive without unpickling, else from torch's message."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: fall back to the message
        unsafe = []
    allowed = {_qualname(t) for t in SAFE_CHECKPOINT_GLOBALS}
    named = [g for g in unsafe if g not in allowed] or re.findall(r"GLOBAL ([\w.]+)", str(err))
    return list(dict.fromkeys(named))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def size_text(path: Path) -> str:
    """``"1234 bytes"`` (for messages)."""
    return f"{path.stat().st_size} bytes"


def checkpoint_model_mismatch(
    checkpoint: Mapping[str, Any], requested: Mapping[str, Any], path: str | os.PathLike[str], keys: tuple = ("model",)
) -> str | None:
    """One sentence saying what the checkpoint was trained for when its hyper-parameters differ from ``requested``.

    Args:
        checkpoint: the loaded checkpoint (its ``hyper_parameters``, as ``save_hyperparameters`` stores them).
        requested: the hyper-parameters of the model asked for (e.g. the task's ``hparams``).
        path: the checkpoint file (named in the sentence).
        keys: the hyper-parameters that define "the model" (default: the registry name ``model``); a key missing on
            either side is not compared.

    Returns:
        ``None`` when they agree, else e.g. ``"checkpoint runs/a/best.ckpt was trained for model='pit_ti_224' but
        model='swin_tiny_patch4_window7_224' was requested"``.
    """
    stored = checkpoint.get("hyper_parameters") or {}
    differing = [key for key in keys if key in stored and key in requested and stored[key] != requested[key]]
    if not differing:
        return None
    trained = ", ".join(f"{key}={stored[key]!r}" for key in differing)
    wanted = ", ".join(f"{key}={requested[key]!r}" for key in differing)
    return f"checkpoint {path} was trained for {trained} but {wanted} was requested"


def __getattr__(name: str) -> Any:
    # AtomicCheckpointIO subclasses Lightning's TorchCheckpointIO: defined on first use, so that loading weights
    # (and every CLI's start-up) does not import Lightning; configs keep naming it formers.core.checkpoint_io.*
    if name == "AtomicCheckpointIO":
        from formers.core._atomic_checkpoint_io import AtomicCheckpointIO

        return AtomicCheckpointIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

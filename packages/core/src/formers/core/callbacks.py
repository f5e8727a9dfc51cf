"""Lightning callbacks of the formers training spine.

* :class:`MetricsJSON` writes the run's final metrics to one JSON file that a DVC stage declares under ``metrics:``.
* :class:`CheckpointAfterLogs` makes a checkpoint appear only once the steps it covers are logged, so a run killed
  between Lightning's epoch-end save and the epoch's log lines resumes from the checkpoint before and logs them.
* :class:`RNGStateCheckpoint` stores the random-number states (torch, CUDA, numpy, Python) in every checkpoint and
  restores them on resume, so a resumed run draws the same shuffles and dropout masks as an uninterrupted one.
* :class:`NonFiniteGuard` stops training with :class:`NonFiniteLossError` naming the step and the likely cause as
  soon as the training loss is NaN/inf, and before a non-finite validation metric can become ``best.ckpt``.
* :class:`LineProgressBar` prints one line per epoch (and one per ``validate`` / ``test`` run) where a TQDM bar would
  fill a log with carriage returns; :func:`default_progress_bar` picks it when the output is not a terminal.
* :class:`RunDirTransaction` keeps the previous run's logs (``config.yaml``, ``metrics.csv``, ``dvclive/`` ...) until
  the new run has validated its config and started training, and puts them back when the new run fails before that.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor

from formers.core.machine import machine_report

__all__ = [
    "CheckpointAfterLogs",
    "LineProgressBar",
    "MachineInfo",
    "MetricsJSON",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "RNGStateCheckpoint",
    "RunDirTransaction",
    "default_progress_bar",
    "flatten_metrics",
    "nest_metrics",
    "summary_metrics",
    "write_json_atomic",
]


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


# ------------------------------------------------------------------------------------------------------ exact resume


class RNGStateCheckpoint(Callback):
    """Save the random-number states in every checkpoint and restore them when a run resumes from it.

    Stored (as tensors and plain numbers, so a ``weights_only=True`` load reads them): torch's CPU generator, every
    CUDA device's generator when CUDA is initialised, numpy's global ``RandomState`` and Python's ``random``.

    They are restored as the checkpoint is loaded (``load_state_dict``). On resume Lightning runs no sanity check and
    nothing else draws random numbers before the training loader's first ``iter()``, so the epoch after an
    end-of-epoch ``last.ckpt`` gets the shuffle (``RandomSampler`` seeds itself from the torch generator) and dropout
    masks of the uninterrupted run. A mid-epoch checkpoint of a loader without ``state_dict`` (Lightning restarts its
    epoch from a fresh iterator) cannot resume exactly: the callback warns. formers writes checkpoints at epoch ends
    only, so a run killed anywhere resumes exactly from its last complete epoch.

    Under DDP, global rank zero's states are saved and every rank restores them (ranks seeded alike by
    ``seed_everything`` start alike; rank-specific streams are not preserved).
    """

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        version, python_state, gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "python": {"version": version, "state": list(python_state), "gauss": gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        np_state = state_dict["numpy"]
        np.random.set_state(
            (
                "MT19937",
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
        python_state = state_dict["python"]
        random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
        cuda_states = state_dict.get("cuda")
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.fit_loop.epoch_loop.restarting or trainer.num_training_batches in (0, float("inf")):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.current.completed % trainer.num_training_batches:
            rank_zero_warn(
                "resumed from a mid-epoch checkpoint of a training loader without state_dict(): this epoch's batches "
                "differ from the uninterrupted run's (resume from an end-of-epoch checkpoint for an exact resume)"
            )


class CheckpointAfterLogs(Callback):
    """Publish each checkpoint only once everything logged up to its step is written.

    Lightning saves the epoch-end checkpoint in ``on_train_epoch_end`` and logs the epoch's training metrics after
    it (``_FitLoop.on_advance_end``); a checkpoint saved at validation end comes before the validation metrics are
    logged. A run killed in between left a ``last.ckpt`` whose resume starts after that epoch, so the epoch's rows
    were missing from ``metrics.csv`` and the DVCLive history for good.

    During ``fit`` the trainer's :class:`~formers.core.checkpoint_io.AtomicCheckpointIO` holds every checkpoint as a
    complete ``.<name>.pending`` file, and this callback publishes it at the next training batch or epoch start (or
    at the end of training), when Lightning has logged the step. A kill before that leaves the previous checkpoint
    in place: the resumed run repeats the epoch and logs it. A failed run publishes nothing held. With another
    ``CheckpointIO`` the callback does nothing.
    """

    _held: Any = None  # the trainer's AtomicCheckpointIO while fit holds its writes

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from formers.core.checkpoint_io import AtomicCheckpointIO  # the Lightning plugin, defined on first use

        io = getattr(trainer.strategy, "checkpoint_io", None)
        if stage == TrainerFn.FITTING and isinstance(io, AtomicCheckpointIO):
            self._held = io
            io.hold()

    def _publish(self) -> None:
        if self._held is not None:
            self._held.publish()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._publish()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._publish()

    def _release(self, publish: bool) -> None:
        if self._held is not None:
            self._held.release(publish)
            self._held = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._release(publish=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # after on_train_end, where ModelCheckpoint may still save (save_last): everything is logged by now
        if stage == TrainerFn.FITTING:
            self._release(publish=True)


# ------------------------------------------------------------------------------------------------- non-finite guard


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or validation metric; the message names the step and the likely cause."""


class NonFiniteGuard(Callback):
    """Stop training as soon as the training loss is not finite, and before a non-finite metric becomes best.ckpt.

    * The loss is checked before its backward pass (``on_before_backward``), so the weights are still the last finite
      ones when :class:`NonFiniteLossError` is raised. The message names the global step, epoch and batch and the
      likely causes: the batch's own values (NaN/inf, or a largest magnitude far above a standardized scale), the
      learning rate, the precision.
    * After every validation (sanity check included), the metrics monitored by the run's ``ModelCheckpoint``
      callbacks are checked; a NaN/inf one raises before any checkpoint of that epoch is written (Lightning runs
      checkpoint callbacks last), so it never becomes ``best.ckpt``.

    Args:
        unscaled_threshold: a batch whose largest absolute input exceeds this is reported as unscaled.
    """

    def __init__(self, unscaled_threshold: float = 1e6) -> None:
        self.unscaled_threshold = unscaled_threshold
        self._batch: Any = None
        self._batch_idx = -1

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch = None  # do not keep the batch alive between steps

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        value = loss.detach()
        if bool(torch.isfinite(value).all()):
            return
        raise NonFiniteLossError(
            f"training loss is {_describe(value)} at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {self._batch_idx}); training stopped before this step's update. Likely cause: "
            f"{self._likely_causes(trainer)}"
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        monitors = sorted(
            {cb.monitor for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)} - {None}
        )
        for name in monitors:
            value = trainer.callback_metrics.get(name)
            if value is None or bool(torch.isfinite(torch.as_tensor(value)).all()):
                continue
            when = (
                "in the sanity check before training"
                if trainer.sanity_checking
                else (f"after epoch {trainer.current_epoch} (global step {trainer.global_step})")
            )
            raise NonFiniteLossError(
                f"validation metric {name!r} is {_describe(torch.as_tensor(value))} {when}; stopped so that it never "
                f"becomes the best checkpoint. Likely cause: {self._likely_causes(trainer, validation=True)}"
            )

    def _likely_causes(self, trainer: pl.Trainer, validation: bool = False) -> str:
        causes = []
        peak = None if validation else _largest_magnitude(self._batch)
        if peak is not None and not math.isfinite(peak):
            causes.append("the input batch itself holds NaN/inf values")
        elif peak is not None and peak > self.unscaled_threshold:
            causes.append(f"unscaled inputs (the batch's largest |value| is {peak:.3g}; standardize or rescale them)")
        elif validation:
            causes.append("unscaled or non-finite values in the validation data")
        if trainer.optimizers:
            causes.append(f"a learning rate too high (lr={trainer.optimizers[0].param_groups[0]['lr']:g})")
        precision = str(trainer.precision)
        if precision.startswith(("16", "bf16")):
            causes.append(f"overflow in low precision (precision={precision}; try 32-true)")
        else:
            causes.append("an overflow in the model (values beyond float32's 3.4e38)")
        return "; or ".join(causes)


def _describe(value: Tensor) -> str:
    value = value.float()
    return "NaN" if bool(torch.isnan(value).any()) else "inf" if bool((value > 0).any()) else "-inf"


def _largest_magnitude(batch: Any) -> float | None:
    """The largest absolute value over the floating-point tensors of a (nested) batch; ``None`` when it has none."""
    if isinstance(batch, Tensor):
        return float(batch.detach().abs().max().float()) if batch.is_floating_point() and batch.numel() else None
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    peaks = [peak for peak in map(_largest_magnitude, items) if peak is not None]
    if not peaks:
        return None
    return float("nan") if any(math.isnan(p) for p in peaks) else max(peaks)


# ------------------------------------------------------------------------------------------------------ machine info


class MachineInfo(Callback):
    """Write :func:`formers.core.machine.machine_report` to ``<run_dir>/machine.json`` when training or test starts.

    Results are byte-identical only on the same CPU kind and thread count, so every run records which it had. A file
    of its own, not a key of ``metrics.json``: metrics stay comparable across machines (``dvc metrics diff`` shows no
    machine noise). The file goes to the subcommand's log folder (``trainer.log_dir``): ``<run_dir>/machine.json`` for
    ``fit``, ``<run_dir>/test/machine.json`` for ``test``, so a run tested elsewhere says so. Rank zero writes it,
    atomically, once the run has started (after :class:`RunDirTransaction` commits, so a run
    that fails to start leaves the previous record).

    The record also holds the run's precision, ``{"precision": {"requested": "auto", "resolved": "32-true"}}``: what
    the config asked for (``FormersTrainer.requested_precision``; the resolved one for a plain Trainer) and what ran.

    Args:
        path: output file; ``None``: ``machine.json`` in ``trainer.log_dir``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.path = None if path is None else Path(path)

    def _write(self, trainer: pl.Trainer) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, or rank zero waits forever
        if trainer.is_global_zero:
            report = {**machine_report(), "precision": run_precision(trainer)}
            write_json_atomic(self.path or Path(log_dir or trainer.default_root_dir) / "machine.json", report)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)


def run_precision(trainer: pl.Trainer) -> dict[str, Any]:
    """What precision the config asked for and what runs (:class:`formers.core.cli.FormersTrainer` resolves
    ``"auto"``)."""
    resolved = trainer.precision
    return {"requested": getattr(trainer, "requested_precision", resolved), "resolved": resolved}


# ---------------------------------------------------------------------------------------------------- progress bars


class LineProgressBar(ProgressBar):
    """Progress for logs: one line per training epoch, and one per ``validate`` / ``test`` run, on standard output.

    A TQDM or rich bar redraws itself with carriage returns, which a DVC stage log or a CI log shows as one endless
    line (or nothing until the run ends). This bar prints, after each epoch's validation::

        epoch 3/20  step 150  train/loss 0.412  val/loss 0.398  val/mse 0.39  12.3 s

    (the epoch's metrics as logged, ``_epoch`` suffixes dropped and per-step values left out), and at the end of
    ``validate`` / ``test`` one line of that run's metrics. Only global rank zero prints.

    Args:
        max_metrics: metrics per line (the rest are counted as ``+N more``); the full set is in the run's logs.
        stream: where the lines go (default: standard output at the time of printing).
    """

    def __init__(self, max_metrics: int = 8, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.max_metrics = max_metrics
        self.stream = stream
        self._enabled = True
        self._start = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, file=self.stream or sys.stdout, flush=True, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # during fit, validation is part of the epoch's time
            self._start = time.perf_counter()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self._line(trainer, f"epoch {trainer.current_epoch + 1}{epochs}  step {trainer.global_step}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # during fit, the epoch line reports validation
            self._line(trainer, "validate", prefix="val/")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line(trainer, "test", prefix="test/")

    def _line(self, trainer: pl.Trainer, head: str, prefix: str | None = None) -> None:
        metrics = summary_metrics(trainer.callback_metrics, prefix)
        shown = [f"{name} {value:.4g}" for name, value in list(metrics.items())[: self.max_metrics]]
        if len(metrics) > self.max_metrics:
            shown.append(f"+{len(metrics) - self.max_metrics} more")
        self.print("  ".join([head, *shown, f"{time.perf_counter() - self._start:.1f} s"]))


def summary_metrics(metrics: Mapping[str, Any], prefix: str | None = None) -> dict[str, float]:
    """Scalar epoch metrics by display name (``train/loss_epoch`` -> ``train/loss``; ``*_step`` values dropped), in
    the order train, val, others, then the first learning rate as ``lr`` (LearningRateMonitor's ``lr-AdamW/...``);
    with ``prefix`` only the names that start with it."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if name.endswith("_step") or (prefix and not name.startswith(prefix)):
            continue
        if isinstance(value, Tensor) and value.numel() != 1:
            continue
        name = "lr" if name.startswith("lr-") else name.removesuffix("_epoch")
        out.setdefault(name, float(value))
    order = {"train/": 0, "val/": 1, "lr": 3}
    return dict(sorted(out.items(), key=lambda item: next((v for k, v in order.items() if item[0].startswith(k)), 2)))


def default_progress_bar(stream: IO[str] | None = None) -> ProgressBar | None:
    """The progress bar a run gets unless its config chooses one: ``None`` (Lightning's own bar: rich when installed,
    else TQDM) when ``stream`` (default: standard output, where that bar draws) is a terminal, a
    :class:`LineProgressBar` otherwise."""
    stream = stream or sys.stdout
    is_terminal = getattr(stream, "isatty", None)
    return None if callable(is_terminal) and is_terminal() else LineProgressBar()


# ------------------------------------------------------------------------------------------- transactional runs

RUN_LOGS = ("config.yaml", "hparams.yaml", "metrics.csv", "metrics.json", "dvclive")
STAGING = ".formers-previous"


class RunDirTransaction(Callback):
    """Keep the previous run's logs until the new run starts training; restore them if it fails before.

    :meth:`begin` copies the entries of ``names`` that exist in ``directory`` to ``directory/.formers-previous``.
    Training start (``on_train_start``, after the config, the data, the model's ``setup`` and the sanity check passed)
    commits: the copy is dropped. An exception before that (``on_exception``) rolls back: the new versions of
    ``names`` are removed, the copies put back, and the failed run's loggers detached so that Lightning's
    ``finalize("failed")`` writes nothing more. A run killed in that window leaves the copy behind; the next
    :meth:`begin` rolls it back first. Checkpoints are not touched: nothing writes them before training.

    ``validate``/``test``/``predict`` commit at their loop start (``on_{validation,test,predict}_start``).
    Only global rank zero touches files.

    Args:
        directory: the log folder of the run (``${log_dir}``: the run dir for ``fit``).
        names: the entries of ``directory`` to protect.
    """

    def __init__(self, directory: str | os.PathLike[str], names: Sequence[str] = RUN_LOGS) -> None:
        self.directory = Path(directory)
        self.names = tuple(names)
        self.staging = self.directory / STAGING
        self.open = False

    @rank_zero_only
    def begin(self) -> None:
        """Stage copies of the existing logs (call it before the Trainer's loggers first touch ``directory``)."""
        if self.staging.exists():  # an earlier attempt died before committing: its staged files are the truth
            self._restore()
        present = [name for name in self.names if (self.directory / name).exists()]
        if present:
            self.staging.mkdir(parents=True)
            for name in present:
                _copy(self.directory / name, self.staging / name)
            (self.staging / "manifest.json").write_text(json.dumps({"present": present}) + "\n")
        self.open = True

    @rank_zero_only
    def commit(self) -> None:
        """The new run has started: the previous logs are no longer needed."""
        if self.open:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.open = False

    @rank_zero_only
    def rollback(self) -> None:
        """Remove what the failed run wrote under ``names`` and put the previous files back."""
        if self.open:
            self._restore()
            self.open = False

    def _restore(self) -> None:
        manifest = self.staging / "manifest.json"
        present = json.loads(manifest.read_text())["present"] if manifest.is_file() else []
        for name in self.names:
            _remove(self.directory / name)
        for name in present:
            os.replace(self.staging / name, self.directory / name)
        shutil.rmtree(self.staging, ignore_errors=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.commit()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:  # fit's sanity check comes before training start
            self.commit()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.commit()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.commit()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self.open:
            return
        self.rollback()
        # Lightning finalizes the loggers after this hook; the failed run's loggers must not write into the restored
        # folder (DVCLive would replace metrics.json by an empty summary)
        trainer.loggers = []


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

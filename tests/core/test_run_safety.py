"""Run safety: atomic checkpoints, load errors that name the file, exact resume, non-finite guards, outputs that never
overwrite inputs, and run directories that keep the previous run until the new one starts training.

Most tests build tiny Trainers in-process; the exact-resume test runs ``pipelines/core/tiny.yaml`` through
``FormersCLI`` three times (an uninterrupted run, a run killed mid-epoch, its resume).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from formers.core.callbacks import NonFiniteGuard, NonFiniteLossError, RNGStateCheckpoint, RunDirTransaction
from formers.core.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    checkpoint_model_mismatch,
    load_checkpoint_file,
)
from formers.core.loggers import ResumableCSVLogger, ResumableDVCLiveLogger, truncate_history
from formers.core.runsafety import (
    GENERATOR_MARKER,
    NonFiniteError,
    OutputOverwriteError,
    check_finite,
    claim_output_dir,
    refuse_overwrite,
)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "core" / "tiny.yaml"


# -------------------------------------------------------------------------------------------------------- helpers


class TinyRegressor(LightningModule):
    """``y = w x``: one linear layer, MSE, logs ``train/loss`` and ``val/loss``."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loader(scale: float = 1.0, n: int = 32, shuffle: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen)
    x[:, 2] *= scale  # the "unscaled column"
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8, shuffle=shuffle)


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    defaults = {
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
        "max_epochs": 2,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return Trainer(**{**defaults, **kwargs})


def _best_and_last(dirpath: Path) -> list[ModelCheckpoint]:
    fixed = {"dirpath": dirpath, "save_top_k": 1, "enable_version_counter": False}
    return [ModelCheckpoint(filename="best", monitor="val/loss", **fixed), ModelCheckpoint(filename="last", **fixed)]


# --------------------------------------------------------------------------------------------- atomic checkpoints


def _kill_during_cross_device_copy(monkeypatch) -> None:
    """``$TMPDIR`` on another filesystem (rename fails with EXDEV) and the process dies halfway through the copy."""
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if str(dst).endswith(".ckpt"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    def copy_half_then_die(src, dst, *args, **kwargs):
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt("killed during the copy")

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copy_half_then_die)


def _save_twice_killed_in_the_second(io, path: Path, monkeypatch) -> None:
    io.save_checkpoint({"epoch": 1, "weights": torch.arange(10_000.0)}, path)
    _kill_during_cross_device_copy(monkeypatch)
    try:
        io.save_checkpoint({"epoch": 2, "weights": torch.arange(10_000.0) * 2}, path)
    except KeyboardInterrupt:  # the kill, when the writer copies
        pass
    monkeypatch.undo()


def test_the_injected_kill_truncates_lightnings_checkpoint(tmp_path, monkeypatch):
    """The fault is real: Lightning 2.6 writes to $TMPDIR and copies, so a kill mid-copy truncates last.ckpt."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    _save_twice_killed_in_the_second(TorchCheckpointIO(), path, monkeypatch)
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint_file(path)


def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    _save_twice_killed_in_the_second(io, path, monkeypatch)
    assert load_checkpoint_file(path)["epoch"] == 2  # it never copies: the rename stays in its folder
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_atomic_checkpoint_io_writes_next_to_the_target_and_fsyncs(tmp_path, monkeypatch):
    other_tmp = tmp_path / "tmpdir"
    other_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(other_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst))
    )
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert [(src.parent, dst) for src, dst in replaced] == [(path.parent, path)]
    assert len(synced) == 2  # the file, then its folder
    assert not any(other_tmp.iterdir())
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert torch.equal(load_checkpoint_file(path)["state_dict"]["w"], torch.ones(2))


def test_trainer_with_atomic_checkpoint_io_saves_and_resumes(tmp_path):
    trainer = _trainer(tmp_path, max_epochs=1, plugins=[AtomicCheckpointIO()], callbacks=_best_and_last(tmp_path))
    trainer.fit(TinyRegressor(), _loader(), _loader())
    last = tmp_path / "last.ckpt"
    assert load_checkpoint_file(last)["epoch"] == 0
    resumed = _trainer(tmp_path, max_epochs=2, plugins=[AtomicCheckpointIO()], callbacks=_best_and_last(tmp_path))
    resumed.fit(TinyRegressor(), _loader(), _loader(), ckpt_path=last)
    assert load_checkpoint_file(last)["epoch"] == 1


# -------------------------------------------------------------------------------------------------- load errors


def _bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, good)
    data = good.read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "truncated"),
        "empty": (b"", "empty"),
        "text": (b"hello, this is not a checkpoint\n", "not a PyTorch checkpoint"),
        "pickled": (pickle.dumps(Path("x")), "pickled Python objects"),
    }
    out = {}
    for name, (blob, message) in files.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(blob)
        out[name] = (path, message)
    out["missing"] = (tmp_path / "missing.ckpt", "not found")
    out["folder"] = (tmp_path, "is a folder")
    return out


@pytest.mark.parametrize("case", ["truncated", "empty", "text", "pickled", "missing", "folder"])
def test_every_bad_checkpoint_is_one_error_naming_the_file(case, tmp_path):
    path, message = _bad_checkpoints(tmp_path)[case]
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)


def test_resume_from_a_truncated_checkpoint_names_the_file(tmp_path):
    path, _ = _bad_checkpoints(tmp_path)["truncated"]
    trainer = _trainer(tmp_path, plugins=[AtomicCheckpointIO()])
    with pytest.raises(CheckpointError, match="truncated") as info:
        trainer.fit(TinyRegressor(), _loader(), _loader(), ckpt_path=path)
    assert str(path) in str(info.value)


def test_checkpoint_model_mismatch_is_one_sentence():
    checkpoint = {"hyper_parameters": {"model": "pit_ti", "model_kwargs": {}}}
    assert checkpoint_model_mismatch(checkpoint, {"model": "pit_ti"}, "a.ckpt") is None
    message = checkpoint_model_mismatch(checkpoint, {"model": "swin_t"}, "runs/a/best.ckpt")
    assert message == "checkpoint runs/a/best.ckpt was trained for model='pit_ti' but model='swin_t' was requested"
    assert checkpoint_model_mismatch({}, {"model": "swin_t"}, "a.ckpt") is None  # nothing stored: nothing to compare


# ------------------------------------------------------------------------------------------------- exact resume


class KillAtStep(Callback):
    """Stand-in for a SIGKILL: raise once ``global_step`` reaches ``step`` (after the step's logging)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"killed at step {trainer.global_step}")


class KillBeforeEpochLog(Callback):
    """Stand-in for a SIGKILL between Lightning's epoch-end checkpoint and the log line of the epoch's training
    metrics (``_FitLoop.on_advance_end`` saves, then logs): raise as epoch ``epoch``'s metrics are about to be
    logged."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_start(self, trainer, pl_module) -> None:
        connector = trainer._logger_connector
        log_epoch_metrics = connector.update_train_epoch_metrics

        def killed() -> None:
            if trainer.current_epoch == self.epoch:
                raise RuntimeError(f"killed before epoch {self.epoch}'s metrics were logged")
            log_epoch_metrics()

        connector.update_train_epoch_metrics = killed


def _fit(tmp_path: Path, run_dir: Path, epochs: int, *extra: str, callbacks=()) -> None:
    """A tiny ``formers-core fit`` with the CLI's defaults: resumable loggers, atomic checkpoints, RNG states."""
    from formers.core.cli import FormersCLI

    args = ["fit", "--config", str(TINY), "--run_dir", str(run_dir), f"--trainer.max_epochs={epochs}", *extra]
    FormersCLI(args=args, trainer_defaults={"callbacks": list(callbacks)})


def _histories(run_dir: Path) -> dict[str, bytes]:
    files = [run_dir / "metrics.json", run_dir / "metrics.csv", *sorted((run_dir / "dvclive").rglob("*"))]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files if p.is_file()}


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["formers-core"])
    monkeypatch.chdir(tmp_path)
    steps_per_epoch, epochs = 16, 3
    _fit(tmp_path, tmp_path / "whole", epochs)

    killed = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed at step"):  # mid-epoch 2, after logging steps past last.ckpt
        _fit(tmp_path, killed, epochs, callbacks=[KillAtStep(steps_per_epoch + 6)])
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps_per_epoch
    _fit(tmp_path, killed, epochs, "--ckpt_path=last")

    whole, resumed = _histories(tmp_path / "whole"), _histories(killed)
    assert "dvclive/plots/metrics/val/loss.tsv" in whole and "metrics.csv" in whole
    assert resumed.keys() == whole.keys()
    for name in whole:
        assert resumed[name] == whole[name], f"{name} differs after kill + resume"


@pytest.mark.slow
def test_killed_after_the_epoch_checkpoint_before_its_log_resumes_with_every_row(tmp_path, monkeypatch):
    """The window the random SIGKILL test found: epoch 1's checkpoint written, its training metrics not yet logged.
    The checkpoint is not published, so the resume repeats epoch 1 and the history has all its rows."""
    monkeypatch.setattr(sys, "argv", ["formers-core"])
    monkeypatch.chdir(tmp_path)
    steps_per_epoch, epochs = 16, 3
    _fit(tmp_path, tmp_path / "whole", epochs)

    killed = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed before epoch 1"):
        _fit(tmp_path, killed, epochs, callbacks=[KillBeforeEpochLog(1)])
    checkpoints = killed / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == steps_per_epoch
    assert not list(checkpoints.glob(".*")), "a failed run leaves no held checkpoint behind"
    _fit(tmp_path, killed, epochs, "--ckpt_path=last")

    whole, resumed = _histories(tmp_path / "whole"), _histories(killed)
    assert resumed.keys() == whole.keys()
    for name in whole:
        assert resumed[name] == whole[name], f"{name} differs after kill + resume"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_held_checkpoints_appear_only_when_published(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 0}, tmp_path / "last.ckpt")
    io.save_checkpoint({"step": 0}, tmp_path / "epoch=0.ckpt")
    io.hold()
    io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    io.save_checkpoint({"step": 1}, tmp_path / "epoch=1.ckpt")
    io.remove_checkpoint(tmp_path / "epoch=0.ckpt")  # top-k: the older file goes once its replacement is in place
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 0}
    assert (tmp_path / "epoch=0.ckpt").exists() and not (tmp_path / "epoch=1.ckpt").exists()
    io.publish()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=1.ckpt", "last.ckpt"]

    io.save_checkpoint({"step": 2}, tmp_path / "last.ckpt")
    io.save_checkpoint({"step": 2}, tmp_path / "epoch=2.ckpt")
    io.remove_checkpoint(tmp_path / "epoch=2.ckpt")  # saved and dropped before publishing: never appears
    io.remove_checkpoint(tmp_path / "epoch=1.ckpt")
    io.release(publish=False)  # a failed run: what is in place stays
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=1.ckpt", "last.ckpt"]
    io.save_checkpoint({"step": 3}, tmp_path / "last.ckpt")  # released: written in place again
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 3}


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    callback = RNGStateCheckpoint()
    torch.manual_seed(1), np.random.seed(1)
    import random

    random.seed(1)
    torch.save(callback.state_dict(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    callback.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_resumed_shuffle_matches_the_uninterrupted_one(tmp_path):
    """The epoch after an end-of-epoch checkpoint draws the same permutation as in the uninterrupted run."""

    class RecordBatches(Callback):
        def __init__(self):
            self.batches = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batches.append((trainer.current_epoch, batch[0][:, 0].tolist()))

    def run(max_epochs: int, ckpt_path=None) -> list:
        torch.manual_seed(0)
        recorder = RecordBatches()
        callbacks = [RNGStateCheckpoint(), recorder, ModelCheckpoint(dirpath=tmp_path / "ck", filename="last")]
        trainer = _trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, num_sanity_val_steps=2)
        trainer.fit(TinyRegressor(), _loader(shuffle=True), _loader(), ckpt_path=ckpt_path)
        return recorder.batches

    whole = run(3)
    shutil.rmtree(tmp_path / "ck")
    run(1)
    resumed = run(3, ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert resumed == [batch for batch in whole if batch[0] >= 1]


def test_truncate_history_drops_rows_from_the_first_new_step(tmp_path):
    path = tmp_path / "loss.tsv"
    path.write_text("step\tloss\n3\t0.5\n15\t0.25\n15\t0.2\n19\t0.1\n23\t0.05\n")
    assert truncate_history(path, 16, delimiter="\t") == 2
    assert path.read_text() == "step\tloss\n3\t0.5\n15\t0.25\n15\t0.2\n"


def test_resumable_loggers_continue_without_duplicate_steps(tmp_path):
    def log(resume: bool, steps: range, offset: float) -> None:
        csv_logger = ResumableCSVLogger(tmp_path, name="", version="", resume=resume)
        dvc_logger = ResumableDVCLiveLogger(dir=str(tmp_path / "dvclive"), dvcyaml=None, report=None, resume=resume)
        for step in steps:
            for logger in (csv_logger, dvc_logger):
                logger.log_metrics({"train/loss": step + offset}, step=step)
        csv_logger.save()
        dvc_logger.finalize("success")

    log(False, range(1, 8), 0.0)  # a killed run got to step 7; its checkpoint is at step 4
    log(True, range(4, 10), 0.5)  # the resumed run logs steps 4..9 again
    dvc_rows = (tmp_path / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    assert [row.split("\t")[0] for row in dvc_rows] == [str(s) for s in range(1, 10)]
    csv_rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_rows[0] == "step,train/loss" and [r.split(",")[0] for r in csv_rows[1:]] == [
        str(s) for s in range(1, 10)
    ]
    assert csv_rows[4] == "4,4.5"


# ------------------------------------------------------------------------------------------------- non-finite


def test_a_non_finite_training_loss_stops_with_the_step_and_the_cause(tmp_path):
    callbacks = [NonFiniteGuard(), *_best_and_last(tmp_path / "ck")]
    trainer = _trainer(tmp_path, callbacks=callbacks)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(TinyRegressor(), _loader(scale=1e30), _loader())  # an unscaled column near 1e30
    message = str(info.value)
    assert "training loss is inf at global step 0 (epoch 0, batch 0)" in message
    assert "unscaled inputs" in message and "e+30" in message and "lr=0.01" in message
    assert not (tmp_path / "ck" / "best.ckpt").exists()


def test_a_non_finite_validation_metric_never_becomes_best(tmp_path):
    callbacks = [NonFiniteGuard(), *_best_and_last(tmp_path / "ck")]
    trainer = _trainer(tmp_path, callbacks=callbacks, num_sanity_val_steps=0)
    with pytest.raises(NonFiniteLossError, match="validation metric 'val/loss' is inf after epoch 0"):
        trainer.fit(TinyRegressor(), _loader(), _loader(scale=1e30))
    assert not (tmp_path / "ck" / "best.ckpt").exists()


def test_check_finite_names_what_and_where():
    check_finite({"forecast": torch.ones(2, 3), "ids": torch.arange(3)}, "forecast")
    bad = torch.ones(2, 3, 2)
    bad[1, 2, 0] = float("nan")
    bad[1, 2, 1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"forecast for data/x.csv has 2 non-finite values \(NaN: 1, inf: 1\)"):
        check_finite(bad, "forecast", "data/x.csv")
    with pytest.raises(NonFiniteError, match=r"first at index \('y', 1\)"):
        check_finite({"y": np.array([0.0, -np.inf])}, "predictions")
    with pytest.raises(NonFiniteError):
        check_finite(torch.tensor([float("nan")], dtype=torch.bfloat16), "logits")


# -------------------------------------------------------------------------------------- outputs vs inputs


def test_refuse_overwrite_recognises_the_same_file(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("date,OT\n")
    refuse_overwrite(tmp_path / "forecast.csv", [data, None])
    for out in (data, tmp_path / "sub" / ".." / "data.csv", tmp_path):
        with pytest.raises(OutputOverwriteError):
            refuse_overwrite(out, [data])
    os.link(data, tmp_path / "hard.csv")
    with pytest.raises(OutputOverwriteError, match="is the input"):
        refuse_overwrite(tmp_path / "hard.csv", [data])


def test_claim_output_dir_never_deletes_what_it_did_not_make(tmp_path):
    mine = claim_output_dir(tmp_path / "new", "gen")
    assert (mine / GENERATOR_MARKER).is_file()
    (mine / "old.png").write_bytes(b"x")
    assert not (claim_output_dir(mine, "gen") / "old.png").exists()  # its own folder is replaced
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputOverwriteError, match="not empty and was not made by gen"):
        claim_output_dir(user, "gen")
    with pytest.raises(OutputOverwriteError):
        claim_output_dir(mine, "other-gen")
    assert (user / "holiday.jpg").read_bytes() == b"precious"


# -------------------------------------------------------------------------------------- transactional run dir


class FailsInSetup(TinyRegressor):
    """A config error found before training (like a head/num_classes mismatch found in ``setup``)."""

    def setup(self, stage: str) -> None:
        raise ValueError("model num_classes (4) does not match the data (5)")


def _logged_fit(run_dir: Path, model: LightningModule, transaction: RunDirTransaction) -> None:
    from dvclive.lightning import DVCLiveLogger

    loggers = [
        CSVLogger(run_dir, name="", version=""),
        DVCLiveLogger(dir=str(run_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, report=None),
    ]
    trainer = _trainer(run_dir, logger=loggers, callbacks=[transaction], log_every_n_steps=1)
    transaction.begin()  # what FormersCLI does before fit
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"model: {type(model).__name__}\n")  # as SaveConfigCallback.setup would
    trainer.fit(model, _loader(), _loader())


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and "checkpoints" not in p.parts
    }


def test_a_fit_failing_before_training_keeps_the_previous_run(tmp_path):
    run_dir = tmp_path / "run"
    _logged_fit(run_dir, TinyRegressor(), RunDirTransaction(run_dir))
    before = _snapshot(run_dir)
    assert {"metrics.csv", "config.yaml", "hparams.yaml", "dvclive/metrics.json"} <= before.keys()
    with pytest.raises(ValueError, match="does not match the data"):
        _logged_fit(run_dir, FailsInSetup(), RunDirTransaction(run_dir))
    assert _snapshot(run_dir) == before


def test_a_run_killed_before_training_is_rolled_back_by_the_next_begin(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step,loss\n0,1.0\n")
    RunDirTransaction(run_dir).begin()
    (run_dir / "metrics.csv").unlink()  # what a new CSVLogger does, then the process is killed
    (run_dir / "config.yaml").write_text("the failed run's config\n")
    transaction = RunDirTransaction(run_dir)
    transaction.begin()
    assert (run_dir / "metrics.csv").read_text() == "step,loss\n0,1.0\n"
    assert not (run_dir / "config.yaml").exists()
    transaction.commit()
    assert not (run_dir / ".formers-previous").exists()


def test_a_started_run_commits(tmp_path):
    run_dir = tmp_path / "run"
    _logged_fit(run_dir, TinyRegressor(), RunDirTransaction(run_dir))
    transaction = RunDirTransaction(run_dir)
    _logged_fit(run_dir, TinyRegressor(lr=0.02), transaction)
    assert not transaction.open and not (run_dir / ".formers-previous").exists()
    assert json.loads((run_dir / "dvclive" / "metrics.json").read_text())["step"] > 0


# ------------------------------------------------------------------------------- fault injection with real SIGKILLs


def _fit_process(run_dir: Path, epochs: int, *extra: str) -> list[str]:
    script = Path(sys.executable).with_name("formers-core")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "formers.core.main"]
    return [*command, "fit", "--config", str(TINY), "--run_dir", str(run_dir), f"--trainer.max_epochs={epochs}", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_sigkill_at_random_points_then_resume_equals_the_uninterrupted_run(tmp_path, seed):
    """A real ``formers-core fit`` killed with SIGKILL at a random moment (inside a step, while a checkpoint is being
    written, with ``$TMPDIR`` on another filesystem than the run), then resumed with ``--ckpt_path last``, ends with
    the uninterrupted run's metrics.json, metrics.csv and DVCLive history, byte for byte."""
    import random
    import signal
    import subprocess
    import time

    other_fs = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path  # tmpfs: another filesystem than /tmp
    tmpdir = Path(other_fs) / f"formers-tmp-{os.getpid()}-{seed}"
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir), "DVC_NO_ANALYTICS": "1"}
    epochs, rng = 8, random.Random(seed)
    final_step = epochs * 16  # pipelines/core/tiny.yaml: 16 steps per epoch

    def killed_mid_training(run: Path, args: list[str]) -> bool:
        """Start ``args``, SIGKILL it at a random moment after its first checkpoint; True if training was unfinished
        (a kill after the last epoch's checkpoint hits a finished run: nothing is left to resume)."""
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last, deadline = run / "checkpoints" / "last.ckpt", time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))  # inside a step, a validation or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return torch.load(last, weights_only=True)["global_step"] < final_step

    try:
        subprocess.run(_fit_process(tmp_path / "whole", epochs), env=env, check=True, capture_output=True)
        killed = tmp_path / "killed"
        for _ in range(5):  # until two kills land inside training (each retry starts the killed run afresh)
            shutil.rmtree(killed, ignore_errors=True)
            if killed_mid_training(killed, _fit_process(killed, epochs)) and killed_mid_training(
                killed, _fit_process(killed, epochs, "--ckpt_path=last")
            ):
                break
        else:
            pytest.fail("no kill landed inside training in 5 tries: the tiny run is too fast for the kill window")
        done = subprocess.run(_fit_process(killed, epochs, "--ckpt_path=last"), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    whole, resumed = _histories(tmp_path / "whole"), _histories(killed)
    assert resumed.keys() == whole.keys()
    for name in whole:
        assert resumed[name] == whole[name], f"{name} differs after SIGKILL + resume"

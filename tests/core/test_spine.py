"""The Lightning spine: FormersCLI, tasks, synthetic data, MetricsJSON, and end-to-end runs of ``formers-core``.

Fast tests run in-process. ``slow`` tests start the real console script in subprocesses (about 6 s of start-up each on
2 cores): one fit of ``pipelines/core/tiny.yaml`` shared by several tests, a resume after SIGKILL, and DDP with two
gloo CPU processes.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.optim.lr_scheduler import StepLR

from formers.core.callbacks import MetricsJSON, flatten_metrics, nest_metrics
from formers.core.cli import FormersCLI
from formers.core.data import SyntheticSequenceDataModule, make_sequences
from formers.core.optim import fused_by_default
from formers.core.tasks import ClassificationTask, RegressionTask, Task

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "core" / "tiny.yaml"
TINY_STEPS_PER_EPOCH = 16  # 1024 training samples / batch 64
DOMAINS = ("vision", "timeseries", "graph", "pde", "bytes")
MODEL_KWARGS = {"vocab_size": 16, "num_classes": 4, "max_len": 32, "dim": 16, "depth": 1, "num_heads": 2}


# --------------------------------------------------------------------------------------------------------- helpers


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("formers-core")
    return [str(script)] if script.exists() else [sys.executable, "-m", "formers.core.main"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": path, "DVC_NO_ANALYTICS": "1"}


def _fit_args(run_dir: Path, *extra: str) -> list[str]:
    return [*_cli_command(), "fit", "--config", str(TINY), "--run_dir", str(run_dir), *extra]


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _epoch_rows(metrics_csv: Path, column: str) -> list[float]:
    with metrics_csv.open() as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def cli_argv(monkeypatch):
    """In-process CLI runs parse ``args=``; keep pytest's own argv out of LightningCLI's sight."""
    monkeypatch.setattr(sys, "argv", ["formers-core"])


def _tiny_cli(run_dir: Path, *extra: str, config: Path = TINY) -> FormersCLI:
    return FormersCLI(args=["--config", str(config), "--run_dir", str(run_dir), *extra], run=False)


# ------------------------------------------------------------------------------------------------------------ data


def test_majority_labels_are_the_mode_of_class_tokens():
    tokens, labels = make_sequences("majority", 500, vocab_size=16, num_classes=4, seq_len=32, seed=0)
    assert tokens.shape == (500, 32) and labels.shape == (500,)
    assert tokens.dtype == labels.dtype == torch.int64
    assert 0 <= tokens.min() and tokens.max() < 16
    counts = torch.stack([torch.bincount(row, minlength=16)[:4] for row in tokens])
    assert torch.equal(labels, counts.argmax(dim=1))
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_associative_recall_labels_are_the_recalled_values():
    tokens, labels = make_sequences("associative_recall", 200, vocab_size=24, num_classes=8, seq_len=17, seed=0)
    keys, values, query = tokens[:, 0:-1:2], tokens[:, 1:-1:2], tokens[:, -1]
    assert keys.min() >= 8 and values.max() < 8
    assert all(len(set(row.tolist())) == row.numel() for row in keys)  # distinct keys in every sequence
    position = (keys == query[:, None]).int().argmax(dim=1)
    assert torch.equal(labels, values.gather(1, position[:, None]).squeeze(1))


@pytest.mark.parametrize("task", ["majority", "associative_recall"])
def test_generation_is_deterministic_per_seed(task):
    first = make_sequences(task, 64, 24, 8, 17, seed=3)
    again = make_sequences(task, 64, 24, 8, 17, seed=3)
    other = make_sequences(task, 64, 24, 8, 17, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_datamodule_splits_batches_and_independent_seeds():
    dm = SyntheticSequenceDataModule(num_train=100, num_val=40, num_test=30, batch_size=16)
    dm.setup("fit")
    dm.setup("test")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 100, "val": 40, "test": 30}
    tokens, labels = next(iter(dm.train_dataloader()))
    assert tokens.shape == (16, 32) and labels.shape == (16,)
    bigger = SyntheticSequenceDataModule(num_train=300, num_val=40, num_test=30, batch_size=16)
    bigger.setup("validate")
    assert torch.equal(dm.datasets["val"].tensors[0], bigger.datasets["val"].tensors[0])  # val ignores num_train
    assert not torch.equal(dm.datasets["val"].tensors[0][:30], dm.datasets["test"].tensors[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 20, "vocab_size": 16}, r"num_classes \(20\) must not exceed vocab_size \(16\)"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"task": "associative_recall", "seq_len": 16}, "odd seq_len"),
        ({"task": "associative_recall", "seq_len": 33, "vocab_size": 16, "num_classes": 4}, "needs 16 distinct keys"),
        ({"task": "parity"}, "unknown task 'parity'"),
        ({"num_val": 0}, "num_val must be >= 1"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
    ids=["classes>vocab", "one_class", "even_seq_len", "too_few_keys", "unknown_task", "empty_split", "batch_size"],
)
def test_datamodule_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSequenceDataModule(**kwargs)


# ----------------------------------------------------------------------------------------------------- metrics.json


def _fake_trainer(metrics: dict, rank_zero: bool = True) -> SimpleNamespace:
    return SimpleNamespace(callback_metrics=metrics, current_epoch=3, global_step=48, is_global_zero=rank_zero)


def test_metrics_json_nested_layout_merge_and_atomic_write(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    callback = MetricsJSON(path)
    fit = {"train/loss": torch.tensor(0.5), "val/acc": torch.tensor(0.75), "val/loss": float("nan")}
    callback.on_fit_end(_fake_trainer(fit), None)
    assert json.loads(path.read_text()) == {
        "epoch": 3,
        "step": 48,
        "train": {"loss": 0.5},
        "val": {"acc": 0.75, "loss": None},
    }
    callback.on_test_end(_fake_trainer({"test/acc": torch.tensor(1.0)}), None)
    assert json.loads(path.read_text())["test"] == {"acc": 1.0}
    assert json.loads(path.read_text())["val"]["acc"] == 0.75  # test merges into the fit metrics
    callback.on_fit_end(_fake_trainer({"val/acc": torch.tensor(0.5)}), None)
    assert "test" not in json.loads(path.read_text())  # a new fit starts the file afresh
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary files left behind


def test_metrics_json_flat_layout_and_rank_zero_only(tmp_path):
    flat = MetricsJSON(tmp_path / "flat.json", nested=False)
    flat.on_test_end(_fake_trainer({"test/acc": torch.tensor(0.25)}), None)
    assert json.loads((tmp_path / "flat.json").read_text()) == {"test/acc": 0.25}
    MetricsJSON(tmp_path / "rank1.json").on_fit_end(_fake_trainer({"a": 1.0}, rank_zero=False), None)
    assert not (tmp_path / "rank1.json").exists()


def test_nest_and_flatten_metrics():
    flat = {"epoch": 2, "val/acc": 1.0, "train/loss_step": 0.1, "lr-AdamW": 0.001}
    assert nest_metrics(flat) == {"epoch": 2, "val": {"acc": 1.0}, "train": {"loss_step": 0.1}, "lr-AdamW": 0.001}
    assert flatten_metrics(nest_metrics(flat)) == flat
    with pytest.raises(ValueError, match="clashes"):
        nest_metrics({"val": 1.0, "val/acc": 1.0})


def test_metrics_json_falls_back_to_flat_on_a_name_clash(tmp_path):
    with pytest.warns(UserWarning, match="flat"):
        MetricsJSON(tmp_path / "m.json").on_test_end(_fake_trainer({"val": 1.0, "val/acc": 0.5}), None)
    assert json.loads((tmp_path / "m.json").read_text()) == {"val": 1.0, "val/acc": 0.5}


# ----------------------------------------------------------------------------------------------------------- tasks


def test_tasks_leave_the_optimizer_to_the_config():
    for task in (Task, ClassificationTask, RegressionTask):
        assert "configure_optimizers" not in vars(task)


def test_classification_task_checkpoint_rebuilds_with_weights_only(tmp_path):
    task = ClassificationTask("transformer_classifier", MODEL_KWARGS, label_smoothing=0.1)
    task.configure_optimizers = lambda: torch.optim.AdamW(task.parameters(), lr=1e-3)
    dm = SyntheticSequenceDataModule(num_train=64, num_val=32, num_test=32, batch_size=32)
    trainer = Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert {"train/loss_step", "val/loss", "val/acc"} <= set(trainer.callback_metrics)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    hparams = _load(tmp_path / "task.ckpt")["hyper_parameters"]
    assert hparams == {
        "model": "transformer_classifier",
        "model_kwargs": MODEL_KWARGS,
        "data_sizes": None,
        "attention_backend": None,
        "checkpoint_path": None,
        "label_smoothing": 0.1,
    }
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "task.ckpt", weights_only=True)
    for key, value in task.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_classification_task_checks_num_classes_against_the_data(tmp_path):
    task = ClassificationTask("transformer_classifier", {**MODEL_KWARGS, "num_classes": 5})
    trainer = Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"model_kwargs.num_classes=5 but the data has num_classes=4"):
        trainer.validate(task, datamodule=SyntheticSequenceDataModule(num_val=8, batch_size=8))


def test_task_options_are_validated():
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassificationTask("transformer_classifier", MODEL_KWARGS, label_smoothing=1.0)
    with pytest.raises(ValueError, match="loss must be 'mse' or 'mae'"):
        RegressionTask("transformer_classifier", MODEL_KWARGS, loss="huber")
    with pytest.raises(ValueError, match="unknown model 'no_such_model'"):
        ClassificationTask("no_such_model")


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_regression_task_metrics(loss):
    task = RegressionTask("transformer_classifier", {**MODEL_KWARGS, "num_classes": 1}, loss=loss)
    tokens = torch.randint(0, 16, (8, 12))
    target = torch.randn(8)  # (batch,) targets against (batch, 1) predictions
    output = task(tokens)
    mse, mae = ((output.squeeze(1) - target) ** 2).mean(), (output.squeeze(1) - target).abs().mean()
    assert torch.allclose(task.loss(output, target), mse if loss == "mse" else mae)
    batch = task.batch_metrics(output, target, task.loss(output, target))
    assert torch.allclose(batch["mse"], mse) and torch.allclose(batch["mae"], mae)
    metrics = task.eval_metrics["val"]
    for half in (slice(0, 3), slice(3, 8)):  # exact over the split, whatever the batch sizes
        task.update_metrics(metrics, output[half], target[half])
    assert torch.allclose(metrics["mse"].compute(), mse) and torch.allclose(metrics["mae"].compute(), mae)
    assert task.loss_metric == loss
    with pytest.raises(ValueError, match="does not match target"):
        task.loss(output, torch.randn(9))


# ------------------------------------------------------------------------------------------------- CLI, in-process


def test_cli_defaults_follow_run_dir(tmp_path, cli_argv):
    config = yaml.safe_load(TINY.read_text())
    del config["optimizer"]  # the CLI default applies
    (tmp_path / "no_optimizer.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    cli = _tiny_cli(run_dir, config=tmp_path / "no_optimizer.yaml")
    trainer = cli.trainer
    assert isinstance(trainer.loggers[0], CSVLogger) and type(trainer.loggers[1]).__name__ == "ResumableDVCLiveLogger"
    assert Path(trainer.log_dir) == run_dir and Path(trainer.default_root_dir) == run_dir
    assert Path(trainer.loggers[1].experiment.dir) == run_dir / "dvclive"
    best, last = trainer.checkpoint_callbacks
    assert isinstance(best, ModelCheckpoint) and isinstance(last, ModelCheckpoint)
    assert Path(best.dirpath) == Path(last.dirpath) == run_dir / "checkpoints"
    assert (best.filename, best.monitor, last.filename, last.monitor) == ("best", "val/loss", "last", None)
    (metrics_json,) = [c for c in trainer.callbacks if isinstance(c, MetricsJSON)]
    assert metrics_json.path == run_dir / "metrics.json"
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    optimizer = cli.model.configure_optimizers()
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["lr"] == 1e-3
    assert optimizer.defaults["weight_decay"] == 0.01
    assert cli.config.seed_everything == 42


@pytest.mark.parametrize("where", ["yaml", "command line"])
def test_a_chosen_optimizer_gets_only_its_own_defaults(tmp_path, cli_argv, where):
    """Regression: jsonargparse carries init_args over to a new class_path, so a parser-level AdamW default leaked
    weight_decay=0.01 into every config that picked Adam (the ETTh1 paper runs trained with L2 decay)."""
    config = yaml.safe_load(TINY.read_text())
    if where == "yaml":
        config["optimizer"] = {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-4}}
        extra = ()
    else:
        del config["optimizer"]
        extra = ("--optimizer=Adam", "--optimizer.lr=1e-4")
    (tmp_path / "adam.yaml").write_text(yaml.safe_dump(config))
    cli = _tiny_cli(tmp_path / "run", *extra, config=tmp_path / "adam.yaml")
    optimizer = cli.model.configure_optimizers()
    assert type(optimizer).__name__ == "Adam"
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 0.0


def test_cli_optimizer_and_scheduler_come_from_the_config(tmp_path, cli_argv):
    cli = _tiny_cli(
        tmp_path,
        "--optimizer=SGD",
        "--optimizer.lr=0.1",
        "--optimizer.momentum=0.9",
        "--lr_scheduler=StepLR",
        "--lr_scheduler.step_size=2",
    )
    (optimizer,), (scheduler,) = cli.model.configure_optimizers()
    assert type(optimizer).__name__ == "SGD" and optimizer.defaults["lr"] == 0.1
    assert optimizer.defaults["momentum"] == 0.9
    assert isinstance(scheduler, StepLR) and scheduler.step_size == 2


@pytest.mark.parametrize(
    ("extra", "fused", "foreach"),
    [((), True, None), (("--optimizer.foreach=true",), None, True), (("--optimizer.fused=false",), False, None)],
)
def test_cli_optimizers_are_fused_unless_the_config_chooses(tmp_path, cli_argv, extra, fused, foreach):
    cli = _tiny_cli(tmp_path, "--optimizer=Adam", "--optimizer.lr=1e-3", *extra)
    optimizer = cli.model.configure_optimizers()
    assert (optimizer.defaults["fused"], optimizer.defaults["foreach"]) == (fused, foreach)


def test_fused_by_default_only_where_torch_has_a_fused_kernel():
    from torch.optim import LBFGS, SGD, Adam, RMSprop

    assert fused_by_default(Adam, {"lr": 0.1}) == {"lr": 0.1, "fused": True}
    assert fused_by_default(SGD, {"lr": 0.1, "foreach": False}) == {"lr": 0.1, "foreach": False}
    assert fused_by_default(Adam, {"differentiable": True}) == {"differentiable": True}
    assert fused_by_default(RMSprop, {}) == {} and fused_by_default(LBFGS, {}) == {}  # no fused kernel
    real, spectral = torch.zeros(3), torch.zeros(3, dtype=torch.complex64)  # a spectral PDE layer's weights
    assert fused_by_default(Adam, {}, [real]) == {"fused": True} and fused_by_default(Adam, {}, [real, spectral]) == {}
    # one fused Adam step equals the default (multi-tensor) one up to float rounding
    torch.manual_seed(0)
    params = [torch.randn(64, 32), torch.randn(32)]
    grads = [torch.randn_like(p) for p in params]
    results = []
    for kwargs in ({}, fused_by_default(Adam, {})):
        copies = [p.clone().requires_grad_() for p in params]
        optimizer = Adam(copies, lr=1e-2, **kwargs)
        for _ in range(3):
            for p, g in zip(copies, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        results.append(copies)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_cli_callbacks_and_loggers_are_replaceable(tmp_path, cli_argv):
    override = {
        "trainer": {
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "${log_dir}"}}],
            "callbacks": [
                {"class_path": "formers.core.callbacks.MetricsJSON", "init_args": {"path": "${run_dir}/m.json"}}
            ],
        }
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    cli = FormersCLI(
        args=["--config", str(TINY), "--config", str(tmp_path / "override.yaml"), "--run_dir", str(tmp_path)], run=False
    )
    assert [type(logger).__name__ for logger in cli.trainer.loggers] == ["CSVLogger"]
    assert not any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks)
    assert all(c.dirpath is None for c in cli.trainer.checkpoint_callbacks)  # only Lightning's own default is left
    (metrics_json,) = [c for c in cli.trainer.callbacks if isinstance(c, MetricsJSON)]
    assert metrics_json.path == tmp_path / "m.json"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.init_args.model=no_such_model"], "unknown model 'no_such_model'"),
        (["--data.init_args.num_classes=20"], r"num_classes \(20\) must not exceed vocab_size \(16\)"),
    ],
    ids=["unknown_model", "classes>vocab"],
)
def test_cli_bad_config_raises_a_clear_error(tmp_path, cli_argv, override, message):
    with pytest.raises(ValueError, match=message):
        _tiny_cli(tmp_path, *override)


def test_cli_bad_value_is_a_parser_error(tmp_path, cli_argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _tiny_cli(tmp_path, "--data.init_args.task=parity")
    assert exit_info.value.code == 2
    assert "Expected a typing.Literal['majority', 'associative_recall']. Got value: parity" in capsys.readouterr().err


@pytest.mark.parametrize("domain", ("core", *DOMAINS))
def test_every_domain_cli_is_the_formers_cli(domain, cli_argv, capsys):
    module = importlib.import_module("formers.core.main" if domain == "core" else f"formers.{domain}.domain")
    assert module.DOMAIN.name == domain and module.main == module.DOMAIN.main
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"formers-{domain}" in out and "{fit,validate,test,predict}" in out


# ------------------------------------------------------------------------------------------- end to end (subprocess)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One ``formers-core fit --config pipelines/core/tiny.yaml`` (4 epochs) shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("spine") / "tiny"
    _run(_fit_args(run_dir))
    return run_dir


@pytest.mark.slow
def test_fit_writes_the_run_layout(tiny_run):
    for name in ("config.yaml", "metrics.csv", "metrics.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "dvclive" / "metrics.json").is_file()
    assert not (tiny_run / "dvc.yaml").exists() and not (tiny_run / "dvclive" / "dvc.yaml").exists()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["epoch"] == 4 and metrics["step"] == 4 * TINY_STEPS_PER_EPOCH
    assert {"loss", "loss_epoch", "acc"} <= set(metrics["train"]) and {"loss", "acc"} <= set(metrics["val"])
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert config["run_dir"] == str(tiny_run) and config["trainer"]["default_root_dir"] == str(tiny_run)
    assert config["weights_only"] is True and "${" not in (tiny_run / "config.yaml").read_text()
    last = _load(tiny_run / "checkpoints" / "last.ckpt")  # weights_only: no pickled objects in a checkpoint
    assert last["global_step"] == 4 * TINY_STEPS_PER_EPOCH
    assert last["hyper_parameters"]["model"] == "transformer_classifier"


@pytest.mark.slow
def test_fit_loss_falls(tiny_run):
    val_loss = _epoch_rows(tiny_run / "metrics.csv", "val/loss")
    train_loss = _epoch_rows(tiny_run / "metrics.csv", "train/loss_epoch")
    assert len(val_loss) == len(train_loss) == 4
    assert val_loss[-1] < 0.6 * val_loss[0] and train_loss[-1] < 0.6 * train_loss[0]
    assert json.loads((tiny_run / "metrics.json").read_text())["val"]["acc"] > 0.6  # chance: 0.25


@pytest.mark.slow
def test_test_subcommand_from_a_checkpoint_file(tiny_run, tmp_path, cli_argv):
    run_dir = tmp_path / "tiny"
    shutil.copytree(tiny_run, run_dir)
    fit_config = (run_dir / "config.yaml").read_text()
    best = run_dir / "checkpoints" / "best.ckpt"
    FormersCLI(args=["test", "--config", str(TINY), "--run_dir", str(run_dir), "--ckpt_path", str(best)])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["acc"] > 0.6 and metrics["val"]["acc"] > 0.6  # merged next to the fit metrics
    assert (run_dir / "test" / "config.yaml").is_file() and (run_dir / "test" / "metrics.csv").is_file()
    assert (run_dir / "config.yaml").read_text() == fit_config  # the training record is untouched
    assert len(_epoch_rows(run_dir / "metrics.csv", "val/loss")) == 4

    FormersCLI(args=["validate", "--config", str(TINY), "--run_dir", str(run_dir), "--ckpt_path", str(best)])
    merged = json.loads((run_dir / "metrics.json").read_text())
    assert merged["test"] == metrics["test"] and merged["val"]["acc"] > 0.6
    assert (run_dir / "validate" / "config.yaml").is_file()


@pytest.mark.slow
def test_resume_after_sigkill_continues_where_it_stopped(tmp_path):
    run_dir, record, epochs = tmp_path / "run", tmp_path / "starts.jsonl", 6
    args = _fit_args(
        run_dir,
        f"--trainer.max_epochs={epochs}",
        "--trainer.callbacks+=spine_helpers.StepRecorder",
        f"--trainer.callbacks.path={record}",
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not last.exists():
        assert proc.poll() is None, f"fit ended before its first checkpoint:\n{proc.stderr.read()[-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 180 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    saved = _load(last)
    assert 0 < saved["global_step"] < epochs * TINY_STEPS_PER_EPOCH

    resumed = _run([*args, "--ckpt_path=last"])
    assert f"Restored all states from the checkpoint at {last}" in resumed.stdout + resumed.stderr
    starts = [json.loads(line) for line in record.read_text().splitlines()]
    assert starts[0] == {"epoch": 0, "global_step": 0}
    assert starts[-1] == {"epoch": saved["epoch"] + 1, "global_step": saved["global_step"]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == epochs and metrics["step"] == epochs * TINY_STEPS_PER_EPOCH
    assert _load(last)["global_step"] == epochs * TINY_STEPS_PER_EPOCH  # last.ckpt follows every epoch
    with (run_dir / "dvclive" / "plots" / "metrics" / "val" / "loss.tsv").open() as f:  # DVCLive kept its history
        logged = {int(row["step"]) for row in csv.DictReader(f, delimiter="\t")}
    assert logged == {(epoch + 1) * TINY_STEPS_PER_EPOCH - 1 for epoch in range(epochs)}


@pytest.mark.slow
def test_ddp_with_two_gloo_cpu_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    proc = _run(
        _fit_args(
            run_dir,
            "--trainer.max_epochs=2",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
        )
    )
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 2 * TINY_STEPS_PER_EPOCH // 2  # each rank sees half of every epoch
    assert 0.0 <= metrics["val"]["acc"] <= 1.0
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == TINY_STEPS_PER_EPOCH

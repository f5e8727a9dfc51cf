"""Progress a user sees: Lightning's bar in a terminal, one line per epoch in a log (DVC stage, CI), none when off.

The end-to-end check runs ``formers-core fit`` with standard output and error as pipes (not a terminal), as a DVC
stage does, and reads the lines it printed: no screenshot, no terminal emulation.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

from formers.core.callbacks import LineProgressBar, default_progress_bar, summary_metrics
from formers.core.cli import FormersCLI

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "core" / "tiny.yaml"
EPOCH_LINE = re.compile(r"^epoch (\d+)/3  step (\d+)  train/loss ([\d.e+-]+)  .*val/loss ([\d.e+-]+).*  [\d.]+ s$")


class _Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_a_terminal_keeps_lightnings_bar_and_a_log_gets_lines():
    assert default_progress_bar(_Stream(terminal=True)) is None  # None: the Trainer's own TQDM bar
    assert isinstance(default_progress_bar(_Stream(terminal=False)), LineProgressBar)
    assert isinstance(default_progress_bar(object()), LineProgressBar)  # a stream without isatty is no terminal


@pytest.fixture
def tiny_cli(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["formers-core"])

    def build(*extra: str, stdout: io.StringIO | None = None) -> FormersCLI:
        if stdout is not None:
            monkeypatch.setattr(sys, "stdout", stdout)
        return FormersCLI(args=["--config", str(TINY), "--run_dir", str(tmp_path), *extra], run=False)

    return build


@pytest.mark.parametrize("terminal", [True, False])
def test_the_cli_chooses_the_bar_by_its_output(tiny_cli, terminal):
    trainer = tiny_cli(stdout=_Stream(terminal)).trainer
    # a terminal: Lightning's own bar (rich when installed, else TQDM); a log: one line per epoch
    assert isinstance(
        trainer.progress_bar_callback, (RichProgressBar, TQDMProgressBar) if terminal else LineProgressBar
    )
    assert sum(isinstance(c, ProgressBar) for c in trainer.callbacks) == 1


def test_enable_progress_bar_false_is_honoured(tiny_cli):
    trainer = tiny_cli("--trainer.enable_progress_bar", "false", stdout=_Stream(terminal=False)).trainer
    assert trainer.progress_bar_callback is None


def test_a_configured_bar_replaces_the_default(tiny_cli):
    bar = ["--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"]
    trainer = tiny_cli(*bar, stdout=_Stream(terminal=False)).trainer
    assert type(trainer.progress_bar_callback) is TQDMProgressBar


def test_summary_metrics_drop_step_values_and_order_train_val_lr():
    metrics = {
        "val/acc": torch.tensor(0.5),
        "lr-AdamW/decay": 0.001,
        "lr-AdamW/no_decay": 0.001,
        "train/loss_step": torch.tensor(9.0),
        "train/loss_epoch": torch.tensor(0.25),
        "val/confusion": torch.zeros(2, 2),  # not a scalar: left out
        "epoch_time": 3.0,
    }
    assert list(summary_metrics(metrics).items()) == [
        ("train/loss", 0.25),
        ("val/acc", 0.5),
        ("epoch_time", 3.0),
        ("lr", 0.001),
    ]
    assert summary_metrics(metrics, prefix="val/") == {"val/acc": 0.5}


@pytest.mark.slow
def test_a_fit_whose_output_is_not_a_terminal_prints_one_line_per_epoch(tmp_path):
    script = Path(sys.executable).with_name("formers-core")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "formers.core.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["fit", "--config", str(TINY), "--run_dir", str(tmp_path / "run"), "--trainer.max_epochs", "3"]
    fit = subprocess.run(
        [*command, *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert fit.returncode == 0, fit.stderr[-4000:]
    epoch_lines = [line for line in fit.stdout.splitlines() if line.startswith("epoch ")]
    matches = [EPOCH_LINE.match(line) for line in epoch_lines]
    assert all(matches) and len(matches) == 3, fit.stdout[-3000:]
    assert [int(m[1]) for m in matches] == [1, 2, 3]
    assert [int(m[2]) for m in matches] == [16, 32, 48]  # 1024 samples / batch 64 per epoch
    assert all(float(m[3]) > 0 and float(m[4]) > 0 for m in matches)
    assert "\r" not in fit.stdout + fit.stderr  # no TQDM redraws in the log

    test = subprocess.run(
        [
            *command,
            "test",
            "--config",
            str(TINY),
            "--run_dir",
            str(tmp_path / "run"),
            "--ckpt_path",
            str(tmp_path / "run" / "checkpoints" / "best.ckpt"),
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert test.returncode == 0, test.stderr[-4000:]
    assert re.search(r"^test  test/loss [\d.e+-]+  test/acc [\d.e+-]+  [\d.]+ s$", test.stdout, re.M), test.stdout

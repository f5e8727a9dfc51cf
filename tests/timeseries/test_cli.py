"""``formers-timeseries``: --help documents predict; a real tiny fit (the script's ``main`` in this process) learns,
resumes from last.ckpt, tests best.ckpt into metrics.json, and ``predict`` writes the forecast CSV and PNG."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from _cli import run_script
from formers.core.predict import predict_parser
from formers.timeseries.domain import DOMAIN, main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "timeseries" / "tiny.yaml"
STEPS_PER_EPOCH = 19  # 1000 rows: 700 train rows -> 629 windows -> 19 full batches of 32 (< limit 20)


def test_help_documents_predict(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["formers-timeseries"])
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "{fit,validate,test,predict}" in out
    help_text = predict_parser(DOMAIN).format_help()
    for option in ("--ckpt", "--config", "--out", "--plot", "--end", "--truth", "--split", "inputs"):
        assert option in help_text


def test_predict_reports_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt", str(tmp_path / "missing.ckpt"), str(tmp_path / "x.csv")])
    assert exit_info.value.code == 1
    assert "missing.ckpt" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = run_script("formers-timeseries", main, args, cwd=REPO)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _column(metrics_csv: Path, name: str) -> list[float]:
    with metrics_csv.open() as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


@pytest.mark.slow
def test_fit_resume_test_predict(tmp_path, synthetic_csv):
    run_dir = tmp_path / "run"
    common = ["--config", str(TINY), "--data.init_args.path", str(synthetic_csv), "--run_dir", str(run_dir)]
    _run("fit", *common)
    train_loss = _column(run_dir / "metrics.csv", "train/loss_epoch")
    val_loss = _column(run_dir / "metrics.csv", "val/loss")
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0], train_loss
    assert val_loss[1] < val_loss[0], val_loss
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH

    _run("fit", *common, "--ckpt_path", str(last), "--trainer.max_epochs", "3")  # resume: one more epoch
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 3 and metrics["step"] == 3 * STEPS_PER_EPOCH
    resumed = _column(run_dir / "metrics.csv", "train/loss_epoch")  # the history is kept, the resumed epoch added
    assert len(resumed) == 3 and resumed[:2] == train_loss
    assert torch.load(last, map_location="cpu", weights_only=True)["optimizer_states"][0]["param_groups"][0][
        "lr"
    ] == pytest.approx(1e-3 * 0.5**3)  # StepLR state resumed too

    best = run_dir / "checkpoints" / "best.ckpt"
    _run("test", *common, "--ckpt_path", str(best))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["mse"] > 0 and metrics["test"]["loss"] == metrics["test"]["mse"]
    assert metrics["val"]["loss"] > 0  # fit metrics kept

    out, png = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    args = ["predict", "--ckpt", str(best), str(synthetic_csv), "--out", str(out), "--plot", str(png)]
    _run(*args, "--end", "-24")
    frame, forecast = pd.read_csv(synthetic_csv), pd.read_csv(out)
    assert forecast["date"].iloc[0] == frame["date"].iloc[-24] and len(forecast) == 24
    assert forecast["OT_true"].tolist() == frame["OT"].iloc[-24:].tolist()
    assert png.stat().st_size > 10_000

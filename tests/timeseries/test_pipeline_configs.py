"""Every YAML in pipelines/timeseries parses and instantiates through the CLI; the paper configs carry the papers'
hyper-parameters; the DVC wiring (root default stages, separate paper pipeline) is consistent with the configs."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.optim import Adam

from formers.core.cli import FormersCLI
from formers.timeseries import list_models
from formers.timeseries.data import ForecastDataModule
from formers.timeseries.task import ForecastTask

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "pipelines" / "timeseries").glob("*.yaml"))
PAPER_RUNS = {  # run -> (model, pred_len, d_model, d_ff)
    "itransformer_96": ("itransformer", 96, 256, 256),
    "itransformer_192": ("itransformer", 192, 256, 256),
    "itransformer_336": ("itransformer", 336, 512, 512),
    "itransformer_720": ("itransformer", 720, 512, 512),
    "autoformer_96": ("autoformer", 96, 512, 2048),
    "informer_96": ("informer", 96, 512, 2048),
}


def _model_name(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["init_args"]["model"]


def _cli(config: Path, run_dir: Path) -> FormersCLI:
    return FormersCLI(args=["--config", str(config), "--run_dir", str(run_dir)], run=False)


@pytest.fixture
def no_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["formers-timeseries"])


def test_expected_configs_exist():
    names = {c.stem for c in CONFIGS}
    assert {"tiny", "default"} | {f"etth1_{run}" for run in PAPER_RUNS} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates(config, tmp_path, no_argv):
    if _model_name(config) not in list_models():
        pytest.skip(f"model {_model_name(config)!r} is not registered yet")
    cli = _cli(config, tmp_path)
    task, data = cli.model, cli.datamodule
    assert isinstance(task, ForecastTask) and isinstance(data, ForecastDataModule)
    kwargs = task.model_config  # model_kwargs + the sizes linked from the data section
    assert (kwargs["seq_len"], kwargs["label_len"], kwargs["pred_len"]) == (data.seq_len, data.label_len, data.pred_len)
    assert kwargs["freq"] == data.freq == "h"
    checkpoints = [cb for cb in cli.trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    assert {cb.filename for cb in checkpoints} == {"best", "last"}
    assert all(Path(cb.dirpath) == tmp_path / "checkpoints" for cb in checkpoints)


@pytest.mark.parametrize("run", sorted(PAPER_RUNS))
def test_paper_hyperparameters(run, tmp_path, no_argv):
    model, pred_len, d_model, d_ff = PAPER_RUNS[run]
    config = REPO / "pipelines" / "timeseries" / f"etth1_{run}.yaml"
    raw = yaml.safe_load(config.read_text())
    data = raw["data"]["init_args"]
    # the window sizes come from the data section (linked by the CLI); a config may still restate them, equal
    kwargs = {"enc_in": 7, "c_out": 7, **raw["model"]["init_args"]["model_kwargs"]}  # ETTh1's 7 channels, M
    for key in ("seq_len", "label_len", "pred_len"):
        assert kwargs.setdefault(key, data[key]) == data[key], key
    assert raw["model"]["init_args"]["model"] == model
    assert (kwargs["seq_len"], kwargs["label_len"], kwargs["pred_len"]) == (96, 48, pred_len)
    assert (kwargs["d_model"], kwargs["d_ff"], kwargs["e_layers"], kwargs["n_heads"]) == (d_model, d_ff, 2, 8)
    assert (kwargs["enc_in"], kwargs["c_out"], kwargs["dropout"], kwargs["freq"]) == (7, 7, 0.1, "h")
    if model != "itransformer":
        assert (kwargs["d_layers"], kwargs["factor"], kwargs["label_len"]) == (1, 3, 48)
    assert (data["path"], data["split"], data["batch_size"], data["features"]) == (
        "data/timeseries/ETTh1.csv", "ett_hour", 32, "M"
    )  # fmt: skip
    assert raw["trainer"]["max_epochs"] == 10
    if model not in list_models():
        pytest.skip(f"model {model!r} is not registered yet")
    cli = _cli(config, tmp_path)
    (stop,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, EarlyStopping)]
    assert (stop.monitor, stop.patience, stop.mode) == ("val/loss", 3, "min")
    (best,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor]
    assert (best.monitor, best.mode) == ("val/loss", "min")
    optimizer = cli.model.configure_optimizers()
    opt, sched = (optimizer[0][0], optimizer[1][0]) if isinstance(optimizer, tuple) else (optimizer, None)
    if isinstance(opt, dict):
        opt, sched = opt["optimizer"], opt["lr_scheduler"]
    assert isinstance(opt, Adam) and opt.defaults["lr"] == 1e-4
    scheduler = sched["scheduler"] if isinstance(sched, dict) else sched
    assert _epoch_lrs(opt, scheduler, 10) == _tslib_type1(1e-4, 10)


def _tslib_type1(lr0: float, epochs: int) -> list[float]:
    """lr of each epoch under TSLib's loop: after epoch e (0-based), adjust_learning_rate(epoch=e + 1) sets
    lr0 * 0.5 ** ((epoch - 1) // 1) (utils/tools.py, lradj='type1')."""
    lrs, lr = [], lr0
    for epoch in range(epochs):
        lrs.append(lr)
        lr = lr0 * 0.5 ** (((epoch + 1) - 1) // 1)
    return lrs


def _epoch_lrs(optimizer, scheduler, epochs: int) -> list[float]:
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # Lightning steps an epoch-interval scheduler after each epoch
    return lrs


def test_type1_schedule_is_not_steplr():
    assert _tslib_type1(1e-4, 4) == [1e-4, 1e-4, 5e-5, 2.5e-5]  # StepLR(1, 0.5) would give 1e-4, 5e-5, ...


def test_itransformer_96_parameter_count(tmp_path, no_argv):
    # 841,568: the official iTransformer code (c2426e6) at the ETTh1-96 script settings (reference note, section 5)
    cli = _cli(REPO / "pipelines" / "timeseries" / "etth1_itransformer_96.yaml", tmp_path)
    assert sum(p.numel() for p in cli.model.model.parameters()) == 841_568


def test_root_dvc_default_stages():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())["timeseries"]
    assert (REPO / params["train"]["config"]).is_file()
    assert set(params["data"]) == {"rows", "seed"}
    stages = dvc["stages"]
    assert stages["ts_data"]["params"] == ["timeseries.data"] and stages["ts_train"]["params"] == ["timeseries.train"]
    assert "synthetic.csv" in stages["ts_data"]["cmd"] and "data/timeseries/synthetic.csv" in stages["ts_data"]["outs"]
    cmd = stages["ts_train"]["cmd"]
    assert "--ckpt_path results/timeseries/default/checkpoints/best.ckpt" in cmd
    assert "--ckpt_path best " not in cmd + " "  # 'best' only resolves inside the fitting process
    assert {"results/timeseries/default/metrics.json": {"cache": False}} in stages["ts_train"]["metrics"]
    assert "results/timeseries/default/test_forecast.tsv" in str(dvc["plots"])
    assert not any(name.startswith("ts_paper") or "etth1" in str(stage) for name, stage in stages.items())


def test_paper_pipeline_is_separate_and_complete():
    paper = yaml.safe_load((REPO / "pipelines" / "timeseries" / "paper" / "dvc.yaml").read_text())["stages"]
    assert "ETTh1" in paper["ts_fetch_etth1"]["cmd"]
    assert set(paper["ts_paper"]["foreach"]) == set(PAPER_RUNS)
    do = paper["ts_paper"]["do"]
    assert do["wdir"] == paper["ts_fetch_etth1"]["wdir"] == "../../.."
    assert "--ckpt_path results/timeseries/etth1/${item}/checkpoints/best.ckpt" in do["cmd"]
    assert do["metrics"] == [{"results/timeseries/etth1/${item}/metrics.json": {"cache": False}}]
    for run in PAPER_RUNS:
        assert (REPO / "pipelines" / "timeseries" / f"etth1_{run}.yaml").is_file()


# ETTh1 test MSE of the papers (iTransformer table; Autoformer / Informer as re-reported by thuml), input 96
PAPER_MSE = {"itransformer_96": 0.386, "autoformer_96": 0.449, "informer_96": 0.865}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("run", sorted(PAPER_RUNS))
def test_committed_paper_result_is_the_recorded_stage_output(run):
    """Each committed results/timeseries/etth1/<run>/metrics.json is what its DVC stage wrote (dvc.lock), from the
    current config, trained with the config's own optimizer (Adam without weight decay: no leaked CLI default)."""
    lock = yaml.safe_load((REPO / "pipelines" / "timeseries" / "paper" / "dvc.lock").read_text())["stages"]
    stage = lock[f"ts_paper@{run}"]
    recorded = {entry["path"]: entry["md5"] for entry in stage["deps"] + stage["outs"]}
    config = f"pipelines/timeseries/etth1_{run}.yaml"
    metrics = f"results/timeseries/etth1/{run}/metrics.json"
    assert recorded[config] == _md5(REPO / config), f"{run}: config changed since its recorded run"
    assert recorded[metrics] == _md5(REPO / metrics), f"{run}: metrics.json is not the recorded stage output"
    trained = yaml.safe_load((REPO / f"results/timeseries/etth1/{run}/config.yaml").read_text())["optimizer"]
    assert trained["class_path"] == "torch.optim.Adam"
    assert trained["init_args"]["weight_decay"] == 0.0 and trained["init_args"]["lr"] == 1e-4


@pytest.mark.parametrize("run", sorted(PAPER_MSE))
def test_committed_paper_results_meet_the_papers(run):
    result = json.loads((REPO / f"results/timeseries/etth1/{run}/metrics.json").read_text())["test"]
    assert result["mse"] <= PAPER_MSE[run]

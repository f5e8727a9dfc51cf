"""formers-vision: the tiny pipeline config (fit, test with best.ckpt) and the ``predict`` subcommand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

import formers.vision as fv
from formers.vision.checkpoint import CheckpointError
from formers.vision.cli import main, predict
from formers.vision.data import CorruptImageError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "pipelines" / "vision" / "tiny.yaml"
CONFIGS = sorted((ROOT / "pipelines" / "vision").glob("*.yaml"))


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory) -> Path:
    """A run dir after ``fit`` and ``test`` of pipelines/vision/tiny.yaml on the generated shapes."""
    model = yaml.safe_load(TINY.read_text())["model"]["init_args"]["model"]
    if model not in fv.list_models():
        pytest.skip(f"{model} is not registered yet")
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    common = ["--config", str(TINY), "--run_dir", str(run_dir), "--data.init_args.root", str(shapes_root)]
    main(["fit", *common])
    main(["test", *common, "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt")])
    return run_dir


@pytest.mark.slow
def test_tiny_pipeline_writes_metrics_and_confusion(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["acc"] <= metrics[split]["acc_top5"] <= 1.0
    rows = list(csv.DictReader((trained / "test" / "confusion.csv").open()))
    assert len(rows) == 24 and set(rows[0]) == {"actual", "predicted"}
    assert (trained / "dvclive" / "plots" / "metrics" / "train" / "loss_step.tsv").is_file()


@pytest.mark.slow
def test_predict_prints_topk(trained, shapes_root, capsys):
    ckpt = trained / "checkpoints" / "best.ckpt"
    main(
        [
            "predict",
            str(shapes_root / "test" / "star"),
            str(shapes_root / "test" / "circle" / "00000.png"),
            "--checkpoint",
            str(ckpt),
            "--top-k",
            "3",
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    path, labels = lines[0].split("\t")
    assert path.endswith("star/00000.png")
    pairs = [item.split("=") for item in labels.split()]
    assert len(pairs) == 3 and all(
        name in {"circle", "cross", "diamond", "hexagon", "pentagon", "square", "star", "triangle"} for name, _ in pairs
    )
    probs = [float(p) for _, p in pairs]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    results = predict([shapes_root / "test" / "star"], ckpt, top_k=100)
    assert len(results[0][1]) == 8 and abs(sum(p for _, p in results[0][1]) - 1) < 1e-4


@pytest.mark.slow
def test_predict_errors(trained, tmp_path):
    ckpt = trained / "checkpoints" / "best.ckpt"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        predict([tmp_path / "broken.jpg"], ckpt)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predict([tmp_path / "nope.png"], ckpt)
    (tmp_path / "bad.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        predict([tmp_path / "broken.jpg"], tmp_path / "bad.ckpt")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_pipeline_configs_parse(config, tmp_path):
    """Every vision config parses, builds its model (meta device) and feeds it images of the size it takes."""
    from formers.core.cli import FormersCLI

    cfg = yaml.safe_load(config.read_text())
    model = cfg["model"]["init_args"]["model"]
    if model not in fv.list_models():
        pytest.skip(f"{model} is not registered yet")
    import torch

    with torch.device("meta"):
        cli = FormersCLI(args=["--config", str(config), "--run_dir", str(tmp_path)], run=False)
    # the data feeds the size the model was built for (crops / resizes are the data module's job)
    assert cli.model.model.pretrained_cfg["input_size"][1:] == (cli.datamodule.img_size,) * 2
    assert cli.model.model.pretrained_cfg["input_size"][0] == cli.datamodule.in_chans

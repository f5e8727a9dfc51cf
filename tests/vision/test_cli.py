"""formers-vision: the tiny pipeline config (fit, test with best.ckpt) and the ``predict`` subcommand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

import formers.vision as fv
from formers.vision.domain import main

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


def _predict(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *args])
    return exit_info.value.code


@pytest.mark.slow
def test_predict_prints_topk(trained, shapes_root, capsys, tmp_path):
    ckpt = str(trained / "checkpoints" / "best.ckpt")
    star, circle = shapes_root / "test" / "star", shapes_root / "test" / "circle" / "00000.png"
    assert _predict("--ckpt", ckpt, str(star), str(circle), "--top_k", "3") == 0
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
    out = tmp_path / "top.tsv"
    assert _predict("--ckpt", ckpt, str(star), "--top_k", "100", "--out", str(out)) == 0
    first = out.read_text().splitlines()[0].split("\t")[1].split()
    assert len(first) == 8 and abs(sum(float(item.split("=")[1]) for item in first) - 1) < 1e-3


@pytest.mark.slow
def test_predict_reports_bad_files_and_predicts_the_good_ones(trained, shapes_root, tmp_path, capsys):
    ckpt = str(trained / "checkpoints" / "best.ckpt")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "good.png").write_bytes((shapes_root / "test" / "circle" / "00000.png").read_bytes())
    assert _predict("--ckpt", ckpt, str(folder)) == 1  # non-zero at the end ...
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "1 input(s) failed" in captured.err
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(folder / "good.png")]  # ... good kept
    assert _predict("--ckpt", ckpt, str(tmp_path / "nope.png")) == 1
    assert "nope.png" in capsys.readouterr().err
    (tmp_path / "bad.ckpt").write_bytes(b"junk")
    assert _predict("--ckpt", str(tmp_path / "bad.ckpt"), str(folder)) == 1
    assert "bad.ckpt" in capsys.readouterr().err
    image = folder / "good.png"
    before = image.read_bytes()
    assert _predict("--ckpt", ckpt, str(image), "--out", str(image)) == 1  # never overwrites an input
    assert "is the input" in capsys.readouterr().err and image.read_bytes() == before


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_pipeline_configs_parse(config, tmp_path):
    """Every vision config parses, builds its model (meta device) and feeds it images of the size it takes."""
    from formers.core.cli import FormersCLI

    cfg = yaml.safe_load(config.read_text())
    model = cfg["model"]["init_args"]["model"]
    if model not in fv.list_models():
        pytest.skip(f"{model} is not registered yet")
    import torch

    data = cfg["data"]["init_args"]
    if cfg["data"]["class_path"].endswith("PanopticDataModule") and data.get("root"):
        if not (ROOT / data["root"]).exists():  # the classes come from the data's files
            pytest.skip(f"{data['root']} is absent (a DVC stage writes the scenes; COCO is not in the shared data)")
    with torch.device("meta"):
        cli = FormersCLI(args=["--config", str(config), "--run_dir", str(tmp_path)], run=False)
    if cfg["model"]["class_path"].endswith("PanopticSegmentationTask"):
        # kMaX takes any size: the classes come from the data, the crops are at least the model's minimum
        assert cli.model.model.num_classes == cli.datamodule.model_sizes()["num_classes"]
        assert min(cli.datamodule.crop_size) >= cli.model.model.min_input_size
        return
    # the data feeds the size the model was built for (crops / resizes are the data module's job)
    assert cli.model.model.pretrained_cfg["input_size"][1:] == (cli.datamodule.img_size,) * 2
    assert cli.model.model.pretrained_cfg["input_size"][0] == cli.datamodule.in_chans

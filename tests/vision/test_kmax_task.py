"""kMaX-DeepLab on the spine: PanopticSegmentationTask (a short fit whose loss falls), the tiny pipeline config through
``formers-vision fit`` / ``test``, and ``formers-vision predict`` writing panoptic PNGs, segments JSON and overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from formers.core.checkpoint_io import load_checkpoint_file
from formers.vision.domain import main
from formers.vision.segmentation.data import PanopticDataModule
from formers.vision.segmentation.panoptic import rgb2id
from formers.vision.segmentation.task import PanopticSegmentationTask

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "pipelines" / "vision" / "tiny_kmax.yaml"


def _tiny_task() -> tuple[PanopticSegmentationTask, PanopticDataModule]:
    init = yaml.safe_load(TINY.read_text())
    data = PanopticDataModule(**{**init["data"]["init_args"], "num_train": 4, "hflip": 0.0})
    data.setup("fit")
    torch.manual_seed(0)
    task = PanopticSegmentationTask(**init["model"]["init_args"], data_sizes=data.model_sizes())
    task.is_thing.copy_(torch.tensor(data.meta.is_thing))
    return task, data


def test_short_fit_loss_falls():
    """20 AdamW steps on one batch of 4 generated scenes: the kMaX loss (all five terms, deep supervision) falls."""
    task, data = _tiny_task()
    batch = next(iter(data.train_dataloader()))
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    task.train()
    losses = []
    for _ in range(20):
        loss = task.loss(task(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses  # 26.0 -> 22.5 (seeded)
    assert set(task._last_terms) == {"loss_ce", "loss_mask", "loss_dice", "loss_pixel_insdis", "loss_aux_semantic"}


def test_eval_panoptic_is_per_image_at_its_real_size():
    task, data = _tiny_task()
    task.eval()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        results = task.panoptic(task(batch), batch)
    assert len(results) == len(batch.sizes)
    for (segment_map, _), size in zip(results, batch.sizes, strict=True):
        assert tuple(segment_map.shape) == tuple(size)


def test_wrong_batch_type_is_refused():
    task, _ = _tiny_task()
    with pytest.raises(TypeError, match="PanopticBatch"):
        task.unpack((torch.zeros(1, 3, 48, 48), torch.zeros(1)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run dir after ``fit`` and ``test`` of pipelines/vision/tiny_kmax.yaml (scenes rendered in memory)."""
    run_dir = tmp_path_factory.mktemp("kmax") / "tiny"
    common = ["--config", str(TINY), "--run_dir", str(run_dir)]
    main(["fit", *common])
    main(["test", *common, "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt")])
    return run_dir


@pytest.mark.slow
def test_tiny_pipeline_logs_pq_and_loss_terms(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for stage in ("val", "test"):
        for key in ("pq", "sq", "rq", "pq_th", "pq_st"):
            assert 0.0 <= metrics[stage][key] <= 1.0, (stage, key)
    assert {"ce", "mask", "dice", "pixel_insdis", "aux_semantic"} <= set(metrics["train"])
    ckpt = load_checkpoint_file(trained / "checkpoints" / "best.ckpt")
    assert ckpt["state_dict"]["is_thing"].tolist() == [True] * 5 + [False] * 3  # kept for predict


def _predict(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *args])
    return exit_info.value.code


@pytest.mark.slow
def test_predict_writes_png_json_and_overlays_and_never_overwrites(trained, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (48, 48)), ("b.jpg", (37, 61))):  # any size, not the training one
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / name)
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    ckpt = str(trained / "checkpoints" / "best.ckpt")
    assert _predict("--ckpt", ckpt, str(images), "--out-dir", str(out)) == 1  # the broken file is reported
    err = capsys.readouterr().err
    assert "broken.png" in err
    payload = json.loads((out / "segments.json").read_text())
    assert [a["file_name"] for a in payload["annotations"]] == ["a.png", "b.png"]
    assert len(payload["categories"]) == 8
    for annotation, size in zip(payload["annotations"], ((48, 48), (37, 61)), strict=True):
        ids = rgb2id(np.asarray(Image.open(out / "panoptic" / annotation["file_name"]).convert("RGB")))
        assert ids.shape == size  # the input's own resolution
        assert {s["id"] for s in annotation["segments_info"]} == set(np.unique(ids).tolist()) - {0}
        assert Image.open(out / "overlays" / annotation["file_name"]).size == size[::-1]
    before = (out / "segments.json").read_bytes()
    assert _predict("--ckpt", ckpt, str(images / "a.png"), "--out-dir", str(out)) != 0
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "segments.json").read_bytes() == before
    assert _predict("--ckpt", ckpt, str(images / "a.png")) != 0  # a segmentation checkpoint needs --out-dir
    assert "--out-dir" in capsys.readouterr().err

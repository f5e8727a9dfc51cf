"""Panoptic data of kMaX-DeepLab: COCO panoptic reader, instances converter, generated scenes, transforms, collate,
the data module and the prediction writers.

Real files come from ../shared/data/vision (``coco_panoptic_sample``, ``tiny_coco``); those tests skip without it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from formers.vision.segmentation import io as pio
from formers.vision.segmentation.data import (
    PanopticBatch,
    PanopticDataModule,
    PanopticTransform,
    collate_panoptic,
    eval_transform_from_state,
    make_targets,
)
from formers.vision.segmentation.panoptic import (
    PanopticFormatError,
    PanopticMeta,
    convert_instances,
    decode_rle,
    id2rgb,
    instances_to_panoptic,
    load_panoptic,
    rasterize_annotation,
    read_coco_instances,
    read_coco_panoptic,
    rgb2id,
    segments_to_panoptic,
)
from formers.vision.segmentation.panoptic import main as panoptic_main
from formers.vision.segmentation.scenes import SCENE_META, render_scene, write_scenes
from formers.vision.segmentation.scenes import main as scenes_main

REPO = Path(__file__).resolve().parents[2]
VISION = REPO.parent / "shared" / "data" / "vision"
SAMPLE = VISION / "coco_panoptic_sample"
TINY = VISION / "tiny_coco"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/vision/coco_panoptic_sample is absent")
needs_tiny = pytest.mark.skipif(not TINY.is_dir(), reason="../shared/data/vision/tiny_coco is absent")


def _sample():
    return read_coco_panoptic(SAMPLE / "panoptic_examples.json", SAMPLE / "panoptic_examples", SAMPLE / "input_images")


# ------------------------------------------------------------------------------------------------ COCO panoptic


def test_rgb_id_roundtrip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 16757838, 2**24 - 1]])
    assert (rgb2id(id2rgb(ids)) == ids).all()
    assert tuple(id2rgb(np.array(256 + 2 * 65536))) == (0, 1, 2)
    with pytest.raises(ValueError, match="2\\^24"):
        id2rgb(np.array([2**24]))


@needs_sample
def test_coco_panoptic_sample_reader():
    records, meta = _sample()
    assert meta.num_classes == 133 and sum(meta.is_thing) == 80
    assert meta.contiguous(1) == 0 and meta.contiguous(92) == 80 and meta.names[0] == "person"
    assert all(meta.is_thing[:80]) and not any(meta.is_thing[80:])  # the file lists things first
    assert [len(r.segments_info) for r in records] == [18, 32]
    for rec in records:
        pan = load_panoptic(rec, meta)
        assert pan.shape == (rec.height, rec.width, 2) and pan.dtype == np.int64
        ids = rgb2id(np.asarray(Image.open(rec.png_path).convert("RGB")))
        thing_index = 0
        for seg in rec.segments_info:
            region = ids == seg["id"]
            assert region.sum() == seg["area"]  # every segment's pixel count equals its JSON area
            k = meta.contiguous(seg["category_id"])
            if seg["iscrowd"]:
                assert (pan[region, 0] == -1).all()  # crowd -> void
                continue
            if meta.is_thing[k]:
                thing_index += 1
            expected = (k, thing_index if meta.is_thing[k] else 0)
            assert (pan[region] == np.array(expected)).all()
        crowd = sum(s["area"] for s in rec.segments_info if s["iscrowd"])
        assert (pan[..., 0] == -1).sum() == (ids == 0).sum() + crowd


@needs_sample
def test_coco_panoptic_errors(tmp_path):
    records, meta = _sample()
    rec = records[0]
    id_map = rgb2id(np.asarray(Image.open(rec.png_path).convert("RGB")))
    with pytest.raises(PanopticFormatError, match=r"000000142238.png.*\[3937500\].*does not list"):
        segments_to_panoptic(id_map, rec.segments_info[1:], meta, str(rec.png_path))
    bogus = [*rec.segments_info, {"id": 7, "category_id": 1, "iscrowd": 0}]
    with pytest.raises(PanopticFormatError, match="segment 7 .*no pixel"):
        segments_to_panoptic(id_map, bogus, meta, "x.png")
    data = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    data["annotations"][1]["segments_info"][0]["category_id"] = 999
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(PanopticFormatError, match=r"000000439180.png segment 3937500 has category_id 999"):
        read_coco_panoptic(tmp_path / "bad.json", SAMPLE / "panoptic_examples", SAMPLE / "input_images")
    (tmp_path / "images").mkdir()
    shutil.copy(SAMPLE / "input_images" / "000000142238.jpg", tmp_path / "images")
    with pytest.raises(FileNotFoundError, match=r"images/000000439180.jpg"):
        read_coco_panoptic(SAMPLE / "panoptic_examples.json", SAMPLE / "panoptic_examples", tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        read_coco_panoptic(tmp_path / "nowhere.json", SAMPLE / "panoptic_examples", SAMPLE / "input_images")


# ------------------------------------------------------------------------------------------------ COCO instances


def _rle_string(counts: list[int]) -> str:
    """pycocotools' rleToString, step by step (deltas from index 3, 5 bits per character, continuation bit 0x20)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if c & 0x10 else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_decode_rle_list_and_string():
    mask = np.zeros((5, 4), dtype=bool)
    mask[1:4, 1] = True
    mask[0:2, 3] = True
    flat = mask.T.ravel()  # column-major
    counts, value, run = [], False, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    assert (decode_rle({"size": [5, 4], "counts": counts}) == mask).all()
    assert (decode_rle({"size": [5, 4], "counts": _rle_string(counts)}) == mask).all()
    big = [3, 40, 1000, 17, 2, 900, 38]  # large and shrinking runs: negative deltas
    decoded = decode_rle({"size": [sum(big), 1], "counts": _rle_string(big)})
    assert decoded.sum() == 40 + 17 + 900
    with pytest.raises(PanopticFormatError, match="sum to"):
        decode_rle({"size": [5, 5], "counts": [1, 2]})


@needs_tiny
def test_instances_to_panoptic_tiny_coco(tmp_path):
    data = json.loads((TINY / "annotations" / "instances_val2017.json").read_text())
    crowd_images = sorted({a["image_id"] for a in data["annotations"] if a["iscrowd"]})[:2]
    plain = [i["id"] for i in data["images"] if i["id"] not in crowd_images][:1]
    keep = set(crowd_images + plain)
    small = {**data, "images": [i for i in data["images"] if i["id"] in keep]}
    small["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(small))
    records, meta = read_coco_instances(tmp_path / "annotations" / "instances_val2017.json", TINY / "val2017")
    assert meta.num_classes == 80 and all(meta.is_thing) and len(records) == 3
    for rec in records:
        id_map, segments = instances_to_panoptic(rec)
        pan = segments_to_panoptic(id_map, segments, meta, rec.name)
        solid = [a for a in rec.annotations if not a["iscrowd"]]
        things = [s for s in segments if not s["iscrowd"]]
        assert len(things) <= len(solid) and len(things) >= len(solid) - 2  # fully covered instances are dropped
        assert len(np.unique(pan[pan[..., 0] >= 0], axis=0)) == len(things)  # one (category, instance) per thing
        for seg in segments:
            assert (id_map == seg["id"]).sum() == seg["area"] > 0
            if seg["iscrowd"]:
                assert (pan[id_map == seg["id"], 0] == -1).all()  # crowd -> void
        # the smallest instance is painted last: it keeps all its rasterised pixels
        smallest = min(solid, key=lambda a: (a["area"], -a["id"]))
        painted = np.unique(id_map[rasterize_annotation(smallest, rec.height, rec.width)])
        assert len(painted) == 1 and painted[0] == len(rec.annotations)  # painted last, fully kept
        assert next(s for s in segments if s["id"] == painted[0])["category_id"] == smallest["category_id"]
    assert sum(s["iscrowd"] for rec in records for s in instances_to_panoptic(rec)[1]) >= 2
    # the command line: PNG + JSON, readable by the panoptic reader, never overwritten
    out = tmp_path / "out"
    args = ["convert-instances", "--instances", str(tmp_path / "annotations" / "instances_val2017.json")]
    args += ["--images", str(TINY / "val2017"), "--out", str(out), "--no-progress"]
    assert panoptic_main(args) == 0
    converted, meta2 = read_coco_panoptic(
        out / "annotations" / "panoptic_val2017.json", out / "panoptic_val2017", TINY / "val2017"
    )
    assert meta2.category_ids == meta.category_ids and len(converted) == 3
    for rec, conv in zip(records, converted, strict=True):
        assert (load_panoptic(conv, meta2) == segments_to_panoptic(*instances_to_panoptic(rec), meta, "")).all()
    before = (out / "annotations" / "panoptic_val2017.json").read_bytes()
    assert panoptic_main(args) == 1  # refuses: the JSON exists
    assert (out / "annotations" / "panoptic_val2017.json").read_bytes() == before
    with pytest.raises(FileExistsError, match="panoptic_val2017.json exists"):
        convert_instances(tmp_path / "annotations" / "instances_val2017.json", TINY / "val2017", out, progress=False)


# ------------------------------------------------------------------------------------------------ scenes


def test_scenes_deterministic_and_well_formed():
    a, b = render_scene(5, seed=3), render_scene(5, seed=3)
    assert (a.image == b.image).all() and (a.panoptic == b.panoptic).all() and a.segments_info == b.segments_info
    c = render_scene(5, seed=4)
    assert not (a.image == c.image).all()
    assert not (render_scene(5, seed=3, split="val").image == a.image).all()
    occluded = truncated = 0
    for i in range(24):
        scene = render_scene(i, seed=0, size=(48, 64))
        assert scene.image.shape == (48, 64, 3) and scene.image.dtype == np.uint8
        listed = {s["id"] for s in scene.segments_info}
        assert set(np.unique(scene.id_map)) - {0} == listed
        for seg in scene.segments_info:
            assert (scene.id_map == seg["id"]).sum() == seg["area"] > 0
        things = [s for s in scene.segments_info if SCENE_META.is_thing[SCENE_META.contiguous(s["category_id"])]]
        assert len(things) <= 6
        occluded += any(s["area"] < scene.full_areas[s["id"]] for s in things)
        truncated += any(s["bbox"][0] == 0 or s["bbox"][0] + s["bbox"][2] == 64 for s in things)
        assert (scene.panoptic == segments_to_panoptic(scene.id_map, scene.segments_info, SCENE_META)).all()
    assert occluded >= 3 and truncated >= 3  # occlusions and things cut by the border are common


def test_scenes_cli_writes_coco_panoptic(tmp_path):
    out = tmp_path / "scenes"
    assert (
        scenes_main(["--out", str(out), "--train", "3", "--val", "2", "--test", "0", "--size", "40", "--no-progress"])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations",
        "panoptic_categories.json",
        "panoptic_train",
        "panoptic_val",
        "train",
        "val",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    records, meta = read_coco_panoptic(out / "annotations" / "panoptic_val.json", out / "panoptic_val", out / "val")
    assert meta == SCENE_META
    for i, rec in enumerate(records):
        scene = render_scene(i, split="val", size=40)
        assert (load_panoptic(rec, meta) == scene.panoptic).all()
        assert (np.asarray(Image.open(rec.image_path)) == scene.image).all()  # lossless PNG
    dm = PanopticDataModule(source="scenes", root=str(out), scene_size=40, batch_size=2)
    assert dm.model_sizes() == {"num_classes": 8} and dm.crop_size == (40, 40)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 3 and dm.dataset("test").source is dm.dataset("val").source  # no test: val
    sample = dm.dataset("val")[1]
    assert (sample["panoptic"].numpy() == render_scene(1, split="val", size=40).panoptic).all()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_scenes(out, {"train": 1}, size=40, progress=False)
    assert scenes_main(["--out", str(out), "--train", "1", "--no-progress"]) == 1


# ------------------------------------------------------------------------------------------------ transforms


def _labelled(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image whose colour encodes its (category, instance) labels, void in a corner."""
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 4, size=(height // 5 + 1, width // 5 + 1)).repeat(5, 0).repeat(5, 1)[:height, :width]
    inst = np.where(cat < 2, (np.arange(width)[None, :] // 9 + 1).repeat(height, 0), 0)
    cat[:3, :3] = -1
    pan = np.stack([cat, inst], -1).astype(np.int64)
    image = np.stack([(cat + 1) * 40, inst * 20, np.full_like(cat, 7)], -1).astype(np.uint8)
    return image, pan


def test_train_transform_flip_crop_pad():
    image, pan = _labelled(30, 44)
    flip = PanopticTransform(train=True, crop_size=(30, 44), min_scale=1.0, max_scale=1.0, hflip=1.0)
    out = flip(image, pan)
    assert out["size"] == (30, 44)
    assert (out["panoptic"].numpy() == pan[:, ::-1]).all()
    expected = (torch.as_tensor(image[:, ::-1].copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.allclose(out["image"], expected)
    # scale jitter: crop to 32x32 or pad to it; labels follow the image; padding is void and zero
    tf = PanopticTransform(train=True, crop_size=32, min_scale=0.3, max_scale=2.0)
    gen = torch.Generator().manual_seed(0)
    seen_pad = seen_crop = False
    for _ in range(20):
        out = tf(image, pan, generator=gen)
        h, w = out["size"]
        assert out["image"].shape == (3, 32, 32) and out["panoptic"].shape == (32, 32, 2)
        assert (out["panoptic"][h:, :, 0] == -1).all() and (out["panoptic"][:, w:, 0] == -1).all()
        assert (out["image"][:, h:] == 0).all() and (out["image"][:, :, w:] == 0).all()
        seen_pad |= h < 32 or w < 32
        seen_crop |= h == 32 and w == 32
        real = out["panoptic"][:h, :w]
        assert set(real[..., 0].unique().tolist()) <= {-1, 0, 1, 2, 3}
    assert seen_pad and seen_crop
    colour = PanopticTransform(train=True, crop_size=(30, 44), color_aug=True, min_scale=1, max_scale=1, hflip=0)
    for _ in range(4):
        out = colour(image, pan, generator=gen)
        assert out["image"].abs().max() <= 1 and (out["panoptic"] == torch.as_tensor(pan)).all()  # colours only
    # evaluation: long side resized, labels nearest
    ev = PanopticTransform(train=False, eval_size=22)
    out = ev(image, pan)
    assert out["size"] == (15, 22) and out["panoptic"].shape == (15, 22, 2)
    assert (out["panoptic"][..., 0] == torch.as_tensor(pan[1::2, 1::2, 0])).all()  # exact 2x: centre pixels
    padded = PanopticTransform(train=False, pad_size=(40, 48))(image)
    assert padded["image"].shape == (3, 40, 48) and padded["size"] == (30, 44)
    assert (padded["panoptic"][..., 0] == -1).all()  # no labels: all void


# ------------------------------------------------------------------------------------------------ collate


@pytest.mark.parametrize("sizes", [[(37, 50), (45, 29)], [(33, 33)], [(17, 64), (64, 17), (41, 41)]])
def test_collate_shapes_padding_and_stride4_targets(sizes):
    samples = []
    for i, (h, w) in enumerate(sizes):
        image, pan = _labelled(h, w, seed=i)
        sample = PanopticTransform(train=False)(image, pan)
        sample["name"] = f"im{i}"
        samples.append(sample)
    batch = collate_panoptic(samples, num_classes=4)
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    assert isinstance(batch, PanopticBatch) and batch.batch_size == len(sizes)
    assert batch.images.shape == (len(sizes), 3, height, width)
    assert batch.pixel_mask.shape == (len(sizes), height, width) and batch.panoptic.shape == (
        len(sizes),
        height,
        width,
        2,
    )
    assert batch.sizes == sizes and batch.names == [f"im{i}" for i in range(len(sizes))]
    hs, ws = math.ceil(height / 4), math.ceil(width / 4)
    for i, (h, w) in enumerate(sizes):
        assert batch.pixel_mask[i, :h, :w].all() and batch.pixel_mask[i].sum() == h * w
        assert (batch.images[i, :, h:] == 0).all() and (batch.images[i, :, :, w:] == 0).all()
        assert (batch.panoptic[i, h:, :, 0] == -1).all() and (batch.panoptic[i, :h, :w] == samples[i]["panoptic"]).all()
        t = batch.targets[i]
        assert t["masks"].shape[1:] == (hs, ws) and t["masks"].dtype == torch.bool
        assert t["semantic"].shape == (hs, ws) and t["labels"].dtype == torch.int64
        sub = batch.panoptic[i, ::4, ::4]
        assert (t["semantic"] == torch.where(sub[..., 0] >= 0, sub[..., 0], 4)).all()
        assert (t["semantic"][math.ceil(h / 4) :] == 4).all() and (t["semantic"][:, math.ceil(w / 4) :] == 4).all()
        assert t["masks"].sum(0).max() <= 1 and (t["masks"].any(0) == (sub[..., 0] >= 0)).all()
        for label, mask in zip(t["labels"], t["masks"], strict=True):
            values = sub[mask]
            assert (values[:, 0] == label).all() and len(values.unique(dim=0)) == 1  # one segment per mask
    # rounding the padded size
    assert collate_panoptic(samples, 4, size_divisibility=32).images.shape[-2:] == (
        math.ceil(height / 32) * 32,
        math.ceil(width / 32) * 32,
    )
    plus = collate_panoptic(samples, 4, size_divisibility=32, plus_one=True)
    assert all((s - 1) % 32 == 0 and s >= m for s, m in zip(plus.images.shape[-2:], (height, width), strict=True))
    moved = batch.to("cpu")
    assert moved.targets[0]["masks"].dtype == torch.bool


def test_make_targets_drops_segments_missing_from_the_subsampled_map():
    pan = torch.full((9, 9, 2), -1, dtype=torch.int64)
    pan[..., 1] = 0
    pan[1:3, 1:3] = torch.tensor([2, 1])  # rows/cols 1-2: never on the stride-4 grid (0, 4, 8)
    pan[4:9, 4:9] = torch.tensor([2, 2])
    pan[0, :] = torch.tensor([5, 0])
    t = make_targets(pan, num_classes=6)
    assert t["labels"].tolist() == [2, 5] and t["masks"].shape == (2, 3, 3)
    with pytest.raises(ValueError, match="num_classes is 3"):
        make_targets(pan, num_classes=3)


# ------------------------------------------------------------------------------------------------ data module


def test_data_module_scenes_setup_and_state():
    dm = PanopticDataModule(
        batch_size=3, num_train=7, num_val=4, num_test=2, scene_size=48, min_scale=0.5, max_scale=1.5
    )
    assert dm.model_sizes() == {"num_classes": 8} and dm.meta == SCENE_META
    dm.setup("fit")
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 7 scenes, batch 3, the partial last batch dropped
    batch = batches[0]
    assert batch.images.shape == (3, 3, 48, 48) and batch.images.min() >= -1 and batch.images.max() <= 1
    assert all(t["masks"].shape[1:] == (12, 12) for t in batch.targets)
    val = next(iter(dm.val_dataloader()))
    assert val.sizes == [(48, 48)] * 3 and val.pixel_mask.all()
    assert len(dm.dataset("test")) == 2
    state = dm.state_dict()
    torch.save(state, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain types only: predict loads checkpoints this way
    assert PanopticMeta.from_dict(loaded["meta"]) == SCENE_META
    tf = eval_transform_from_state(loaded)
    assert tf.config() == dm.eval_transform.config()
    other = PanopticDataModule(batch_size=2)
    other.load_state_dict(loaded)
    bad = dict(loaded, meta={**loaded["meta"], "names": ["x"] * 8})
    with pytest.raises(ValueError, match="trained on classes"):
        other.load_state_dict(bad)


def test_data_module_errors(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        PanopticDataModule(source="voc")
    with pytest.raises(ValueError, match="needs a root"):
        PanopticDataModule(source="coco_panoptic")
    missing = PanopticDataModule(source="coco_panoptic", root=str(tmp_path / "absent"))
    assert missing.model_sizes() == {}
    with pytest.raises(FileNotFoundError, match="absent"):
        missing.setup("fit")
    (tmp_path / "empty").mkdir()
    dm = PanopticDataModule(source="coco_panoptic", root=str(tmp_path / "empty"), train_split="train2017")
    with pytest.raises(FileNotFoundError, match=r"panoptic_train2017\.json"):
        dm.setup("fit")


@needs_sample
def test_data_module_coco_panoptic_sample():
    dm = PanopticDataModule(
        source="coco_panoptic",
        root=str(SAMPLE),
        train_split="examples",
        val_split="examples",
        image_dir="input_images",
        crop_size=129,
        batch_size=2,
        eval_size=160,
    )
    assert dm.model_sizes() == {"num_classes": 133}
    dm.setup("fit")
    assert len(dm.dataset("test")) == 2  # no test split: val
    batch = next(iter(dm.val_dataloader()))
    assert batch.sizes == [(107, 160), (90, 160)] and batch.images.shape == (2, 3, 107, 160)
    assert batch.names == ["000000142238", "000000439180"]
    assert all((t["labels"] >= 0).all() and (t["labels"] < 133).all() for t in batch.targets)
    train = next(iter(dm.train_dataloader()))
    assert train.images.shape == (2, 3, 129, 129)


@needs_tiny
def test_data_module_coco_instances():
    dm = PanopticDataModule(
        source="coco_instances",
        root=str(TINY),
        train_split="train2017",
        val_split="val2017",
        batch_size=2,
        max_per_split=2,
        eval_size=96,
    )
    assert dm.model_sizes() == {"num_classes": 80} and all(dm.meta.is_thing)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert max(batch.sizes[0]) == 96 and all(len(t["labels"]) > 0 for t in batch.targets)


# ------------------------------------------------------------------------------------------------ writers


def test_writers(tmp_path):
    scene = render_scene(1, size=40)
    segments = [
        {
            "id": s["id"],
            "category_id": SCENE_META.contiguous(s["category_id"]),
            "score": 0.9,
            "isthing": SCENE_META.is_thing[SCENE_META.contiguous(s["category_id"])],
        }
        for s in scene.segments_info
    ]
    png = pio.write_panoptic_png(tmp_path / "p.png", torch.as_tensor(scene.id_map))
    assert (rgb2id(np.asarray(Image.open(png))) == scene.id_map).all()
    ann = pio.panoptic_annotation(1, "p.png", scene.id_map, segments, SCENE_META)
    assert [(s["id"], s["category_id"], s["area"], s["bbox"]) for s in ann["segments_info"]] == [
        (s["id"], s["category_id"], s["area"], s["bbox"]) for s in scene.segments_info
    ]
    path = pio.write_segments_json(tmp_path / "seg.json", [ann], SCENE_META)
    data = json.loads(path.read_text())
    assert (
        data["categories"] == SCENE_META.coco_categories()
        and data["annotations"][0]["segments_info"][0]["score"] == 0.9
    )
    records, meta = read_coco_panoptic(path, tmp_path, tmp_path, check_files=False)
    assert (load_panoptic(records[0], meta) == scene.panoptic).all()
    over = pio.overlay(scene.image, scene.id_map, segments, SCENE_META, labels=True)
    assert over.shape == scene.image.shape and over.dtype == np.uint8 and not (over == scene.image).all()
    pio.write_overlay(tmp_path / "o.png", scene.image, scene.id_map, segments, SCENE_META)
    for call in (
        lambda: pio.write_panoptic_png(png, scene.id_map),
        lambda: pio.write_segments_json(path, [ann], SCENE_META),
        lambda: pio.write_overlay(tmp_path / "o.png", scene.image, scene.id_map, segments, SCENE_META),
    ):
        with pytest.raises(FileExistsError, match="refusing to overwrite"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "p.png", "seg.json"]  # no temporary files left

"""Generated panoptic scenes: the embedded default data of kMaX-DeepLab (no download, deterministic from a seed).

Each image (default 96 x 96, any height / width) is a landscape of 1-3 *stuff* regions stacked from top to bottom in
a random order, separated by wavy random boundaries, with 1-6 *things* on top:

* stuff (textures, not flat colours): ``sky`` (a light-blue vertical gradient with soft white clouds), ``grass``
  (green with fine vertical blade noise), ``water`` (dark blue-teal with horizontal ripples). Sky and water share
  hues, so texture matters;
* things: ``disc``, ``square``, ``triangle``, ``ring`` (an annulus: the background shows through its hole) and
  ``cross``, rotated, of radius 7-22 % of the short side, centred anywhere in [-5 %, 105 %] of the frame (so some
  are cut by the border), drawn back to front (later ones occlude earlier ones). Each class has a colour family
  (disc red, square yellow, triangle magenta, ring orange, cross pale) but 25 % of the instances take another
  thing's family, so the shape must be read; each instance gets a colour jitter and a linear shading;
* a void (unlabelled) blob of grey noise under the things in 15 % of the images;
* a light blur and Gaussian pixel noise (sigma 3-10 / 255) over the whole image.

Instances whose visible part falls below ``max(16, 0.3 % of the image)`` pixels are removed (and the scene
re-composited), so every segment is visible and non-empty. Image ``i`` of split ``s`` uses
``numpy.random.default_rng([seed, split code, i])``: a scene is a pure function of (seed, split, index, size).

Classes (contiguous ids, things first): 0 disc, 1 square, 2 triangle, 3 ring, 4 cross, 5 sky, 6 grass, 7 water; their
COCO-style category ids are 1..8 (:data:`SCENE_META`). :func:`render_scene` gives the image, the ``(H, W, 2)``
(category, instance) ground truth -- the format of the COCO reader -- and the COCO ``segments_info``.

Command line (writes a COCO panoptic folder: ``annotations/panoptic_<split>.json``, ``panoptic_<split>/*.png``,
``<split>/*.png`` images, ``panoptic_categories.json``), atomically (a temporary sibling renamed at the end) and
refusing an existing non-empty ``--out``::

    python -m formers.vision.segmentation.scenes --out data/vision/scenes --train 2000 --val 200 --test 200
"""

from __future__ import annotations

import argparse
import colorsys
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from formers.vision.segmentation.panoptic import (
    PanopticMeta,
    id2rgb,
    mask_bbox,
    segments_to_panoptic,
    write_json_atomic,
)

__all__ = ["THINGS", "STUFF", "SCENE_META", "SPLIT_CODES", "Scene", "render_scene", "write_scenes", "main"]

THINGS = ("disc", "square", "triangle", "ring", "cross")
STUFF = ("sky", "grass", "water")
SCENE_META = PanopticMeta(
    names=THINGS + STUFF,
    is_thing=(True,) * len(THINGS) + (False,) * len(STUFF),
    category_ids=tuple(range(1, len(THINGS) + len(STUFF) + 1)),
    colors=(
        (220, 40, 40),
        (230, 200, 40),
        (200, 60, 200),
        (240, 140, 40),
        (235, 235, 235),
        (120, 180, 240),
        (60, 160, 60),
        (30, 80, 150),
    ),
)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# colour families of the things: (hue centre, saturation range, value range)
_FAMILIES = {
    "disc": (0.0, (0.65, 0.95), (0.70, 0.95)),
    "square": (0.14, (0.65, 0.95), (0.80, 1.00)),
    "triangle": (0.84, (0.55, 0.90), (0.65, 0.95)),
    "ring": (0.07, (0.70, 0.95), (0.80, 1.00)),
    "cross": (0.60, (0.00, 0.25), (0.85, 1.00)),
}


@dataclass
class Scene:
    """A rendered scene: image ``(H, W, 3)`` uint8, ``id_map`` ``(H, W)`` int32 segment ids (0 void), its COCO
    ``segments_info`` (contiguous ``category_id`` + 1 = COCO id), the ``(H, W, 2)`` ground truth, and per thing
    segment id its unoccluded in-frame area (``full_areas``; > ``area`` when occluded)."""

    name: str
    image: np.ndarray
    id_map: np.ndarray
    segments_info: list[dict[str, Any]]
    panoptic: np.ndarray
    full_areas: dict[int, int]


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 16 or width < 16:
        raise ValueError(f"scene size must be at least 16 x 16, got {height} x {width}")
    return height, width


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [-1, 1] with ``cells`` (rows, cols) control points."""
    grid = rng.uniform(-1.0, 1.0, size=(cells[0] + 1, cells[1] + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _stuff_texture(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    if kind == "sky":
        top = np.array([rng.uniform(70, 120), rng.uniform(130, 175), rng.uniform(210, 250)], np.float32)
        bottom = np.array([rng.uniform(160, 205), rng.uniform(195, 225), rng.uniform(235, 255)], np.float32)
        img = top + (bottom - top) * ys[..., None] + 0 * xs[..., None]
        clouds = np.clip(_smooth_noise(rng, height, width, (3, 5)) * 1.6 - 0.4, 0.0, 1.0)[..., None]
        img = img * (1 - 0.7 * clouds) + 245.0 * 0.7 * clouds
    elif kind == "grass":
        base = np.array([rng.uniform(40, 90), rng.uniform(120, 175), rng.uniform(30, 70)], np.float32)
        blades = rng.normal(0.0, 1.0, size=(-(-height // 3), width)).astype(np.float32)
        blades = np.repeat(blades, 3, axis=0)[:height]  # short vertical strokes
        patches = _smooth_noise(rng, height, width, (4, 4))
        img = base * (1 + 0.18 * blades[..., None] + 0.15 * patches[..., None])
    elif kind == "water":
        base = np.array([rng.uniform(15, 50), rng.uniform(60, 110), rng.uniform(120, 170)], np.float32)
        freq, phase = rng.uniform(10, 22), rng.uniform(0, 2 * np.pi)
        wobble = _smooth_noise(rng, height, width, (2, 3))
        ripples = np.sin(2 * np.pi * freq * ys + 2.0 * wobble + phase + 0 * xs)
        img = base * (1 + 0.25 * ripples[..., None]) + 25.0 * np.clip(ripples, 0.8, 1.0)[..., None] - 20.0
    else:
        raise ValueError(f"unknown stuff {kind!r}")
    return np.broadcast_to(img, (height, width, 3)).astype(np.float32)


def _shape_mask(
    kind: str, ys: np.ndarray, xs: np.ndarray, cx: float, cy: float, r: float, angle: float, rng
) -> np.ndarray:
    dx, dy = xs - cx, ys - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    if kind == "disc":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        a = 0.8 * r
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if kind == "triangle":  # equilateral, circumradius r: inside the three half-planes at distance r/2
        inside = np.ones(dx.shape, dtype=bool)
        for k in range(3):
            t = angle + 2 * np.pi * k / 3
            inside &= dx * np.cos(t) + dy * np.sin(t) <= 0.5 * r
        return inside
    if kind == "ring":
        d2 = dx * dx + dy * dy
        inner = r * rng.uniform(0.45, 0.65)
        return (d2 <= r * r) & (d2 >= inner * inner)
    if kind == "cross":
        w = 0.3 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= w)) | ((np.abs(u) <= w) & (np.abs(v) <= r))
    raise ValueError(f"unknown thing {kind!r}")


def _thing_colour(kind: str, rng: np.random.Generator) -> np.ndarray:
    family = kind if rng.random() >= 0.25 else THINGS[int(rng.integers(len(THINGS)))]
    hue, sat, val = _FAMILIES[family]
    h = (hue + rng.uniform(-0.035, 0.035)) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return np.array(rgb, dtype=np.float32) * 255.0


def render_scene(
    index: int, *, seed: int = 0, split: str = "train", size: int | tuple[int, int] = 96, name: str | None = None
) -> Scene:
    """Render scene ``index`` of ``split`` (a pure function of its arguments)."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
    height, width = _size(size)
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    short = min(height, width)

    # stuff: 1-3 classes in a random top-to-bottom order, wavy boundaries
    num_stuff = int(rng.choice([1, 2, 3], p=[0.15, 0.5, 0.35]))
    stuff = [int(k) for k in rng.permutation(len(STUFF))[:num_stuff]]
    cuts = np.sort(rng.uniform(0.2, 0.8, size=num_stuff - 1)) * height
    region = np.zeros((height, width), dtype=np.int64)
    for cut in cuts:
        amp, freq, phase = rng.uniform(0.02, 0.1) * height, rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
        wander = _smooth_noise(rng, 1, width, (1, 4))[0] * 0.05 * height
        boundary = cut + amp * np.sin(2 * np.pi * freq * xs[0] / width + phase) + wander
        region += ys >= boundary[None, :]
    image = np.zeros((height, width, 3), dtype=np.float32)
    # stuff segments get ids 1..num_stuff, things follow
    base_ids = np.zeros((height, width), dtype=np.int32)
    for slot, k in enumerate(stuff):
        sel = region == slot
        image[sel] = _stuff_texture(STUFF[k], rng, height, width)[sel]
        base_ids[sel] = slot + 1
    if rng.random() < 0.15:  # a void blob: unlabelled clutter under the things
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.08, 0.2) * height, rng.uniform(0.08, 0.2) * width
        blob = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0 + 0.3 * _smooth_noise(rng, height, width, (3, 3))
        grey = rng.uniform(90, 170) + 35 * _smooth_noise(rng, height, width, (6, 6))
        image[blob] = grey[blob][:, None]
        base_ids[blob] = 0

    # things: rendered once, composited back to front; too-small visible parts are dropped and re-composited
    things = []
    for _ in range(int(rng.integers(1, 7))):
        kind = THINGS[int(rng.integers(len(THINGS)))]
        r = rng.uniform(0.07, 0.22) * short
        cx, cy = rng.uniform(-0.05, 1.05) * width, rng.uniform(-0.05, 1.05) * height
        angle = rng.uniform(0, 2 * np.pi)
        mask = _shape_mask(kind, ys, xs, cx, cy, r, angle, rng)
        colour = _thing_colour(kind, rng)
        theta = rng.uniform(0, 2 * np.pi)
        shade = 1.0 + 0.25 * ((xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)) / max(r, 1.0)
        texture = colour[None, None, :] * np.clip(shade, 0.6, 1.4)[..., None]
        things.append((kind, mask, texture))
    min_area = max(16, int(0.003 * height * width))
    while True:
        owner = np.full((height, width), -1, dtype=np.int64)
        for j, (_, mask, _) in enumerate(things):
            owner[mask] = j
        visible = np.bincount(owner[owner >= 0], minlength=len(things)) if things else np.zeros(0, np.int64)
        small = [j for j in range(len(things)) if visible[j] < min_area]
        if not small:
            break
        del things[min(small, key=lambda j: (visible[j], j))]

    id_map = base_ids.copy()
    segments: list[dict[str, Any]] = []
    for slot, k in enumerate(stuff):
        segments.append({"id": slot + 1, "category_id": SCENE_META.category_ids[len(THINGS) + k], "iscrowd": 0})
    full_areas = {}
    for j, (kind, mask, texture) in enumerate(things):
        sid = num_stuff + 1 + j
        sel = owner == j
        image[sel] = texture[sel]
        id_map[sel] = sid
        segments.append({"id": sid, "category_id": SCENE_META.category_ids[THINGS.index(kind)], "iscrowd": 0})
        full_areas[sid] = int(mask.sum())
    areas = np.bincount(id_map.ravel(), minlength=num_stuff + len(things) + 1)
    segments = [s for s in segments if areas[s["id"]] > 0]  # a stuff band may be covered entirely
    for s in segments:
        s["area"] = int(areas[s["id"]])
        s["bbox"] = mask_bbox(id_map == s["id"])

    # a light blur (mix with the 3x3 box mean) and pixel noise
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    box = sum(padded[i : i + height, j : j + width] for i in range(3) for j in range(3)) / 9.0
    image = 0.5 * image + 0.5 * box
    image += rng.normal(0.0, rng.uniform(3, 10), size=image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    name = name or f"{split}_{index:06d}"
    panoptic = segments_to_panoptic(id_map, segments, SCENE_META, name)
    return Scene(name, image, id_map, segments, panoptic, full_areas)


def _refuse_existing(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; refusing to overwrite it (choose a new folder)")


def write_scenes(
    out: str | Path,
    counts: dict[str, int],
    *,
    seed: int = 0,
    size: int | tuple[int, int] = 96,
    progress: bool = True,
) -> Path:
    """Write scenes as a COCO panoptic folder ``out`` (see the module docstring); returns ``out``.

    The folder is assembled in a temporary sibling and renamed into place at the end: ``out`` either does not exist
    or is complete. An existing non-empty ``out`` is refused (``FileExistsError``), never replaced.
    """
    from tqdm import tqdm

    out = Path(out)
    for split, n in counts.items():
        if split not in SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_CODES)}")
        if n < 0:
            raise ValueError(f"the number of {split} scenes must be >= 0, got {n}")
    _refuse_existing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial.", dir=out.parent))
    try:
        height, width = _size(size)
        write_json_atomic(staging / "panoptic_categories.json", SCENE_META.coco_categories())
        (staging / "annotations").mkdir()
        total = sum(counts.values())
        with tqdm(total=total, desc=f"scenes -> {out.name}", unit="image", disable=not progress) as bar:
            for split, n in counts.items():
                if n == 0:
                    continue
                (staging / split).mkdir()
                (staging / f"panoptic_{split}").mkdir()
                images, annotations = [], []
                for i in range(n):
                    scene = render_scene(i, seed=seed, split=split, size=(height, width))
                    file_name = f"{scene.name}.png"
                    Image.fromarray(scene.image).save(staging / split / file_name)
                    Image.fromarray(id2rgb(scene.id_map)).save(staging / f"panoptic_{split}" / file_name)
                    images.append({"id": i, "file_name": file_name, "height": height, "width": width})
                    annotations.append({"image_id": i, "file_name": file_name, "segments_info": scene.segments_info})
                    bar.update(1)
                payload = {
                    "info": {"description": f"formers generated panoptic scenes, seed {seed}, split {split}"},
                    "images": images,
                    "annotations": annotations,
                    "categories": SCENE_META.coco_categories(),
                }
                write_json_atomic(staging / "annotations" / f"panoptic_{split}.json", payload)
        _refuse_existing(out)
        if out.is_dir():
            out.rmdir()  # empty: checked just above
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m formers.vision.segmentation.scenes",
        description="Write generated panoptic scenes as a COCO panoptic folder.",
    )
    parser.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--size", type=int, nargs="+", default=[96], help="side, or height width (default 96)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if len(args.size) not in (1, 2):
        parser.error("--size takes one or two integers")
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    try:
        out = write_scenes(
            args.out,
            {"train": args.train, "val": args.val, "test": args.test},
            seed=args.seed,
            size=size,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.train} + {args.val} + {args.test} scenes to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

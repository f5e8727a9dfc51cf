"""A generated image-classification dataset (rendered shapes), so the default pipeline runs offline.

Each image shows one filled shape of a class (:data:`SHAPES`) with a random bright colour, size, position and
rotation on a random dark background with clutter (thin lines and small dots, some of them bright). Shapes are drawn
with PIL at 4x the output size and downsampled (antialiasing). Everything derives from ``seed``: image ``i`` of a
split uses its own ``random.Random`` seeded from ``(seed, split, class, i)``, so a tree is reproducible byte for byte.

The output is a torchvision ImageFolder tree (PNG files)::

    <out>/train/<class>/00000.png ...
    <out>/test/<class>/00000.png ...
    <out>/.formers-generated             marker: this folder may be replaced by the next generation

``--out`` must be missing, empty, or a folder this generator made (it carries the marker): any other folder is
refused, never deleted.

Command line (the ``vision_data`` DVC stage)::

    python -m formers.vision.synthetic --out data/vision/shapes --train-per-class 400 --test-per-class 100
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from formers.core.runsafety import claim_output_dir

__all__ = ["SHAPES", "render_shape", "write_shapes_dataset", "main"]

SHAPES = ("circle", "square", "triangle", "star", "pentagon", "hexagon", "cross", "diamond")
_SUPERSAMPLE = 4
GENERATOR = "formers.vision.synthetic"


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / sides),
            cy + radius * math.sin(angle + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def _star(cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.42
        a = angle + math.pi * k / 5
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _cross(cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    w = radius * 0.36  # arm half-width
    outline = [(w, radius), (w, w), (radius, w), (radius, -w), (w, -w), (w, -radius)]
    outline += [(-x, -y) for x, y in outline]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in outline]


def _colour(rng: random.Random, bright: bool) -> tuple[int, int, int]:
    """A random RGB colour, bright (shapes) or dark (background, clutter): any hue, a clear contrast between them."""
    lo, hi = (140, 256) if bright else (0, 110)
    return (rng.randrange(lo, hi), rng.randrange(lo, hi), rng.randrange(lo, hi))


def render_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One ``size`` x ``size`` RGB image of ``shape`` with random colours, geometry and clutter."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if size < 8:
        raise ValueError(f"image size must be >= 8 pixels, got {size}")
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), _colour(rng, bright=False))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 4)):  # clutter: thin lines and small dots that never form a whole shape
        colour = _colour(rng, bright=rng.random() < 0.5)
        if rng.random() < 0.5:
            xy = [rng.uniform(0, big) for _ in range(4)]
            draw.line(xy, fill=colour, width=max(1, big // 64))
        else:
            x, y, r = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(big / 64, big / 24)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    radius = rng.uniform(0.25, 0.42) * big
    cx, cy = rng.uniform(radius, big - radius), rng.uniform(radius, big - radius)
    angle = rng.uniform(0, 2 * math.pi)
    fill = _colour(rng, bright=True)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "star":
        draw.polygon(_star(cx, cy, radius, angle), fill=fill)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, radius, angle), fill=fill)
    elif shape == "diamond":  # a rhombus: square stretched along one rotated axis
        a, b = radius, radius * 0.55
        cos, sin = math.cos(angle), math.sin(angle)
        pts = [(a, 0.0), (0.0, b), (-a, 0.0), (0.0, -b)]
        draw.polygon([(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in pts], fill=fill)
    else:
        sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
        draw.polygon(_polygon(cx, cy, radius, sides, angle), fill=fill)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def write_shapes_dataset(
    out: str | Path,
    *,
    train_per_class: int = 400,
    test_per_class: int = 100,
    size: int = 32,
    seed: int = 0,
    classes: tuple[str, ...] = SHAPES,
    progress: bool = True,
) -> Path:
    """Write the ImageFolder tree ``out/{train,test}/<class>/*.png``; returns ``out`` (``progress``: a tqdm bar on
    stderr, redrawn at most every 5 s).

    Raises:
        OutputOverwriteError: ``out`` is a file, or a non-empty folder this generator did not make (its contents are
            left alone); a folder it made earlier is replaced.
    """
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError(f"need at least one image per class and split, got {train_per_class} / {test_per_class}")
    out = claim_output_dir(out, GENERATOR)
    total = (train_per_class + test_per_class) * len(classes)
    with tqdm(total=total, desc=f"shapes -> {out.name}", unit="image", mininterval=5, disable=not progress) as bar:
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            for label, shape in enumerate(classes):
                folder = out / split / shape
                folder.mkdir(parents=True)
                for i in range(per_class):
                    rng = random.Random(f"{seed}/{split}/{label}/{i}")  # str seeds hash deterministically (sha512)
                    render_shape(shape, size, rng).save(folder / f"{i:05d}.png", optimize=False)
                    bar.update()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the synthetic shapes dataset as an ImageFolder tree.")
    parser.add_argument(
        "--out",
        default="data/vision/shapes",
        help="output folder: missing, empty, or made by this generator (replaced)",
    )
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = write_shapes_dataset(
            args.out,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            size=args.size,
            seed=args.seed,
        )
    except ValueError as err:  # OutputOverwriteError included
        parser.exit(1, f"error: {err}\n")
    print(f"wrote {len(SHAPES)} classes x ({args.train_per_class} train + {args.test_per_class} test) to {out}")


if __name__ == "__main__":
    main()

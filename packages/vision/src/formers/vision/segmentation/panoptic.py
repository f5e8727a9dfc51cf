"""The COCO panoptic format, formers' native panoptic format: reader, class metadata and a COCO-instances converter.

A COCO panoptic split is three things (panopticapi's format):

* a JSON file with ``categories`` (``id``, ``name``, ``isthing``, ``color``), ``images`` (``id``, ``file_name``,
  ``height``, ``width``) and ``annotations``: one per image, with the PNG's ``file_name`` and ``segments_info``
  (``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox``);
* a folder of PNGs whose RGB pixels encode the segment id, ``id = R + 256 G + 256^2 B`` (0: unlabelled / void);
* the image folder.

Contiguous class ids follow the order of the categories list (the JSON's own ``categories``, or a separate
``panoptic_coco_categories.json``). In COCO's files the 80 things come first, then the 53 stuff classes, so the
contiguous ids equal detectron2's (``thing_dataset_id_to_contiguous_id`` then stuff). :class:`PanopticMeta` keeps
the names, ``is_thing``, the COCO ids and the colours per contiguous class.

In memory an image's ground truth is an ``(H, W, 2)`` int64 array (category, instance) -- the input of torchmetrics'
``PanopticQuality``: channel 0 is the contiguous category, -1 for void (unlabelled pixels and crowd segments);
channel 1 numbers the thing segments of the image 1, 2, ... in ``segments_info`` order and is 0 for stuff (one
segment per stuff class, as COCO guarantees). Crowd regions are void here, as in the official kMaX training, which
drops them from the targets; panopticapi instead keeps them to excuse overlapping predictions of the same class (see
:mod:`formers.vision.segmentation.metrics`).

COCO *instances* annotations (polygons, RLE; things only) convert to panoptic with :func:`instances_to_panoptic`
(rule: crowd regions first, then the non-crowd instances from the largest to the smallest ``area``, ties by
annotation id, each painted over what is there, so a pixel goes to the smallest instance covering it; pixels left
only to a crowd region stay a crowd segment (void for training); fully covered instances are dropped). Polygons are
rasterised with Pillow's ``ImageDraw`` (pycocotools is not needed; its rasteriser differs on boundary pixels), RLE
(uncompressed ``counts`` lists and compressed strings) is decoded here. Command line::

    python -m formers.vision.segmentation.panoptic convert-instances \\
        --instances tiny_coco/annotations/instances_val2017.json --images tiny_coco/val2017 --out data/tiny_panoptic

writes ``<out>/annotations/panoptic_val2017.json`` and ``<out>/panoptic_val2017/*.png`` (the split name comes from
the instances file name), never overwriting an existing file; the images are not copied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "PanopticFormatError",
    "PanopticMeta",
    "PanopticRecord",
    "rgb2id",
    "id2rgb",
    "segments_to_panoptic",
    "read_coco_panoptic",
    "load_panoptic",
    "load_rgb",
    "read_coco_instances",
    "decode_rle",
    "rasterize_annotation",
    "instances_to_panoptic",
    "convert_instances",
    "write_json_atomic",
    "main",
]

VOID = -1


class PanopticFormatError(ValueError):
    """A panoptic dataset that does not follow the COCO panoptic format (names the file and the segment)."""


# ------------------------------------------------------------------------------------------------ class metadata


@dataclass(frozen=True)
class PanopticMeta:
    """Per contiguous class: name, thing or stuff, COCO category id, RGB colour.

    ``to_dict()`` / ``from_dict()`` give plain lists (saved in checkpoints, loaded with ``weights_only=True``).
    """

    names: tuple[str, ...]
    is_thing: tuple[bool, ...]
    category_ids: tuple[int, ...]
    colors: tuple[tuple[int, int, int], ...]
    _index: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.is_thing) == len(self.category_ids) == len(self.colors) == n):
            raise ValueError(
                f"PanopticMeta: {n} names, {len(self.is_thing)} is_thing, {len(self.category_ids)} category_ids and "
                f"{len(self.colors)} colors; one of each per class is needed"
            )
        if n == 0:
            raise ValueError("PanopticMeta: no classes")
        if len(set(self.category_ids)) != n:
            raise ValueError(f"PanopticMeta: duplicate category ids in {list(self.category_ids)}")
        self._index.update({cid: i for i, cid in enumerate(self.category_ids)})

    @property
    def num_classes(self) -> int:
        """K: things + stuff, void not counted."""
        return len(self.names)

    @property
    def thing_classes(self) -> set[int]:
        return {i for i, t in enumerate(self.is_thing) if t}

    @property
    def stuff_classes(self) -> set[int]:
        return {i for i, t in enumerate(self.is_thing) if not t}

    def contiguous(self, category_id: int) -> int:
        """The contiguous id of a COCO category id (``KeyError`` for an unknown one)."""
        return self._index[int(category_id)]

    def has_category(self, category_id: int) -> bool:
        return int(category_id) in self._index

    @classmethod
    def from_categories(cls, categories: Sequence[Mapping[str, Any]], *, things: bool | None = None) -> PanopticMeta:
        """From a COCO ``categories`` list, in its order (``things``: force ``isthing`` for lists without it)."""
        names, is_thing, ids, colors = [], [], [], []
        for k, cat in enumerate(categories):
            if "id" not in cat:
                raise PanopticFormatError(f"category {k} has no 'id': {dict(cat)}")
            ids.append(int(cat["id"]))
            names.append(str(cat.get("name", cat["id"])))
            is_thing.append(bool(things if things is not None else cat.get("isthing", 1)))
            color = cat.get("color")
            colors.append(tuple(int(c) for c in color) if color else default_color(k))
        return cls(tuple(names), tuple(is_thing), tuple(ids), tuple(colors))  # type: ignore[arg-type]

    def coco_categories(self) -> list[dict[str, Any]]:
        """The COCO panoptic ``categories`` list of these classes."""
        return [
            {"id": cid, "name": name, "isthing": int(thing), "color": list(color)}
            for cid, name, thing, color in zip(self.category_ids, self.names, self.is_thing, self.colors, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "is_thing": [bool(t) for t in self.is_thing],
            "category_ids": [int(c) for c in self.category_ids],
            "colors": [list(c) for c in self.colors],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> PanopticMeta:
        return cls(
            tuple(str(n) for n in state["names"]),
            tuple(bool(t) for t in state["is_thing"]),
            tuple(int(c) for c in state["category_ids"]),
            tuple(tuple(int(v) for v in c) for c in state["colors"]),  # type: ignore[misc]
        )


def default_color(k: int) -> tuple[int, int, int]:
    """A deterministic, well-spread colour for class ``k`` (golden-ratio hues)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65 + 0.35 * (k % 2), 0.95 - 0.25 * (k % 3 == 2))
    return (int(r * 255), int(g * 255), int(b * 255))


# ------------------------------------------------------------------------------------------------ id encoding


def rgb2id(color: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG pixels ``(..., 3)`` uint8 to segment ids ``R + 256 G + 256^2 B`` (int64)."""
    color = np.asarray(color)
    if color.ndim < 1 or color.shape[-1] != 3:
        raise ValueError(f"rgb2id expects (..., 3) RGB values, got shape {color.shape}")
    c = color.astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids (0 <= id < 2^24) to COCO panoptic PNG pixels ``(..., 3)`` uint8."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must be in [0, 2^24), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def segments_to_panoptic(
    id_map: np.ndarray, segments_info: Sequence[Mapping[str, Any]], meta: PanopticMeta, source: str = "<memory>"
) -> np.ndarray:
    """An ``(H, W)`` segment-id map and its ``segments_info`` to the ``(H, W, 2)`` (category, instance) array.

    Category: contiguous id, -1 for void (id 0) and crowd segments. Instance: 1, 2, ... over the non-crowd thing
    segments in ``segments_info`` order, 0 for stuff and void.

    Raises:
        PanopticFormatError: naming ``source`` and the segment, when the map holds an id with no ``segments_info``
            entry, an entry's id is absent from the map, an id repeats, or a category is unknown.
    """
    ids, inverse = np.unique(id_map, return_inverse=True)
    category = np.full(ids.shape, VOID, dtype=np.int64)
    instance = np.zeros(ids.shape, dtype=np.int64)
    position = {int(v): i for i, v in enumerate(ids)}
    seen: set[int] = set()
    next_instance = 1
    for seg in segments_info:
        sid = int(seg["id"])
        if sid in seen:
            raise PanopticFormatError(f"{source}: segment id {sid} appears twice in segments_info")
        seen.add(sid)
        if sid == 0:
            raise PanopticFormatError(f"{source}: segment id 0 is reserved for void")
        if sid not in position:
            raise PanopticFormatError(
                f"{source}: segment {sid} (category {seg.get('category_id')}) of segments_info has no pixel in the PNG"
            )
        cid = seg.get("category_id")
        if cid is None or not meta.has_category(cid):
            raise PanopticFormatError(
                f"{source}: segment {sid} has unknown category_id {cid!r} (known: {sorted(meta.category_ids)})"
            )
        if seg.get("iscrowd", 0):
            continue  # crowd -> void
        k = meta.contiguous(cid)
        category[position[sid]] = k
        if meta.is_thing[k]:
            instance[position[sid]] = next_instance
            next_instance += 1
    extra = sorted(int(v) for v in ids if v != 0 and int(v) not in seen)
    if extra:
        raise PanopticFormatError(
            f"{source}: the PNG holds segment ids {extra[:10]} that segments_info does not list "
            f"({len(extra)} unlisted; segments_info lists {sorted(seen)[:10]}...)"
        )
    inverse = inverse.reshape(id_map.shape)
    return np.stack([category[inverse], instance[inverse]], axis=-1)


# ------------------------------------------------------------------------------------------------ reader


@dataclass(frozen=True)
class PanopticRecord:
    """One image of a COCO panoptic split (paths and its ``segments_info``)."""

    name: str
    image_id: Any
    image_path: Path
    png_path: Path | None
    segments_info: tuple[dict[str, Any], ...]
    height: int | None = None
    width: int | None = None


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise PanopticFormatError(f"{path}: not a valid JSON file: {err}") from err


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file fully into an ``(H, W, 3)`` uint8 array (clear error naming a corrupt file)."""
    from formers.vision.data import load_image

    return np.asarray(load_image(path, "RGB"))


def read_coco_panoptic(
    json_path: str | Path,
    png_dir: str | Path,
    image_dir: str | Path,
    categories: str | Path | Sequence[Mapping[str, Any]] | None = None,
    *,
    check_files: bool = True,
) -> tuple[list[PanopticRecord], PanopticMeta]:
    """Read a COCO panoptic JSON into records (one per annotation, JSON order) and the class metadata.

    Args:
        json_path: the panoptic JSON (``annotations`` with ``file_name`` and ``segments_info``).
        png_dir: folder of the annotation PNGs.
        image_dir: folder of the images (file names from the JSON's ``images``; without an entry, the PNG's stem
            with ``.jpg`` / ``.png``).
        categories: a categories list or JSON file (``panoptic_coco_categories.json``); default: the JSON's own.
        check_files: check that every image and PNG exists (a missing one raises, naming it).

    Raises:
        FileNotFoundError: a missing JSON, folder, image or PNG (named).
        PanopticFormatError: a malformed JSON, or a segment with an unknown category (file and segment named).
    """
    json_path, png_dir, image_dir = Path(json_path), Path(png_dir), Path(image_dir)
    data = _load_json(json_path, "panoptic JSON")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise PanopticFormatError(f"{json_path}: not a COCO panoptic JSON (no 'annotations' list)")
    if categories is None:
        cats = data.get("categories")
        if not cats:
            raise PanopticFormatError(f"{json_path} has no 'categories'; pass a categories file")
        cat_source: Any = json_path
    elif isinstance(categories, (str, Path)):
        cats, cat_source = _load_json(Path(categories), "categories file"), categories
        if isinstance(cats, dict):
            cats = cats.get("categories")
        if not isinstance(cats, list):
            raise PanopticFormatError(f"{categories}: expected a list of categories (or a JSON with 'categories')")
    else:
        cats, cat_source = list(categories), "the categories argument"
    meta = PanopticMeta.from_categories(cats)
    for folder, what in ((png_dir, "panoptic PNG folder"), (image_dir, "image folder")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} not found: {folder}")
    images = {img["id"]: img for img in data.get("images") or []}
    records = []
    for ann in data["annotations"]:
        file_name = ann.get("file_name")
        if not file_name or "segments_info" not in ann:
            raise PanopticFormatError(f"{json_path}: annotation {ann.get('image_id')!r} lacks file_name/segments_info")
        for seg in ann["segments_info"]:
            if not meta.has_category(seg.get("category_id", -1)):
                raise PanopticFormatError(
                    f"{json_path}: {file_name} segment {seg.get('id')} has category_id {seg.get('category_id')!r}, "
                    f"not in the categories of {cat_source}"
                )
        info = images.get(ann.get("image_id"), {})
        stem = Path(file_name).stem
        if info.get("file_name"):
            image_path = image_dir / info["file_name"]
        else:
            image_path = next(
                (
                    image_dir / f"{stem}{ext}"
                    for ext in (".jpg", ".png", ".jpeg")
                    if (image_dir / f"{stem}{ext}").is_file()
                ),
                image_dir / f"{stem}.jpg",
            )
        png_path = png_dir / file_name
        if check_files:
            if not image_path.is_file():
                raise FileNotFoundError(f"image of {json_path} annotation {file_name} not found: {image_path}")
            if not png_path.is_file():
                raise FileNotFoundError(f"panoptic PNG of {json_path} not found: {png_path}")
        records.append(
            PanopticRecord(
                name=stem,
                image_id=ann.get("image_id", stem),
                image_path=image_path,
                png_path=png_path,
                segments_info=tuple(dict(s) for s in ann["segments_info"]),
                height=info.get("height"),
                width=info.get("width"),
            )
        )
    return records, meta


def load_panoptic(record: PanopticRecord, meta: PanopticMeta) -> np.ndarray:
    """The ``(H, W, 2)`` int64 ground truth of a record (its PNG checked against ``segments_info``)."""
    if record.png_path is None:
        raise ValueError(f"record {record.name} has no panoptic PNG")
    try:
        with Image.open(record.png_path) as img:
            img.load()
            pixels = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise PanopticFormatError(f"cannot decode panoptic PNG {record.png_path}: {err}") from err
    if record.height is not None and pixels.shape[:2] != (record.height, record.width):
        raise PanopticFormatError(
            f"{record.png_path} is {pixels.shape[1]}x{pixels.shape[0]}, its image is {record.width}x{record.height}"
        )
    return segments_to_panoptic(rgb2id(pixels), record.segments_info, meta, str(record.png_path))


# ------------------------------------------------------------------------------------------------ COCO instances


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """A COCO RLE (``size`` [h, w], ``counts`` as a list or a compressed string) to an ``(h, w)`` bool mask."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _rle_string_counts(counts.decode() if isinstance(counts, bytes) else counts)
    counts = [int(c) for c in counts]
    if sum(counts) != height * width:
        raise PanopticFormatError(f"RLE counts sum to {sum(counts)}, its size is {height}x{width}={height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate 0s and 1s, starting with 0s
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T  # column-major (Fortran) order


def _rle_string_counts(s: str) -> list[int]:
    """pycocotools' compressed RLE string (LEB128-like, 5 bits per char, deltas from index 3 on) to counts."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rasterize_annotation(ann: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """An instance annotation's ``segmentation`` (polygons or RLE) as an ``(height, width)`` bool mask."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        mask = decode_rle(seg)
        if mask.shape != (height, width):
            raise PanopticFormatError(f"annotation {ann.get('id')}: RLE size {mask.shape} != image {height}x{width}")
        return mask
    if not isinstance(seg, list):
        raise PanopticFormatError(f"annotation {ann.get('id')}: unsupported segmentation {type(seg).__name__}")
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for poly in seg:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1, outline=1)
    return np.asarray(img, dtype=bool)


@dataclass(frozen=True)
class InstancesRecord:
    """One image of a COCO instances file: its path, size and annotations."""

    name: str
    image_id: Any
    image_path: Path
    height: int
    width: int
    annotations: tuple[dict[str, Any], ...]


def read_coco_instances(
    json_path: str | Path,
    image_dir: str | Path,
    categories: str | Path | None = None,
    *,
    check_files: bool = True,
) -> tuple[list[InstancesRecord], PanopticMeta]:
    """Read a COCO instances JSON: one record per image (images order), things-only metadata.

    ``categories`` (a panoptic categories file) supplies colours for the ids it knows; the classes are the
    instances file's categories, in its order, all things.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    data = _load_json(json_path, "COCO instances JSON")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "categories" not in data:
        raise PanopticFormatError(f"{json_path}: not a COCO instances JSON (needs 'images' and 'categories')")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    cats = [dict(c) for c in data["categories"]]
    if categories is not None:
        known = {c["id"]: c for c in _load_json(Path(categories), "categories file")}
        for c in cats:
            if c["id"] in known and "color" in known[c["id"]]:
                c["color"] = known[c["id"]]["color"]
    meta = PanopticMeta.from_categories(cats, things=True)
    by_image: dict[Any, list[dict]] = {}
    for ann in data.get("annotations") or []:
        if not meta.has_category(ann.get("category_id", -1)):
            raise PanopticFormatError(
                f"{json_path}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')!r}"
            )
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in data["images"]:
        path = image_dir / img["file_name"]
        if check_files and not path.is_file():
            raise FileNotFoundError(f"image of {json_path} (id {img['id']}) not found: {path}")
        records.append(
            InstancesRecord(
                name=Path(img["file_name"]).stem,
                image_id=img["id"],
                image_path=path,
                height=int(img["height"]),
                width=int(img["width"]),
                annotations=tuple(by_image.get(img["id"], [])),
            )
        )
    return records, meta


def instances_to_panoptic(record: InstancesRecord) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Paint a record's instances into an ``(H, W)`` int32 segment-id map (0 = void) and its ``segments_info``.

    Rule: crowd annotations first, then non-crowd ones by decreasing ``area`` (ties: annotation id), each painted
    over what is there -- a pixel goes to the smallest non-crowd instance covering it, else to a crowd region, else
    void. Segment ids are 1, 2, ... in painting order; segments left with no pixel are dropped. ``area`` and ``bbox``
    ([x, y, w, h]) are recomputed from the painted pixels.
    """
    height, width = record.height, record.width
    crowd = [a for a in record.annotations if a.get("iscrowd", 0)]
    solid = [a for a in record.annotations if not a.get("iscrowd", 0)]
    order = sorted(crowd, key=lambda a: a.get("id", 0)) + sorted(
        solid, key=lambda a: (-float(a.get("area", 0.0)), a.get("id", 0))
    )
    id_map = np.zeros((height, width), dtype=np.int32)
    painted = []
    for sid, ann in enumerate(order, start=1):
        mask = rasterize_annotation(ann, height, width)
        id_map[mask] = sid
        painted.append((sid, ann))
    segments = []
    areas = np.bincount(id_map.ravel(), minlength=len(order) + 1)
    for sid, ann in painted:
        if areas[sid] == 0:
            continue
        segments.append(
            {
                "id": sid,
                "category_id": int(ann["category_id"]),
                "iscrowd": int(bool(ann.get("iscrowd", 0))),
                "area": int(areas[sid]),
                "bbox": mask_bbox(id_map == sid),
            }
        )
    return id_map, segments


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of a bool mask (zeros for an empty one)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder (never a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split_name(instances_json: Path) -> str:
    stem = instances_json.stem
    return stem[len("instances_") :] if stem.startswith("instances_") else stem


def convert_instances(
    instances_json: str | Path,
    image_dir: str | Path,
    out: str | Path,
    *,
    categories: str | Path | None = None,
    split: str | None = None,
    progress: bool = True,
) -> Path:
    """Convert a COCO instances JSON to COCO panoptic (things only) under ``out``; returns the panoptic JSON path.

    Writes ``<out>/annotations/panoptic_<split>.json`` and ``<out>/panoptic_<split>/<image stem>.png`` (``split``
    defaults to the instances file name without ``instances_``). Existing files are never overwritten: an existing
    JSON or a non-empty PNG folder is refused before anything is written; PNGs are written into a temporary folder
    renamed into place at the end, the JSON last.
    """
    from tqdm import tqdm

    instances_json, out = Path(instances_json), Path(out)
    records, meta = read_coco_instances(instances_json, image_dir, categories)
    split = split or _split_name(instances_json)
    json_out, png_out = out / "annotations" / f"panoptic_{split}.json", out / f"panoptic_{split}"
    if json_out.exists():
        raise FileExistsError(f"{json_out} exists; refusing to overwrite it")
    if png_out.exists():
        raise FileExistsError(f"{png_out} exists; refusing to overwrite it")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".panoptic_{split}.", dir=out))
    try:
        annotations, images = [], []
        for rec in tqdm(records, desc=f"panoptic {split}", unit="image", disable=not progress):
            id_map, segments = instances_to_panoptic(rec)
            file_name = f"{rec.name}.png"
            Image.fromarray(id2rgb(id_map)).save(staging / file_name)
            annotations.append({"image_id": rec.image_id, "file_name": file_name, "segments_info": segments})
            images.append(
                {"id": rec.image_id, "file_name": rec.image_path.name, "height": rec.height, "width": rec.width}
            )
        os.rename(staging, png_out)  # fails (without replacing) if png_out appeared meanwhile and is not empty
    except BaseException:
        for f in staging.glob("*"):
            f.unlink()
        staging.rmdir()
        raise
    payload = {
        "info": {"description": f"COCO panoptic (things only) converted from {instances_json.name} by formers"},
        "images": images,
        "annotations": annotations,
        "categories": meta.coco_categories(),
    }
    if json_out.exists():
        raise FileExistsError(f"{json_out} appeared while converting; refusing to overwrite it")
    write_json_atomic(json_out, payload)
    return json_out


# ------------------------------------------------------------------------------------------------ command line


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m formers.vision.segmentation.panoptic", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-instances", help="COCO instances JSON -> COCO panoptic PNG + JSON (things only)")
    conv.add_argument("--instances", required=True, help="COCO instances JSON (instances_<split>.json)")
    conv.add_argument("--images", required=True, help="the split's image folder")
    conv.add_argument("--out", required=True, help="output root (annotations/panoptic_<split>.json, panoptic_<split>/)")
    conv.add_argument("--categories", default=None, help="panoptic_coco_categories.json, for the class colours")
    conv.add_argument("--split", default=None, help="split name (default: from the instances file name)")
    conv.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        path = convert_instances(
            args.instances,
            args.images,
            args.out,
            categories=args.categories,
            split=args.split,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

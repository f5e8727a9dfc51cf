"""Writers of panoptic predictions: the COCO panoptic PNG, the segments JSON and an overlay image.

* :func:`write_panoptic_png`: a segment-id map as a COCO panoptic PNG (``id = R + 256 G + 256^2 B``, 0 = void);
* :func:`panoptic_annotation` + :func:`write_segments_json`: the COCO panoptic JSON
  (``annotations[{image_id, file_name, segments_info[{id, category_id, isthing, area, bbox, score}]}]``,
  ``categories``), with COCO category ids (``meta.category_ids``) in place of the contiguous ones;
* :func:`overlay` / :func:`write_overlay`: the image blended with the segment colours (stuff: the class colour;
  things: the class colour with a per-instance shade), one-pixel boundaries between segments and, optionally, the
  class names at the segments' centres.

Every writer refuses an existing file (``FileExistsError`` naming it) and writes through a temporary file in the
same folder that is hard-linked into place (the link fails rather than replace a file that appeared meanwhile).
Segment maps and segments are :func:`~formers.vision.segmentation.postprocess.panoptic_inference`'s outputs:
``(H, W)`` int ids (0 = no segment) and dicts with ``id``, ``category_id`` (contiguous), ``isthing``, ``score``.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from formers.vision.segmentation.panoptic import PanopticMeta, id2rgb, mask_bbox

__all__ = [
    "write_new_file",
    "write_panoptic_png",
    "panoptic_annotation",
    "write_segments_json",
    "overlay",
    "write_overlay",
]


def write_new_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, which must not exist (``FileExistsError``); never a half-written file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)  # fails if path appeared meanwhile
        except FileExistsError:
            raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = _io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_panoptic_png(path: str | Path, segment_map: Any) -> Path:
    """Write an ``(H, W)`` segment-id map (0 = void, ids < 2^24) as a COCO panoptic RGB PNG."""
    ids = _numpy(segment_map)
    if ids.ndim != 2:
        raise ValueError(f"segment_map must be (H, W), got shape {ids.shape}")
    return write_new_file(path, _png_bytes(id2rgb(ids)))


def panoptic_annotation(
    image_id: Any, file_name: str, segment_map: Any, segments: Sequence[Mapping[str, Any]], meta: PanopticMeta
) -> dict[str, Any]:
    """The COCO panoptic annotation of one prediction (areas and boxes measured on ``segment_map``)."""
    ids = _numpy(segment_map)
    areas = np.bincount(ids.ravel().astype(np.int64), minlength=max([0, *(int(s["id"]) for s in segments)]) + 1)
    info = []
    for seg in segments:
        sid, k = int(seg["id"]), int(seg["category_id"])
        if not 0 <= k < meta.num_classes:
            raise ValueError(f"segment {sid} has class {k}, outside the {meta.num_classes} classes")
        if areas[sid] == 0:
            continue  # nothing of it left in the map
        entry = {
            "id": sid,
            "category_id": int(meta.category_ids[k]),
            "isthing": int(bool(meta.is_thing[k])),
            "area": int(areas[sid]),
            "bbox": mask_bbox(ids == sid),
        }
        if "score" in seg:
            entry["score"] = float(seg["score"])
        info.append(entry)
    return {"image_id": image_id, "file_name": file_name, "segments_info": info}


def write_segments_json(
    path: str | Path, annotations: Sequence[Mapping[str, Any]], meta: PanopticMeta, **extra: Any
) -> Path:
    """Write a COCO panoptic JSON: ``annotations``, ``categories`` (from ``meta``) and any ``extra`` keys."""
    payload = {**extra, "annotations": list(annotations), "categories": meta.coco_categories()}
    return write_new_file(path, (json.dumps(payload, indent=1) + "\n").encode())


def _segment_colour(meta: PanopticMeta, k: int, sid: int, isthing: bool) -> np.ndarray:
    colour = np.array(meta.colors[k], dtype=np.float32)
    if isthing:  # a per-instance shade, deterministic in the id
        shade = 0.65 + 0.7 * ((sid * 0.6180339887) % 1.0)
        colour = np.clip(colour * shade, 0, 255)
    return colour


def overlay(
    image: Any,
    segment_map: Any,
    segments: Sequence[Mapping[str, Any]],
    meta: PanopticMeta,
    *,
    alpha: float = 0.5,
    boundaries: bool = True,
    labels: bool = False,
) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 blended with the segments' colours: an ``(H, W, 3)`` uint8 array.

    Unassigned pixels (id 0) keep the image; ``boundaries`` draws one-pixel white lines where the segment id
    changes; ``labels`` writes the class names at the segments' centres of mass.
    """
    img = _numpy(image)
    ids = _numpy(segment_map).astype(np.int64)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != ids.shape:
        raise ValueError(f"image {img.shape} must be (H, W, 3) of the segment map's size {ids.shape}")
    size = max([int(ids.max()) if ids.size else 0, *(int(s["id"]) for s in segments)]) + 1
    palette = np.zeros((size, 3), dtype=np.float32)
    painted = np.zeros(size, dtype=bool)
    for seg in segments:
        sid = int(seg["id"])
        palette[sid] = _segment_colour(meta, int(seg["category_id"]), sid, bool(seg.get("isthing", True)))
        painted[sid] = True
    out = img.astype(np.float32)
    where = painted[ids]
    out[where] = (1 - alpha) * out[where] + alpha * palette[ids][where]
    if boundaries:
        edge = np.zeros(ids.shape, dtype=bool)
        edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
        edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
        out[edge] = 255.0
    result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if labels and segments:
        canvas = Image.fromarray(result)
        draw = ImageDraw.Draw(canvas)
        for seg in segments:
            ys, xs = np.nonzero(ids == int(seg["id"]))
            if ys.size == 0:
                continue
            text = meta.names[int(seg["category_id"])]
            x, y = float(xs.mean()), float(ys.mean())
            left, top, right, bottom = draw.textbbox((x, y), text, anchor="mm")
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
            draw.text((x, y), text, fill=(255, 255, 255), anchor="mm")
        result = np.asarray(canvas)
    return result


def write_overlay(
    path: str | Path,
    image: Any,
    segment_map: Any,
    segments: Sequence[Mapping[str, Any]],
    meta: PanopticMeta,
    **kwargs: Any,
) -> Path:
    """Write :func:`overlay` as a PNG (``kwargs``: ``alpha``, ``boundaries``, ``labels``)."""
    return write_new_file(path, _png_bytes(overlay(image, segment_map, segments, meta, **kwargs)))

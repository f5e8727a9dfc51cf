"""``formers-vision predict`` for a panoptic segmentation checkpoint (kMaX-DeepLab).

For every image (files, or folders searched recursively) the checkpoint's evaluation transform is applied (stored
with the data module's state), the model runs on the image alone (any size: no padding to a fixed shape), the masks
are brought back to the image's original resolution and post-processed with the task's thresholds and its
thing / stuff classes (both stored in the checkpoint). Written to ``--out-dir``:

* ``panoptic/<stem>.png``: the COCO panoptic PNG (segment id = R + 256 G + 256^2 B, 0 = unassigned);
* ``overlays/<stem>.png``: the image blended with the segments' colours, boundaries and class names;
* ``segments.json``: COCO panoptic format (``annotations`` with ``segments_info`` carrying the dataset's category
  ids, areas, boxes and scores; ``categories``).

No existing file is overwritten (a clash is reported and that image skipped); an image that cannot be decoded is
reported and skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from formers.core.predict import InputError, check_finite
from formers.vision.segmentation.data import collate_panoptic, eval_transform_from_state
from formers.vision.segmentation.io import panoptic_annotation, write_overlay, write_panoptic_png, write_segments_json
from formers.vision.segmentation.panoptic import PanopticMeta, load_rgb
from formers.vision.segmentation.postprocess import panoptic_inference, upsample_masks

if TYPE_CHECKING:
    from formers.core.domain import TrainedRun

__all__ = ["predict_panoptic"]


@torch.no_grad()
def segment_image(run: TrainedRun, image: np.ndarray, meta: PanopticMeta, transform: Any) -> tuple[torch.Tensor, list]:
    """``(segment map (H, W) at the image's resolution, segments)`` of one ``(H, W, 3)`` uint8 image."""
    task = run.task
    batch = collate_panoptic([transform(image)], meta.num_classes)
    output = task(batch)
    check_finite(output["pred_masks"], "mask logits")
    padded = tuple(batch.images.shape[-2:])
    masks = upsample_masks(output["pred_masks"], padded, batch.sizes[0], tuple(image.shape[:2]))[0]
    return panoptic_inference(output["pred_logits"][0], masks, task.is_thing, **task.thresholds)


def predict_panoptic(run: TrainedRun, paths: list[Path], options: argparse.Namespace, report: Any) -> str:
    """Segment ``paths`` into ``options.out_dir`` (see the module docstring); returns the one-line summary."""
    if options.out_dir is None:
        raise InputError("a panoptic segmentation checkpoint writes files: give --out-dir")
    if "meta" not in run.data_state:
        raise InputError(f"{run.path}: no panoptic data state (classes, transform) in the checkpoint")
    meta = PanopticMeta.from_dict(run.data_state["meta"])
    transform = eval_transform_from_state(run.data_state)
    out_dir = Path(options.out_dir)
    json_path = out_dir / "segments.json"
    if json_path.exists():
        raise InputError(f"{json_path} exists; refusing to overwrite it (choose another --out-dir)")
    annotations, segments_total = [], 0
    for image_id, path in enumerate(paths):
        png, overlay_png = out_dir / "panoptic" / f"{path.stem}.png", out_dir / "overlays" / f"{path.stem}.png"
        clash = next((p for p in (png, overlay_png) if p.exists()), None)
        if clash is not None:
            report(f"{path}: {clash} exists; refusing to overwrite it")
            continue
        try:
            image = load_rgb(path)
        except ValueError as err:  # CorruptImageError names the file
            report(str(err))
            continue
        segment_map, segments = segment_image(run, image, meta, transform)
        write_panoptic_png(png, segment_map.cpu())
        write_overlay(overlay_png, image, segment_map.cpu(), segments, meta, labels=True)
        annotations.append(panoptic_annotation(image_id, png.name, segment_map.cpu(), segments, meta))
        segments_total += len(annotations[-1]["segments_info"])
    if not annotations:
        return "no image segmented"
    images = [{"id": a["image_id"], "file_name": paths[a["image_id"]].name} for a in annotations]
    write_segments_json(json_path, annotations, meta, images=images)
    return f"wrote {len(annotations)} panoptic PNGs, overlays and {json_path} ({segments_total} segments)"

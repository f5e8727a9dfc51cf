"""kMaX-DeepLab panoptic post-processing, after the official ``bytedance/kmax-deeplab`` ``kmax_model.py``
(``panoptic_inference`` and the evaluation branch of ``forward``), itself after deeplab2's MaX-DeepLab post-processor.

* :func:`upsample_masks`: mask logits at stride 4 -> bilinear to the padded input size (``align_corners`` when the
  padded width is odd, the official rule that makes 641 / 1281 inputs exact), crop of the real image region, bilinear
  to the output size;
* :func:`panoptic_inference`: class score = max of the softmax without void; query softmax of the masks, binary
  mask = probability > 0.4; mask score = mean probability inside the binary mask; queries ranked by
  ``class^1 * mask^1``; a query is kept if its class score exceeds 0.7 (things) / 0.5 (stuff) and more than 80 % of
  its binary mask is still unpainted; it paints those pixels; stuff queries of an already painted stuff class add
  their pixels to that segment (one segment per stuff class);
* :func:`to_category_instance`: the ``(category, instance)`` map that PQ reads.

Differences from the official code: ties of the ranking score are broken by query index (``argsort(stable=True)``;
the official order of ties is unspecified), and each segment also reports its score (``class * mask``, the ranking
score), class and mask scores and final area (pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["panoptic_inference", "panoptic_inference_batch", "upsample_masks", "to_category_instance"]


def _is_pair(size: Any) -> bool:
    return len(size) == 2 and all(isinstance(v, int) for v in size)


def upsample_masks(
    mask_logits: Tensor,
    padded_size: tuple[int, int],
    real_size: tuple[int, int] | Sequence[tuple[int, int]],
    out_size: tuple[int, int] | Sequence[tuple[int, int]],
) -> Tensor | list[Tensor]:
    """Mask logits of the model (stride 4 of the padded input) -> logits at the output resolution.

    Args:
        mask_logits: (B, Q, h, w).
        padded_size: (H, W) of the padded model input.
        real_size: (H_r, W_r) of the image region inside the padded input (top-left), or one pair per image.
        out_size: (H_o, W_o) wanted (the original image size), or one pair per image.

    Returns:
        (B, Q, H_o, W_o) when ``real_size`` and ``out_size`` are single pairs, else a list of (Q, H_o, W_o).
    """
    padded_size = (int(padded_size[0]), int(padded_size[1]))
    align_corners = padded_size[1] % 2 == 1  # official: odd (32k + 1) inputs use align_corners=True
    up = F.interpolate(mask_logits, size=padded_size, mode="bilinear", align_corners=align_corners)

    def crop_resize(x: Tensor, real: tuple[int, int], out: tuple[int, int]) -> Tensor:
        x = x[..., : real[0], : real[1]]
        if tuple(out) != tuple(x.shape[-2:]):  # resizing to the same size is the identity: skipped
            x = F.interpolate(x, size=tuple(out), mode="bilinear", align_corners=align_corners)
        return x

    if _is_pair(real_size) and _is_pair(out_size):
        return crop_resize(up, tuple(real_size), tuple(out_size))
    batch = mask_logits.shape[0]
    reals = [tuple(real_size)] * batch if _is_pair(real_size) else [tuple(s) for s in real_size]
    outs = [tuple(out_size)] * batch if _is_pair(out_size) else [tuple(s) for s in out_size]
    if len(reals) != batch or len(outs) != batch:
        raise ValueError(f"upsample_masks: {len(reals)} real sizes and {len(outs)} output sizes for {batch} images")
    return [crop_resize(up[i : i + 1], r, o)[0] for i, (r, o) in enumerate(zip(reals, outs, strict=True))]


@torch.no_grad()
def panoptic_inference(
    class_logits: Tensor,
    mask_logits: Tensor,
    is_thing: Tensor | Sequence[bool],
    pixel_threshold: float = 0.4,
    thing_threshold: float = 0.7,
    stuff_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    reorder_class_weight: float = 1.0,
    reorder_mask_weight: float = 1.0,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """The official kMaX panoptic inference of one image.

    Args:
        class_logits: (Q, K + 1), void last.
        mask_logits: (Q, H, W) at the output resolution.
        is_thing: (K,) bool: which contiguous classes are things.

    Returns:
        ``segment_map`` (H, W) int32 (0 = no segment, segments numbered from 1) and one dict per segment: ``id``,
        ``category_id`` (contiguous class), ``isthing``, ``score`` (class score x mask score), ``class_score``,
        ``mask_score``, ``area`` (pixels in ``segment_map``).
    """
    is_thing = torch.as_tensor(is_thing, dtype=torch.bool, device=class_logits.device)
    if is_thing.numel() != class_logits.shape[-1] - 1:
        raise ValueError(f"is_thing has {is_thing.numel()} classes, class_logits {class_logits.shape[-1] - 1} (+void)")
    queries, height, width = mask_logits.shape

    class_scores, class_labels = class_logits.float().softmax(-1)[:, :-1].max(-1)  # Q
    mask_prob = mask_logits.float().softmax(0).flatten(1)  # Q x HW
    binary = mask_prob > pixel_threshold  # Q x HW
    pixel_count = binary.sum(1).float()  # Q
    mask_scores = (mask_prob * binary).sum(1) / pixel_count.clamp(min=1.0)  # Q: mean probability inside the mask
    scores = class_scores.pow(reorder_class_weight) * mask_scores.pow(reorder_mask_weight)  # Q
    order = torch.argsort(scores, descending=True, stable=True)

    query_is_thing = is_thing[class_labels]  # Q
    confident = torch.where(query_is_thing, class_scores > thing_threshold, class_scores > stuff_threshold)
    # The official overlap test in fp32: new pixels > original pixels * overlap_threshold.
    limit = (pixel_count * overlap_threshold).tolist()
    confident, labels, things = confident.tolist(), class_labels.tolist(), query_is_thing.tolist()

    segment_map = torch.zeros(height * width, dtype=torch.int32, device=mask_logits.device)
    segments: list[dict[str, Any]] = []
    stuff_segment: dict[int, int] = {}  # stuff class -> its segment id
    for q in order.tolist():
        if not confident[q]:
            continue
        new_pixels = binary[q] & (segment_map == 0)  # HW
        if not int(new_pixels.sum()) > limit[q]:
            continue  # overlaps too much with what is already painted (or is empty)
        if not things[q] and labels[q] in stuff_segment:
            segment_map[new_pixels] = stuff_segment[labels[q]]  # merge into the class's stuff segment
            continue
        segment_id = len(segments) + 1
        if not things[q]:
            stuff_segment[labels[q]] = segment_id
        segment_map[new_pixels] = segment_id
        segments.append(
            {
                "id": segment_id,
                "category_id": labels[q],
                "isthing": bool(things[q]),
                "score": float(scores[q]),
                "class_score": float(class_scores[q]),
                "mask_score": float(mask_scores[q]),
            }
        )
    areas = torch.bincount(segment_map.long(), minlength=len(segments) + 1).tolist()
    for segment in segments:
        segment["area"] = int(areas[segment["id"]])
    return segment_map.view(height, width), segments


def panoptic_inference_batch(
    class_logits: Tensor, mask_logits: Tensor | Sequence[Tensor], is_thing: Tensor | Sequence[bool], **kwargs: Any
) -> list[tuple[Tensor, list[dict[str, Any]]]]:
    """:func:`panoptic_inference` of every image: ``class_logits`` (B, Q, K + 1), ``mask_logits`` (B, Q, H, W) or a
    list of (Q, H_i, W_i) (e.g. from :func:`upsample_masks` with per-image sizes); keywords as
    :func:`panoptic_inference`."""
    if len(mask_logits) != len(class_logits):
        raise ValueError(f"{len(class_logits)} class logits for {len(mask_logits)} mask logits")
    return [panoptic_inference(c, m, is_thing, **kwargs) for c, m in zip(class_logits, mask_logits, strict=True)]


def to_category_instance(segment_map: Tensor, segments: Sequence[dict[str, Any]]) -> Tensor:
    """(H, W, 2) int64 ``(category, instance)`` map of a panoptic result: category -1 where no segment (void);
    instance = the segment id for things, 0 for stuff and void (PQ ignores stuff instance ids)."""
    size = max([0, int(segment_map.max()) if segment_map.numel() else 0, *(s["id"] for s in segments)]) + 1
    category = torch.full((size,), -1, dtype=torch.int64, device=segment_map.device)
    instance = torch.zeros(size, dtype=torch.int64, device=segment_map.device)
    for segment in segments:
        category[segment["id"]] = int(segment["category_id"])
        instance[segment["id"]] = segment["id"] if segment["isthing"] else 0
    index = segment_map.long()
    return torch.stack([category[index], instance[index]], dim=-1)

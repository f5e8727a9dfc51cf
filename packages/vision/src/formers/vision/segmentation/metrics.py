"""Panoptic quality (PQ, SQ, RQ; overall, things, stuff) on ``(B, H, W, 2)`` (category, instance) maps.

:class:`PanopticQualityMetric` is torchmetrics' ``PanopticQuality`` (its states -- per-class IoU sums, TP, FP, FN --
summed across processes, its per-class compute) with a choice of the matching arithmetic:

* ``definition="panopticapi"`` (default): COCO's ``pq_compute`` (panopticapi), the definition every kMaX-DeepLab
  number uses. Per image, a predicted and a ground-truth segment of the same category match when
  ``IoU > 0.5`` with ``union = |pred| + |gt| - |pred & gt| - |pred & gt void|`` (ground-truth void pixels are
  removed from the prediction's area; predicted-void pixels inside a ground-truth segment still count in the union).
  Unmatched ground-truth segments are false negatives; unmatched predictions are false positives unless more than
  half of them lies on ground-truth void.
* ``definition="torchmetrics"``: torchmetrics' own arithmetic, which differs from panopticapi in two places: the
  union also drops the ground-truth pixels the prediction leaves void (``- |pred void & gt|``), and an unmatched
  ground-truth segment more than half covered by predicted void is not a false negative. Both make it more lenient
  to predictions that leave pixels unassigned (kMaX's post-processing does).

Crowd regions: panopticapi keeps them as segments that are never matched, not removed from unions, and excuse a
prediction of *their* category that lies mostly on them. Here (as in the official kMaX training targets) crowd is
void: predictions on crowd pixels have them removed from their area and they excuse predictions of any category.
Only images with crowd segments are affected.

Averages (both definitions) are over the classes with ``TP + FP + FN > 0``, as panopticapi; a group (things or
stuff) with no such class gives 0 (panopticapi divides by zero there). Category ids are the contiguous class ids;
anything else (``-1``) is void.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor
from torchmetrics.detection import PanopticQuality

__all__ = ["PanopticQualityMetric", "panopticapi_stats"]

DEFINITIONS = ("panopticapi", "torchmetrics")


def panopticapi_stats(
    pred: Tensor, target: Tensor, classes: Collection[int], things: Collection[int]
) -> tuple[dict[int, float], dict[int, int], dict[int, int], dict[int, int]]:
    """panopticapi's per-category IoU sum, TP, FP, FN of one image (``(H, W, 2)`` maps, void = not in ``classes``).

    Stuff instances are ignored (one segment per stuff category), as in torchmetrics.
    """
    classes, things = set(int(c) for c in classes), set(int(c) for c in things)
    known = torch.tensor(sorted(classes), device=pred.device)

    def keys(x: Tensor) -> Tensor:
        cat, inst = x[..., 0].reshape(-1).long(), x[..., 1].reshape(-1).long()
        valid = torch.isin(cat, known)
        is_thing = torch.isin(cat, torch.tensor(sorted(things) or [-(2**40)], device=x.device))
        inst = torch.where(is_thing, inst, torch.zeros_like(inst))
        if inst.numel() and (inst.min() < 0 or inst.max() >= 2**31):
            raise ValueError("instance ids must be in [0, 2^31)")
        return torch.where(valid, cat * 2**31 + inst, torch.full_like(cat, -1))

    gt_keys, pred_keys = keys(target), keys(pred)
    gt_ids, gt_inv, gt_area = torch.unique(gt_keys, return_inverse=True, return_counts=True)
    pr_ids, pr_inv, pr_area = torch.unique(pred_keys, return_inverse=True, return_counts=True)
    pair, pair_count = torch.unique(gt_inv * len(pr_ids) + pr_inv, return_counts=True)
    gt_list, pr_list = gt_ids.tolist(), pr_ids.tolist()
    gt_area_l, pr_area_l = gt_area.tolist(), pr_area.tolist()
    inter: dict[tuple[int, int], int] = {}
    for p, n in zip(pair.tolist(), pair_count.tolist(), strict=True):
        inter[(gt_list[p // len(pr_ids)], pr_list[p % len(pr_ids)])] = n
    pred_area = {k: a for k, a in zip(pr_list, pr_area_l, strict=True) if k >= 0}
    gt_segments = {k: a for k, a in zip(gt_list, gt_area_l, strict=True) if k >= 0}
    iou_sum: dict[int, float] = {c: 0.0 for c in classes}
    tp, fp, fn = ({c: 0 for c in classes} for _ in range(3))
    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g < 0 or p < 0 or g // 2**31 != p // 2**31:
            continue
        union = pred_area[p] + gt_segments[g] - n - inter.get((-1, p), 0)
        iou = n / union
        if iou > 0.5:
            cat = g // 2**31
            tp[cat] += 1
            iou_sum[cat] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    for g in gt_segments:
        if g not in gt_matched:
            fn[g // 2**31] += 1
    for p, area in pred_area.items():
        if p not in pred_matched and inter.get((-1, p), 0) / area <= 0.5:
            fp[p // 2**31] += 1
    return iou_sum, tp, fp, fn


class PanopticQualityMetric(PanopticQuality):
    """PQ / SQ / RQ over contiguous class ids, overall and for things and stuff.

    Args:
        things: contiguous ids of the thing classes.
        stuffs: contiguous ids of the stuff classes.
        definition: ``panopticapi`` (COCO's ``pq_compute``, default) or ``torchmetrics`` (see the module docstring).

    ``update(pred, target)``: ``(B, H, W, 2)`` integer (category, instance) maps; categories outside things and
    stuff (-1) are void. ``compute()``: ``pq, sq, rq, pq_th, sq_th, rq_th, pq_st, sq_st, rq_st`` (float64 scalars);
    :meth:`per_class` gives ``(K,)`` vectors indexed by class id.
    """

    def __init__(
        self, things: Collection[int], stuffs: Collection[int], definition: str = "panopticapi", **kwargs: Any
    ) -> None:
        if definition not in DEFINITIONS:
            raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
        things = {int(t) for t in things}
        stuffs = {int(s) for s in stuffs}
        super().__init__(things, stuffs, allow_unknown_preds_category=True, **kwargs)
        self.definition = definition
        # torchmetrics keeps per-class states in its own order: sorted things, then sorted stuff
        self.order = sorted(things) + sorted(stuffs)

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        if preds.shape != target.shape or preds.dim() < 3 or preds.shape[-1] != 2:
            raise ValueError(
                f"pred and target must be (B, H, W, 2) maps of the same shape, got {tuple(preds.shape)} and "
                f"{tuple(target.shape)}"
            )
        if self.definition == "torchmetrics":
            super().update(preds, target)
            return
        classes = set(self.order)
        for p, t in zip(preds, target, strict=True):
            iou_sum, tp, fp, fn = panopticapi_stats(p, t, classes, self.things)
            device = self.iou_sum.device  # the order of the states is self.order
            self.iou_sum += torch.tensor([iou_sum[c] for c in self.order], dtype=torch.float64, device=device)
            for state, counts in ((self.true_positives, tp), (self.false_positives, fp), (self.false_negatives, fn)):
                state += torch.tensor([counts[c] for c in self.order], dtype=state.dtype, device=device)

    def per_class(self) -> dict[str, Tensor]:
        """``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn`` and ``iou_sum`` per class, ``(max id + 1,)`` by class id."""
        size = max(self.order) + 1
        index = torch.tensor(self.order, device=self.iou_sum.device)
        tp, fp, fn = (s.double() for s in (self.true_positives, self.false_positives, self.false_negatives))
        sq = torch.where(tp > 0, self.iou_sum / tp.clamp(min=1), torch.zeros_like(tp))
        denominator = tp + 0.5 * fp + 0.5 * fn
        rq = torch.where(denominator > 0, tp / denominator.clamp(min=1e-12), torch.zeros_like(tp))
        out = {}
        for name, value in (
            ("pq", sq * rq),
            ("sq", sq),
            ("rq", rq),
            ("tp", tp),
            ("fp", fp),
            ("fn", fn),
            ("iou_sum", self.iou_sum),
        ):
            full = torch.zeros(size, dtype=torch.float64, device=value.device)
            full[index] = value.double()
            out[name] = full
        return out

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        stats = self.per_class()
        present = (stats["tp"] + stats["fp"] + stats["fn"]) > 0
        groups = {"": set(self.order), "_th": set(self.things), "_st": set(self.stuffs)}
        result = {}
        for suffix, members in groups.items():
            mask = torch.zeros_like(present)
            if members:
                mask[torch.tensor(sorted(members), device=mask.device)] = True
            mask &= present
            for name in ("pq", "sq", "rq"):
                values = stats[name][mask]
                result[f"{name}{suffix}"] = values.mean() if values.numel() else values.new_zeros(())
        return result

"""PQ / SQ / RQ of ``PanopticQualityMetric`` against hand computations from the COCO panopticapi definition.

panopticapi (``pq_compute_single_core`` / ``pq_average``), for each image: a prediction and a ground-truth segment of
the same category match when IoU > 0.5, with ``union = pred_area + gt_area - intersection - |pred on gt void|``;
unmatched ground truth is a false negative; an unmatched prediction is a false positive unless more than half of it
lies on ground-truth void. Per class ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``,
``RQ = TP / (TP + FP/2 + FN/2)``; averages over the classes with ``TP + FP + FN > 0``.

torchmetrics' definition (``definition="torchmetrics"``) also removes the ground-truth pixels predicted void from the
union and does not count a ground-truth segment mostly predicted void as a false negative: the tests show where the
two differ. The COCO sample (two images, 18 and 32 segments) comes from ../shared/data/vision; those tests skip
without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from formers.vision.segmentation.metrics import PanopticQualityMetric
from formers.vision.segmentation.panoptic import load_panoptic, read_coco_panoptic, rgb2id

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vision" / "coco_panoptic_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/vision/coco_panoptic_sample is absent")

PERSON, TRUCK, HORSE, SPORTS_BALL = 0, 7, 17, 32  # contiguous ids (COCO ids 1, 8, 19, 37)


def averages(stats: dict[int, tuple[float, int, int, int]], things: set[int]) -> dict[str, float]:
    """panopticapi's pq_average from per-class (iou_sum, tp, fp, fn), overall / things / stuff."""
    out = {}
    for suffix, keep in (("", lambda c: True), ("_th", lambda c: c in things), ("_st", lambda c: c not in things)):
        pq = sq = rq = 0.0
        n = 0
        for c, (iou, tp, fp, fn) in stats.items():
            if not keep(c) or tp + fp + fn == 0:
                continue
            n += 1
            pq += iou / (tp + 0.5 * fp + 0.5 * fn)
            sq += iou / tp if tp else 0.0
            rq += tp / (tp + 0.5 * fp + 0.5 * fn)
        out.update({f"pq{suffix}": pq / n, f"sq{suffix}": sq / n, f"rq{suffix}": rq / n})
    return out


def run(preds, targets, things, stuffs, definition="panopticapi") -> dict[str, float]:
    metric = PanopticQualityMetric(things, stuffs, definition=definition)
    for p, t in zip(preds, targets, strict=True):
        metric.update(torch.as_tensor(p)[None], torch.as_tensor(t)[None])
    result = {k: float(v) for k, v in metric.compute().items()}
    result["definition"] = definition
    return result


def check(result: dict, expected: dict[str, float]) -> None:
    definition = result.pop("definition")
    assert set(result) == {"pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st"}
    tolerance = 1e-12 if definition == "panopticapi" else 1e-6  # torchmetrics divides counts in float32
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=tolerance), (definition, key)


# ------------------------------------------------------------------------------------------------ hand-made maps


def test_small_maps_void_and_false_positives():
    """4 x 6 maps, every count by hand. Classes: 0 thing, 1 stuff; -1 void."""
    gt_cat = np.array(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [-1, -1, -1, 1, 1, 1],
            [-1, -1, -1, 1, 1, 1],
        ]
    )
    gt = np.stack([gt_cat, (gt_cat == 0).astype(int)], -1)  # thing instance 1 (area 6), stuff area 12, void 6
    pred_cat = np.array(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],  # one thing pixel predicted as stuff
            [0, 0, -1, 1, 1, 1],  # two thing pixels on ground-truth void
            [0, 0, 0, 1, 1, -1],  # a second thing: 3 pixels, all on void (excused); one stuff pixel unassigned
        ]
    )
    pred_inst = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [2, 2, 2, 0, 0, 0],
        ]
    )
    pred = np.stack([pred_cat, pred_inst], -1)
    # thing 1: pred area 7 (5 on gt thing, 2 on void), gt area 6, intersection 5: union = 7 + 6 - 5 - 2 = 6
    # thing 2: pred area 3, all on gt void: unmatched but excused (3/3 > 0.5)
    # stuff: pred area 12 (11 on gt stuff, 1 on gt thing), gt 12, intersection 11: union = 12 + 12 - 11 - 0 = 13
    expected = averages({0: (5 / 6, 1, 0, 0), 1: (11 / 13, 1, 0, 0)}, {0})
    check(run([pred], [gt], {0}, {1}), expected)
    # torchmetrics also drops the gt stuff pixel predicted void from the union: 12 + 12 - 1 - 11 = 12
    check(run([pred], [gt], {0}, {1}, "torchmetrics"), averages({0: (5 / 6, 1, 0, 0), 1: (11 / 12, 1, 0, 0)}, {0}))
    # the same second thing with only one pixel on void (1/3 <= 0.5) is a false positive
    pred2 = pred.copy()
    pred2[0, 4] = [0, 2]
    pred2[0, 5] = [0, 2]
    pred2[3, 2] = [1, 0]  # thing 2 = {(3,0), (3,1), (0,4), (0,5)}: 2 of 4 on void, not > 0.5 -> FP
    # stuff: pred area 12 - 2 + 1 = 11, 10 on gt stuff, 1 on gt void (3,2), 0 on thing... (1,2) is thing: recount
    stuff_pred = pred2[..., 0] == 1
    inter = int((stuff_pred & (gt_cat == 1)).sum())
    on_void = int((stuff_pred & (gt_cat == -1)).sum())
    union = int(stuff_pred.sum()) + 12 - inter - on_void
    assert (inter, on_void, int(stuff_pred.sum())) == (9, 1, 11)
    check(run([pred2], [gt], {0}, {1}), averages({0: (5 / 6, 1, 1, 0), 1: (inter / union, 1, 0, 0)}, {0}))


def test_empty_groups_and_unknown_categories():
    gt = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    gt[..., 0] = 1
    metric = PanopticQualityMetric({0}, {1})
    pred = gt.clone()
    pred[0, 0, 0] = torch.tensor([7, 0])  # an unknown category is void
    metric.update(pred, gt)
    result = metric.compute()
    assert float(result["pq_th"]) == 0.0  # no thing anywhere: 0, not NaN
    assert float(result["pq_st"]) == pytest.approx(3 / 4)
    assert metric.per_class()["tp"].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="same shape"):
        metric.update(pred[..., :1], gt)
    with pytest.raises(ValueError, match="definition"):
        PanopticQualityMetric({0}, {1}, definition="coco")


# ------------------------------------------------------------------------------------------------ the COCO sample


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.is_dir():
        pytest.skip("../shared/data/vision/coco_panoptic_sample is absent")
    records, meta = read_coco_panoptic(
        SAMPLE / "panoptic_examples.json", SAMPLE / "panoptic_examples", SAMPLE / "input_images"
    )
    targets = [load_panoptic(r, meta) for r in records]
    ids = [rgb2id(np.asarray(Image.open(r.png_path).convert("RGB"))) for r in records]
    return records, meta, targets, ids


def _base_stats(meta, targets):
    """GT vs itself: every non-crowd segment a TP with IoU 1, per class."""
    stats: dict[int, list] = {}
    for t in targets:
        for cat, _ in np.unique(t[t[..., 0] >= 0], axis=0).tolist():
            s = stats.setdefault(cat, [0.0, 0, 0, 0])
            s[0] += 1.0
            s[1] += 1
    return stats


# torchmetrics' own arithmetic takes seconds per COCO image on a CPU (torch.unique over pixel pairs): slow tests
DEFINITIONS = ["panopticapi", pytest.param("torchmetrics", marks=pytest.mark.slow)]


@needs_sample
@pytest.mark.parametrize("definition", DEFINITIONS)
def test_sample_identity(sample, definition):
    records, meta, targets, _ = sample
    things, stuffs = meta.thing_classes, meta.stuff_classes
    stats = _base_stats(meta, targets)
    # 13 + 13 persons, 1 sports ball, 2 trucks, 11 horses (crowd excluded); tree, sky, grass twice, gravel once
    tree, sky, grass, gravel = (meta.contiguous(c) for c in (184, 187, 193, 125))
    assert [meta.contiguous(c) for c in (1, 8, 19, 37)] == [PERSON, TRUCK, HORSE, SPORTS_BALL]
    assert {c: s[1] for c, s in stats.items()} == {
        PERSON: 26,
        SPORTS_BALL: 1,
        TRUCK: 2,
        HORSE: 11,
        tree: 2,
        sky: 2,
        grass: 2,
        gravel: 1,
    }
    check(run(targets, targets, things, stuffs, definition), {k: 1.0 for k in averages(stats, things)})


@needs_sample
@pytest.mark.parametrize("definition", DEFINITIONS)
def test_sample_removed_segment(sample, definition):
    records, meta, targets, ids = sample
    things, stuffs = meta.thing_classes, meta.stuff_classes
    targets, ids = targets[:1], ids[:1]  # image 1: 13 persons, a sports ball, tree, sky, grass
    stats = _base_stats(meta, targets)
    grass = meta.contiguous(193)
    region = ids[0] == 4917453  # a person, area 477
    assert region.sum() == 477
    # (a) the person painted as the grass around it: a FN person, a grass segment 477 pixels too large
    pred = [targets[0].copy()]
    pred[0][region] = [grass, 0]
    expected = {c: list(s) for c, s in stats.items()}
    expected[PERSON] = [12.0, 12, 0, 1]
    expected[grass] = [75100 / (75100 + 477), 1, 0, 0]  # union = (75100 + 477) + 75100 - 75100 - 0
    check(run(pred, targets, things, stuffs, definition), averages(expected, things))
    # (b) the person left unassigned (void): panopticapi counts a FN; torchmetrics ignores a segment mostly void
    pred[0][region] = [-1, 0]
    expected = {c: list(s) for c, s in stats.items()}
    if definition == "panopticapi":
        expected[PERSON] = [12.0, 12, 0, 1]
    check(run(pred, targets, things, stuffs, definition), averages(expected, things))


@needs_sample
@pytest.mark.parametrize("definition", DEFINITIONS)
def test_sample_merged_segments(sample, definition):
    records, meta, targets, ids = sample
    things, stuffs = meta.thing_classes, meta.stuff_classes
    stats = _base_stats(meta, targets)
    small, large = ids[1] == 4587520, ids[1] == 6094848  # the two trucks of image 2: areas 1680 and 5791
    assert (small.sum(), large.sum()) == (1680, 5791)
    pred = [t.copy() for t in targets]
    pred[1][small] = targets[1][large][0]  # the small truck takes the large one's (category, instance)
    # merged segment: area 7471; IoU with the large truck 5791 / 7471 > 0.5 (TP), with the small one 1680 / 7471 (FN)
    expected = {c: list(s) for c, s in stats.items()}
    expected[TRUCK] = [5791 / 7471, 1, 0, 1]
    if definition == "torchmetrics":  # one image is enough for the slow path
        pred, targets = pred[1:], targets[1:]
        expected = {c: list(s) for c, s in _base_stats(meta, targets).items()}
        expected[TRUCK] = [5791 / 7471, 1, 0, 1]
    check(run(pred, targets, things, stuffs, definition), averages(expected, things))


@needs_sample
@pytest.mark.parametrize("definition", DEFINITIONS)
def test_sample_shifted_mask(sample, definition):
    records, meta, targets, ids = sample
    things, stuffs = meta.thing_classes, meta.stuff_classes
    t, ids0 = targets[0], ids[0]
    stats = _base_stats(meta, [t])
    seg = ids0 == 3937500  # a person of image 1 (area 3528)
    label = t[seg][0]
    shifted = np.zeros_like(seg)
    shifted[:, 12:] = seg[:, :-12]  # 12 pixels to the right
    pred = t.copy()
    pred[seg] = [-1, 0]  # its old place unassigned
    pred[shifted] = label  # painted over whatever is there
    # explicit pixel counts
    inter = int((seg & shifted).sum())
    on_void = int((shifted & (t[..., 0] == -1)).sum())  # unlabelled and crowd pixels under the shifted mask
    vacated = int((seg & ~shifted).sum())  # ground truth of the person predicted void
    area = int(shifted.sum())
    assert area == 3528 and 0 < inter < 3528
    expected = {c: list(s) for c, s in stats.items()}
    if definition == "panopticapi":
        union = area + 3528 - inter - on_void
    else:
        union = area - on_void + 3528 - vacated - inter
    iou = inter / union
    if iou > 0.5:
        expected[PERSON][0] += iou - 1.0
    else:  # the person is missed; the shifted mask is a FP unless mostly on void
        expected[PERSON][0] -= 1.0
        expected[PERSON][1] -= 1
        expected[PERSON][3] += definition == "panopticapi" or vacated / 3528 <= 0.5
        expected[PERSON][2] += on_void / area <= 0.5
    # the segments the shifted mask covers lose those pixels: IoU = |T \ shifted| / |T| (no void in them)
    covered = 0
    for v in np.unique(ids0[shifted & ~seg]):
        mask = ids0 == v
        cat = int(t[mask][0, 0])
        if v == 0 or cat < 0:
            continue  # void, crowd
        covered += 1
        kept = int((mask & ~shifted).sum()) / int(mask.sum())
        if kept > 0.5:
            expected[cat][0] += kept - 1.0
        else:
            expected[cat][0] -= 1.0
            expected[cat][1] -= 1
            expected[cat][3] += 1
            expected[cat][2] += kept > 0  # its remainder, not on void, is an unmatched prediction
    assert covered  # the shift does overlap other segments
    check(run([pred], [t], things, stuffs, definition), averages(expected, things))

"""kMaX-DeepLab matching, losses and panoptic post-processing (:mod:`formers.vision.segmentation.criterion`,
:mod:`formers.vision.segmentation.postprocess`): equality with the official arithmetic (``kmax_official_criterion``)
on random predictions, hand-computable toy cases, edge cases (no segments, more segments than queries, all void,
maps smaller than the pixel sample) and the gradient paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from formers.vision.segmentation import criterion as crit
from formers.vision.segmentation.criterion import KMaXCriterion, hungarian_match
from formers.vision.segmentation.postprocess import (
    panoptic_inference,
    panoptic_inference_batch,
    to_category_instance,
    upsample_masks,
)
from vision import kmax_official_criterion as official

K = 5  # classes (void = K)
Q = 6  # queries
C = 8  # pixel feature channels


# ------------------------------------------------------------------------------------------------ helpers


def make_target(gen: torch.Generator, num_segments: int, size: tuple[int, int], void_fraction: float = 0.2) -> dict:
    """Random panoptic target: every pixel belongs to one of ``num_segments`` segments (of decreasing expected
    areas, so that the area-weighted pixel sampling matters) or is void."""
    h, w = size
    weights = 0.6 ** torch.arange(max(num_segments, 1), dtype=torch.float)
    segment = torch.multinomial(weights, h * w, replacement=True, generator=gen).view(h, w)
    void = torch.rand(h, w, generator=gen) < void_fraction
    if num_segments == 0:
        void[:] = True
    segment = torch.where(void, -1, segment)
    labels = torch.randint(0, K, (num_segments,), generator=gen)
    masks = torch.stack([segment == m for m in range(num_segments)]) if num_segments else torch.zeros(0, h, w)
    semantic = torch.where(segment >= 0, labels[segment.clamp(min=0)] if num_segments else 0, K)
    return {"labels": labels, "masks": masks.bool(), "semantic": semantic}


def make_output(gen: torch.Generator, batch: int, size: tuple[int, int], queries: int = Q) -> dict:
    h, w = size
    return {
        "pred_logits": torch.randn(batch, queries, K + 1, generator=gen) * 2,
        "pred_masks": torch.randn(batch, queries, h, w, generator=gen) * 3,
        "pixel_feature": F.normalize(torch.randn(batch, C, h, w, generator=gen), dim=1),
    }


def make_outputs(
    gen: torch.Generator,
    batch: int,
    size: tuple[int, int],
    semantic_size: tuple[int, int] | None,
    num_aux: int = 6,
    queries: int = Q,
) -> dict:
    outputs = make_output(gen, batch, size, queries)
    outputs["aux_outputs"] = [make_output(gen, batch, size, queries) for _ in range(num_aux)]
    if semantic_size is not None:
        outputs["aux_semantic_pred"] = torch.randn(batch, K + 1, *semantic_size, generator=gen)
    return outputs


def official_targets(targets: list[dict]) -> list[dict]:
    return [{"labels": t["labels"], "masks": t["masks"], "semantic_masks": t["semantic"]} for t in targets]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_losses_equal(ours: dict, ref: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert list(ours) == list(ref)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=rtol, atol=atol, msg=name)


# ------------------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("share_final_matching", [True, False])
def test_criterion_equals_official(share_final_matching: bool) -> None:
    gen = seeded(1)
    size = (13, 13)
    # a usual image, an image without segments (all void), more segments than queries, few segments and much void
    targets = [
        make_target(gen, 4, size),
        make_target(gen, 0, size),
        make_target(gen, 9, size),
        make_target(gen, 2, size, void_fraction=0.7),
    ]
    outputs = make_outputs(gen, len(targets), size, semantic_size=(7, 7))
    kwargs = dict(insdis_sample_k=40, aux_semantic_sample_k=20)
    ours = KMaXCriterion(K, share_final_matching=share_final_matching, **kwargs)
    ref = official.SetCriterion(K, share_final_matching=share_final_matching, **kwargs)
    got = ours(outputs, targets, generator=seeded(7))
    want, _ = ref(outputs, official_targets(targets), generator=seeded(7))
    assert len(got) == 5 + 6 * 4
    assert_losses_equal(got, want)
    assert all(torch.isfinite(v) for v in got.values())


def test_matching_equals_official() -> None:
    gen = seeded(2)
    size = (9, 11)
    targets = [make_target(gen, m, size) for m in (3, 0, 6, 10)]
    outputs = make_output(gen, len(targets), size)
    ours = hungarian_match(outputs["pred_logits"], outputs["pred_masks"], targets)
    indices, dice, prob = official.matcher(outputs, official_targets(targets))
    for b in range(len(targets)):
        assert torch.equal(ours.indices[b][0], indices[b][0]) and torch.equal(ours.indices[b][1], indices[b][1])
        torch.testing.assert_close(ours.matched_dice[b], dice[b])
        torch.testing.assert_close(ours.matched_cls_prob[b], prob[b])
        assert len(ours.indices[b][0]) == min(Q, len(targets[b]["labels"]))
        assert not ours.matched_dice[b].requires_grad
    assert torch.equal(ours.indices[3][0], torch.arange(Q))  # 10 segments, 6 queries: every query matched


def test_generator_reproducible_and_global_rng() -> None:
    gen = seeded(3)
    size = (10, 10)
    targets = [make_target(gen, 3, size), make_target(gen, 5, size)]
    outputs = make_outputs(gen, 2, size, semantic_size=(10, 10), num_aux=2)
    criterion = KMaXCriterion(K, insdis_sample_k=30, aux_semantic_sample_k=30)
    first = criterion(outputs, targets, generator=seeded(11))
    second = criterion(outputs, targets, generator=seeded(11))
    assert_losses_equal(first, second, rtol=0, atol=0)
    other = criterion(outputs, targets, generator=seeded(12))
    assert not torch.equal(first["loss_pixel_insdis"], other["loss_pixel_insdis"])
    torch.testing.assert_close(first["loss_dice"], other["loss_dice"])  # no sampling
    torch.manual_seed(5)
    global_a = criterion(outputs, targets)
    torch.manual_seed(5)
    global_b = criterion(outputs, targets)
    assert_losses_equal(global_a, global_b, rtol=0, atol=0)


def test_sample_k_larger_than_map() -> None:
    """Official ``topk`` needs >= 4096 pixels; here k is clamped, which equals sampling every pixel."""
    gen = seeded(4)
    size = (8, 8)
    targets = [make_target(gen, 3, size), make_target(gen, 2, size)]
    outputs = make_outputs(gen, 2, size, semantic_size=(8, 8), num_aux=1)
    got = KMaXCriterion(K)(outputs, targets, generator=seeded(1))  # default 4096 > 64 pixels
    want, _ = official.SetCriterion(K, insdis_sample_k=64, aux_semantic_sample_k=64)(
        outputs, official_targets(targets), generator=seeded(1)
    )
    assert_losses_equal(got, want)


def test_aux_semantic_full_map_and_strides() -> None:
    gen = seeded(5)
    size = (12, 12)
    targets = [make_target(gen, 3, size), make_target(gen, 4, size)]
    outputs = make_outputs(gen, 2, size, semantic_size=(6, 6), num_aux=0)
    got = KMaXCriterion(K, insdis_sample_k=50, aux_semantic_sample_k=0)(outputs, targets, generator=seeded(2))
    want, _ = official.SetCriterion(K, insdis_sample_k=50, aux_semantic_sample_k=0)(
        outputs, official_targets(targets), generator=seeded(2)
    )
    assert_losses_equal(got, want)
    assert crit._subsample_stride((161, 161), (81, 81)) == 2  # official 32k + 1 sizes
    assert crit._subsample_stride((160, 120), (40, 30)) == 4
    assert crit._subsample_stride((4, 4), (1, 1)) == 4  # the official formula divides by zero here
    with pytest.raises(ValueError):
        crit._subsample_stride((10, 10), (4, 6))


# ------------------------------------------------------------------------------------------------ toy cases


def two_segment_case(swap: bool = False):
    """4 x 4 image: class 0 on the left half, class 1 on the right half; two confident queries."""
    left = torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True
    target = {"labels": torch.tensor([0, 1]), "masks": torch.stack([left, ~left])}
    masks = torch.stack([torch.where(left, 10.0, -10.0), torch.where(left, -10.0, 10.0)])[None]
    logits = torch.full((1, 2, K + 1), -10.0)
    logits[0, 0, 0] = logits[0, 1, 1] = 10.0
    if swap:
        masks, logits = masks.flip(1), logits.flip(1)
    outputs = {
        "pred_logits": logits,
        "pred_masks": masks,
        "pixel_feature": F.normalize(torch.randn(1, C, 4, 4, generator=seeded(0)), dim=1),
    }
    return outputs, [target]


@pytest.mark.parametrize("swap", [False, True])
def test_perfect_prediction(swap: bool) -> None:
    outputs, targets = two_segment_case(swap)
    matching = hungarian_match(outputs["pred_logits"], outputs["pred_masks"], targets)
    rows, cols = matching.indices[0]
    assert rows.tolist() == [0, 1]
    assert cols.tolist() == ([1, 0] if swap else [0, 1])
    torch.testing.assert_close(matching.matched_dice[0], torch.full((2,), 8 / (8 + 1e-5)), rtol=1e-4, atol=1e-4)
    losses = KMaXCriterion(K, deep_supervision=False)(outputs, targets, generator=seeded(0))
    assert losses["loss_dice"] < 1e-6
    assert losses["loss_mask"] < 1e-6
    assert losses["loss_ce"] < 1e-6


def test_class_loss_hand_computed() -> None:
    """One segment over the whole 4 x 4 image, two queries, uniform class logits: CE = log(K + 1) for both; the
    matched one weighted 0.75 x dice, the unmatched one (target void) 0.25 x 1e-5 (no void pixel); instance
    discrimination of identical features = cross-entropy of two uniform distributions = log(16)."""
    target = {"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4, dtype=torch.bool)}
    outputs = {
        "pred_logits": torch.zeros(1, 2, K + 1),
        "pred_masks": torch.stack([torch.full((4, 4), 20.0), torch.full((4, 4), -20.0)])[None],
        "pixel_feature": F.normalize(torch.ones(1, C, 4, 4), dim=1),
    }
    losses = KMaXCriterion(K)(outputs, [target], generator=seeded(0))
    dice = 16 / (16 + 1e-5)
    expected = 3.0 * (0.75 * math.log(K + 1) * dice + 0.25 * math.log(K + 1) * 1e-5) / 2
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["loss_mask"].item() == 0.0  # query 0 takes every pixel with probability 1.0 in fp32
    # identical features and one segment: predicted and target affinities both uniform over the 16 pixels
    assert losses["loss_pixel_insdis"].item() == pytest.approx(math.log(16), rel=1e-6)


def test_unmatched_query_weighted_by_void_overlap() -> None:
    """4 x 4 image, left half class 0, right half void. Query 0 covers the left half, query 1 the (void) right half:
    query 1 is unmatched and its void class loss is weighted by its overlap with void, 8 / (8 + 1e-5)."""
    left = torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True
    target = {"labels": torch.tensor([0]), "masks": left[None]}
    outputs = {
        "pred_logits": torch.zeros(1, 2, K + 1),
        "pred_masks": torch.stack([torch.where(left, 20.0, -20.0), torch.where(left, -20.0, 20.0)])[None],
        "pixel_feature": F.normalize(torch.ones(1, C, 4, 4), dim=1),
    }
    losses = KMaXCriterion(K)(outputs, [target], generator=seeded(0))
    weight = 8 / (8 + 1e-5)  # matched dice of query 0 and void overlap of query 1
    expected = 3.0 * (0.75 * math.log(K + 1) * weight + 0.25 * math.log(K + 1) * weight) / 2
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(0.0, abs=1e-7)  # query 1 has no dice weight
    # every pixel is sampled (k clamps to 16): void samples have no target (loss 0, not counted) but enter the
    # softmax of the 8 others -> log(16); with k = 8 the Gumbel-top-k draws only the non-void pixels -> log(8)
    assert losses["loss_pixel_insdis"].item() == pytest.approx(math.log(16), rel=1e-6)
    losses = KMaXCriterion(K, insdis_sample_k=8)(outputs, [target], generator=seeded(0))
    assert losses["loss_pixel_insdis"].item() == pytest.approx(math.log(8), rel=1e-6)


def test_all_void_image_no_nan() -> None:
    size = (6, 6)
    target = {
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, *size, dtype=torch.bool),
        "semantic": torch.full(size, K),
    }
    outputs = make_outputs(seeded(6), 1, size, semantic_size=size, num_aux=2)
    for value in [outputs, *outputs["aux_outputs"]]:
        for key in ("pred_logits", "pred_masks", "pixel_feature"):
            value[key].requires_grad_(True)
    outputs["aux_semantic_pred"].requires_grad_(True)
    losses = KMaXCriterion(K)(outputs, [target], generator=seeded(0))
    for name, value in losses.items():
        assert torch.isfinite(value), name
        if not name.startswith("loss_ce"):
            assert value.item() == 0.0, name
    assert losses["loss_ce"] > 0  # every query is pushed to void
    sum(losses.values()).backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all() and torch.isfinite(outputs["pred_masks"].grad).all()


def test_bad_inputs() -> None:
    outputs, targets = two_segment_case()
    with pytest.raises(ValueError, match="targets for a batch"):
        KMaXCriterion(K)(outputs, targets * 2)
    with pytest.raises(ValueError, match="masks of shape"):
        KMaXCriterion(K)(outputs, [{"labels": torch.tensor([0]), "masks": torch.ones(1, 3, 3)}])
    with pytest.raises(ValueError, match="unknown loss weights"):
        KMaXCriterion(K, weights={"cls": 1.0})
    outputs["aux_semantic_pred"] = torch.zeros(1, K + 1, 4, 4)
    with pytest.raises(ValueError, match="no semantic target"):
        KMaXCriterion(K)(outputs, targets)


def test_non_finite_predictions_give_non_finite_losses() -> None:
    """Corrected official defects: divide_no_nan must not turn NaN / inf losses into 0, and non-finite logits must
    not fail inside scipy's assignment (the official matcher raises 'matrix contains invalid numeric entries')."""
    outputs, targets = two_segment_case()
    outputs["pixel_feature"][0, :, 0, 0] = float("nan")
    losses = KMaXCriterion(K)(outputs, targets, generator=seeded(0))
    assert not torch.isfinite(losses["loss_pixel_insdis"])
    # the official nan_to_num(x / y) hides it: the loss reads 0 while its gradients are NaN
    official_losses, _ = official.SetCriterion(K, insdis_sample_k=16, aux_semantic_weight=0.0)(
        outputs, targets, generator=seeded(0)
    )
    assert official_losses["loss_pixel_insdis"].item() == 0.0
    outputs["pred_logits"][0, 0, 0] = float("nan")
    outputs["pred_masks"][0, 1, 0, 0] = float("inf")
    losses = KMaXCriterion(K)(outputs, targets, generator=seeded(0))
    assert not torch.isfinite(losses["loss_ce"]) and not torch.isfinite(losses["loss_mask"])


def test_zero_weight_skips_term_and_bf16_inputs() -> None:
    gen = seeded(8)
    size = (8, 8)
    targets = [make_target(gen, 3, size)]
    outputs = make_outputs(gen, 1, size, semantic_size=None, num_aux=1)
    losses = KMaXCriterion(K, weights={"insdis": 0.0}, insdis_sample_k=16)(outputs, targets)
    assert "loss_pixel_insdis" not in losses and "loss_pixel_insdis_0" not in losses
    assert "loss_aux_semantic" not in losses  # no aux_semantic_pred in the outputs
    half = {
        k: (v.bfloat16() if torch.is_tensor(v) else [{kk: vv.bfloat16() for kk, vv in a.items()} for a in v])
        for k, v in outputs.items()
    }
    losses = KMaXCriterion(K, insdis_sample_k=16)(half, targets, generator=seeded(0))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_gradient_paths() -> None:
    """Each term reaches only its own prediction; nothing flows through the matching or its weights."""
    gen = seeded(9)
    size = (8, 8)
    targets = [make_target(gen, 3, size), make_target(gen, 2, size)]
    outputs = make_outputs(gen, 2, size, semantic_size=(8, 8), num_aux=1)
    final = [outputs["pred_logits"], outputs["pred_masks"], outputs["pixel_feature"]]
    aux = [outputs["aux_outputs"][0][k] for k in ("pred_logits", "pred_masks", "pixel_feature")]
    leaves = [*final, *aux, outputs["aux_semantic_pred"]]
    for leaf in leaves:
        leaf.requires_grad_(True)
    losses = KMaXCriterion(K, insdis_sample_k=32, aux_semantic_sample_k=32)(outputs, targets, generator=seeded(0))
    reaches = {
        "loss_ce": {0},
        "loss_mask": {1},
        "loss_dice": {1},
        "loss_pixel_insdis": {2},
        "loss_aux_semantic": {6},
        "loss_ce_0": {3},
        "loss_mask_0": {4},
        "loss_dice_0": {4},
        "loss_pixel_insdis_0": {5},
    }
    assert set(losses) == set(reaches)
    for name, expected in reaches.items():
        grads = torch.autograd.grad(losses[name], leaves, retain_graph=True, allow_unused=True)
        got = {i for i, g in enumerate(grads) if g is not None and g.abs().sum() > 0}
        assert got == expected, name


# ------------------------------------------------------------------------------------------------ post-processing


def class_logits_for(probabilities: list[tuple[int, float]], num_classes: int = K) -> torch.Tensor:
    """(Q, K + 1) logits whose softmax gives class ``c`` probability ``p`` (the rest spread evenly)."""
    rows = []
    for label, p in probabilities:
        prob = torch.full((num_classes + 1,), (1 - p) / num_classes, dtype=torch.float64)
        prob[label] = p
        rows.append(prob.log().float())
    return torch.stack(rows)


def region_logits(regions: list[torch.Tensor]) -> torch.Tensor:
    """(Q, H, W) mask logits: 10 inside each region, -10 outside."""
    return torch.stack([torch.where(r, 10.0, -10.0) for r in regions])


def rows_mask(start: int, stop: int, size: int = 10) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[start:stop] = True
    return mask


IS_THING = torch.tensor([True, True, False, False, True])


@pytest.mark.parametrize(
    ("label", "score", "kept"), [(0, 0.69, False), (0, 0.71, True), (2, 0.49, False), (2, 0.51, True)]
)
def test_class_thresholds(label: int, score: float, kept: bool) -> None:
    logits = class_logits_for([(label, score), (3, 0.9)])
    masks = region_logits([rows_mask(0, 5), rows_mask(5, 10)])
    segment_map, segments = panoptic_inference(logits, masks, IS_THING)
    assert [s["category_id"] for s in segments] == ([3, label] if kept else [3])
    assert (segment_map[:5] != 0).all().item() is kept
    if kept:
        segment = segments[1]
        assert segment["isthing"] == bool(IS_THING[label]) and segment["area"] == 50
        assert segment["class_score"] == pytest.approx(score, abs=1e-5)
        assert segment["score"] == pytest.approx(score * segment["mask_score"], rel=1e-5)


@pytest.mark.parametrize(("second", "kept"), [(rows_mask(3, 10), False), (rows_mask(4, 10), True)])
def test_overlap_rule(second: torch.Tensor, kept: bool) -> None:
    """First thing: rows 0-4 (50 px). Second: rows 3-9 (50 of 70 px new: 0.71 <= 0.8, dropped) or rows 4-9 (50 of
    60 new: 0.83 > 0.8, kept with the new pixels only). Overlapping pixels have probability 0.5 in both; the first
    ranks first (class 0.99 vs 0.75)."""
    logits = class_logits_for([(0, 0.99), (1, 0.75)])
    segment_map, segments = panoptic_inference(logits, region_logits([rows_mask(0, 5), second]), IS_THING)
    assert len(segments) == (2 if kept else 1)
    assert (segment_map[:5] == 1).all()
    if kept:
        assert (segment_map[5:] == 2).all() and segments[1]["area"] == 50
    else:
        assert (segment_map[5:] == 0).all()


def test_stuff_merge() -> None:
    logits = class_logits_for([(2, 0.9), (2, 0.8), (3, 0.85), (0, 0.9)])
    regions = [rows_mask(0, 3), rows_mask(3, 5), rows_mask(5, 7), rows_mask(7, 10)]
    segment_map, segments = panoptic_inference(logits, region_logits(regions), IS_THING)
    by_class = {s["category_id"]: s for s in segments}
    assert sorted(by_class) == [0, 2, 3] and len(segments) == 3
    stuff = by_class[2]
    assert stuff["area"] == 50 and (segment_map[:5] == stuff["id"]).all()
    panoptic = to_category_instance(segment_map, segments)
    assert (panoptic[:5, :, 0] == 2).all() and (panoptic[:5, :, 1] == 0).all()  # stuff: instance 0
    assert (panoptic[7:, :, 0] == 0).all() and (panoptic[7:, :, 1] == by_class[0]["id"]).all()


def test_to_category_instance_void() -> None:
    segment_map = torch.tensor([[0, 1], [2, 2]], dtype=torch.int32)
    segments = [{"id": 1, "category_id": 4, "isthing": True}, {"id": 2, "category_id": 2, "isthing": False}]
    out = to_category_instance(segment_map, segments)
    assert out.dtype == torch.int64
    assert out.tolist() == [[[-1, 0], [4, 1]], [[2, 0], [2, 0]]]


@pytest.mark.parametrize("seed", range(4))
def test_panoptic_inference_equals_official(seed: int) -> None:
    gen = seeded(seed)
    queries, size = 16, (20, 24)
    class_logits = torch.randn(queries, K + 1, generator=gen) * 4
    mask_logits = torch.randn(queries, *size, generator=gen) * 4
    segment_map, segments = panoptic_inference(class_logits, mask_logits, IS_THING)
    ref_map, ref_segments = official.panoptic_inference(
        class_logits, mask_logits, [i for i, t in enumerate(IS_THING.tolist()) if t]
    )
    assert len(ref_segments) > 1
    assert torch.equal(segment_map, ref_map)
    assert [{k: s[k] for k in ("id", "isthing", "category_id")} for s in segments] == ref_segments
    assert [s["area"] for s in segments] == [int((ref_map == s["id"]).sum()) for s in ref_segments]
    batch = panoptic_inference_batch(class_logits[None], mask_logits[None], IS_THING)
    assert torch.equal(batch[0][0], segment_map)


@pytest.mark.parametrize(("padded", "original"), [((33, 33), (20, 30)), ((32, 32), (32, 24)), ((33, 33), (33, 33))])
def test_upsample_masks_equals_official(padded: tuple[int, int], original: tuple[int, int]) -> None:
    logits = torch.randn(2, 5, (padded[0] + 3) // 4, (padded[1] + 3) // 4, generator=seeded(1))
    want, real = official.eval_upsample(logits[:1], padded, *original)
    got = upsample_masks(logits, padded, real, original)
    torch.testing.assert_close(got[0], want)
    per_image = upsample_masks(logits, padded, [real, real], [original, (7, 9)])
    torch.testing.assert_close(per_image[0], want)
    assert per_image[1].shape == (5, 7, 9)

"""kMaX-DeepLab training objective: Hungarian matching and the five kMaX losses (Yu et al. 2022, "k-means Mask
Transformer", arXiv 2207.04044), after the official ``bytedance/kmax-deeplab`` (``modeling/matcher.py``,
``modeling/criterion.py``, ``kmax_model.py``), themselves after deeplab2's ``max_deeplab_loss.py``.

Notation: B images, Q queries (mask slots), K classes (void not counted; class index K is void), M ground-truth
segments of an image, P = h * w pixels of the stride-4 target map.

* **Matching** (:func:`hungarian_match`): cost = -(mask similarity x class probability). The mask similarity is
  the dice ``inter / ((|pred| + |gt|) / 2 + 1e-5)`` of the query softmax (masks softmaxed over queries, void pixels
  zeroed) with each binary ground-truth mask; the class probability excludes void. Solved per image with
  ``scipy.optimize.linear_sum_assignment`` (truncated to ``min(Q, M)`` pairs when M > Q; the ground-truth
  segments left out are then void for every loss, as in the official code). Everything else is batched.
* **Targets** (:func:`process_targets`): matched queries get their segment's class and mask; unmatched queries
  get void and no mask. PQ-style weights: the class loss of a matched query is weighted by its matched dice, that
  of an unmatched query by the IoU-like overlap of its soft mask with the void pixels (both clamped at
  ``no_object_weight``); the dice loss of a matched query is weighted by its matched class probability (clamped
  at ``no_object_weight``), 0 for unmatched queries.
* **Losses** (fp32, each averaged per image over its non-zero terms then over the batch, as deeplab2's
  ``divide_no_nan``): ``loss_ce`` focal cross-entropy (alpha 0.75 for objects, 0.25 for void, gamma 0) x class
  weight; ``loss_mask`` softmax cross-entropy across queries at every non-void pixel; ``loss_dice`` dice of the
  query softmax (void pixels zeroed, smooth 1) x dice weight, summed over queries x 0.75 / Q;
  ``loss_pixel_insdis`` pixel instance discrimination on 4096 pixels drawn by Gumbel-top-k with logits
  ``1.5 * log(P / area)`` (void excluded), similarity temperature 0.3; ``loss_aux_semantic`` cross-entropy of the
  auxiliary semantic head on 4096 pixels drawn with temperature 2.0 (the target subsampled to the prediction's
  stride, void K ignored).
* **Deep supervision**: the six intermediate predictions (``aux_outputs``) get ``loss_ce/mask/dice/pixel_insdis``
  with suffixes ``_0`` .. ``_5``, sharing the final output's matching and weights (``SHARE_FINAL_MATCHING``).
* **Weights** (applied here; the sum of the returned dict is the training loss): ce 3, dice 3, mask 0.3, insdis 1,
  aux_semantic 1. A term whose weight is 0 is not computed.

Where this differs from the official code (nothing changes on the official 641 x 641 panoptic crops):

* the number of sampled pixels is at most the number of pixels (the official ``topk`` fails on maps with fewer
  than 4096 pixels, e.g. images under 256 x 256);
* the auxiliary semantic target is subsampled with the stride ``s`` such that ``ceil(h / s)`` equals the
  prediction's size, for any image size (the official ``(w - 1) // (w' - 1)`` divides by zero on one-pixel-wide
  predictions; where it is valid both agree);
* a pixel is void when no matched mask covers it, tested before the masks are normalised to sum to one (the
  official tests the normalised sum ``< 1``, which rounding can make true on pixels shared by many overlapping
  masks, e.g. 43 in fp32; for panoptic targets, which never overlap, both are the same);
* non-finite predictions are matched arbitrarily (their cost entries set to 0) instead of failing in scipy
  ("matrix contains invalid numeric entries"), so that the loss itself turns non-finite;
* ``divide_no_nan`` is TensorFlow's (0 where the denominator is 0): the official port, ``nan_to_num(x / y)``, also
  turns NaN / infinite losses into 0, so a diverged prediction trains on silently with NaN gradients (here the
  loss is non-finite and the spine stops); on finite values both are the same (every denominator is >= 1);
* the Gumbel noise is drawn from an optional ``torch.Generator`` (reproducible sampling), in the official order:
  final output's instance discrimination, auxiliary semantic, then each deep-supervision output.

Performance (same values up to rounding): the matcher's similarities and all target processing are batched (only
``linear_sum_assignment`` runs per image); the instance discrimination never forms the k x k target affinity nor
its product over all Q queries (see :func:`pixel_insdis_loss`), and the mask cross-entropy and dice share one
log-softmax.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

__all__ = [
    "DEFAULT_WEIGHTS",
    "KMaXCriterion",
    "Matching",
    "ProcessedTargets",
    "hungarian_match",
    "process_targets",
    "focal_class_loss",
    "mask_losses",
    "pixel_insdis_loss",
    "aux_semantic_loss",
    "gumbel_topk",
]

DEFAULT_WEIGHTS = {"ce": 3.0, "dice": 3.0, "mask": 0.3, "insdis": 1.0, "aux_semantic": 1.0}
_MASKING_CONSTANT = -99999.0  # added to the sampling logits of void pixels (official _SOFTMAX_MASKING_CONSTANT)
_SIMILARITY_EPS = 1e-5  # denominator epsilon of the matcher's dice and of the void IoU


def _divide_no_nan(x: Tensor, y: Tensor) -> Tensor:
    """``x / y``, 0 where ``y == 0`` (TensorFlow's ``divide_no_nan``; non-finite ``x`` stays non-finite)."""
    zero = y == 0
    return torch.where(zero, 0.0, x / torch.where(zero, 1.0, y))


def _mean_over_nonzero(loss: Tensor) -> Tensor:
    """(B, N) per-element losses -> scalar: per image, the sum over the non-zero elements divided by their number
    (at least 1); then the mean over images (the official reduction of every per-pixel / per-query loss)."""
    count = (loss != 0.0).sum(-1).clamp(min=1).to(loss)  # B
    return _divide_no_nan(loss.sum(-1), count).mean()


# ------------------------------------------------------------------------------------------------ targets


def _stack_targets(targets: Sequence[Mapping[str, Tensor]], size: tuple[int, int], device: torch.device):
    """Pads the per-image targets to the largest M of the batch.

    Returns ``gt_masks`` (B, M, P) float32 binary masks (zero rows as padding), ``gt_labels`` (B, M) int64 (0 as
    padding) and the number of segments of each image.
    """
    counts = [int(t["labels"].numel()) for t in targets]
    batch, most = len(targets), max(counts, default=0)
    gt_masks = torch.zeros(batch, most, size[0] * size[1], device=device)
    gt_labels = torch.zeros(batch, most, dtype=torch.int64, device=device)
    for b, (target, count) in enumerate(zip(targets, counts, strict=True)):
        masks = target["masks"]
        if tuple(masks.shape) != (count, *size):
            raise ValueError(
                f"target {b}: masks of shape {tuple(masks.shape)}, expected ({count}, {size[0]}, {size[1]}) "
                "(one mask per label, at the resolution of pred_masks)"
            )
        if count:
            gt_masks[b, :count] = masks.reshape(count, -1).to(device=device, dtype=torch.float32)
            gt_labels[b, :count] = target["labels"].to(device)
    return gt_masks, gt_labels, counts


class Matching(NamedTuple):
    """The Hungarian matching of a batch (one entry per image, as the official matcher returns it)."""

    indices: list[tuple[Tensor, Tensor]]  # (query indices, target indices), int64 on the CPU, min(Q, M) each
    matched_dice: list[Tensor]  # (min(Q, M),) mask similarity of each matched pair
    matched_cls_prob: list[Tensor]  # (min(Q, M),) class probability of the matched pair's ground-truth class


@torch.no_grad()
def _mask_similarity(mask_prob: Tensor, gt_masks: Tensor, masking_void_pixel: bool = True) -> Tensor:
    """Dice-like similarity (B, Q, M) of the query softmax ``mask_prob`` (B, Q, P) with ``gt_masks`` (B, M, P)."""
    if masking_void_pixel:
        non_void = gt_masks.sum(1, keepdim=True) > 0  # B x 1 x P (padding rows are zero: no effect)
        mask_prob = mask_prob * non_void
    intersection = torch.bmm(mask_prob, gt_masks.transpose(1, 2))  # B x Q x M
    denominator = (mask_prob.sum(-1)[:, :, None] + gt_masks.sum(-1)[:, None, :]) / 2.0  # B x Q x M
    return intersection / (denominator + _SIMILARITY_EPS)


@torch.no_grad()
def _class_similarity(class_logits: Tensor, gt_labels: Tensor) -> Tensor:
    """Probability (B, Q, M) of each ground-truth class under the softmax of ``class_logits`` (B, Q, K + 1), void
    excluded from the gathered classes (it still takes part in the softmax)."""
    class_prob = class_logits.softmax(-1)[..., :-1]  # B x Q x K
    index = gt_labels[:, None, :].expand(-1, class_prob.shape[1], -1)  # B x Q x M
    return class_prob.gather(2, index)


@torch.no_grad()
def _match(
    class_logits: Tensor,
    mask_prob: Tensor,
    gt_masks: Tensor,
    gt_labels: Tensor,
    counts: list[int],
    masking_void_pixel: bool = True,
) -> Matching:
    """Batched similarities, then one ``linear_sum_assignment`` per image on its (Q, M_b) cost."""
    mask_sim = _mask_similarity(mask_prob, gt_masks, masking_void_pixel)  # B x Q x M
    class_sim = _class_similarity(class_logits, gt_labels)  # B x Q x M
    cost = -(mask_sim * class_sim)  # B x Q x M
    # Non-finite predictions (a diverged run) are matched arbitrarily instead of failing inside scipy: the losses
    # then turn non-finite themselves, which the training spine reports with the step.
    cost = torch.nan_to_num(cost, nan=0.0, posinf=0.0, neginf=0.0).cpu().numpy()
    indices, matched_dice, matched_cls_prob = [], [], []
    for b, count in enumerate(counts):
        if count:
            rows, cols = linear_sum_assignment(cost[b, :, :count])  # truncated to min(Q, M) pairs
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
        rows_t = torch.as_tensor(rows, dtype=torch.int64)
        cols_t = torch.as_tensor(cols, dtype=torch.int64)
        rows_d, cols_d = rows_t.to(mask_sim.device), cols_t.to(mask_sim.device)
        indices.append((rows_t, cols_t))
        matched_dice.append(mask_sim[b, rows_d, cols_d])
        matched_cls_prob.append(class_sim[b, rows_d, cols_d])
    return Matching(indices, matched_dice, matched_cls_prob)


def _query_softmax(mask_logits: Tensor) -> Tensor:
    """(B, Q, h, w) mask logits -> (B, Q, P) fp32 softmax over queries, detached."""
    return mask_logits.detach().float().flatten(2).softmax(1)


@torch.no_grad()
def hungarian_match(
    class_logits: Tensor,
    mask_logits: Tensor,
    targets: Sequence[Mapping[str, Tensor]],
    masking_void_pixel: bool = True,
) -> Matching:
    """kMaX's Hungarian matching of queries to ground-truth segments.

    Args:
        class_logits: (B, Q, K + 1) class logits, void last.
        mask_logits: (B, Q, h, w) mask logits.
        targets: per image, ``labels`` (M,) int64 in [0, K) and ``masks`` (M, h, w) binary (void pixels in none).
        masking_void_pixel: zero the query softmax on void pixels before the similarity (official default).

    Returns:
        :class:`Matching`: per image the matched (query, target) indices (``linear_sum_assignment`` order: queries
        ascending), the matched mask similarities and class probabilities (fp32, no gradient).
    """
    size = tuple(mask_logits.shape[-2:])
    gt_masks, gt_labels, counts = _stack_targets(targets, size, mask_logits.device)
    return _match(
        class_logits.detach().float(), _query_softmax(mask_logits), gt_masks, gt_labels, counts, masking_void_pixel
    )


class ProcessedTargets(NamedTuple):
    """The matched targets, padded to the Q queries (what every loss of one matching reads)."""

    labels: Tensor  # B x Q int64: the matched segment's class, K (void) for unmatched queries
    masks: Tensor  # B x Q x P: the matched segment's mask (normalised to sum <= 1 over queries), 0 if unmatched
    matched_masks: Tensor  # B x L x P: the same masks compacted to the matched queries (L = most matches)
    class_weight: Tensor  # B x Q: matched dice, or the overlap with void for unmatched queries; >= no_object
    mask_weight: Tensor  # B x Q: matched class probability (>= no_object_weight); 0 for unmatched queries
    void: Tensor  # B x P bool: pixels covered by no matched mask
    inverse_area: Tensor  # B x P: P / area of the pixel's segment (P on void), base of the sampling logits
    size: tuple[int, int]  # (h, w)


@torch.no_grad()
def process_targets(
    matching: Matching,
    gt_masks: Tensor,
    gt_labels: Tensor,
    mask_prob: Tensor,
    num_classes: int,
    no_object_weight: float = 1e-5,
    size: tuple[int, int] | None = None,
) -> ProcessedTargets:
    """Pads and permutes the ground truth to the queries (official ``SetCriterion.process_gt``), batched.

    Args:
        matching: the matching of the prediction whose ``mask_prob`` (B, Q, P, softmax over queries) is given.
        gt_masks, gt_labels: (B, M, P) and (B, M), zero-padded (see :func:`_stack_targets`).
    """
    batch, queries, pixels = mask_prob.shape
    device = mask_prob.device
    # Flat (image, query, target) index of every matched pair of the batch.
    batch_idx = torch.cat([torch.full((len(q),), b, dtype=torch.int64) for b, (q, _) in enumerate(matching.indices)])
    query_idx = torch.cat([q for q, _ in matching.indices])
    target_idx = torch.cat([t for _, t in matching.indices])
    batch_idx, query_idx, target_idx = batch_idx.to(device), query_idx.to(device), target_idx.to(device)

    masks = torch.zeros(batch, queries, pixels, device=device)  # B x Q x P
    masks[batch_idx, query_idx] = gt_masks[batch_idx, target_idx]
    coverage = masks.sum(1)  # B x P
    void = coverage < 1  # before normalising (see the module notes)
    masks = masks / coverage.clamp(min=1.0)[:, None]  # overlapping masks share a pixel

    segment_area = masks.sum(2)  # B x Q
    pixel_area = torch.bmm(segment_area[:, None, :], masks)[:, 0]  # B x P
    inverse_area = pixels / pixel_area.clamp(min=1.0)  # B x P

    labels = torch.full((batch, queries), num_classes, dtype=torch.int64, device=device)
    labels[batch_idx, query_idx] = gt_labels[batch_idx, target_idx]

    mask_weight = torch.zeros(batch, queries, device=device)  # no dice penalty for unmatched queries
    mask_weight[batch_idx, query_idx] = torch.cat(matching.matched_cls_prob).float().clamp(min=no_object_weight)

    # Unmatched queries (target void) are weighted by how much of their soft mask lies on void pixels.
    void_overlap = torch.bmm(mask_prob, void.float()[:, :, None])[..., 0]  # B x Q
    class_weight = void_overlap / (mask_prob.sum(-1) + _SIMILARITY_EPS)  # B x Q
    class_weight[batch_idx, query_idx] = torch.cat(matching.matched_dice).float()
    class_weight = class_weight.clamp(min=no_object_weight)

    # The matched masks alone (B x L x P), for the instance-discrimination similarities.
    most = max((len(q) for q, _ in matching.indices), default=0)
    slot_idx = torch.cat([torch.arange(len(q)) for q, _ in matching.indices]).to(device)
    matched_masks = torch.zeros(batch, most, pixels, device=device)
    matched_masks[batch_idx, slot_idx] = masks[batch_idx, query_idx]

    if size is None:
        size = (1, pixels)
    return ProcessedTargets(labels, masks, matched_masks, class_weight, mask_weight, void, inverse_area, size)


# ------------------------------------------------------------------------------------------------ losses


def focal_class_loss(
    class_logits: Tensor, labels: Tensor, weight: Tensor, alpha: float = 0.75, gamma: float = 0.0
) -> Tensor:
    """PQ-style focal cross-entropy (deeplab2 ``focal_cross_entropy_loss``).

    Args:
        class_logits: (B, Q, K + 1), void last. labels: (B, Q) in [0, K]. weight: (B, Q) per-query weight.
    """
    ce = F.cross_entropy(class_logits.transpose(1, 2), labels, reduction="none")  # B x Q
    if gamma != 0.0:
        ce = (1.0 - torch.exp(-ce)).pow(gamma) * ce  # (1 - p_t)^gamma
    if alpha >= 0:
        is_void = labels == class_logits.shape[-1] - 1  # B x Q
        ce = torch.where(is_void, 1.0 - alpha, alpha) * ce
    return _mean_over_nonzero(ce * weight)


def mask_losses(
    mask_logits: Tensor, targets: ProcessedTargets, masking_void_pixel: bool = True
) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy across queries (``loss_mask``) and PQ-style dice (``loss_dice``).

    Args:
        mask_logits: (B, Q, P).
    Returns:
        The two unweighted scalars.
    """
    log_prob = mask_logits.log_softmax(1)  # B x Q x P
    # Cross-entropy of the query softmax at each pixel against the (normalised) target masks.
    ce = -(targets.masks * log_prob).sum(1)  # B x P
    ce = ce.masked_fill(targets.void, 0.0)
    loss_mask = _mean_over_nonzero(ce)

    prob = log_prob.exp()  # B x Q x P
    if masking_void_pixel:
        prob = prob.masked_fill(targets.void[:, None], 0.0)
    intersection = 2.0 * (prob * targets.masks).sum(-1) + 1.0  # B x Q (smooth 1)
    denominator = prob.sum(-1) + targets.masks.sum(-1) + 1.0  # B x Q
    dice = (1.0 - _divide_no_nan(intersection, denominator)) * targets.mask_weight  # B x Q
    # deeplab2 sums over masks and averages over the batch; its loss modifier makes the factor 0.75 / Q.
    loss_dice = (dice.sum(1) * 0.75 / mask_logits.shape[1]).mean()
    return loss_mask, loss_dice


def gumbel_topk(logits: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices (B, min(k, N)) of ``k`` draws without replacement from ``softmax(logits)`` (B, N) (Gumbel-top-k).

    The uniform noise is ``torch.rand`` of the logits' shape (fp32), from ``generator`` when given (on its device)."""
    noise_device = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, generator=generator, device=noise_device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(uniform.to(logits.device)))
    return torch.topk(logits + gumbel, min(k, logits.shape[-1])).indices


def _sampling_logits(targets_void: Tensor, inverse_area: Tensor, temperature: float) -> Tensor:
    """Sampling logits (B, P): ``temperature * log(P / area)`` (small segments favoured), void pixels -99999."""
    logits = torch.log(inverse_area) * temperature
    return logits + targets_void.to(logits) * _MASKING_CONSTANT


class _RowLogSumExp(torch.autograd.Function):
    """``torch.logsumexp(x, -1)`` that keeps the row softmax for its backward: fewer passes over the k x k pixel
    affinities, the largest tensor of the objective (about 2x faster on CPU than the composite op)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        peak = x.amax(-1, keepdim=True)
        prob = torch.sub(x, peak).exp_()
        total = prob.sum(-1, keepdim=True)
        ctx.save_for_backward(prob.div_(total))
        return (peak + total.log()).squeeze(-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (prob,) = ctx.saved_tensors
        return prob * grad.unsqueeze(-1)


def pixel_insdis_loss(
    pixel_feature: Tensor,
    targets: ProcessedTargets,
    sample_temperature: float = 1.5,
    sample_k: int = 4096,
    similarity_temperature: float = 0.3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pixel instance discrimination (deeplab2 ``pixelwise_insdis_loss``).

    On the k sampled pixels, the predicted affinity logits ``S = f^T f / temperature`` (k x k) are trained by
    cross-entropy towards the ground-truth affinity ``T = g^T g`` (g: the pixels' matched-mask memberships), each
    pixel's column normalised to a distribution (void pixels: no target, loss 0). Since ``S`` and ``T`` are
    symmetric, pixel j's loss is ``lse_j(S) * sum_i T_ij - sum_i T_ij S_ij`` (normalised), and
    ``sum_i T_ij S_ij = sum_l g_lj (f^T (f g^T))_jl / temperature``: only the log-sum-exp reads the k x k matrix and
    ``T`` is never formed (the official code builds both k x k matrices and their product over all queries).

    Args:
        pixel_feature: (B, C, P) L2-normalised pixel embeddings.
    """
    channels = pixel_feature.shape[1]
    sample_logits = _sampling_logits(targets.void, targets.inverse_area, sample_temperature)  # B x P
    index = gumbel_topk(sample_logits, sample_k, generator)  # B x k
    k = index.shape[1]

    members = targets.matched_masks.gather(2, index[:, None].expand(-1, targets.matched_masks.shape[1], k))
    members = members.transpose(1, 2)  # B x k x L: g^T
    feature = pixel_feature.gather(2, index[:, None].expand(-1, channels, k))  # B x C x k
    scaled = feature.transpose(1, 2) / similarity_temperature  # B x k x C

    logsumexp = _RowLogSumExp.apply(torch.bmm(scaled, feature))  # B x k: over S's rows (= its columns)
    target_sum = torch.bmm(members, members.sum(1)[:, :, None])[..., 0]  # B x k: sum_i T_ij
    normaliser = target_sum.clamp(min=1.0)
    target_logit = (torch.bmm(scaled, torch.bmm(feature, members)) * members).sum(-1)  # B x k: sum_i T_ij S_ij
    loss = (logsumexp * target_sum - target_logit) / normaliser  # B x k
    return _mean_over_nonzero(loss)


def _subsample_stride(target_size: tuple[int, int], pred_size: tuple[int, int]) -> int:
    """The stride ``s`` with ``ceil(target / s) == pred`` on both axes (the official formula first)."""
    if tuple(target_size) == tuple(pred_size):
        return 1
    (h, w), (ph, pw) = target_size, pred_size
    candidates = [(w - 1) // (pw - 1)] if ph > 1 and pw > 1 else []
    candidates += range(1, max(h, w) + 1)
    for stride in candidates:
        if stride >= 1 and math.ceil(h / stride) == ph and math.ceil(w / stride) == pw:
            return stride
    raise ValueError(f"aux_semantic_pred of size {pred_size} is no strided subsampling of the targets {target_size}")


def aux_semantic_loss(
    semantic_logits: Tensor,
    semantic: Tensor,
    targets: ProcessedTargets,
    num_classes: int,
    sample_temperature: float = 2.0,
    sample_k: int = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cross-entropy of the auxiliary semantic head on sampled pixels (void = ``num_classes`` ignored).

    Args:
        semantic_logits: (B, K + 1, h', w') at the target resolution or a strided subsampling of it.
        semantic: (B, h, w) int64 semantic target, ``num_classes`` (or negative) for void.
        sample_k: pixels drawn per image (0: every pixel, plain cross-entropy).
    """
    batch = semantic.shape[0]
    stride = _subsample_stride(targets.size, tuple(semantic_logits.shape[-2:]))
    void = targets.void.view(batch, *targets.size)
    inverse_area = targets.inverse_area.view(batch, *targets.size)
    if stride > 1:
        semantic, void, inverse_area = (x[:, ::stride, ::stride] for x in (semantic, void, inverse_area))

    logits = semantic_logits.flatten(2)  # B x (K + 1) x P'
    gt = semantic.flatten(1)  # B x P'
    gt = torch.where(gt < 0, num_classes, gt)
    if sample_k > 0:
        sample_logits = _sampling_logits(void.flatten(1), inverse_area.flatten(1), sample_temperature)  # B x P'
        index = gumbel_topk(sample_logits, sample_k, generator)  # B x k
        gt = gt.gather(1, index)  # B x k
        logits = logits.gather(2, index[:, None].expand(-1, logits.shape[1], -1))  # B x (K + 1) x k
    loss = F.cross_entropy(logits, gt, ignore_index=num_classes, reduction="none")  # B x k (0 where ignored)
    return _mean_over_nonzero(loss)


# ------------------------------------------------------------------------------------------------ criterion


class KMaXCriterion(nn.Module):
    """The kMaX-DeepLab objective (official ``SetCriterion`` + ``HungarianMatcher``, weights applied).

    Args:
        num_classes: K, void not counted (class logits have K + 1 entries, void last).
        weights: loss weights ``ce``, ``dice``, ``mask``, ``insdis``, ``aux_semantic``; missing keys keep the
            official values (3, 3, 0.3, 1, 1). A zero weight skips the term.
        no_object_weight: lower clamp of the PQ-style weights (official ``NO_OBJECT_WEIGHT`` 1e-5).
        insdis_temperature, insdis_sample_k: sampling temperature and pixels of the instance discrimination.
        aux_semantic_temperature, aux_semantic_sample_k: the same for the auxiliary semantic loss.
        deep_supervision: also supervise ``outputs["aux_outputs"]`` (suffixes ``_0``, ``_1``, ...).
        share_final_matching: the auxiliary outputs reuse the final output's matching and weights (official);
            ``False`` matches each of them on its own.
        masking_void_pixel: zero the query softmax on void pixels in the matcher and the dice loss.
        insdis_similarity_temperature: temperature of the predicted pixel affinities (official 0.3).
        focal_alpha, focal_gamma: of the class loss (official 0.75, 0).
    """

    def __init__(
        self,
        num_classes: int,
        weights: Mapping[str, float] | None = None,
        no_object_weight: float = 1e-5,
        insdis_temperature: float = 1.5,
        insdis_sample_k: int = 4096,
        aux_semantic_temperature: float = 2.0,
        aux_semantic_sample_k: int = 4096,
        deep_supervision: bool = True,
        share_final_matching: bool = True,
        masking_void_pixel: bool = True,
        insdis_similarity_temperature: float = 0.3,
        focal_alpha: float = 0.75,
        focal_gamma: float = 0.0,
    ) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"KMaXCriterion: unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        if insdis_sample_k < 1 or aux_semantic_sample_k < 0:
            raise ValueError("KMaXCriterion: insdis_sample_k must be >= 1 and aux_semantic_sample_k >= 0")
        self.num_classes = int(num_classes)
        self.weights = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in (weights or {}).items()}}
        self.no_object_weight = no_object_weight
        self.insdis_temperature = insdis_temperature
        self.insdis_sample_k = int(insdis_sample_k)
        self.aux_semantic_temperature = aux_semantic_temperature
        self.aux_semantic_sample_k = int(aux_semantic_sample_k)
        self.deep_supervision = deep_supervision
        self.share_final_matching = share_final_matching
        self.masking_void_pixel = masking_void_pixel
        self.insdis_similarity_temperature = insdis_similarity_temperature
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, weights={self.weights}, no_object_weight={self.no_object_weight}, "
            f"deep_supervision={self.deep_supervision}, share_final_matching={self.share_final_matching}"
        )

    def forward(
        self,
        outputs: Mapping[str, Any],
        targets: Sequence[Mapping[str, Tensor]],
        semantic: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Weighted losses of a batch.

        Args:
            outputs: the model's dict: ``pred_logits`` (B, Q, K + 1), ``pred_masks`` (B, Q, h, w), ``pixel_feature``
                (B, C, h, w), optionally ``aux_outputs`` (list of dicts with the same keys) and
                ``aux_semantic_pred`` (B, K + 1, h', w').
            targets: per image ``labels`` (M,) and ``masks`` (M, h, w) (optionally ``semantic`` (h, w)).
            semantic: (B, h, w) semantic target with K for void; defaults to the targets' ``semantic``. Needed
                when ``outputs`` has ``aux_semantic_pred``.
            generator: source of the Gumbel noise of the pixel sampling.

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice``, ``loss_pixel_insdis``, ``loss_aux_semantic`` and their
            ``_i`` deep-supervision copies, weighted (their sum is the training loss).
        """
        mask_logits = outputs["pred_masks"]
        batch, _, height, width = mask_logits.shape
        if len(targets) != batch:
            raise ValueError(f"KMaXCriterion: {len(targets)} targets for a batch of {batch}")
        size = (height, width)
        with torch.autocast(device_type=mask_logits.device.type, enabled=False):
            gt_masks, gt_labels, counts = _stack_targets(targets, size, mask_logits.device)
            processed = self._match_and_process(outputs, gt_masks, gt_labels, counts, size)
            losses = self._output_losses(outputs, processed, generator)
            if self.weights["aux_semantic"] != 0 and "aux_semantic_pred" in outputs:
                semantic = self._semantic_target(targets, semantic, batch, size).to(mask_logits.device)
                losses["loss_aux_semantic"] = self.weights["aux_semantic"] * aux_semantic_loss(
                    outputs["aux_semantic_pred"].float(),
                    semantic,
                    processed,
                    self.num_classes,
                    self.aux_semantic_temperature,
                    self.aux_semantic_sample_k,
                    generator,
                )
            if self.deep_supervision:
                for i, aux in enumerate(outputs.get("aux_outputs") or []):
                    if not self.share_final_matching:
                        processed = self._match_and_process(aux, gt_masks, gt_labels, counts, size)
                    aux_losses = self._output_losses(aux, processed, generator)
                    losses.update({f"{name}_{i}": value for name, value in aux_losses.items()})
        return losses

    def _match_and_process(
        self,
        outputs: Mapping[str, Tensor],
        gt_masks: Tensor,
        gt_labels: Tensor,
        counts: list[int],
        size: tuple[int, int],
    ) -> ProcessedTargets:
        mask_prob = _query_softmax(outputs["pred_masks"])  # B x Q x P
        matching = _match(
            outputs["pred_logits"].detach().float(), mask_prob, gt_masks, gt_labels, counts, self.masking_void_pixel
        )
        return process_targets(matching, gt_masks, gt_labels, mask_prob, self.num_classes, self.no_object_weight, size)

    def _output_losses(
        self, outputs: Mapping[str, Tensor], processed: ProcessedTargets, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """``loss_ce``, ``loss_mask``, ``loss_dice`` and ``loss_pixel_insdis`` of one prediction, weighted."""
        w = self.weights
        losses: dict[str, Tensor] = {}
        if w["ce"] != 0:
            losses["loss_ce"] = w["ce"] * focal_class_loss(
                outputs["pred_logits"].float(),
                processed.labels,
                processed.class_weight,
                self.focal_alpha,
                self.focal_gamma,
            )
        if w["mask"] != 0 or w["dice"] != 0:
            loss_mask, loss_dice = mask_losses(
                outputs["pred_masks"].float().flatten(2), processed, self.masking_void_pixel
            )
            if w["mask"] != 0:
                losses["loss_mask"] = w["mask"] * loss_mask
            if w["dice"] != 0:
                losses["loss_dice"] = w["dice"] * loss_dice
        if w["insdis"] != 0:
            losses["loss_pixel_insdis"] = w["insdis"] * pixel_insdis_loss(
                outputs["pixel_feature"].float().flatten(2),
                processed,
                self.insdis_temperature,
                self.insdis_sample_k,
                self.insdis_similarity_temperature,
                generator,
            )
        return losses

    def _semantic_target(
        self, targets: Sequence[Mapping[str, Tensor]], semantic: Tensor | None, batch: int, size: tuple[int, int]
    ) -> Tensor:
        if semantic is None:
            if not all("semantic" in t for t in targets):
                raise ValueError("KMaXCriterion: outputs have aux_semantic_pred but no semantic target was given")
            semantic = torch.stack([t["semantic"] for t in targets])
        if tuple(semantic.shape) != (batch, *size):
            raise ValueError(f"KMaXCriterion: semantic of shape {tuple(semantic.shape)}, expected {(batch, *size)}")
        return semantic.long()

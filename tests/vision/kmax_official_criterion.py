"""Test oracle: the official kMaX-DeepLab matcher, ``SetCriterion`` and ``panoptic_inference``
(``bytedance/kmax-deeplab``: ``modeling/matcher.py``, ``modeling/criterion.py``, ``kmax_model.py``), re-written step
by step from the official arithmetic in plain torch (no detectron2), for the tests of
:mod:`formers.vision.segmentation.criterion` and :mod:`formers.vision.segmentation.postprocess` only.

It keeps the official structure on purpose (a Python loop over images in the matcher, ``process_gt`` on the
concatenated matches, one-hot focal cross-entropy, the ``einsum`` contractions, the normalised-sum void test, the
``(w - 1) // (w' - 1)`` stride, the ``weight_dict`` multiplication of ``kMaXDeepLab.forward``). The only additions:
``generator`` for the Gumbel noise (the official code uses the global RNG: same draws, same order) and
``thing_classes`` instead of detectron2's metadata. Like the official code it needs at least ``sample_k`` pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

MASKING_CONSTANT = -99999.0


def divide_no_nan(x, y):
    return torch.nan_to_num(x / y, nan=0.0, posinf=0.0, neginf=0.0)


# --------------------------------------------------------------------------------------------- matcher.py


@torch.no_grad()
def mask_similarity(mask_logits, gt_masks, masking_void_pixel=True):
    # mask_logits: N x HW (one image), gt_masks: M x HW
    probs = F.softmax(mask_logits, dim=0)
    probs = probs.flatten(1)
    non_void = (gt_masks.sum(0, keepdim=True) > 0).to(probs)  # 1 x HW
    if masking_void_pixel:
        probs = probs * non_void
    intersection = torch.einsum("nc,mc->nm", probs, gt_masks)
    denominator = (probs.sum(-1)[:, None] + gt_masks.sum(-1)[None, :]) / 2.0
    return intersection / (denominator + 1e-5)


@torch.no_grad()
def class_similarity(class_logits, labels):
    probs = class_logits.softmax(-1)[..., :-1]
    return probs[:, labels]


@torch.no_grad()
def matcher(outputs, targets, masking_void_pixel=True):
    num_queries = outputs["pred_logits"].shape[1]
    indices, matched_dice, matched_cls_prob = [], [], []
    for b in range(outputs["pred_logits"].shape[0]):
        cls_sim = class_similarity(outputs["pred_logits"][b].float(), targets[b]["labels"])
        out_mask = outputs["pred_masks"][b].flatten(1)
        tgt_mask = targets[b]["masks"].to(out_mask).flatten(1)
        msk_sim = mask_similarity(out_mask.float(), tgt_mask.float(), masking_void_pixel)
        cost = -msk_sim * cls_sim
        cost = cost.reshape(num_queries, -1).cpu()
        rows, cols = linear_sum_assignment(cost)
        matched_dice.append(msk_sim[rows, cols].detach())
        matched_cls_prob.append(cls_sim[rows, cols].detach())
        indices.append((rows, cols))
    indices = [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]
    return indices, matched_dice, matched_cls_prob


# --------------------------------------------------------------------------------------------- criterion.py


def focal_cross_entropy(pred, gt, weight, alpha=0.75, gamma=0.0, background_channel_index=-1):
    pred = pred.transpose(1, 2)  # B x C x N
    gt = F.one_hot(gt, num_classes=pred.shape[1]).transpose(1, 2).to(pred)  # B x C x N
    loss = F.cross_entropy(pred, gt, reduction="none")  # B x N
    if gamma == 0.0:
        focal = loss
    else:
        p = F.softmax(pred, dim=1)
        pt = (p * gt).sum(1)
        focal = torch.pow(1.0 - pt, gamma) * loss
    if alpha >= 0:
        alpha_weights = alpha * (1.0 - gt[:, background_channel_index]) + (1 - alpha) * gt[:, background_channel_index]
        focal = alpha_weights * focal
    focal = (focal * weight).flatten(1)
    num_non_zero = torch.clamp((focal != 0.0).to(focal).sum(-1), min=1.0)
    return divide_no_nan(focal.sum(-1), num_non_zero).mean()


def gumbel_topk(logits, k, generator=None):
    uniform = torch.rand(size=logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    noise = -torch.log(-torch.log(uniform))
    _, indices = torch.topk(logits + noise, k)
    return indices


def insdis_loss(
    pixel_feature,
    gt_mask,
    sample_temperature,
    sample_k,
    similarity_temperature,
    void_mask,
    inverse_area,
    generator=None,
):
    pixel_feature = pixel_feature.flatten(2)  # B x C x HW
    gt_mask = gt_mask.flatten(2)  # B x N x HW
    void_mask = void_mask.flatten(1)
    inverse_area = inverse_area.flatten(1)
    sample_logits = torch.log(inverse_area) * sample_temperature
    sample_logits += void_mask.to(sample_logits) * MASKING_CONSTANT
    idx = gumbel_topk(sample_logits, sample_k, generator)  # B x K
    gt_sampled = torch.gather(gt_mask, dim=2, index=idx.unsqueeze(1).repeat(1, gt_mask.shape[1], 1))
    gt_sim = torch.einsum("bnk,bnj->bkj", gt_sampled, gt_sampled)
    gt_sim /= torch.clamp(gt_sim.sum(dim=1, keepdim=True), min=1.0)
    pred_sampled = torch.gather(pixel_feature, dim=2, index=idx.unsqueeze(1).repeat(1, pixel_feature.shape[1], 1))
    pred_sim = torch.einsum("bck,bcj->bkj", pred_sampled, pred_sampled)
    pred_sim /= similarity_temperature
    loss = F.cross_entropy(pred_sim, gt_sim, reduction="none")
    num_non_zero = torch.clamp((loss != 0.0).to(loss).sum(-1), min=1.0)
    return divide_no_nan(loss.sum(-1), num_non_zero).mean()


def semantic_loss(pred, gt, sample_temperature, sample_k, void_mask, inverse_area, num_classes, generator=None):
    if pred.shape[-2:] != gt.shape[-2:]:
        assert (gt.shape[-1] - 1) // (pred.shape[-1] - 1) == (gt.shape[-2] - 1) // (pred.shape[-2] - 1)
        stride = (gt.shape[-1] - 1) // (pred.shape[-1] - 1)
        gt = gt[:, ::stride, ::stride]
        void_mask = void_mask[:, ::stride, ::stride]
        inverse_area = inverse_area[:, ::stride, ::stride]
    pred = pred.flatten(2)
    gt = gt.flatten(1)
    void_mask = void_mask.flatten(1)
    inverse_area = inverse_area.flatten(1)
    if sample_k == 0:
        gt_s, pred_s = gt, pred
    else:
        sample_logits = torch.log(inverse_area) * sample_temperature
        sample_logits += void_mask.to(sample_logits) * MASKING_CONSTANT
        idx = gumbel_topk(sample_logits, sample_k, generator)
        gt_s = torch.gather(gt, dim=1, index=idx)
        pred_s = torch.gather(pred, dim=2, index=idx.unsqueeze(1).repeat(1, pred.shape[1], 1))
    keep = gt_s != num_classes
    loss = F.cross_entropy(pred_s, gt_s, ignore_index=num_classes, reduction="none")
    loss = loss * keep.to(loss)
    num_non_zero = torch.clamp((loss != 0.0).to(loss).sum(-1), min=1.0)
    return divide_no_nan(loss.sum(-1), num_non_zero).mean()


def dice_loss(inputs, targets, void_mask, matched_cls_prob, masking_void_pixel=True):
    inputs = inputs.softmax(1)  # B N HW
    if masking_void_pixel:
        inputs = inputs.masked_fill(void_mask.unsqueeze(1), 0)
    intersection = 2 * (inputs * targets).sum(-1) + 1.0
    denominator = inputs.sum(-1) + targets.sum(-1) + 1.0
    loss = 1.0 - divide_no_nan(intersection, denominator)
    loss *= matched_cls_prob
    return (loss.sum(1) * 0.75 / inputs.shape[1]).mean()


def softmax_ce_loss(inputs, targets, void_mask):
    loss = F.cross_entropy(inputs, targets, reduction="none")  # B x HW
    loss = loss.masked_fill(void_mask, 0)
    num_non_zero = torch.clamp((loss != 0.0).to(loss).sum(-1), min=1.0)
    return divide_no_nan(loss.sum(-1), num_non_zero).mean()


class SetCriterion:
    """The official criterion with its ``weight_dict`` (as ``kMaXDeepLab.forward`` applies it)."""

    def __init__(
        self,
        num_classes,
        eos_coef=1e-5,
        share_final_matching=True,
        class_weight=3.0,
        dice_weight=3.0,
        mask_weight=0.3,
        insdis_weight=1.0,
        aux_semantic_weight=1.0,
        dec_layers=6,
        insdis_temperature=1.5,
        insdis_sample_k=4096,
        aux_semantic_temperature=2.0,
        aux_semantic_sample_k=4096,
        masking_void_pixel=True,
    ):
        self.num_classes = num_classes
        self.eos_coef = eos_coef
        self.share_final_matching = share_final_matching
        self.insdis_temperature = insdis_temperature
        self.insdis_sample_k = insdis_sample_k
        self.aux_semantic_temperature = aux_semantic_temperature
        self.aux_semantic_sample_k = aux_semantic_sample_k
        self.masking_void_pixel = masking_void_pixel
        base = {
            "loss_ce": class_weight,
            "loss_mask": mask_weight,
            "loss_dice": dice_weight,
            "loss_pixel_insdis": insdis_weight,
            "loss_aux_semantic": aux_semantic_weight,
        }
        self.weight_dict = dict(base)
        for i in range(dec_layers):
            self.weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
        self.losses = ["labels", "masks"]
        if insdis_weight > 0:
            self.losses.append("pixels")
        if aux_semantic_weight > 0:
            self.losses.append("aux_semantic")

    def loss_labels(self, outputs, t):
        return {"loss_ce": focal_cross_entropy(outputs["pred_logits"], t["labels"], t["pq_loss_class_weight"])}

    def loss_masks(self, outputs, t):
        src = outputs["pred_masks"].flatten(2)
        tgt = t["masks"].flatten(2)
        void = t["pixel_gt_void_mask"].flatten(1)
        return {
            "loss_mask": softmax_ce_loss(src, tgt, void),
            "loss_dice": dice_loss(src, tgt, void, t["pq_loss_mask_weight"], self.masking_void_pixel),
        }

    def loss_pixels(self, outputs, t, generator):
        return {
            "loss_pixel_insdis": insdis_loss(
                outputs["pixel_feature"],
                t["masks"],
                self.insdis_temperature,
                self.insdis_sample_k,
                0.3,
                t["pixel_gt_void_mask"],
                t["inverse_gt_mask_area"],
                generator,
            )
        }

    def loss_semantic(self, outputs, t, generator):
        return {
            "loss_aux_semantic": semantic_loss(
                outputs["aux_semantic_pred"],
                t["ground_truth_semantic"],
                self.aux_semantic_temperature,
                self.aux_semantic_sample_k,
                t["pixel_gt_void_mask"],
                t["inverse_gt_mask_area"],
                self.num_classes,
                generator,
            )
        }

    def get_loss(self, loss, outputs, t, generator):
        if loss == "labels":
            return self.loss_labels(outputs, t)
        if loss == "masks":
            return self.loss_masks(outputs, t)
        if loss == "pixels":
            return self.loss_pixels(outputs, t, generator)
        return self.loss_semantic(outputs, t, generator)

    @torch.no_grad()
    def process_gt(self, outputs, targets, indices, matched_dice, matched_cls_prob, process_semantic=False):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = (batch_idx, torch.cat([src for (src, _) in indices]))
        src_masks = outputs["pred_masks"].detach()  # B x N x H x W

        target_masks = torch.zeros_like(src_masks)
        target_masks_o = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices, strict=True)]).to(target_masks)
        target_masks[src_idx] = target_masks_o
        target_masks = target_masks / torch.clamp(target_masks.sum(1, keepdim=True), min=1.0)

        matched_cls_prob_o = torch.clamp(torch.cat(list(matched_cls_prob)), min=self.eos_coef)
        mask_weight = torch.full(src_masks.shape[:2], 0, dtype=src_masks.dtype, device=src_masks.device)
        mask_weight[src_idx] = matched_cls_prob_o.to(mask_weight)

        void_mask = target_masks.sum(1) < 1  # B x H x W
        mask_area = target_masks.sum(2).sum(2)  # B x N
        pixel_area = torch.einsum("bnhw,bn->bhw", target_masks, mask_area)
        inverse_area = (pixel_area.shape[1] * pixel_area.shape[2]) / torch.clamp(pixel_area, min=1.0)

        src_logits = outputs["pred_logits"]
        target_classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)])
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device)
        target_classes[src_idx] = target_classes_o

        probs = src_masks.softmax(1).flatten(2)  # B x N x L
        void = void_mask.to(probs).flatten(1)  # B x L
        iou = torch.einsum("bnl,bl->bn", probs, void) / (probs.sum(-1) + 1e-5)
        matched_dice_o = torch.cat(list(matched_dice))
        class_weight = iou
        class_weight[src_idx] = matched_dice_o.to(class_weight)
        class_weight = torch.clamp(class_weight, min=self.eos_coef)

        processed = {
            "masks": target_masks,
            "labels": target_classes,
            "pq_loss_mask_weight": mask_weight,
            "pq_loss_class_weight": class_weight,
            "pixel_gt_void_mask": void_mask,
            "inverse_gt_mask_area": inverse_area,
        }
        if process_semantic and "semantic_masks" in targets[0]:
            semantic = torch.stack([t["semantic_masks"] for t in targets], dim=0).clone()
            semantic[semantic == -1] = self.num_classes
            processed["ground_truth_semantic"] = semantic
        return processed

    def __call__(self, outputs, targets, generator=None):
        """Weighted losses (the official ``criterion`` call followed by the ``weight_dict`` multiplication)."""
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices, matched_dice, matched_cls_prob = matcher(final, targets, self.masking_void_pixel)
        processed = self.process_gt(outputs, targets, indices, matched_dice, matched_cls_prob, process_semantic=True)
        losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs, processed, generator))
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            if not self.share_final_matching:
                indices, matched_dice, matched_cls_prob = matcher(aux, targets, self.masking_void_pixel)
                processed = self.process_gt(aux, targets, indices, matched_dice, matched_cls_prob)
            for loss in self.losses:
                if loss == "aux_semantic":
                    continue
                losses.update({f"{k}_{i}": v for k, v in self.get_loss(loss, aux, processed, generator).items()})
        for k in list(losses):
            if k in self.weight_dict:
                losses[k] = losses[k] * self.weight_dict[k]
            else:
                losses.pop(k)
        return losses, indices


# --------------------------------------------------------------------------------------------- kmax_model.py


def eval_upsample(mask_pred_results, padded_hw, height, width):
    """The evaluation branch of ``kMaXDeepLab.forward`` for one image whose original size is (height, width)."""
    align_corners = padded_hw[1] % 2 == 1
    mask_pred_results = F.interpolate(mask_pred_results, size=padded_hw, mode="bilinear", align_corners=align_corners)
    scale_factor = max(padded_hw) / max(height, width)
    ori_height, ori_width = round(height * scale_factor), round(width * scale_factor)
    out = mask_pred_results[0][:, :ori_height, :ori_width].expand(1, -1, -1, -1)
    out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=align_corners)[0]
    return out, (ori_height, ori_width)


def panoptic_inference(
    mask_cls,
    mask_pred,
    thing_classes,
    pixel_confidence_threshold=0.4,
    class_threshold_thing=0.7,
    class_threshold_stuff=0.5,
    overlap_threshold=0.8,
    reorder_class_weight=1.0,
    reorder_mask_weight=1.0,
):
    num_mask_slots = mask_pred.shape[0]
    cls_scores, cls_labels = F.softmax(mask_cls, dim=-1)[..., :-1].max(-1)
    mask_scores = F.softmax(mask_pred, dim=0)
    binary_masks = mask_scores > pixel_confidence_threshold
    mask_scores_flat = mask_scores.flatten(1)
    binary_masks_flat = binary_masks.flatten(1).float()
    pixel_number_flat = binary_masks_flat.sum(1)
    mask_scores_flat = (mask_scores_flat * binary_masks_flat).sum(1) / torch.clamp(pixel_number_flat, min=1.0)
    reorder_score = (cls_scores**reorder_class_weight) * (mask_scores_flat**reorder_mask_weight)
    reorder_indices = torch.argsort(reorder_score, dim=-1, descending=True)

    panoptic_seg = torch.zeros(mask_pred.shape[1:], dtype=torch.int32, device=mask_pred.device)
    segments_info = []
    current_segment_id = 0
    stuff_memory = {}
    for i in range(num_mask_slots):
        cur_idx = reorder_indices[i].item()
        cur_binary_mask = binary_masks[cur_idx]
        cur_cls_score = cls_scores[cur_idx].item()
        cur_cls_label = cls_labels[cur_idx].item()
        is_thing = cur_cls_label in thing_classes
        is_confident = (is_thing and cur_cls_score > class_threshold_thing) or (
            (not is_thing) and cur_cls_score > class_threshold_stuff
        )
        original_pixel_number = cur_binary_mask.float().sum()
        new_binary_mask = torch.logical_and(cur_binary_mask, panoptic_seg == 0)
        new_pixel_number = new_binary_mask.float().sum()
        is_not_overlap_too_much = new_pixel_number > (original_pixel_number * overlap_threshold)
        if is_confident and is_not_overlap_too_much:
            if not is_thing:
                if int(cur_cls_label) in stuff_memory:
                    panoptic_seg[new_binary_mask] = stuff_memory[int(cur_cls_label)]
                    continue
                stuff_memory[int(cur_cls_label)] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[new_binary_mask] = current_segment_id
            segments_info.append(
                {"id": current_segment_id, "isthing": bool(is_thing), "category_id": int(cur_cls_label)}
            )
    return panoptic_seg, segments_info

"""``PanopticSegmentationTask``: kMaX-DeepLab training and panoptic evaluation on the formers spine.

* batches are :class:`~formers.vision.segmentation.data.PanopticBatch` (padded images, a pixel mask, stride-4
  targets, full-resolution ground truth);
* the objective is :class:`~formers.vision.segmentation.criterion.KMaXCriterion` (Hungarian matching, the five
  kMaX losses with deep supervision); each term is logged as ``train/<term>`` (the six deep-supervision copies
  summed into their term), the total as ``train/loss``;
* validation / test post-process every image with the official thresholds
  (:func:`~formers.vision.segmentation.postprocess.panoptic_inference`, at the image's real resolution) and log
  ``{stage}/pq``, ``sq``, ``rq`` and their things / stuff versions (torchmetrics' ``PanopticQuality``);
* which classes are things comes from the data (``datamodule.meta.is_thing``) and is kept in the checkpoint (a
  buffer), so ``formers-vision predict`` post-processes exactly as validation did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from formers.core.tasks import Task
from formers.vision.segmentation.criterion import KMaXCriterion
from formers.vision.segmentation.data import PanopticBatch
from formers.vision.segmentation.metrics import PanopticQualityMetric
from formers.vision.segmentation.postprocess import panoptic_inference, to_category_instance, upsample_masks

__all__ = ["PanopticSegmentationTask"]

_LOSS_TERMS = ("loss_ce", "loss_mask", "loss_dice", "loss_pixel_insdis", "loss_aux_semantic")


class PanopticSegmentationTask(Task):
    """Panoptic segmentation with a kMaX-DeepLab model (``kmax_r50``, ``kmax_convnext_tiny``, ``kmax_r18_small``...).

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.Task`'s (``model``, ``model_kwargs``, ``data_sizes`` with
            ``num_classes`` linked from the data, ``attention_backend``, ``checkpoint_path``).
        loss_weights: the kMaX loss weights (official: ``ce`` 3, ``dice`` 3, ``mask`` 0.3, ``insdis`` 1,
            ``aux_semantic`` 1); missing keys keep the official value.
        no_object_weight: the clamp of the matched class probability that weights the dice loss (official 1e-5).
        insdis_sample_k, aux_semantic_sample_k: pixels sampled for the instance-discrimination and auxiliary
            semantic losses (official 4096 each; at most the pixels of a stride-4 map).
        pixel_threshold, thing_threshold, stuff_threshold, overlap_threshold: the official post-processing
            thresholds (0.4, 0.7, 0.5, 0.8).
    """

    def __init__(
        self,
        *args: Any,
        loss_weights: dict[str, float] | None = None,
        no_object_weight: float = 1e-5,
        insdis_sample_k: int = 4096,
        aux_semantic_sample_k: int = 4096,
        pixel_threshold: float = 0.4,
        thing_threshold: float = 0.7,
        stuff_threshold: float = 0.5,
        overlap_threshold: float = 0.8,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        num_classes = int(self.model.num_classes)
        weights = {"ce": 3.0, "dice": 3.0, "mask": 0.3, "insdis": 1.0, "aux_semantic": 1.0}
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(f"loss_weights: unknown terms {sorted(unknown)}; known: {sorted(weights)}")
        weights.update(loss_weights or {})
        self.criterion = KMaXCriterion(
            num_classes,
            weights=weights,
            no_object_weight=no_object_weight,
            insdis_sample_k=insdis_sample_k,
            aux_semantic_sample_k=aux_semantic_sample_k,
        )
        self.thresholds = {
            "pixel_threshold": pixel_threshold,
            "thing_threshold": thing_threshold,
            "stuff_threshold": stuff_threshold,
            "overlap_threshold": overlap_threshold,
        }
        # which contiguous classes are things: set from the data at setup, saved with the weights for predict
        self.register_buffer("is_thing", torch.zeros(num_classes, dtype=torch.bool))
        self.pq: dict[str, PanopticQualityMetric] = {}
        self._last_terms: dict[str, Tensor] = {}

    # ---------------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        meta = getattr(self.trainer.datamodule, "meta", None) if self._trainer is not None else None
        if meta is not None:
            is_thing = torch.as_tensor(list(meta.is_thing), dtype=torch.bool)
            if is_thing.numel() != self.is_thing.numel():
                raise ValueError(
                    f"the data has {is_thing.numel()} classes, the model {self.is_thing.numel()} (num_classes)"
                )
            self.is_thing.copy_(is_thing)

    def _metric(self, stage: str) -> PanopticQualityMetric:
        if stage not in self.pq:
            things = {i for i, t in enumerate(self.is_thing.tolist()) if t}
            stuffs = set(range(self.is_thing.numel())) - things
            self.pq[stage] = PanopticQualityMetric(things, stuffs).to(self.device)
        return self.pq[stage]

    # ---------------------------------------------------------------------------------------------- the steps
    def unpack(self, batch: Any) -> tuple[Any, Any]:
        if not isinstance(batch, PanopticBatch):
            raise TypeError(f"{type(self).__name__} expects PanopticBatch batches, got {type(batch).__name__}")
        return (batch.images, batch.pixel_mask), batch

    def forward(self, inputs: Any) -> Any:
        if isinstance(inputs, PanopticBatch):
            inputs = (inputs.images, inputs.pixel_mask)
        images, pixel_mask = inputs if isinstance(inputs, (tuple, list)) else (inputs, None)
        return self.model(images, pixel_mask=pixel_mask)

    def batch_size(self, batch: Any, inputs: Any, target: Any) -> int:
        return int(batch.images.shape[0])

    def loss(self, output: Mapping[str, Any], target: PanopticBatch) -> Tensor:
        semantic = torch.stack([t["semantic"] for t in target.targets]) if "aux_semantic_pred" in output else None
        terms = self.criterion(output, target.targets, semantic=semantic)
        totals: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        for name, value in terms.items():
            base = next((t for t in _LOSS_TERMS if name == t or name.startswith(t + "_")), name)
            totals[base] = totals[base] + value.detach()
        self._last_terms = dict(totals)
        return torch.stack(list(terms.values())).sum()

    def batch_metrics(self, output: Any, target: Any, loss: Tensor) -> dict[str, Tensor]:
        return {name.removeprefix("loss_"): value for name, value in self._last_terms.items()}

    @torch.no_grad()
    def panoptic(self, output: Mapping[str, Tensor], batch: PanopticBatch) -> list[tuple[Tensor, list[dict]]]:
        """The panoptic segmentation of every image of ``batch`` at its real resolution: ``(segment map, segments)``."""
        sizes = [tuple(size) for size in batch.sizes]
        masks = upsample_masks(output["pred_masks"], tuple(batch.images.shape[-2:]), sizes, sizes)  # one per image
        return [
            panoptic_inference(logits, image_masks, self.is_thing, **self.thresholds)
            for logits, image_masks in zip(output["pred_logits"], masks, strict=True)
        ]

    def update_metrics(self, metrics: Mapping[str, Any], output: Any, target: PanopticBatch) -> None:
        stage = "test" if self.trainer.testing else "val"
        metric = self._metric(stage)
        for i, (segment_map, segments) in enumerate(self.panoptic(output, target)):
            height, width = target.sizes[i]
            pred = to_category_instance(segment_map, segments)
            metric.update(pred[None], target.panoptic[i : i + 1, :height, :width])

    def _log_pq(self, stage: str) -> None:
        metric = self.pq.pop(stage, None)
        if metric is None:
            return
        values = metric.compute()
        self.log_dict({f"{stage}/{name}": value.float() for name, value in values.items()}, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_pq("val")

    def on_test_epoch_end(self) -> None:
        self._log_pq("test")

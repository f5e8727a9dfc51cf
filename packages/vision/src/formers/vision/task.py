"""``ImageClassificationTask``: the core ClassificationTask for vision models, with Mixup targets and top-k metrics.

On top of :class:`formers.core.tasks.ClassificationTask`:

* the model is built like :func:`formers.vision.create_model` builds it (``pretrained_cfg`` attached; with
  ``checkpoint_path`` its initial weights from an official / timm / formers checkpoint, a classifier of another size
  left fresh);
* soft targets ``(B, num_classes)`` (Mixup / CutMix / smoothing of
  :class:`~formers.vision.data.ImageFolderDataModule`) use the soft-target cross-entropy, hard targets ``(B,)`` the
  usual one (with ``label_smoothing``);
* ``{stage}/acc`` (top-1) and ``{stage}/acc_top5`` (top-``top_k``) are logged, exact over the val/test splits; with
  soft targets the accuracy is measured against the dominant class of the mixed label;
* ``test`` writes ``actual,predicted`` rows (class names when the DataModule has them) to ``confusion_csv``
  (default ``<trainer.log_dir>/confusion.csv``), the input of DVC's ``confusion`` plot template.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, Metric

from formers.core.tasks import ClassificationTask

__all__ = ["ImageClassificationTask", "WarmupCosineLR", "soft_target_cross_entropy", "write_confusion_csv"]


def soft_target_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``-sum(target * log_softmax(logits))`` (timm's SoftTargetCrossEntropy)."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class ImageClassificationTask(ClassificationTask):
    """Image classification with any formers vision model.

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.ClassificationTask`'s: ``model`` (a vision model name),
            ``model_kwargs`` (``drop_path_rate``, ``patch_size``, ...), ``data_sizes`` (``num_classes``, ``img_size``,
            ``in_chans``, linked by the CLI), ``attention_backend``, ``checkpoint_path`` (initial weights for
            fine-tuning: official, timm or formers format), ``label_smoothing`` (of hard targets; Mixup batches carry
            their own smoothing).
        top_k: the ``k`` of ``acc_top5`` (capped at the number of classes; the metric name stays ``acc_top5``).
        confusion_csv: where ``test`` writes the confusion rows; ``None``: ``<trainer.log_dir>/confusion.csv``.
    """

    def __init__(self, *args: Any, top_k: int = 5, confusion_csv: str | None = None, **kwargs: Any) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        super().__init__(*args, **kwargs)
        self.top_k = top_k
        self.confusion_csv = confusion_csv
        self._test_rows: list[tuple[Tensor, Tensor]] | None = None

    def _labels(self, output: Tensor, target: Tensor) -> Tensor:
        """Hard labels: the targets, or the dominant class of Mixup / CutMix / smoothing soft targets."""
        if target.ndim == 2:
            if target.shape != output.shape:
                raise ValueError(f"soft targets {tuple(target.shape)} do not match logits {tuple(output.shape)}")
            return target.argmax(dim=-1)
        return target

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if target.ndim == 2:  # soft targets from Mixup / CutMix / smoothing
            self._labels(output, target)
            return soft_target_cross_entropy(output, target.to(output.dtype))
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def _hits(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(labels, predicted class, top-1 hits, top-k hits)`` per sample."""
        labels = self._labels(output, target)
        top = output.detach().topk(min(self.top_k, output.shape[-1]), dim=-1).indices
        return labels, top[:, 0], (top[:, 0] == labels).float(), (top == labels[:, None]).any(dim=-1).float()

    def make_metrics(self) -> dict[str, Metric]:
        return {"acc": MeanMetric(), "acc_top5": MeanMetric()}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Tensor) -> None:
        labels, predicted, top1, topk = self._hits(output, target)
        metrics["acc"].update(top1)
        metrics["acc_top5"].update(topk)
        if self._test_rows is not None:
            self._test_rows.append((labels.detach(), predicted))

    def batch_metrics(self, output: Tensor, target: Tensor, loss: Tensor) -> dict[str, Tensor]:
        _, _, top1, topk = self._hits(output, target)
        return {"acc": top1.mean(), "acc_top5": topk.mean()}

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def on_test_epoch_end(self) -> None:
        rows, self._test_rows = self._test_rows or [], None
        if not rows:
            return
        actual = self.all_gather(torch.cat([a for a, _ in rows])).reshape(-1).tolist()
        predicted = self.all_gather(torch.cat([p for _, p in rows])).reshape(-1).tolist()
        if self.trainer.is_global_zero:
            names = list(getattr(self.trainer.datamodule, "classes", None) or [])
            path = Path(self.confusion_csv or Path(self.trainer.log_dir or ".") / "confusion.csv")
            write_confusion_csv(path, actual, predicted, names)


def write_confusion_csv(path: Path, actual: list[int], predicted: list[int], names: list[str]) -> None:
    """One ``actual,predicted`` row per sample (names when given): what DVC's ``confusion`` template counts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    label = (lambda i: names[i]) if names else str
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        writer.writerows((label(a), label(p)) for a, p in zip(actual, predicted, strict=True))


class WarmupCosineLR(LambdaLR):
    """Linear warmup then cosine decay, stepped once per epoch (the DeiT / Swin / CrossViT recipes' schedule).

    In YAML: ``lr_scheduler: {class_path: formers.vision.task.WarmupCosineLR, init_args: {warmup_epochs: 5,
    max_epochs: 300}}``. The factor goes from ``warmup_start`` to 1 over ``warmup_epochs``, then follows a half
    cosine down to ``min_factor`` at ``max_epochs``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int,
        max_epochs: int,
        warmup_start: float = 1e-3,
        min_factor: float = 1e-2,
        last_epoch: int = -1,
    ) -> None:
        if not 0 <= warmup_epochs < max_epochs:
            raise ValueError(f"need 0 <= warmup_epochs < max_epochs, got {warmup_epochs} and {max_epochs}")
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_start, self.min_factor = warmup_start, min_factor
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_start + (1 - self.warmup_start) * epoch / self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

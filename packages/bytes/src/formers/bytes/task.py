"""The bytes tasks: what differs from the core spine for byte-level language modelling and conversion (bGPT).

Classification from raw bytes (ByteFormer on WAV / TIFF / PNG files) needs nothing new: it is
:class:`formers.core.tasks.ClassificationTask` on ``({"tokens", "lengths"}, label)`` batches.

:class:`ByteLMTask` trains bGPT on :mod:`formers.bytes.patches` sequences. Batches are
``({"patches", "num_patches"}, {"target_mask", "real_mask"})``; the model returns logits ``(B, P, 16, 257)`` where
``logits[b, p]`` predicts patch ``p`` from patches ``< p``. The loss counts, per ``loss_on``:

- ``"target"`` (default): the bytes of the modelled file plus its terminator (``target_mask``) — in conversion the
  target file only, in CPU simulation the states only;
- ``"all"``: what the official bGPT loss counts — every byte of every predicted patch ``1 .. num_patches - 1``: the
  256-pads, the end patch and, in conversion, the input file too.

Metrics, exact over a split (each byte weighs the same, whatever its batch):

- ``bpb``: bits per byte on the real bytes of the modelled file (``real_mask``; pads and terminator excluded);
- ``bpb_all``: bits per byte over every predicted byte (the official loss's bytes), for comparison;
- ``byte_acc``: argmax accuracy on the real bytes (teacher forcing);
- ``patch_acc``: the fraction of patches holding real bytes whose real bytes are all right (teacher forcing) — for
  CPU simulation, the fraction of machine states predicted byte-exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, Metric

from formers.core.tasks import Task

__all__ = ["ByteLMTask", "predicted_patch_mask", "masked_cross_entropy"]

LN2 = math.log(2.0)


def predicted_patch_mask(num_patches: Tensor, num_positions: int, patch_size: int) -> Tensor:
    """Bool ``(B, P, patch_size)``: every byte of the predicted patches ``1 <= p < num_patches[b]``."""
    positions = torch.arange(num_positions, device=num_patches.device)
    rows = (positions >= 1) & (positions < num_patches[:, None])
    return rows[:, :, None].expand(-1, -1, patch_size)


def masked_cross_entropy(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per-byte cross-entropy (nats, fp32) of the bytes under ``mask``: a 1-D tensor, one value per counted byte."""
    return F.cross_entropy(logits[mask].float(), labels[mask], reduction="none")


class ByteLMTask(Task):
    """bGPT next-patch modelling (language modelling, conversion, CPU simulation); see the module docstring.

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.Task`'s (``model``, ``model_kwargs``, ...).
        loss_on: ``"target"`` (the modelled file and its terminator) or ``"all"`` (the official loss's bytes).
    """

    loss_metric = "nll"  # val/test loss: the exact mean CE over the split, on the bytes the training loss counts

    def __init__(self, *args: Any, loss_on: Literal["target", "all"] = "target", **kwargs: Any) -> None:
        if loss_on not in ("target", "all"):
            raise ValueError(f"loss_on must be 'target' or 'all', got {loss_on!r}")
        super().__init__(*args, **kwargs)
        self.loss_on = loss_on

    def unpack(self, batch: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The inputs, and the targets with the patches (the labels) and the mask of predicted patches."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], Mapping)):
            raise TypeError(
                f"{type(self).__name__} expects ({{'patches', 'num_patches'}}, {{'target_mask', 'real_mask'}}) "
                f"batches (formers.bytes.data), got {type(batch).__name__}"
            )
        inputs, masks = batch
        patches, num_patches = inputs["patches"], inputs["num_patches"]  # decode_mask, if any, stays an input
        predicted = predicted_patch_mask(num_patches, patches.shape[1], patches.shape[2])
        target = {**masks, "labels": patches, "all_mask": predicted}
        return inputs, target

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The spine's step, with the byte decoder limited to the patches the loss counts (``loss_on="target"``):
        the same loss and gradients at a fraction of the cost where the target is a small part of each sequence
        (CPU traces after a 1 KB program, MIDI after its ABC). Evaluation decodes every patch (``bpb_all``)."""
        if self.loss_on == "target":
            inputs, masks = batch
            batch = ({**inputs, "decode_mask": masks["target_mask"].any(dim=-1)}, masks)
        return super().training_step(batch, batch_idx)

    def _loss_mask(self, target: Mapping[str, Tensor]) -> Tensor:
        return target["all_mask"] if self.loss_on == "all" else target["target_mask"] & target["all_mask"]

    def loss(self, output: Tensor, target: Mapping[str, Tensor]) -> Tensor:
        mask = self._loss_mask(target)
        if not mask.any():
            raise ValueError(f"{type(self).__name__}: a batch without any byte to predict (empty loss mask)")
        return masked_cross_entropy(output, target["labels"], mask).mean()

    def batch_size(self, batch: Any, inputs: Any, target: Any) -> int:
        return int(inputs["patches"].shape[0])

    def make_metrics(self) -> dict[str, Metric]:
        return {name: MeanMetric() for name in ("nll", "bpb", "bpb_all", "byte_acc", "patch_acc")}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Mapping[str, Tensor]) -> None:
        output, labels = output.detach(), target["labels"]
        real = target["real_mask"] & target["all_mask"]
        metrics["nll"].update(masked_cross_entropy(output, labels, self._loss_mask(target)))
        if real.any():
            metrics["bpb"].update(masked_cross_entropy(output, labels, real) / LN2)
            right = output.argmax(dim=-1) == labels
            metrics["byte_acc"].update(right[real].float())
            holds_real = real.any(dim=-1)
            patch_right = (right | ~real).all(dim=-1)
            metrics["patch_acc"].update(patch_right[holds_real].float())
        metrics["bpb_all"].update(masked_cross_entropy(output, labels, target["all_mask"]) / LN2)

    def batch_metrics(self, output: Tensor, target: Mapping[str, Tensor], loss: Tensor) -> dict[str, Tensor]:
        if self.loss_on == "all":
            return {"bpb_all": loss / LN2}
        return {}

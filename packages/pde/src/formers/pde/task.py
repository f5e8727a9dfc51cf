"""The operator-learning task: relative L2 (+ H1) on grids, point clouds and autoregressive rollouts.

One task serves every formers-pde model; what differs is read from the batch:

- **grid** batches ``(x, u)``: ``x`` ``(B, *spatial, C_in)``, ``u`` ``(B, *spatial, C_out)``;
- **rollout** batches (validation / test of :class:`formers.pde.data.TrajectoryDataModule`): ``u`` has more frames
  than the model predicts per call, so the model is applied autoregressively, its predictions fed back as the newest
  input frames, until ``u``'s frames are predicted; the metric is the relative L2 over the whole rollout;
- **point-cloud** batches ``(inputs, {"values", "padding"})``: the norms run over the real points only; packed
  (padding-free) batches ``(inputs, {"values", "lengths"})``: the norms run over each sample's rows.

Loss (Cao 2021, the Galerkin Transformer's ``WeightedL2Loss`` without its regulariser): per sample
``‖ŷ − u‖ / ‖u‖ + γ ‖∇ŷ − ∇u‖ / ‖∇u‖`` (the second term the relative H1 seminorm, central differences on the
grid, ``γ = h1_weight``; 0 for point clouds), averaged over the batch. Metrics, exact over a split: ``rel_l2``
(mean over samples of the relative L2 error, the number every paper of the family reports) and, on grids,
``rel_h1``. A data module with several test resolutions (``test_names()``) gets one ``test/rel_l2@<n>`` per
resolution; the first is also ``test/rel_l2``.

Relative errors are scale-invariant, and the data modules scale targets without a shift, so these numbers are the
physical-units ones (:mod:`formers.pde.data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from formers.core.tasks import Task

__all__ = ["OperatorTask", "relative_l2", "relative_l2_packed", "relative_h1"]

_EPS = 1e-12


def relative_l2(pred: Tensor, target: Tensor, padding: Tensor | None = None) -> Tensor:
    """Per-sample ``‖pred − target‖₂ / ‖target‖₂`` over every point and channel; ``padding`` ``(B, N)`` (``True`` =
    not a point) is left out of both norms. Returns ``(B,)``."""
    diff, ref = (pred - target).float(), target.float()
    if padding is not None:
        keep = (~padding).unsqueeze(-1).to(diff.dtype)
        diff, ref = diff * keep, ref * keep
    num = diff.flatten(1).square().sum(1)
    den = ref.flatten(1).square().sum(1)
    return (num / den.clamp_min(_EPS)).sqrt()


def relative_l2_packed(pred: Tensor, target: Tensor, lengths: Tensor) -> Tensor:
    """Per-sample relative L2 on packed rows (:func:`formers.pde.pointcloud.pack_point_clouds`): ``pred`` and
    ``target`` ``(ΣN, C)`` hold the rows of every sample one after the other, ``lengths`` ``(B,)`` the rows of each.
    Returns ``(B,)``, equal to :func:`relative_l2` on the padded batch."""
    if pred.shape != target.shape or pred.dim() < 1:
        raise ValueError(f"relative_l2_packed: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"relative_l2_packed: lengths must be a (batch,) integer tensor, got {lengths.dtype} "
                        f"of shape {tuple(lengths.shape)}")  # fmt: skip
    rows = pred.shape[0]
    if int(lengths.sum()) != rows or bool((lengths < 0).any()):
        raise ValueError(f"relative_l2_packed: lengths {lengths.tolist()} must be >= 0 and sum to the {rows} rows")
    ids = torch.repeat_interleave(torch.arange(lengths.numel(), device=pred.device), lengths.to(pred.device),
                                  output_size=rows)  # fmt: skip
    diff, ref = (pred - target).float().reshape(rows, -1), target.float().reshape(rows, -1)
    num = diff.new_zeros(lengths.numel()).index_add(0, ids, diff.square().sum(1))
    den = ref.new_zeros(lengths.numel()).index_add(0, ids, ref.square().sum(1))
    return (num / den.clamp_min(_EPS)).sqrt()


def _gradients(field: Tensor, spatial_dims: int) -> Tensor:
    """Central-difference gradients of a channels-last ``(B, *spatial, C)`` field on the unit grid, stacked last."""
    spacing = [1.0 / max(n - 1, 1) for n in field.shape[1 : 1 + spatial_dims]]
    grads = torch.gradient(field.float(), spacing=spacing, dim=list(range(1, 1 + spatial_dims)))
    return torch.stack(grads, dim=-1)


def relative_h1(pred: Tensor, target: Tensor, spatial_dims: int) -> Tensor:
    """Per-sample relative H1 seminorm error ``‖∇pred − ∇target‖ / ‖∇target‖`` on a grid. Returns ``(B,)``."""
    return relative_l2(_gradients(pred, spatial_dims), _gradients(target, spatial_dims))


class OperatorTask(Task):
    """Relative-L2 operator learning for every formers-pde data layout (see the module docstring).

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.Task`'s.
        h1_weight: weight γ of the relative H1 seminorm term of the loss on grids (Galerkin Burgers 0.1, Darcy 0.5).
    """

    loss_metric = "rel_l2"

    def __init__(self, *args: Any, h1_weight: float = 0.0, **kwargs: Any) -> None:
        if h1_weight < 0:
            raise ValueError(f"h1_weight must be >= 0, got {h1_weight}")
        super().__init__(*args, **kwargs)
        self.h1_weight = h1_weight
        self.resolution_metrics = nn.ModuleDict()
        self._test_names: list[str] = []

    # ------------------------------------------------------------------------------------------ batches
    def unpack(self, batch: Any) -> tuple[Any, Any]:
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        raise TypeError(f"{type(self).__name__} expects (inputs, target) batches, got {type(batch).__name__}")

    def batch_size(self, batch: Any, inputs: Any, target: Any) -> int:
        if isinstance(target, Mapping) and "lengths" in target:  # packed point clouds: rows of every sample
            return int(target["lengths"].shape[0])
        values = target["values"] if isinstance(target, Mapping) else target
        return int(values.shape[0])

    @property
    def spatial_dims(self) -> int:
        return int(getattr(self.model, "spatial_dims", 0))

    def predict_fields(self, inputs: Any, frames: int | None = None) -> Tensor:
        """The model's prediction; for a rollout (``frames`` more than the model's ``out_channels``) the
        autoregressive one: each call's output becomes the newest input frames."""
        if isinstance(inputs, Mapping):
            return self.model(**inputs)
        step = int(getattr(self.model, "out_channels", 0) or 0)
        if frames is None or step == 0 or frames <= step:
            return self.model(inputs)
        window, outputs = inputs, []
        for _ in range(-(-frames // step)):
            out = self.model(window)
            outputs.append(out)
            window = torch.cat([window, out], dim=-1)[..., -inputs.shape[-1] :]
        return torch.cat(outputs, dim=-1)[..., :frames]

    def forward(self, inputs: Any) -> Any:
        return self.predict_fields(inputs)

    # ------------------------------------------------------------------------------------------ loss and metrics
    def _errors(self, output: Tensor, target: Any) -> tuple[Tensor, Tensor | None]:
        """Per-sample relative L2 and (grids) relative H1 errors."""
        if isinstance(target, Mapping) and "lengths" in target:  # packed point clouds
            values = target["values"]
            if output.shape != values.shape:
                raise ValueError(f"{type(self).__name__}: output {tuple(output.shape)} vs target {tuple(values.shape)}")
            return relative_l2_packed(output, values, target["lengths"]), None
        if isinstance(target, Mapping):
            values, padding = target["values"], target["padding"]
            if output.shape != values.shape:
                raise ValueError(f"{type(self).__name__}: output {tuple(output.shape)} vs target {tuple(values.shape)}")
            return relative_l2(output, values, padding), None
        if output.shape != target.shape:
            raise ValueError(
                f"{type(self).__name__}: the model returned {tuple(output.shape)} for a target of {tuple(target.shape)}"
            )
        dims = self.spatial_dims or output.ndim - 2
        return relative_l2(output, target), relative_h1(output, target, dims)

    def loss(self, output: Tensor, target: Any) -> Tensor:
        l2, h1 = self._errors(output, target)
        loss = l2.mean()
        if self.h1_weight > 0 and h1 is not None:
            loss = loss + self.h1_weight * h1.mean()
        return loss

    def make_metrics(self) -> dict[str, Metric]:
        return {"rel_l2": MeanMetric(), "rel_h1": MeanMetric()}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Any) -> None:
        l2, h1 = self._errors(output.detach(), target)
        metrics["rel_l2"].update(l2)
        if h1 is not None:
            metrics["rel_h1"].update(h1)

    # ------------------------------------------------------------------------------------------ evaluation
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        names = getattr(datamodule, "test_names", None)
        self._test_names = list(names()) if callable(names) else []
        for name in self._test_names[1:]:
            if name not in self.resolution_metrics:
                self.resolution_metrics[name] = nn.ModuleDict(self.make_metrics()).to(self.device)

    def _eval(self, batch: Any, stage: str, dataloader_idx: int = 0) -> None:
        inputs, target = self.unpack(batch)
        frames = None if isinstance(target, Mapping) else int(target.shape[-1])
        output = self.predict_fields(inputs, frames)
        size = self.batch_size(batch, inputs, target)
        if dataloader_idx == 0:
            metrics, suffixes = self.eval_metrics[stage], [""]
            if stage == "test" and self._test_names:
                suffixes.append(self._test_names[0])
        else:
            name = self._test_names[dataloader_idx]
            metrics, suffixes = self.resolution_metrics[name], [name]
        self.update_metrics(metrics, output, target)
        for suffix in suffixes:
            if not suffix:
                self.log(f"{stage}/loss", metrics["rel_l2"], prog_bar=stage == "val", batch_size=size,
                         add_dataloader_idx=False)  # fmt: skip
            for key, metric in metrics.items():
                if key == "rel_h1" and isinstance(target, Mapping):
                    continue
                self.log(f"{stage}/{key}{suffix}", metric, batch_size=size, add_dataloader_idx=False)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval(batch, "test", dataloader_idx)

"""``features_only=True``: a model's multi-scale feature maps instead of its head (timm's ``_features`` counterpart).

A model describes its feature stages with ``feature_info`` (a list of ``{"num_chs", "reduction", "module"}`` dicts, as
in timm) and returns them from ``forward_feature_maps(x)``. A model without those can declare ``feature_info`` at
registration (:func:`formers.core.registry.register_model`); its stages are then the outputs of the named modules,
collected with forward hooks. :class:`FeatureInfo` mirrors timm's accessors without importing timm (core does not
depend on it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["FeatureInfo", "FeatureMapsModel"]


class FeatureInfo:
    """Channels, reduction (stride) and module name of each feature stage, seen through ``out_indices``."""

    def __init__(self, feature_info: Sequence[Mapping[str, Any]], out_indices: Sequence[int]) -> None:
        prev_reduction = 1
        for i, info in enumerate(feature_info):
            if info.get("num_chs", 0) <= 0 or info.get("reduction", 0) < prev_reduction or "module" not in info:
                raise ValueError(f"feature_info[{i}] needs num_chs > 0, a non-decreasing reduction, a module: {info}")
            prev_reduction = info["reduction"]
        self.info = [{**info, "index": i} for i, info in enumerate(feature_info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of each stage in ``out_indices`` (``idx=None``), of stage ``idx``, or of the stages ``idx``."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)


class FeatureMapsModel(nn.Module):
    """The feature maps of ``model`` at the stages ``out_indices`` (default: all), as a list of tensors.

    The stages come from the model's ``forward_feature_maps`` / ``feature_info`` or, failing those, from the
    ``feature_info`` declared on its registry entry (forward hooks on the named modules). ``feature_info`` is a
    :class:`FeatureInfo` (``.channels()``, ``.reduction()``, ``.module_name()``). The classifier is removed
    (``reset_classifier(0)``), so every parameter left receives a gradient from the maps.
    """

    def __init__(
        self,
        model: nn.Module,
        out_indices: Sequence[int] | None = None,
        feature_info: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        own = getattr(model, "feature_info", None) if hasattr(model, "forward_feature_maps") else None
        info = own if own is not None else feature_info
        if info is None:
            raise ValueError(
                f"{type(model).__name__} has no multi-scale feature maps (neither feature_info + forward_feature_maps "
                "on the model nor feature_info declared at registration), so features_only=True cannot serve it"
            )
        stages = len(info)
        indices = tuple(range(stages)) if out_indices is None else tuple(int(i) for i in out_indices)
        if not indices or any(not -stages <= i < stages for i in indices):
            raise ValueError(f"out_indices {indices} must index the {stages} stages of {type(model).__name__}")
        self.out_indices = tuple(i % stages for i in indices)
        self.feature_info = FeatureInfo(info, self.out_indices)
        self.hooked = own is None
        unknown = set(self.feature_info.module_name()) - dict(model.named_modules()).keys()
        if self.hooked and unknown:
            raise ValueError(f"declared feature_info names modules {sorted(unknown)} that {type(model).__name__} lacks")
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)
        self.model = model
        self.pretrained_cfg = self.default_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, *args: Any, **kwargs: Any) -> list[Tensor]:
        if not self.hooked:
            maps = self.model.forward_feature_maps(*args, **kwargs)
            return [maps[i] for i in self.out_indices]
        return self._hooked_forward(*args, **kwargs)

    def _hooked_forward(self, *args: Any, **kwargs: Any) -> list[Tensor]:
        """Outputs of the declared stage modules during one full forward (timm's ``FeatureHooks`` idea)."""
        names = self.feature_info.module_name()
        outputs: dict[str, Tensor] = {}
        modules = dict(self.model.named_modules())
        handles = [
            modules[name].register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
            for name in names
        ]
        try:
            self.model(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return [outputs[name] for name in names]

"""``formers.vision.create_model`` / ``list_models``: the vision models by their official configuration names.

``create_model`` builds the model, attaches its timm-style ``pretrained_cfg`` (input size, mean/std, crop_pct,
interpolation; ``input_size`` and ``num_classes`` follow the model actually built), loads a local checkpoint through
the family's ``checkpoint_filter_fn`` and can return the multi-scale feature maps instead of the classifier
(``features_only=True``). formers never downloads weights: ``pretrained=True`` needs a local file.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from typing import Any

from timm.models import FeatureInfo
from torch import Tensor, nn

from formers.vision.checkpoint import load_checkpoint, load_into
from formers.vision.models import VISION_MODELS, vision_entry
from formers.vision.timm_compat import register_timm_models

__all__ = ["create_model", "list_models", "prepare_model", "resolve_pretrained_cfg", "FeatureMapsModel"]


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the vision models, optionally filtered by a glob ``pattern`` (``"swin_*"``)."""
    register_timm_models()  # models registered since the import reach timm too
    names = sorted(VISION_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    use_ema: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build the vision model ``name`` (see :func:`list_models`).

    Args:
        name: official configuration name, e.g. ``pit_ti``, ``swin_tiny_patch4_window7_224``, ``t2t_vit_14``.
        pretrained: load the weights of ``pretrained_cfg["file"]`` (set it with ``pretrained_cfg_overlay``); there
            is no download.
        checkpoint_path: local checkpoint (``.pth``, ``.pth.tar``, ``.safetensors``, formers ``.ckpt``) in the
            official, timm or formers key format; position tables are resized to the model's ``img_size`` and a
            classifier of another size is left freshly initialized.
        pretrained_cfg_overlay: entries replacing those of the registered ``pretrained_cfg`` (e.g. ``mean``, ``file``).
        features_only: return a :class:`FeatureMapsModel` (NCHW maps) instead of the classifier.
        out_indices: stages returned by ``features_only`` (default: all).
        use_ema: prefer EMA weights in a training checkpoint.
        **kwargs: model arguments: ``num_classes``, ``img_size``, ``in_chans``, ``drop_rate``, ``drop_path_rate``, ...

    Raises:
        ValueError: unknown name, ``pretrained=True`` without a local file, ``features_only`` for a family without
            feature maps, or a checkpoint that does not fit (missing / unexpected keys are listed).
    """
    register_timm_models()
    entry = vision_entry(name)
    _checkpoint_source(name, pretrained, checkpoint_path, pretrained_cfg_overlay)  # fail before a slow build
    model = entry.factory(**kwargs)
    prepare_model(
        model,
        name,
        pretrained=pretrained,
        checkpoint_path=checkpoint_path,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        use_ema=use_ema,
    )
    return FeatureMapsModel(model, out_indices) if features_only else model


def prepare_model(
    model: nn.Module,
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    use_ema: bool = True,
) -> nn.Module:
    """Attach ``pretrained_cfg`` / ``default_cfg`` to a built model of ``name`` and load its checkpoint, if any."""
    cfg = resolve_pretrained_cfg(name, pretrained_cfg_overlay)
    model.pretrained_cfg = model.default_cfg = _actual_cfg(model, cfg)
    source = _checkpoint_source(name, pretrained, checkpoint_path, pretrained_cfg_overlay)
    if source is not None:
        state = load_checkpoint(source, use_ema=use_ema)
        load_into(
            model, state, filter_fn=vision_entry(name).filter_fn, classifier=cfg.get("classifier"), source=str(source)
        )
    return model


def _checkpoint_source(name, pretrained, checkpoint_path, overlay) -> str | os.PathLike[str] | None:
    if checkpoint_path is not None or not pretrained:
        return checkpoint_path
    source = resolve_pretrained_cfg(name, overlay).get("file")
    if not source:
        raise ValueError(
            f"pretrained=True for {name!r} needs a local checkpoint: formers never downloads weights. Pass "
            "checkpoint_path=... or pretrained_cfg_overlay={'file': ...}"
        )
    return source


def resolve_pretrained_cfg(name: str, overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registered ``pretrained_cfg`` of ``name`` with ``overlay`` applied (a new dict)."""
    cfg = dict(vision_entry(name).pretrained_cfg)
    cfg.update(overlay or {})
    cfg.setdefault("architecture", name)
    return cfg


def _actual_cfg(model: nn.Module, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``input_size`` and ``num_classes`` of the model actually built (img_size / in_chans / classes)."""
    cfg = dict(cfg)
    example = model.example_inputs(1)["x"]
    cfg["input_size"] = tuple(int(s) for s in example.shape[1:])
    if isinstance(getattr(model, "num_classes", None), int):
        cfg["num_classes"] = model.num_classes
    return cfg


class FeatureMapsModel(nn.Module):
    """Multi-scale NCHW feature maps of a model with ``forward_feature_maps`` / ``feature_info`` (Swin, PiT).

    ``forward(x)`` returns the maps of the stages in ``out_indices``; ``feature_info`` is a timm
    :class:`~timm.models.FeatureInfo` (``.channels()``, ``.reduction()``). The classifier is removed
    (``reset_classifier(0)``), so every parameter left receives a gradient from the maps.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = getattr(model, "feature_info", None)
        if info is None or not hasattr(model, "forward_feature_maps"):
            raise ValueError(
                f"{type(model).__name__} has no multi-scale feature maps (feature_info / forward_feature_maps); "
                "features_only=True works for the families that expose them (Swin, PiT)"
            )
        stages = len(info)
        indices = tuple(range(stages)) if out_indices is None else tuple(int(i) for i in out_indices)
        bad = [i for i in indices if not -stages <= i < stages]
        if not indices or bad:
            raise ValueError(f"out_indices {indices} must index the {stages} stages of {type(model).__name__}")
        self.out_indices = tuple(i % stages for i in indices)
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)
        self.model = model
        self.feature_info = FeatureInfo([dict(d) for d in info], self.out_indices)
        self.pretrained_cfg = self.default_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.model.forward_feature_maps(x)
        return [maps[i] for i in self.out_indices]

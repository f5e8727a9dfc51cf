"""``formers.vision.create_model`` / ``list_models``: the core builder and registry, restricted to domain ``vision``.

Building is :func:`formers.core.builder.build_model`: it attaches the model's timm-style ``pretrained_cfg`` (input
size, mean/std, crop_pct, interpolation; ``input_size`` and ``num_classes`` follow the model actually built) and loads
a local checkpoint through the family's ``checkpoint_filter_fn``. ``features_only=True`` returns the multi-scale
feature maps instead of the classifier, the same model as ``timm.create_model("formers_<name>", features_only=True)``
(:func:`formers.vision.timm_compat.feature_model`). formers never downloads weights: ``pretrained=True`` needs a
local file.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from formers.core import registry
from formers.core.builder import FORMERS_CONFIG_ATTR, build_model, check_out_indices, resolve_pretrained_cfg
from formers.core.features import FeatureMapsModel
from formers.core.registry import get_model_entry
from formers.vision.timm_compat import feature_model

__all__ = ["create_model", "list_models", "resolve_pretrained_cfg", "FeatureMapsModel"]

_DOMAIN = "vision"  # the registry domain name (the CLI declaration is formers.vision.domain.DOMAIN)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the vision models, optionally filtered by a glob ``pattern`` (``"swin_*"``)."""
    return registry.list_models(pattern, domain=_DOMAIN)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the vision model ``name``, e.g. ``create_model("pit_ti_224", num_classes=10, checkpoint_path=...)``.

    The arguments are those of :func:`formers.core.builder.build_model` (``pretrained``, ``checkpoint_path``,
    ``pretrained_cfg_overlay``, ``use_ema``), ``features_only`` / ``out_indices`` (timm's: an int ``n`` takes the last
    ``n`` stages; ``None`` the family's default) and the model's own (``num_classes``, ``img_size``, ``in_chans``,
    ``drop_rate``, ``drop_path_rate``, ``device``, ``dtype``, ...).

    Raises:
        ValueError: unknown name or a model of another domain (the message says which), ``pretrained=True``
            without a local file, ``features_only`` for a family without feature maps, or a checkpoint that does not
            fit (missing / unexpected keys are listed).
    """
    features_only, out_indices = kwargs.pop("features_only", False), kwargs.pop("out_indices", None)
    check_out_indices(features_only, out_indices)
    model = build_model(name, domain=_DOMAIN, **kwargs)
    if not features_only:
        return model
    # the same feature model as timm.create_model("formers_<name>", features_only=True) gives; the registered name
    # comes from the model (``name`` may be an alias or a saved model's directory)
    registered = getattr(model, FORMERS_CONFIG_ATTR, {}).get("architecture", name)
    return feature_model(model, out_indices, get_model_entry(registered).feature_info)

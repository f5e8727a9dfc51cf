"""``formers.vision.create_model`` / ``list_models``: the core builder and registry, restricted to domain ``vision``.

Building is :func:`formers.core.builder.build_model`: it attaches the model's timm-style ``pretrained_cfg`` (input
size, mean/std, crop_pct, interpolation; ``input_size`` and ``num_classes`` follow the model actually built), loads a
local checkpoint through the family's ``checkpoint_filter_fn`` and can return the multi-scale feature maps instead of
the classifier (``features_only=True``). formers never downloads weights: ``pretrained=True`` needs a local file.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from formers.core import registry
from formers.core.builder import build_model, resolve_pretrained_cfg
from formers.core.features import FeatureMapsModel

__all__ = ["create_model", "list_models", "resolve_pretrained_cfg", "FeatureMapsModel"]

_DOMAIN = "vision"  # the registry domain name (the CLI declaration is formers.vision.domain.DOMAIN)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the vision models, optionally filtered by a glob ``pattern`` (``"swin_*"``)."""
    return registry.list_models(pattern, domain=_DOMAIN)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the vision model ``name``, e.g. ``create_model("pit_ti_224", num_classes=10, checkpoint_path=...)``.

    The arguments are those of :func:`formers.core.builder.build_model` (``pretrained``, ``checkpoint_path``,
    ``pretrained_cfg_overlay``, ``features_only``, ``out_indices``, ``use_ema``) and the model's own (``num_classes``,
    ``img_size``, ``in_chans``, ``drop_rate``, ``drop_path_rate``, ...).

    Raises:
        ValueError: unknown name or a model of another domain (the message says which), ``pretrained=True``
            without a local file, ``features_only`` for a family without feature maps, or a checkpoint that does not
            fit (missing / unexpected keys are listed).
    """
    return build_model(name, domain=_DOMAIN, **kwargs)

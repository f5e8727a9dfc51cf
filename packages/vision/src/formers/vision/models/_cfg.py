"""The ``pretrained_cfg`` defaults of the vision models (registered with :func:`formers.core.registry.register_model`).

Every family file (``t2t_vit.py``, ``pit.py``, ``crossvit.py``, ``swin.py``) registers its named configurations in
the one formers registry with ``register_model(paper=..., pretrained_cfg=make_cfg(...), filter_fn=...)``:

* the timm-style ``pretrained_cfg`` (input size, mean/std, crop_pct, interpolation, first_conv, classifier) is what
  :mod:`formers.vision.timm_compat` hands to timm, so ``timm.data.resolve_data_config`` works;
* the family's ``checkpoint_filter_fn(state_dict, model) -> state_dict`` maps the official repository's keys and
  timm's keys onto ours (and resizes position tables to the model's ``img_size``).
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["make_cfg"]


def make_cfg(**overrides: Any) -> dict[str, Any]:
    """A timm ``pretrained_cfg`` dict with the ImageNet defaults of these papers (224, bicubic, crop 0.9)."""
    cfg = {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    cfg.update(overrides)
    return cfg

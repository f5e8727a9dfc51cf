"""Registration of the vision models: the formers registry plus what timm and checkpoint loading need.

Every family file (``t2t_vit.py``, ``pit.py``, ``crossvit.py``, ``swin.py``) decorates its named configurations with
:func:`register_vision_model`. That one call

* registers the factory in :mod:`formers.core.registry` (domain ``vision``, tiny ``test_kwargs`` for the
  registry-driven tests),
* records the timm-style ``pretrained_cfg`` (input size, mean/std, crop_pct, interpolation, first_conv, classifier),
  which :mod:`formers.vision.timm_compat` hands to timm so ``timm.data.resolve_data_config`` works,
* records the family's ``checkpoint_filter_fn(state_dict, model) -> state_dict`` that maps the official repository's
  keys and timm's keys onto ours (and resizes position tables to the model's ``img_size``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from formers.core.registry import register_model

__all__ = ["VisionEntry", "register_vision_model", "vision_entry", "VISION_MODELS", "make_cfg"]

FilterFn = Callable[[dict[str, Any], nn.Module], dict[str, Any]]


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


@dataclass(frozen=True)
class VisionEntry:
    name: str
    factory: Callable[..., nn.Module]
    pretrained_cfg: dict[str, Any]
    filter_fn: FilterFn | None
    paper: str
    test_kwargs: dict[str, Any] = field(default_factory=dict)


VISION_MODELS: dict[str, VisionEntry] = {}


def register_vision_model(
    *,
    paper: str,
    cfg: dict[str, Any] | None = None,
    filter_fn: FilterFn | None = None,
    test_kwargs: dict[str, Any] | None = None,
):
    """Decorator for a named configuration ``name(**kwargs) -> model`` (the function name is the model name)."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in VISION_MODELS and VISION_MODELS[name].factory is not factory:
            raise ValueError(f"vision model {name!r} is registered twice")
        entry = VisionEntry(name, factory, cfg or make_cfg(), filter_fn, paper, dict(test_kwargs or {}))
        VISION_MODELS[name] = entry
        return register_model(factory, name=name, domain="vision", paper=paper, test_kwargs=test_kwargs)

    return wrap


def vision_entry(name: str) -> VisionEntry:
    try:
        return VISION_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown vision model {name!r}; formers.vision.list_models() lists the {len(VISION_MODELS)} names"
        ) from None

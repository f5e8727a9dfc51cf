"""What the four vision families (``t2t_vit.py``, ``pit.py``, ``crossvit.py``, ``swin.py``) share for timm: the
``pretrained_cfg`` defaults, the factory keywords timm passes (``device``, ``dtype``) and gradient checkpointing.

Every family file registers its named configurations in the one formers registry with
``register_model(paper=..., pretrained_cfg=make_cfg(...), filter_fn=...)``:

* the timm-style ``pretrained_cfg`` (input size, mean/std, crop_pct, interpolation, first_conv, classifier) is what
  :mod:`formers.vision.timm_compat` hands to timm, so ``timm.data.resolve_data_config`` works;
* the family's ``checkpoint_filter_fn(state_dict, model) -> state_dict`` maps the official repository's keys and
  timm's keys onto ours (and resizes position tables to the model's ``img_size``);
* its factories build through :func:`create`, which honours timm's ``device=`` / ``dtype=`` factory keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["make_cfg", "create", "run_blocks"]

ModelT = TypeVar("ModelT", bound=nn.Module)


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


def create(cls: Callable[..., ModelT], kwargs: dict[str, Any]) -> ModelT:
    """``cls(**kwargs)`` with timm's factory keywords ``device`` (parameters and buffers are created there: ``"meta"``
    builds without memory) and ``dtype`` (floating parameters and buffers are cast to it) taken out of ``kwargs``."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{getattr(cls, '__name__', cls)}: dtype must be a floating torch.dtype, got {dtype!r}")
    with torch.device(device) if device is not None else nullcontext():
        model = cls(**kwargs)
    return model if dtype is None else model.to(dtype=dtype)


def run_blocks(blocks: nn.Module, x: Any, enabled: bool) -> Any:
    """``x`` through each block of ``blocks`` in turn; with ``enabled`` (``set_grad_checkpointing``) each block is
    recomputed in backward instead of keeping its activations (``torch.utils.checkpoint``, non-reentrant)."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if enabled and not torch.jit.is_scripting() else block(x)
    return x

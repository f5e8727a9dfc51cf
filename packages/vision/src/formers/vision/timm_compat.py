"""The formers vision models in timm's registry, so ``timm.create_model`` and ``timm.data`` work with them.

Naming rule: the timm name of a formers model is ``formers_<name>`` (:data:`TIMM_PREFIX`), e.g.
``timm.create_model("formers_pit_ti_224")`` builds formers' ``pit_ti_224``. timm's own entries (``pit_ti_224``,
``swin_tiny_patch4_window7_224``, ...) are never shadowed or overwritten: the prefix keeps the names apart, and a
``formers_*`` name that timm already knows from elsewhere raises instead of replacing it.
``timm.list_models("formers_*")`` lists ours.

Each entry point is a small wrapper registered with timm's public ``register_model`` (its ``__name__`` is the timm
name) that builds through timm's own ``build_model_with_cfg``, the way timm's model modules do, so every factory
keyword timm passes behaves as for timm's models:

* ``device`` / ``dtype`` (the model is created there / cast to it), ``pretrained_cfg`` / ``pretrained_cfg_overlay``,
  ``pretrained_model_args``, ``cache_dir``;
* ``pretrained=True`` from the cfg's sources: ``hf-hub:<repo>`` and ``local-dir:<dir>`` names (written by
  ``timm.models.save_for_hf`` / ``push_to_hf_hub``; both go through timm's loader and the family's checkpoint
  filter), a ``state_dict``, or a local ``file``, which formers' safe reader opens (official ``.pth.tar`` with EMA
  weights, formers Lightning ``.ckpt``, ``.safetensors``; weights only). formers registers no weight URLs: without a
  source, ``pretrained=True`` raises;
* ``features_only`` / ``out_indices`` / ``feature_cls``: :func:`feature_model`, timm's ``FeatureGetterNet`` over the
  model's ``forward_intermediates`` (output layout as timm: NHWC for Swin, NCHW for the others).

``timm.create_model(..., checkpoint_path=...)`` is timm's own strict loader: it takes formers-format state dicts;
use :func:`formers.vision.create_model` (``checkpoint_path=``) or ``pretrained_cfg_overlay={"file": ...}`` for
official / timm keys. ``import formers.vision`` calls :func:`register_timm_models` once; a vision model registered
later reaches timm by calling it again (it only adds what timm lacks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import timm.models
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import FeatureGetterNet
from timm.models._input import get_model_input_config
from torch import Tensor, nn

from formers.core.features import FeatureMapsModel
from formers.core.registry import ModelEntry, get_model_entry, list_models
from formers.core.weights import load_checkpoint

__all__ = ["TIMM_PREFIX", "timm_name", "formers_name", "register_timm_models", "default_cfgs", "feature_model"]

TIMM_PREFIX = "formers_"
DOMAIN = "vision"
# timm's register_model reads the cfgs of an entry point from its module's ``default_cfgs``
default_cfgs: dict[str, Any] = {}
_registered: dict[str, Callable[..., nn.Module]] = {}


def timm_name(name: str) -> str:
    """timm registry name of the formers model ``name``."""
    return TIMM_PREFIX + name


def formers_name(timm_model_name: str) -> str:
    """formers name of a ``formers_*`` timm name (a pretrained tag ``.xxx`` is dropped)."""
    arch = timm_model_name.split(".", 1)[0]
    if not arch.startswith(TIMM_PREFIX):
        raise ValueError(f"{timm_model_name!r} is not a formers model in timm (names start with {TIMM_PREFIX!r})")
    return arch.removeprefix(TIMM_PREFIX)


def register_timm_models() -> list[str]:
    """Register every vision model not yet in timm; returns the timm names added by this call."""
    added = []
    for name in list_models(domain=DOMAIN):
        tname = timm_name(name)
        if tname in _registered:
            continue
        if timm.models.is_model(tname):
            raise ValueError(f"timm already has a model named {tname!r}; formers will not overwrite it")
        entry = get_model_entry(name, domain=DOMAIN)
        cfg = {k: v for k, v in (entry.pretrained_cfg or {}).items() if k in PretrainedCfg.__dataclass_fields__}
        cfg.setdefault("paper_name", entry.paper)
        default_cfgs.update(generate_default_cfgs({tname: cfg}))
        _registered[tname] = timm.models.register_model(_entrypoint(entry))
        added.append(tname)
    return added


def feature_model(
    model: nn.Module,
    out_indices: int | Sequence[int] | None = None,
    feature_info: Sequence[Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The feature maps of ``model`` (what ``features_only=True`` returns, through timm and formers alike).

    A model with ``forward_intermediates`` is wrapped in timm's ``FeatureGetterNet`` (which prunes the stages after
    the last one taken and the head); ``out_indices=None`` takes the model's ``default_out_indices`` (timm's default
    for that family: the last 3 blocks of T2T-ViT, the last block of each CrossViT branch) or every stage, and
    ``output_fmt`` defaults to the model's ``output_fmt`` (Swin: NHWC, as timm's Swin) or NCHW. Other models get
    :class:`formers.core.features.FeatureMapsModel` (their ``forward_feature_maps``, or hooks on the registry's
    declared ``feature_info``).

    Raises:
        ValueError: ``out_indices`` outside the model's stages, or a model without feature maps.
    """
    if not hasattr(model, "forward_intermediates"):
        stages = len(getattr(model, "feature_info", None) or feature_info or ())
        indices = None if out_indices is None else _as_indices(out_indices, stages)
        return FeatureMapsModel(model, indices, feature_info)
    stages = len(model.feature_info)
    indices = _as_indices(getattr(model, "default_out_indices", stages) if out_indices is None else out_indices, stages)
    if any(not -stages <= i < stages for i in indices):
        raise ValueError(
            f"out_indices {tuple(indices)} must index the {stages} feature stages of {type(model).__name__}"
        )
    kwargs.setdefault("output_fmt", getattr(model, "output_fmt", "NCHW"))
    feats = FeatureGetterNet(model, out_indices=list(indices), **kwargs)
    feats.pretrained_cfg = feats.default_cfg = getattr(model, "pretrained_cfg", {})
    return feats


def _as_indices(out_indices: int | Sequence[int], stages: int) -> tuple[int, ...]:
    """timm's rule: an int ``n`` means the last ``n`` stages."""
    if isinstance(out_indices, int):
        if not 0 < out_indices <= stages:
            raise ValueError(f"out_indices={out_indices} (the last n stages) needs 0 < n <= {stages}")
        return tuple(range(stages - out_indices, stages))
    return tuple(int(i) for i in out_indices)


def _entrypoint(entry: ModelEntry) -> Callable[..., nn.Module]:
    tname = timm_name(entry.name)

    def filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        # A file read by formers reached timm as the cfg's state_dict (the first source timm loads): once loaded it
        # leaves the model's pretrained_cfg (that dict is the one timm attaches and copies for features_only).
        model.pretrained_cfg.pop("state_dict", None)
        return entry.filter_fn(state_dict, model) if entry.filter_fn is not None else state_dict

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            kwargs["pretrained_cfg_overlay"] = _weights_source(tname, kwargs)
        feature_cfg = {"feature_cls": _feature_cls(entry), "out_indices": None}  # None: the model's default
        model = build_model_with_cfg(
            entry.factory, tname, pretrained, pretrained_filter_fn=filter_fn, feature_cfg=feature_cfg, **kwargs
        )
        # formers' rule (as formers.vision.create_model): the attached cfg describes the model built, so
        # timm.data.resolve_data_config(model=model) gives its input size and class count
        model.pretrained_cfg["input_size"] = get_model_input_config(model)["input_size"]
        if "num_classes" in model.pretrained_cfg and isinstance(getattr(model, "num_classes", None), int):
            model.pretrained_cfg["num_classes"] = model.num_classes
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = tname
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"formers.vision model {entry.name!r} (paper: {entry.paper})."
    return entrypoint


def _weights_source(tname: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` for ``pretrained=True``: a plain local ``file`` is read here by formers' safe
    reader and handed to timm as the ``state_dict``; ``hf-hub`` / ``local-dir`` / url sources stay timm's."""
    pretrained_cfg, overlay = kwargs.get("pretrained_cfg"), dict(kwargs.get("pretrained_cfg_overlay") or {})
    if isinstance(pretrained_cfg, str) and pretrained_cfg:
        raise ValueError(f"{tname} has no pretrained tag {pretrained_cfg!r}: formers ships no weights")
    cfg = resolve_pretrained_cfg(tname, pretrained_cfg or None, overlay).to_dict()
    if cfg.get("source") or cfg.get("state_dict") is not None or cfg.get("hf_hub_id") or cfg.get("url"):
        return overlay
    if not cfg.get("file"):
        raise ValueError(
            f"timm.create_model({tname!r}, pretrained=True): formers never downloads weights and registers none; "
            "pass pretrained_cfg_overlay={'file': '<local checkpoint>'} (official, timm or formers format) or a "
            "'local-dir:<dir>' / 'hf-hub:<repo>' name (timm.models.save_for_hf / push_to_hf_hub)"
        )
    return {**overlay, "state_dict": load_checkpoint(cfg["file"], use_ema=True)}


def _feature_cls(entry: ModelEntry) -> Callable[..., nn.Module]:
    def make(model: nn.Module, out_indices: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
        return feature_model(model, out_indices, entry.feature_info, **kwargs)

    return make

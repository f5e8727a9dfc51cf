"""One builder for every domain: a registered name -> a ready model (timm's ``_builder`` counterpart).

:func:`build_model` builds the registry entry's factory with the given keyword arguments, attaches the entry's
timm-style ``pretrained_cfg`` (``input_size`` and ``num_classes`` of the model actually built), loads a local
checkpoint through the entry's ``filter_fn`` and, with ``features_only=True``, returns the multi-scale feature maps
(:class:`~formers.core.features.FeatureMapsModel`) instead of the head. Each domain's ``create_model`` is this
function restricted to the domain. formers never downloads weights: ``pretrained=True`` needs a local
``pretrained_cfg["file"]``.

Every model built here records how: ``model.formers_config = {"architecture": <registered name>, "model_args":
{...}}``, which :func:`formers.core.hub.save_pretrained` writes next to the weights; ``build_model`` also takes such a
saved directory instead of a name (``build_model("runs/shared/pit")`` or ``"local-dir:runs/shared/pit"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from formers.core.features import FeatureMapsModel
from formers.core.registry import ModelEntry, get_model_entry
from formers.core.weights import load_checkpoint, load_into

__all__ = [
    "build_model",
    "check_out_indices",
    "prepare_model",
    "resolve_pretrained_cfg",
    "wrap_features",
    "FORMERS_CONFIG_ATTR",
]

FORMERS_CONFIG_ATTR = "formers_config"  # the attribute recording a built model's registered name and arguments

PathLike = str | os.PathLike[str]


def build_model(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: PathLike | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    use_ema: bool = True,
    domain: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name`` (see :func:`formers.core.registry.list_models`), or load a saved one.

    Args:
        name: registered name, e.g. ``pit_ti_224``, ``swin_tiny_patch4_window7_224``, ``itransformer`` (any case,
            or an alias such as ``iTransformer``), or a directory written by :func:`formers.core.hub.save_pretrained`
            (a path, or ``local-dir:<path>``): the model it holds, weights loaded, ``kwargs`` overriding its
            arguments (see :func:`formers.core.hub.from_pretrained`).
        pretrained: load the weights of ``pretrained_cfg["file"]`` (set it with ``pretrained_cfg_overlay``); there
            is no download.
        checkpoint_path: local checkpoint (``.pth``, ``.pth.tar``, ``.safetensors``, formers Lightning ``.ckpt``),
            mapped onto the model by the entry's ``filter_fn`` (without one, keys must match after the ``module.`` /
            ``_orig_mod.`` / ``model.`` prefixes are stripped); a classifier of another size (the cfg's
            ``classifier``) is left freshly initialized.
        pretrained_cfg_overlay: entries replacing those of the registered ``pretrained_cfg`` (e.g. ``mean``, ``file``).
        features_only: return a :class:`~formers.core.features.FeatureMapsModel` instead of the model.
        out_indices: stages returned by ``features_only`` (default: all).
        use_ema: prefer EMA weights in a training checkpoint.
        domain: refuse names of other domains (what each domain's ``create_model`` passes).
        **kwargs: model arguments (``num_classes``, ``img_size``, ``seq_len``, ``drop_path_rate``, ...).

    Raises:
        ValueError: unknown name or one of another ``domain``, ``pretrained=True`` without a local file,
            ``features_only`` for a model without feature maps, or a checkpoint that does not fit
            (:class:`~formers.core.weights.CheckpointError`, missing / unexpected keys listed).
    """
    from formers.core import hub  # the hub builds through this function: import at call time

    saved = hub.pretrained_dir(name)
    if saved is not None:
        if pretrained or checkpoint_path is not None:
            raise ValueError(f"{name}: a saved model directory holds its weights; drop pretrained / checkpoint_path")
        return hub.load_pretrained_dir(
            saved,
            pretrained_cfg_overlay=pretrained_cfg_overlay,
            features_only=features_only,
            out_indices=out_indices,
            domain=domain,
            **kwargs,
        )
    entry = get_model_entry(name, domain=domain)
    name = entry.name  # the registered spelling of a case-insensitive name or alias
    check_size_arguments(name, kwargs)
    check_out_indices(features_only, out_indices)
    _checkpoint_source(entry, pretrained, checkpoint_path, pretrained_cfg_overlay)  # fail before a slow build
    model = entry.factory(**kwargs)
    setattr(model, FORMERS_CONFIG_ATTR, {"architecture": name, "model_args": dict(kwargs)})
    prepare_model(
        model,
        name,
        pretrained=pretrained,
        checkpoint_path=checkpoint_path,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        use_ema=use_ema,
    )
    return wrap_features(model, name, features_only, out_indices)


def check_out_indices(features_only: bool, out_indices: Any) -> None:
    """``out_indices`` selects feature maps: refused without ``features_only`` (before a slow build)."""
    if out_indices is not None and not features_only:
        raise ValueError(f"out_indices={out_indices} selects feature maps: it needs features_only=True")


def wrap_features(
    model: nn.Module, name: str, features_only: bool, out_indices: Sequence[int] | None = None
) -> nn.Module:
    """``model``, or with ``features_only`` its :class:`~formers.core.features.FeatureMapsModel` (``out_indices``)."""
    check_out_indices(features_only, out_indices)
    return FeatureMapsModel(model, out_indices, get_model_entry(name).feature_info) if features_only else model


# Size arguments of the registered factories: a zero or negative value fails deep inside torch (a negative tensor
# dimension, a convolution larger than its input, a ZeroDivisionError) or, for heads, kills the interpreter.
_POSITIVE_SIZES = frozenset(
    {
        "img_size", "patch_size", "stride", "in_chans", "embed_dim", "dim", "num_heads", "heads", "head_dim",
        "base_dims", "token_dim", "window_size", "max_len", "vocab_size", "d_model", "d_ff", "n_heads", "seq_len",
        "pred_len", "enc_in", "dec_in", "c_out", "moving_avg",
    }
)  # fmt: skip
_NON_NEGATIVE_SIZES = frozenset({"num_classes", "label_len", "depth", "depths", "e_layers", "d_layers"})


def check_size_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse size arguments (ints, or tuples of ints per stage) that are not integers or are below their minimum
    (1, or 0 for class counts, label lengths and depths) before the factory runs, naming the model and argument.

    Raises:
        TypeError: a size that is not an integer (e.g. ``"32"``).
        ValueError: a size below its minimum.
    """
    for key, value in kwargs.items():
        if key in _POSITIVE_SIZES:
            _check_size(name, key, value, 1)
        elif key in _NON_NEGATIVE_SIZES:
            _check_size(name, key, value, 0)


def _check_size(name: str, key: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, (tuple, list)):
        for item in value:
            _check_size(name, key, item, minimum)
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {key} must be an integer (or a tuple of them), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: {key} must be >= {minimum}, got {value}")


def prepare_model(
    model: nn.Module,
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: PathLike | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    use_ema: bool = True,
) -> nn.Module:
    """Attach ``pretrained_cfg`` / ``default_cfg`` to a built model of ``name`` and load its checkpoint, if any.

    The second half of :func:`build_model`, for callers that build the model themselves.
    """
    entry = get_model_entry(name)
    cfg = resolve_pretrained_cfg(name, pretrained_cfg_overlay)
    if entry.pretrained_cfg is not None:  # models registered without a cfg get none attached
        model.pretrained_cfg = model.default_cfg = _actual_cfg(model, cfg)
    source = _checkpoint_source(entry, pretrained, checkpoint_path, pretrained_cfg_overlay)
    if source is not None:
        state = load_checkpoint(source, use_ema=use_ema)
        load_into(model, state, filter_fn=entry.filter_fn, classifier=cfg.get("classifier"), source=str(source))
    return model


def resolve_pretrained_cfg(name: str, overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registered ``pretrained_cfg`` of ``name`` (empty when it has none) with ``overlay`` applied (a new dict)."""
    cfg = dict(get_model_entry(name).pretrained_cfg or {})
    cfg.update(overlay or {})
    cfg.setdefault("architecture", name)
    return cfg


def _checkpoint_source(
    entry: ModelEntry, pretrained: bool, checkpoint_path: PathLike | None, overlay: dict[str, Any] | None
) -> PathLike | None:
    """The file to load: ``checkpoint_path``, or with ``pretrained=True`` the cfg's local ``file``."""
    if checkpoint_path is not None or not pretrained:
        return checkpoint_path
    source = resolve_pretrained_cfg(entry.name, overlay).get("file")
    if not source:
        raise ValueError(
            f"pretrained=True for {entry.name!r} needs a local checkpoint: formers never downloads weights. Pass "
            "checkpoint_path=... or pretrained_cfg_overlay={'file': ...}"
        )
    return source


def _actual_cfg(model: nn.Module, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``input_size`` and ``num_classes`` of the model actually built (img_size / in_chans / classes)."""
    cfg = dict(cfg)
    example = getattr(model, "example_inputs", None)
    inputs = list(example(1).values()) if callable(example) else []
    if "input_size" in cfg and len(inputs) == 1:  # one input tensor (an image): its per-sample shape
        cfg["input_size"] = tuple(int(s) for s in inputs[0].shape[1:])
    if isinstance(getattr(model, "num_classes", None), int):
        cfg["num_classes"] = model.num_classes
    return cfg

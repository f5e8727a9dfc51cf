"""Optimizer parameter groups: weight decay only where the papers' recipes apply it.

The official recipes of the vision papers (DeiT, T2T-ViT, PiT, CrossViT, Swin) train with AdamW and decay only the
weight matrices: biases, norm weights (every 1-d parameter) and the tensors a model lists in ``no_weight_decay()``
(position embeddings, class tokens, relative-position tables) are excluded. :func:`param_groups_weight_decay` is
timm's ``param_groups_weight_decay`` for any module tree: ``no_weight_decay()`` is honoured on the root *and* on every
submodule (a Lightning task wraps the network as ``task.model``), with names made relative to that submodule as the
models write them.

:class:`formers.core.cli.FormersCLI` builds every optimizer from these groups (``filter_bias_and_bn: true``, the
default, switchable in YAML or with ``--filter_bias_and_bn false``). With a weight decay of 0 there is nothing to
filter: the optimizer gets the plain parameter list, so such runs are unchanged by the grouping.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ["no_weight_decay_names", "param_groups_weight_decay", "optimizer_parameters"]


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names listed by the ``no_weight_decay()`` of ``model`` or of any of its submodules.

    A listed name may be a parameter (``pos_embed``) or a prefix of parameters (``cls_token`` covers ``cls_token``
    itself; ``relative_position_bias_table`` matches at any depth below the submodule that lists it).
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if not callable(listed):
            continue
        base = f"{prefix}." if prefix else ""
        for param_name, _ in module.named_parameters():
            if any(_listed_match(param_name, entry) for entry in listed()):
                names.add(base + param_name)
    return names


def _listed_match(param_name: str, entry: str) -> bool:
    """``entry`` names ``param_name`` exactly, as a dotted prefix, or as its last component(s) (timm's tables)."""
    return param_name == entry or param_name.startswith(entry + ".") or param_name.endswith("." + entry)


def param_groups_weight_decay(
    model: nn.Module, weight_decay: float, no_weight_decay: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Two parameter groups: ``decay`` (matrices, kernels) and ``no_decay`` (biases, 1-d norm weights, and the
    names of ``no_weight_decay()`` / ``no_weight_decay``). Frozen parameters are left out, as in timm."""
    skip = no_weight_decay_names(model) | set(no_weight_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def optimizer_parameters(
    model: nn.Module, optimizer_class: type, init_args: dict[str, Any], filter_bias_and_bn: bool = True
) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
    """What to pass as the ``params`` of ``optimizer_class(params, **init_args)``.

    Parameter groups when ``filter_bias_and_bn`` and the effective weight decay (``init_args`` or the class default)
    is non-zero; otherwise ``model.parameters()``, exactly what an ungrouped optimizer gets.
    """
    weight_decay = init_args.get("weight_decay", _default_weight_decay(optimizer_class))
    if not filter_bias_and_bn or not weight_decay:
        return model.parameters()
    return param_groups_weight_decay(model, float(weight_decay))


def _default_weight_decay(optimizer_class: type) -> float:
    parameter = inspect.signature(optimizer_class).parameters.get("weight_decay")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return 0.0
    return float(parameter.default)

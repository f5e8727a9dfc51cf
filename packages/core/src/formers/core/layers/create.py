"""Build activations and norms from names, so YAML configs can say ``act_layer: silu`` or ``norm_layer: rmsnorm``.

Norms are torch's own (:class:`torch.nn.LayerNorm`, :class:`torch.nn.RMSNorm`); nothing is re-implemented here.
Every ``act_layer`` / ``norm_layer`` argument in :mod:`formers.core.layers` accepts a name, a class, or any callable
that builds a module (e.g. ``functools.partial(nn.LayerNorm, eps=1e-6)``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

__all__ = ["LayerType", "get_act_layer", "create_act", "get_norm_layer", "create_norm"]

LayerType = str | Callable[..., nn.Module]
"""A module name (``"gelu"``), a module class, or a callable returning a module."""

_ACT_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}

_NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "layernorm": nn.LayerNorm,
    "rmsnorm": nn.RMSNorm,
}


def _resolve(kind: str, layer: LayerType, table: dict[str, Callable[..., nn.Module]]) -> Callable[..., nn.Module]:
    if isinstance(layer, str):
        key = layer.lower().replace("-", "_")
        if key not in table:
            raise ValueError(f"unknown {kind} {layer!r}; choose one of {sorted(table)} or pass a module class")
        return table[key]
    if not callable(layer):
        raise TypeError(f"{kind} must be a name or a callable returning an nn.Module, got {type(layer).__name__}")
    return layer


def get_act_layer(act_layer: LayerType) -> Callable[..., nn.Module]:
    """The activation constructor for a name (``"gelu"``, ``"gelu_tanh"``, ``"relu"``, ``"silu"``...) or callable."""
    return _resolve("activation", act_layer, _ACT_LAYERS)


def create_act(act_layer: LayerType, **kwargs) -> nn.Module:
    """An activation module, e.g. ``create_act("gelu_tanh")``."""
    return get_act_layer(act_layer)(**kwargs)


def get_norm_layer(norm_layer: LayerType) -> Callable[..., nn.Module]:
    """The norm constructor for a name (``"layernorm"``, ``"rmsnorm"``) or callable; it is called as ``norm(dim)``."""
    return _resolve("norm", norm_layer, _NORM_LAYERS)


def create_norm(norm_layer: LayerType, dim: int, **kwargs) -> nn.Module:
    """A norm over the last dimension of size ``dim``, e.g. ``create_norm("rmsnorm", 256, eps=1e-6)``."""
    return get_norm_layer(norm_layer)(dim, **kwargs)

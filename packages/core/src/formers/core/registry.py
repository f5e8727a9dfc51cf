"""One model registry for every formers domain, in the spirit of timm's ``register_model``.

Each domain package registers factory functions (``name(**kwargs) -> nn.Module``) with :func:`register_model`
and advertises itself through the ``formers.models`` entry-point group, so :func:`list_models` and
:func:`create_model` see every installed domain without core importing any of them (layering: core never
imports a domain).

Every registered model is a :class:`formers.core.models.FormersModel`: it can build its own example input
and states the output shape it promises, which is what the registry-driven test suite checks for all models.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from torch import nn

__all__ = ["ModelEntry", "register_model", "list_models", "create_model", "get_model_entry", "list_domains"]

ENTRY_POINT_GROUP = "formers.models"


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    domain: str
    factory: Callable[..., nn.Module]
    paper: str | None = None
    # Small constructor overrides that keep the registry-driven tests fast on CPU; paper configs are tested
    # (parameter counts) in each domain's own tests.
    test_kwargs: dict[str, Any] = field(default_factory=dict)

    def create(self, **kwargs: Any) -> nn.Module:
        return self.factory(**kwargs)


_REGISTRY: dict[str, ModelEntry] = {}
_entry_points_loaded = False


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    domain: str | None = None,
    paper: str | None = None,
    test_kwargs: dict[str, Any] | None = None,
):
    """Register a model factory; usable bare (``@register_model``) or with options.

    The domain defaults to the second component of the factory's module (``formers.<domain>.…``).
    Names are global across domains: registering a name twice is an error, never a silent overwrite.
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or factory.__name__
        model_domain = domain or _domain_of(factory.__module__)
        if model_name in _REGISTRY and _REGISTRY[model_name].factory is not factory:
            other = _REGISTRY[model_name].factory
            raise ValueError(f"model name {model_name!r} is already registered by {other.__module__}.{other.__name__}")
        _REGISTRY[model_name] = ModelEntry(model_name, model_domain, factory, paper, dict(test_kwargs or {}))
        return factory

    return wrap(fn) if fn is not None else wrap


def _domain_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "formers" else parts[0]


def _load_entry_points() -> None:
    """Import every installed domain that advertises models (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        import_module(ep.value)


def list_domains() -> list[str]:
    _load_entry_points()
    return sorted({entry.domain for entry in _REGISTRY.values()})


def list_models(pattern: str | None = None, *, domain: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally filtered by a glob ``pattern`` and a ``domain``."""
    _load_entry_points()
    names = [n for n, e in _REGISTRY.items() if domain is None or e.domain == domain]
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return sorted(names)


def get_model_entry(name: str) -> ModelEntry:
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[0]}*")[:8]
        hint = f"; similar names: {', '.join(sorted(close))}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}. See formers.core.registry.list_models().") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; keyword arguments override its default configuration."""
    return get_model_entry(name).create(**kwargs)

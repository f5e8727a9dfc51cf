"""One model registry for every formers domain, in the spirit of timm's ``_registry``.

Each domain package registers factory functions (``name(**kwargs) -> nn.Module``) with :func:`register_model`
and advertises itself through the ``formers.models`` entry-point group, so :func:`list_models` and
:func:`create_model` see every installed domain without core importing any of them (layering: core never
imports a domain).

A :class:`ModelEntry` carries everything :func:`formers.core.builder.build_model` needs to build a name: the
factory, the timm-style ``pretrained_cfg`` (input size, normalisation, classifier name; optional), the checkpoint
filter that maps foreign key formats onto the model's (optional) and, for models that do not describe their own
feature maps, the declared ``feature_info`` used by ``features_only=True``.

Every registered model is a :class:`formers.core.models.FormersModel`: it can build its own example input
and states the output shape it promises, which is what the registry-driven test suite checks for all models.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from torch import Tensor, nn

__all__ = [
    "FilterFn",
    "ModelEntry",
    "register_model",
    "list_models",
    "create_model",
    "get_model_entry",
    "list_domains",
]

ENTRY_POINT_GROUP = "formers.models"

FilterFn = Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]
"""``filter_fn(state_dict, model) -> state_dict``: maps a checkpoint's keys (official repository, timm) onto the
model's and adapts shapes (e.g. resizes position tables to the model's input size)."""


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
    # timm-style pretrained/data config (``input_size``, ``mean``, ``std``, ``crop_pct``, ``classifier``, ``file``);
    # None for models without one (nothing is attached to them)
    pretrained_cfg: dict[str, Any] | None = None
    filter_fn: FilterFn | None = None
    # ``[{"num_chs", "reduction", "module"}, ...]`` for models without their own ``feature_info``: features_only
    # then hooks those modules' outputs
    feature_info: tuple[dict[str, Any], ...] | None = None

    def create(self, **kwargs: Any) -> nn.Module:
        """The bare factory call (no config, checkpoint or features: see :func:`formers.core.builder.build_model`)."""
        return self.factory(**kwargs)


_REGISTRY: dict[str, ModelEntry] = {}
_entry_points_loaded = False


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    domain: str | None = None,
    paper: str | None = None,
    test_kwargs: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    filter_fn: FilterFn | None = None,
    feature_info: Sequence[Mapping[str, Any]] | None = None,
):
    """Register a model factory; usable bare (``@register_model``) or with options.

    The name defaults to the factory's ``__name__`` and the domain to the second component of its module
    (``formers.<domain>.…``). Names are global across domains: registering a name twice is an error, never a silent
    overwrite (re-registering the same factory, as a module reload does, is allowed).
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or factory.__name__
        if model_name in _REGISTRY and _REGISTRY[model_name].factory is not factory:
            other = _REGISTRY[model_name].factory
            raise ValueError(f"model name {model_name!r} is already registered by {other.__module__}.{other.__name__}")
        _REGISTRY[model_name] = ModelEntry(
            name=model_name,
            domain=domain or _domain_of(factory.__module__),
            factory=factory,
            paper=paper,
            test_kwargs=dict(test_kwargs or {}),
            pretrained_cfg=None if pretrained_cfg is None else dict(pretrained_cfg),
            filter_fn=filter_fn,
            feature_info=None if feature_info is None else tuple(dict(info) for info in feature_info),
        )
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


def get_model_entry(name: str, *, domain: str | None = None) -> ModelEntry:
    """The entry of ``name``; with ``domain``, a name of another domain is an error that says where it lives."""
    _load_entry_points()
    entry = _REGISTRY.get(name)
    if entry is not None and (domain is None or entry.domain == domain):
        return entry
    what = "model" if domain is None else f"{domain} model"
    if entry is not None:  # another domain's model: say where it lives
        available = list_models(domain=domain)
        raise ValueError(
            f"unknown {what} {name!r}; available: {_short(available)}. {name!r} is a {entry.domain} model: build it "
            f"with formers.{entry.domain}.create_model or formers.core.builder.build_model (any domain)"
        )
    close = fnmatch.filter(list_models(domain=domain), f"*{name.split('_')[0]}*")[:8]
    hint = f"; similar names: {', '.join(close)}" if close else ""
    where = "" if domain is None else f"domain={domain!r}"
    raise ValueError(f"unknown {what} {name!r}{hint}. See formers.core.registry.list_models({where}).")


def _short(names: list[str], limit: int = 12) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "(none registered)") + more


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model of any domain: :func:`formers.core.builder.build_model` (same arguments)."""
    from formers.core.builder import build_model  # the builder imports this module: import at call time

    return build_model(name, **kwargs)

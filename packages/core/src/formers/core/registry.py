"""One model registry for every formers domain, in the spirit of timm's ``_registry``.

Each domain package registers factory functions (``name(**kwargs) -> nn.Module``) with :func:`register_model`
and advertises itself through the ``formers.models`` entry-point group, so :func:`list_models` and
:func:`create_model` see every installed domain without core importing any of them (layering: core never
imports a domain).

A :class:`ModelEntry` carries everything :func:`formers.core.builder.build_model` needs to build a name: the
factory, the timm-style ``pretrained_cfg`` (input size, normalisation, classifier name; optional), the checkpoint
filter that maps foreign key formats onto the model's (optional) and, for models that do not describe their own
feature maps, the declared ``feature_info`` used by ``features_only=True``.

Names are found case-insensitively (``-`` read as ``_``) and through each entry's ``aliases``, so the papers' and
Time-Series-Library's spellings work (``create_model("iTransformer")``); an unknown name's error suggests the close
ones (``pit_ti`` -> "did you mean 'pit_ti_224'?", :func:`unknown_model_message`, shared by the Python API and the CLIs).

Every registered model is a :class:`formers.core.models.FormersModel`: it can build its own example input
and states the output shape it promises, which is what the registry-driven test suite checks for all models.
"""

from __future__ import annotations

import difflib
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
    "normalize_name",
    "resolve_model_name",
    "suggest_model_names",
    "unknown_model_message",
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
    # other names users type for this model (the paper's, Time-Series-Library's); looked up case-insensitively
    aliases: tuple[str, ...] = ()

    def create(self, **kwargs: Any) -> nn.Module:
        """The bare factory call (no config, checkpoint or features: see :func:`formers.core.builder.build_model`)."""
        return self.factory(**kwargs)


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}  # normalized alias -> registered name
_loaded_entry_points: set[str] = set()  # entry-point names imported so far
_all_entry_points_loaded = False


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
    aliases: Sequence[str] = (),
):
    """Register a model factory; usable bare (``@register_model``) or with options.

    The name defaults to the factory's ``__name__`` and the domain to the second component of its module
    (``formers.<domain>.…``). Names are global across domains: registering a name twice is an error, never a silent
    overwrite (re-registering the same factory, as a module reload does, is allowed). ``aliases`` are other names
    users type (a paper's ``"T2T-ViT-14"``); every name and alias is also found case-insensitively with ``-`` read as
    ``_`` (``"iTransformer"`` is ``itransformer``), so an alias may not collide with another model's name.
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or factory.__name__
        if model_name in _REGISTRY and _REGISTRY[model_name].factory is not factory:
            other = _REGISTRY[model_name].factory
            raise ValueError(f"model name {model_name!r} is already registered by {other.__module__}.{other.__name__}")
        twin = _ALIASES.get(normalize_name(model_name))
        if model_name not in _REGISTRY and twin is not None:
            raise ValueError(f"model name {model_name!r} is already an alias of {twin!r} (names are case-insensitive)")
        for alias in aliases:  # all checked before anything is registered
            _check_alias(alias, model_name)
        _REGISTRY[model_name] = ModelEntry(
            name=model_name,
            domain=domain or _domain_of(factory.__module__),
            factory=factory,
            paper=paper,
            test_kwargs=dict(test_kwargs or {}),
            pretrained_cfg=None if pretrained_cfg is None else dict(pretrained_cfg),
            filter_fn=filter_fn,
            feature_info=None if feature_info is None else tuple(dict(info) for info in feature_info),
            aliases=tuple(aliases),
        )
        _ALIASES.update({normalize_name(alias): model_name for alias in aliases})
        return factory

    return wrap(fn) if fn is not None else wrap


def normalize_name(name: str) -> str:
    """The lookup key of a name: lower case, ``-`` and spaces read as ``_`` (``"T2T-ViT-14"`` -> ``t2t_vit_14``)."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _check_alias(alias: str, name: str) -> None:
    key = normalize_name(alias)
    owner = _ALIASES.get(key) or next((n for n in _REGISTRY if normalize_name(n) == key), None)
    if owner is not None and owner != name:
        raise ValueError(f"alias {alias!r} of {name!r} is already the name or an alias of {owner!r}")


def _domain_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "formers" else parts[0]


def _load_entry_points(domain: str | None = None) -> None:
    """Import the installed domains that advertise models (each once): only ``domain``'s entry point when one is
    named and installed, so one domain's CLI or ``list_models(domain=...)`` does not import the others' libraries."""
    global _all_entry_points_loaded
    if _all_entry_points_loaded:
        return
    points = list(entry_points(group=ENTRY_POINT_GROUP))
    if domain is not None and any(ep.name == domain for ep in points):
        points = [ep for ep in points if ep.name == domain]
    else:
        domain = None
    for ep in points:
        if ep.name not in _loaded_entry_points:
            _loaded_entry_points.add(ep.name)
            import_module(ep.value)
    _all_entry_points_loaded = domain is None


def list_domains() -> list[str]:
    _load_entry_points()
    return sorted({entry.domain for entry in _REGISTRY.values()})


def list_models(pattern: str | None = None, *, domain: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally filtered by a glob ``pattern`` and a ``domain``."""
    _load_entry_points(domain)
    names = [n for n, e in _REGISTRY.items() if domain is None or e.domain == domain]
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return sorted(names)


def resolve_model_name(name: str) -> str | None:
    """The registered name that ``name`` means: itself, or the model it names case-insensitively or by an alias
    (``"iTransformer"`` -> ``itransformer``); ``None`` when it names no model."""
    _load_entry_points()
    return _resolve_loaded(name)


def _resolve_loaded(name: str) -> str | None:
    if name in _REGISTRY:
        return name
    key = normalize_name(name)
    if key in _ALIASES:
        return _ALIASES[key]
    return next((n for n in _REGISTRY if normalize_name(n) == key), None)


def suggest_model_names(name: str, *, domain: str | None = None, limit: int = 5) -> list[str]:
    """Registered names (of ``domain``) close to a mistyped ``name``, best first: names that extend it
    (``pit_ti`` -> ``pit_ti_224``), then :func:`difflib.get_close_matches` over the names and aliases."""
    key = normalize_name(name)
    names = list_models(domain=domain)
    if not key:
        return []
    extending = [n for n in names if n.startswith(key)]
    extending.sort(key=lambda n: (len(n), n))
    candidates = {normalize_name(n): n for n in names}
    candidates.update({a: n for a, n in _ALIASES.items() if n in names})
    close = [candidates[c] for c in difflib.get_close_matches(key, list(candidates), n=limit, cutoff=0.6)]
    return list(dict.fromkeys(extending + close))[:limit]


def unknown_model_message(name: str, *, domain: str | None = None) -> str:
    """``unknown model 'pit_ti'; did you mean pit_ti_224? ...`` -- the one message of the Python API and the CLIs."""
    what = "model" if domain is None else f"{domain} model"
    close = suggest_model_names(name, domain=domain)
    hint = f"; did you mean {close[0]!r}? (similar names: {', '.join(close)})" if close else ""
    where = "" if domain is None else f"domain={domain!r}"
    return f"unknown {what} {name!r}{hint}. See formers.core.registry.list_models({where})."


def get_model_entry(name: str, *, domain: str | None = None) -> ModelEntry:
    """The entry of ``name`` (case-insensitive, aliases included); with ``domain``, a name of another domain is an
    error that says where it lives. An unknown name's error suggests close names (``pit_ti`` -> ``pit_ti_224``)."""
    if domain is not None:  # the domain's own models first: the other domains are imported only for the error
        _load_entry_points(domain)
        resolved = _resolve_loaded(name)
        if resolved is not None and _REGISTRY[resolved].domain == domain:
            return _REGISTRY[resolved]
    resolved = resolve_model_name(name)
    entry = None if resolved is None else _REGISTRY[resolved]
    if entry is not None and (domain is None or entry.domain == domain):
        return entry
    if entry is not None:  # another domain's model: say where it lives
        what = "model" if domain is None else f"{domain} model"
        available = list_models(domain=domain)
        raise ValueError(
            f"unknown {what} {name!r}; available: {_short(available)}. {name!r} is a {entry.domain} model: build it "
            f"with formers.{entry.domain}.create_model or formers.core.builder.build_model (any domain)"
        )
    raise ValueError(unknown_model_message(name, domain=domain))


def _short(names: list[str], limit: int = 12) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "(none registered)") + more


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model of any domain, or load a directory saved by :func:`formers.core.hub.save_pretrained`:
    :func:`formers.core.builder.build_model` (same arguments)."""
    from formers.core.builder import build_model  # the builder imports this module: import at call time

    return build_model(name, **kwargs)

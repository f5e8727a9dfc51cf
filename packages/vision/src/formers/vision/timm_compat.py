"""The formers vision models in timm's registry, so ``timm.create_model`` and ``timm.data`` work with them.

Naming rule: the timm name of a formers model is ``formers_<name>`` (:data:`TIMM_PREFIX`), e.g.
``timm.create_model("formers_pit_ti_224")`` builds formers' ``pit_ti_224``. timm's own entries (``pit_ti_224``,
``swin_tiny_patch4_window7_224``, ...) are never shadowed or overwritten: the prefix keeps the names apart, and a
``formers_*`` name that timm already knows from elsewhere raises instead of replacing it.
``timm.list_models("formers_*")`` lists ours.

Each entry point is a small wrapper registered with timm's public ``register_model`` (its ``__name__`` is the timm
name) that builds through :func:`formers.core.builder.build_model`; its ``pretrained_cfg`` goes through timm's
``generate_default_cfgs`` via this module's ``default_cfgs``, the way timm's own model modules do it, so
``timm.models.get_pretrained_cfg`` and ``timm.data.resolve_data_config`` see it. The wrapper takes timm's
``pretrained`` / ``pretrained_cfg`` / ``pretrained_cfg_overlay`` / ``cache_dir`` keywords; ``pretrained=True`` loads
the local ``pretrained_cfg["file"]`` through the family's checkpoint filter and raises a clear error otherwise (formers
never downloads). ``timm.create_model(..., checkpoint_path=...)`` is timm's own strict loader: it takes formers-format
state dicts; use :func:`formers.vision.create_model` for official/timm keys.

``import formers.vision`` calls :func:`register_timm_models` once; a vision model registered later reaches timm by
calling it again (it only adds what timm lacks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm.models
from timm.models import PretrainedCfg, generate_default_cfgs
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from formers.core.builder import build_model
from formers.core.registry import get_model_entry, list_models

__all__ = ["TIMM_PREFIX", "timm_name", "formers_name", "register_timm_models", "default_cfgs"]

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
        entry = get_model_entry(name)
        cfg = {k: v for k, v in (entry.pretrained_cfg or {}).items() if k in PretrainedCfg.__dataclass_fields__}
        cfg.setdefault("paper_name", entry.paper)
        default_cfgs.update(generate_default_cfgs({tname: cfg}))
        _registered[tname] = timm.models.register_model(_entrypoint(name, entry.paper))
        added.append(tname)
    return added


def _entrypoint(name: str, paper: str | None) -> Callable[..., nn.Module]:
    tname = timm_name(name)

    def entrypoint(
        pretrained: bool = False,
        pretrained_cfg: str | dict[str, Any] | PretrainedCfg | None = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
        cache_dir: Any = None,  # timm's download cache: unused, formers never downloads
        **kwargs: Any,
    ) -> nn.Module:
        if isinstance(pretrained_cfg, PretrainedCfg):
            pretrained_cfg = pretrained_cfg.to_dict()
        elif isinstance(pretrained_cfg, str) and pretrained_cfg:
            raise ValueError(f"{tname} has no pretrained tag {pretrained_cfg!r}: formers ships no weights")
        cfg = resolve_pretrained_cfg(tname, pretrained_cfg or None, pretrained_cfg_overlay).to_dict()
        if pretrained and not cfg.get("file"):
            raise ValueError(
                f"timm.create_model({tname!r}, pretrained=True): formers never downloads weights; pass "
                "pretrained_cfg_overlay={'file': '<local checkpoint>'} (official, timm or formers format)"
            )
        return build_model(name, domain=DOMAIN, pretrained=pretrained, pretrained_cfg_overlay=cfg, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = tname
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"formers.vision model {name!r} (paper: {paper})."
    return entrypoint

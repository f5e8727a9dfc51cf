"""formers.vision: Vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab) on the formers core.

The models are in the formers registry (domain ``vision``; it imports them when first asked) and, after
``import formers.vision``, in timm's as ``formers_<name>``::

    import formers.vision, timm
    model = formers.vision.create_model("pit_ti_224", num_classes=10, checkpoint_path="pit_ti_730.pth")
    same_arch = timm.create_model("formers_pit_ti_224", num_classes=10)

:func:`create_model` is :func:`formers.core.builder.build_model` restricted to the vision models; checkpoint
reading and loading (:func:`load_checkpoint`, :func:`load_into`, :class:`CheckpointError`) come from
:mod:`formers.core.weights`.

The import itself is light: the names above load on first use (PEP 562), and the timm registration happens as
soon as timm is in the process -- at once when it already is, else right after its import -- so ``formers-vision
--help`` (whose script imports this package) starts without timm, torchvision and the models, which were most of
its start-up time.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from formers.core.features import FeatureMapsModel
    from formers.core.weights import CheckpointError, load_checkpoint, load_into
    from formers.vision.api import create_model, list_models, resolve_pretrained_cfg
    from formers.vision.models import make_cfg
    from formers.vision.timm_compat import TIMM_PREFIX, formers_name, register_timm_models, timm_name

# public name -> the module that defines it
_LAZY = {
    "create_model": "formers.vision.api",
    "list_models": "formers.vision.api",
    "resolve_pretrained_cfg": "formers.vision.api",
    "FeatureMapsModel": "formers.core.features",
    "load_checkpoint": "formers.core.weights",
    "load_into": "formers.core.weights",
    "CheckpointError": "formers.core.weights",
    "make_cfg": "formers.vision.models",
    "TIMM_PREFIX": "formers.vision.timm_compat",
    "timm_name": "formers.vision.timm_compat",
    "formers_name": "formers.vision.timm_compat",
    "register_timm_models": "formers.vision.timm_compat",
}

__all__ = [
    "create_model",
    "list_models",
    "resolve_pretrained_cfg",
    "FeatureMapsModel",
    "load_checkpoint",
    "load_into",
    "CheckpointError",
    "make_cfg",
    "TIMM_PREFIX",
    "timm_name",
    "formers_name",
    "register_timm_models",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    _register_in_timm_when_ready()  # the module may have brought timm in while one of ours was half imported
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def _initializing(name: str, done: str | None) -> bool:
    module = sys.modules.get(name)
    return name != done and getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_in_timm_when_ready(done: str | None = None) -> None:
    """Register the models in timm once timm is imported and none of our modules is half imported (``done``: the
    module whose import just finished, still flagged as initializing by the import system)."""
    if _watcher not in sys.meta_path or "timm" not in sys.modules:
        return
    watched = [name for name in sys.modules if name == "timm" or name.startswith(f"{__name__}.")]
    if any(_initializing(name, done) for name in watched):
        return  # a module still importing: the end of its import calls back
    sys.meta_path.remove(_watcher)
    from formers.vision.timm_compat import register_timm_models

    register_timm_models()


class _AfterImport(MetaPathFinder):
    """Until the registration is done: after ``timm`` or a ``formers.vision.*`` module is imported, try it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != "timm" and not name.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: Any) -> None:
            try:
                exec_module(module)
            finally:
                vars(loader).pop("exec_module", None)  # the loader is itself again
            _register_in_timm_when_ready(done=name)

        try:
            loader.exec_module = exec_then_register
        except AttributeError:  # a loader that takes no attributes: a later import of ours tries again
            pass
        return spec


_watcher = _AfterImport()
sys.meta_path.insert(0, _watcher)
_register_in_timm_when_ready()  # timm already imported: register now (as before; its import cost is paid)

"""One backend setting for every module that calls attention, and :func:`set_attention_backend` to set a model's.

Every module that calls :func:`~formers.core.attention.attention` or :func:`~formers.core.varlen.varlen_attention`
inherits :class:`AttentionBackendMixin` and passes ``backend=self.backend`` to each call, dense or packed; a name is
checked against the registry when it is set, not at the first forward.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from formers.core.attention.backends import check_backend_name

__all__ = ["AttentionBackendMixin", "set_attention_backend", "attention_modules"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class AttentionBackendMixin:
    """Mixin for modules that call attention: ``backend`` is the name their calls pass as ``backend=``.

    ``"auto"`` (the default) lets each call pick the fastest backend that can serve it (and follows
    :func:`~formers.core.attention.use_backend`); any other name forces that backend on every call of the module,
    dense or packed, and a call it cannot serve raises :class:`~formers.core.attention.BackendUnavailableError`.
    """

    _attention_backend: str = "auto"

    @property
    def backend(self) -> str:
        return self._attention_backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._attention_backend = check_backend_name(name)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every module of ``model`` (itself included) that calls attention."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionBackendMixin)]


def set_attention_backend(model: ModuleT, name: str) -> ModuleT:
    """Set the attention backend of every attention-calling module of ``model`` to ``name``; returns ``model``.

    ``name`` is checked first: an unknown name raises ``ValueError`` listing the registered ones, and so does a model
    without any module that calls softmax attention (Autoformer's auto-correlation, linear attention...), where the
    setting would silently do nothing. ``"auto"`` restores per-call selection.
    """
    check_backend_name(name)
    modules = attention_modules(model)
    if not modules:
        raise ValueError(
            f"set_attention_backend: {type(model).__name__} has no module that calls attention() or "
            "varlen_attention() (its attention is not softmax attention), so a backend would have no effect"
        )
    for _, module in modules:
        module.backend = name
    return model

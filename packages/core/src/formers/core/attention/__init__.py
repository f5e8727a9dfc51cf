"""Attention with pluggable backends: ``attention(q, k, v, ..., backend="auto")``, ``varlen_attention(...)`` for
packed tokens (:mod:`formers.core.varlen`), one registry of backends for both, and
``set_attention_backend(model, name)`` to route every attention call of a model.

``python -m formers.core.attention`` lists the backends and why any is unavailable on this machine.
"""

from formers.core.attention.api import (
    BackendInfo,
    attention,
    available_backends,
    forced_backend,
    list_backends,
    mask_to_bias,
    use_backend,
)
from formers.core.attention.backends import (
    AttentionBackend,
    AttentionCall,
    BackendUnavailableError,
    backend_names,
    get_backend,
    register_backend,
)
from formers.core.attention.modules import AttentionBackendMixin, attention_modules, set_attention_backend

__all__ = [
    "attention",
    "use_backend",
    "forced_backend",
    "mask_to_bias",
    "list_backends",
    "available_backends",
    "BackendInfo",
    "AttentionBackend",
    "AttentionCall",
    "BackendUnavailableError",
    "register_backend",
    "get_backend",
    "backend_names",
    "AttentionBackendMixin",
    "attention_modules",
    "set_attention_backend",
]

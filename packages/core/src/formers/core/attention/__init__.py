"""Attention with pluggable backends: ``attention(q, k, v, ..., backend="auto")``.

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
    get_backend,
    register_backend,
)

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
]

"""Input checks shared by the layers: fail early with a message that names the layer and the expected layout."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_tokens"]


def check_tokens(owner: str, name: str, x: Tensor, dim: int) -> None:
    """Require a floating ``(batch, length, dim)`` tensor; raise ``TypeError`` / ``ValueError`` otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{owner}: {name} must have rank 3 (batch, length, {dim}), got shape {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"{owner}: {name} must have {dim} channels in its last dim, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating tensor, got {x.dtype}")

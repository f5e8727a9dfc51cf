"""Input checks shared by the layers: fail early with a message that names the layer and the expected layout."""

from __future__ import annotations

from torch import Tensor

from formers.kernels.masks import check_key_padding_mask

__all__ = ["check_input", "check_tokens", "check_key_padding_mask"]


def check_input(name: str, x: Tensor, *, ndim: int, floating: bool | None = None, dims: str = "") -> None:
    """Raise a clear error when ``x`` is not a tensor of rank ``ndim`` (and of the right dtype kind).

    Args:
        dims: the expected layout for the message, e.g. ``"(batch, length)"``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have rank {ndim} {dims}, got shape {tuple(x.shape)}".replace("  ", " "))
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be an integer tensor (token ids), got {x.dtype}")


def check_tokens(owner: str, name: str, x: Tensor, dim: int) -> None:
    """Require a floating ``(batch, length, dim)`` tensor; raise ``TypeError`` / ``ValueError`` otherwise."""
    check_input(f"{owner}: {name}", x, ndim=3, dims=f"(batch, length, {dim})")
    if x.shape[-1] != dim:
        raise ValueError(f"{owner}: {name} must have {dim} channels in its last dim, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating tensor, got {x.dtype}")

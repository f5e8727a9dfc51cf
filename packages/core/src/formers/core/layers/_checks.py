"""Input checks shared by the layers: fail early with a message that names the layer and the expected layout."""

from __future__ import annotations

from torch import Tensor

from formers.kernels.masks import check_key_padding_mask

__all__ = [
    "check_input",
    "check_tokens",
    "check_key_padding_mask",
    "check_positive",
    "check_probability",
    "resolve_head_dim",
]


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


def check_positive(owner: str, **sizes: int | None) -> None:
    """Raise ``ValueError`` naming the argument when a given size is not a positive int (``None`` is skipped)."""
    for name, size in sizes.items():
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"{owner}: {name} must be a positive int, got {size!r}")


def check_probability(owner: str, **probabilities: float) -> None:
    """Raise ``ValueError`` naming the argument when a dropout probability is outside ``[0, 1)``."""
    for name, p in probabilities.items():
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{owner}: {name} must be in [0, 1), got {p!r}")


def resolve_head_dim(owner: str, dim: int, num_heads: int, head_dim: int | None = None) -> int:
    """Check ``dim`` / ``num_heads`` (/ ``head_dim``) and return the head width (default ``dim // num_heads``)."""
    check_positive(owner, dim=dim, num_heads=num_heads, head_dim=head_dim)
    if head_dim is not None:
        return head_dim
    if dim % num_heads != 0:
        raise ValueError(f"{owner}: dim {dim} is not divisible by num_heads {num_heads}")
    return dim // num_heads

"""Token embeddings: patches of 1-D/2-D/3-D signals (:class:`PatchEmbed`) and positional embeddings.

Positional embeddings add to their input: ``x + pos[offset : offset + length]``; ``offset`` serves decoding with a
key/value cache and prefix tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from formers.core.layers._checks import check_tokens
from formers.core.layers.create import LayerType, get_norm_layer

__all__ = [
    "PatchEmbed",
    "sinusoidal_embedding",
    "sinusoidal_embedding_2d",
    "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding",
]

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _ntuple(name: str, value: int | Sequence[int], n: int) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"PatchEmbed: {name} must be a positive int or {n} positive ints, got {value!r}")
    return values


class PatchEmbed(nn.Module):
    """Split a signal into patches and project each to ``embed_dim`` with one strided convolution (ViT, PatchTST).

    Patches may overlap (``stride < patch_size``, as in T2T-ViT or PatchTST) or leave gaps (``stride > patch_size``).
    The input must tile exactly: ``(size - patch_size) % stride == 0`` along every axis; pad or crop it beforehand.

    Args:
        patch_size: patch extent, an int or one int per spatial axis.
        in_chans: input channels.
        embed_dim: output token width.
        ndim: number of spatial axes: 1 (sequences), 2 (images) or 3 (volumes, videos).
        stride: patch stride (default ``patch_size``: non-overlapping patches).
        input_size: spatial size of the expected input; when given, sets :attr:`grid_size` and :attr:`num_patches`.
        bias: add a bias to the projection.
        norm_layer: optional norm applied to the tokens.

    Shapes:
        - input: ``(batch, in_chans, *spatial)`` with ``ndim`` spatial axes (channels first, like ``nn.ConvNd``)
        - output: tokens ``(batch, num_patches, embed_dim)`` in row-major grid order, and the grid size
          ``tuple[int, ...]`` of length ``ndim``, with ``num_patches = prod(grid)``
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        ndim: int = 2,
        stride: int | Sequence[int] | None = None,
        input_size: int | Sequence[int] | None = None,
        bias: bool = True,
        norm_layer: LayerType | None = None,
    ) -> None:
        super().__init__()
        if ndim not in _CONVS:
            raise ValueError(f"PatchEmbed: ndim must be 1, 2 or 3, got {ndim}")
        self.ndim = ndim
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.patch_size = _ntuple("patch_size", patch_size, ndim)
        self.stride = self.patch_size if stride is None else _ntuple("stride", stride, ndim)
        self.proj = _CONVS[ndim](in_chans, embed_dim, self.patch_size, stride=self.stride, bias=bias)
        self.norm = get_norm_layer(norm_layer)(embed_dim) if norm_layer is not None else nn.Identity()
        self.grid_size: tuple[int, ...] | None = None
        self.num_patches: int | None = None
        if input_size is not None:
            self.grid_size = self.grid_size_for(_ntuple("input_size", input_size, ndim))
            self.num_patches = math.prod(self.grid_size)

    def grid_size_for(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """The patch grid of an input of spatial size ``input_size``; raises ``ValueError`` if it does not tile."""
        grid = []
        for axis, (size, patch, stride) in enumerate(zip(input_size, self.patch_size, self.stride, strict=True)):
            if size < patch or (size - patch) % stride != 0:
                raise ValueError(
                    f"PatchEmbed: input size {tuple(input_size)} does not tile into patches of {self.patch_size} with "
                    f"stride {self.stride}: axis {axis} has size {size}, need size >= {patch} and "
                    f"(size - {patch}) divisible by {stride}"
                )
            grid.append((size - patch) // stride + 1)
        return tuple(grid)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        self._check_input(x)
        grid = self.grid_size_for(x.shape[2:])
        x = self.proj(x).flatten(2).transpose(1, 2)  # (b, c, *grid) -> (b, n, c)
        return self.norm(x), grid

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"PatchEmbed: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != self.ndim + 2:
            layout = ("length",), ("height", "width"), ("depth", "height", "width")
            dims = ", ".join(("batch", "channels") + layout[self.ndim - 1])
            raise ValueError(f"PatchEmbed: input must have rank {self.ndim + 2} ({dims}), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"PatchEmbed: expected {self.in_chans} input channels (dim 1, channels first), got shape "
                f"{tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"PatchEmbed: input must be a floating tensor, got {x.dtype}")

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, patch_size={self.patch_size}, stride={self.stride}, grid_size={self.grid_size}"


def sinusoidal_embedding(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) positions, Vaswani et al. 2017, §3.5.

    ``pe[p, 2i] = sin(p / base^(2i/dim))`` and ``pe[p, 2i + 1] = cos(p / base^(2i/dim))`` (interleaved).

    Shapes:
        - positions: ``(*)``
        - output: ``(*, dim)``, float32
    """
    if dim % 2 != 0:
        raise ValueError(f"sinusoidal_embedding: dim must be even, got {dim}")
    angles = _angles(positions, dim // 2, base)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def sinusoidal_embedding_2d(grid_size: Sequence[int], dim: int, base: float = 10000.0) -> Tensor:
    """Fixed 2-D sin-cos embedding of a ``(height, width)`` grid, laid out exactly as MAE's ``get_2d_sincos_pos_embed``.

    The first ``dim / 2`` channels encode the column, the last ``dim / 2`` the row; each half is
    ``[sin(p ω_0 .. p ω_{k-1}), cos(p ω_0 .. p ω_{k-1})]`` with ``ω_i = base^(-i/k)``, ``k = dim / 4``
    (concatenated, not interleaved). No class-token row: prepend zeros if you need one, as MAE does.

    Shapes:
        - output: ``(height * width, dim)``, row-major like :class:`PatchEmbed`'s tokens, float32
    """
    if dim % 4 != 0:
        raise ValueError(f"sinusoidal_embedding_2d: dim must be divisible by 4, got {dim}")
    height, width = grid_size
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")

    def axis(pos: Tensor) -> Tensor:
        angles = _angles(pos.flatten(), dim // 4, base)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)

    return torch.cat((axis(cols), axis(rows)), dim=-1)


def _angles(positions: Tensor, num_freqs: int, base: float) -> Tensor:
    """``positions[..., None] * base^(-i / num_freqs)`` for ``i < num_freqs``, in float32."""
    freqs = base ** (-torch.arange(num_freqs, dtype=torch.float32, device=positions.device) / num_freqs)
    return positions.to(torch.float32)[..., None] * freqs


class SinusoidalPositionalEmbedding(nn.Module):
    """Add the fixed sinusoidal positional embedding of Vaswani et al. 2017 (no parameters, no length limit).

    Args:
        dim: token width (even).
        base: wavelength base, 10000 in the paper.

    Shapes:
        - input: ``(batch, length, dim)``
        - output: ``(batch, length, dim)``, ``x + pe[offset : offset + length]``
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"SinusoidalPositionalEmbedding: dim must be even, got {dim}")
        self.dim = dim
        self.base = base

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        check_tokens(type(self).__name__, "x", x, self.dim)
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        return x + sinusoidal_embedding(positions, self.dim, self.base).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}"


class LearnedPositionalEmbedding(nn.Module):
    """Add a learned embedding per position (BERT, ViT), initialised with a truncated normal of std 0.02.

    Args:
        num_positions: the longest sequence it can embed.
        dim: token width.

    Shapes:
        - input: ``(batch, length, dim)`` with ``offset + length <= num_positions``
        - output: ``(batch, length, dim)``, ``x + weight[offset : offset + length]``
    """

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.num_positions = num_positions
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(num_positions, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        check_tokens(type(self).__name__, "x", x, self.dim)
        end = offset + x.shape[1]
        if offset < 0 or end > self.num_positions:
            raise ValueError(
                f"{type(self).__name__}: positions [{offset}, {end}) exceed num_positions={self.num_positions}; "
                "shorten the sequence or build the embedding with more positions"
            )
        return x + self.weight[offset:end]

    def extra_repr(self) -> str:
        return f"num_positions={self.num_positions}, dim={self.dim}"

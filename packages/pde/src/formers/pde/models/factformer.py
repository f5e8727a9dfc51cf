"""FactFormer (Li, Shu & Barati Farimani, "Scalable Transformer for PDE Surrogate Modeling", NeurIPS 2023,
arXiv 2305.17560): an axial factorized kernel integral with one learned low-rank kernel per spatial axis.

Follows the official code, BaratiLab/FactFormer @ c9801d1 (``libs/factorization_module.py`` ``FABlock2D/3D`` and
``PoolingReducer``, ``libs/attention.py::LowRankKernel``, ``libs/positional_encoding_module.py`` ``RotaryEmbedding`` and
``GaussianFourierFeatureTransform``, ``libs/basics.py`` ``GroupNorm``/``GeAct``/``MLP``/``PreNorm``, and the models of
``examples/darcy2d_fact.py``, ``examples/turb_ns2d_fact_lm.py``, ``examples/threed_smokesim_fact_lm.py`` with
``configs/*.yml``). One factorized attention block (:class:`FABlock2D`, :class:`FABlock3D`) on a channels-last grid
``u (b, n_1, ..., n_d, dim)``:

    u   = LayerNorm(u);   v = Linear(dim -> heads * dim_head, no bias)(u)
    u_a = PoolingReducer_a(Linear(dim -> dim, no bias)(u))       for each axis a: a function of x_a alone,
          PoolingReducer = Linear (no bias) -> mean over every other spatial axis -> LayerNorm -> Linear -> GEGLU
          -> Linear                                              (b, n_a, latent_dim)
    k_a = (RoPE(q(u_a)) RoPE(k(u_a))^T) * scaling                per head, (b, heads, n_a, n_a); q, k: Linear (no
          bias) to dim_head * kernel_multiplier per head, RoPE on the axis coordinate (min_freq 1/64), no softmax,
          scaling 1 unless kernel_multiplier > 4 (then 1 / sqrt(dim_head * kernel_multiplier))
    w   = k_1 x_1 k_2 x_2 ... k_d x_d v                          the axial kernel integral (einsum per axis), i.e.
          the dense kernel K(x, x') = prod_a k_a(x_a, x'_a) applied at O(sum_a n_a * N) instead of O(N^2) cost
    out = Linear -> GELU -> Linear (no biases) of GroupNorm_heads(w)

The head-group norm normalises each head's channels over all positions (no affine, unbiased variance, eps 1e-8;
computed as one fused ``layer_norm`` on the heads-first layout, rescaled from the biased to the unbiased variance).
**Departure from HEAD**: the official ``GroupNorm(domain_wise=True)`` added in c9801d1 returns the grid *flattened*
(``(b, n_1 * ... * n_d, C)``), so the examples' residual ``FABlock(u) + u`` fails with a shape error; here the same
values come back in the grid's shape (the intent; the published checkpoints predate that commit).

Exact algebraic shortcut (not a departure): ``to_in`` and the reducers' first ``Linear`` have no bias, so they commute
with the mean; the block averages the normalised grid first and applies both linear maps to the ``n_a`` averaged
rows, instead of to all ``N`` points as the official code does. The result is the same up to float rounding; the
parameters (and their names, via :func:`checkpoint_filter_fn`) are unchanged.

Models (the official example scripts; ``x`` channels last, the model makes its own coordinates):

- :class:`FactFormerDarcy2D` (``factformer_darcy``; dim 128, depth 3, 12 x 64 heads, kernel_multiplier 2):
  ``Linear(in -> dim)`` -> depth x [``u += Linear(GaussianFourier(x, y))``; ``u = FABlock2D(u) + u``] -> a conv
  down (stride 2) / nearest-up block concatenated with the encoder output -> GroupNorm + two 1x1 convs.
  Coordinates ``linspace(0, 1, n)`` per axis (the official Darcy script), Gaussian features of scale 1.
- :class:`FactFormerKolmogorov2D` (``factformer_kolmogorov``; dim 128, depth 4, 8 x 64 heads, kernel_multiplier 2,
  latent_multiplier 2): ``x (B, H, W, T_in)`` holds the ``T_in`` past vorticity frames as channels (official: 10);
  ``Linear(T_in -> dim)`` -> the encoder -> ``Linear(dim -> latent)`` -> per latent step ``t``:
  ``z = z + e_t; z = z + PreNorm-MLP(z)``, each step decoded (GroupNorm + grouped 1x1 convs) to the next frame.
  Output ``(B, H, W, T_out)``: frame ``t`` of channel ``t``, ``T_out = out_channels`` = the number of latent steps
  (official ``max_latent_steps`` 4; its 16-frame test horizon is 4 such calls, each fed its own predictions, which is
  the task's business). ``forward(x, latent_steps=k)`` returns the first ``k`` frames (the official curriculum).
  Coordinates ``linspace(0, 2 pi, n)`` (official KM2d script: the endpoint is included although the domain is
  periodic; kept), Gaussian features of scale 8.
- :class:`FactFormerSmoke3D` (``factformer_3d``; the Smoke3d config: dim 128, depth 3, 6 x 64 heads,
  kernel_multiplier 3, latent_multiplier 1.5, 4 fields, zero padding 2): ``x (B, X, Y, Z, T_in * fields)``, frame-major
  channels (channel ``t * fields + f``), -> ``(B, X, Y, Z, T_out * fields)`` in the same layout. Per-field 1x1 conv
  over time -> padded encoder on ``linspace(0, 8, n)`` extended by ``8 + dx * (1..padding)``, ``dx = 8 / n`` (official)
  -> crop -> conv down/up block -> concat -> latent stepping as in 2-D. (The official script imports its Fourier
  features from ``nn_module.positional_encoding_module``, absent from the repository; ``libs/`` has the same class.)

Any resolution: RoPE and the Gaussian features use the coordinates of the grid given, the reducers average, and the
conv block upsamples (nearest) to the input's exact size. The official 2-D block upsamples to the configured
``(resolution, resolution)`` and the 3-D one by ``scale_factor=2``: the same at the configured size, resp. at even
sizes, but the official ones fail (concat shape error) at any other size, resp. at odd sizes; here there is no
multiple-of constraint. Every spatial axis needs at least 2 points (``ValueError`` otherwise).

The Gaussian Fourier matrices are fixed random draws (official: ``nn.Parameter(requires_grad=False)``); here they are
buffers, saved in the state dict. Trainable parameter counts equal the official classes': FABlock2D (dim 128, 12 x 64,
km 2) 1,148,416; FABlock3D (dim 128, 6 x 64, km 3) 1,214,592; factformer_darcy 3,749,953; factformer_kolmogorov
3,463,489; factformer_3d 4,501,764 (tests).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.layers._checks import check_positive
from formers.core.models import FormersModel
from formers.core.registry import register_model

__all__ = [
    "RotaryEmbedding1d",
    "GaussianFourierFeatures",
    "PoolingReducer",
    "LowRankKernel",
    "HeadGroupNorm",
    "FABlock",
    "FABlock2D",
    "FABlock3D",
    "FactorizedEncoder",
    "FactFormerDarcy2D",
    "FactFormerKolmogorov2D",
    "FactFormerSmoke3D",
    "axis_coordinates",
    "factorized_integral",
    "checkpoint_filter_fn",
    "factformer_darcy",
    "factformer_kolmogorov",
    "factformer_3d",
]

_PAPER = "Li, Shu & Barati Farimani 2023, Scalable Transformer for PDE Surrogate Modeling (FactFormer)"
_ROPE_MIN_FREQ = 1 / 64  # official LowRankKernel: RotaryEmbedding(..., min_freq=1/64): angle = x * 64 * inv_freq
_ROPE_BASE = 10000.0
_QK_INIT_GAIN = 0.02  # official LowRankKernel: xavier_uniform_(gain=0.02) on to_q / to_k
_GROUP_NORM_EPS = 1e-8  # official basics.GroupNorm default
_HEAD_GROUPS = 8  # the official heads' GroupNorm(8, ...) and grouped conv (groups=8)
_AXES = "ijklmn"  # einsum letters of the spatial axes (b, h, c, p are taken)


def axis_coordinates(
    sizes: Sequence[int], length: float, *, device: torch.device, dtype: torch.dtype, padding: int = 0
) -> list[Tensor]:
    """``linspace(0, length, n)`` per axis (endpoints included, as the official scripts), extended by ``padding``
    points ``length + dx * (1..padding)`` with ``dx = length / n`` (the official Smoke3d padding rule)."""
    coords = []
    for n in sizes:
        x = torch.linspace(0.0, length, n, device=device, dtype=dtype)
        if padding:
            dx = length / n
            x = torch.cat([x, length + dx * torch.arange(1, padding + 1, device=device, dtype=dtype)])
        coords.append(x)
    return coords


def _coord_dtype(x: Tensor) -> torch.dtype:
    """Coordinates (and RoPE angles, Fourier features) in at least float32, also for half-precision inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def factorized_integral(kernels: Sequence[Tensor], v: Tensor) -> Tensor:
    """Apply ``k_1 x_1 ... k_d x_d`` to ``v``: ``w[x] = sum_x' prod_a k_a[x_a, x'_a] v[x']`` per head.

    Shapes: ``kernels[a]`` ``(b, heads, n_a, n_a)``, ``v`` ``(b, heads, n_1, ..., n_d, c)`` (heads first, as the
    official einsums: the first contraction is then a plain batched matmul) -> same as ``v``.
    """
    axes = _AXES[: len(kernels)]
    for a, kernel in enumerate(kernels):
        out = axes[:a] + "p" + axes[a + 1 :]
        v = torch.einsum(f"bhp{axes[a]},bh{axes}c->bh{out}c", kernel, v)
    return v


class RotaryEmbedding1d(nn.Module):
    """Rotary position embedding of one coordinate (official ``RotaryEmbedding`` + ``apply_rotary_pos_emb``).

    Angles ``x * scale / min_freq * inv_freq_j``, ``inv_freq_j = base^(-2j / dim)``, repeated twice; the rotation pairs
    channel ``j`` with ``j + dim / 2`` (``rotate_half``).
    """

    def __init__(self, dim: int, min_freq: float = _ROPE_MIN_FREQ, scale: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"RotaryEmbedding1d: dim must be even, got {dim}")
        self.dim, self.coord_scale = dim, scale / min_freq
        # derived from dim alone: not saved (the official buffer 'pos_emb.inv_freq' is dropped by the filter)
        inv_freq = 1.0 / (_ROPE_BASE ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def angles(self, coords: Tensor) -> Tensor:
        """``coords (n,)`` -> ``(n, dim)``."""
        freqs = torch.outer(coords * self.coord_scale, self.inv_freq.to(coords.dtype))
        return torch.cat([freqs, freqs], dim=-1)

    @staticmethod
    def rotate(x: Tensor, angles: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # angles in >= float32 (up to ~64 rad)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class GaussianFourierFeatures(nn.Module):
    """``[sin(2 pi x B), cos(2 pi x B)]`` of the grid's coordinates, ``B ~ N(0, scale^2)`` fixed (official
    ``GaussianFourierFeatureTransform``, learnable=False): ``coords`` per axis -> ``(n_1, ..., n_d, 2 * mapping_size)``.
    """

    def __init__(self, in_dim: int, mapping_size: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("B", torch.randn(in_dim, mapping_size) * scale)

    def forward(self, coords: Sequence[Tensor]) -> Tensor:
        grid = torch.stack(torch.meshgrid(*coords, indexing="ij"), dim=-1)
        proj = 2 * math.pi * (grid @ self.B.to(grid.dtype))
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class _PreNormMLP(nn.Module):
    """``fc2(act(fc1(LayerNorm(x))))`` (official ``PreNorm(MLP([in, hidden, out]))``); ``gated``: GEGLU, i.e. fc1 gives
    ``2 * hidden`` and ``act = GELU(first half) * second half`` (official ``GeAct``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim * (2 if gated else 1))
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(self.norm(x))
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = F.gelu(gate) * value
        else:
            h = F.gelu(h)
        return self.fc2(h)


class PoolingReducer(nn.Module):
    """The learnable projection of a grid function to a 1-D function of one axis (official ``PoolingReducer``):
    ``Linear (no bias) -> mean over the other axes -> PreNorm GEGLU MLP``.

    ``forward`` takes the rows *already averaged* over the other axes, ``(b, n_a, in_dim)``: the bias-free ``proj``
    commutes with the mean (see the module docstring), so :class:`FABlock` averages first.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim, bias=False)
        # official PreNorm(in_dim, MLP([hidden, hidden, out])): the norm acts on hidden_dim features (== in_dim there)
        self.mlp = _PreNormMLP(hidden_dim, hidden_dim, out_dim, gated=True)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.mlp(self.proj(pooled))


class LowRankKernel(nn.Module):
    """One axis' kernel ``k(x, x') = sum_j RoPE(q(u))_j(x) RoPE(k(u))_j(x') * scaling`` per head, no softmax (official
    ``LowRankKernel`` with ``residual=False``, ``softmax=False``, ``pos_dim=1``): ``(b, n, dim), (n,) -> (b, h, n, n)``.
    """

    def __init__(self, dim: int, kernel_dim: int, heads: int, *, scaling: float, use_rope: bool = True) -> None:
        super().__init__()
        self.heads, self.kernel_dim, self.scaling = heads, kernel_dim, scaling
        self.to_q = nn.Linear(dim, kernel_dim * heads, bias=False)
        self.to_k = nn.Linear(dim, kernel_dim * heads, bias=False)
        self.rope = RotaryEmbedding1d(kernel_dim) if use_rope else None
        nn.init.xavier_uniform_(self.to_q.weight, gain=_QK_INIT_GAIN)
        nn.init.xavier_uniform_(self.to_k.weight, gain=_QK_INIT_GAIN)

    def forward(self, u: Tensor, coords: Tensor) -> Tensor:
        b, n, _ = u.shape
        q = self.to_q(u).view(b, n, self.heads, self.kernel_dim).transpose(1, 2)
        k = self.to_k(u).view(b, n, self.heads, self.kernel_dim).transpose(1, 2)
        if self.rope is not None:
            angles = self.rope.angles(coords)
            q, k = self.rope.rotate(q, angles), self.rope.rotate(k, angles)
        return (q @ k.transpose(-1, -2)) * self.scaling


class HeadGroupNorm(nn.Module):
    """Each of ``groups`` channel groups normalised over all positions and its channels, no affine; the grid's shape
    is kept (official ``GroupNorm(domain_wise=True, affine=False)`` minus its flattening defect): unbiased variance,
    ``(x - mean) / sqrt(var + eps)``. ``(b, *spatial, groups * c)`` -> same."""

    def __init__(self, groups: int, eps: float = _GROUP_NORM_EPS) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps

    def forward(self, x: Tensor) -> Tensor:
        grouped = x.unflatten(-1, (self.groups, -1)).movedim(-2, 1)  # (b, g, *spatial, c)
        return self.normalize(grouped).movedim(1, -2).flatten(-2)

    def normalize(self, grouped: Tensor) -> Tensor:
        """The same on heads-first ``(b, g, *spatial, c)``.

        One fused ``layer_norm`` over the trailing dims (biased variance) rescaled to the unbiased one:
        ``(x - m) / sqrt(var_u + eps) = sqrt((M - 1) / M) * (x - m) / sqrt(var_b + eps (M - 1) / M)``, ``M`` elements.
        """
        size = math.prod(grouped.shape[2:])
        if size < 2:  # unbiased variance undefined (official: nan); nothing to normalise over
            return grouped - grouped
        shrink = (size - 1) / size
        return F.layer_norm(grouped, grouped.shape[2:], eps=self.eps * shrink) * math.sqrt(shrink)


class FABlock(nn.Module):
    """Factorized attention block on a ``spatial_dims``-D grid (:class:`FABlock2D`, :class:`FABlock3D`).

    Args:
        dim: channels of ``u``.
        heads: kernel heads.
        dim_head: value channels per head.
        latent_dim: width of the 1-D axis functions (default ``dim``; the official examples pass ``dim``).
        dim_out: output channels (default ``dim``).
        kernel_multiplier: q/k width per head = ``dim_head * kernel_multiplier``.
        use_rope: rotary embedding of the axis coordinate on q and k.
        scaling_factor: kernel scaling when ``kernel_multiplier <= 4`` (official default 1).

    ``forward(u, coords=None)``: ``u (b, n_1, ..., n_d, dim)``, ``coords`` one 1-D tensor per axis (default
    ``linspace(0, 1, n_a)``) -> ``(b, n_1, ..., n_d, dim_out)``.
    """

    spatial_dims: int = 0

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        latent_dim: int | None = None,
        dim_out: int | None = None,
        kernel_multiplier: int = 3,
        use_rope: bool = True,
        scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        latent_dim, dim_out = latent_dim or dim, dim_out or dim
        sizes = {"dim": dim, "heads": heads, "dim_head": dim_head, "latent_dim": latent_dim, "dim_out": dim_out}
        check_positive(name, kernel_multiplier=kernel_multiplier, **sizes)
        if self.spatial_dims < 1:
            raise TypeError(f"{name}: use FABlock2D or FABlock3D (or a subclass that sets spatial_dims)")
        kernel_dim = dim_head * kernel_multiplier
        if use_rope and kernel_dim % 2:
            raise ValueError(f"{name}: dim_head * kernel_multiplier must be even for RoPE, got {kernel_dim}")
        self.dim, self.heads, self.dim_head, self.dim_out = dim, heads, dim_head, dim_out
        # official: 1/sqrt(d) only for kernel_multiplier > 4 (or softmax, never used), else scaling_factor
        scaling = 1 / math.sqrt(kernel_dim) if kernel_multiplier > 4 else scaling_factor
        self.in_norm = nn.LayerNorm(dim)
        self.to_v = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_in = nn.Linear(dim, dim, bias=False)
        self.reducers = nn.ModuleList(PoolingReducer(dim, dim, latent_dim) for _ in range(self.spatial_dims))
        self.kernels = nn.ModuleList(
            LowRankKernel(latent_dim, kernel_dim, heads, scaling=scaling, use_rope=use_rope)
            for _ in range(self.spatial_dims)
        )
        self.to_out = nn.Sequential(
            HeadGroupNorm(heads),
            nn.Linear(heads * dim_head, dim_out, bias=False),
            nn.GELU(),
            nn.Linear(dim_out, dim_out, bias=False),
        )

    def forward(self, u: Tensor, coords: Sequence[Tensor] | None = None) -> Tensor:
        coords = self._check(u, coords)
        u = self.in_norm(u)
        v = self.to_v(u).unflatten(-1, (self.heads, self.dim_head)).movedim(-2, 1)  # (b, h, *spatial, c)
        w = factorized_integral(self.axis_kernels(u, coords), v)
        norm, fc1, act, fc2 = self.to_out  # the norm on the heads-first layout, then back to channels-last
        return fc2(act(fc1(norm.normalize(w).movedim(1, -2).flatten(-2))))

    def axis_functions(self, u: Tensor) -> list[Tensor]:
        """The 1-D functions ``u_a (b, n_a, latent_dim)`` of the (normalised) grid ``u``."""
        spatial = range(1, self.spatial_dims + 1)
        out = []
        for a, reducer in zip(spatial, self.reducers, strict=True):
            pooled = u.mean(dim=tuple(s for s in spatial if s != a))  # mean first: to_in / proj have no bias
            out.append(reducer(self.to_in(pooled)))
        return out

    def axis_kernels(self, u: Tensor, coords: Sequence[Tensor]) -> list[Tensor]:
        """The per-axis kernels ``k_a (b, heads, n_a, n_a)`` of the (normalised) grid ``u``."""
        return [kernel(f, x) for kernel, f, x in zip(self.kernels, self.axis_functions(u), coords, strict=True)]

    def _check(self, u: Tensor, coords: Sequence[Tensor] | None) -> list[Tensor]:
        name, d = type(self).__name__, self.spatial_dims
        layout = f"(batch, {', '.join(f'n_{a + 1}' for a in range(d))}, {self.dim})"
        if not isinstance(u, Tensor):
            raise TypeError(f"{name}: u must be a torch.Tensor, got {type(u).__name__}")
        if not u.is_floating_point():
            raise TypeError(f"{name}: u must be a floating tensor, got {u.dtype}")
        if u.ndim != d + 2 or u.shape[-1] != self.dim:
            raise ValueError(f"{name}: u must be {layout} channels-last, got {tuple(u.shape)}")
        sizes = u.shape[1:-1]
        if coords is None:
            return axis_coordinates(sizes, 1.0, device=u.device, dtype=_coord_dtype(u))
        coords = list(coords)
        if len(coords) != d or any(x.ndim != 1 or x.numel() != n for x, n in zip(coords, sizes, strict=True)):
            got = [tuple(x.shape) for x in coords]
            raise ValueError(f"{name}: coords must be {d} 1-D tensors of lengths {tuple(sizes)}, got shapes {got}")
        return coords


class FABlock2D(FABlock):
    """:class:`FABlock` on ``(b, nx, ny, dim)`` grids (official ``FABlock2D``)."""

    spatial_dims = 2


class FABlock3D(FABlock):
    """:class:`FABlock` on ``(b, nx, ny, nz, dim)`` grids (official ``FABlock3D``)."""

    spatial_dims = 3


class _EncoderLayer(nn.Module):
    def __init__(self, block: FABlock, dim: int, pos_scale: float) -> None:
        super().__init__()
        self.pos_features = GaussianFourierFeatures(block.spatial_dims, dim // 2, pos_scale)
        self.pos_proj = nn.Linear(dim, dim)
        self.block = block


class FactorizedEncoder(nn.Module):
    """``depth`` x [``u = u + Linear(GaussianFourier(coords))``; ``u = FABlock(u) + u``] (official
    ``FactorizedTransformer`` of the examples; each layer has its own Fourier features)."""

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        kernel_multiplier: int,
        pos_scale: float,
    ) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(
                f"FactorizedEncoder: dim must be even (Fourier features of dim / 2 frequencies), got {dim}"
            )
        block_cls = {2: FABlock2D, 3: FABlock3D}[spatial_dims]
        self.layers = nn.ModuleList(
            _EncoderLayer(block_cls(dim, heads, dim_head, kernel_multiplier=kernel_multiplier), dim, pos_scale)
            for _ in range(depth)
        )

    def forward(self, u: Tensor, coords: Sequence[Tensor]) -> Tensor:
        for layer in self.layers:
            u = u + layer.pos_proj(layer.pos_features(coords).to(u.dtype))
            u = layer.block(u, coords) + u
        return u


def _conv_down_up(conv: type[nn.Module], norm: type[nn.Module], dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The examples' small conv block: InstanceNorm -> conv stride 2 -> GELU -> conv, and (after a nearest upsampling
    to the input size, done in ``forward``) conv -> GELU -> conv."""
    half = dim // 2
    down = nn.Sequential(
        norm(dim),
        conv(dim, half, kernel_size=3, stride=2, padding=1),
        nn.GELU(),
        conv(half, half, kernel_size=3, stride=1, padding=1),
    )
    up = nn.Sequential(
        conv(half, half, kernel_size=3, stride=1, padding=1), nn.GELU(), conv(half, dim, kernel_size=3, padding=1)
    )
    return down, up


def _down_up(down: nn.Sequential, up: nn.Sequential, u: Tensor) -> Tensor:
    """Channels-last ``u`` through the conv block, back at ``u``'s size and layout."""
    h = down(u.movedim(-1, 1))
    h = up(F.interpolate(h, size=tuple(u.shape[1:-1]), mode="nearest"))
    return h.movedim(1, -1)


def _latent_head(latent_dim: int, dim: int, out_dim: int, groups: int) -> nn.Sequential:
    """Official ``simple_to_out`` of the latent-stepping examples (channels first, ``(B, C, N)``)."""
    return nn.Sequential(
        nn.GroupNorm(groups, latent_dim),
        nn.Conv1d(latent_dim, dim, kernel_size=1, groups=_HEAD_GROUPS, bias=False),
        nn.GELU(),
        nn.Conv1d(dim, dim // 2, kernel_size=1, bias=False),
        nn.GELU(),
        nn.Conv1d(dim // 2, out_dim, kernel_size=1),
    )


class _GridModel(FormersModel):
    """Shared input checks and example inputs of the grid models."""

    spatial_dims: int
    in_channels: int
    out_channels: int
    _example_size = 8

    def _check_grid(self, x: Tensor) -> None:
        name, d = type(self).__name__, self.spatial_dims
        layout = f"(batch, {', '.join('n' * d)}, {self.in_channels})"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating tensor, got {x.dtype}")
        if x.ndim != d + 2 or x.shape[-1] != self.in_channels:
            raise ValueError(f"{name}: x must be {layout} channels-last, got {tuple(x.shape)}")
        if min(x.shape[1:-1]) < 2:
            raise ValueError(
                f"{name}: every spatial axis needs at least 2 points, got a grid of {tuple(x.shape[1:-1])}"
            )

    def example_inputs(self, batch_size: int = 2) -> dict[str, Tensor]:
        size = (self._example_size,) * self.spatial_dims
        return {"x": torch.randn(batch_size, *size, self.in_channels, device=self.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, *(self._example_size,) * self.spatial_dims, self.out_channels)


class FactFormerDarcy2D(_GridModel):
    """The official Darcy2d model: ``(B, nx, ny, in_channels) -> (B, nx, ny, out_channels)``.

    Args:
        in_channels / out_channels: fields in and out (Darcy: the coefficient -> the solution).
        dim, depth, heads, dim_head, kernel_multiplier: the encoder (official 128, 3, 12, 64, 2).
        pos_scale: std of the Gaussian Fourier frequencies (official Darcy: 1).
        domain_length: coordinates ``linspace(0, domain_length, n)`` per axis (official Darcy: 1).
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 128,
        depth: int = 3,
        heads: int = 12,
        dim_head: int = 64,
        kernel_multiplier: int = 2,
        pos_scale: float = 1.0,
        domain_length: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, in_channels=in_channels, out_channels=out_channels, dim=dim, depth=depth)
        if (2 * dim) % _HEAD_GROUPS:
            raise ValueError(f"FactFormerDarcy2D: 2 * dim must be divisible by {_HEAD_GROUPS} (GroupNorm), got {dim}")
        self.in_channels, self.out_channels, self.domain_length = in_channels, out_channels, domain_length
        self.to_in = nn.Linear(in_channels, dim)
        self.encoder = FactorizedEncoder(2, dim, depth, heads, dim_head, kernel_multiplier, pos_scale)
        self.down_block, self.up_block = _conv_down_up(nn.Conv2d, nn.InstanceNorm2d, dim)
        self.head = nn.Sequential(
            nn.GroupNorm(_HEAD_GROUPS, 2 * dim),
            nn.Conv1d(2 * dim, dim, kernel_size=1, bias=False),
            nn.GELU(),
            nn.Conv1d(dim, out_channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_grid(x)
        coords = axis_coordinates(x.shape[1:-1], self.domain_length, device=x.device, dtype=_coord_dtype(x))
        u = self.encoder(self.to_in(x), coords)
        u = torch.cat([_down_up(self.down_block, self.up_block, u), u], dim=-1)
        out = self.head(u.flatten(1, -2).transpose(1, 2))  # (B, out, N)
        return out.transpose(1, 2).unflatten(1, x.shape[1:-1])


class FactFormerKolmogorov2D(_GridModel):
    """The official KM2d model with latent time stepping: ``(B, H, W, T_in) -> (B, H, W, T_out)``.

    Args:
        in_channels: past frames ``T_in`` (official 10).
        out_channels: frames ``T_out`` predicted per call = latent steps (official ``max_latent_steps`` 4).
        dim, depth, heads, dim_head, kernel_multiplier: the encoder (official 128, 4, 8, 64, 2).
        latent_multiplier: latent width ``int(dim * latent_multiplier)`` (official 2).
        pos_scale: std of the Gaussian Fourier frequencies (official KM2d: 8).
        domain_length: coordinates ``linspace(0, domain_length, n)`` (official KM2d: 2 pi).
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 10,
        out_channels: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 8,
        dim_head: int = 64,
        kernel_multiplier: int = 2,
        latent_multiplier: float = 2.0,
        pos_scale: float = 8.0,
        domain_length: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, in_channels=in_channels, out_channels=out_channels, dim=dim, depth=depth)
        self.latent_dim = int(dim * latent_multiplier)
        _check_latent_head(name, dim, self.latent_dim, latent_multiplier)
        self.in_channels, self.out_channels, self.domain_length = in_channels, out_channels, domain_length
        self.to_in = nn.Linear(in_channels, dim)
        self.encoder = FactorizedEncoder(2, dim, depth, heads, dim_head, kernel_multiplier, pos_scale)
        self.expand_latent = nn.Linear(dim, self.latent_dim, bias=False)
        self.latent_time_emb = nn.Parameter(torch.randn(out_channels, self.latent_dim) * 0.02)
        self.propagator = _PreNormMLP(self.latent_dim, dim, self.latent_dim, gated=False)
        self.head = _latent_head(self.latent_dim, dim, 1, int(_HEAD_GROUPS * latent_multiplier))

    def forward(self, x: Tensor, latent_steps: int | None = None) -> Tensor:
        self._check_grid(x)
        steps = _check_steps(type(self).__name__, latent_steps, self.out_channels)
        coords = axis_coordinates(x.shape[1:-1], self.domain_length, device=x.device, dtype=_coord_dtype(x))
        z = self.expand_latent(self.encoder(self.to_in(x), coords))
        frames = _latent_rollout(z, self.latent_time_emb, self.propagator, self.head, steps)  # (B, steps, N, 1)
        return frames.squeeze(-1).transpose(1, 2).unflatten(1, x.shape[1:-1])


class FactFormerSmoke3D(_GridModel):
    """The official Smoke3d model: ``(B, X, Y, Z, T_in * fields) -> (B, X, Y, Z, T_out * fields)``, frame-major
    channels (channel ``t * fields + f``; the official tensors are ``(b, fields, T_in, X, Y, Z)`` in and
    ``(b, T_out, X, Y, Z, fields)`` out).

    Args:
        in_channels: ``T_in * fields`` (official 4 frames x 4 fields).
        out_channels: ``T_out * fields``, ``T_out`` latent steps per call (official ``max_latent_steps`` 4).
        fields: fields per frame (official: density + 3 velocity components).
        padding: zero cells appended at the high end of each axis around the encoder (official 2).
        domain_length: coordinates ``linspace(0, domain_length, n)`` (official 8).
        the rest: as :class:`FactFormerKolmogorov2D` (official 128, 3, 6, 64, 3, latent_multiplier 1.5, pos_scale 1).
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int = 16,
        fields: int = 4,
        dim: int = 128,
        depth: int = 3,
        heads: int = 6,
        dim_head: int = 64,
        kernel_multiplier: int = 3,
        latent_multiplier: float = 1.5,
        padding: int = 2,
        pos_scale: float = 1.0,
        domain_length: float = 8.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, in_channels=in_channels, out_channels=out_channels, fields=fields, dim=dim, depth=depth)
        if in_channels % fields or out_channels % fields:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must be multiples of fields "
                f"({fields}): frames of `fields` channels each"
            )
        if (dim // 2) % fields:
            raise ValueError(f"{name}: dim / 2 ({dim // 2}) must be divisible by fields ({fields}) (grouped conv)")
        if padding < 0:
            raise ValueError(f"{name}: padding must be >= 0, got {padding}")
        self.latent_dim = int(dim * latent_multiplier)
        _check_latent_head(name, dim, self.latent_dim, latent_multiplier)
        self.in_channels, self.out_channels, self.fields = in_channels, out_channels, fields
        self.in_frames, self.out_frames = in_channels // fields, out_channels // fields
        self.padding, self.domain_length = padding, domain_length
        # official: Conv2d over (fields, T_in, points): a per-field 1x1 map of each value, then a conv over time
        self.to_in = nn.Sequential(
            nn.Conv2d(fields, dim // 2, kernel_size=1, groups=fields),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, kernel_size=(self.in_frames, 1), bias=False),
        )
        self.encoder = FactorizedEncoder(3, dim, depth, heads, dim_head, kernel_multiplier, pos_scale)
        self.down_block, self.up_block = _conv_down_up(nn.Conv3d, nn.InstanceNorm3d, dim)
        self.expand_latent = nn.Linear(2 * dim, self.latent_dim, bias=False)
        self.latent_time_emb = nn.Parameter(torch.randn(self.out_frames, self.latent_dim) * 0.02)
        self.propagator = _PreNormMLP(self.latent_dim, dim, self.latent_dim, gated=False)
        self.head = _latent_head(self.latent_dim, dim, fields, int(_HEAD_GROUPS * latent_multiplier))

    def forward(self, x: Tensor, latent_steps: int | None = None) -> Tensor:
        self._check_grid(x)
        steps = _check_steps(type(self).__name__, latent_steps, self.out_frames)
        b, sizes, p = x.shape[0], x.shape[1:-1], self.padding
        frames = x.unflatten(-1, (self.in_frames, self.fields)).flatten(1, 3)  # (B, N, T_in, fields)
        u = self.to_in(frames.permute(0, 3, 2, 1)).view(b, -1, *sizes)  # (B, dim, X, Y, Z)
        u = F.pad(u, [0, p] * 3).movedim(1, -1)
        coords = axis_coordinates(sizes, self.domain_length, device=x.device, dtype=_coord_dtype(x), padding=p)
        u = self.encoder(u, coords)
        if p:
            u = u[:, :-p, :-p, :-p]
        u = torch.cat([_down_up(self.down_block, self.up_block, u), u], dim=-1)
        z = self.expand_latent(u)
        out = _latent_rollout(z, self.latent_time_emb, self.propagator, self.head, steps)  # (B, steps, N, fields)
        return out.transpose(1, 2).flatten(2).unflatten(1, sizes)


def _check_latent_head(name: str, dim: int, latent_dim: int, latent_multiplier: float) -> None:
    groups = int(_HEAD_GROUPS * latent_multiplier)
    if groups < 1 or latent_dim % groups or latent_dim % _HEAD_GROUPS or dim % _HEAD_GROUPS or dim < 2:
        raise ValueError(
            f"{name}: the latent head needs dim ({dim}) and latent dim int(dim * latent_multiplier) ({latent_dim}) "
            f"divisible by {_HEAD_GROUPS} and the latent dim by int(8 * latent_multiplier) ({groups})"
        )


def _check_steps(name: str, latent_steps: int | None, max_steps: int) -> int:
    if latent_steps is None:
        return max_steps
    if isinstance(latent_steps, bool) or not isinstance(latent_steps, int) or not 1 <= latent_steps <= max_steps:
        raise ValueError(f"{name}: latent_steps must be an int in [1, {max_steps}], got {latent_steps!r}")
    return latent_steps


def _latent_rollout(z: Tensor, time_emb: Tensor, propagator: nn.Module, head: nn.Sequential, steps: int) -> Tensor:
    """Official latent stepping: ``z = z + e_t; z = z + propagator(z)`` per step, each step decoded by ``head``.
    ``z (B, *spatial, latent)`` -> ``(B, steps, N, out)``."""
    latents = []
    for t in range(steps):
        z = z + time_emb[t]
        z = propagator(z) + z
        latents.append(z.flatten(1, -2))
    stacked = torch.stack(latents, dim=1)  # (B, steps, N, latent); the GroupNorm is per sample and step
    out = head(stacked.flatten(0, 1).transpose(1, 2))  # (B * steps, out, N)
    return out.transpose(1, 2).unflatten(0, (z.shape[0], steps))


# ----------------------------------------------------------------------------------------- official checkpoints

_AXIS_INDEX = {"x": "0", "y": "1", "z": "2"}
_OFFICIAL_KEYS: list[tuple[str, str]] = [
    # FABlock2D/3D: reducers (to_y / to_z start with a Rearrange, hence index 1) and kernels
    (r"\.to_x\.0\.", ".reducers.0."),
    (r"\.to_([yz])\.1\.", lambda m: f".reducers.{_AXIS_INDEX[m.group(1)]}."),
    (r"(\.reducers\.\d\.)to_in\.", r"\1proj."),
    (r"(\.reducers\.\d\.)out_ffn\.norm\.", r"\1mlp.norm."),
    (r"(\.reducers\.\d\.)out_ffn\.fn\.net\.0\.", r"\1mlp.fc1."),
    (r"(\.reducers\.\d\.)out_ffn\.fn\.net\.3\.", r"\1mlp.fc2."),
    (r"\.low_rank_kernel_([xyz])\.", lambda m: f".kernels.{_AXIS_INDEX[m.group(1)]}."),
    # FactorizedTransformer layers: [Sequential(GaussianFourier, Linear), FABlock]
    (r"^encoder\.layers\.(\d+)\.0\.0\._B$", r"encoder.layers.\1.pos_features.B"),
    (r"^encoder\.layers\.(\d+)\.0\.1\.", r"encoder.layers.\1.pos_proj."),
    (r"^encoder\.layers\.(\d+)\.1\.", r"encoder.layers.\1.block."),
    # the models: Upsample is up_block.0 officially; simple_to_out starts with a Rearrange
    (r"^up_block\.([13])\.", lambda m: f"up_block.{int(m.group(1)) - 1}."),
    (r"^simple_to_out\.(\d)\.", lambda m: f"head.{int(m.group(1)) - 1}."),
    (r"^propagator\.fn\.net\.0\.", "propagator.fc1."),
    (r"^propagator\.fn\.net\.3\.", "propagator.fc2."),
]


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """An official FactFormer state dict (HEAD's ``FactFormer2D`` of the Darcy / KM2d examples, ``FactFormer3D`` of
    Smoke3d, or a bare ``FABlock2D/3D``; optionally wrapped in ``{"model": ...}`` as the official trainers save it,
    or DDP-prefixed) -> ``model``'s keys.

    The RoPE ``inv_freq`` buffers are dropped (derived from the sizes), ``latent_time_emb`` loses its singleton axes.
    A state dict already in this model's layout passes through unchanged.

    Raises:
        ValueError: keys of neither layout.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    own = model.state_dict()
    block_prefix = "" if isinstance(model, FABlock) else None
    out, unknown = {}, []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key == "latent_time_emb" and key in own:  # official (1, steps, 1, ..., 1, latent) -> (steps, latent)
            out[key] = value.reshape(own[key].shape) if value.numel() == own[key].numel() else value
            continue
        if key in own:
            out[key] = value
            continue
        if key.endswith(".pos_emb.inv_freq"):
            continue
        new = ("." + key) if block_prefix is not None else key  # a bare block: match the ".to_x." patterns
        for pattern, replacement in _OFFICIAL_KEYS:
            new = re.sub(pattern, replacement, new)
        new = new[1:] if block_prefix is not None else new
        if new == key or new not in own:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"keys of neither the official FactFormer nor {type(model).__name__}: {unknown[:8]}")
    return out


# ----------------------------------------------------------------------------------------- official configurations

_TEST_BLOCK = {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "kernel_multiplier": 2}


@register_model(paper=_PAPER, test_kwargs=_TEST_BLOCK, filter_fn=checkpoint_filter_fn)
def factformer_darcy(**kwargs: Any) -> FactFormerDarcy2D:
    """Darcy2d (``configs/darcy2d_fact.yml``): dim 128, depth 3, 12 x 64 heads, kernel_multiplier 2, coordinates on
    ``[0, 1]``; 3,749,953 trainable parameters (official resolution 141, any here)."""
    return FactFormerDarcy2D(**kwargs)


@register_model(
    paper=_PAPER, test_kwargs={**_TEST_BLOCK, "in_channels": 3, "out_channels": 2}, filter_fn=checkpoint_filter_fn
)
def factformer_kolmogorov(**kwargs: Any) -> FactFormerKolmogorov2D:
    """KM2d (``configs/ns2d_fact_lm.yml``): 10 frames in, 4 latent steps (frames) out, dim 128, depth 4, 8 x 64 heads,
    kernel_multiplier 2, latent_multiplier 2, coordinates on ``[0, 2 pi]``; 3,463,489 trainable parameters."""
    return FactFormerKolmogorov2D(**kwargs)


@register_model(
    paper=_PAPER,
    test_kwargs={**_TEST_BLOCK, "in_channels": 4, "out_channels": 6, "fields": 2, "padding": 1},
    filter_fn=checkpoint_filter_fn,
)
def factformer_3d(**kwargs: Any) -> FactFormerSmoke3D:
    """Smoke3d (``configs/smoke3d_fact_lm.yml``): 4 frames x 4 fields in, 4 latent steps out, dim 128, depth 3,
    6 x 64 heads, kernel_multiplier 3, latent_multiplier 1.5, padding 2; 4,501,764 trainable parameters."""
    return FactFormerSmoke3D(**kwargs)

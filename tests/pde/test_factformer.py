"""FactFormer (formers.pde.models.factformer) against the official arithmetic of BaratiLab/FactFormer @ c9801d1.

The oracle below is written from the official code, step by step and with the official module names
(``libs/factorization_module.py``, ``libs/attention.py::LowRankKernel``, ``libs/positional_encoding_module.py``,
``libs/basics.py``, the ``FactFormer2D/3D`` classes of ``examples/*.py``): full-grid ``Linear`` then mean in the
reducers, ``einsum`` per axis on ``(b, h, *spatial, c)``, the in-place ``u += pos_enc(pos)``, ``nn.Upsample`` to the
configured resolution. Its one change is the head-group norm: HEAD's ``GroupNorm(domain_wise=True)`` flattens the grid
(kept below as ``GroupNormHEAD`` to show the defect); the oracle normalises the same way and reshapes back.
Weights go from the oracle (official names) into our modules through the registered ``checkpoint_filter_fn``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from formers.core.registry import get_model_entry
from formers.core.weights import load_into
from formers.pde.models.factformer import (
    FABlock2D,
    FABlock3D,
    FactFormerDarcy2D,
    FactFormerKolmogorov2D,
    FactFormerSmoke3D,
    HeadGroupNorm,
    checkpoint_filter_fn,
    factformer_3d,
    factformer_darcy,
    factformer_kolmogorov,
    factorized_integral,
)

# ------------------------------------------------------------------------------------------------ official oracle


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, min_freq=1 / 64, scale=1.0):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.min_freq, self.scale = min_freq, scale
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, coordinates, device):
        t = coordinates.to(device).type_as(self.inv_freq)
        t = t * (self.scale / self.min_freq)
        freqs = torch.einsum("... i , j -> ... i j", t, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)


def rotate_half(x):
    x1, x2 = x.unflatten(-1, (2, -1)).unbind(dim=-2)  # '... (j d) -> ... j d', j=2
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(t, freqs):
    return (t * freqs.cos()) + (rotate_half(t) * freqs.sin())


class LowRankKernel(nn.Module):  # positional_embedding='rotary', pos_dim=1, residual=False, softmax=False
    def __init__(self, dim, dim_head, heads, scaling=1):
        super().__init__()
        self.dim_head, self.heads, self.scaling = dim_head, heads, scaling
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_head * heads, bias=False)
        self.pos_emb = RotaryEmbedding(dim_head, min_freq=1 / 64)
        nn.init.xavier_uniform_(self.to_q.weight, gain=0.02)
        nn.init.xavier_uniform_(self.to_k.weight, gain=0.02)

    def forward(self, u_x, pos_x):
        q, k = self.to_q(u_x), self.to_k(u_x)
        b, n, _ = q.shape
        q = q.view(b, n, self.heads, self.dim_head).permute(0, 2, 1, 3)  # 'b n (h d) -> b h n d'
        k = k.view(b, n, self.heads, self.dim_head).permute(0, 2, 1, 3)
        q_freqs = self.pos_emb.forward(pos_x[..., 0], q.device).unsqueeze(0)
        q_freqs = q_freqs.expand(b, self.heads, n, self.dim_head)  # repeat '1 n d -> b h n d'
        q = apply_rotary_pos_emb(q, q_freqs)
        k = apply_rotary_pos_emb(k, q_freqs)
        return torch.einsum("bhid,bhjd->bhij", q, k) * self.scaling


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x):
        return self.fn(self.norm(x))


class GeAct(nn.Module):
    def __init__(self, act_fn):
        super().__init__()
        self.fn = act_fn

    def forward(self, x):
        c = x.shape[-1]
        return self.fn(x[..., : int(c // 2)]) * x[..., int(c // 2) :]


class MLP(nn.Module):
    def __init__(self, dims, act_fn, dropout=0.0):
        super().__init__()
        layers = []
        for i in range(len(dims) - 1):
            gated = isinstance(act_fn, GeAct) and i < len(dims) - 2
            layers.append(nn.Linear(dims[i], dims[i + 1] * 2 if gated else dims[i + 1]))
            if i < len(dims) - 2:
                layers += [act_fn, nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class PoolingReducer(nn.Module):
    def __init__(self, in_dim, hidden_dim, out_dim):
        super().__init__()
        self.to_in = nn.Linear(in_dim, hidden_dim, bias=False)
        self.out_ffn = PreNorm(in_dim, MLP([hidden_dim, hidden_dim, out_dim], GeAct(nn.GELU())))

    def forward(self, x):
        x = self.to_in(x)
        x = x.mean(dim=tuple(range(2, x.ndim - 1)))
        return self.out_ffn(x)


class Permute(nn.Module):  # stands in for einops' Rearrange (no parameters, occupies an index as in the official)
    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class GroupNormFixed(nn.Module):  # official domain-wise GroupNorm, affine=False, reshaped back to the grid
    def __init__(self, num_groups, eps=1e-8):
        super().__init__()
        self.num_groups, self.eps = num_groups, eps

    def forward(self, x):
        b, spatial, g = x.shape[0], x.shape[1:-1], self.num_groups
        c = x.shape[-1] // g
        x = x.reshape(b, -1, g, c).permute(0, 2, 1, 3).reshape(b, g, -1)  # 'b ... (g c) -> b g (... c)'
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True)
        x = (x - mean) / (var + self.eps).sqrt()
        x = x.view(b, g, -1, c).permute(0, 2, 1, 3)  # 'b g n c -> b n g c'
        return x.reshape(b, *spatial, g * c)


class GroupNormHEAD(GroupNormFixed):  # what c9801d1 returns: 'b g ... c -> b ... (g c)' with ... = one flat axis
    def forward(self, x):
        return super().forward(x).flatten(1, -2)


def _scaling(dim_head, kernel_multiplier):
    return 1 / math.sqrt(dim_head * kernel_multiplier) if kernel_multiplier > 4 else 1.0


class OfficialFABlock2D(nn.Module):
    def __init__(self, dim, dim_head, latent_dim, heads, dim_out, kernel_multiplier=3, group_norm=GroupNormFixed):
        super().__init__()
        self.heads = heads
        self.in_norm = nn.LayerNorm(dim)
        self.to_v = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_in = nn.Linear(dim, dim, bias=False)
        self.to_x = nn.Sequential(PoolingReducer(dim, dim, latent_dim))
        self.to_y = nn.Sequential(Permute(0, 2, 1, 3), PoolingReducer(dim, dim, latent_dim))
        scaling = _scaling(dim_head, kernel_multiplier)
        self.low_rank_kernel_x = LowRankKernel(latent_dim, dim_head * kernel_multiplier, heads, scaling)
        self.low_rank_kernel_y = LowRankKernel(latent_dim, dim_head * kernel_multiplier, heads, scaling)
        self.to_out = nn.Sequential(
            group_norm(heads),
            nn.Linear(dim_head * heads, dim_out, bias=False),
            nn.GELU(),
            nn.Linear(dim_out, dim_out, bias=False),
        )

    def forward(self, u, pos_lst):
        u = self.in_norm(u)
        v = self.to_v(u)
        u = self.to_in(u)
        u_x, u_y = self.to_x(u), self.to_y(u)
        k_x = self.low_rank_kernel_x(u_x, pos_x=pos_lst[0])
        k_y = self.low_rank_kernel_y(u_y, pos_x=pos_lst[1])
        u_phi = v.unflatten(-1, (self.heads, -1)).permute(0, 3, 1, 2, 4)  # 'b i l (h c) -> b h i l c'
        u_phi = torch.einsum("bhij,bhjmc->bhimc", k_x, u_phi)
        u_phi = torch.einsum("bhlm,bhimc->bhilc", k_y, u_phi)
        u_phi = u_phi.permute(0, 2, 3, 1, 4).flatten(-2)  # 'b h i l c -> b i l (h c)'
        return self.to_out(u_phi)


class OfficialFABlock3D(nn.Module):
    def __init__(self, dim, dim_head, latent_dim, heads, dim_out, kernel_multiplier=3, group_norm=GroupNormFixed):
        super().__init__()
        self.heads = heads
        self.in_norm = nn.LayerNorm(dim)
        self.to_v = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_in = nn.Linear(dim, dim, bias=False)
        self.to_x = nn.Sequential(PoolingReducer(dim, dim, latent_dim))
        self.to_y = nn.Sequential(Permute(0, 2, 1, 3, 4), PoolingReducer(dim, dim, latent_dim))
        self.to_z = nn.Sequential(Permute(0, 3, 1, 2, 4), PoolingReducer(dim, dim, latent_dim))
        scaling = _scaling(dim_head, kernel_multiplier)
        self.low_rank_kernel_x = LowRankKernel(latent_dim, dim_head * kernel_multiplier, heads, scaling)
        self.low_rank_kernel_y = LowRankKernel(latent_dim, dim_head * kernel_multiplier, heads, scaling)
        self.low_rank_kernel_z = LowRankKernel(latent_dim, dim_head * kernel_multiplier, heads, scaling)
        self.to_out = nn.Sequential(
            group_norm(heads),
            nn.Linear(dim_head * heads, dim_out, bias=False),
            nn.GELU(),
            nn.Linear(dim_out, dim_out, bias=False),
        )

    def forward(self, u, pos_lst):
        u = self.in_norm(u)
        v = self.to_v(u)
        u = self.to_in(u)
        u_x, u_y, u_z = self.to_x(u), self.to_y(u), self.to_z(u)
        k_x = self.low_rank_kernel_x(u_x, pos_x=pos_lst[0])
        k_y = self.low_rank_kernel_y(u_y, pos_x=pos_lst[1])
        k_z = self.low_rank_kernel_z(u_z, pos_x=pos_lst[2])
        u_phi = v.unflatten(-1, (self.heads, -1)).permute(0, 4, 1, 2, 3, 5)  # 'b i l r (h c) -> b h i l r c'
        u_phi = torch.einsum("bhij,bhjmsc->bhimsc", k_x, u_phi)
        u_phi = torch.einsum("bhlm,bhimsc->bhilsc", k_y, u_phi)
        u_phi = torch.einsum("bhrs,bhilsc->bhilrc", k_z, u_phi)
        u_phi = u_phi.permute(0, 2, 3, 4, 1, 5).flatten(-2)
        return self.to_out(u_phi)


class GaussianFourierFeatureTransform(nn.Module):
    def __init__(self, num_input_channels, mapping_size=256, scale=10):
        super().__init__()
        self._B = nn.Parameter(torch.randn((num_input_channels, mapping_size)) * scale, requires_grad=False)

    def forward(self, x):
        if len(x.shape) == 2:
            x = x.unsqueeze(0)
        batches, num_of_points, channels = x.shape
        x = x.reshape(batches * num_of_points, channels) @ self._B.to(x.device)
        x = 2 * math.pi * x.reshape(batches, num_of_points, -1)
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class FactorizedTransformer(nn.Module):
    def __init__(self, dim, dim_head, heads, dim_out, depth, kernel_multiplier, pos_scale, spatial_dims=2):
        super().__init__()
        block = OfficialFABlock2D if spatial_dims == 2 else OfficialFABlock3D
        self.spatial_dims = spatial_dims
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.Sequential(
                        GaussianFourierFeatureTransform(spatial_dims, dim // 2, pos_scale), nn.Linear(dim, dim)
                    ),
                    block(dim, dim_head, dim, heads, dim_out, kernel_multiplier=kernel_multiplier),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, u, pos_lst):
        sizes = [p.shape[0] for p in pos_lst]
        pos = torch.stack(torch.meshgrid([p.squeeze(-1) for p in pos_lst], indexing="ij"), dim=-1)
        if self.spatial_dims == 3:
            pos = pos.reshape(-1, 3)
        for pos_enc, attn_layer in self.layers:
            u += pos_enc(pos).view(1, *sizes, -1)
            u = attn_layer(u, pos_lst) + u
        return u


def _to_channels_first_flat():
    return Permute(0, 2, 1)  # applied after flattening the grid: 'b nx ny c -> b c (nx ny)'


class OfficialDarcy(nn.Module):  # examples/darcy2d_fact.py::FactFormer2D
    def __init__(self, in_dim, out_dim, dim, depth, heads, dim_head, kernel_multiplier, resolution):
        super().__init__()
        self.to_in = nn.Linear(in_dim, dim, bias=True)
        self.encoder = FactorizedTransformer(dim, dim_head, heads, dim, depth, kernel_multiplier, 1)
        self.down_block = nn.Sequential(
            nn.InstanceNorm2d(dim),
            nn.Conv2d(dim, dim // 2, kernel_size=3, stride=2, padding=1, bias=True),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim // 2, kernel_size=3, stride=1, padding=1, bias=True),
        )
        self.up_block = nn.Sequential(
            nn.Upsample(size=(resolution, resolution), mode="nearest"),
            nn.Conv2d(dim // 2, dim // 2, kernel_size=3, stride=1, padding=1, bias=True),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, kernel_size=3, stride=1, padding=1, bias=True),
        )
        self.simple_to_out = nn.Sequential(
            _to_channels_first_flat(),
            nn.GroupNorm(num_groups=8, num_channels=dim * 2),
            nn.Conv1d(dim * 2, dim, kernel_size=1, stride=1, padding=0, bias=False),
            nn.GELU(),
            nn.Conv1d(dim, out_dim, kernel_size=1, stride=1, padding=0, bias=True),
        )

    def forward(self, u, pos_lst):
        b, nx, ny, c = u.shape
        u = self.to_in(u)
        u_last = self.encoder(u, pos_lst)
        u = self.up_block(self.down_block(u_last.permute(0, 3, 1, 2)))
        u = torch.cat([u.permute(0, 2, 3, 1), u_last], dim=-1)
        u = self.simple_to_out(u.flatten(1, 2))
        return u.permute(0, 2, 1).reshape(b, nx, ny, -1)  # 'b c (nx ny) -> b nx ny c'


def _latent_parts(module, dim, latent_dim, out_dim, latent_multiplier, steps, spatial_dims):
    module.latent_time_emb = nn.Parameter(torch.randn(1, steps, *[1] * spatial_dims, latent_dim) * 0.02)
    module.propagator = PreNorm(latent_dim, MLP([latent_dim, dim, latent_dim], act_fn=nn.GELU()))
    module.simple_to_out = nn.Sequential(
        _to_channels_first_flat(),
        nn.GroupNorm(num_groups=int(8 * latent_multiplier), num_channels=latent_dim),
        nn.Conv1d(latent_dim, dim, kernel_size=1, stride=1, padding=0, groups=8, bias=False),
        nn.GELU(),
        nn.Conv1d(dim, dim // 2, kernel_size=1, stride=1, padding=0, bias=False),
        nn.GELU(),
        nn.Conv1d(dim // 2, out_dim, kernel_size=1, stride=1, padding=0, bias=True),
    )


class OfficialKM2d(nn.Module):  # examples/turb_ns2d_fact_lm.py::FactFormer2D
    def __init__(self, in_tw, dim, depth, heads, dim_head, kernel_multiplier, latent_multiplier, max_latent_steps):
        super().__init__()
        latent_dim = int(dim * latent_multiplier)
        self.to_in = nn.Linear(in_tw, dim, bias=True)
        self.encoder = FactorizedTransformer(dim, dim_head, heads, dim, depth, kernel_multiplier, 8)
        self.expand_latent = nn.Linear(dim, latent_dim, bias=False)
        _latent_parts(self, dim, latent_dim, 1, latent_multiplier, max_latent_steps, 2)

    def forward(self, u, pos_lst, latent_steps=1):
        b, nx, ny, c = u.shape
        u = self.encoder(self.to_in(u), pos_lst)
        u_lst = []
        u = self.expand_latent(u)
        for l_t in range(latent_steps):
            u = u + self.latent_time_emb[:, l_t, ...]
            u = self.propagator(u) + u
            u_lst.append(u)
        u = torch.cat(u_lst, dim=0)
        u = self.simple_to_out(u.flatten(1, 2))  # (t b) c (nx ny)
        return u.unflatten(0, (latent_steps, b)).permute(1, 0, 3, 2).reshape(b, latent_steps, nx, ny, -1)


class OfficialSmoke3d(nn.Module):  # examples/threed_smokesim_fact_lm.py::FactFormer3D
    def __init__(
        self, in_dim, in_tw, dim, depth, heads, dim_head, kernel_multiplier, latent_multiplier, steps, padding
    ):
        super().__init__()
        latent_dim = int(dim * latent_multiplier)
        self.padding = padding
        self.to_in = nn.Sequential(
            nn.Conv2d(in_dim, dim // 2, kernel_size=1, stride=1, padding=0, groups=in_dim),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, kernel_size=(in_tw, 1), stride=1, padding=0, bias=False),
        )
        self.encoder = FactorizedTransformer(dim, dim_head, heads, dim, depth, kernel_multiplier, 1, spatial_dims=3)
        self.down_block = nn.Sequential(
            nn.InstanceNorm3d(dim),
            nn.Conv3d(dim, dim // 2, kernel_size=3, stride=2, padding=1, bias=True),
            nn.GELU(),
            nn.Conv3d(dim // 2, dim // 2, kernel_size=3, stride=1, padding=1, bias=True),
        )
        self.up_block = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv3d(dim // 2, dim // 2, kernel_size=3, stride=1, padding=1, bias=True),
            nn.GELU(),
            nn.Conv3d(dim // 2, dim, kernel_size=3, stride=1, padding=1, bias=True),
        )
        self.expand_latent = nn.Linear(dim * 2, latent_dim, bias=False)
        _latent_parts(self, dim, latent_dim, in_dim, latent_multiplier, steps, 3)

    def forward(self, u, pos_lst, latent_steps):
        b, c, t, nx, ny, nz = u.shape
        u = self.to_in(u.flatten(3))  # 'b c t nx ny nz -> b c t (nx ny nz)'
        u = u.reshape(b, -1, nx, ny, nz)  # 'b c 1 (nx ny nz) -> b c nx ny nz'
        p = self.padding
        if p > 0:
            u = nn.functional.pad(u, [0, p, 0, p, 0, p])
        u = self.encoder(u.permute(0, 2, 3, 4, 1), pos_lst)
        if p > 0:
            u = u[:, :-p, :-p, :-p, :]
        u_last = u
        u = self.up_block(self.down_block(u.permute(0, 4, 1, 2, 3))).permute(0, 2, 3, 4, 1)
        u = self.expand_latent(torch.cat([u, u_last], dim=-1))
        u_lst = []
        for l_t in range(latent_steps):
            u = u + self.latent_time_emb[:, l_t, ...]
            u = self.propagator(u) + u
            u_lst.append(u)
        u = self.simple_to_out(torch.cat(u_lst, dim=0).flatten(1, 3))
        return u.unflatten(0, (latent_steps, b)).permute(1, 0, 3, 2).reshape(b, latent_steps, nx, ny, nz, -1)


def official_pos(n, length, dtype=torch.float64, padding=0):
    pos = torch.linspace(0, length, n, dtype=dtype)
    if padding:
        dx = length / n
        pos = torch.cat([pos, torch.linspace(length + dx, length + padding * dx, padding, dtype=dtype)])
    return pos.unsqueeze(-1)


# ------------------------------------------------------------------------------------------------ helpers


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its initial value (norm weights off 1, biases off 0, q/k to O(1) kernels) so that
    no step of the arithmetic can hide behind an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("_B"):
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.ndim == 1:
                p.add_(0.2 * noise)
            elif "to_q" in name or "to_k" in name:
                p.copy_(noise / math.sqrt(p.shape[1]))
            else:
                p.add_(0.1 * noise / math.sqrt(p[0].numel()))
    return module


def copy_into(ours: nn.Module, oracle: nn.Module, name: str | None = None) -> nn.Module:
    """Load the oracle's (official-named) weights into ours through the registered filter."""
    filter_fn = checkpoint_filter_fn if name is None else get_model_entry(name).filter_fn
    load_into(ours, oracle.state_dict(), filter_fn=filter_fn, source="oracle")
    return ours


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------ counts


def test_block_parameter_counts():
    assert trainable(FABlock2D(128, heads=12, dim_head=64, kernel_multiplier=2)) == 1_148_416
    assert trainable(FABlock3D(128, heads=6, dim_head=64, kernel_multiplier=3)) == 1_214_592
    assert trainable(OfficialFABlock2D(128, 64, 128, 12, 128, kernel_multiplier=2)) == 1_148_416
    assert trainable(OfficialFABlock3D(128, 64, 128, 6, 128, kernel_multiplier=3)) == 1_214_592


def test_model_parameter_counts_equal_the_official_configs():
    cases = [
        (factformer_darcy(), OfficialDarcy(1, 1, 128, 3, 12, 64, 2, resolution=141), 3_749_953),
        (factformer_kolmogorov(), OfficialKM2d(10, 128, 4, 8, 64, 2, 2.0, 4), 3_463_489),
        (factformer_3d(), OfficialSmoke3d(4, 4, 128, 3, 6, 64, 3, 1.5, 4, 2), 4_501_764),
    ]
    for ours, official, expected in cases:
        assert trainable(ours) == trainable(official) == expected
        # the fixed Gaussian Fourier matrices are buffers here, frozen parameters there: same tensors either way
        assert sum(p.numel() for p in official.parameters()) - expected == sum(
            b.numel() for n, b in ours.named_buffers() if n.endswith(".B")
        )


# ------------------------------------------------------------------------------------------------ the factorization


@pytest.mark.parametrize("sizes", [(8, 8), (6, 5), (4, 3, 5)])
def test_factorized_integral_equals_the_dense_kernel(sizes):
    """On a small grid, the axial integral equals K((x, y), (x', y')) = k_x(x, x') k_y(y, y') applied densely."""
    torch.manual_seed(0)
    d = len(sizes)
    block = perturb(FABlock2D(16, heads=3, dim_head=4, kernel_multiplier=2) if d == 2 else FABlock3D(16, 3, 4))
    block = block.double()
    u = block.in_norm(torch.randn(2, *sizes, 16, dtype=torch.float64))
    coords = [torch.linspace(0, 1, n, dtype=torch.float64) for n in sizes]
    kernels = block.axis_kernels(u, coords)
    assert [tuple(k.shape) for k in kernels] == [(2, 3, n, n) for n in sizes]
    v = block.to_v(u).unflatten(-1, (3, 4)).movedim(-2, 1)  # (b, h, *sizes, c)
    dense = kernels[0]
    for k in kernels[1:]:  # Kronecker product over the axes: (b, h, N, N), row/column index in C order
        n_prev, n_k = dense.shape[-1], k.shape[-1]
        dense = torch.einsum("bhij,bhlm->bhiljm", dense, k).reshape(2, 3, n_prev * n_k, n_prev * n_k)
    n_total = math.prod(sizes)
    assert dense.shape == (2, 3, n_total, n_total)
    v_flat = v.flatten(2, d + 1)  # (b, h, N, c)
    expected = (dense @ v_flat).unflatten(2, sizes)
    got = factorized_integral(kernels, v)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    assert expected.abs().max() > 1e-3  # not a vacuous comparison


def test_block_is_the_dense_integral_then_the_output_head():
    torch.manual_seed(1)
    block = perturb(FABlock2D(16, heads=2, dim_head=8, kernel_multiplier=2)).double()
    x = torch.randn(3, 8, 8, 16, dtype=torch.float64)
    coords = [torch.linspace(0, 1, 8, dtype=torch.float64)] * 2
    u = block.in_norm(x)
    kx, ky = block.axis_kernels(u, coords)
    dense = torch.einsum("bhij,bhlm->bhiljm", kx, ky).reshape(3, 2, 64, 64)
    v = block.to_v(u).unflatten(-1, (2, 8)).flatten(1, 2).transpose(1, 2)  # (b, h, 64, c)
    w = (dense @ v).transpose(1, 2).reshape(3, 8, 8, 16)
    torch.testing.assert_close(block(x, coords), block.to_out(w), atol=1e-10, rtol=1e-10)


def test_head_group_norm_keeps_the_grid_and_normalises_each_head():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 7, 12) * 3 + 1
    y = HeadGroupNorm(3)(x)
    assert y.shape == x.shape
    groups = y.reshape(2, 35, 3, 4)
    torch.testing.assert_close(groups.mean(dim=(1, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(groups.var(dim=(1, 3)), torch.ones(2, 3), atol=1e-4, rtol=0)
    # HEAD computes the same values but returns them flattened: (b, nx * ny, C)
    head = GroupNormHEAD(3)(x)
    assert head.shape == (2, 35, 12)
    torch.testing.assert_close(y.flatten(1, 2), head, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("block_cls", [FABlock2D, FABlock3D])
def test_block_keeps_the_grid_shape_unlike_head(block_cls):
    torch.manual_seed(3)
    d = block_cls.spatial_dims
    sizes = (6, 5) if d == 2 else (4, 3, 5)
    ours = block_cls(16, heads=2, dim_head=8, kernel_multiplier=2)
    official_cls = OfficialFABlock2D if d == 2 else OfficialFABlock3D
    head = official_cls(16, 8, 16, 2, 16, kernel_multiplier=2, group_norm=GroupNormHEAD)
    copy_into(ours, head)
    u = torch.randn(2, *sizes, 16)
    pos = [official_pos(n, 1.0, torch.float32) for n in sizes]
    out, out_head = ours(u), head(u, pos)
    assert out.shape == u.shape
    assert out_head.shape == (2, math.prod(sizes), 16)  # the defect: the residual FABlock(u) + u cannot be formed
    with pytest.raises(RuntimeError):
        out_head + u  # noqa: B018
    torch.testing.assert_close(out.flatten(1, d), out_head, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ oracle equality


@pytest.mark.parametrize("d", [2, 3])
def test_block_matches_the_official_arithmetic(d):
    torch.manual_seed(4)
    sizes = (9, 7) if d == 2 else (5, 4, 6)
    if d == 2:
        official = OfficialFABlock2D(32, 8, 32, 4, 32, kernel_multiplier=2)
        ours = FABlock2D(32, 4, 8, kernel_multiplier=2)
    else:  # kernel_multiplier 5 > 4: the 1 / sqrt(d) scaling branch
        official = OfficialFABlock3D(32, 8, 32, 3, 32, kernel_multiplier=5)
        ours = FABlock3D(32, 3, 8, kernel_multiplier=5)
    copy_into(ours, perturb(official))
    u = torch.randn(2, *sizes, 32)
    pos = [official_pos(n, 1.0, torch.float32) for n in sizes]
    expected = official(u, pos)
    got = ours(u)  # default coordinates linspace(0, 1, n): the official convention
    assert (got - expected).abs().max() < 1e-5
    ours64, official64 = ours.double(), official.double()
    u64 = u.double()
    got64 = ours64(u64)
    expected64 = official64(u64, [official_pos(n, 1.0) for n in sizes])  # coordinates made in float64 too
    torch.testing.assert_close(got64, expected64, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("resolution", [9, 12])
def test_darcy_model_matches_the_official_arithmetic_and_gradients(resolution):
    torch.manual_seed(5)
    kwargs = dict(dim=16, depth=2, heads=2, dim_head=8, kernel_multiplier=2)
    official = perturb(OfficialDarcy(1, 1, resolution=resolution, **kwargs)).double()
    ours = copy_into(FactFormerDarcy2D(**kwargs), official, "factformer_darcy").double()
    x = torch.randn(2, resolution, resolution, 1, dtype=torch.float64)
    pos = [official_pos(resolution, 1.0)] * 2
    expected, got = official(x, pos), ours(x)
    assert got.shape == (2, resolution, resolution, 1)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    # gradients: the same for every parameter (official names mapped onto ours by the same filter)
    weight = torch.randn_like(got)
    (expected * weight).sum().backward()
    (got * weight).sum().backward()
    official_grads = {n: p.grad for n, p in official.named_parameters() if p.requires_grad}
    mapped = checkpoint_filter_fn(official_grads, ours)
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert set(mapped) == set(ours_grads)
    for name, grad in ours_grads.items():
        assert grad is not None and torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, mapped[name], atol=1e-9, rtol=1e-8, msg=name)


def test_kolmogorov_model_matches_the_official_arithmetic():
    torch.manual_seed(6)
    kwargs = dict(dim=16, depth=2, heads=2, dim_head=8, kernel_multiplier=2, latent_multiplier=2.0)
    official = perturb(OfficialKM2d(5, max_latent_steps=3, **kwargs)).double()
    ours = copy_into(FactFormerKolmogorov2D(in_channels=5, out_channels=3, **kwargs), official).double()
    x = torch.randn(2, 10, 8, 5, dtype=torch.float64)  # non-square: the official coordinates are per axis
    pos = [official_pos(10, 2 * math.pi), official_pos(8, 2 * math.pi)]
    expected = official(x, pos, latent_steps=3)  # (b, t, nx, ny, 1)
    got = ours(x)
    assert got.shape == (2, 10, 8, 3)
    torch.testing.assert_close(got, expected.squeeze(-1).permute(0, 2, 3, 1), atol=1e-10, rtol=1e-10)
    # fewer latent steps (the official curriculum) = the first frames
    torch.testing.assert_close(ours(x, latent_steps=2), got[..., :2], atol=0, rtol=0)


def test_smoke3d_model_matches_the_official_arithmetic():
    torch.manual_seed(7)
    kwargs = dict(dim=16, depth=1, heads=2, dim_head=6, kernel_multiplier=3, latent_multiplier=1.5)
    official = perturb(OfficialSmoke3d(2, 3, steps=2, padding=2, **kwargs)).double()
    ours = FactFormerSmoke3D(in_channels=6, out_channels=4, fields=2, padding=2, **kwargs)
    ours = copy_into(ours, official, "factformer_3d").double()
    x = torch.randn(2, 6, 4, 8, 6, dtype=torch.float64)  # (B, X, Y, Z, T_in * fields), frame-major
    official_in = x.unflatten(-1, (3, 2)).permute(0, 5, 4, 1, 2, 3)  # (b, fields, T_in, X, Y, Z)
    pos = [official_pos(n, 8.0, padding=2) for n in (6, 4, 8)]
    expected = official(official_in, pos, latent_steps=2)  # (b, T_out, X, Y, Z, fields)
    got = ours(x)
    assert got.shape == (2, 6, 4, 8, 4)
    torch.testing.assert_close(got, expected.permute(0, 2, 3, 4, 1, 5).flatten(-2), atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------------------------------------ contract


def test_models_run_at_two_resolutions():
    torch.manual_seed(8)
    model = FactFormerDarcy2D(dim=16, depth=1, heads=2, dim_head=8, kernel_multiplier=2)
    for n in (32, 64, 33):
        out = model(torch.randn(1, n, n, 1))
        assert out.shape == (1, n, n, 1) and torch.isfinite(out).all()
    km = FactFormerKolmogorov2D(in_channels=4, out_channels=2, dim=16, depth=1, heads=2, dim_head=8)
    for n in (32, 64):
        assert km(torch.randn(1, n, n, 4)).shape == (1, n, n, 2)
    smoke = FactFormerSmoke3D(in_channels=4, out_channels=2, fields=2, dim=16, depth=1, heads=2, dim_head=8)
    for sizes in ((8, 8, 8), (7, 9, 5)):  # odd sizes: the official scale_factor=2 upsampling cannot do these
        out = smoke(torch.randn(1, *sizes, 4))
        assert out.shape == (1, *sizes, 2) and torch.isfinite(out).all()


def test_gradients_reach_every_parameter():
    torch.manual_seed(9)
    for model in (
        FactFormerKolmogorov2D(in_channels=3, out_channels=2, dim=16, depth=1, heads=2, dim_head=8),
        FactFormerSmoke3D(in_channels=4, out_channels=4, fields=2, dim=16, depth=1, heads=2, dim_head=8, padding=1),
    ):
        x = model.example_inputs(2)["x"].requires_grad_(True)
        model(**{"x": x}).square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_clear_errors():
    block = FABlock2D(16, heads=2, dim_head=8, kernel_multiplier=2)
    with pytest.raises(ValueError, match="channels-last"):
        block(torch.randn(2, 8, 16))  # rank
    with pytest.raises(ValueError, match="channels-last"):
        block(torch.randn(2, 8, 8, 15))  # channels
    with pytest.raises(TypeError, match="floating"):
        block(torch.ones(2, 8, 8, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="coords"):
        block(torch.randn(2, 8, 8, 16), [torch.linspace(0, 1, 8)])
    with pytest.raises(ValueError, match="even"):
        FABlock2D(16, heads=2, dim_head=3, kernel_multiplier=1)
    model = FactFormerDarcy2D(dim=16, depth=1, heads=2, dim_head=8)
    with pytest.raises(ValueError, match=r"\(batch, n, n, 1\)"):
        model(torch.randn(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\(batch, n, n, 1\)"):
        model(torch.randn(2, 8, 8, 8, 1))
    with pytest.raises(ValueError, match="at least 2 points"):
        model(torch.randn(2, 8, 1, 1))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(2, 8, 8, 1, dtype=torch.int32))
    km = FactFormerKolmogorov2D(in_channels=3, out_channels=2, dim=16, depth=1, heads=2, dim_head=8)
    with pytest.raises(ValueError, match="latent_steps"):
        km(torch.randn(1, 8, 8, 3), latent_steps=3)
    with pytest.raises(ValueError, match="multiples of fields"):
        FactFormerSmoke3D(in_channels=6, out_channels=4, fields=4, dim=16, depth=1, heads=2, dim_head=8)
    with pytest.raises(ValueError, match="latent head"):
        FactFormerKolmogorov2D(dim=20, depth=1, heads=2, dim_head=8)


def test_checkpoint_filter():
    official = OfficialDarcy(1, 1, 16, 1, 2, 8, 2, resolution=8)
    ours = FactFormerDarcy2D(dim=16, depth=1, heads=2, dim_head=8)
    state = official.state_dict()
    assert "encoder.layers.0.1.to_y.1.out_ffn.fn.net.3.weight" in state  # the official layout really is mapped
    mapped = checkpoint_filter_fn({"model": state}, ours)  # the official trainers save {"model": ...}
    assert set(mapped) == set(ours.state_dict())
    assert checkpoint_filter_fn(ours.state_dict(), ours).keys() == ours.state_dict().keys()  # ours passes through
    with pytest.raises(ValueError, match="neither"):
        checkpoint_filter_fn({**state, "encoder.something_else": torch.zeros(1)}, ours)
    for name in ("factformer_darcy", "factformer_kolmogorov", "factformer_3d"):
        assert get_model_entry(name).filter_fn is checkpoint_filter_fn

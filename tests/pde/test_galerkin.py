"""Galerkin / Fourier Transformer: official parameter counts, equality with the official arithmetic (an oracle written
here from scaomath/galerkin-transformer @ f9e7d6a, step by step, on official state-dict keys), the official attention
dropout defect behind a flag, discretization invariance, resolution transfer, gradients and input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from formers.core.layers.linear_attention import LinearAttention
from formers.core.registry import get_model_entry
from formers.pde.models.galerkin import (
    GalerkinTransformer,
    SpectralConv,
    checkpoint_filter_fn,
    fourier_burgers,
    fourier_darcy,
    galerkin_burgers,
    galerkin_darcy,
    galerkin_darcy_inverse,
    grid_coordinates,
    scaler_sizes,
)

# ------------------------------------------------------------------------------------------- official key layout


def to_official(model: GalerkinTransformer) -> dict[str, Tensor]:
    """This model's state dict in the official ``SimpleTransformer`` / ``FourierTransformer2D`` key layout."""
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "lift":
            prefix = "feat_extract.id" if model.spatial_dims == 1 else "downscaler.id"
            out[f"{prefix}.{parts[1]}"] = value
        elif parts[0] == "downscaler":
            out[f"downscaler.downsample.{parts[1]}.conv.0.weight"] = value
        elif parts[0] == "upscaler":
            out["upscaler.upsample.conv.0.conv.0.weight"] = value
        elif parts[0] == "layers":
            layer, module, rest = parts[1], parts[2], parts[3:]
            base = f"encoder_layers.{layer}"
            if module == "ffn":
                out[f"{base}.ff.{rest[0].replace('fc', 'lr')}.{rest[1]}"] = value
            elif rest[0] == "qkv":
                for i, chunk in enumerate(value.chunk(3)):
                    out[f"{base}.attn.linears.{i}.{rest[1]}"] = chunk
            elif rest[0] == "proj":
                out[f"{base}.attn.fc.{rest[1]}"] = value
            else:  # q_norm / k_norm / v_norm: (heads, 1, d_k) -> one LayerNorm per head
                which = rest[0][0].upper()
                for h in range(value.shape[0]):
                    out[f"{base}.attn.norm_{which}.{h}.{rest[1]}"] = value[h, 0]
        else:  # decoder
            name = ".".join(parts[1:])
            name = name.replace("convs.", "spectral_conv.").replace("head.", "regressor.").replace("layers.", "ff.")
            out[f"regressor.{name}"] = value
    return out


def randomized(sd: dict[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """Official-layout weights of O(1) effect everywhere (the official init makes attention and the spectral weights
    tiny, which would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sd.items():
        noise = torch.randn(value.shape, generator=gen, dtype=value.dtype)
        if ".norm_" in key:
            out[key] = (1.0 if key.endswith("weight") else 0.0) + 0.2 * noise
        elif "fourier_weight" in key:
            out[key] = noise / value.shape[0]
        elif value.ndim == 1:
            out[key] = 0.1 * noise
        else:
            out[key] = noise / math.sqrt(value[0].numel())
    return out


def load_official(model: GalerkinTransformer, seed: int = 0) -> dict[str, Tensor]:
    official = randomized(to_official(model), seed)
    model.load_state_dict(checkpoint_filter_fn(official, model))
    return official


# ---------------------------------------------------------------------------------- oracle: the official arithmetic


def _linear(x: Tensor, sd: dict, name: str) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def oracle_attention(x, pos, sd, name, n_head, kind, eps, defect=False):
    """``SimpleAttention.forward`` + ``linear_attention`` / ``attention`` (attn_norm, layer norms per head)."""
    bsz, _, d_model = x.shape
    d_k = d_model // n_head
    query, key, value = [
        _linear(x, sd, f"{name}.linears.{i}").view(bsz, -1, n_head, d_k).transpose(1, 2) for i in range(3)
    ]

    def per_head(t, which):
        weights = [(sd[f"{name}.norm_{which}.{i}.weight"], sd[f"{name}.norm_{which}.{i}.bias"]) for i in range(n_head)]
        return torch.stack([F.layer_norm(t[:, i], (d_k,), w, b, eps) for i, (w, b) in enumerate(weights)], dim=1)

    if kind == "galerkin":
        key, value = per_head(key, "K"), per_head(value, "V")
    else:
        key, query = per_head(key, "K"), per_head(query, "Q")
    pos = pos.unsqueeze(1).repeat([1, n_head, 1, 1])
    query, key, value = [torch.cat([pos, t], dim=-1) for t in (query, key, value)]
    if kind == "galerkin":
        seq_len = query.size(-2)
        p_attn = torch.matmul(key.transpose(-2, -1), value) / seq_len
        if defect:
            p_attn = F.dropout(p_attn)  # the official call: p = 0.5, training = True
        out = torch.matmul(query, p_attn)
    else:
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
        p_attn = scores / scores.size(-1)
        if defect:
            p_attn = F.dropout(p_attn)
        out = torch.matmul(p_attn, value)
    pos_dim = pos.size(-1)
    out = out.transpose(1, 2).contiguous().view(bsz, -1, n_head * (d_k + pos_dim))
    return _linear(out, sd, f"{name}.fc")


def oracle_encoder(x, pos, sd, depth, n_head, kind, eps, defect=False):
    """``SimpleTransformerEncoderLayer`` x depth, ``layer_norm=False`` (dropouts are identities in eval)."""
    for layer in range(depth):
        name = f"encoder_layers.{layer}"
        x = x + oracle_attention(x, pos, sd, f"{name}.attn", n_head, kind, eps, defect)
        x = x + _linear(F.relu(_linear(x, sd, f"{name}.ff.lr1")), sd, f"{name}.ff.lr2")
    return x


def _complex_matmul(a, b, equation):
    """``complex_matmul_1d/2d``: real and imaginary parts in the last dim."""
    real = torch.einsum(equation, a[..., 0], b[..., 0]) - torch.einsum(equation, a[..., 1], b[..., 1])
    imag = torch.einsum(equation, a[..., 1], b[..., 0]) + torch.einsum(equation, a[..., 0], b[..., 1])
    return torch.stack([real, imag], dim=-1)


def oracle_spectral_conv_1d(x, sd, name, modes):
    """``SpectralConv1d.forward``."""
    seq_len = x.size(1)
    res = _linear(x, sd, f"{name}.linear")
    x = x.permute(0, 2, 1)
    x_ft = torch.fft.rfft(x, n=seq_len, norm="ortho")
    x_ft = torch.stack([x_ft.real, x_ft.imag], dim=-1)
    out_ft = _complex_matmul(x_ft[:, :, :modes], sd[f"{name}.fourier_weight"], "bix,iox->box")
    out_ft = F.pad(out_ft, (0, 0, 0, seq_len // 2 + 1 - modes), "constant", 0)
    out_ft = torch.complex(out_ft[..., 0], out_ft[..., 1])
    x = torch.fft.irfft(out_ft, n=seq_len, norm="ortho").permute(0, 2, 1)
    return F.silu(x + res)


def oracle_spectral_conv_2d(x, sd, name, modes):
    """``SpectralConv2d.forward`` (square grid)."""
    batch_size, n = x.size(0), x.size(1)
    res = _linear(x, sd, f"{name}.linear")
    x = x.permute(0, 3, 1, 2)
    x_ft = torch.fft.rfft2(x, s=(n, n), norm="ortho")
    x_ft = torch.stack([x_ft.real, x_ft.imag], dim=-1)
    w0, w1 = sd[f"{name}.fourier_weight.0"], sd[f"{name}.fourier_weight.1"]
    out_ft = torch.zeros(batch_size, w0.shape[1], n, n // 2 + 1, 2, dtype=x.dtype)
    out_ft[:, :, :modes, :modes] = _complex_matmul(x_ft[:, :, :modes, :modes], w0, "bixy,ioxy->boxy")
    out_ft[:, :, -modes:, :modes] = _complex_matmul(x_ft[:, :, -modes:, :modes], w1, "bixy,ioxy->boxy")
    out_ft = torch.complex(out_ft[..., 0], out_ft[..., 1])
    x = torch.fft.irfft2(out_ft, s=(n, n), norm="ortho").permute(0, 2, 3, 1)
    return F.silu(x + res)


def oracle_burgers(node, sd, depth, n_head, kind, modes, eps=1e-5, defect=False):
    """``SimpleTransformer.forward``: Identity(in, d) feature extractor, encoder, ``SpectralRegressor`` (1-D)."""
    n = node.size(1)
    pos = torch.linspace(0, 1, n, dtype=node.dtype)[None, :, None].repeat(node.size(0), 1, 1)
    x = _linear(node, sd, "feat_extract.id")
    x = oracle_encoder(x, pos, sd, depth, n_head, kind, eps, defect)
    for j in range(2):
        x = oracle_spectral_conv_1d(x, sd, f"regressor.spectral_conv.{j}", modes)
    return _linear(F.silu(_linear(x, sd, "regressor.regressor.0")), sd, "regressor.regressor.2")


def _mesh(n, dtype):
    """``DarcyDataset.get_grid``: ``np.meshgrid(x, y)`` ('xy' indexing), nodes in row-major order."""
    line = torch.linspace(0, 1, n, dtype=dtype)
    return torch.meshgrid(line, line, indexing="xy")


def oracle_darcy(node, sd, cfg):
    """``FourierTransformer2D.forward`` with the interp downscaler (scale factor), interp upscaler and a spectral
    (``ifft2``) or pointwise regressor with ``spacial_fc``; ``cfg`` holds the official settings."""
    bsz, dtype = node.size(0), node.dtype
    act = F.relu if cfg["down_act"] == "relu" else F.silu
    factor, n_c = cfg["factor"], cfg["n_c"]

    def block(x, weight, activation):  # Conv2dResBlock: conv (no bias) -> dropout -> activation
        return activation(F.conv2d(x, weight, padding=1))

    def interp(x, **kw):
        return F.interpolate(x, mode="bilinear", align_corners=True, **kw)

    # DownScaler / Interp2dEncoder
    x = node.permute(0, 3, 1, 2)
    conv = "downscaler.downsample.conv{}.conv.0.weight"
    x = block(x, sd[conv.format(0)], act)
    x = act(interp(x, scale_factor=factor, recompute_scale_factor=True))
    x1 = block(x, sd[conv.format(1)], act)
    x2 = block(x1, sd[conv.format(2)], act)
    x3 = block(x2, sd[conv.format(3)], act)
    x = act(interp(torch.cat([x1, x2, x3], dim=1), scale_factor=factor, recompute_scale_factor=True))
    x = x.permute(0, 2, 3, 1)
    n_hidden = x.size(-1)
    x = x.reshape(bsz, -1, n_hidden)
    px, py = _mesh(n_c, dtype)
    pos = torch.stack([px.ravel(), py.ravel()], dim=-1)[None].repeat(bsz, 1, 1)
    x = oracle_encoder(x, pos, sd, cfg["depth"], cfg["n_head"], cfg["kind"], cfg["eps"])
    x = x.view(bsz, n_c, n_c, n_hidden)
    # UpScaler / Interp2dUpsample: interp -> Conv2dResBlock -> dropout -> activation -> interp
    x = interp(x.permute(0, 3, 1, 2), size=cfg["up_size"][0])
    x = F.silu(block(x, sd["upscaler.upsample.conv.0.conv.0.weight"], F.silu))
    x = interp(x, size=cfg["up_size"][1]).permute(0, 2, 3, 1)
    gx, gy = _mesh(cfg["up_size"][1][0], dtype)
    grid = torch.stack([gx, gy], dim=-1)[None].repeat(bsz, 1, 1, 1)
    x = _linear(torch.cat([x, grid], dim=-1), sd, "regressor.fc")
    if cfg["decoder"] == "spectral":
        for j in range(2):
            x = oracle_spectral_conv_2d(x, sd, f"regressor.spectral_conv.{j}", cfg["modes"])
        x = _linear(F.silu(_linear(x, sd, "regressor.regressor.0")), sd, "regressor.regressor.2")
    else:
        x = _linear(F.silu(_linear(x, sd, "regressor.ff.0.0")), sd, "regressor.out")
    if cfg["dirichlet"]:
        x = F.pad(x[:, 1:-1, 1:-1].contiguous(), (0, 0, 1, 1, 1, 1), "constant", 0)
    return x


# ------------------------------------------------------------------------------------------------------ counts


@pytest.mark.parametrize(
    ("factory", "count"),
    [
        (galerkin_burgers, 530_305),
        (fourier_burgers, 530_305),
        (galerkin_darcy, 2_220_829),
        (fourier_darcy, 2_220_829),
        (galerkin_darcy_inverse, 2_383_873),
    ],
)
def test_official_parameter_counts(factory, count) -> None:
    assert factory().num_parameters() == count


def test_registered_with_the_key_map() -> None:
    for name in ("galerkin_burgers", "fourier_burgers", "galerkin_darcy", "fourier_darcy", "galerkin_darcy_inverse"):
        assert get_model_entry(name).filter_fn is checkpoint_filter_fn


def test_official_initialisation() -> None:
    for factory, gain in ((galerkin_burgers, 1e-2), (fourier_burgers, 1e-3)):
        attn = factory().layers[0].attn
        assert torch.equal(attn.qkv.bias, torch.zeros_like(attn.qkv.bias))
        for block in attn.qkv.weight.chunk(3):  # xavier_uniform(gain) on each 96 x 96 block, plus 0.01 I
            off_diag = block - 0.01 * torch.eye(96)
            bound = gain * math.sqrt(6 / (96 + 96))
            assert off_diag.abs().max() <= bound * 1.0001 and off_diag.abs().max() > 0.9 * bound
    model = galerkin_darcy()
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())  # no LayerNorm on the residual stream
    assert model.layers[0].attn.k_norm.eps == 1e-7 and isinstance(model.layers[0].ffn.act, torch.nn.ReLU)


def test_scaler_sizes_follow_the_official_recipe() -> None:
    # DarcyDataset.get_scaler_sizes: 141 -> 43 factor 0.555 (78 by scale factor, 77 up), 211 -> 61 factor 0.54
    assert scaler_sizes(141, 43) == (78, 77)
    assert scaler_sizes(211, 61) == (113, 113)
    assert scaler_sizes(141, 36) == (71, 71)
    assert scaler_sizes(85, 29) == (50, 49)


# ---------------------------------------------------------------------------------------------------- key map


def test_checkpoint_filter_fn_round_trip_and_errors() -> None:
    model = GalerkinTransformer(
        spatial_dims=2, dim=12, depth=2, num_heads=2, freq_dim=8, modes=3, coarse_size=5, decoder_grid=True
    )
    official = to_official(model)
    assert "encoder_layers.1.attn.norm_V.1.bias" in official
    assert "regressor.spectral_conv.1.fourier_weight.1" in official
    mapped = checkpoint_filter_fn({"state_dict": {f"module.{k}": v for k, v in official.items()}}, model)
    assert mapped.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(mapped[key], value), key
    assert checkpoint_filter_fn(model.state_dict(), model).keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="neither"):
        checkpoint_filter_fn({**official, "normalizer.mean": torch.zeros(1)}, model)
    incomplete = {k: v for k, v in official.items() if k != "encoder_layers.0.attn.linears.2.weight"}
    with pytest.raises(ValueError, match="W_Q, W_K and W_V"):
        checkpoint_filter_fn(incomplete, model)
    with pytest.raises(TypeError, match="state dict"):
        checkpoint_filter_fn([1, 2], model)


# ------------------------------------------------------------------------------------------ equality with oracle


@pytest.mark.parametrize("kind", ["galerkin", "fourier"])
def test_burgers_equals_official_arithmetic(kind: str) -> None:
    model = (galerkin_burgers if kind == "galerkin" else fourier_burgers)().eval()
    sd = load_official(model)
    x = torch.randn(2, 128, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = oracle_burgers(x, sd, depth=4, n_head=1, kind=kind, modes=16)
        got = model(x)
    assert want.abs().max() > 0.1  # the check is not about tiny numbers
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)  # float32 rounding through 4 layers of O(1) weights
    model.double()
    sd64 = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        want64 = oracle_burgers(x.double(), sd64, depth=4, n_head=1, kind=kind, modes=16)
        torch.testing.assert_close(model(x.double()), want64, atol=1e-12, rtol=1e-10)


_TINY_DARCY = {
    "dim": 12,
    "depth": 2,
    "num_heads": 2,
    "ffn_dim": 24,
    "freq_dim": 8,
    "decoder_width": 8,
    "modes": 3,
    "coarse_size": 8,
}
# official recipe for 21 -> 8: factor 0.62 (21 -> 13 -> 8 by scale factor), upscaler sizes ((12, 12), (21, 21))
_TINY_ORACLE = {"depth": 2, "n_head": 2, "modes": 3, "factor": 0.62, "n_c": 8, "eps": 1e-7}


@pytest.mark.parametrize("kind", ["galerkin", "fourier"])
def test_small_darcy_equals_official_arithmetic(kind: str) -> None:
    model = (galerkin_darcy if kind == "galerkin" else fourier_darcy)(**_TINY_DARCY).double().eval()
    sd = load_official(model, seed=1)
    x = torch.randn(2, 21, 21, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cfg = {**_TINY_ORACLE, "kind": kind, "up_size": ((12, 12), (21, 21))}
    cfg.update(down_act="relu", decoder="spectral", dirichlet=True)
    with torch.no_grad():
        want = oracle_darcy(x, sd, cfg)
        got = model(x)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_darcy_config_at_141_equals_official_arithmetic() -> None:
    """The registered configuration at its own sizes (141 -> 78 -> 43, up 77 -> 141)."""
    model = galerkin_darcy().double().eval()
    sd = load_official(model, seed=2)
    x = torch.randn(1, 141, 141, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    cfg = {"depth": 6, "n_head": 4, "kind": "galerkin", "modes": 12, "factor": 0.555, "n_c": 43, "eps": 1e-7}
    cfg.update(up_size=((77, 77), (141, 141)), down_act="relu", decoder="spectral", dirichlet=True)
    with torch.no_grad():
        want = oracle_darcy(x, sd, cfg)
        got = model(x)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_small_inverse_darcy_equals_official_arithmetic() -> None:
    """Pointwise decoder, SiLU downscaler, output on the coarse grid (upscaler sizes (8, 8) -> (8, 8))."""
    model = galerkin_darcy_inverse(**{**_TINY_DARCY, "decoder_width": None}).double().eval()
    sd = load_official(model, seed=3)
    x = torch.randn(2, 21, 21, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    cfg = {**_TINY_ORACLE, "kind": "galerkin", "up_size": ((8, 8), (8, 8))}
    cfg.update(down_act="silu", decoder="pointwise", dirichlet=False)
    with torch.no_grad():
        want = oracle_darcy(x, sd, cfg)
        got = model(x)
    assert got.shape == (2, 8, 8, 1)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------------------------- the dropout defect


def test_eval_is_deterministic_unless_the_official_defect_is_asked_for() -> None:
    x = torch.randn(2, 64, 1)
    model = galerkin_burgers(depth=2).eval()
    load_official(model)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    defect = galerkin_burgers(depth=2, official_dropout=True).eval()
    defect.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (defect(x) - defect(x)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["galerkin", "fourier"])
def test_official_dropout_reproduces_the_official_masks(kind: str) -> None:
    """Same seed, same draws: ``official_dropout=True`` in eval equals the official forward with its ``F.dropout``."""
    model = GalerkinTransformer(
        spatial_dims=1, dim=16, depth=2, num_heads=2, freq_dim=8, modes=4, decoder_head_dim=8, attention=kind,
        official_dropout=True,
    ).eval()  # fmt: skip
    sd = load_official(model)
    x = torch.randn(2, 32, 1)
    with torch.no_grad():
        torch.manual_seed(7)
        got = model(x)
        torch.manual_seed(7)
        want = oracle_burgers(x, sd, depth=2, n_head=2, kind=kind, modes=4, defect=True)
        torch.manual_seed(8)
        other = model(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - other).abs().max() > 1e-4


def test_training_dropout_on_the_attention_matrix() -> None:
    model = galerkin_darcy(**_TINY_DARCY, encoder_dropout=0.0, ffn_dropout=0.0, downscaler_dropout=0.0).train()
    x = torch.randn(1, 16, 16, 1)
    assert torch.equal(model(x), model(x))  # every dropout at 0: training is deterministic too
    for layer in model.layers:
        layer.attn.attn_drop = 0.5
    assert not torch.equal(model(x), model(x))


# ------------------------------------------------------------------------------- resolution and invariance


def _smooth(n: int) -> Tensor:
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    return (torch.sin(2 * math.pi * t) + 0.5 * torch.cos(6 * math.pi * t) + t**2)[None, :, None]


def test_discretization_invariance_of_the_galerkin_encoder() -> None:
    """One smooth function on nested grids (n = 129, 257, 513: each shares every other point of the next) through
    the untrained Burgers model: the attention term and the encoder's output at the shared points differ by well
    under 1 %, and the difference halves with each refinement (first order: the Galerkin integral ``(1/n) Σ k vᵀ``
    is a Riemann sum on the grid), while the attention term is a sizeable part of the output."""
    torch.manual_seed(0)
    model = galerkin_burgers().double().eval()
    outs = {}
    with torch.no_grad():
        for n in (129, 257, 513):
            h = lift = model.lift(_smooth(n))
            pos = grid_coordinates((n,), dtype=torch.float64)
            attn_term = model.layers[0].attn(h, pos=pos)
            for layer in model.layers:
                h = layer(h, pos)
            outs[n] = (h[0], attn_term[0])
    assert outs[257][1].norm() > 0.2 * lift[0, ::2].norm()  # the attention term is not negligible

    def rel(n):  # relative difference between grids n and 2n - 1 at the shared points: encoder, attention term
        return [((a - b[::2]).norm() / a.norm()).item() for a, b in zip(outs[n], outs[2 * n - 1], strict=True)]

    coarse, fine = rel(129), rel(257)
    assert max(fine) < 3e-3, fine
    for a, b in zip(coarse, fine, strict=True):
        assert 1.6 < a / b < 2.4, (coarse, fine)


@pytest.mark.parametrize("size", [12, 21, 33])
def test_darcy_any_resolution(size: int) -> None:
    model = galerkin_darcy(**_TINY_DARCY).eval()
    inverse = galerkin_darcy_inverse(**{**_TINY_DARCY, "decoder_width": None}).eval()
    x = torch.randn(2, size, size, 1)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, size, size, 1)
        assert torch.all(out[:, 0] == 0) and torch.all(out[:, :, -1] == 0)  # Dirichlet boundary
        assert inverse(x).shape == (2, 8, 8, 1)  # the inverse problem's coarse output grid
        assert model(torch.randn(1, size, size + 4, 1)).shape == (1, size, size + 4, 1)  # rectangular grids too


def test_burgers_any_resolution_including_coarse_grids() -> None:
    model = galerkin_burgers().eval()
    with torch.no_grad():
        for n in (2, 17, 30, 64, 100):  # below n = 30 the 16 modes are truncated to the n // 2 + 1 the grid has
            assert model(torch.randn(1, n, 1)).shape == (1, n, 1)


def test_spectral_conv_small_grid_keeps_the_frequencies_it_holds() -> None:
    """A 2-D grid of fewer rows than modes (where the official code fails): each frequency the grid holds uses its own
    weight, as at full resolution, so a field made of those frequencies gives the full-resolution layer's output."""
    conv = SpectralConv(2, 3, modes=6, spatial_dims=2).double()
    with torch.no_grad():
        for weight in conv.fourier_weight:
            weight.normal_()

    def field(n):  # frequencies (ky, kx) = (1, 1) and (-1, 1): held by a 4 x 4 grid (no Nyquist)
        line = torch.arange(n, dtype=torch.float64) / n
        yy, xx = torch.meshgrid(line, line, indexing="ij")
        return torch.stack([torch.cos(2 * math.pi * (yy + xx)), torch.sin(2 * math.pi * (xx - yy))], -1)[None]

    with torch.no_grad():
        small, large = conv(field(4)), conv(field(16))
    torch.testing.assert_close(small, large[:, ::4, ::4])


# --------------------------------------------------------------------------------------- gradients and errors


@pytest.mark.parametrize("factory", [galerkin_burgers, fourier_darcy, galerkin_darcy_inverse])
def test_gradients_reach_every_parameter(factory) -> None:
    model = factory(**get_model_entry(factory.__name__).test_kwargs).train()
    out = model(**model.example_inputs(2))
    assert out.shape == model.expected_output_shape(2)
    (out * torch.randn_like(out)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_input_errors() -> None:
    burgers = galerkin_burgers(**get_model_entry("galerkin_burgers").test_kwargs)
    darcy = galerkin_darcy(**_TINY_DARCY)
    with pytest.raises(ValueError, match=r"\(B, n, 1\)"):
        burgers(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"\(B, n, 1\)"):
        burgers(torch.randn(2, 16, 3))
    with pytest.raises(ValueError, match=r"\(B, H, W, 1\)"):
        darcy(torch.randn(2, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        darcy(torch.ones(2, 16, 16, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 points"):
        burgers(torch.randn(2, 1, 1))
    with pytest.raises(ValueError, match="attention must be"):
        GalerkinTransformer(attention="softmax")
    with pytest.raises(ValueError, match="coarse_size"):
        GalerkinTransformer(spatial_dims=1, coarse_size=8)
    with pytest.raises(ValueError, match="coarse_size"):
        GalerkinTransformer(spatial_dims=2, coarse_size=1)
    with pytest.raises(ValueError, match="output_grid"):
        GalerkinTransformer(spatial_dims=2, output_grid="coarse")
    with pytest.raises(ValueError, match="decoder"):
        GalerkinTransformer(decoder="attention")
    with pytest.raises(ValueError, match="boundary"):
        GalerkinTransformer(boundary="periodic")


# --------------------------------------------------------------------------- core LinearAttention extension


def test_linear_attention_pos_dim_is_cao_simple_attention() -> None:
    torch.manual_seed(0)
    layer = LinearAttention(
        8, num_heads=2, kind="galerkin", pos_dim=2, norm_eps=1e-7, qkv_xavier_gain=0.5, qkv_diagonal=0.1
    ).double()
    assert layer.proj.in_features == 2 * (4 + 2)
    assert torch.equal(layer.qkv.bias, torch.zeros(24, dtype=torch.float64))
    with torch.no_grad():
        layer.k_norm.weight.normal_()
        layer.v_norm.bias.normal_()
    x, pos = torch.randn(3, 10, 8, dtype=torch.float64), torch.rand(1, 10, 2, dtype=torch.float64)
    sd = {f"a.linears.{i}.{p}": t for p in ("weight", "bias") for i, t in enumerate(getattr(layer.qkv, p).chunk(3))}
    for which, norm in (("K", layer.k_norm), ("V", layer.v_norm)):
        for h in range(2):
            sd[f"a.norm_{which}.{h}.weight"], sd[f"a.norm_{which}.{h}.bias"] = norm.weight[h, 0], norm.bias[h, 0]
    sd["a.fc.weight"], sd["a.fc.bias"] = layer.proj.weight, layer.proj.bias
    with torch.no_grad():
        want = oracle_attention(x, pos.expand(3, -1, -1), sd, "a", 2, "galerkin", 1e-7)
        torch.testing.assert_close(layer(x, pos=pos), want)
    with pytest.raises(ValueError, match="is required"):
        layer(x)
    with pytest.raises(ValueError, match="pos must have shape"):
        layer(x, pos=torch.rand(1, 9, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="pos_dim=0"):
        LinearAttention(8, 2)(x.float(), pos=pos.float())
    with pytest.raises(ValueError, match="pos_dim"):
        LinearAttention(8, 2, pos_dim=-1)
    default = LinearAttention(8, 2)  # unchanged defaults: no coordinates, PyTorch init, proj inner -> dim
    assert default.pos_dim == 0 and default.proj.in_features == 8 and default.qkv.bias.abs().sum() > 0

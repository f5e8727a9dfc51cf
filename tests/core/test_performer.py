"""T2T-style Performer attention: equal to a transcription of the official ``token_performer.py`` arithmetic, an
unbiased estimate of ``exp(qᵀk)``-kernel attention, float32 under autocast, frozen random features."""

from __future__ import annotations

import math

import pytest
import torch

from formers.core.layers import PerformerAttention
from formers.core.layers.performer import prm_attention, prm_exp


def _official_prm_exp(x, w, m):
    """yitu-opensource/T2T-ViT ``Token_performer.prm_exp``, verbatim arithmetic (x: (B, T, hs), w: (m, hs))."""
    xd = ((x * x).sum(dim=-1, keepdim=True)).repeat(1, 1, m) / 2
    wtx = torch.einsum("bti,mi->btm", x.float() if x.dtype != torch.float64 else x, w)
    return torch.exp(wtx - xd) / math.sqrt(m)


def _official_single_attn(module: PerformerAttention, x):
    """``Token_performer.single_attn`` (kqv split k, q, v; v as the residual), on ``module``'s weights."""
    emb, m, eps = module.emb, module.m, module.epsilon
    k, q, v = torch.split(module.kqv(x), emb, dim=-1)
    kp, qp = _official_prm_exp(k, module.w, m), _official_prm_exp(q, module.w, m)
    D = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(dim=2)  # noqa: N806 - official name
    kptv = torch.einsum("bin,bim->bnm", v.float() if v.dtype != torch.float64 else v, kp)
    y = torch.einsum("bti,bni->btn", qp, kptv) / (D.repeat(1, 1, emb) + eps)
    return v + module.dp(module.proj(y))


def _x(b=2, n=49, d=27, dtype=torch.float32):
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(3), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_official_token_performer(dtype):
    layer = PerformerAttention(27, out_dim=16, kernel_ratio=0.5, proj_drop=0.1, v_residual=True).to(dtype).eval()
    x = _x(dtype=dtype) * 0.5
    with torch.no_grad():
        tol = {"atol": 1e-12, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
        torch.testing.assert_close(layer(x), _official_single_attn(layer, x), **tol)


def test_without_v_residual_is_the_projected_attention():
    layer = PerformerAttention(27, out_dim=16).eval()
    x = _x()
    with torch.no_grad():
        k, q, v = layer.kqv(x).split(16, dim=-1)
        expected = layer.proj(prm_attention(q, k, v, layer.w))
        torch.testing.assert_close(layer(x), expected)
        residual = PerformerAttention(27, out_dim=16, v_residual=True).eval()
        residual.load_state_dict(layer.state_dict())
        torch.testing.assert_close(residual(x) - v, expected, atol=1e-6, rtol=1e-5)


def test_random_features_are_an_unbiased_gaussian_kernel_estimate():
    """With many standard-Gaussian rows in w, φ(q)·φ(k) → exp(qᵀk) and the attention → softmax(q kᵀ) v."""
    gen = torch.Generator().manual_seed(0)
    d, m = 4, 200_000
    w = torch.randn(m, d, generator=gen, dtype=torch.float64)
    q, k, v = (0.3 * torch.randn(1, 6, d, generator=gen, dtype=torch.float64) for _ in range(3))
    kernel = prm_exp(q, w) @ prm_exp(k, w).transpose(-2, -1)
    torch.testing.assert_close(kernel, torch.exp(q @ k.transpose(-2, -1)), rtol=3e-2, atol=0)
    exact = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
    torch.testing.assert_close(prm_attention(q, k, v, w), exact, rtol=0, atol=2e-2)


def test_random_matrix_is_frozen_orthogonal_times_sqrt_m():
    layer = PerformerAttention(147, out_dim=64, kernel_ratio=0.5)
    assert layer.m == 32 and layer.w.shape == (32, 64) and not layer.w.requires_grad
    gram = layer.w @ layer.w.T
    torch.testing.assert_close(gram, 32.0 * torch.eye(32), atol=1e-4, rtol=0)
    # T2T's first token layer: kqv 147->192, proj 64->64, w 32x64 (frozen, but a parameter)
    assert sum(p.numel() for p in layer.parameters()) == 147 * 192 + 192 + 64 * 64 + 64 + 32 * 64
    assert "w" in layer.state_dict()


def test_gradients_reach_projections_not_w():
    layer = PerformerAttention(27, out_dim=16, v_residual=True)
    layer(_x()).square().sum().backward()
    assert layer.w.grad is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in (layer.kqv.weight, layer.proj.weight))


def test_multi_head_is_per_head_attention_with_shared_w():
    layer = PerformerAttention(24, out_dim=16, num_heads=2).eval()
    assert layer.w.shape == (4, 8)
    x = _x(d=24)
    with torch.no_grad():
        k, q, v = layer.kqv(x).split(16, dim=-1)
        heads = [prm_attention(q[..., s], k[..., s], v[..., s], layer.w) for s in (slice(0, 8), slice(8, 16))]
        torch.testing.assert_close(layer(x), layer.proj(torch.cat(heads, dim=-1)))


def test_float32_under_autocast():
    q, k, v = (_x(d=8) for _ in range(3))
    w = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = prm_attention(q, k, v, w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, prm_attention(q, k, v, w))


def test_bad_inputs_and_meta_build():
    layer = PerformerAttention(27, out_dim=16)
    with pytest.raises(ValueError, match="27"):
        layer(torch.randn(2, 5, 26))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.zeros(2, 5, 27, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        PerformerAttention(27, out_dim=16, num_heads=3)
    with pytest.raises(ValueError, match="random feature"):
        PerformerAttention(4, kernel_ratio=0.1)
    with torch.device("meta"):
        meta = PerformerAttention(576, out_dim=64)
    assert meta.w.is_meta and meta.w.shape == (32, 64)

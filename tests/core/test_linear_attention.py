"""Linear-attention kernels equal their quadratic references; the ``LinearAttention`` module's contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from _bench import benchmark_module
from formers.core.layers.linear_attention import LinearAttention
from formers.kernels import linear as L

KINDS = ("galerkin", "fourier", "normalized", "performer")


def _qkv(b=2, h=3, n=37, d=8, dtype=torch.float32, requires_grad=False):
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(b, h, n, d, generator=gen, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)]


def _mask(b=2, n=37):
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[0, -5:] = True
    mask[1, :3] = True
    return mask


def _projection(r=16, d=8, dtype=torch.float32):
    return L.orthogonal_random_features(r, d, torch.Generator().manual_seed(2), dtype=dtype)


PAIRS = {
    "galerkin": (L.galerkin_attention, L.galerkin_attention_reference),
    "fourier": (L.fourier_attention, L.fourier_attention_reference),
    "normalized": (L.normalized_linear_attention, L.normalized_linear_attention_reference),
    "performer": (
        lambda q, k, v, m=None: L.performer_attention(q, k, v, _projection(dtype=q.dtype), m),
        lambda q, k, v, m=None: L.performer_attention_reference(q, k, v, _projection(dtype=q.dtype), m),
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_matches_reference(kind: str, masked: bool) -> None:
    fast, ref = PAIRS[kind]
    q, k, v = _qkv()
    mask = _mask() if masked else None
    torch.testing.assert_close(fast(q, k, v, mask), ref(q, k, v, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_gradients_match_reference(kind: str) -> None:
    fast, ref = PAIRS[kind]
    inputs = _qkv(n=19, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 3, 19, 8, dtype=torch.float64)
    grads_fast = torch.autograd.grad(fast(*inputs, _mask(n=19)), inputs, grad_out)
    grads_ref = torch.autograd.grad(ref(*inputs, _mask(n=19)), inputs, grad_out)
    for got, want in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_padded_keys_do_not_matter() -> None:
    q, k, v = _qkv()
    mask = _mask()
    k2, v2 = k.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k2)] = 1e3
    v2[mask[:, None, :, None].expand_as(v2)] = -1e3
    for fast, _ in PAIRS.values():
        torch.testing.assert_close(fast(q, k, v, mask), fast(q, k2, v2, mask))


def test_normalized_rows_sum_to_one() -> None:
    q, k, _ = _qkv()
    ones = torch.ones(2, 3, 37, 1)
    out = L.normalized_linear_attention(q, k, ones, _mask())
    torch.testing.assert_close(out, torch.ones_like(out))


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("normalize", [False, True])
def test_causal_chunked_matches_masked_quadratic(chunk_size: int, normalize: bool) -> None:
    q, k, v = _qkv()
    if normalize:  # non-negative feature maps, as the normalized/performer kinds use
        q, k = q.softmax(-1), k.softmax(-1)
    got = L.causal_linear_attention(q, k, v, chunk_size, scale=0.3, normalize=normalize)
    want = L.causal_linear_attention_reference(q, k, v, scale=0.3, normalize=normalize)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_causal_gradients_match_reference() -> None:
    q, k, v = _qkv(n=23, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 3, 23, 8, dtype=torch.float64)
    got = torch.autograd.grad(L.causal_linear_attention(q, k, v, 7, scale=0.5), (q, k, v), grad_out)
    want = torch.autograd.grad(L.causal_linear_attention_reference(q, k, v, scale=0.5), (q, k, v), grad_out)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_causal_is_causal() -> None:
    q, k, v = _qkv()
    out = L.causal_linear_attention(q, k, v, 8)
    k2, v2 = k.clone(), v.clone()
    k2[..., 20:, :] += 1.0
    v2[..., 20:, :] -= 1.0
    torch.testing.assert_close(L.causal_linear_attention(q, k2, v2, 8)[..., :20, :], out[..., :20, :])


def test_causal_bad_arguments() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="chunk_size"):
        L.causal_linear_attention(q, k, v, 0)
    with pytest.raises(ValueError, match="lengths differ"):
        L.causal_linear_attention(q, k[..., :-1, :], v, 4)


def test_performer_approximates_softmax_attention() -> None:
    q, k, v = (0.5 * t for t in _qkv(b=1, h=2, n=64, d=16, dtype=torch.float64))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    errors = []
    for r in (8, 64, 1024):
        trials = []
        for seed in range(4):
            projection = L.orthogonal_random_features(r, 16, torch.Generator().manual_seed(seed), torch.float64)
            trials.append((L.performer_attention(q, k, v, projection) - exact).abs().mean().item())
        errors.append(sum(trials) / len(trials))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.05 * v.abs().mean().item()


def test_orthogonal_random_features_blocks_are_orthogonal() -> None:
    w = L.orthogonal_random_features(20, 8, torch.Generator().manual_seed(0), torch.float64)
    assert w.shape == (20, 8)
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=torch.float64))


def test_favor_feature_map_is_stable_and_positive() -> None:
    x = 30.0 * torch.randn(1, 1, 10, 8)
    features = L.favor_feature_map(x, _projection(), is_query=False)
    assert features.shape == (1, 1, 10, 16)
    assert torch.isfinite(features).all() and (features >= 0).all() and features.max() > 0


class _ShapeRecorder(TorchDispatchMode):
    """Records the largest number of elements of any tensor produced by an aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("causal", [False, True])
def test_galerkin_never_builds_a_score_matrix(causal: bool) -> None:
    n = 2048
    layer = LinearAttention(8, num_heads=2, kind="galerkin", causal=causal, chunk_size=64)
    x = torch.randn(1, n, 8, requires_grad=True)
    with _ShapeRecorder() as recorder:
        layer(x).sum().backward()
    assert recorder.largest < n * n // 8  # an (n, n) score matrix would be 4M elements; the largest here is O(n)
    assert recorder.largest <= 3 * n * 8


def test_module_layernorms_follow_cao() -> None:
    def norms(kind):
        layer = LinearAttention(16, 2, kind=kind)
        return [type(getattr(layer, f"{t}_norm")).__name__ != "Identity" for t in "qkv"]

    assert norms("galerkin") == [False, True, True]
    assert norms("fourier") == [True, True, False]
    assert norms("normalized") == norms("performer") == [False, False, False]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal", [False, True])
def test_module_shapes_and_gradients(kind: str, causal: bool) -> None:
    layer = LinearAttention(24, num_heads=3, kind=kind, causal=causal, chunk_size=4, head_dim=6)
    x = torch.randn(2, 11, 24)
    mask = None if causal else _mask(n=11)
    out = layer(x, key_padding_mask=mask)
    assert out.shape == (2, 11, 24)
    out.square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_module_causal_matches_masked_quadratic(kind: str) -> None:
    causal = LinearAttention(16, 2, kind=kind, causal=True, chunk_size=3).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    out = causal(x)
    for i in (0, 4, 9):  # the output at i equals the non-causal layer applied to the prefix x[:, : i + 1]
        full = LinearAttention(16, 2, kind=kind).double()
        full.load_state_dict(causal.state_dict())
        prefix = full(x[:, : i + 1])
        if kind in ("galerkin", "fourier"):  # quadrature weight 1/n uses the full length in the causal layer
            prefix = (prefix - full.proj.bias) * (i + 1) / 10 + full.proj.bias
        torch.testing.assert_close(out[:, i], prefix[:, i])


def test_module_performer_buffer_and_redraw() -> None:
    layer = LinearAttention(16, 2, kind="performer", nb_features=12)
    assert layer.projection.shape == (12, 8) and "projection" in layer.state_dict()
    assert not any(p is layer.projection for p in layer.parameters())
    before = layer.projection.clone()
    layer.redraw_projection(torch.Generator().manual_seed(5))
    assert not torch.equal(before, layer.projection)
    assert LinearAttention(16, 2, kind="performer").nb_features == round(8 * math.log(8))
    assert "kind='performer'" in repr(layer)


def test_module_errors() -> None:
    with pytest.raises(ValueError, match="kind"):
        LinearAttention(16, 2, kind="softmax")
    with pytest.raises(ValueError, match="divisible"):
        LinearAttention(10, 3)
    with pytest.raises(ValueError, match="nb_features"):
        LinearAttention(16, 2, kind="galerkin", nb_features=4)
    with pytest.raises(ValueError, match="redraw_projection"):
        LinearAttention(16, 2).redraw_projection()
    layer = LinearAttention(16, 2)
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.randn(4, 16))
    with pytest.raises(ValueError, match="16 channels"):
        layer(torch.randn(1, 4, 8))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(1, 4, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="bool"):
        layer(torch.randn(1, 4, 16), key_padding_mask=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(1, 4, 16), key_padding_mask=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="causal"):
        LinearAttention(16, 2, causal=True)(torch.randn(1, 4, 16), key_padding_mask=torch.zeros(1, 4, dtype=bool))


def test_benchmark_tiny_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with benchmark_module("linear_attention") as bench:
        metrics = bench.main(["--tiny", "--metrics-json", str(tmp_path / "m.json")])
    written = json.loads((tmp_path / "m.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == metrics
    for mode in ("fwd", "fwd_bwd"):
        assert metrics["speed"][mode]["sdpa_vs_galerkin"] > 0
        assert metrics["speed"][mode]["naive_vs_galerkin"] > 0
    assert [row["n"] for row in metrics["memory"]] == sorted(row["n"] for row in metrics["memory"])
    assert all(row["galerkin_peak_bytes"] > 0 and row["naive_peak_bytes"] > 0 for row in metrics["memory"])
    assert "x" in capsys.readouterr().out

"""DeepLab2 axial attention (``formers.core.layers.AxialAttention1d`` / ``AxialAttention2d``): shapes at odd sizes,
the relative-position indexing against an explicit distance-matrix oracle, the whole 1-D computation against a
loop-by-loop oracle of the official arithmetic, key padding (padded keys get no weight; the real positions equal the
unpadded computation in eval mode), any length up to 255 with one module, and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from formers.core.layers import AxialAttention1d, AxialAttention2d
from formers.core.layers.axial_attention import MAX_SPAN, relative_distance_index


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics, so eval mode is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5


def _official_distance_matrix(query_length: int, key_length: int) -> torch.Tensor:
    """DeepLab2 / kmax-deeplab ``_compute_relative_distance_matrix``, step by step."""
    key_index = torch.arange(key_length)
    query_index = torch.arange(query_length) + (key_length - query_length) // 2
    distance = key_index[None, :] - query_index[:, None]
    return distance + MAX_SPAN - 1


@pytest.mark.parametrize("length", [1, 2, 7, 33, 255])
def test_relative_index_equals_the_official_distance_matrix(length):
    assert torch.equal(relative_distance_index(length), _official_distance_matrix(length, length))
    layer = AxialAttention1d(4, 8, 8, num_heads=2)
    q_rpe, k_rpe, v_rpe = layer.relative_embeddings(length)
    index = _official_distance_matrix(length, length)
    for rpe, table in ((q_rpe, layer.query_rpe), (k_rpe, layer.key_rpe), (v_rpe, layer.value_rpe)):
        expected = table.weight[index.reshape(-1)].reshape(length, length, -1)  # the official gather
        assert torch.equal(rpe, expected)
        # entry (l, m) is the embedding of the distance m - l
        assert torch.equal(rpe[0, length - 1], table.weight[length - 1 + MAX_SPAN - 1])


def _oracle_1d(layer: AxialAttention1d, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """The official AxialAttention forward in eval mode, written with explicit loops over positions."""
    n, _, length = x.shape
    h, dk, dv = layer.num_heads, layer.key_depth // layer.num_heads, layer.value_depth // layer.num_heads

    def bn(norm, t, channel_dim=1):  # eval-mode BatchNorm as an affine map
        shape = [1] * t.dim()
        shape[channel_dim] = -1
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return (t - norm.running_mean.view(shape)) * scale.view(shape) + norm.bias.view(shape)

    qkv = bn(layer.norm_qkv, torch.einsum("oc,ncl->nol", layer.qkv.weight[:, :, 0], x))
    q = qkv[:, : h * dk].reshape(n, h, dk, length)
    k = qkv[:, h * dk : 2 * h * dk].reshape(n, h, dk, length)
    v = qkv[:, 2 * h * dk :].reshape(n, h, dv, length)
    out = torch.zeros(n, 2, h, dv, length)
    for b in range(n):
        for head in range(h):
            for l in range(length):  # noqa: E741 - the official index names
                logits = torch.zeros(3, length)
                for m in range(length):
                    dist = m - l + MAX_SPAN - 1
                    logits[0, m] = q[b, head, :, l] @ k[b, head, :, m]
                    logits[1, m] = q[b, head, :, l] @ layer.query_rpe.weight[dist]
                    logits[2, m] = k[b, head, :, m] @ layer.key_rpe.weight[dist]
                norm = layer.norm_similarity
                for i in range(3):
                    c = i * h + head  # channel of the (3 * heads) similarity BatchNorm
                    logits[i] = (logits[i] - norm.running_mean[c]) / math.sqrt(
                        norm.running_var[c] + norm.eps
                    ) * norm.weight[c] + norm.bias[c]
                logits = logits.sum(0)
                if pad is not None and not pad[b].all():
                    logits = logits.masked_fill(pad[b], float("-inf"))
                weights = torch.softmax(logits, dim=-1)
                if pad is not None and pad[b].all():
                    weights = torch.zeros_like(weights)
                for m in range(length):
                    dist = m - l + MAX_SPAN - 1
                    out[b, 0, head, :, l] += weights[m] * v[b, head, :, m]
                    out[b, 1, head, :, l] += weights[m] * layer.value_rpe.weight[dist]
    out = bn(layer.norm_output, out.reshape(n, 2 * h * dv, length))
    return out.reshape(n, 2, h * dv, length).sum(1)


def test_forward_equals_the_loop_oracle_with_and_without_padding():
    torch.manual_seed(0)
    layer = AxialAttention1d(6, 8, 12, num_heads=2).eval()
    _randomize_bn(layer)
    x = torch.randn(3, 6, 5)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True], [True] * 5])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _oracle_1d(layer, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x, pad), _oracle_1d(layer, x, pad), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [1, 3, 8, 13])
def test_1d_shapes_for_any_length_with_one_module(length):
    layer = AxialAttention1d(6, 8, 16, num_heads=4)
    out = layer(torch.randn(2, 6, length))
    assert out.shape == (2, 16, length) and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(1, 1), (3, 1), (5, 7), (9, 4)])
def test_2d_shapes_for_odd_sizes(size):
    layer = AxialAttention2d(6, 8, num_heads=2)
    out = layer(torch.randn(2, 6, *size))
    assert out.shape == (2, 16, *size) and torch.isfinite(out).all()


def test_lengths_beyond_255_are_a_clear_error():
    layer = AxialAttention1d(2, 2, 2, num_heads=1).eval()
    with torch.no_grad():
        assert layer(torch.randn(1, 2, 255)).shape == (1, 2, 255)
        with pytest.raises(ValueError, match="256 exceeds max_span=255"):
            layer(torch.randn(1, 2, 256))


def test_2d_equals_the_official_permutes_of_two_1d_layers():
    """Height axis on (N*W, C, H), then width axis on (N*H, V, W), with the official reshapes."""
    torch.manual_seed(1)
    layer = AxialAttention2d(4, 8, num_heads=2).eval()
    _randomize_bn(layer)
    x = torch.randn(2, 4, 5, 3)
    n, c, h, w = x.shape
    with torch.no_grad():
        y = x.permute(0, 3, 1, 2).contiguous().reshape(n * w, c, h)
        y = layer.height_axis(y)
        y = y.reshape(n, w, 16, h).permute(0, 3, 2, 1).contiguous().reshape(n * h, 16, w)
        y = layer.width_axis(y)
        y = y.reshape(n, h, 16, w).permute(0, 2, 1, 3).contiguous().reshape(n, 16, h, w)
        torch.testing.assert_close(layer(x), y, atol=0, rtol=0)


def test_padded_keys_get_no_weight_and_real_positions_equal_the_unpadded_computation():
    torch.manual_seed(2)
    layer = AxialAttention1d(6, 8, 8, num_heads=2).eval()
    _randomize_bn(layer)
    real = torch.randn(1, 6, 7)
    padded = torch.cat([real, 50 * torch.randn(1, 6, 4)], dim=-1)  # junk in the padding
    pad = torch.zeros(1, 11, dtype=torch.bool)
    pad[:, 7:] = True
    with torch.no_grad():
        alone = layer(real)
        out = layer(padded, pad)
        torch.testing.assert_close(out[..., :7], alone, atol=1e-5, rtol=1e-5)
        other = padded.clone()
        other[..., 7:] = torch.randn(1, 6, 4)  # other padding values: nothing changes on the real positions
        torch.testing.assert_close(layer(other, pad)[..., :7], out[..., :7], atol=0, rtol=0)


def test_2d_padding_mask_gives_the_unpadded_result_on_the_real_region():
    torch.manual_seed(3)
    layer = AxialAttention2d(4, 8, num_heads=2).eval()
    _randomize_bn(layer)
    real = torch.randn(1, 4, 5, 6)
    padded = torch.nn.functional.pad(real, (0, 3, 0, 2), value=7.0)
    pad = torch.ones(1, 7, 9, dtype=torch.bool)
    pad[:, :5, :6] = False
    with torch.no_grad():
        torch.testing.assert_close(layer(padded, pad)[..., :5, :6], layer(real), atol=1e-5, rtol=1e-5)


def test_fully_padded_sequences_give_zero_weights_not_nan_also_in_backward():
    layer = AxialAttention1d(4, 4, 4, num_heads=1)
    x = torch.randn(2, 4, 6, requires_grad=True)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1] = True
    out = layer(x, pad)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_gradients_reach_every_parameter_and_only_the_used_table_rows():
    layer = AxialAttention2d(4, 8, num_heads=2)
    x = torch.randn(2, 4, 3, 5, requires_grad=True)
    layer(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    rows = layer.height_axis.query_rpe.weight.grad.abs().sum(-1).nonzero().flatten()
    assert rows.min() >= MAX_SPAN - 1 - 2 and rows.max() <= MAX_SPAN - 1 + 2  # distances -2..2 on an axis of 3


def test_bad_inputs_are_clear_errors():
    layer = AxialAttention1d(4, 4, 4, num_heads=2)
    with pytest.raises(ValueError, match="4 input channels, got 3"):
        layer(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.randn(1, 4, 5, 1))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(1, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.bool"):
        layer(torch.randn(1, 4, 5), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="does not match"):
        layer(torch.randn(1, 4, 5), torch.zeros(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AxialAttention1d(4, 6, 4, num_heads=4)
    layer2d = AxialAttention2d(4, 4, num_heads=2)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        layer2d(torch.randn(1, 4, 3, 3), torch.zeros(1, 3, 4, dtype=torch.bool))


def test_official_initialisation():
    torch.manual_seed(0)
    layer = AxialAttention1d(64, 64, 128, num_heads=8)
    w = layer.qkv.weight
    assert w.shape == (256, 64, 1)
    assert w.abs().max() <= 2 * 64**-0.5 + 1e-6  # truncated at 2 std
    assert abs(w.std().item() - 64**-0.5 * 0.88) < 0.02  # std of a [-2, 2]-truncated normal is 0.88 sigma
    for table in (layer.query_rpe, layer.key_rpe, layer.value_rpe):
        assert table.weight.shape[0] == 2 * MAX_SPAN - 1 and table.weight.abs().max() <= 2.0
    for norm in (layer.norm_qkv, layer.norm_similarity, layer.norm_output):
        assert norm.eps == 1e-3 and norm.momentum == 0.01
    assert layer.norm_similarity.num_features == 24 and layer.norm_output.num_features == 256

"""``formers.core.layers`` (and the core encoder / classifier): shapes, equality with hand-written math and with
``torch.nn`` equivalents, gradients, and clear errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import formers.core.layers.attention as attention_mod
from formers.core.layers import (
    GEGLU,
    CrossAttentionBlock,
    DropPath,
    GluMlp,
    LayerScale,
    LearnedPositionalEmbedding,
    LinearAttention,
    Mlp,
    MultiHeadAttention,
    PatchEmbed,
    PerformerAttention,
    SinusoidalPositionalEmbedding,
    SwiGLU,
    TransformerBlock,
    create_act,
    create_norm,
    get_mlp_layer,
    init_weights,
    sinusoidal_embedding,
    sinusoidal_embedding_2d,
)
from formers.core.models import TransformerClassifier, TransformerEncoder

# ------------------------------------------------------------------------------------------- hand-written references


def mha_math(attn: MultiHeadAttention, x, context=None, attn_bias=None, key_padding_mask=None, causal=False):
    """Multi-head attention in plain torch, with the module's own weights."""
    H, D = attn.num_heads, attn.head_dim
    inner = H * D
    if context is None:
        w, b = attn.qkv.weight, attn.qkv.bias
        q, k, v = (F.linear(x, w[i * inner : (i + 1) * inner], b[i * inner : (i + 1) * inner]) for i in range(3))
    else:
        w, b = attn.kv.weight, attn.kv.bias
        q = attn.q(x)
        k, v = F.linear(context, w[:inner], b[:inner]), F.linear(context, w[inner:], b[inner:])

    def heads(t):  # (b, n, h * d) -> (b, h, n, d)
        return t.reshape(t.shape[0], t.shape[1], H, D).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    if not isinstance(attn.q_norm, nn.Identity):
        q = F.layer_norm(q, (D,), attn.q_norm.weight, attn.q_norm.bias, attn.q_norm.eps)
        k = F.layer_norm(k, (D,), attn.k_norm.weight, attn.k_norm.bias, attn.k_norm.eps)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    if attn_bias is not None:
        scores = scores + attn_bias
    Lq, Lk = scores.shape[-2:]
    if causal:
        scores = scores.masked_fill(torch.ones(Lq, Lk, dtype=torch.bool).triu(1 + Lk - Lq), float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    out = scores.softmax(-1) @ v
    out = out.transpose(1, 2).reshape(x.shape[0], Lq, inner)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def layer_norm(norm: nn.LayerNorm, x):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def mlp_math(mlp: Mlp, x):
    return F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)


def assert_all_params_get_grads(module: nn.Module, loss: torch.Tensor):
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


# ----------------------------------------------------------------------------------------------- create / init


def test_create_act_and_norm_from_names():
    assert isinstance(create_act("gelu"), nn.GELU) and create_act("gelu").approximate == "none"
    assert create_act("gelu_tanh").approximate == "tanh"
    assert isinstance(create_act("silu"), nn.SiLU) and isinstance(create_act("relu"), nn.ReLU)
    assert isinstance(create_act(nn.Tanh), nn.Tanh)
    assert isinstance(create_norm("layernorm", 8), nn.LayerNorm)
    rms = create_norm("rmsnorm", 8, eps=1e-6)
    assert isinstance(rms, nn.RMSNorm) and rms.eps == 1e-6
    with pytest.raises(ValueError, match="unknown activation 'gelu2'"):
        create_act("gelu2")
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'.*layernorm"):
        create_norm("batchnorm", 8)
    with pytest.raises(TypeError, match="norm must be a name or a callable"):
        create_norm(3, 8)


def test_init_weights_like_timm_vit():
    model = nn.Sequential(nn.Linear(256, 512), nn.LayerNorm(512), nn.Embedding(1000, 64, padding_idx=0))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
        model[1].bias.fill_(3.0)
    model.apply(init_weights)
    linear, norm, emb = model
    assert abs(linear.weight.std().item() - 0.02) < 0.002 and linear.weight.abs().max() <= 2.0
    assert (linear.bias == 0).all()
    assert (norm.weight == 1).all() and (norm.bias == 0).all()
    assert abs(emb.weight[1:].std().item() - 0.02) < 0.002 and (emb.weight[0] == 0).all()


# --------------------------------------------------------------------------------------------------------- mlp


def test_mlp_equals_formula():
    mlp = Mlp(8, 32, 6)
    x = torch.randn(2, 5, 8)
    assert mlp(x).shape == (2, 5, 6)
    torch.testing.assert_close(mlp(x), mlp_math(mlp, x))
    relu = Mlp(8, 16, act_layer="relu", bias=False)
    assert relu.fc1.bias is None and isinstance(relu.act, nn.ReLU)
    torch.testing.assert_close(relu(x), F.relu(x @ relu.fc1.weight.T) @ relu.fc2.weight.T)


@pytest.mark.parametrize(("cls", "gate"), [(GluMlp, torch.sigmoid), (GEGLU, F.gelu), (SwiGLU, F.silu)])
def test_gated_mlps_equal_their_formulas(cls, gate):
    dim, hidden = 8, 12
    mlp = cls(dim, hidden)
    # gate and value projections each have `hidden` outputs (timm SwiGLU convention, not timm GluMlp's halves)
    assert mlp.fc1_g.out_features == hidden and mlp.fc1_x.out_features == hidden and mlp.fc2.in_features == hidden
    assert sum(p.numel() for p in mlp.parameters()) == 3 * dim * hidden + 2 * hidden + dim
    x = torch.randn(2, 5, dim)
    expected = F.linear(gate(mlp.fc1_g(x)) * mlp.fc1_x(x), mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), expected)


def test_get_mlp_layer():
    assert get_mlp_layer("swiglu") is SwiGLU and get_mlp_layer("GEGLU") is GEGLU and get_mlp_layer(Mlp) is Mlp
    with pytest.raises(ValueError, match="unknown mlp_layer 'moe'"):
        get_mlp_layer("moe")


# -------------------------------------------------------------------------------------------------------- drop


def test_drop_path_is_identity_in_eval_and_at_zero():
    x = torch.randn(4, 3, 5)
    assert DropPath(0.5).eval()(x) is x
    assert DropPath(0.0).train()(x) is x


def test_drop_path_drops_whole_samples_and_rescales():
    drop = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2)
    out = drop(x)
    per_sample = out.reshape(4000, -1)
    kept = per_sample[:, 0] != 0
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()  # all-or-nothing per sample
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert abs(out.mean().item() - 1.0) < 0.05  # the expectation is preserved
    assert DropPath(0.25, scale_by_keep=False).train()(x).max() == 1.0
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_layer_scale():
    ls = LayerScale(6, init_values=0.1)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(ls(x), 0.1 * x)
    assert_all_params_get_grads(ls, ls(x).sum())


# --------------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("qk_norm", [False, True])
def test_self_attention_equals_math(qk_norm):
    attn = MultiHeadAttention(16, num_heads=4, qk_norm=qk_norm).eval()
    x = torch.randn(2, 7, 16)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, -3:] = True
    bias = torch.randn(4, 7, 7)
    out = attn(x)
    assert out.shape == (2, 7, 16)
    torch.testing.assert_close(out, mha_math(attn, x), atol=1e-5, rtol=1e-5)
    masks = {"attn_bias": bias, "key_padding_mask": kpm, "causal": True}
    torch.testing.assert_close(attn(x, **masks), mha_math(attn, x, **masks), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_num_queries_gives_the_first_rows_of_the_full_output(qkv_bias):
    attn = MultiHeadAttention(16, num_heads=4, qkv_bias=qkv_bias).eval()
    x = torch.randn(2, 7, 16, requires_grad=True)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, -2:] = True
    out = attn(x, key_padding_mask=kpm, num_queries=3)
    assert out.shape == (2, 3, 16)
    torch.testing.assert_close(out, attn(x, key_padding_mask=kpm)[:, :3], atol=1e-6, rtol=1e-6)
    out.sum().backward()
    assert x.grad[:, 3:].abs().sum() > 0  # the other tokens still serve as keys and values
    for bad in (0, 8, 2.5, True):
        with pytest.raises(ValueError, match="num_queries must be an integer"):
            attn(x, num_queries=bad)
    with pytest.raises(ValueError, match="dense self-attention only"):
        MultiHeadAttention(16, num_heads=4, kv_dim=16)(x, torch.randn(2, 5, 16), num_queries=2)


def test_cross_attention_equals_math():
    attn = MultiHeadAttention(16, num_heads=2, kv_dim=10, head_dim=6).eval()
    assert attn.is_cross_attention and attn.q.out_features == 12 and attn.kv.weight.shape == (24, 10)
    x, context = torch.randn(3, 4, 16), torch.randn(3, 9, 10)
    kpm = torch.rand(3, 9) < 0.3
    out = attn(x, context, key_padding_mask=kpm)
    assert out.shape == (3, 4, 16)
    torch.testing.assert_close(out, mha_math(attn, x, context, key_padding_mask=kpm), atol=1e-5, rtol=1e-5)


def test_self_attention_equals_torch_multihead_attention():
    attn = MultiHeadAttention(16, num_heads=4).eval()
    torch_attn = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        torch_attn.in_proj_weight.copy_(attn.qkv.weight)
        torch_attn.in_proj_bias.copy_(attn.qkv.bias)
        torch_attn.out_proj.weight.copy_(attn.proj.weight)
        torch_attn.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(2, 6, 16)
    kpm = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    expected, _ = torch_attn(x, x, x, key_padding_mask=kpm, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(attn(x, key_padding_mask=kpm, causal=True), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_equals_torch_multihead_attention():
    attn = MultiHeadAttention(16, num_heads=4, kv_dim=12).eval()
    torch_attn = nn.MultiheadAttention(16, 4, kdim=12, vdim=12, batch_first=True).eval()
    with torch.no_grad():
        torch_attn.q_proj_weight.copy_(attn.q.weight)
        torch_attn.k_proj_weight.copy_(attn.kv.weight[:16])
        torch_attn.v_proj_weight.copy_(attn.kv.weight[16:])
        torch_attn.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.kv.bias]))
        torch_attn.out_proj.weight.copy_(attn.proj.weight)
        torch_attn.out_proj.bias.copy_(attn.proj.bias)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 8, 12)
    bias = torch.randn(5, 8)
    expected, _ = torch_attn(x, context, context, attn_mask=bias, need_weights=False)
    torch.testing.assert_close(attn(x, context, attn_bias=bias), expected, atol=1e-5, rtol=1e-5)


def test_attention_dropout_only_in_training_and_backend_is_passed(monkeypatch):
    seen = []
    real = attention_mod.attention

    def spy(*args, **kwargs):
        seen.append((kwargs["dropout_p"], kwargs["backend"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_mod, "attention", spy)
    attn = MultiHeadAttention(8, num_heads=2, attn_drop=0.3, backend="reference")
    x = torch.randn(2, 3, 8)
    attn.train()(x)
    attn.eval()(x)
    assert seen == [(0.3, "reference"), (0.0, "reference")]


def test_attention_construction_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MultiHeadAttention(10, num_heads=4)
    attn = MultiHeadAttention(10, num_heads=4, head_dim=3)  # explicit head_dim lifts the divisibility rule
    assert attn.qkv.out_features == 36 and attn.proj.in_features == 12
    assert attn(torch.randn(1, 2, 10)).shape == (1, 2, 10)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MultiHeadAttention(16, num_heads=0), "num_heads must be a positive int, got 0"),
        (lambda: MultiHeadAttention(0, num_heads=2), "dim must be a positive int, got 0"),
        (lambda: MultiHeadAttention(16, num_heads=2, head_dim=0), "head_dim must be a positive int, got 0"),
        (lambda: MultiHeadAttention(16, num_heads=-2), "num_heads must be a positive int, got -2"),
        (lambda: MultiHeadAttention(16, 2, kv_dim=0), "kv_dim must be a positive int, got 0"),
        (lambda: MultiHeadAttention(16, 2, attn_drop=1.0), r"attn_drop must be in \[0, 1\), got 1.0"),
        (lambda: MultiHeadAttention(16, 2, proj_drop=-0.1), r"proj_drop must be in \[0, 1\)"),
        (lambda: TransformerBlock(16, 0), "num_heads must be a positive int, got 0"),
        (lambda: LinearAttention(16, num_heads=0), "LinearAttention: num_heads must be a positive int"),
        (lambda: PerformerAttention(16, num_heads=0), "PerformerAttention: num_heads must be a positive int"),
    ],
    ids=["heads0", "dim0", "head_dim0", "heads_negative", "kv_dim0", "attn_drop1", "proj_drop_negative", "block",
         "linear", "performer"],
)  # fmt: skip
def test_attention_constructors_name_the_bad_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _attention_bad_inputs():
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 6, 4)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    return {
        "self: rank 2": ("self", (x[0],), {}, ValueError, "rank 3"),
        "self: rank 4": ("self", (x[None],), {}, ValueError, "rank 3"),
        "self: wrong width": ("self", (x[..., :6],), {}, ValueError, "8 channels"),
        "self: integer x": ("self", (x.long(),), {}, TypeError, "floating"),
        "self: given a context": ("self", (x, x), {}, ValueError, "built for self-attention"),
        "self: float padding mask": ("self", (x,), {"key_padding_mask": kpm.float()}, TypeError, "torch.bool"),
        "self: padding mask on meta": ("self", (x,), {"key_padding_mask": kpm.to("meta")}, ValueError, "meta"),
        "self: padding mask shape": ("self", (x,), {"key_padding_mask": kpm[:, :4]}, ValueError, "key_padding_mask"),
        "self: bias shape": ("self", (x,), {"attn_bias": torch.zeros(3, 5, 5)}, ValueError, "broadcast"),
        "cross: no context": ("cross", (x,), {}, ValueError, "pass a context"),
        "cross: context width": ("cross", (x, ctx[..., :3]), {}, ValueError, "context must have 4 channels"),
        "cross: context rank": ("cross", (x, ctx[0]), {}, ValueError, "context must have rank 3"),
        "cross: batch mismatch": ("cross", (x, ctx[:1]), {}, ValueError, "batch sizes differ"),
        "cross: dtype mismatch": ("cross", (x, ctx.double()), {}, TypeError, "dtypes differ"),
    }


@pytest.mark.parametrize("name", _attention_bad_inputs().keys())
def test_attention_bad_inputs(name):
    kind, args, kwargs, error, match = _attention_bad_inputs()[name]
    attn = MultiHeadAttention(8, num_heads=2, kv_dim=4 if kind == "cross" else None)
    with pytest.raises(error, match=match):
        attn(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------- blocks


def test_pre_norm_block_equals_math():
    block = TransformerBlock(16, num_heads=4, mlp_ratio=2.0).eval()
    x = torch.randn(2, 5, 16)
    kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    h = x + mha_math(block.attn, layer_norm(block.norm1, x), key_padding_mask=kpm)
    expected = h + mlp_math(block.mlp, layer_norm(block.norm2, h))
    torch.testing.assert_close(block(x, key_padding_mask=kpm), expected, atol=1e-5, rtol=1e-5)


def test_post_norm_block_equals_math():
    block = TransformerBlock(16, num_heads=4, mlp_ratio=2.0, norm_first=False).eval()
    x = torch.randn(2, 5, 16)
    h = layer_norm(block.norm1, x + mha_math(block.attn, x, causal=True))
    expected = layer_norm(block.norm2, h + mlp_math(block.mlp, h))
    torch.testing.assert_close(block(x, causal=True), expected, atol=1e-5, rtol=1e-5)


def test_post_norm_block_equals_torch_encoder_layer():
    block = TransformerBlock(16, num_heads=4, mlp_ratio=2.0, norm_first=False, act_layer="relu").eval()
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        layer.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        layer.self_attn.out_proj.weight.copy_(block.attn.proj.weight)
        layer.self_attn.out_proj.bias.copy_(block.attn.proj.bias)
        for ours, theirs in [
            (block.mlp.fc1, layer.linear1),
            (block.mlp.fc2, layer.linear2),
            (block.norm1, layer.norm1),
            (block.norm2, layer.norm2),
        ]:
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(block(x), layer(x), atol=1e-5, rtol=1e-5)


def test_block_options():
    block = TransformerBlock(16, 4, mlp_layer="swiglu", norm_layer="rmsnorm", layer_scale_init=1e-3, drop_path=0.1)
    assert isinstance(block.mlp, SwiGLU) and isinstance(block.mlp.act, nn.SiLU)
    assert block.mlp.fc1_g.out_features == 64
    assert isinstance(block.norm1, nn.RMSNorm) and isinstance(block.ls1, LayerScale)
    assert isinstance(block.drop_path1, DropPath) and block.drop_path1.drop_prob == 0.1
    assert isinstance(TransformerBlock(16, 4, act_layer="gelu_tanh").mlp.act, nn.GELU)
    assert isinstance(TransformerBlock(16, 4).drop_path1, nn.Identity)
    # pre-norm with zero layer scale is the identity: both residual branches are scaled to 0
    x = torch.randn(2, 3, 16)
    assert torch.equal(TransformerBlock(16, 4, layer_scale_init=0.0)(x), x)


def test_block_causal_output_ignores_the_future():
    block = TransformerBlock(16, 4).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)
    torch.testing.assert_close(block(x, causal=True)[:, :4], block(y, causal=True)[:, :4])
    assert not torch.allclose(block(x)[:, :4], block(y)[:, :4])


def test_block_output_ignores_padding_content():
    block = TransformerBlock(16, 4).eval()
    x = torch.randn(2, 6, 16)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[:, 4:] = True
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 16)
    torch.testing.assert_close(block(x, key_padding_mask=kpm)[:, :4], block(y, key_padding_mask=kpm)[:, :4])


def test_cross_attention_block():
    block = CrossAttentionBlock(16, 4, kv_dim=10).eval()
    x, context = torch.randn(2, 3, 16), torch.randn(2, 7, 10)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[0, 5:] = True
    h = x + mha_math(block.attn, layer_norm(block.norm1, x), layer_norm(block.norm_context, context), None, kpm)
    expected = h + mlp_math(block.mlp, layer_norm(block.norm2, h))
    torch.testing.assert_close(block(x, context, key_padding_mask=kpm), expected, atol=1e-5, rtol=1e-5)
    post = CrossAttentionBlock(16, 4, norm_first=False).eval()
    assert isinstance(post.norm_context, nn.Identity)
    ctx16 = torch.randn(2, 7, 16)
    h = layer_norm(post.norm1, x + mha_math(post.attn, x, ctx16))
    torch.testing.assert_close(post(x, ctx16), layer_norm(post.norm2, h + mlp_math(post.mlp, h)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("make", "args", "error", "match"),
    [
        (lambda: TransformerBlock(8, 2), (torch.randn(2, 3, 6),), ValueError, "TransformerBlock: x must have 8"),
        (lambda: TransformerBlock(8, 2), (torch.randn(3, 8),), ValueError, "rank 3"),
        (lambda: TransformerBlock(8, 2), (torch.zeros(2, 3, 8, dtype=torch.long),), TypeError, "floating"),
        (lambda: CrossAttentionBlock(8, 2, kv_dim=4), (torch.randn(2, 3, 8), torch.randn(2, 5, 8)), ValueError, "4"),
        (lambda: CrossAttentionBlock(8, 2), (torch.randn(2, 3, 8), torch.randn(5, 8)), ValueError, "context"),
    ],
)
def test_block_bad_inputs(make, args, error, match):
    with pytest.raises(error, match=match):
        make()(*args)


# -------------------------------------------------------------------------------------------------------- embed


def test_patch_embed_1d_2d_3d_shapes():
    pe1 = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8, ndim=1)
    tokens, grid = pe1(torch.randn(2, 3, 32))
    assert tokens.shape == (2, 8, 8) and grid == (8,)
    pe2 = PatchEmbed(patch_size=(4, 2), in_chans=1, embed_dim=8, input_size=(8, 6))
    assert pe2.grid_size == (2, 3) and pe2.num_patches == 6
    tokens, grid = pe2(torch.randn(2, 1, 8, 6))
    assert tokens.shape == (2, 6, 8) and grid == (2, 3)
    tokens, grid = pe2(torch.randn(2, 1, 12, 10))  # any size that tiles works, not only input_size
    assert tokens.shape == (2, 15, 8) and grid == (3, 5)
    pe3 = PatchEmbed(patch_size=2, in_chans=2, embed_dim=4, ndim=3)
    tokens, grid = pe3(torch.randn(1, 2, 4, 6, 2))
    assert tokens.shape == (1, 6, 4) and grid == (2, 3, 1)


def test_patch_embed_overlapping_patches():
    pe = PatchEmbed(patch_size=8, stride=4, in_chans=1, embed_dim=4, ndim=1)  # PatchTST-style
    tokens, grid = pe(torch.randn(2, 1, 32))
    assert grid == ((32 - 8) // 4 + 1,) and tokens.shape == (2, 7, 4)


def test_patch_embed_equals_linear_on_flattened_patches():
    pe = PatchEmbed(patch_size=2, in_chans=3, embed_dim=5, norm_layer="layernorm")
    x = torch.randn(2, 3, 4, 6)
    tokens, _ = pe(x)
    patches = x.unfold(2, 2, 2).unfold(3, 2, 2)  # (b, c, gh, gw, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 6, 12)  # row-major grid, (c, ph, pw) per patch
    expected = layer_norm(pe.norm, F.linear(patches, pe.proj.weight.reshape(5, 12), pe.proj.bias))
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.randn(2, 3, 30, 32), ValueError, "does not tile.*axis 0 has size 30"),
        (torch.randn(2, 3, 2, 32), ValueError, "need size >= 4"),
        (torch.randn(2, 4, 32, 32), ValueError, "expected 3 input channels"),
        (torch.randn(3, 32, 32), ValueError, "rank 4 \\(batch, channels, height, width\\)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, "floating"),
    ],
)
def test_patch_embed_errors(x, error, match):
    pe = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8)
    with pytest.raises(error, match=match):
        pe(x)


def test_patch_embed_construction_errors():
    with pytest.raises(ValueError, match="ndim must be 1, 2 or 3"):
        PatchEmbed(ndim=4)
    with pytest.raises(ValueError, match="patch_size must be"):
        PatchEmbed(patch_size=(4, 4, 4), ndim=2)
    with pytest.raises(ValueError, match="does not tile"):
        PatchEmbed(patch_size=16, input_size=(224, 220))


def test_sinusoidal_embedding_matches_vaswani():
    dim, length = 10, 7
    pe = sinusoidal_embedding(torch.arange(length), dim)
    assert pe.shape == (length, dim)
    for pos in range(length):
        for i in range(dim // 2):
            angle = pos / 10000 ** (2 * i / dim)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(torch.arange(3), 5)


def test_sinusoidal_embedding_2d_matches_mae():
    # MAE's util/pos_embed.py, transliterated (numpy, meshgrid(w, h), first half from grid[0]).
    def mae_1d(embed_dim, pos):
        omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    def mae_2d(embed_dim, grid_h, grid_w):
        grid = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))
        grid = np.stack(grid, axis=0).reshape([2, 1, grid_h, grid_w])
        return np.concatenate([mae_1d(embed_dim // 2, grid[0]), mae_1d(embed_dim // 2, grid[1])], axis=1)

    ours = sinusoidal_embedding_2d((3, 5), 16)
    assert ours.shape == (15, 16)
    torch.testing.assert_close(ours, torch.from_numpy(mae_2d(16, 3, 5)).float(), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_embedding_2d((2, 2), 6)


def test_sinusoidal_positional_embedding_module():
    module = SinusoidalPositionalEmbedding(8)
    assert not list(module.parameters())
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(module(x), x + sinusoidal_embedding(torch.arange(5), 8))
    torch.testing.assert_close(module(x, offset=3), x + sinusoidal_embedding(torch.arange(3, 8), 8))
    assert module(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="must be even"):
        SinusoidalPositionalEmbedding(7)
    with pytest.raises(ValueError, match="8 channels"):
        module(torch.randn(2, 5, 6))


def test_learned_positional_embedding():
    module = LearnedPositionalEmbedding(6, 4)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(module(x), x + module.weight[:5])
    torch.testing.assert_close(module(x[:, :2], offset=4), x[:, :2] + module.weight[4:6])
    assert abs(module.weight.std().item() - 0.02) < 0.015
    with pytest.raises(ValueError, match=r"positions \[0, 7\) exceed num_positions=6"):
        module(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match=r"exceed num_positions=6"):
        module(x, offset=2)
    with pytest.raises(ValueError, match="4 channels"):
        module(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="rank 3"):
        module(torch.randn(5, 4))


# ---------------------------------------------------------------------------------------------------- gradients


GRADIENT_CASES = {
    "mha_self": (lambda: MultiHeadAttention(8, 2, qk_norm=True), lambda: (torch.randn(2, 4, 8),)),
    "mha_cross": (lambda: MultiHeadAttention(8, 2, kv_dim=6), lambda: (torch.randn(2, 4, 8), torch.randn(2, 5, 6))),
    "block_pre": (
        lambda: TransformerBlock(8, 2, layer_scale_init=0.1, mlp_layer="geglu"),
        lambda: (torch.randn(2, 4, 8),),
    ),
    "block_post": (
        lambda: TransformerBlock(8, 2, norm_first=False, norm_layer="rmsnorm"),
        lambda: (torch.randn(2, 4, 8),),
    ),
    "cross_block": (lambda: CrossAttentionBlock(8, 2, kv_dim=6), lambda: (torch.randn(2, 4, 8), torch.randn(2, 5, 6))),
    "patch_embed": (lambda: PatchEmbed(2, 3, 8, norm_layer="layernorm"), lambda: (torch.randn(2, 3, 4, 4),)),
    "learned_pos": (lambda: LearnedPositionalEmbedding(4, 8), lambda: (torch.randn(2, 4, 8),)),
    "swiglu": (lambda: SwiGLU(8, 12), lambda: (torch.randn(2, 4, 8),)),
    "encoder": (lambda: TransformerEncoder(8, 2, 2, layer_scale_init=0.1), lambda: (torch.randn(2, 4, 8),)),
}


@pytest.mark.parametrize("name", GRADIENT_CASES.keys())
def test_gradients_reach_every_parameter(name):
    make, inputs = GRADIENT_CASES[name]
    module = make().train()
    out = module(*inputs())
    out = out[0] if isinstance(out, tuple) else out
    assert_all_params_get_grads(module, (out * torch.randn_like(out)).sum())


# ------------------------------------------------------------------------------------------ encoder / classifier


def test_encoder_drop_path_schedule_and_final_norm():
    enc = TransformerEncoder(8, depth=5, num_heads=2, drop_path_rate=0.2)
    rates = [0.0] + [b.drop_path1.drop_prob for b in enc.blocks[1:]]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert isinstance(enc.blocks[0].drop_path1, nn.Identity)
    assert isinstance(enc.norm, nn.LayerNorm)
    assert isinstance(TransformerEncoder(8, 2, 2, norm_first=False).norm, nn.Identity)


def test_classifier_mean_pool_ignores_padding():
    model = TransformerClassifier(vocab_size=20, num_classes=3, max_len=8, dim=16, depth=2, num_heads=2, pool="mean")
    model.eval()
    assert model.cls_token is None and model.pos_embed.num_positions == 8
    tokens = torch.randint(0, 20, (2, 8))
    kpm = torch.zeros(2, 8, dtype=torch.bool)
    kpm[:, 5:] = True
    other = tokens.clone()
    other[:, 5:] = (tokens[:, 5:] + 1) % 20
    torch.testing.assert_close(model(tokens, kpm), model(other, kpm))
    torch.testing.assert_close(model(tokens, kpm), model(tokens[:, :5]), atol=1e-5, rtol=1e-5)


def test_classifier_cls_pool_and_post_norm():
    model = TransformerClassifier(
        vocab_size=20, num_classes=4, max_len=8, dim=16, depth=1, num_heads=2, norm_first=False
    )
    model.eval()
    assert model.cls_token is not None and model.pos_embed.num_positions == 9
    assert isinstance(model.embed_norm, nn.LayerNorm) and isinstance(model.encoder.norm, nn.Identity)
    tokens = torch.randint(0, 20, (2, 6))
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1, 3:] = True
    other = tokens.clone()
    other[1, 3:] = (tokens[1, 3:] + 1) % 20
    assert model(tokens, kpm).shape == (2, 4)
    torch.testing.assert_close(model(tokens, kpm), model(other, kpm))


def test_classifier_errors():
    model = TransformerClassifier(vocab_size=20, num_classes=3, max_len=8, dim=16, depth=1, num_heads=2)
    tokens = torch.randint(0, 20, (2, 8))
    with pytest.raises(ValueError, match="length 9 > max_len=8"):
        model(torch.randint(0, 20, (2, 9)))
    with pytest.raises(TypeError, match="integer tensor"):
        model(tokens.bool())
    with pytest.raises(ValueError, match="key_padding_mask shape"):
        model(tokens, torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        model(tokens, torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="pool must be"):
        TransformerClassifier(vocab_size=20, num_classes=3, pool="max")

"""T2T-ViT: exact parameter counts, official key layout, logits equal to a transcription of the official code,
sinusoidal pos_embed regeneration, checkpoint wrappers, errors, export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from timm.models import save_for_hf
from torch import nn

from formers.core.layers.performer import prm_attention
from formers.vision.models import t2t_vit
from formers.vision.models.t2t_vit import T2TViT, checkpoint_filter_fn, get_sinusoid_encoding

# (all, trainable) parameters of the official models (reference note 1.1): frozen pos_embed and Performer w differ.
PARAMS = {
    "t2t_vit_7": (4_310_222, 4_255_694),
    "t2t_vit_10": (5_889_230, 5_834_702),
    "t2t_vit_12": (6_941_902, 6_887_374),
    "t2t_vit_14": (21_545_550, 21_465_806),
    "t2t_vit_19": (39_177_422, 39_085_070),
    "t2t_vit_24": (64_105_934, 64_000_974),
    "t2t_vit_t_14": (21_541_070, 21_465_422),
    "t2t_vit_t_19": (39_172_942, 39_084_686),
    "t2t_vit_t_24": (64_101_454, 64_000_590),
}

# ------------------------------------------------------------ transcription of yitu-opensource/T2T-ViT @ 0f63dc9


def official_sinusoid(n_position, d_hid):  # models/t2t_vit.py get_sinusoid_encoding
    def get_position_angle_vec(position):
        return [position / np.power(10000, 2 * (hid_j // 2) / d_hid) for hid_j in range(d_hid)]

    table = np.array([get_position_angle_vec(pos_i) for pos_i in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0)


class OfficialTokenPerformer(nn.Module):  # models/token_performer.py
    def __init__(self, dim, in_dim, head_cnt=1, kernel_ratio=0.5, dp1=0.1, dp2=0.1):
        super().__init__()
        self.emb = in_dim * head_cnt
        self.kqv = nn.Linear(dim, 3 * self.emb)
        self.dp = nn.Dropout(dp1)
        self.proj = nn.Linear(self.emb, self.emb)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(self.emb)
        self.epsilon = 1e-8
        self.mlp = nn.Sequential(
            nn.Linear(self.emb, self.emb), nn.GELU(), nn.Linear(self.emb, self.emb), nn.Dropout(dp2)
        )
        self.m = int(self.emb * kernel_ratio)
        self.w = nn.Parameter(
            nn.init.orthogonal_(torch.randn(self.m, self.emb)) * math.sqrt(self.m), requires_grad=False
        )

    def prm_exp(self, x):
        xd = ((x * x).sum(dim=-1, keepdim=True)).repeat(1, 1, self.m) / 2
        wtx = torch.einsum("bti,mi->btm", x.float(), self.w)
        return torch.exp(wtx - xd) / math.sqrt(self.m)

    def single_attn(self, x):
        k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)
        kp, qp = self.prm_exp(k), self.prm_exp(q)
        D = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(dim=2)  # noqa: N806
        kptv = torch.einsum("bin,bim->bnm", v.float(), kp)
        y = torch.einsum("bti,bni->btn", qp, kptv) / (D.repeat(1, 1, self.emb) + self.epsilon)
        return v + self.dp(self.proj(y))

    def forward(self, x):
        x = self.single_attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OfficialMlp(nn.Module):
    def __init__(self, in_features, hidden_features, out_features=None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class OfficialTokenAttention(nn.Module):  # models/token_transformer.py Attention
    def __init__(self, dim, num_heads=8, in_dim=None):
        super().__init__()
        self.num_heads, self.in_dim = num_heads, in_dim
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=False)
        self.proj = nn.Linear(in_dim, in_dim)

    def forward(self, x):
        B, N, C = x.shape  # noqa: N806
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.in_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.in_dim)
        return v.squeeze(1) + self.proj(x)


class OfficialTokenTransformer(nn.Module):
    def __init__(self, dim, in_dim, num_heads, mlp_ratio=1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OfficialTokenAttention(dim, in_dim=in_dim, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = OfficialMlp(in_dim, int(in_dim * mlp_ratio), in_dim)

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OfficialAttention(nn.Module):  # models/transformer_block.py
    def __init__(self, dim, num_heads, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape  # noqa: N806
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class OfficialBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qk_scale=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OfficialAttention(dim, num_heads, qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = OfficialMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OfficialT2TModule(nn.Module):
    def __init__(self, img_size, tokens_type, in_chans, embed_dim, token_dim):
        super().__init__()
        self.soft_split0 = nn.Unfold(kernel_size=(7, 7), stride=(4, 4), padding=(2, 2))
        self.soft_split1 = nn.Unfold(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
        self.soft_split2 = nn.Unfold(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
        if tokens_type == "transformer":
            self.attention1 = OfficialTokenTransformer(in_chans * 7 * 7, token_dim, num_heads=1, mlp_ratio=1.0)
            self.attention2 = OfficialTokenTransformer(token_dim * 3 * 3, token_dim, num_heads=1, mlp_ratio=1.0)
        else:
            self.attention1 = OfficialTokenPerformer(in_chans * 7 * 7, token_dim, kernel_ratio=0.5)
            self.attention2 = OfficialTokenPerformer(token_dim * 3 * 3, token_dim, kernel_ratio=0.5)
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)
        self.num_patches = (img_size // (4 * 2 * 2)) * (img_size // (4 * 2 * 2))

    def forward(self, x):
        x = self.soft_split0(x).transpose(1, 2)
        x = self.attention1(x)
        B, new_HW, C = x.shape  # noqa: N806
        x = x.transpose(1, 2).reshape(B, C, int(np.sqrt(new_HW)), int(np.sqrt(new_HW)))
        x = self.soft_split1(x).transpose(1, 2)
        x = self.attention2(x)
        B, new_HW, C = x.shape  # noqa: N806
        x = x.transpose(1, 2).reshape(B, C, int(np.sqrt(new_HW)), int(np.sqrt(new_HW)))
        x = self.soft_split2(x).transpose(1, 2)
        return self.project(x)


class OfficialT2TViT(nn.Module):
    def __init__(self, img_size=224, tokens_type="performer", in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, token_dim=64, qk_scale=None):  # fmt: skip
        super().__init__()
        self.tokens_to_token = OfficialT2TModule(img_size, tokens_type, in_chans, embed_dim, token_dim)
        num_patches = self.tokens_to_token.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(official_sinusoid(num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([OfficialBlock(embed_dim, num_heads, mlp_ratio, qk_scale) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.tokens_to_token(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


# --------------------------------------------------------------------------------------------------------- tests


def _randomize(model: nn.Module) -> None:
    """Non-trivial values everywhere (LayerNorm affine and biases included) so every weight matters."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("pos_embed") or name.endswith(".w"):
                continue
            p.copy_(
                torch.randn(p.shape, generator=gen) * (0.1 if p.dim() > 1 else 0.3)
                + (1.0 if "norm" in name and name.endswith("weight") else 0.0)
            )  # noqa: E501


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    with torch.device("meta"):
        model = getattr(t2t_vit, name)()
    assert (model.num_parameters(), model.num_parameters(trainable_only=True)) == PARAMS[name]


def test_parameter_count_at_384_and_official_keys():
    with torch.device("meta"):
        assert t2t_vit.t2t_vit_14(img_size=384).num_parameters() == 21_691_470
        model = t2t_vit.t2t_vit_14()
        ref = OfficialT2TViT(tokens_type="performer", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0)
        ref_t = OfficialT2TViT(tokens_type="transformer", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0)
        model_t = t2t_vit.t2t_vit_t_14()
    keys = set(model.state_dict())
    assert len(keys) == 188 and keys == set(ref.state_dict())
    assert {"tokens_to_token.attention1.w", "tokens_to_token.attention2.mlp.2.bias", "pos_embed"} <= keys
    assert "blocks.0.attn.qkv.bias" not in keys  # backbone qkv has no bias
    assert set(model_t.state_dict()) == set(ref_t.state_dict())
    assert "tokens_to_token.attention1.attn.qkv.weight" in model_t.state_dict()


@pytest.mark.parametrize(
    ("tokens_type", "kwargs"),
    [
        ("performer", {"img_size": 64, "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0, "token_dim": 24}),
        ("transformer", {"img_size": 64, "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 3.0}),
        ("performer", {"img_size": 224, "embed_dim": 256, "depth": 7, "num_heads": 4, "mlp_ratio": 2.0}),  # t2t_vit_7
    ],
)
def test_logits_equal_official_transcription(tokens_type, kwargs):
    ref = OfficialT2TViT(tokens_type=tokens_type, num_classes=10, **kwargs).eval()
    _randomize(ref)
    ours = T2TViT(tokens_type=tokens_type, num_classes=10, **kwargs).eval()
    ours.load_state_dict(checkpoint_filter_fn(ref.state_dict(), ours), strict=True)
    x = torch.randn(2, 3, kwargs["img_size"], kwargs["img_size"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, out = ref(x), ours(x)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert expected.std() > 0.1  # the comparison is not between near-constant outputs


def test_sinusoid_table_is_official_and_frozen():
    torch.testing.assert_close(get_sinusoid_encoding(197, 384), official_sinusoid(197, 384))
    model = t2t_vit.t2t_vit_7()
    assert not model.pos_embed.requires_grad and model.pos_embed.shape == (1, 197, 256)
    torch.testing.assert_close(model.pos_embed.data, official_sinusoid(197, 256))


def test_pos_embed_regenerated_at_other_img_size():
    small = T2TViT(**{**t2t_vit._TEST_KWARGS, "img_size": 64})
    sd = small.state_dict()
    big = T2TViT(**{**t2t_vit._TEST_KWARGS, "img_size": 96}).eval()
    loaded = checkpoint_filter_fn({"state_dict_ema": sd, "state_dict": {}}, big)
    assert loaded["pos_embed"].shape == (1, 1 + 6 * 6, 32)
    torch.testing.assert_close(loaded["pos_embed"], official_sinusoid(37, 32))
    big.load_state_dict(loaded, strict=True)
    torch.testing.assert_close(big.blocks[0].attn.qkv.weight, small.blocks[0].attn.qkv.weight)
    with torch.no_grad():
        assert big(torch.randn(1, 3, 96, 96)).shape == (1, 10)


def test_checkpoint_wrappers_and_ddp_prefix():
    model = t2t_vit.t2t_vit_7(**t2t_vit._TEST_KWARGS)
    sd = model.state_dict()
    ema = {f"module.{k}": v + 1 if v.is_floating_point() and k != "pos_embed" else v for k, v in sd.items()}
    out = checkpoint_filter_fn({"state_dict": sd, "state_dict_ema": ema, "epoch": 3}, model)
    assert set(out) == set(sd)
    torch.testing.assert_close(out["head.bias"], sd["head.bias"] + 1)  # EMA weights preferred, as the README
    with pytest.raises(TypeError):
        checkpoint_filter_fn([1, 2], model)
    with pytest.raises(ValueError, match="pos_embed"):
        checkpoint_filter_fn({"pos_embed": torch.zeros(1, 5, 7)}, model)


def test_token_layers_change_width_with_v_residual():
    """147 -> 16 wide: ``x = v + proj(attn(norm1(x)))`` then ``x + mlp(norm2(x))``; scale from the input width."""
    tokens = T2TViT(**t2t_vit._TEST_KWARGS).tokens_to_token
    assert tokens.grid_sizes == [(8, 8), (4, 4), (2, 2)] and tokens.num_patches == 4
    layer = tokens.attention1.eval()
    x = torch.randn(2, 64, 147)
    with torch.no_grad():
        k, q, v = layer.kqv(layer.norm1(x)).split(16, dim=-1)
        attn_out = v + layer.proj(prm_attention(q, k, v, layer.w))
        torch.testing.assert_close(layer(x), attn_out + layer.mlp(layer.norm2(attn_out)))
    transformer = T2TViT(**{**t2t_vit._TEST_KWARGS, "tokens_type": "transformer"}).tokens_to_token.attention1
    assert transformer.attn.scale == 147**-0.5
    with torch.no_grad():
        q, k, v = transformer.attn.qkv(x).split(16, dim=-1)
        expected = v + transformer.attn.proj(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(147), dim=-1) @ v)
        torch.testing.assert_close(transformer.attn(x), expected, atol=1e-5, rtol=1e-5)


def test_head_api_and_errors():
    model = t2t_vit.t2t_vit_t_14(**t2t_vit._TEST_KWARGS).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 5, 32)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 32)
    assert model.get_classifier() is model.head
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) == model.expected_output_shape(2)
    model.reset_classifier(0)
    assert model(x).shape == (2, 32) == model.expected_output_shape(2)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="multiples of 16"):
        t2t_vit.t2t_vit_14(img_size=200)
    with pytest.raises(ValueError, match="tokens_type"):
        T2TViT(tokens_type="linformer")
    with pytest.raises(TypeError):
        t2t_vit.t2t_vit_14(window_size=7)


def test_drop_path_is_linear_over_blocks():
    model = t2t_vit.t2t_vit_7(drop_path_rate=0.3)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 7))


def test_export_and_compile():
    model = t2t_vit.t2t_vit_7(**t2t_vit._TEST_KWARGS).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected)
        # not fullgraph: core's attention() reads a ContextVar (use_backend), which dynamo cannot trace
        torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), expected)


def test_runs_under_autocast():
    """The Performer features are computed in float32 even under bf16 autocast (exp would overflow otherwise)."""
    model = t2t_vit.t2t_vit_7(**t2t_vit._TEST_KWARGS).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


def test_official_pretrained_scale_option(tmp_path):
    """``qk_scale=embed_dim ** -0.5``: the scale the official ``t2t_vit_*(pretrained=True)`` factories set, checked
    against the official attention arithmetic (``(q @ kᵀ) * qk_scale``, softmax, ``@ v``) step by step; the default
    (``head_dim ** -0.5``, official training and ``--eval_checkpoint`` evaluation) gives other logits."""
    kwargs = {"img_size": 64, "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0, "token_dim": 24}
    scale = 48**-0.5
    ref = OfficialT2TViT(tokens_type="performer", num_classes=10, qk_scale=scale, **kwargs).eval()
    _randomize(ref)
    ours = T2TViT(tokens_type="performer", num_classes=10, qk_scale=scale, **kwargs).eval()
    default = T2TViT(tokens_type="performer", num_classes=10, **kwargs).eval()
    for model in (ours, default):
        model.load_state_dict(checkpoint_filter_fn(ref.state_dict(), model), strict=True)
    assert set(ours.state_dict()) == set(default.state_dict())  # the option adds no parameter or buffer
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        assert (default(x) - expected).abs().max() > 1e-2
    with pytest.raises(ValueError, match="qk_scale"):
        T2TViT(qk_scale=0.0, **kwargs)
    # the option travels with timm's factory keywords and the save_for_hf / local-dir round trip
    model = timm.create_model("formers_t2t_vit_7", qk_scale=256**-0.5, **t2t_vit._TEST_KWARGS).eval()
    save_for_hf(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert loaded.qk_scale == model.qk_scale == 256**-0.5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)

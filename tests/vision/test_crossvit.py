"""CrossViT: parameter parity with the official/timm models, timm logit equality, checkpoint formats, resizing."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from formers.vision.models import crossvit
from formers.vision.models.crossvit import CrossViT, checkpoint_filter_fn

# Exact counts of IBM/CrossViT and timm 1.0.31 (pretrained=False, 1000 classes), reference note section 1.3 / 2.1.
PARAMS = {
    "crossvit_tiny_240": 7_014_800,
    "crossvit_small_240": 26_856_272,
    "crossvit_base_240": 105_025_232,
    "crossvit_9_240": 8_553_296,
    "crossvit_15_240": 27_528_464,
    "crossvit_18_240": 43_271_408,
    "crossvit_9_dagger_240": 8_776_592,
    "crossvit_15_dagger_240": 28_209_008,
    "crossvit_18_dagger_240": 44_266_976,
    "crossvit_15_dagger_408": 28_500_080,
    "crossvit_18_dagger_408": 44_606_560,
}
# Small widths/depths passed identically to timm and to us: same structure (stems, scales, fusion), fast on CPU.
SMALL = {"embed_dim": (32, 64), "num_heads": (2, 2), "depth": ((1, 2, 0), (1, 1, 0))}


def _timm_pair(name: str, **kwargs) -> tuple[CrossViT, torch.nn.Module]:
    torch.manual_seed(0)
    if name == "crossvit_18_240" and kwargs:
        # timm 1.0.31's crossvit_18_240() passes **kwargs twice (TypeError on any override): build its class directly.
        args = {
            "img_size": 240,
            "img_scale": (1.0, 224 / 240),
            "patch_size": [12, 16],
            "mlp_ratio": [3, 3, 1],
            **kwargs,
        }
        ref = timm.models.crossvit.CrossVit(**args).eval()
    else:
        ref = timm.create_model(name, pretrained=False, **kwargs).eval()
    ours = getattr(crossvit, name)(**kwargs).eval()
    ours.load_state_dict(checkpoint_filter_fn(ref.state_dict(), ours), strict=True)
    return ours, ref


def _images(model: CrossViT, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *model.img_size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_and_keys_match_timm(name):
    with torch.device("meta"):
        model = getattr(crossvit, name)()
        ref = timm.create_model(name, pretrained=False)
    assert model.num_parameters() == PARAMS[name]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_logits_equal_timm_small_variants(name):
    ours, ref = _timm_pair(name, **SMALL)
    x = _images(ours)
    with torch.no_grad():
        out, expected = ours(x), ref(x)
        feats, ref_feats = ours.forward_features(x), ref.forward_features(x)
    assert out.shape == (2, 1000)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    for a, b in zip(feats, ref_feats, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "extra",
    [{"depth": ((1, 1, 1), (1, 2, 2))}, {"qkv_bias": False}, {"global_pool": "avg"}],
    ids=["fusion_depth", "no_qkv_bias", "avg_pool"],
)
def test_logits_equal_timm_other_options(extra):
    """Stacked fusion blocks (K_fusion > 0, unused by the released models), no qkv bias, average pooling."""
    ours, ref = _timm_pair("crossvit_9_240", **{**SMALL, **extra})
    x = _images(ours)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_folded_cross_attention_equals_explicit_keys_and_values_with_dropout():
    """The class-token attention folds wk/wv into the query side; with attention dropout the value bias is scaled
    by the kept probability mass. Compare with explicit k/v projections of the concatenated tokens, same mask."""
    layer = crossvit.CrossAttention(24, num_heads=3, attn_drop=0.3).train()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    cls, tokens = torch.randn(2, 1, 24), torch.randn(2, 9, 24)
    torch.manual_seed(7)
    out = layer(cls, tokens)
    x = torch.cat((cls, tokens), dim=1)
    q = layer.wq(cls).view(2, 1, 3, 8).transpose(1, 2)
    k, v = (proj(x).view(2, 10, 3, 8).transpose(1, 2) for proj in (layer.wk, layer.wv))
    torch.manual_seed(7)
    attn = layer.attn_drop(((q @ k.transpose(-2, -1)) * 8**-0.5).softmax(dim=-1))
    expected = layer.proj((attn @ v).transpose(1, 2).reshape(2, 1, 24))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(attn.sum(-1), torch.ones(2, 3, 1))  # dropout did remove probability mass


def test_logits_equal_timm_full_tiny():
    ours, ref = _timm_pair("crossvit_tiny_240")
    x = _images(ours)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff < 1e-5


def test_official_checkpoint_format_loads_strict():
    """IBM/CrossViT stores pos_embed / cls_token in ParameterLists (``pos_embed.0``) inside ``{"model": ...}``."""
    ours, ref = _timm_pair("crossvit_15_dagger_240", **SMALL)
    official = {}
    for key, value in ref.state_dict().items():
        for kind in ("pos_embed_", "cls_token_"):
            if key.startswith(kind):
                key = f"{kind[:-1]}.{key[len(kind) :]}"  # pos_embed_0 -> pos_embed.0
        official[key] = value
    assert "pos_embed.0" in official and "cls_token.1" in official and "blocks.0.fusion.0.attn.wq.weight" in official
    fresh = crossvit.crossvit_15_dagger_240(**SMALL).eval()
    fresh.load_state_dict(checkpoint_filter_fn({"model": official}, fresh), strict=True)
    x = _images(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ref(x), atol=1e-5, rtol=0)


def test_pos_embed_resized_for_other_img_size():
    ours_240, ref_240 = _timm_pair("crossvit_9_240", **SMALL)
    big = crossvit.crossvit_9_240(img_size=480, **SMALL).eval()  # branches 480 (40x40) and 448 (28x28)
    sd = checkpoint_filter_fn(ref_240.state_dict(), big)
    big.load_state_dict(sd, strict=True)
    for i, (old_grid, new_grid) in enumerate([((20, 20), (40, 40)), ((14, 14), (28, 28))]):
        old = ref_240.state_dict()[f"pos_embed_{i}"]
        grid = old[:, 1:].reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
        # timm's resample_abs_pos_embed default (as timm's ViT filter): bicubic with antialias.
        expected = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True).flatten(2).transpose(1, 2)
        torch.testing.assert_close(sd[f"pos_embed_{i}"][:, 1:], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sd[f"pos_embed_{i}"][:, :1], old[:, :1])  # class token position untouched
    # timm at 480 with the same (resized) weights gives the same logits.
    ref_480 = timm.create_model("crossvit_9_240", pretrained=False, img_size=480, **SMALL).eval()
    ref_480.load_state_dict(sd, strict=True)
    x = _images(big, batch=1)
    with torch.no_grad():
        out = big(x)
        torch.testing.assert_close(out, ref_480(x), atol=1e-5, rtol=0)
    assert out.shape == (1, 1000)


@pytest.mark.parametrize(
    ("name", "img_size", "tokens"),
    [
        ("crossvit_tiny_240", 240, (401, 197)),
        ("crossvit_tiny_240", 120, (101, 50)),
        ("crossvit_tiny_240", 480, (1601, 785)),
        ("crossvit_15_dagger_408", 408, (1157, 577)),
    ],
)
def test_feature_shapes(name, img_size, tokens):
    model = getattr(crossvit, name)(img_size=img_size, embed_dim=(16, 32), num_heads=(2, 2), depth=((1, 1, 0),))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, img_size, img_size))
    assert [tuple(f.shape) for f in feats] == [(1, tokens[0], 16), (1, tokens[1], 32)]


def test_head_api():
    model = crossvit.crossvit_tiny_240(**crossvit._TEST_KWARGS).eval()
    x = _images(model)
    assert model.get_classifier() is model.head
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, model.num_features) == (2, 48)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) == model.expected_output_shape(2)
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled)
    headless = crossvit.crossvit_tiny_240(**{**crossvit._TEST_KWARGS, "num_classes": 0})
    assert headless(x).shape == (2, 48)


def test_drop_path_rates_follow_timm():
    ours = crossvit.crossvit_15_240(drop_path_rate=0.1)
    ref = timm.create_model("crossvit_15_240", drop_path_rate=0.1)

    def rates(model):
        return [round(getattr(m, "drop_prob", 0.0), 6) for m in model.modules() if type(m).__name__ == "DropPath"]

    assert rates(ours) == rates(ref) and len(rates(ours)) > 0


def test_bad_inputs_and_configs():
    model = crossvit.crossvit_tiny_240(**crossvit._TEST_KWARGS)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 120, 120))
    with pytest.raises(ValueError, match=r"\(120, 120\)"):
        model(torch.randn(1, 3, 128, 128))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 120, 120, dtype=torch.long))
    with pytest.raises(ValueError, match="rank 4"):
        model(torch.randn(3, 120, 120))
    with pytest.raises(ValueError, match="divisible"):
        crossvit.crossvit_tiny_240(img_size=224)  # 224 / 12 and 224 * 224/240 / 16 are not integers
    with pytest.raises(TypeError):
        crossvit.crossvit_tiny_240(not_an_argument=1)
    with pytest.raises(ValueError, match="multi_conv"):
        CrossViT(img_size=64, img_scale=(1.0, 1.0), patch_size=(8, 16), multi_conv=True)
    with pytest.raises(ValueError, match="not square"):
        checkpoint_filter_fn({"pos_embed_0": torch.zeros(1, 1 + 12, 16)}, model)


def test_export_and_compile():
    model = crossvit.crossvit_9_dagger_240(**crossvit._TEST_KWARGS).eval()
    x = _images(model)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
        # not fullgraph: core's attention() reads a ContextVar (use_backend), which dynamo cannot trace (graph break)
        compiled = torch.compile(model, backend="aot_eager")
        torch.testing.assert_close(compiled(x), expected)

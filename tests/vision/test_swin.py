"""Swin (formers.vision.models.swin) against the reference note's parameter counts, timm's implementation and the
official checkpoint layout."""

from __future__ import annotations

import re

import pytest
import timm
import torch
from timm.models import swin_transformer as timm_swin
from torch.utils.flop_counter import FlopCounterMode

from formers.core.attention import use_backend
from formers.core.registry import create_model
from formers.vision.models import swin
from formers.vision.models.swin import PatchMerging, SwinTransformer, checkpoint_filter_fn

# shared/reference/vision.md sections 1.4 / 2.1 (official code and timm 1.0.31 agree); Swin-L 384: timm's count
PARAMS = {
    "swin_tiny_patch4_window7_224": 28_288_354,
    "swin_small_patch4_window7_224": 49_606_258,
    "swin_base_patch4_window7_224": 87_768_224,
    "swin_base_patch4_window12_384": 87_903_584,
    "swin_large_patch4_window7_224": 196_532_476,
    "swin_large_patch4_window12_384": 196_735_516,
}
TOL = {"atol": 1e-5, "rtol": 1e-5}
# A narrow Swin (same code paths as Swin-T, ~30x cheaper) for the tests that run several forwards on CPU.
NARROW = {"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8)}


def _timm_pair(name: str, **kwargs) -> tuple[torch.nn.Module, SwinTransformer]:
    """timm's randomly initialised model and ours with its weights, both in eval mode."""
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, **kwargs).eval()
    assert type(ref).__module__ == "timm.models.swin_transformer"  # timm's own implementation, not a formers_* wrapper
    ours = create_model(name, **kwargs).eval()
    ours.load_state_dict(checkpoint_filter_fn(ref.state_dict(), ours), strict=True)
    return ref, ours


def _official_state_dict(ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's weights in the microsoft/Swin-Transformer layout: merging at the end of stages 0-2, ``head.weight``, and
    the persistent ``relative_position_index`` / ``attn_mask`` buffers of the official modules."""
    sd = {}
    for key, value in ref.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        sd[key.replace("head.fc.", "head.")] = value
    for name, module in ref.named_modules():
        if isinstance(module, timm_swin.SwinTransformerBlock):
            sd[f"{name}.attn.relative_position_index"] = module.attn.relative_position_index
            if module.attn_mask is not None:
                sd[f"{name}.attn_mask"] = module.attn_mask
    return sd


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_the_official_configs(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_state_dict_keys_equal_timm():
    with torch.device("meta"):
        ours, ref = swin.swin_tiny_patch4_window7_224(), timm.create_model("swin_tiny_patch4_window7_224")
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert len(ours.state_dict()) == 173
    assert [f["reduction"] for f in ours.feature_info] == [4, 8, 16, 32]
    assert [f["num_chs"] for f in ours.feature_info] == [96, 192, 384, 768]
    # stage 4 of Swin-T at 224 is a single 7 x 7 window: no shift, no mask (official behaviour)
    last = ours.layers[3].blocks[1]
    assert last.shift_size == (0, 0) and last.attn_mask is None
    assert ours.layers[0].blocks[1].shift_size == (3, 3)


def test_logits_equal_timm_swin_tiny():
    ref, ours = _timm_pair("swin_tiny_patch4_window7_224")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)


@pytest.mark.parametrize(
    ("img_size", "window_size"),
    [(192, 6), (384, 12), ((128, 256), 4)],
    ids=["192-window6", "384-window12", "non-square"],
)
def test_logits_and_feature_maps_equal_timm_at_other_sizes(img_size, window_size):
    ref, ours = _timm_pair("swin_tiny_patch4_window7_224", img_size=img_size, window_size=window_size, **NARROW)
    hw = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)
        maps = ours.forward_feature_maps(x)
        expected = ref.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [
        (1, 32 * 2**i, hw[0] // (4 * 2**i), hw[1] // (4 * 2**i)) for i in range(4)
    ]
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_masks_are_cached_buffers_equal_to_timm():
    ref, ours = _timm_pair("swin_tiny_patch4_window7_224", **NARROW)
    mine = dict(ours.named_modules())
    blocks = [(mine[n], b) for n, b in ref.named_modules() if isinstance(b, timm_swin.SwinTransformerBlock)]
    assert len(blocks) == 8
    for a, b in blocks:
        assert a.shift_size == b.shift_size and a.window_size == b.window_size
        if b.attn_mask is None:
            assert a.attn_mask is None
        else:
            assert torch.equal(a.attn_mask, b.attn_mask)
            assert set(a.attn_mask.unique().tolist()) == {0.0, -100.0}
    # the masks travel with the module (buffers) and stay out of the state dict (derived, like timm)
    assert "layers.0.blocks.1.attn_mask" in dict(ours.named_buffers())
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in ours.state_dict())


def test_relative_position_bias_is_cached_in_inference_and_refreshed_on_update():
    model = swin.swin_tiny_patch4_window7_224(**swin._TINY).eval()
    attn = model.layers[0].blocks[0].attn
    with torch.no_grad():
        first = attn.relative_position_bias()
        assert attn.relative_position_bias() is first  # no second gather
        attn.relative_position_bias_table.add_(1.0)  # in-place update (optimizer step, load_state_dict)
        refreshed = attn.relative_position_bias()
    assert refreshed is not first
    torch.testing.assert_close(refreshed, first + 1.0)
    # with grad enabled the gather is redone every time so the table gets gradients
    bias = attn.relative_position_bias()
    assert bias.requires_grad
    bias.sum().backward()
    assert attn.relative_position_bias_table.grad is not None


def test_patch_merging_uses_the_official_concatenation_order():
    merge = PatchMerging(4)
    x = torch.randn(2, 6, 8, 4)
    x0, x1, x2, x3 = x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    expected = merge.reduction(merge.norm(torch.cat([x0, x1, x2, x3], -1)))
    torch.testing.assert_close(merge(x), expected)


def test_official_checkpoint_format_loads_and_matches_timm():
    ref, _ = _timm_pair("swin_tiny_patch4_window7_224")
    official = _official_state_dict(ref)
    assert len(official) == 190  # the note's count for the official Swin-T checkpoint
    ours = swin.swin_tiny_patch4_window7_224().eval()
    ours.load_state_dict(checkpoint_filter_fn({"model": official}, ours), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's scipy-free interpolator warns about its own indexing
def test_filter_resizes_relative_position_tables_like_timm():
    torch.manual_seed(0)
    src = timm.create_model("swin_tiny_patch4_window7_224", **NARROW)
    ours = swin.swin_tiny_patch4_window7_224(img_size=384, window_size=12, **NARROW).eval()
    official = _official_state_dict(src)
    sd = checkpoint_filter_fn(official, ours)
    assert tuple(sd["layers.0.blocks.0.attn.relative_position_bias_table"].shape) == (23 * 23, 1)
    ours.load_state_dict(sd, strict=True)
    dst = timm.create_model("swin_tiny_patch4_window7_224", img_size=384, window_size=12, **NARROW).eval()
    dst.load_state_dict(timm_swin.checkpoint_filter_fn(official, dst), strict=True)
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), dst(x), **TOL)
    bad = {"layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(169, 3)}
    with pytest.raises(ValueError, match="heads"):
        checkpoint_filter_fn(bad, ours)


def test_classifier_reset_and_pre_logits():
    model = swin.swin_tiny_patch4_window7_224(**swin._TINY).eval()
    x = model.example_inputs(2)["x"]
    assert model.get_classifier() is model.head.fc
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        feats = model.forward_features(x)
        assert feats.shape == (2, 1, 1, model.num_features)  # NHWC like timm
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == model.expected_output_shape(2) == (2, model.num_features)
    assert swin.swin_tiny_patch4_window7_224(num_classes=10, **swin._TINY)(x).shape == (2, 10)


def test_clear_errors():
    model = swin.swin_tiny_patch4_window7_224(**swin._TINY)
    with pytest.raises(ValueError, match="expected 3 input channels, got 4"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"expected input size \(32, 32\), got \(64, 64\)"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="rank 4"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.int64))
    with torch.device("meta"):
        with pytest.raises(ValueError, match=r"does not split into \(7, 7\) windows"):
            swin.swin_tiny_patch4_window7_224(img_size=512)  # 128 x 128 tokens, window 7 (Swin issue #117)
        with pytest.raises(ValueError, match="multiple of patch_size"):
            swin.swin_tiny_patch4_window7_224(img_size=200)
        swin.swin_tiny_patch4_window7_224(img_size=512, window_size=8)  # the usual fix works
    with pytest.raises(TypeError, match="unexpected keyword"):
        swin.swin_tiny_patch4_window7_224(stride=8)
    with pytest.raises(TypeError, match="state dict"):
        checkpoint_filter_fn(None, model)


def test_drop_path_is_linear_over_all_blocks():
    model = swin.swin_tiny_patch4_window7_224(drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in model.layers for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 12).tolist())


def test_torch_export_and_compile():
    model = swin.swin_tiny_patch4_window7_224(**swin._TINY).eval()
    x = model.example_inputs(2)["x"]
    with torch.no_grad():
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), model(x), **TOL)
    # compile a one-stage W-MSA + SW-MSA model: core's attention() reads a ContextVar (use_backend), which dynamo
    # cannot trace, so each attention call is a graph break and compiling all of _TINY takes ~20 s on 2 CPUs
    small = SwinTransformer(img_size=16, embed_dim=8, depths=(2,), num_heads=(1,), window_size=2).eval()
    assert small.layers[0].blocks[1].shift_size == (1, 1)
    x = small.example_inputs(2)["x"]
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(small, backend="aot_eager")(x), small(x), **TOL)


def test_bf16_autocast_and_bf16_weights_with_one_input_channel():
    """The shift mask and the cached bias follow the compute dtype (a float32 mask broke fp16 Swin elsewhere)."""
    model = swin.swin_tiny_patch4_window7_224(in_chans=1, **swin._TINY).eval()
    x = model.example_inputs(2)["x"]
    assert x.shape == (2, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
        half = model.to(torch.bfloat16)(x.bfloat16())
    assert model.layers[0].blocks[1].attn_mask.dtype == torch.bfloat16
    for out in (mixed, half):
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    ("name", "size", "gmacs"),
    [("swin_tiny_patch4_window7_224", 224, 4.49), ("swin_base_patch4_window12_384", 384, 47.11)],
)
def test_macs_match_the_official_flops(name, size, gmacs):
    """GMACs within 2% of the official ``flops()`` (the note's 4.49G / 47.11G), attention through the reference
    kernel, which the FLOP counter sees; built on the meta device, so nothing is computed."""
    with torch.device("meta"):
        model = create_model(name).eval()
        with use_backend("reference"), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, size, size))
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=0.02)

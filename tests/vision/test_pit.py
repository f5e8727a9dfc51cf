"""PiT (formers.vision.models.pit) against the reference note's parameter counts and timm's implementation."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from formers.core.attention import use_backend
from formers.core.registry import create_model
from formers.vision.models import pit
from formers.vision.models.pit import PoolingVisionTransformer, checkpoint_filter_fn

# shared/reference/vision.md sections 1.2 and 2.1 (official pit.py and timm 1.0.31 agree)
PARAMS = {
    "pit_ti_224": 4_847_272,
    "pit_xs_224": 10_618_888,
    "pit_s_224": 23_461_912,
    "pit_b_224": 73_764_840,
    "pit_ti_distilled_224": 5_104_336,
    "pit_xs_distilled_224": 11_003_984,
    "pit_s_distilled_224": 24_039_056,
    "pit_b_distilled_224": 74_790_096,
}
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _timm_pair(name: str, **kwargs) -> tuple[torch.nn.Module, PoolingVisionTransformer]:
    """timm's randomly initialised model and ours with its weights, both in eval mode."""
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, **kwargs).eval()
    assert type(ref).__module__ == "timm.models.pit"  # timm's own implementation, not a formers_* wrapper
    ours = create_model(name, **kwargs).eval()
    ours.load_state_dict(checkpoint_filter_fn(ref.state_dict(), ours), strict=True)
    return ref, ours


def _official_state_dict(timm_sd: dict) -> dict:
    """timm keys -> naver-ai/pit keys (the inverse of timm's filter): ``transformers.{i+1}.pool.`` -> ``pools.{i}.``."""
    pat = re.compile(r"^transformers\.(\d+)\.pool\.")
    return {pat.sub(lambda m: f"pools.{int(m.group(1)) - 1}.", k): v for k, v in timm_sd.items()}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_the_official_configs(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert model.num_classes == 1000


def test_token_grids_of_the_paper_configs():
    with torch.device("meta"):
        ti, b = pit.pit_ti_224(), pit.pit_b_224()
    assert tuple(ti.pos_embed.shape) == (1, 64, 27, 27)  # overlapping kernel 16 / stride 8
    assert tuple(b.pos_embed.shape) == (1, 256, 31, 31)  # kernel 14 / stride 7
    assert [f["reduction"] for f in ti.feature_info] == [8, 16, 32]
    assert [f["num_chs"] for f in ti.feature_info] == [64, 128, 256]
    assert [f["reduction"] for f in b.feature_info] == [7, 14, 28]


@pytest.mark.parametrize("name", ["pit_ti_224", "pit_ti_distilled_224", "pit_xs_224"])
def test_logits_equal_timm_with_timm_weights(name):
    ref, ours = _timm_pair(name)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)
        torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x), **TOL)


def test_feature_maps_equal_timm_intermediates_at_another_resolution():
    ref, ours = _timm_pair("pit_ti_224", img_size=256)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        maps = ours.forward_feature_maps(x)
        expected = ref.forward_intermediates(x, intermediates_only=True)
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 31, 31), (1, 128, 16, 16), (1, 256, 8, 8)]
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize(("size", "grids"), [(224, (27, 14, 7)), (160, (19, 10, 5)), ((192, 256), None)])
def test_shapes_at_several_resolutions(size, grids):
    model = pit.pit_ti_224(img_size=size, num_classes=7).eval()
    hw = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        maps = model.forward_feature_maps(x)
        feats = model.forward_features(x)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
    if grids is not None:
        assert [m.shape[-1] for m in maps] == list(grids)
    else:  # non-square: (192 - 16) / 8 + 1 = 23 rows, 31 columns
        assert tuple(maps[0].shape[-2:]) == (23, 31)
    assert feats.shape == (2, 1, 256)


def test_official_checkpoint_format_loads_and_matches_timm():
    ref, _ = _timm_pair("pit_ti_distilled_224")
    official = _official_state_dict(ref.state_dict())
    assert any(k.startswith("pools.0.") for k in official) and not any(".pool." in k for k in official)
    ours = pit.pit_ti_distilled_224().eval()
    ours.load_state_dict(checkpoint_filter_fn(official, ours), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)


def test_filter_resizes_the_position_embedding_bicubically():
    ref, _ = _timm_pair("pit_ti_224")
    ours = pit.pit_ti_224(img_size=256).eval()
    sd = checkpoint_filter_fn({"model": ref.state_dict()}, ours)  # wrapped checkpoints are unwrapped
    assert tuple(sd["pos_embed"].shape) == (1, 64, 31, 31)
    torch.testing.assert_close(
        sd["pos_embed"], F.interpolate(ref.pos_embed, size=(31, 31), mode="bicubic", antialias=True), **TOL
    )
    ours.load_state_dict(sd, strict=True)
    with torch.no_grad():
        assert torch.isfinite(ours(torch.randn(1, 3, 256, 256))).all()
    with pytest.raises(ValueError, match="pos_embed"):
        checkpoint_filter_fn({"pos_embed": torch.zeros(1, 32, 27, 27)}, ours)


def test_classifier_reset_and_pre_logits():
    model = pit.pit_ti_224(**pit._TINY).eval()
    x = model.example_inputs(2)["x"]
    assert isinstance(model.get_classifier(), torch.nn.Linear)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pre.shape == (2, model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features) == model.expected_output_shape(2)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


def test_distilled_heads_average_in_eval_and_split_in_distilled_training():
    model = pit.pit_ti_distilled_224(**pit._TINY)
    head, head_dist = model.get_classifier()
    x = model.example_inputs(2)["x"]
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model(x), (head(feats[:, 0]) + head_dist(feats[:, 1])) / 2)
    model.train().set_distilled_training(True)
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2
    model.reset_classifier(3)
    assert [h.out_features for h in model.get_classifier()] == [3, 3]


def test_clear_errors():
    model = pit.pit_ti_224(**pit._TINY)
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"expected input size \(32, 32\), got \(48, 48\)"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="rank 4"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="unexpected keyword"):
        pit.pit_ti_224(window_size=7)
    with pytest.raises(ValueError, match="smaller than the patch kernel"):
        pit.pit_ti_224(img_size=8)
    with pytest.raises(ValueError, match="one entry per stage"):
        PoolingVisionTransformer(depth=(1, 1), heads=(1, 1, 1), base_dims=(8, 8, 8))
    with pytest.raises(TypeError, match="state dict"):
        checkpoint_filter_fn([("pos_embed", None)], model)


def test_drop_path_follows_the_official_linear_rule():
    model = pit.pit_ti_224(drop_path_rate=0.12)  # 12 blocks: rate * i / 12
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in model.transformers for b in s.blocks]
    assert rates == pytest.approx([0.12 * i / 12 for i in range(12)])


def test_torch_export_and_compile():
    model = pit.pit_ti_distilled_224(**pit._TINY).eval()
    x = model.example_inputs(2)["x"]
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, **TOL)
        # not fullgraph: core's attention() reads a ContextVar (use_backend), a graph break for dynamo
        compiled = torch.compile(model, backend="aot_eager")
        torch.testing.assert_close(compiled(x), expected, **TOL)


@pytest.mark.parametrize(("name", "gmacs"), [("pit_ti_224", 0.70), ("pit_s_224", 2.87)])
def test_macs_match_the_reference_note(name, gmacs):
    """GMACs at 224 within 2% of the note's unfused measurement (attention through the reference kernel, which the
    FLOP counter sees; built on the meta device, so nothing is computed)."""
    with torch.device("meta"):
        model = create_model(name).eval()
        with use_backend("reference"), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, 224, 224))
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=0.02)

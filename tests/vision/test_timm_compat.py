"""formers models in timm's registry: naming rule, timm.create_model, pretrained_cfg / resolve_data_config, and
timm's own entries left untouched."""

from __future__ import annotations

import pytest
import timm
import timm.data
import torch
from PIL import Image

import formers.vision as fv
from formers.core.registry import _REGISTRY, register_model


def test_naming_rule_and_listing(tiny_model):
    assert fv.timm_name(tiny_model) == "formers_" + tiny_model
    assert fv.formers_name("formers_" + tiny_model) == tiny_model
    with pytest.raises(ValueError, match="not a formers model"):
        fv.formers_name("pit_ti_224")
    listed = timm.list_models("formers_*")
    assert sorted(listed) == sorted(fv.timm_name(n) for n in fv.list_models())
    assert not [n for n in timm.list_models() if n.startswith("formers_") and n not in listed]


def test_timm_create_model_builds_ours(tiny_model):
    model = timm.create_model(fv.timm_name(tiny_model), num_classes=5, img_size=32)
    assert type(model).__name__ == "TinyNet" and model.num_classes == 5
    assert model.pretrained_cfg["architecture"] == fv.timm_name(tiny_model)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_resolve_data_config_and_transforms(tiny_model):
    model = timm.create_model(fv.timm_name(tiny_model), img_size=48)
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg["input_size"] == (3, 48, 48)
    assert data_cfg["mean"] == (0.5,) * 3 and data_cfg["std"] == (0.25,) * 3
    assert data_cfg["crop_pct"] == 0.875 and data_cfg["interpolation"] == "bicubic"
    transform = timm.data.create_transform(**data_cfg)
    x = transform(Image.new("RGB", (70, 60), (128, 128, 128)))
    assert x.shape == (3, 48, 48)
    torch.testing.assert_close(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-3, rtol=0)
    registered = timm.models.get_pretrained_cfg(fv.timm_name(tiny_model))
    assert registered.input_size == (3, 32, 32) and registered.mean == (0.5,) * 3


def test_timm_pretrained_keywords(tiny_model, tmp_path):
    name = fv.timm_name(tiny_model)
    with pytest.raises(ValueError, match="never downloads"):
        timm.create_model(name, pretrained=True)
    with pytest.raises(ValueError, match="no pretrained tag"):
        timm.create_model(name + ".in1k", pretrained=True)
    with pytest.raises(RuntimeError, match=r"Invalid pretrained tag \(in1k\)"):  # timm's own check
        timm.create_model(name + ".in1k")
    ref = fv.create_model(tiny_model)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pth.tar")
    # img_size as an int: TinyNet takes no (H, W) pair, the default timm derives from a fixed-size cfg
    model = timm.create_model(
        name,
        pretrained=True,
        # timm's rule: the cfg's num_classes describes the checkpoint (TinyNet's 10 here), else the head is dropped
        pretrained_cfg_overlay={"file": str(tmp_path / "w.pth.tar"), "num_classes": 10},
        cache_dir=str(tmp_path),
        img_size=32,
    )
    torch.testing.assert_close(model.head.weight, ref.head.weight)
    # timm's own checkpoint_path loader (strict, formers key format) works too
    torch.save(ref.state_dict(), tmp_path / "plain.pth")
    loaded = timm.create_model(name, checkpoint_path=str(tmp_path / "plain.pth"), img_size=32, num_classes=10)
    torch.testing.assert_close(loaded.pos_embed, ref.pos_embed)
    feats = timm.create_model(name, features_only=True, out_indices=(1,), img_size=32)
    assert [tuple(m.shape) for m in feats(torch.randn(1, 3, 32, 32))] == [(1, 16, 4, 4)]


@pytest.mark.parametrize("timm_own", ["pit_ti_224", "crossvit_tiny_240", "swin_tiny_patch4_window7_224"])
def test_timm_own_models_are_untouched(timm_own):
    registry = timm.models._registry
    assert registry._model_to_module[timm_own] in ("pit", "crossvit", "swin_transformer")
    assert registry._model_entrypoints[timm_own].__module__.startswith("timm.models.")
    with torch.device("meta"):
        model = timm.create_model(timm_own)
    assert type(model).__module__.startswith("timm.models.")
    assert timm.models.get_pretrained_cfg(timm_own).hf_hub_id.startswith("timm/")


def test_a_clashing_timm_name_is_refused(tiny_model):
    """A ``formers_*`` name that timm got from elsewhere is never overwritten."""
    registry = timm.models._registry

    def formers_vision_test_clash(**kwargs):
        return torch.nn.Identity()

    def vision_test_clash(**kwargs):
        return torch.nn.Identity()

    timm.models.register_model(formers_vision_test_clash)
    try:
        register_model(vision_test_clash, domain="vision", paper="test")
        with pytest.raises(ValueError, match="timm already has a model named 'formers_vision_test_clash'"):
            fv.register_timm_models()
        assert registry._model_entrypoints["formers_vision_test_clash"] is formers_vision_test_clash
    finally:
        registry._clear_model_entries("formers_vision_test_clash")
        registry._model_entrypoints.pop("formers_vision_test_clash", None)
        _REGISTRY.pop("vision_test_clash", None)

"""formers.vision.create_model / list_models: names, kwargs, pretrained_cfg, features_only, clear errors."""

from __future__ import annotations

import pytest
import torch

import formers.vision as fv
from formers.core.registry import get_model_entry
from formers.core.registry import list_models as core_list_models


def test_list_models_filters_and_matches_the_core_registry(tiny_model):
    names = fv.list_models()
    assert names == sorted(names) and tiny_model in names
    assert fv.list_models("vision_test_*") == ["vision_test_tiny", "vision_test_tiny_nofeat"]
    assert set(names) == set(core_list_models(domain="vision"))


def test_create_model_kwargs_and_pretrained_cfg(tiny_model):
    model = fv.create_model(tiny_model, num_classes=7, img_size=48, in_chans=1)
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["input_size"] == (1, 48, 48) and cfg["num_classes"] == 7  # the model actually built
    assert cfg["mean"] == (0.5,) * 3 and cfg["crop_pct"] == 0.875 and cfg["architecture"] == tiny_model
    overlay = fv.create_model(tiny_model, pretrained_cfg_overlay={"crop_pct": 1.0}).pretrained_cfg
    assert overlay["crop_pct"] == 1.0
    assert get_model_entry(tiny_model).pretrained_cfg["crop_pct"] == 0.875  # the registered cfg is not mutated


def test_unknown_names_and_kwargs(tiny_model):
    with pytest.raises(ValueError, match="unknown vision model 'no_such_net'.*list_models"):
        fv.create_model("no_such_net")
    with pytest.raises(TypeError, match="no_such_kwarg"):
        fv.create_model(tiny_model, no_such_kwarg=1)


def test_pretrained_needs_a_local_file(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        fv.create_model(tiny_model, pretrained=True)
    ref = fv.create_model(tiny_model)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model = fv.create_model(tiny_model, pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "w.pth")})
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_features_only_returns_nchw_maps(tiny_model):
    feats = fv.create_model(tiny_model, img_size=32, features_only=True)
    maps = feats(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 8, 8), (2, 16, 4, 4)]
    assert feats.feature_info.channels() == [8, 16] and feats.feature_info.reduction() == [4, 8]
    last = fv.create_model(tiny_model, features_only=True, out_indices=[-1])
    assert [tuple(m.shape) for m in last(torch.randn(1, 3, 32, 32))] == [(1, 16, 4, 4)]
    assert last.feature_info.channels() == [16]
    assert not any(n.startswith("model.head.") for n, _ in last.named_parameters())  # classifier dropped


def test_features_only_errors(tiny_model):
    with pytest.raises(ValueError, match="TinyNet has no multi-scale feature maps.*features_only=True"):
        fv.create_model("vision_test_tiny_nofeat", features_only=True)
    with pytest.raises(ValueError, match="out_indices"):
        fv.create_model(tiny_model, features_only=True, out_indices=[5])


def test_wrong_channels_is_a_clear_error(tiny_model):
    model = fv.create_model(tiny_model)
    with pytest.raises(ValueError, match="expects float \\(B, 3, H, W\\)"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize(
    "name", [n for n in fv.list_models() if get_model_entry(n).factory.__module__.startswith("formers.vision.models.")]
)
def test_every_family_config_has_a_consistent_pretrained_cfg(name):
    """Every registered configuration builds (meta device: no memory) with a cfg whose input size it accepts."""
    with torch.device("meta"):
        model = fv.create_model(name)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == get_model_entry(name).pretrained_cfg["input_size"], "cfg input_size != model size"
    assert cfg["num_classes"] == get_model_entry(name).pretrained_cfg["num_classes"] == model.num_classes
    assert {"mean", "std", "crop_pct", "interpolation", "first_conv", "classifier"} <= set(cfg)
    state = model.state_dict()
    for key in ("first_conv", "classifier"):  # a module name or a tuple of them (timm allows both)
        for module in [cfg[key]] if isinstance(cfg[key], str) else cfg[key]:
            assert f"{module}.weight" in state, f"{key} {module!r} is not a module of {name}"


def _one_per_family() -> list[str]:
    out: dict[str, str] = {}
    for name in fv.list_models():
        module = get_model_entry(name).factory.__module__
        if module.startswith("formers.vision.models."):
            out.setdefault(module, name)
    return sorted(out.values())


@pytest.mark.parametrize("name", _one_per_family())
def test_family_rejects_wrong_channels_and_sizes(name):
    """The contract: a wrong channel count or image size is a ValueError naming the expected and the given value."""
    model = fv.create_model(name, **get_model_entry(name).test_kwargs).eval()
    x = next(iter(model.example_inputs(1).values()))  # the image (``x``; kMaX: ``images``)
    c, h, w = x.shape[1:]
    with torch.no_grad():
        with pytest.raises(ValueError, match=rf"{c}\b(.|\n)*\b{c + 1}\b|{c + 1}\b(.|\n)*\b{c}\b"):
            model(torch.randn(1, c + 1, h, w))
        if not get_model_entry(name).pretrained_cfg.get("fixed_input_size", True):
            return  # any size is valid (kMaX-DeepLab)
        with pytest.raises(ValueError, match=rf"{h}\b(.|\n)*\b{h + 8}\b|{h + 8}\b(.|\n)*\b{h}\b"):
            model(torch.randn(1, c, h + 8, w + 8))


def test_names_in_docs_and_docstrings_are_registered():
    """Every ``create_model("<name>")`` in the vision README and the package's docstrings names a real model: a
    formers vision model, ``formers_<name>`` in timm, or one of timm's own (e.g. the comparison ``reference``)."""
    import re
    from pathlib import Path

    import timm

    root = Path(fv.__file__).parents[3]  # packages/vision
    sources = [root / "README.md", *sorted((root / "src").rglob("*.py"))]
    called = re.compile(r"create_model\(\s*f?[\"']([^\"'{}<]+)[\"']")
    found = {(src.name, name) for src in sources for name in called.findall(src.read_text(encoding="utf-8"))}
    assert len(found) >= 5
    unknown = [
        (where, name)
        for where, name in sorted(found)
        if name not in fv.list_models() and not timm.is_model(name) and not name.startswith(("local-dir:", "hf-hub:"))
    ]
    assert not unknown, f"unregistered model names in docs: {unknown}"

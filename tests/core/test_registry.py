"""The one registry and builder: ``formers.core.builder.build_model`` for core, time-series and vision names,
checkpoints through it, ``features_only``, the per-domain ``create_model`` filters and duplicate registration."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

import formers.timeseries
import formers.vision
from formers.core import registry
from formers.core.builder import build_model, resolve_pretrained_cfg
from formers.core.features import FeatureInfo, FeatureMapsModel
from formers.core.registry import _REGISTRY, get_model_entry, register_model
from formers.core.weights import CheckpointError

CORE, TIMESERIES, VISION = "transformer_classifier", "itransformer", "pit_ti_224"


def tiny(name: str, **kwargs: Any) -> nn.Module:
    return build_model(name, **{**get_model_entry(name).test_kwargs, **kwargs}).eval()


def same_output(a: nn.Module, b: nn.Module) -> None:
    inputs = a.example_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(b(**inputs), a(**inputs), atol=0, rtol=0)


@pytest.fixture
def scratch():
    """Register throwaway models under ``_test_*`` names; removed again afterwards."""
    names: list[str] = []

    def add(factory, **options):
        names.append(options.get("name") or factory.__name__)
        return register_model(factory, domain="test", **options)

    yield add
    for name in names:
        _REGISTRY.pop(name, None)


class Stages(nn.Module):
    """Two conv stages and a head, without feature_info / forward_feature_maps of its own."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem, self.stage2 = nn.Conv2d(3, 4, 2, 2), nn.Conv2d(4, 6, 2, 2)
        self.head = nn.Linear(6, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage2(self.stem(x)).mean((2, 3)))


# ------------------------------------------------------------------------------------------------ build_model


@pytest.mark.parametrize("name", [CORE, TIMESERIES])
def test_models_without_a_cfg_get_nothing_attached(name):
    model = tiny(name)
    assert type(model) is type(get_model_entry(name).create(**get_model_entry(name).test_kwargs))
    assert not hasattr(model, "pretrained_cfg") and not hasattr(model, "default_cfg")
    assert resolve_pretrained_cfg(name) == {"architecture": name}


def test_vision_models_get_the_cfg_of_the_model_built():
    model = tiny(VISION, num_classes=5)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and cfg["architecture"] == VISION
    assert cfg["num_classes"] == 5 and cfg["input_size"] == tuple(model.example_inputs(1)["x"].shape[1:])
    assert cfg["input_size"] != get_model_entry(VISION).pretrained_cfg["input_size"]  # test_kwargs shrink img_size
    assert get_model_entry(VISION).pretrained_cfg["num_classes"] == 1000  # the registered cfg is not mutated


def test_registry_create_model_is_the_builder(tmp_path):
    model = tiny(TIMESERIES)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = registry.create_model(
        TIMESERIES, checkpoint_path=tmp_path / "w.pth", **get_model_entry(TIMESERIES).test_kwargs
    )
    same_output(model, again.eval())


# ------------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("name", [CORE, TIMESERIES, VISION])
def test_lightning_checkpoint_round_trip(name, tmp_path):
    """A formers Lightning checkpoint (``model.`` prefix, EMA preferred) reloads exactly through build_model."""
    torch.manual_seed(0)
    model = tiny(name)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    noise = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"state_dict": noise, "state_dict_ema": state, "epoch": 1}, tmp_path / "run.ckpt")
    same_output(model, tiny(name, checkpoint_path=tmp_path / "run.ckpt"))
    raw = tiny(name, checkpoint_path=tmp_path / "run.ckpt", use_ema=False)
    first = next(k for k, v in model.state_dict().items() if v.is_floating_point())
    assert torch.equal(raw.state_dict()[first], noise[f"model.{first}"])


def test_safetensors_and_pretrained_file(tmp_path):
    model = tiny(CORE)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    same_output(model, tiny(CORE, checkpoint_path=tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="never downloads"):
        tiny(CORE, pretrained=True)
    overlay = {"file": str(tmp_path / "w.safetensors")}
    same_output(model, tiny(CORE, pretrained=True, pretrained_cfg_overlay=overlay))


def test_a_checkpoint_that_does_not_fit_names_the_file_and_keys(tmp_path):
    state = tiny(TIMESERIES).state_dict()
    missing = sorted(state)[0]
    del state[missing]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as err:
        tiny(TIMESERIES, checkpoint_path=tmp_path / "other.pth")
    message = str(err.value)
    assert "other.pth" in message and f"missing keys (1): {missing}" in message
    assert "unexpected keys (1): extra.weight" in message
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        tiny(TIMESERIES, checkpoint_path=tmp_path / "nowhere.pth")


def test_filter_fn_and_classifier_from_the_entry(scratch, tmp_path):
    """The entry's filter_fn maps foreign keys; its cfg's classifier of another size stays freshly initialized."""

    def rename(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        return {k.replace("fc_out.", "head."): v for k, v in state.items()}

    def _test_filtered(**kwargs: Any) -> Stages:
        return Stages(**kwargs)

    scratch(_test_filtered, pretrained_cfg={"classifier": "head"}, filter_fn=rename)
    ref = Stages()
    torch.save({k.replace("head.", "fc_out."): v for k, v in ref.state_dict().items()}, tmp_path / "foreign.pth")
    model = build_model("_test_filtered", checkpoint_path=tmp_path / "foreign.pth")
    assert torch.equal(model.head.weight, ref.head.weight) and model.pretrained_cfg["num_classes"] == 4
    other = build_model("_test_filtered", num_classes=9, checkpoint_path=tmp_path / "foreign.pth")
    assert other.head.weight.shape == (9, 6) and torch.equal(other.stage2.weight, ref.stage2.weight)


# ------------------------------------------------------------------------------------------------ features_only


def test_features_only_from_the_model_and_from_the_entry(scratch):
    swin = "swin_tiny_patch4_window7_224"
    own = tiny(swin, features_only=True, out_indices=(0, -1))
    assert isinstance(own, FeatureMapsModel) and own.feature_info.reduction() == [4, 32]
    maps = own(torch.randn(1, 3, 32, 32))  # the tiny Swin: img_size 32, embed_dim 8, four stages
    assert [tuple(m.shape) for m in maps] == [(1, 8, 8, 8), (1, 64, 1, 1)] and own.feature_info.channels() == [8, 64]

    def _test_declared(**kwargs: Any) -> Stages:
        return Stages(**kwargs)

    declared = [{"num_chs": 4, "reduction": 2, "module": "stem"}, {"num_chs": 6, "reduction": 4, "module": "stage2"}]
    scratch(_test_declared, feature_info=declared)
    feats = build_model("_test_declared", features_only=True)
    assert [tuple(m.shape) for m in feats(torch.randn(2, 3, 16, 16))] == [(2, 4, 8, 8), (2, 6, 4, 4)]
    assert feats.feature_info.module_name() == ["stem", "stage2"] and feats.feature_info.channels(1) == 6


def test_features_only_errors(scratch):
    with pytest.raises(ValueError, match="TransformerClassifier has no multi-scale feature maps"):
        tiny(CORE, features_only=True)
    with pytest.raises(ValueError, match="out_indices.*needs features_only=True"):
        tiny(CORE, out_indices=[0])

    def _test_bad_declared(**kwargs: Any) -> Stages:
        return Stages(**kwargs)

    scratch(_test_bad_declared, feature_info=[{"num_chs": 4, "reduction": 2, "module": "no_such_module"}])
    with pytest.raises(ValueError, match="no_such_module"):
        build_model("_test_bad_declared", features_only=True)
    with pytest.raises(ValueError, match="non-decreasing reduction"):
        FeatureInfo([{"num_chs": 4, "reduction": 4, "module": "a"}, {"num_chs": 4, "reduction": 2, "module": "b"}], [0])


# ------------------------------------------------------------------------------------------------ domains


def test_domain_create_model_and_list_models_filter_the_registry():
    assert formers.vision.list_models() == registry.list_models(domain="vision")
    assert formers.timeseries.list_models() == registry.list_models(domain="timeseries")
    assert set(formers.vision.list_models()).isdisjoint(formers.timeseries.list_models())
    assert VISION in formers.vision.list_models() and TIMESERIES in formers.timeseries.list_models()
    kwargs = get_model_entry(TIMESERIES).test_kwargs
    torch.manual_seed(0)
    ref = tiny(TIMESERIES)
    torch.manual_seed(0)  # the same initialization: the domain's create_model is the same build
    same_output(ref, formers.timeseries.create_model(TIMESERIES, **kwargs).eval())


@pytest.mark.parametrize(
    "create, name, home",
    [
        (formers.vision.create_model, TIMESERIES, "timeseries"),
        (formers.timeseries.create_model, VISION, "vision"),
        (formers.vision.create_model, CORE, "core"),
    ],
)
def test_a_name_of_another_domain_says_where_it_lives(create, name, home):
    with pytest.raises(
        ValueError, match=rf"unknown \w+ model '{name}'.*is a {home} model.*formers\.{home}\.create_model"
    ):
        create(name)


def test_unknown_names_suggest_close_names_and_point_to_list_models():
    with pytest.raises(ValueError, match=r"unknown vision model 'pit_ti'; did you mean 'pit_ti_224'\?.*list_models"):
        formers.vision.create_model("pit_ti")
    with pytest.raises(ValueError, match=r"unknown model 'pit_ti'; did you mean 'pit_ti_224'\?"):
        registry.create_model("pit_ti")  # the Python API of every domain: the same message
    with pytest.raises(ValueError, match=r"unknown model 'no_such_model'.*list_models\(\)"):
        build_model("no_such_model")
    assert registry.suggest_model_names("swin_tiny")[0] == "swin_tiny_patch4_window7_224"
    assert registry.suggest_model_names("t2t_vit14")[0] == "t2t_vit_14"  # difflib: a missing underscore
    assert "transformer_classifier" in registry.suggest_model_names("transformer_clasifier")
    assert registry.suggest_model_names("informr", domain="timeseries")[0] == "informer"
    assert registry.suggest_model_names("zzzz") == []


@pytest.mark.parametrize(
    "typed, name",
    [("iTransformer", "itransformer"), ("Informer", "informer"), ("Autoformer", "autoformer"),
     ("T2T-ViT-14", "t2t_vit_14"), ("PIT_TI_224", "pit_ti_224"), ("Transformer_Classifier", "transformer_classifier")],
)  # fmt: skip
def test_names_are_case_insensitive(typed, name):
    """The papers' / Time-Series-Library's spellings build the registered default configuration."""
    assert registry.resolve_model_name(typed) == name and get_model_entry(typed).name == name
    model = build_model(typed, **get_model_entry(name).test_kwargs)
    assert model.formers_config["architecture"] == name  # recorded under the registered name


def test_aliases(scratch):
    def _test_aliased(**kwargs: Any) -> Stages:
        return Stages(**kwargs)

    def _test_other(**kwargs: Any) -> Stages:
        return Stages(**kwargs)

    scratch(_test_aliased, aliases=("Test-Paper-Net",))
    try:
        assert registry.resolve_model_name("test paper net") == "_test_aliased"
        assert isinstance(build_model("TEST-PAPER-NET"), Stages)
        assert "_test_aliased" in registry.suggest_model_names("test_paper_ne")
        with pytest.raises(ValueError, match="alias 'test_paper_net' of '_test_other' is already .*'_test_aliased'"):
            scratch(_test_other, aliases=("test_paper_net",))
        assert "_test_other" not in registry.list_models()  # refused before anything was registered
        with pytest.raises(ValueError, match="already an alias of '_test_aliased'"):
            scratch(_test_other, name="Test_Paper_Net")
    finally:
        registry._ALIASES.pop("test_paper_net", None)


def test_build_model_records_name_and_arguments():
    model = tiny(TIMESERIES, pred_len=4)
    assert model.formers_config == {
        "architecture": TIMESERIES,
        "model_args": {**get_model_entry(TIMESERIES).test_kwargs, "pred_len": 4},
    }
    assert not hasattr(tiny(VISION, features_only=True), "formers_config")  # the wrapper is no saveable model


def test_a_saved_directory_is_a_checkpoint_path(tmp_path):
    from formers.core.hub import save_pretrained

    model = tiny(CORE)
    save_pretrained(model, tmp_path / "saved")
    same_output(model, tiny(CORE, checkpoint_path=tmp_path / "saved"))
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors, pytorch_model.bin"):
        tiny(CORE, checkpoint_path=tmp_path)


# ------------------------------------------------------------------------------------------------ registration


def test_duplicate_names_are_refused_across_domains(scratch):
    def _test_dup(**kwargs: Any) -> nn.Module:
        return nn.Identity()

    def other(**kwargs: Any) -> nn.Module:
        return nn.Identity()

    cfg = {"crop_pct": 1.0}
    scratch(_test_dup, pretrained_cfg=cfg)
    cfg["crop_pct"] = 0.5
    assert get_model_entry("_test_dup").pretrained_cfg == {"crop_pct": 1.0}  # the entry keeps its own copy
    with pytest.raises(ValueError, match="'_test_dup' is already registered by .*_test_dup"):
        register_model(other, name="_test_dup", domain="timeseries")
    with pytest.raises(ValueError, match=f"'{VISION}' is already registered"):
        register_model(other, name=VISION, domain="test")
    assert get_model_entry(VISION).factory.__module__ == "formers.vision.models.pit"
    assert get_model_entry(VISION).filter_fn is not None and get_model_entry(CORE).filter_fn is None


def test_core_builder_does_not_import_timm():
    """Layering: core serves vision's timm-style cfgs and features without depending on timm."""
    code = "import sys, formers.core.builder; assert 'timm' not in sys.modules, 'core imported timm'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr

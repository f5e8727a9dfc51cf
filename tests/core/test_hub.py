"""One save/load format for every domain (formers.core.hub): ``save_pretrained`` -> ``config.json`` +
``model.safetensors`` -> ``create_model(<dir>)`` / ``from_pretrained`` with equal outputs; a CLI-trained model shared
in two lines; overwrite refusal, atomic writes, clear errors for arguments JSON cannot hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from _cli import run_script
from formers.core.builder import build_model
from formers.core.domain import load_trained
from formers.core.hub import from_pretrained, save_pretrained
from formers.core.main import main
from formers.core.registry import _REGISTRY, create_model, get_model_entry, register_model
from formers.core.tasks import ClassificationTask

REPO = Path(__file__).resolve().parents[2]
# one tiny model per domain
PER_DOMAIN = ["transformer_classifier", "itransformer", "pit_ti_224", "graphormer_base", "fno_darcy", "byteformer_tiny"]


def tiny(name: str, **kwargs: Any) -> nn.Module:
    return create_model(name, **{**get_model_entry(name).test_kwargs, **kwargs}).eval()


def outputs(model: nn.Module, inputs: dict) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    if isinstance(out, torch.Tensor):
        return [out]
    return [v for v in (out.values() if isinstance(out, dict) else out) if isinstance(v, torch.Tensor)]


def assert_same_outputs(a: nn.Module, b: nn.Module) -> None:
    inputs = a.example_inputs(2)
    for x, y in zip(outputs(a, inputs), outputs(b, inputs), strict=True):
        torch.testing.assert_close(y, x, rtol=0, atol=0)


def randomize(model: nn.Module) -> nn.Module:
    """Weights that differ from any fresh initialization (a reload that ignored the file would be caught)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", PER_DOMAIN)
def test_round_trip_every_domain(name, tmp_path):
    model = randomize(tiny(name))
    saved = save_pretrained(model, tmp_path / "shared")
    config = json.loads((saved / "config.json").read_text())
    entry = get_model_entry(name)
    assert config["architecture"] == name and config["formers"]["domain"] == entry.domain
    assert config["formers"]["format"] == 1 and config["formers"]["version"]
    assert config["model_args"] == json.loads(json.dumps(entry.test_kwargs))  # tuples stored as lists
    assert set(load_file(saved / "model.safetensors")) == set(model.state_dict())
    for loaded in (create_model(str(saved)), create_model(f"local-dir:{saved}"), from_pretrained(saved)):
        assert type(loaded) is type(model) and loaded.training  # as create_model(name) builds it: train mode
        assert_same_outputs(model, loaded.eval())
    assert_same_outputs(model, build_model(str(saved), domain=entry.domain).eval())


def test_vision_config_is_timm_layout_and_overrides_apply(tmp_path):
    """timm's save_for_hf keys (architecture, num_classes, num_features, model_args, pretrained_cfg); a new
    num_classes gets a fresh classifier while every other weight loads."""
    model = randomize(tiny("pit_ti_224", num_classes=7))
    save_pretrained(model, tmp_path / "pit")
    config = json.loads((tmp_path / "pit" / "config.json").read_text())
    assert config["num_classes"] == 7 and config["num_features"] == model.num_features
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["classifier"] == "head" and "file" not in cfg
    again = create_model(str(tmp_path / "pit")).eval()
    assert again.pretrained_cfg["input_size"] == (3, 32, 32) and again.pretrained_cfg["num_classes"] == 7
    five = create_model(str(tmp_path / "pit"), num_classes=5)
    assert five.head.weight.shape[0] == 5 and five.pretrained_cfg["num_classes"] == 5
    assert torch.equal(five.state_dict()["transformers.0.blocks.0.attn.qkv.weight"],
                       model.state_dict()["transformers.0.blocks.0.attn.qkv.weight"])  # fmt: skip
    feats = create_model(str(tmp_path / "pit"), features_only=True)
    assert len(feats(torch.randn(1, 3, 32, 32))) == len(feats.feature_info)


def test_names_and_domains(tmp_path):
    """A registered name wins over a folder of that name; a saved model of another domain is refused by a domain's
    create_model; a path without config.json says so."""
    import formers.vision

    save_pretrained(tiny("itransformer"), tmp_path / "ts")
    with pytest.raises(ValueError, match="is a timeseries model"):
        formers.vision.create_model(str(tmp_path / "ts"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="without config.json"):
        create_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        create_model(f"local-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="holds its weights"):
        create_model(str(tmp_path / "ts"), checkpoint_path=tmp_path / "x.pth")
    with pytest.raises(ValueError, match="never downloads"):
        from_pretrained("itransformer")  # a name: its local pretrained file, which it has not


def test_existing_directories_are_never_overwritten_silently(tmp_path):
    model = tiny("transformer_classifier")
    target = tmp_path / "m"
    target.mkdir()
    save_pretrained(model, target)  # an existing empty folder is fine
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        save_pretrained(randomize(model), target)
    assert (target / "model.safetensors").read_bytes() == before
    (target / "README.md").write_text("my model card")
    save_pretrained(model, target, overwrite=True)
    assert (target / "README.md").read_text() == "my model card"  # the user's other files are kept
    assert (target / "model.safetensors").read_bytes() != before
    assert_same_outputs(model, create_model(str(target)).eval())
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        save_pretrained(model, tmp_path / "file", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m"]  # no staging folders left


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tiny("transformer_classifier"), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_arguments_json_cannot_hold_are_named(tmp_path):
    def _test_act_model(act: Any = nn.GELU, width: int = 2) -> nn.Module:
        return nn.Sequential(nn.Linear(width, width), act())

    register_model(_test_act_model, domain="test")
    try:
        model = build_model("_test_act_model", act=nn.ReLU)
        assert model.formers_config == {"architecture": "_test_act_model", "model_args": {"act": nn.ReLU}}
        with pytest.raises(TypeError, match=r"_test_act_model: model_args.act = <class .*ReLU.*is not JSON"):
            save_pretrained(model, tmp_path / "never_written")
        assert not (tmp_path / "never_written").exists()
    finally:
        _REGISTRY.pop("_test_act_model")
    with pytest.raises(ValueError, match="not built by formers' builder"):
        save_pretrained(nn.Linear(2, 2), tmp_path / "never_written")
    import formers.vision

    for features in (
        tiny("pit_ti_224", features_only=True),
        formers.vision.create_model("pit_ti_224", features_only=True),
    ):
        with pytest.raises(ValueError, match=r"not its \w+ wrapper \(features_only\)"):
            save_pretrained(features, tmp_path / "never_written")


def test_case_insensitive_names_and_placement_keywords(tmp_path):
    """A paper's spelling is saved under the registered name; timm's device= / dtype= keywords are not model
    arguments (the weights keep their dtype in the file)."""
    model = create_model("iTransformer", **get_model_entry("itransformer").test_kwargs)
    assert model.formers_config["architecture"] == "itransformer"
    half = tiny("pit_ti_224", dtype=torch.bfloat16, device="cpu")
    save_pretrained(half, tmp_path / "bf16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["architecture"] == "pit_ti_224" and not {"dtype", "device"} & set(config["model_args"])
    assert {t.dtype for t in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {torch.bfloat16}
    again = create_model(str(tmp_path / "bf16"), dtype=torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), half.state_dict().values(), strict=True))


def test_a_task_checkpoint_is_shared_in_two_lines(tmp_path):
    """load_trained(ckpt) -> save_pretrained -> create_model(dir): the task's network, same outputs."""
    kwargs = {"vocab_size": 16, "num_classes": 4, "max_len": 12, "dim": 16, "depth": 1, "num_heads": 2}
    task = ClassificationTask("transformer_classifier", kwargs)
    randomize(task.model)
    hparams = {**task.hparams, "_class_path": "formers.core.tasks.ClassificationTask"}
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams}, tmp_path / "best.ckpt")

    save_pretrained(load_trained(tmp_path / "best.ckpt"), tmp_path / "shared")
    assert_same_outputs(task.model.eval(), create_model(str(tmp_path / "shared")).eval())


@pytest.mark.slow
def test_a_cli_trained_model_is_shared_in_two_lines(tmp_path):
    """A real ``formers-core fit`` run (the tiny config, 1 epoch), shared with save_pretrained and reloaded."""
    config = yaml.safe_load((REPO / "pipelines" / "core" / "tiny.yaml").read_text())
    config["run_dir"] = str(tmp_path / "run")
    config["trainer"]["max_epochs"] = 1
    config["data"]["init_args"].update(num_train=128, num_val=64, num_test=64)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    fit = run_script("formers-core", main, ["fit", "--config", str(tmp_path / "c.yaml")], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"

    save_pretrained(load_trained(ckpt), tmp_path / "shared")
    model = create_model(str(tmp_path / "shared")).eval()

    assert_same_outputs(load_trained(ckpt).task.model, model)


def test_timm_save_for_hf_directories_load(tmp_path):
    """A formers vision model saved by timm (``timm.create_model("formers_<name>")`` + ``save_for_hf``: architecture
    ``formers_<name>``, timm's model_args) loads through formers' create_model, in both of timm's weight formats."""
    timm = pytest.importorskip("timm")
    import formers.vision  # noqa: F401  (registers the formers_* names in timm)

    model = timm.create_model("formers_pit_ti_224", **get_model_entry("pit_ti_224").test_kwargs).eval()
    for safe in (True, False):  # model.safetensors, or timm's default pytorch_model.bin (loaded weights-only)
        timm.models.save_for_hf(model, tmp_path / str(safe), safe_serialization=safe)
        assert json.loads((tmp_path / str(safe) / "config.json").read_text())["architecture"] == "formers_pit_ti_224"
        assert_same_outputs(model, create_model(str(tmp_path / str(safe))).eval())

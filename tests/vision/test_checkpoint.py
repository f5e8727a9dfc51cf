"""load_checkpoint (.pth / .pth.tar EMA / .safetensors / Lightning .ckpt, wrappers, corrupt files) and the strict,
filtered loading of create_model(checkpoint_path=...)."""

from __future__ import annotations

import datetime

import pytest
import torch
from safetensors.torch import save_file

import formers.vision as fv
from formers.core.registry import get_model_entry
from formers.vision import CheckpointError, load_checkpoint


@pytest.fixture
def ref(tiny_model):
    return fv.create_model(tiny_model, num_classes=10)


def _shifted(state, delta):
    return {k: v + delta for k, v in state.items()}


def test_plain_pth_and_prefixes(ref, tmp_path):
    state = ref.state_dict()
    torch.save(state, tmp_path / "a.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}}, tmp_path / "compiled.pth")
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "lightning.ckpt")
    for name in ("a.pth", "ddp.pth", "compiled.pth", "lightning.ckpt"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded.keys() == state.keys(), name
        assert all(torch.equal(loaded[k], state[k]) for k in state), name


@pytest.mark.parametrize("ema_key", ["state_dict_ema", "model_ema"])
def test_pth_tar_prefers_ema(ref, tmp_path, ema_key):
    state = ref.state_dict()
    path = tmp_path / "train.pth.tar"
    torch.save({"state_dict": state, ema_key: _shifted(state, 1.0), "epoch": 300, "optimizer": {}}, path)
    ema = load_checkpoint(path)
    assert torch.equal(ema["head.weight"], state["head.weight"] + 1.0)
    raw = load_checkpoint(path, use_ema=False)
    assert torch.equal(raw["head.weight"], state["head.weight"])


def test_safetensors(ref, tmp_path):
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    loaded = load_checkpoint(tmp_path / "w.safetensors")
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_corrupt_truncated_and_unsafe_files(ref, tmp_path):
    torch.save(ref.state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pth.tar").write_bytes(b"\x00not a checkpoint" * 10)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
    st = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    for name in ("truncated.pth", "garbage.pth.tar", "truncated.safetensors"):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / name)
    # a pickled object is refused by weights_only, never unpickled
    torch.save({"state_dict": ref.state_dict(), "obj": datetime.date(2020, 1, 1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="pickled.pth.*weights_only"):
        load_checkpoint(tmp_path / "pickled.pth")
    torch.save({"epoch": 1}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="nostate.pth.*no tensors"):
        load_checkpoint(tmp_path / "nostate.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")


def test_create_model_applies_filter_and_resizes(ref, tiny_model, tmp_path):
    """An "official-format" checkpoint (``pos`` key) at img_size 32 loads into a 64 model through the filter_fn."""
    official = {("pos" if k == "pos_embed" else k): v for k, v in ref.state_dict().items()}
    torch.save({"model": official}, tmp_path / "official.pth")
    same = fv.create_model(tiny_model, checkpoint_path=tmp_path / "official.pth")
    assert torch.equal(same.pos_embed, ref.pos_embed)
    big = fv.create_model(tiny_model, img_size=64, checkpoint_path=tmp_path / "official.pth")
    assert big.pos_embed.shape == (1, 8, 16, 16)
    torch.testing.assert_close(big.pos_embed.mean(), ref.pos_embed.mean(), atol=2e-3, rtol=0)
    assert torch.equal(big.head.weight, ref.head.weight)


def test_other_num_classes_keeps_a_fresh_head(ref, tiny_model, tmp_path):
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model = fv.create_model(tiny_model, num_classes=3, checkpoint_path=tmp_path / "w.pth")
    assert model.head.weight.shape == (3, 16)
    assert torch.equal(model.stage2.weight, ref.stage2.weight)


def test_mismatching_checkpoint_lists_the_keys(ref, tiny_model, tmp_path):
    state = ref.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["norm.bias"]
    state["stage2.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        fv.create_model(tiny_model, checkpoint_path=tmp_path / "bad.pth")
    message = str(err.value)
    assert "bad.pth" in message and "missing keys (1): norm.bias" in message
    assert "unexpected keys (1): extra.weight" in message and "stage2.weight: checkpoint (3,)" in message


def _family_models():
    out = {}
    for name in fv.list_models():
        module = get_model_entry(name).factory.__module__
        if module.startswith("formers.vision.models."):
            out.setdefault(module.rsplit(".", 1)[-1], name)
    return sorted(out.values())


@pytest.mark.parametrize("name", _family_models())
def test_family_roundtrip_through_safetensors(name, tmp_path):
    """A tiny model of each family saves and reloads through create_model(checkpoint_path=...) exactly."""
    kwargs = get_model_entry(name).test_kwargs
    model = fv.create_model(name, **kwargs).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    again = fv.create_model(name, checkpoint_path=tmp_path / "w.safetensors", **kwargs).eval()
    x = model.example_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(again(**x), model(**x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "name", [n for n in ("pit_ti_224", "crossvit_tiny_240", "swin_tiny_patch4_window7_224") if n in fv.list_models()]
)
def test_timm_training_checkpoint_loads_with_the_same_logits(name, tmp_path):
    """timm's state dict in a DDP-wrapped EMA training checkpoint -> create_model(checkpoint_path=...) == timm."""
    import timm

    kwargs = get_model_entry(name).test_kwargs
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, **kwargs).eval()
    ema = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save(
        {"state_dict": {k: torch.zeros_like(v) for k, v in ema.items()}, "state_dict_ema": ema, "epoch": 9},
        tmp_path / "timm.pth.tar",
    )
    model = fv.create_model(name, checkpoint_path=tmp_path / "timm.pth.tar", **kwargs).eval()
    x = model.example_inputs(2)["x"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)

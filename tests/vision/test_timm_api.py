"""timm conventions of the four vision families (T2T-ViT, PiT, CrossViT, Swin), through timm's own API.

Randomly initialised tiny configurations and temporary local directories only: nothing is downloaded (the
``hf-hub:`` test serves timm's hub loader from a local directory).

* the factory keywords timm passes (``device``, ``dtype``, ``pretrained_cfg_overlay``, ``pretrained_model_args``);
* the ``timm.models.save_for_hf`` -> ``timm.create_model("local-dir:...", pretrained=True)`` round trip, and
  ``hf-hub:`` through the same loader;
* ``features_only`` with timm's ``feature_info`` and layout (Swin NHWC), equal to timm's models on the same weights;
* ``forward_intermediates`` / ``prune_intermediate_layers`` equal to timm's, ``set_grad_checkpointing`` (used in
  forward, same gradients), ``group_matcher`` with timm's parameter grouping and layer-decay optimizer.
"""

from __future__ import annotations

import pytest
import timm
import timm.data
import timm.models._hub as timm_hub
import timm.optim
import torch
from timm.models import save_for_hf
from timm.models._manipulate import group_parameters

import formers.vision as fv
from formers.vision.models import crossvit, pit, swin, t2t_vit

TOL = {"atol": 1e-5, "rtol": 1e-5}
# one tiny configuration per family (the registry's test_kwargs), as formers and timm names
TINY = {
    "pit_ti_224": pit._TINY,
    "swin_tiny_patch4_window7_224": swin._TINY,
    "crossvit_tiny_240": crossvit._TEST_KWARGS,
    "t2t_vit_7": t2t_vit._TEST_KWARGS,
}
FAMILIES = sorted(TINY)


def _tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(fv.timm_name(name), **{**TINY[name], **kwargs})


def _image(model: torch.nn.Module, batch: int = 2, **kwargs) -> torch.Tensor:
    return torch.randn(batch, 3, *model.img_size, generator=torch.Generator().manual_seed(1), **kwargs)


def _timm_own(timm_arch: str, name: str, **kwargs) -> torch.nn.Module:
    """timm's own model in the tiny configuration (seeded: the same weights on every call)."""
    torch.manual_seed(0)
    ref = timm.create_model(timm_arch, **TINY[name], **kwargs).eval()
    assert type(ref).__module__.startswith("timm.models.")
    return ref


def _filter(name: str):
    return {"pit_ti_224": pit, "swin_tiny_patch4_window7_224": swin, "crossvit_tiny_240": crossvit}[
        name
    ].checkpoint_filter_fn


# ------------------------------------------------------------------------------------------------ factory keywords


def test_issue_example_device_and_dtype():
    model = timm.create_model("formers_pit_ti_224", device="cpu", dtype=torch.float64).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("name", FAMILIES)
def test_device_and_dtype_keywords(name):
    model = _tiny(name, device="cpu", dtype=torch.float64).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert all(b.dtype in (torch.float64, torch.long) for b in model.buffers())
    with torch.no_grad():
        out = model(_image(model, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    model.reset_classifier(3)  # a new head follows the model's dtype
    assert model(_image(model, dtype=torch.float64)).shape == (2, 3)
    meta = _tiny(name, device="meta")  # timm's empty-model construction
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert "device" not in meta._model_args and "dtype" not in meta._model_args  # runtime placement, not saved
    with pytest.raises(ValueError, match="dtype"):
        _tiny(name, dtype=torch.int64)


def test_pretrained_cfg_keywords_and_errors(tmp_path):
    name = fv.timm_name("pit_ti_224")
    with pytest.raises(ValueError, match="never downloads"):
        timm.create_model(name, pretrained=True)
    with pytest.raises(ValueError, match="no pretrained tag"):
        timm.create_model(name + ".in1k", pretrained=True)
    model = timm.create_model(
        name, pretrained_cfg_overlay={"crop_pct": 1.0}, pretrained_model_args={"a": 1}, **pit._TINY
    )
    assert model.pretrained_cfg["crop_pct"] == 1.0 and model.pretrained_model_args == {"a": 1}
    # the attached cfg describes the model built (formers' rule), so both of timm's data-config resolvers agree
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert timm.data.resolve_data_config(model=model)["input_size"] == (3, 32, 32)


# ---------------------------------------------------------------------------------- save_for_hf / local-dir / hf-hub


@pytest.mark.parametrize("name", FAMILIES)
def test_save_for_hf_local_dir_round_trip(name, tmp_path):
    model = _tiny(name, num_classes=7).eval()
    save_for_hf(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(loaded) is type(model) and loaded.num_classes == 7
    assert loaded.pretrained_cfg["source"] == "local-dir" and "state_dict" not in loaded.pretrained_cfg
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = _image(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    # a new head on the saved trunk: the classifier is left out of the load (timm's rule)
    fresh = timm.create_model(f"local-dir:{tmp_path}", pretrained=True, num_classes=3)
    assert fresh.num_classes == 3


def test_hf_hub_goes_through_the_same_loader(tmp_path, monkeypatch):
    """An ``hf-hub:`` name resolves config and weights through timm's hub loader (served here from a local dir):
    the same pretrained_cfg path as ``local-dir:``, with ``hf_hub_id`` / ``source`` instead of ``file``."""
    model = _tiny("swin_tiny_patch4_window7_224", num_classes=5).eval()
    save_for_hf(model, tmp_path, safe_serialization="both")
    requested = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        requested.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(timm_hub, "hf_hub_download", fake_download)
    loaded = timm.create_model("hf-hub:someone/formers-swin", pretrained=True).eval()
    assert requested == [("someone/formers-swin", "config.json"), ("someone/formers-swin", "model.safetensors")]
    assert loaded.pretrained_cfg["hf_hub_id"] == "someone/formers-swin"
    x = _image(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_local_file_through_formers_reader(tmp_path):
    """``pretrained_cfg_overlay={"file": ...}`` reads a training checkpoint (EMA weights, official keys) safely."""
    ref = timm.create_model("pit_ti_224", **pit._TINY)  # timm's own PiT: official-layout filter not needed
    official = {k.replace("transformers.1.pool.", "pools.0.").replace("transformers.2.pool.", "pools.1."): v
                for k, v in ref.state_dict().items()}  # fmt: skip
    torch.save({"state_dict_ema": official, "epoch": 3}, tmp_path / "ckpt.pth.tar")
    model = timm.create_model(
        "formers_pit_ti_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "ckpt.pth.tar")},
        **pit._TINY,
    )
    assert "state_dict" not in model.pretrained_cfg
    torch.testing.assert_close(model.transformers[1].pool.conv.weight, ref.transformers[1].pool.conv.weight)


# ---------------------------------------------------------------------------------------------------- features_only


@pytest.mark.parametrize(
    ("name", "channels", "reductions", "modules", "shapes"),
    [
        ("pit_ti_224", [8, 16, 16], [4, 8, 16], [f"transformers.{i}" for i in range(3)],
         [(2, 8, 7, 7), (2, 16, 4, 4), (2, 16, 2, 2)]),
        ("swin_tiny_patch4_window7_224", [8, 16, 32, 64], [4, 8, 16, 32], [f"layers.{i}" for i in range(4)],
         [(2, 8, 8, 8), (2, 4, 4, 16), (2, 2, 2, 32), (2, 1, 1, 64)]),  # NHWC, as timm's Swin
        ("crossvit_tiny_240", [16, 32], [12, 17], ["blocks.0", "blocks.0"], [(2, 16, 10, 10), (2, 32, 7, 7)]),
        ("t2t_vit_7", [32], [16], ["blocks.0"], [(2, 32, 2, 2)]),
    ],
)  # fmt: skip
def test_features_only_default_stages(name, channels, reductions, modules, shapes):
    feats = _tiny(name, features_only=True)
    info = feats.feature_info
    assert (info.channels(), info.reduction(), info.module_name()) == (channels, reductions, modules)
    maps = feats(_image(feats.model))
    assert [tuple(m.shape) for m in maps] == shapes
    assert not any(".head" in n or n.startswith("model.head") for n, _ in feats.named_parameters())  # pruned
    same = fv.create_model(name, features_only=True, **TINY[name])  # formers' API gives the same feature model
    assert type(same) is type(feats) and same.feature_info.channels() == channels


@pytest.mark.parametrize(
    ("name", "timm_arch"),
    [("pit_ti_224", "pit_ti_224"), ("swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224"),
     ("crossvit_tiny_240", "crossvit_tiny_240")],
)  # fmt: skip
def test_features_only_equal_timm_on_the_same_weights(name, timm_arch):
    weights = _timm_own(timm_arch, name).state_dict()
    ref_feats = _timm_own(timm_arch, name, features_only=True)  # same seed: the same trunk weights
    # timm keys as a state_dict source (timm's highest-priority pretrained source) through our checkpoint filter
    feats = timm.create_model(
        fv.timm_name(name), features_only=True, pretrained=True, pretrained_cfg_overlay={"state_dict": weights},
        **TINY[name],
    ).eval()  # fmt: skip
    assert feats.feature_info.channels() == ref_feats.feature_info.channels()
    assert feats.feature_info.reduction() == ref_feats.feature_info.reduction()
    x = _image(feats.model)
    with torch.no_grad():
        for got, want in zip(feats(x), ref_feats(x), strict=True):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("name", FAMILIES)
def test_out_indices(name):
    n = len(_tiny(name).feature_info)
    feats = _tiny(name, features_only=True, out_indices=(-1,))
    assert feats.feature_info.out_indices == (n - 1,) or list(feats.feature_info.out_indices) == [n - 1]
    assert len(feats(_image(feats.model))) == 1
    with pytest.raises(ValueError, match="out_indices"):
        _tiny(name, features_only=True, out_indices=(n,))


# ------------------------------------------------------------------------------------ forward_intermediates / prune


@pytest.mark.parametrize(
    ("name", "timm_arch"),
    [("pit_ti_224", "pit_ti_224"), ("swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224"),
     ("crossvit_tiny_240", "crossvit_tiny_240")],
)  # fmt: skip
@pytest.mark.parametrize("kwargs", [{}, {"indices": 1, "norm": True}, {"indices": [0], "stop_early": True}])
def test_forward_intermediates_equal_timm(name, timm_arch, kwargs):
    ref = _timm_own(timm_arch, name)
    ours = fv.create_model(name, **TINY[name]).eval()
    fv.load_into(ours, ref.state_dict(), filter_fn=_filter(name))
    x = _image(ours)
    with torch.no_grad():
        final, inter = ours.forward_intermediates(x, **kwargs)
        ref_final, ref_inter = ref.forward_intermediates(x, **kwargs)
        only = ours.forward_intermediates(x, intermediates_only=True, **kwargs)
    assert len(inter) == len(ref_inter) == len(only) > 0
    for got, same, want in zip(inter, only, ref_inter, strict=True):
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(same, want, **TOL)
    for got, want in zip(final if isinstance(final, list) else [final], ref_final if isinstance(ref_final, list)
                         else [ref_final], strict=True):  # fmt: skip
        torch.testing.assert_close(got, want, **TOL)


def test_t2t_vit_forward_intermediates_follow_timm_vit():
    model = _tiny("t2t_vit_7", depth=3).eval()
    x = _image(model)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=2)
        tokens = model.forward_intermediates(x, indices=[-1], output_fmt="NLC", intermediates_only=True)
        pairs = model.forward_intermediates(x, indices=1, return_prefix_tokens=True, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(final, model.forward_features(x), **TOL)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 2, 2)] * 2
    torch.testing.assert_close(tokens[0], maps[-1].flatten(2).transpose(1, 2), **TOL)
    assert tuple(pairs[0][0].shape) == (2, 32, 2, 2) and tuple(pairs[0][1].shape) == (2, 1, 32)  # (map, cls)
    torch.testing.assert_close(normed[0].flatten(2).transpose(1, 2), final[:, 1:], **TOL)  # last block + norm
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", FAMILIES)
def test_prune_intermediate_layers(name):
    model = _tiny(name).eval()
    x = _image(model)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[0], intermediates_only=True)
    kept = model.prune_intermediate_layers([0])
    assert kept == [0] and model.num_classes == 0
    with torch.no_grad():
        got = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        assert model(x).ndim == 2  # the pruned model still runs end to end (pooled features)
    torch.testing.assert_close(got[0], expected[0], **TOL)


# ------------------------------------------------------------------------------------ grad checkpointing / groups


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_checkpointing_is_used_and_gives_the_same_gradients(name, monkeypatch):
    model = _tiny(name).eval()  # eval: no dropout, so both runs compute the same function
    x = _image(model)
    calls = []
    block = next(m for n, m in model.named_modules() if n.endswith("blocks.0"))
    forward = block.forward

    def counted(*args, **kwargs):  # checkpoint's recomputation skips module hooks: count the calls themselves
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(block, "forward", counted)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    assert len(calls) == 1
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert len(calls) == 2  # forward, then recomputed in backward: the checkpoint is really used
    assert plain.keys() == checkpointed.keys() and plain
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, atol=1e-6, rtol=1e-5)
    model.set_grad_checkpointing(False)
    grads()
    assert len(calls) == 1


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher_groups_every_parameter_by_depth(name, coarse):
    model = _tiny(name)
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    names = [n for n, _ in model.named_parameters()]
    grouped = [n for ids in groups.values() for n in ids]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))  # each parameter exactly once
    order = sorted(groups)
    stem = r"^(cls_token|pos_embed|patch_embed|tokens_to_token)"
    assert all(__import__("re").match(stem, n) for n in groups[order[0]])  # the stem comes first
    assert any("head" in n for n in groups[order[-1]])  # the classifier last
    assert len(order) >= 3
    # layer-wise lr decay, timm's optimizer factory (fine groups): one lr scale per group, the head's 1.0
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) == len(group_parameters(model, model.group_matcher(coarse=False))) and scales[-1] == 1.0

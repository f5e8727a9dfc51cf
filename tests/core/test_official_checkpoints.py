"""Official released checkpoints as their training scripts write them load safely.

The official T2T-ViT release was written by timm's ``CheckpointSaver`` (``epoch``, ``arch``, ``state_dict``,
``optimizer``, ``version``, ``args``: an ``argparse.Namespace``, ``amp_scaler``, ``metric``, ``state_dict_ema``,
``saver``), CrossViT's by DeiT's ``main.py`` (``model``, ``optimizer``, ``lr_scheduler``, ``epoch``, ``args``,
``scaler``, ``model_ema``). The files here are built in those layouts from tiny formers models (official key names:
CrossViT's ``pos_embed.{i}`` / ``cls_token.{i}``) and loaded through the public loader and the vision build path. A
pickle that names any other global (``os.system``) is refused, named, and never run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from formers.core.checkpoint_io import SAFE_CHECKPOINT_GLOBALS, CheckpointError, load_checkpoint_file
from formers.core.registry import create_model, get_model_entry
from formers.core.weights import load_checkpoint

FORMATS = {"zip": True, "legacy": False}  # torch.save's default archive, and the pre-1.6 pickle stream


def tiny(name: str, **kwargs: Any) -> nn.Module:
    return create_model(name, **{**get_model_entry(name).test_kwargs, **kwargs}).eval()


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v for k, v in state.items()}


def optimizer_state(model: nn.Module) -> dict[str, Any]:
    """A real AdamW state after one step (``step`` tensors, moments, param groups with ``betas`` tuples)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    model.zero_grad()
    return opt.state_dict()


def official_args(model: str) -> argparse.Namespace:
    """The kind of ``args`` the official scripts store: strings, numbers, bools, None, lists / tuples."""
    return argparse.Namespace(
        model=model, img_size=224, batch_size=64, lr=5e-4, epochs=310, opt="adamw", opt_betas=None, sched="cosine",
        mean=(0.485, 0.456, 0.406), std=[0.229, 0.224, 0.225], model_ema=True, model_ema_decay=0.99996,
        amp=True, output="", distributed=True, device="cuda:0", world_size=8, rank=0, seed=42,
    )  # fmt: skip


def checkpoint_saver_file(path: Path, name: str, state: dict, ema: dict, model: nn.Module, zip_format: bool) -> Path:
    """timm ``CheckpointSaver._save``'s layout (state dicts unwrapped of DDP by timm's ``get_state_dict``)."""
    torch.save(
        {
            "epoch": 309,
            "arch": name,
            "state_dict": state,
            "optimizer": optimizer_state(model),
            "version": 2,
            "args": official_args(name),
            "amp_scaler": {
                "scale": 65536.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
                "_growth_tracker": 17,
            },  # fmt: skip
            "state_dict_ema": ema,
            "metric": 81.5,
            "saver": {
                "checkpoint_files": [("checkpoint-309.pth.tar", 81.5)],
                "best_epoch": 309,
                "best_metric": 81.5,
                "pending": (309, 81.5),
            },  # fmt: skip
        },
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    return path


def deit_main_file(path: Path, name: str, state: dict, ema: dict, model: nn.Module) -> Path:
    """DeiT / CrossViT ``main.py``'s ``utils.save_on_master({...}, checkpoint_path)`` layout."""
    torch.save(
        {
            "model": state,
            "optimizer": optimizer_state(model),
            "lr_scheduler": {
                "t_initial": 300,
                "lr_min": 1e-5,
                "warmup_t": 5,
                "base_values": [5e-4],
                "t_in_epochs": True,
                "noise_range_t": None,
                "param_group_field": "lr",
            },  # fmt: skip
            "epoch": 299,
            "model_ema": ema,
            "scaler": {
                "scale": 32768.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
                "_growth_tracker": 3,
            },  # fmt: skip
            "args": official_args(name),
        },
        path,
    )
    return path


def assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------------------------------------ T2T-ViT


@pytest.mark.parametrize("fmt", FORMATS)
def test_t2t_vit_checkpoint_saver_file(tmp_path, fmt):
    name = "t2t_vit_14"
    source = tiny(name)
    state, ema = perturbed(source.state_dict(), 1), perturbed(source.state_dict(), 2)
    path = checkpoint_saver_file(tmp_path / "81.5_T2T_ViT_14.pth.tar", name, state, ema, source, FORMATS[fmt])

    raw = load_checkpoint_file(path)  # the whole file, metadata included, loaded safely
    assert isinstance(raw["args"], argparse.Namespace) and raw["args"].model == name and raw["epoch"] == 309
    assert raw["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(load_checkpoint(path)) == set(ema)  # the EMA weights, which the official README evaluates

    model = tiny(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert_loaded(model, ema)
    assert_loaded(tiny(name, checkpoint_path=path, use_ema=False), state)


def test_t2t_vit_ddp_keys_and_timm_create_path(tmp_path):
    """A file saved without unwrapping DDP (``module.`` keys) loads too, here through formers.vision's create_model."""
    import formers.vision

    name = "t2t_vit_t_14"
    source = tiny(name)
    ema = perturbed(source.state_dict(), 3)
    wrapped = {f"module.{k}": v for k, v in ema.items()}
    path = checkpoint_saver_file(tmp_path / "model_best.pth.tar", name, wrapped, wrapped, source, True)
    model = formers.vision.create_model(name, checkpoint_path=path, **get_model_entry(name).test_kwargs)
    assert_loaded(model, ema)


# ------------------------------------------------------------------------------------------------ CrossViT


def test_crossvit_deit_main_file_with_official_keys(tmp_path):
    name = "crossvit_tiny_240"
    source = tiny(name)
    ours = perturbed(source.state_dict(), 4)
    official = {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v for k, v in ours.items()}
    assert "pos_embed.0" in official and "cls_token.1" in official  # the official ParameterList keys
    path = deit_main_file(tmp_path / "crossvit_tiny_224.pth", name, official, official, source)

    model = tiny(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert_loaded(model, ours)
    reference = tiny(name)
    reference.load_state_dict(ours)
    x = model.example_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(model(**x), reference(**x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ refused files


class _Shell:
    """What a malicious checkpoint pickles: unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_pickle_that_runs_code_is_refused_and_named(tmp_path, fmt):
    marker = tmp_path / "pwned"
    source = tiny("t2t_vit_7")
    path = tmp_path / "evil.pth.tar"
    torch.save(
        {"state_dict": source.state_dict(), "args": _Shell(marker), "epoch": 1},
        path,
        _use_new_zipfile_serialization=FORMATS[fmt],
    )
    for load in (
        lambda: load_checkpoint_file(path),
        lambda: load_checkpoint(path),
        lambda: tiny("t2t_vit_7", pretrained=True, pretrained_cfg_overlay={"file": str(path)}),
    ):
        with pytest.raises(CheckpointError) as err:
            load()
        message = str(err.value)
        assert str(path) in message and "posix.system" in message and "refuses" in message
    assert not marker.exists()


class Unlisted:
    """A harmless class that is simply not on the allow-list."""

    def __init__(self) -> None:
        self.value = 1


def test_any_other_global_is_refused_by_name(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": Unlisted()}, path)
    with pytest.raises(
        CheckpointError, match=r"other\.pth holds pickled Python objects \(the global .*Unlisted\).*argparse\.Namespace"
    ):
        load_checkpoint_file(path)
    assert SAFE_CHECKPOINT_GLOBALS == (argparse.Namespace,)  # the allow-list stays this short
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # scoped, torch's list untouched

"""Shared fixtures of the formers.vision infrastructure tests: a tiny registered model and a generated image tree.

The tiny models are registered for the test session only (fixture ``tiny_model``) and removed from the formers
and timm registries afterwards, so the registry-driven ``tests/test_models.py`` never sees them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import timm.models
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import formers.vision as fv
from formers.core.models import FormersModel
from formers.core.registry import _REGISTRY, get_model_entry, list_models, register_model
from formers.vision import timm_compat

TINY = "vision_test_tiny"
TINY_NOFEAT = "vision_test_tiny_nofeat"


class TinyNet(FormersModel):
    """Two conv "stages" with a spatial position embedding: enough surface for the API, checkpoints and features."""

    def __init__(
        self,
        num_classes: int = 10,
        img_size: int = 32,
        in_chans: int = 3,
        embed_dim: int = 8,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        feature_maps: bool = True,
    ) -> None:
        super().__init__()
        if img_size % 8:
            raise ValueError(f"TinyNet: img_size must be a multiple of 8, got {img_size}")
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, 4, 4)
        self.pos_embed = nn.Parameter(torch.randn(1, embed_dim, img_size // 4, img_size // 4) * 0.02)
        self.stage2 = nn.Conv2d(embed_dim, 2 * embed_dim, 2, 2)
        self.norm = nn.LayerNorm(2 * embed_dim)
        self.num_features = 2 * embed_dim
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if feature_maps:
            self.feature_info = [
                {"num_chs": embed_dim, "reduction": 4, "module": "patch_embed"},
                {"num_chs": 2 * embed_dim, "reduction": 8, "module": "stage2"},
            ]

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        return {"x": torch.randn(batch_size, self.in_chans, self.img_size, self.img_size, device=self.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes) if self.num_classes else (batch_size, self.num_features)

    def _maps(self, x: Tensor) -> list[Tensor]:
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"TinyNet expects float (B, {self.in_chans}, H, W) images, got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"TinyNet expects {self.img_size} x {self.img_size} images, got {tuple(x.shape[-2:])}")
        first = self.patch_embed(x) + self.pos_embed
        return [first, self.stage2(F.gelu(first))]

    def forward_feature_maps(self, x: Tensor) -> list[Tensor]:
        if not hasattr(self, "feature_info"):
            raise AttributeError("forward_feature_maps")
        return self._maps(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self._maps(x)[-1].flatten(2).transpose(1, 2))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


def official_to_ours(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The tiny family's filter: official key ``pos`` -> ``pos_embed``, resized (bicubic) to the model's grid."""
    out = {("pos_embed" if k == "pos" else k): v for k, v in state_dict.items()}
    target = model.pos_embed.shape[-2:]
    if "pos_embed" in out and out["pos_embed"].shape[-2:] != target:
        out["pos_embed"] = F.interpolate(out["pos_embed"], size=tuple(target), mode="bicubic", align_corners=False)
    return out


def vision_test_tiny(**kwargs: Any) -> TinyNet:
    return TinyNet(**kwargs)


def vision_test_tiny_nofeat(**kwargs: Any) -> TinyNet:
    return TinyNet(feature_maps=False, **kwargs)


def _unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    tname = fv.timm_name(name)
    if timm_compat._registered.pop(tname, None) is not None:
        timm.models._registry._clear_model_entries(tname)
        timm.models._registry._model_entrypoints.pop(tname, None)
        timm_compat.default_cfgs.pop(tname, None)


@pytest.fixture(scope="session")
def tiny_model() -> Iterator[str]:
    """Name of a tiny vision model registered (formers + timm) for the session; removed again afterwards."""
    cfg = fv.make_cfg(
        input_size=(3, 32, 32), crop_pct=0.875, first_conv="patch_embed", mean=(0.5,) * 3, std=(0.25,) * 3
    )
    for factory in (vision_test_tiny, vision_test_tiny_nofeat):
        register_model(factory, domain="vision", paper="test", pretrained_cfg=cfg, filter_fn=official_to_ours)
    fv.register_timm_models()
    yield TINY
    for name in (TINY, TINY_NOFEAT):
        _unregister(name)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shapes tree (8 classes x (12 train + 3 test), 32 x 32)."""
    from formers.vision.synthetic import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "shapes", train_per_class=12, test_per_class=3)


def families() -> dict[str, str]:
    """One registered model per family module present (``{"pit": "pit_ti_224", ...}``), first name in sort order."""
    out: dict[str, str] = {}
    for name in list_models(domain="vision"):
        module = get_model_entry(name).factory.__module__
        if module.startswith("formers.vision.models."):
            out.setdefault(module.rsplit(".", 1)[-1], name)
    return out

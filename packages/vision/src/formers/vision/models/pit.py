"""PiT, the Pooling-based Vision Transformer (Heo et al. 2021, "Rethinking Spatial Dimensions of Vision
Transformers", arXiv 2103.16302), after the official ``naver-ai/pit`` (``pit.py``) and timm's ``pit.py``.

A ViT whose token grid shrinks between stages like a CNN's:

- an **overlapping** patch convolution (kernel 16, stride 8: 27 x 27 tokens at 224; PiT-B kernel 14, stride 7:
  31 x 31) plus a spatial ``(1, C, H, W)`` position embedding added to the map (none on the class token);
- three stages of pre-norm ViT blocks (:class:`formers.core.layers.TransformerBlock`, LayerNorm eps 1e-6,
  ``qkv_bias``) over ``[class token(s); flattened map]``;
- between stages a pooling layer: a depthwise-style ``Conv2d(C, 2C, 3, stride 2, groups=C)`` on the map and a
  separate ``Linear(C, 2C)`` on the class token(s);
- only the class token(s) are normalised at the end; the distilled variants average ``head`` and ``head_dist``
  (or return both with :meth:`PoolingVisionTransformer.set_distilled_training`).

Parameter names equal timm's, so timm state dicts load as they are; the official checkpoints differ only in
``pools.{i}.`` (timm/ours: ``transformers.{i+1}.pool.``), which :func:`checkpoint_filter_fn` renames.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from formers.core.layers import TransformerBlock
from formers.core.models.base import FormersModel, check_input
from formers.core.registry import register_model
from formers.vision.models._cfg import create, make_cfg, run_blocks

__all__ = ["PoolingVisionTransformer", "checkpoint_filter_fn"]

PAPER = "Heo et al. 2021, Rethinking Spatial Dimensions of Vision Transformers (PiT), arXiv:2103.16302"


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"PiT: {name} must be a positive int or a pair of them, got {value!r}")
    return pair


class ConvEmbedding(nn.Module):
    """Overlapping patch embedding: one ``Conv2d(in_chans, C, kernel=patch_size, stride=stride)`` (no padding)."""

    def __init__(self, in_chans: int, embed_dim: int, img_size: tuple[int, int], patch_size: int, stride: int) -> None:
        super().__init__()
        self.grid_size = tuple((s - patch_size) // stride + 1 for s in img_size)
        self.conv = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Pooling(nn.Module):
    """PiT's ``conv_head_pooling``: depthwise-style strided conv (channel multiplier ``out / in``) on the map and a
    Linear on the class token(s).

    Shapes:
        - x: ``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H / 2), ceil(W / 2))``
        - cls_tokens: ``(B, T, C_in)`` -> ``(B, T, C_out)``
    """

    def __init__(self, in_features: int, out_features: int, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_features, out_features, kernel_size=stride + 1, stride=stride, padding=stride // 2, groups=in_features
        )
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor, cls_tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv(x), self.fc(cls_tokens)


class PiTStage(nn.Module):
    """One stage: optional pooling, then ViT blocks over ``[class token(s); flattened map]``.

    Shapes:
        - x: ``(B, C_in, H, W)``, cls_tokens ``(B, T, C_in)``
        - output: ``(B, C, H', W')`` and ``(B, T, C)``
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        pool: Pooling | None,
        drop_path: list[float],
        proj_drop: float,
        attn_drop: float,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(
                    dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=True,
                    proj_drop=proj_drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i],
                    norm_layer=partial(nn.LayerNorm, eps=1e-6),
                )
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor, cls_tokens: Tensor) -> tuple[Tensor, Tensor]:
        if self.pool is not None:
            x, cls_tokens = self.pool(x, cls_tokens)
        b, c, h, w = x.shape
        num_tokens = cls_tokens.shape[1]
        x = run_blocks(
            self.blocks, torch.cat((cls_tokens, x.flatten(2).transpose(1, 2)), dim=1), self.grad_checkpointing
        )
        return x[:, num_tokens:].transpose(1, 2).reshape(b, c, h, w), x[:, :num_tokens]


class PoolingVisionTransformer(FormersModel):
    """PiT image classifier (timm's ``PoolingVisionTransformer``; official ``PoolingTransformer`` /
    ``DistilledPoolingTransformer``).

    Args:
        img_size: input side (or ``(H, W)``); the position embedding is built for it and inputs must match.
        patch_size: kernel of the patch convolution (16; PiT-B 14).
        stride: stride of the patch convolution (8; PiT-B 7).
        base_dims: head width per stage; stage width = ``base_dims[i] * heads[i]``.
        depth: blocks per stage.
        heads: attention heads per stage.
        mlp_ratio: MLP hidden width / stage width.
        num_classes: classifier outputs; ``0`` gives an identity head (features).
        in_chans: input channels.
        distilled: add a distillation token and ``head_dist`` (DeiT-style).
        drop_rate: dropout before the head.
        pos_drop_rate: dropout after adding the position embedding.
        proj_drop_rate: dropout after attention / MLP projections.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, rising linearly as ``rate * i / total_blocks`` (official rule).

    Shapes:
        - x: ``(B, in_chans, H, W)`` with ``(H, W) == img_size``
        - output: ``(B, num_classes)``
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int = 8,
        base_dims: tuple[int, ...] = (48, 48, 48),
        depth: tuple[int, ...] = (2, 6, 4),
        heads: tuple[int, ...] = (2, 4, 8),
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        distilled: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        if not len(base_dims) == len(depth) == len(heads) or not depth:
            raise ValueError(
                f"PiT: base_dims, depth and heads need one entry per stage, got {base_dims}, {depth}, {heads}"
            )
        if min(self.img_size) < patch_size:
            raise ValueError(f"PiT: img_size {self.img_size} is smaller than the patch kernel {patch_size}")
        if num_classes < 0:
            raise ValueError(f"PiT: num_classes must be >= 0, got {num_classes}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_tokens = 2 if distilled else 1
        self.distilled_training = False  # set_distilled_training(True) returns (head, head_dist) in training
        embed_dim = base_dims[0] * heads[0]

        self.patch_embed = ConvEmbedding(in_chans, embed_dim, self.img_size, patch_size, stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *self.patch_embed.grid_size))
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)

        total = sum(depth)
        stages, self.feature_info, prev_dim, start = [], [], embed_dim, 0
        for i, (base, d, h) in enumerate(zip(base_dims, depth, heads, strict=True)):
            dim = base * h
            dpr = [drop_path_rate * j / total for j in range(start, start + d)]
            pool = Pooling(prev_dim, dim, stride=2) if i > 0 else None
            stages.append(PiTStage(dim, d, h, mlp_ratio, pool, dpr, proj_drop_rate, attn_drop_rate))
            self.feature_info.append({"num_chs": dim, "reduction": stride * 2**i, "module": f"transformers.{i}"})
            prev_dim, start = dim, start + d
        self.transformers = nn.ModuleList(stages)
        self.num_features = self.head_hidden_size = self.embed_dim = prev_dim
        self.norm = nn.LayerNorm(prev_dim, eps=1e-6)

        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = None
        if distilled:
            self.head_dist = nn.Linear(prev_dim, num_classes) if num_classes > 0 else nn.Identity()

        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        # Linear / Conv keep PyTorch's default init and LayerNorm 1 / 0, as in the official code.

    # ------------------------------------------------------------------------------------------------ contract

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        return {"x": torch.randn(batch_size, self.in_chans, *self.img_size, device=self.pos_embed.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes or self.num_features)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def set_distilled_training(self, enable: bool = True) -> None:
        """In training, return ``(logits, logits_dist)`` for a distillation loss instead of their average."""
        self.distilled_training = enable

    def get_classifier(self) -> nn.Module | tuple[nn.Module, nn.Module]:
        return self.head if self.head_dist is None else (self.head, self.head_dist)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head(s) with fresh ``Linear(num_features, num_classes)`` (``0``: identity). ``global_pool``
        is timm's argument; PiT pools by its class token only (``"token"``, or ``""`` as timm passes it)."""
        if num_classes < 0:
            raise ValueError(f"PiT: num_classes must be >= 0, got {num_classes}")
        if global_pool not in (None, "", "token"):
            raise ValueError(f"PiT: global_pool must be 'token' (class token pooling), got {global_pool!r}")
        dd = {"device": self.pos_embed.device, "dtype": self.pos_embed.dtype}
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (less memory, ~30% slower)."""
        for stage in self.transformers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups (layer-wise lr decay): the stem, then one group per stage (``coarse``) or per
        block (a stage's pooling joins its first block), the final norm with the last block; the heads come last."""
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": r"^transformers\.(\d+)"
            if coarse
            else [
                (r"^transformers\.(\d+)\.pool", (0,)),
                (r"^transformers\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        }

    # ------------------------------------------------------------------------------------------------ forward

    def _check(self, x: Tensor) -> None:
        check_input("PiT: x", x, ndim=4, floating=True, dims="(batch, channels, height, width)")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"PiT: expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"PiT: expected input size {self.img_size}, got {tuple(x.shape[-2:])}; build the model with "
                "img_size= and load weights through checkpoint_filter_fn to resize the position embedding"
            )

    def _stem(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        return x, self.cls_token.expand(x.shape[0], -1, -1)

    def forward_feature_maps(self, x: Tensor) -> list[Tensor]:
        """The token map after each stage, NCHW: strides 8 / 16 / 32 (PiT-B 7 / 14 / 28)."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates``: the maps after the stages ``indices`` (last ``n`` if an int, all if
        ``None``), NCHW, and unless ``intermediates_only`` the class token(s), normalised when the last stage ran.

        ``norm`` has no effect (the final norm is sized for and applied to the class tokens only, as in timm);
        ``stop_early`` skips the stages after the last one taken.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"PiT: forward_intermediates output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.transformers), indices)
        x, cls_tokens = self._stem(x)
        stages = self.transformers if torch.jit.is_scripting() or not stop_early else self.transformers[: max_index + 1]
        intermediates, last = [], -1
        for last, stage in enumerate(stages):
            x, cls_tokens = stage(x, cls_tokens)
            if last in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if last == len(self.transformers) - 1:
            cls_tokens = self.norm(cls_tokens)
        return cls_tokens, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head / final norm); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.transformers), indices)
        prune_end = max_index < len(self.transformers) - 1
        if prune_norm or prune_head or prune_end:
            self.norm = nn.Identity()  # sized for the last stage and applied to the class tokens only
        self.transformers = self.transformers[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.head_dist = None
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised class token(s), ``(B, num_tokens, num_features)``."""
        x, cls_tokens = self._stem(x)
        for stage in self.transformers:
            x, cls_tokens = stage(x, cls_tokens)
        return self.norm(cls_tokens)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if self.head_dist is None:
            x = self.head_drop(x[:, 0])
            return x if pre_logits else self.head(x)
        x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
        if not pre_logits:
            x, x_dist = self.head(x), self.head_dist(x_dist)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2  # inference (and plain fine-tuning): the mean of the two heads

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------- checkpoints

_OFFICIAL_POOL = re.compile(r"^pools\.(\d+)\.")


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: PoolingVisionTransformer) -> dict[str, Tensor]:
    """Map an official (``naver-ai/pit``) or timm PiT state dict onto ``model``'s keys.

    Official keys ``pools.{i}.*`` become ``transformers.{i+1}.pool.*`` (timm's keys are ours already); a
    ``pos_embed`` of another grid is resampled bicubically to ``model``'s (timm leaves this as a FIXME).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"PiT checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    out = {}
    for key, value in state_dict.items():
        key = _OFFICIAL_POOL.sub(lambda m: f"transformers.{int(m.group(1)) + 1}.pool.", key)
        if key == "pos_embed" and value.shape != model.pos_embed.shape:
            if value.dim() != 4 or value.shape[:2] != model.pos_embed.shape[:2]:
                raise ValueError(
                    f"PiT checkpoint: pos_embed {tuple(value.shape)} cannot be resized to "
                    f"{tuple(model.pos_embed.shape)} (channels differ)"
                )
            grid = list(model.pos_embed.shape[-2:])
            value = resample_abs_pos_embed_nhwc(value.permute(0, 2, 3, 1), grid).permute(0, 3, 1, 2).contiguous()
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- configs

_TINY = {"img_size": 32, "patch_size": 8, "stride": 4, "base_dims": (8, 8, 8), "depth": (1, 1, 1), "heads": (1, 2, 2)}


def _cfg(**overrides: Any) -> dict[str, Any]:
    return make_cfg(first_conv="patch_embed.conv", **overrides)


def _create(variant_args: dict[str, Any], kwargs: dict[str, Any]) -> PoolingVisionTransformer:
    return create(PoolingVisionTransformer, {**variant_args, **kwargs})


_TI = {"patch_size": 16, "stride": 8, "base_dims": (32, 32, 32), "depth": (2, 6, 4), "heads": (2, 4, 8)}
_XS = {"patch_size": 16, "stride": 8, "base_dims": (48, 48, 48), "depth": (2, 6, 4), "heads": (2, 4, 8)}
_S = {"patch_size": 16, "stride": 8, "base_dims": (48, 48, 48), "depth": (2, 6, 4), "heads": (3, 6, 12)}
_B = {"patch_size": 14, "stride": 7, "base_dims": (64, 64, 64), "depth": (3, 6, 4), "heads": (4, 8, 16)}
_DIST_CFG = {"classifier": ("head", "head_dist")}


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def pit_ti_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-Ti: widths 64/128/256, depths 2/6/4, 4,847,272 parameters."""
    return _create(_TI, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def pit_xs_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-XS: widths 96/192/384, 10,618,888 parameters."""
    return _create(_XS, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def pit_s_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-S: widths 144/288/576, 23,461,912 parameters."""
    return _create(_S, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def pit_b_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-B: patch 14 stride 7 (31 x 31 tokens), widths 256/512/1024, 73,764,840 parameters."""
    return _create(_B, kwargs)


@register_model(
    paper=PAPER,
    pretrained_cfg=_cfg(**_DIST_CFG),
    filter_fn=checkpoint_filter_fn,
    test_kwargs={**_TINY, "distilled": True},
)
def pit_ti_distilled_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-Ti with a distillation token: 5,104,336 parameters."""
    return _create({**_TI, "distilled": True}, kwargs)


@register_model(
    paper=PAPER,
    pretrained_cfg=_cfg(**_DIST_CFG),
    filter_fn=checkpoint_filter_fn,
    test_kwargs={**_TINY, "distilled": True},
)
def pit_xs_distilled_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-XS with a distillation token: 11,003,984 parameters."""
    return _create({**_XS, "distilled": True}, kwargs)


@register_model(
    paper=PAPER,
    pretrained_cfg=_cfg(**_DIST_CFG),
    filter_fn=checkpoint_filter_fn,
    test_kwargs={**_TINY, "distilled": True},
)
def pit_s_distilled_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-S with a distillation token: 24,039,056 parameters."""
    return _create({**_S, "distilled": True}, kwargs)


@register_model(
    paper=PAPER,
    pretrained_cfg=_cfg(**_DIST_CFG),
    filter_fn=checkpoint_filter_fn,
    test_kwargs={**_TINY, "distilled": True},
)
def pit_b_distilled_224(**kwargs: Any) -> PoolingVisionTransformer:
    """PiT-B with a distillation token: 74,790,096 parameters."""
    return _create({**_B, "distilled": True}, kwargs)

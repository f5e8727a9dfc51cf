"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
arXiv 2103.14030), after the official ``microsoft/Swin-Transformer`` (``models/swin_transformer.py``) and timm.

- a 4 x 4 patch embedding with LayerNorm (:class:`formers.core.layers.PatchEmbed`), no absolute position embedding;
- four stages of blocks on a channels-last ``(B, H, W, C)`` map, alternating window attention (W-MSA, even blocks)
  and shifted-window attention (SW-MSA, odd blocks: ``roll(-window // 2)``, the ``-100`` region mask, roll back),
  both through :class:`formers.core.layers.ShiftedWindowAttention2d` (relative position bias table and index, roll,
  partition, attention through :func:`formers.core.attention.attention`, reverse);
- patch merging between stages: ``[x(0::2, 0::2); x(1::2, 0::2); x(0::2, 1::2); x(1::2, 1::2)]`` -> LN(4C) ->
  Linear(4C, 2C, no bias), at the start of stages 1-3 (timm's layout; the official code merges at the end of 0-2);
- final LayerNorm, average pool, Linear head.

As in the official code, the resolution is fixed at construction (``img_size``): the shift masks are buffers. Where
a stage's map is not larger than the window, the window shrinks to the map and the shift is dropped (stage 4 of
Swin-T at 224); for non-square maps this is decided per axis, as in timm (the official code has square maps only).

Parameter and buffer names equal timm's (173 keys for Swin-T), so timm state dicts load as they are;
:func:`checkpoint_filter_fn` maps official checkpoints (190 keys) and resizes relative position tables.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.layers import resample_patch_embed, resize_rel_pos_bias_table
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from formers.core.layers import DropPath, Mlp, PatchEmbed, ShiftedWindowAttention2d, init_weights
from formers.core.layers.window_attention import shifted_window_mask
from formers.core.models.base import FormersModel, check_input
from formers.core.registry import register_model
from formers.vision.models._cfg import create, make_cfg, run_blocks

__all__ = ["SwinTransformer", "SwinTransformerBlock", "PatchMerging", "checkpoint_filter_fn"]

PAPER = "Liu et al. 2021, Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, arXiv:2103.14030"


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"Swin: {name} must be a positive int or a pair of them, got {value!r}")
    return pair


class SwinWindowAttention(ShiftedWindowAttention2d):
    """:class:`formers.core.layers.ShiftedWindowAttention2d` whose gathered relative position bias is cached for
    inference.

    Training (or any grad-enabled / compiled call) gathers from the table every time so gradients reach it; under
    ``no_grad`` the ``(heads, N, N)`` gather is reused until the table changes (new storage, device, dtype or an
    in-place update such as ``load_state_dict`` or an optimizer step bumps its version).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The index is derived from the window size: not part of the state dict (timm's layout; the official
        # checkpoints carry it and checkpoint_filter_fn drops it).
        self.register_buffer("relative_position_index", self.relative_position_index, persistent=False)
        self._bias_cache: Tensor | None = None
        self._bias_key: tuple | None = None

    def relative_position_bias(self) -> Tensor:
        table = self.relative_position_bias_table
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return super().relative_position_bias()
        key = (table.device, table.dtype, table.data_ptr(), table._version)
        if self._bias_cache is None or self._bias_key != key:
            self._bias_cache = super().relative_position_bias().contiguous()
            self._bias_key = key
        return self._bias_cache

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module signature
        self._bias_cache, self._bias_key = None, None  # .to() / .half() etc.: rebuild on the next call
        return super()._apply(fn, recurse)


class SwinTransformerBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each in a residual branch, on a ``(B, H, W, C)`` map.

    Args:
        dim: channels ``C``.
        input_resolution: ``(H, W)`` of the map this block sees (fixed: the shift mask is precomputed for it).
        num_heads: attention heads.
        window_size: target window; shrunk to the map where the map is not larger (as in the official code).
        shift_size: cyclic shift (``window // 2`` on odd blocks, ``0`` on even ones); dropped with a shrunk window.
        mlp_ratio, qkv_bias, proj_drop, attn_drop, drop_path: as in a ViT block.

    Shapes:
        - x: ``(B, H, W, C)`` -> output ``(B, H, W, C)``
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: tuple[int, int] = (7, 7),
        shift_size: tuple[int, int] = (0, 0),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.window_size = tuple(r if r <= w else w for r, w in zip(self.input_resolution, window_size, strict=True))
        self.shift_size = tuple(
            0 if r <= w else s for r, w, s in zip(self.input_resolution, self.window_size, shift_size, strict=True)
        )
        for axis, (r, w) in enumerate(zip(self.input_resolution, self.window_size, strict=True)):
            if r % w:
                raise ValueError(
                    f"Swin: a {self.input_resolution} map does not split into {self.window_size} windows "
                    f"(axis {axis}: {r} % {w} != 0); choose img_size / window_size so every stage tiles"
                )
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SwinWindowAttention(
            dim,
            num_heads,
            self.window_size,
            self.shift_size,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer="gelu", drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        mask = None
        if any(self.shift_size):
            # Computed once here (on the CPU, whatever the default device), then moved with the module like timm's.
            with torch.device("cpu"):
                mask = shifted_window_mask(*self.input_resolution, self.window_size, self.shift_size)
            mask = mask.to(self.norm1.weight.device)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), self.attn_mask))  # roll, window attention, roll back
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f"input_resolution={self.input_resolution}, window_size={self.window_size}, shift={self.shift_size}"


class PatchMerging(nn.Module):
    """Swin's 2 x 2 patch merging in the official concatenation order, then LN(4C) and Linear(4C, out, no bias).

    The order ``[x(0::2, 0::2), x(1::2, 0::2), x(0::2, 1::2), x(1::2, 1::2)]`` (row offset fastest) is what the
    official weights expect; one reshape/permute produces it without four strided slices.

    Shapes:
        - x: ``(B, H, W, C)`` with even ``H``, ``W`` -> output ``(B, H / 2, W / 2, out_dim)``
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        # (B, H/2, 2[row], W/2, 2[col], C) -> (B, H/2, W/2, col, row, C): flattening gives row offset fastest
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    """Optional patch merging, then ``depth`` blocks alternating W-MSA / SW-MSA.

    Shapes:
        - x: ``(B, H_in, W_in, dim)`` -> output ``(B, H, W, out_dim)`` (``H = H_in / 2`` with merging)
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        downsample: bool,
        num_heads: int,
        window_size: tuple[int, int],
        mlp_ratio: float,
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: list[float],
    ) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.grad_checkpointing = False
        self.output_resolution = tuple(r // 2 for r in input_resolution) if downsample else tuple(input_resolution)
        shift = tuple(w // 2 for w in window_size)
        self.blocks = nn.Sequential(
            *(
                SwinTransformerBlock(
                    out_dim,
                    self.output_resolution,
                    num_heads,
                    window_size=window_size,
                    shift_size=(0, 0) if i % 2 == 0 else shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i],
                )
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return run_blocks(self.blocks, self.downsample(x), self.grad_checkpointing)


class ClassifierHead(nn.Module):
    """Global average pool over ``(H, W)``, dropout, ``fc`` (timm's ``head.fc`` key)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(x.mean(dim=(1, 2)))
        return x if pre_logits else self.fc(x)


class SwinTransformer(FormersModel):
    """Swin Transformer image classifier and 4-level feature pyramid (strides 4 / 8 / 16 / 32).

    As in timm, the stages run channels-last: ``forward_features`` and ``features_only=True`` maps are NHWC
    (:attr:`output_fmt`), ``forward_intermediates`` and :meth:`forward_feature_maps` give NCHW by default.

    Args:
        img_size: input side or ``(H, W)``; fixed (masks are precomputed), every stage must tile into windows.
        patch_size: patch embedding kernel = stride (4).
        in_chans: input channels.
        num_classes: classifier outputs; ``0`` gives pooled features.
        embed_dim: stage-0 width ``C``; stage ``i`` has ``C * 2**i``.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window (7; 12 for the 384 models).
        mlp_ratio: MLP hidden width / width.
        qkv_bias: bias in the qkv projection.
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after projections.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, linear from 0 over all blocks.

    Shapes:
        - x: ``(B, in_chans, H, W)`` with ``(H, W) == img_size``
        - output: ``(B, num_classes)``
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int | tuple[int, int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        window = _pair(window_size, "window_size")
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"Swin: depths and num_heads need one entry per stage, got {depths} and {num_heads}")
        if num_classes < 0:
            raise ValueError(f"Swin: num_classes must be >= 0, got {num_classes}")
        self._check_img_size(self.img_size, patch_size, len(depths))
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.window_size = window
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = self.head_hidden_size = embed_dim * 2 ** (self.num_layers - 1)
        self.output_fmt = "NHWC"  # timm's attribute: the layout of the feature maps features_only returns

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, input_size=self.img_size, norm_layer="layernorm")
        grid = self.patch_embed.grid_size
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, self.feature_info, dim, res, start = [], [], embed_dim, grid, 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            out_dim = embed_dim * 2**i
            stage = SwinTransformerStage(
                dim,
                out_dim,
                res,
                depth,
                downsample=i > 0,
                num_heads=heads,
                window_size=window,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[start : start + depth],
            )
            stages.append(stage)
            self.feature_info.append({"num_chs": out_dim, "reduction": patch_size * 2**i, "module": f"layers.{i}"})
            dim, res, start = out_dim, stage.output_resolution, start + depth
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        # Linear trunc_normal(0.02) / zero bias, LayerNorm 1 / 0: the official _init_weights (and timm's)
        self.apply(init_weights)

    @staticmethod
    def _check_img_size(img_size: tuple[int, int], patch_size: int, num_layers: int) -> None:
        factor = patch_size * 2 ** (num_layers - 1)
        if any(s % factor for s in img_size):
            raise ValueError(
                f"Swin: img_size {img_size} must be a multiple of patch_size * 2**(stages - 1) = {factor} so that "
                "every patch merging halves an even map"
            )

    # ------------------------------------------------------------------------------------------------ contract

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        return {"x": torch.randn(batch_size, self.in_chans, *self.img_size, device=self.patch_embed.proj.weight.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes or self.num_features)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace ``head.fc`` with a fresh ``Linear(num_features, num_classes)`` (``0``: identity). ``global_pool``
        is timm's argument: ``"avg"`` (Swin's pooling; ``""`` as timm passes it is accepted too)."""
        if num_classes < 0:
            raise ValueError(f"Swin: num_classes must be >= 0, got {num_classes}")
        if global_pool not in (None, "", "avg"):
            raise ValueError(f"Swin: global_pool must be 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        ref = self.patch_embed.proj.weight  # the norm may be pruned (prune_intermediate_layers)
        fc = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes
            else nn.Identity()
        )
        if isinstance(fc, nn.Linear):
            init_weights(fc)
        self.head.fc = fc

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (less memory, slower)."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's Swin parameter groups (layer-wise lr decay): the patch embedding, then per stage (``coarse``) or
        per block (a stage's patch merging joins its first block, the final norm the last block); the head last."""
        return {
            "stem": r"^patch_embed",
            "blocks": r"^layers\.(\d+)"
            if coarse
            else [
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^layers\.(\d+)\.\w+\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        }

    # ------------------------------------------------------------------------------------------------ forward

    def _embed(self, x: Tensor) -> Tensor:
        check_input("Swin: x", x, ndim=4, floating=True, dims="(batch, channels, height, width)")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"Swin: expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"Swin: expected input size {self.img_size}, got {tuple(x.shape[-2:])}; build the model with "
                "img_size= (and window_size=) and load weights through checkpoint_filter_fn"
            )
        tokens, (h, w) = self.patch_embed(x)
        return tokens.view(x.shape[0], h, w, -1)

    def forward_feature_maps(self, x: Tensor) -> list[Tensor]:
        """Each stage's output as NCHW (before the final norm): ``C * 2**i`` channels at stride ``4 * 2**i``."""
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
        """timm's ``forward_intermediates``: the outputs of the stages ``indices`` (last ``n`` if an int, all if
        ``None``) as ``output_fmt`` (``"NCHW"`` as timm's, or ``"NHWC"``, the layout of ``features_only``), and
        unless ``intermediates_only`` the last map, normalised when the last stage ran (NHWC, as
        :meth:`forward_features`). ``norm`` applies the final norm to the last stage's map (sized for it only).
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"Swin: forward_intermediates output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        x = self._embed(x)
        stages = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[: max_index + 1]
        last_stage = len(self.layers) - 1
        intermediates, last = [], -1
        for last, stage in enumerate(stages):
            x = stage(x)
            if last in take_indices:
                y = self.norm(x) if norm and last == last_stage else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if last == last_stage else x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head / final norm); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for (and only applied to) the last stage
        self.layers = self.layers[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised last-stage map, channels-last ``(B, H / 32, W / 32, num_features)`` like timm."""
        return self.norm(self.layers(self._embed(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------- checkpoints

_OFFICIAL_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: SwinTransformer) -> dict[str, Tensor]:
    """Map an official (``microsoft/Swin-Transformer``) or timm Swin state dict onto ``model``'s keys.

    Official checkpoints (detected by a stage-0 ``downsample`` or a bare ``head.weight``) lose their derived
    ``relative_position_index`` / ``attn_mask`` buffers, move ``layers.{i}.downsample`` to ``layers.{i+1}`` (merging
    at the start of the next stage) and rename ``head.`` to ``head.fc.``. ``{"model": ...}`` wrappers are unwrapped.
    Relative position bias tables of another window are resized bicubically (timm's ``resize_rel_pos_bias_table``,
    as the authors did for window 12 at 384) and a patch embedding of another kernel is resampled.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"Swin checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    official = "layers.0.downsample.reduction.weight" in state_dict or "head.weight" in state_dict
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue  # derived buffers, rebuilt by the model
        if official:
            key = _OFFICIAL_DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
            key = re.sub(r"^head\.", "head.fc.", key)
        if key == "patch_embed.proj.weight" and value.shape[-2:] != model.patch_embed.proj.weight.shape[-2:]:
            value = resample_patch_embed(value, list(model.patch_embed.proj.weight.shape[-2:]), interpolation="bicubic")
        if key.endswith("relative_position_bias_table"):
            attn = model.get_submodule(key.rsplit(".", 1)[0])
            if value.shape != attn.relative_position_bias_table.shape:
                if value.shape[1] != attn.num_heads:
                    raise ValueError(f"Swin checkpoint: {key} has {value.shape[1]} heads, the model {attn.num_heads}")
                value = resize_rel_pos_bias_table(
                    value,
                    new_window_size=attn.window_size,
                    new_bias_shape=tuple(attn.relative_position_bias_table.shape),
                )
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- configs

_TINY = {
    "img_size": 32,
    "window_size": 2,
    "embed_dim": 8,
    "depths": (2, 2, 1, 1),
    "num_heads": (1, 2, 2, 4),
}


def _cfg(**overrides: Any) -> dict[str, Any]:
    return make_cfg(**{"classifier": "head.fc", "pool_size": (7, 7), **overrides})


_CFG_384 = {"input_size": (3, 384, 384), "pool_size": (12, 12), "crop_pct": 1.0}
# Model widths of the official configs/swin/*.yaml; drop_path_rate is those configs' training value.
_T = {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.2}
_S = {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.3}
_B = {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32), "drop_path_rate": 0.5}
_L = {"embed_dim": 192, "depths": (2, 2, 18, 2), "num_heads": (6, 12, 24, 48), "drop_path_rate": 0.2}


def _create(variant_args: dict[str, Any], kwargs: dict[str, Any]) -> SwinTransformer:
    return create(SwinTransformer, {"patch_size": 4, **variant_args, **kwargs})


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def swin_tiny_patch4_window7_224(**kwargs: Any) -> SwinTransformer:
    """Swin-T: C 96, depths 2/2/6/2, window 7 at 224; 28,288,354 parameters."""
    return _create({**_T, "window_size": 7, "img_size": 224}, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def swin_small_patch4_window7_224(**kwargs: Any) -> SwinTransformer:
    """Swin-S: C 96, depths 2/2/18/2, window 7 at 224; 49,606,258 parameters."""
    return _create({**_S, "window_size": 7, "img_size": 224}, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def swin_base_patch4_window7_224(**kwargs: Any) -> SwinTransformer:
    """Swin-B: C 128, depths 2/2/18/2, window 7 at 224; 87,768,224 parameters."""
    return _create({**_B, "window_size": 7, "img_size": 224}, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(**_CFG_384), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def swin_base_patch4_window12_384(**kwargs: Any) -> SwinTransformer:
    """Swin-B at 384 with window 12; 87,903,584 parameters."""
    return _create({**_B, "window_size": 12, "img_size": 384}, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def swin_large_patch4_window7_224(**kwargs: Any) -> SwinTransformer:
    """Swin-L: C 192, depths 2/2/18/2, window 7 at 224 (ImageNet-22K pre-trained); 196,532,476 parameters."""
    return _create({**_L, "window_size": 7, "img_size": 224}, kwargs)


@register_model(paper=PAPER, pretrained_cfg=_cfg(**_CFG_384), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY)
def swin_large_patch4_window12_384(**kwargs: Any) -> SwinTransformer:
    """Swin-L at 384 with window 12 (ImageNet-22K pre-trained)."""
    return _create({**_L, "window_size": 12, "img_size": 384}, kwargs)

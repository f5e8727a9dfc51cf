"""CrossViT (Chen, Fan & Panda, ICCV 2021, arXiv 2103.14899): two ViT branches fused by class-token cross-attention.

The small branch embeds the input with patch 12, the large branch a bicubic-resized copy (224/240 of the side) with
patch 16. Each multi-scale block runs ``K_s`` / ``K_l`` ViT blocks per branch, then fuses: a branch's class token is
projected to the other branch's width, attends (as the only query, no MLP) over the other branch's patch tokens and
is projected back. Logits are the mean of the two class-token heads.

Parameter names follow timm's ``crossvit.py`` (``pos_embed_0``, ``blocks.k.blocks.b.j``, ``fusion.b.attn.wq``...), so
timm state dicts load as they are; the official IBM/CrossViT keys differ only in ``pos_embed.{i}`` /
``cls_token.{i}`` (a ``ParameterList``), which :func:`checkpoint_filter_fn` renames. The "_224" / "_384" official
models take 240 / 408 inputs, hence timm's (and our) names ``_240`` / ``_408``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from formers.core.attention import AttentionBackendMixin, attention
from formers.core.layers import DropPath, TransformerBlock, init_weights, resolve_head_dim
from formers.core.models import FormersModel, check_input
from formers.core.registry import register_model
from formers.vision.models._cfg import create, make_cfg, run_blocks

__all__ = ["CrossViT", "checkpoint_filter_fn"]

_PAPER = "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image Classification (Chen et al., ICCV 2021)"


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"CrossViT: {name} must be an int or an (H, W) pair, got {value}")
    return value


class PatchEmbed(nn.Module):
    """Patch embedding of one branch: a strided conv, or the three-conv stem of the dagger (multi_conv) models.

    Shapes:
        - x: ``(batch, in_chans, H, W)`` with ``(H, W) == img_size``
        - output: ``(batch, (H / patch) * (W / patch), embed_dim)``
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, multi_conv: bool):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        if not multi_conv:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            return
        # The official dagger stems exist for patch 12 (stride 4 * 3 * 1) and 16 (4 * 2 * 2) only.
        second = {12: {"kernel_size": 3, "stride": 3, "padding": 0}, 16: {"kernel_size": 3, "stride": 2, "padding": 1}}
        third = {12: {"kernel_size": 3, "stride": 1, "padding": 1}, 16: {"kernel_size": 3, "stride": 2, "padding": 1}}
        if patch_size not in second:
            raise ValueError(f"CrossViT: multi_conv supports patch sizes 12 and 16, got {patch_size}")
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 4, kernel_size=7, stride=4, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim // 4, embed_dim // 2, **second[patch_size]),
            nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim // 2, embed_dim, **third[patch_size]),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class CrossAttention(AttentionBackendMixin, nn.Module):
    """Multi-head attention where only the class token queries; separate ``wq``/``wk``/``wv`` (official layout).

    With a single query, the key and value projections are folded into the query side instead of being applied to
    every token (exact algebra, same parameters, no ``(batch, length, dim)`` key/value tensors):

    * ``q_h · (Wk_h x_j + bk_h) = (Wk_hᵀ q_h) · x_j + q_h · bk_h`` (the last term is the same for every key);
    * ``Σ_j a_hj (Wv_h x_j + bv_h) = Wv_h (Σ_j a_hj x_j) + bv_h Σ_j a_hj`` (``Σ_j a_hj = 1`` without dropout).

    So the keys and values given to :func:`formers.core.attention.attention` are the normalised tokens themselves
    (the class token first), shared by the heads, with the folded query ``Wk_hᵀ q_h`` of width ``dim``. Costs
    ``O(length · dim · heads)`` instead of ``O(length · dim²)``.

    Shapes:
        - cls: ``(batch, 1, dim)`` (normalised)
        - tokens: ``(batch, length, dim)`` (normalised) or ``None`` (the class token attends to itself only)
        - output: ``(batch, 1, dim)``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.head_dim = resolve_head_dim("CrossViT CrossAttention", dim, num_heads)
        self.num_heads = num_heads
        self.scale = self.head_dim**-0.5
        self.backend = backend
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)  # its p is the attention dropout of the attention() call
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, cls: Tensor, tokens: Tensor | None = None) -> Tensor:
        batch, _, dim = cls.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self.wq(cls).view(batch, heads, head_dim)
        qk = torch.einsum("bhd,hdc->bhc", q, self.wk.weight.view(heads, head_dim, dim))  # (b, h, c)
        keys = cls if tokens is None else torch.cat((cls, tokens), dim=1)  # (b, 1 + n, c)
        bias = None
        if self.wk.bias is not None:
            # q · bk is the same for every key (no effect on the softmax); kept so that wk.bias stays in the graph,
            # as in the unfolded model, where its gradient is zero up to rounding.
            bias = ((q * self.wk.bias.view(heads, head_dim)).sum(-1) * self.scale)[..., None, None]  # (b, h, 1, 1)
        dropout_p = self.attn_drop.p if self.training else 0.0
        # With dropout the kept probability mass Σ_j a_hj is below 1 and scales bv: a ones channel in the values
        # returns it from the same attention call.
        mass = dropout_p > 0.0 and self.wv.bias is not None
        values = torch.cat((keys, keys.new_ones(batch, keys.shape[1], 1)), dim=-1) if mass else keys
        pooled = attention(
            qk[:, :, None],
            keys[:, None].expand(-1, heads, -1, -1),
            values[:, None].expand(-1, heads, -1, -1),
            attn_bias=bias,
            dropout_p=dropout_p,
            scale=self.scale,
            backend=self.backend,
        )[:, :, 0]  # (b, h, c [+ 1]): attention-weighted sum of the normalised tokens [and the kept mass]
        out = torch.einsum("bhc,hdc->bhd", pooled[..., :dim], self.wv.weight.view(heads, head_dim, dim))
        if self.wv.bias is not None:
            out = out + self.wv.bias.view(heads, head_dim) * (pooled[..., dim:] if mass else 1.0)
        return self.proj_drop(self.proj(out.reshape(batch, 1, dim)))


class CrossAttentionBlock(nn.Module):
    """``cls + drop_path(attn(norm1([cls; other[:, 1:]])))`` on the class token only; no MLP (``has_mlp=False``).

    Shapes:
        - cls: ``(batch, 1, dim)``
        - other: ``(batch, 1 + length, dim)``, the other branch's tokens (its own class token is skipped), or ``None``
        - output: ``(batch, 1, dim)``
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, cls: Tensor, other: Tensor | None = None) -> Tensor:
        # LayerNorm is per token, so norm1 of the concatenation is the concatenation of the norms; normalising all of
        # the contiguous `other` and slicing afterwards avoids copying its patch tokens.
        tokens = None if other is None else self.norm1(other)[:, 1:]
        return cls + self.drop_path(self.attn(self.norm1(cls), tokens))


def _proj(dim_in: int, dim_out: int) -> nn.Sequential:
    """LN -> GELU -> Linear: moves a class token between branch widths (keys ``.0`` and ``.2`` as official)."""
    return nn.Sequential(nn.LayerNorm(dim_in, eps=1e-6), nn.GELU(), nn.Linear(dim_in, dim_out))


class MultiScaleBlock(nn.Module):
    """Per-branch ViT blocks, then cross-attention fusion of each branch's class token with the next branch.

    ``depth = (K_0, K_1, ..., K_fusion)``; ``K_fusion == 0`` builds a single unwrapped fusion block per branch (the
    layout of every released model), ``K_fusion > 0`` a ``Sequential`` of that many.
    """

    def __init__(
        self,
        dims: Sequence[int],
        depth: Sequence[int],
        num_heads: Sequence[int],
        mlp_ratio: Sequence[float],
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
    ):
        super().__init__()
        n = len(dims)
        self.num_branches = n
        self.blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    TransformerBlock(
                        dims[b],
                        num_heads[b],
                        mlp_ratio=mlp_ratio[b],
                        qkv_bias=qkv_bias,
                        proj_drop=proj_drop,
                        attn_drop=attn_drop,
                        drop_path=drop_path[i],
                        norm_layer=_layer_norm_eps6,
                    )
                    for i in range(depth[b])
                )
            )
            for b in range(n)
        )
        self.projs = nn.ModuleList(_proj(dims[b], dims[(b + 1) % n]) for b in range(n))

        def fusion_block(b: int) -> CrossAttentionBlock:
            other = (b + 1) % n
            return CrossAttentionBlock(dims[other], num_heads[other], qkv_bias, proj_drop, attn_drop, drop_path[-1])

        fusion_depth = depth[-1]
        self.fusion = nn.ModuleList(
            fusion_block(b) if fusion_depth == 0 else nn.Sequential(*(fusion_block(b) for _ in range(fusion_depth)))
            for b in range(n)
        )
        self.revert_projs = nn.ModuleList(_proj(dims[(b + 1) % n], dims[b]) for b in range(n))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        outs_b = [block(x) for block, x in zip(self.blocks, xs, strict=True)]
        outs = []
        for i in range(self.num_branches):
            other = outs_b[(i + 1) % self.num_branches]
            cls = self.projs[i](outs_b[i][:, :1])
            fusion = self.fusion[i]
            if isinstance(fusion, CrossAttentionBlock):
                cls = fusion(cls, other)
            else:  # K_fusion > 0: as timm, blocks after the first see only the class token they return
                for j, block in enumerate(fusion):
                    cls = block(cls, other if j == 0 else None)
            outs.append(torch.cat((self.revert_projs[i](cls), outs_b[i][:, 1:]), dim=1))
        return outs


def _layer_norm_eps6(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


class CrossViT(FormersModel):
    """CrossViT image classifier (timm-compatible parameter names).

    Args:
        img_size: input side (int) or ``(H, W)``; every branch's scaled size must be divisible by its patch.
        img_scale: per-branch resize factor of the input (``(1, 224/240)``: the large branch sees a 224 copy).
        patch_size: per-branch patch size.
        in_chans: input channels.
        num_classes: classes (``0``: no head, :meth:`forward` returns the concatenated class tokens).
        embed_dim, num_heads: per-branch width and heads.
        depth: one ``(K_small, K_large, K_fusion)`` spec per multi-scale block.
        mlp_ratio: per-branch MLP ratio (the last entry belongs to the unused fusion MLP, kept for fidelity).
        multi_conv: the dagger (†) three-conv patch stems.
        qkv_bias, drop_rate, pos_drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate: as in timm.
        global_pool: ``"token"`` (class tokens, as the paper) or ``"avg"`` (mean of patch tokens).

    Shapes:
        - x: ``(batch, in_chans, H, W)`` with ``(H, W) == img_size``
        - output: ``(batch, num_classes)``
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 240,
        img_scale: Sequence[float] = (1.0, 224 / 240),
        patch_size: Sequence[int] = (12, 16),
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (192, 384),
        depth: Sequence[Sequence[int]] = ((1, 4, 0),) * 3,
        num_heads: Sequence[int] = (6, 6),
        mlp_ratio: Sequence[float] = (4.0, 4.0, 1.0),
        multi_conv: bool = False,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        n = len(patch_size)
        if not (len(img_scale) == len(embed_dim) == len(num_heads) == n) or len(mlp_ratio) < n:
            raise ValueError(
                "CrossViT: img_scale, patch_size, embed_dim, num_heads need one entry per branch (and mlp_ratio at "
                f"least one), got {len(img_scale)}, {n}, {len(embed_dim)}, {len(num_heads)}, {len(mlp_ratio)}"
            )
        if global_pool not in ("token", "avg"):
            raise ValueError(f"CrossViT: global_pool must be 'token' or 'avg', got {global_pool!r}")
        for spec in depth:
            if len(spec) != n + 1:
                raise ValueError(f"CrossViT: each depth spec needs {n} branch depths + a fusion depth, got {spec}")
        self.img_size = _pair(img_size, "img_size")
        self.in_chans, self.num_classes, self.global_pool = in_chans, num_classes, global_pool
        self.num_branches, self.embed_dim = n, tuple(embed_dim)
        self.num_features = self.head_hidden_size = sum(embed_dim)
        # round() rather than timm's int(): the same sizes for the paper configs, robust to float error elsewhere.
        self.img_size_scaled = [tuple(round(side * s) for side in self.img_size) for s in img_scale]
        for size, patch in zip(self.img_size_scaled, patch_size, strict=True):
            if size[0] % patch or size[1] % patch:
                raise ValueError(
                    f"CrossViT: img_size {self.img_size} scaled by {img_scale} gives branch sizes "
                    f"{self.img_size_scaled}, which must be divisible by the patch sizes {tuple(patch_size)} "
                    "(e.g. 240 or 408 for the default 224/240 and 384/408 scales)"
                )
        self.patch_embed = nn.ModuleList(
            PatchEmbed(size, p, in_chans, d, multi_conv)
            for size, p, d in zip(self.img_size_scaled, patch_size, embed_dim, strict=True)
        )
        for i, (pe, d) in enumerate(zip(self.patch_embed, embed_dim, strict=True)):
            setattr(self, f"pos_embed_{i}", nn.Parameter(torch.zeros(1, 1 + pe.num_patches, d)))
            setattr(self, f"cls_token_{i}", nn.Parameter(torch.zeros(1, 1, d)))
        self.pos_drop = nn.Dropout(pos_drop_rate)

        # Stochastic depth as timm: linear over sum(K_large, K_fusion) per block; branch b block i takes rate i.
        total = sum(sum(spec[-2:]) for spec in depth)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # torch.linspace, meta-device safe
        blocks, ptr = [], 0
        for spec in depth:
            cur = max(spec[:-1]) + spec[-1]
            rates = dpr[ptr : ptr + cur] or [0.0]
            blocks.append(
                MultiScaleBlock(embed_dim, spec, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, rates)
            )
            ptr += cur
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False
        # timm's feature taps: each branch's patch tokens after every multi-scale block, branch-major (index
        # b * num_blocks + i is branch b after block i) so that the reductions do not decrease
        self.num_feature_blocks = len(depth)
        self.feature_info = [
            {"num_chs": embed_dim[b], "reduction": round(patch_size[b] / img_scale[b]), "module": f"blocks.{i}"}
            for b in range(n)
            for i in range(self.num_feature_blocks)
        ]
        # features_only default (timm's): the last block of each branch, the tokens the heads see
        self.default_out_indices = tuple((b + 1) * self.num_feature_blocks - 1 for b in range(n))
        self.norm = nn.ModuleList(nn.LayerNorm(d, eps=1e-6) for d in embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)

        for i in range(n):
            nn.init.trunc_normal_(getattr(self, f"pos_embed_{i}"), std=0.02)
            nn.init.trunc_normal_(getattr(self, f"cls_token_{i}"), std=0.02)
        self.apply(init_weights)

    def _make_head(self, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(nn.Linear(d, num_classes) if num_classes > 0 else nn.Identity() for d in self.embed_dim)

    # ------------------------------------------------------------------------------------------- FormersModel API

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        return {"x": torch.randn(batch_size, self.in_chans, *self.img_size, device=self.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes if self.num_classes > 0 else self.num_features)

    def no_weight_decay(self) -> set[str]:
        return {f"{kind}_{i}" for i in range(self.num_branches) for kind in ("pos_embed", "cls_token")}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("token", "avg"):
                raise ValueError(f"CrossViT: global_pool must be 'token' or 'avg', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = self.cls_token_0  # the norms may be pruned (prune_intermediate_layers)
        self.head = self._make_head(num_classes).to(device=ref.device, dtype=ref.dtype)
        self.head.apply(init_weights)
        self.head.train(self.training)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each multi-scale block's activations in backward instead of storing them (less memory)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's CrossViT parameter groups: the embeddings, one group per multi-scale block (the final norms join
        the last one), the heads last (``coarse`` makes no difference)."""
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    # -------------------------------------------------------------------------------------------------- forward

    def _check(self, x: Tensor) -> None:
        check_input("CrossViT: x", x, ndim=4, floating=True, dims="(batch, channels, height, width)")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"CrossViT: expected {self.in_chans} input channels, got {x.shape[1]} (shape {x.shape})")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"CrossViT: expected an input of size {self.img_size}, got {tuple(x.shape[-2:])}; build the model "
                "with img_size=... (and load weights through checkpoint_filter_fn, which resizes pos_embed)"
            )

    def _embed(self, x: Tensor) -> list[Tensor]:
        batch = x.shape[0]
        xs = []
        for i, patch_embed in enumerate(self.patch_embed):
            size = self.img_size_scaled[i]
            x_i = x if size == self.img_size else F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            x_i = patch_embed(x_i)
            cls = getattr(self, f"cls_token_{i}").expand(batch, -1, -1)
            xs.append(self.pos_drop(torch.cat((cls, x_i), dim=1) + getattr(self, f"pos_embed_{i}")))
        return xs

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Normalised tokens of each branch, ``[(batch, 1 + N_b, embed_dim[b]) for each branch b]``."""
        self._check(x)
        xs = run_blocks(self.blocks, self._embed(x), self.grad_checkpointing)
        return [norm(x_b) for norm, x_b in zip(self.norm, xs, strict=True)]

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """timm's ``forward_intermediates``: the patch tokens (class token removed) of each branch after each
        multi-scale block, branch-major (with ``D`` blocks, ``0 .. D-1`` are branch 0, ``D .. 2D-1`` branch 1),
        taken at ``indices`` (last ``n`` if an int, all if ``None``), as ``NCHW`` maps or ``NLC`` tokens.

        ``norm`` applies the branch's final norm to its intermediates; ``stop_early`` skips the blocks after the
        last one taken. Unless ``intermediates_only``, also returns the normalised tokens of each branch.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"CrossViT: forward_intermediates output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        num_blocks = self.num_feature_blocks
        take_indices, _ = feature_take_indices(self.num_branches * num_blocks, indices)
        max_block = max(idx % num_blocks for idx in take_indices)
        self._check(x)
        xs = self._embed(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[: max_block + 1]
        per_branch: list[list[Tensor]] = [[] for _ in range(self.num_branches)]
        for i, block in enumerate(blocks):
            xs = block(xs)
            for b, norm_layer in enumerate(self.norm):
                if b * num_blocks + i in take_indices:
                    per_branch[b].append((norm_layer(xs[b]) if norm else xs[b])[:, 1:])
        intermediates = []
        for patch_embed, feats in zip(self.patch_embed, per_branch, strict=True):
            if output_fmt == "NCHW":
                h, w = patch_embed.grid_size
                feats = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for y in feats]
            intermediates.extend(feats)
        if intermediates_only:
            return intermediates
        return [norm_layer(x_b) for norm_layer, x_b in zip(self.norm, xs, strict=True)], intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last one ``indices`` needs (and the head / final norms); returns the kept
        indices. The fusion into an untaken branch in the last kept block stays (its output is unused)."""
        num_blocks = self.num_feature_blocks
        take_indices, _ = feature_take_indices(self.num_branches * num_blocks, indices)
        self.blocks = self.blocks[: max(idx % num_blocks for idx in take_indices) + 1]
        if prune_norm:
            self.norm = nn.ModuleList(nn.Identity() for _ in range(self.num_branches))
        if prune_head:
            self.reset_classifier(0)
        return take_indices

    def forward_head(self, xs: list[Tensor], pre_logits: bool = False) -> Tensor:
        """Mean of the per-branch head logits; ``pre_logits`` (or no head) gives the concatenated pooled tokens."""
        pooled = [x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0] for x in xs]
        pooled = [self.head_drop(p) for p in pooled]
        if pre_logits or self.num_classes == 0:
            return torch.cat(pooled, dim=1)
        return torch.stack([head(p) for head, p in zip(self.head, pooled, strict=True)]).mean(dim=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------- checkpoints


def checkpoint_filter_fn(state_dict: dict[str, Any], model: CrossViT) -> dict[str, Tensor]:
    """Map an official (IBM/CrossViT) or timm state dict onto ``model``'s keys; resize ``pos_embed_*`` to its grid.

    Official keys ``pos_embed.{i}`` / ``cls_token.{i}`` (a ``ParameterList``) become ``pos_embed_{i}`` /
    ``cls_token_{i}``; timm keys are ours already. A ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper is unwrapped.
    Position tables are resampled bicubically (timm's ``resample_abs_pos_embed``, class token kept).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    for wrapper in ("model", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("pos_embed.", "cls_token.")):
            key = key.replace(".", "_", 1)
        if key.startswith("pos_embed_"):
            i = int(key.split("_")[-1])
            if i >= model.num_branches:
                raise ValueError(f"checkpoint_filter_fn: {key} has no branch in a {model.num_branches}-branch model")
            grid = model.patch_embed[i].grid_size
            if not isinstance(value, Tensor) or value.dim() != 3:
                raise ValueError(f"checkpoint_filter_fn: {key} must be a (1, 1 + N, C) tensor, got {value!r:.80}")
            if value.shape[1] != 1 + grid[0] * grid[1]:
                old = round((value.shape[1] - 1) ** 0.5)
                if old * old != value.shape[1] - 1:
                    raise ValueError(f"checkpoint_filter_fn: {key} with {value.shape[1] - 1} patches is not square")
                value = resample_abs_pos_embed(value, new_size=list(grid), old_size=[old, old], num_prefix_tokens=1)
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ named configs


def _cfg(size: int = 240, multi_conv: bool = False) -> dict[str, Any]:
    stem = ".proj.0" if multi_conv else ".proj"
    return make_cfg(
        input_size=(3, size, size),
        crop_pct=0.875 if size == 240 else 1.0,
        first_conv=(f"patch_embed.0{stem}", f"patch_embed.1{stem}"),
        classifier=("head.0", "head.1"),
    )


_TEST_KWARGS = {
    "img_size": 120,  # 120 -> 10x10 small-branch tokens, 112 -> 7x7 large-branch tokens
    "embed_dim": (16, 32),
    "num_heads": (2, 2),
    "depth": ((1, 1, 0),),
    "num_classes": 10,
}
_TEST_KWARGS_408 = {**_TEST_KWARGS, "img_size": 204}  # 384/408 scale: 204 -> 17x17 and 192 -> 12x12 tokens


def _create(defaults: dict[str, Any], kwargs: dict[str, Any]) -> CrossViT:
    return create(CrossViT, {**defaults, **kwargs})


def _args(dims: tuple[int, int], k_large: int, heads: int, mlp: float, size: int = 240, **extra: Any) -> dict:
    return {
        "img_size": size,
        "img_scale": (1.0, {240: 224, 408: 384}[size] / size),  # the large branch sees a 224 / 384 copy
        "patch_size": (12, 16),
        "embed_dim": dims,
        "depth": ((1, k_large, 0),) * 3,
        "num_heads": (heads, heads),
        "mlp_ratio": (mlp, mlp, 1.0),
        **extra,
    }


@register_model(paper=_PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS)
def crossvit_tiny_240(**kwargs: Any) -> CrossViT:
    """CrossViT-Ti (official ``crossvit_tiny_224``): 96/192, K=4, 3 heads, mlp 4; 7,014,800 parameters."""
    return _create(_args((96, 192), 4, 3, 4.0), kwargs)


@register_model(paper=_PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS)
def crossvit_small_240(**kwargs: Any) -> CrossViT:
    """CrossViT-S: 192/384, K=4, 6 heads, mlp 4; 26,856,272 parameters."""
    return _create(_args((192, 384), 4, 6, 4.0), kwargs)


@register_model(paper=_PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS)
def crossvit_base_240(**kwargs: Any) -> CrossViT:
    """CrossViT-B: 384/768, K=4, 12 heads, mlp 4; 105,025,232 parameters."""
    return _create(_args((384, 768), 4, 12, 4.0), kwargs)


@register_model(paper=_PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS)
def crossvit_9_240(**kwargs: Any) -> CrossViT:
    """CrossViT-9: 128/256, K=3, 4 heads, mlp 3; 8,553,296 parameters."""
    return _create(_args((128, 256), 3, 4, 3.0), kwargs)


@register_model(paper=_PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS)
def crossvit_15_240(**kwargs: Any) -> CrossViT:
    """CrossViT-15: 192/384, K=5, 6 heads, mlp 3; 27,528,464 parameters."""
    return _create(_args((192, 384), 5, 6, 3.0), kwargs)


@register_model(paper=_PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS)
def crossvit_18_240(**kwargs: Any) -> CrossViT:
    """CrossViT-18: 224/448, K=6, 7 heads, mlp 3; 43,271,408 parameters."""
    return _create(_args((224, 448), 6, 7, 3.0), kwargs)


@register_model(
    paper=_PAPER, pretrained_cfg=_cfg(multi_conv=True), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS
)
def crossvit_9_dagger_240(**kwargs: Any) -> CrossViT:
    """CrossViT-9† (multi-conv patch stems): 8,776,592 parameters."""
    return _create(_args((128, 256), 3, 4, 3.0, multi_conv=True), kwargs)


@register_model(
    paper=_PAPER, pretrained_cfg=_cfg(multi_conv=True), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS
)
def crossvit_15_dagger_240(**kwargs: Any) -> CrossViT:
    """CrossViT-15†: 28,209,008 parameters."""
    return _create(_args((192, 384), 5, 6, 3.0, multi_conv=True), kwargs)


@register_model(
    paper=_PAPER,
    pretrained_cfg=_cfg(408, multi_conv=True),
    filter_fn=checkpoint_filter_fn,
    test_kwargs=_TEST_KWARGS_408,
)
def crossvit_15_dagger_408(**kwargs: Any) -> CrossViT:
    """CrossViT-15† at 408 (official ``crossvit_15_dagger_384``; large branch at 384): 28,500,080 parameters."""
    return _create(_args((192, 384), 5, 6, 3.0, size=408, multi_conv=True), kwargs)


@register_model(
    paper=_PAPER, pretrained_cfg=_cfg(multi_conv=True), filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS
)
def crossvit_18_dagger_240(**kwargs: Any) -> CrossViT:
    """CrossViT-18†: 44,266,976 parameters."""
    return _create(_args((224, 448), 6, 7, 3.0, multi_conv=True), kwargs)


@register_model(
    paper=_PAPER,
    pretrained_cfg=_cfg(408, multi_conv=True),
    filter_fn=checkpoint_filter_fn,
    test_kwargs=_TEST_KWARGS_408,
)
def crossvit_18_dagger_408(**kwargs: Any) -> CrossViT:
    """CrossViT-18† at 408 (official ``crossvit_18_dagger_384``): 44,606,560 parameters."""
    return _create(_args((224, 448), 6, 7, 3.0, size=408, multi_conv=True), kwargs)

"""T2T-ViT (Yuan et al., ICCV 2021, arXiv 2101.11986): Tokens-to-Token ViT.

The T2T module turns the image into tokens progressively: three soft splits (``nn.Unfold`` 7/4/2, 3/2/1, 3/2/1)
with two token layers in between (a Performer or a 1-head Transformer that change the width to ``token_dim`` and
keep ``v`` as the attention residual), then a linear ``project`` to the backbone width. The backbone is a ViT with
a class token, a **frozen sinusoidal** position table and attention without qkv bias.

timm has no T2T-ViT; parameter names are those of the official yitu-opensource/T2T-ViT code
(``tokens_to_token.attention1.kqv``, ``.w``, ``.mlp.0``, ``blocks.N.attn.qkv``...), so its checkpoints load with
``strict=True``. The Performer arithmetic is :class:`formers.core.layers.PerformerAttention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from formers.core.attention import AttentionBackendMixin, attention
from formers.core.layers import Mlp, PerformerAttention, TransformerBlock, init_weights
from formers.core.models import FormersModel, check_input
from formers.core.registry import register_model
from formers.vision.models._cfg import create, make_cfg, run_blocks

__all__ = [
    "T2TViT",
    "T2TModule",
    "TokenPerformer",
    "TokenTransformer",
    "QueryScale",
    "get_sinusoid_encoding",
    "checkpoint_filter_fn",
]

_PAPER = "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet (Yuan et al., ICCV 2021)"
_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding) of soft_split0/1/2: 4 * 2 * 2 = 16


def get_sinusoid_encoding(n_position: int, d_hid: int) -> Tensor:
    """The official table ``(1, n_position, d_hid)``: angle ``pos / 10000^(2·(j//2)/d)``, sin on even ``j``, cos on
    odd ``j`` (interleaved, unlike the half/half layout of ``formers.core.layers.sinusoidal_embedding``)."""
    pos = torch.arange(n_position, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(d_hid, dtype=torch.float64)
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d_hid)
    table = torch.where(j.long() % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


class TokenPerformer(PerformerAttention):
    """T2T token layer with Performer attention (official ``Token_performer``; keys ``kqv``, ``w``, ``proj``,
    ``norm1``, ``norm2``, ``mlp.0``, ``mlp.2`` at the top level, as in the checkpoints).

    ``x = v + drop(proj(performer(norm1(x))))``; ``x = x + mlp(norm2(x))``. The two dropouts (0.1) are the
    official hard-coded ``dp1`` / ``dp2``.

    Shapes:
        - x: ``(batch, length, dim)``
        - output: ``(batch, length, in_dim)``
    """

    def __init__(self, dim: int, in_dim: int, kernel_ratio: float = 0.5, dp1: float = 0.1, dp2: float = 0.1):
        super().__init__(dim, out_dim=in_dim, num_heads=1, kernel_ratio=kernel_ratio, proj_drop=dp1, v_residual=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, in_dim), nn.Dropout(dp2))

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenAttention(AttentionBackendMixin, nn.Module):
    """Softmax attention of the T2T Transformer layer: ``qkv`` (no bias) from ``dim`` to ``3 · in_dim``, output
    ``v + proj(attn)``. The score scale is ``(dim // num_heads)^-0.5`` of the **input** width, as official."""

    def __init__(self, dim: int, in_dim: int, num_heads: int = 1, qkv_bias: bool = False):
        super().__init__()
        if num_heads != 1:
            raise ValueError("TokenAttention: the official layer (v residual of width in_dim) has a single head")
        self.in_dim, self.scale = in_dim, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(in_dim, in_dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, 1, self.in_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, scale=self.scale, backend=self.backend)  # (b, 1, n, in_dim)
        return v.squeeze(1) + self.proj(out.squeeze(1))


class TokenTransformer(nn.Module):
    """T2T token layer with softmax attention (official ``Token_transformer``, 1 head, MLP ratio 1).

    Shapes:
        - x: ``(batch, length, dim)``
        - output: ``(batch, length, in_dim)``
    """

    def __init__(self, dim: int, in_dim: int, num_heads: int = 1, mlp_ratio: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, in_dim, num_heads)
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), in_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _split_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class T2TModule(nn.Module):
    """Soft split -> token layer -> re-structurize, twice, then a third soft split and ``project``.

    Shapes:
        - x: ``(batch, in_chans, H, W)`` with ``H`` and ``W`` multiples of 16
        - output: ``(batch, (H / 16) · (W / 16), embed_dim)``
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        tokens_type: str = "performer",
        in_chans: int = 3,
        embed_dim: int = 768,
        token_dim: int = 64,
    ):
        super().__init__()
        for i, (kernel, stride, padding) in enumerate(_SPLITS):
            setattr(self, f"soft_split{i}", nn.Unfold(kernel_size=kernel, stride=stride, padding=padding))
        dims = (in_chans * 7 * 7, token_dim * 3 * 3)
        if tokens_type == "performer":
            self.attention1 = TokenPerformer(dims[0], token_dim, kernel_ratio=0.5)
            self.attention2 = TokenPerformer(dims[1], token_dim, kernel_ratio=0.5)
        elif tokens_type == "transformer":
            self.attention1 = TokenTransformer(dims[0], token_dim, num_heads=1, mlp_ratio=1.0)
            self.attention2 = TokenTransformer(dims[1], token_dim, num_heads=1, mlp_ratio=1.0)
        else:
            raise ValueError(f"T2TModule: tokens_type must be 'performer' or 'transformer', got {tokens_type!r}")
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)
        sizes = [img_size]
        for split in _SPLITS:
            sizes.append(tuple(_split_size(s, *split) for s in sizes[-1]))
        self.grid_sizes = sizes[1:]  # token grids after each soft split, e.g. 56², 28², 14² at 224
        self.num_patches = sizes[-1][0] * sizes[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        x = self.soft_split0(x).transpose(1, 2)
        for attn, split, grid in ((self.attention1, self.soft_split1, 0), (self.attention2, self.soft_split2, 1)):
            x = attn(x)  # (b, h·w, token_dim)
            x = x.transpose(1, 2).reshape(batch, x.shape[-1], *self.grid_sizes[grid])  # re-structurize
            x = split(x).transpose(1, 2)
        return self.project(x)


class QueryScale(nn.Module):
    """Multiplies the queries by ``factor``: set as a backbone attention's ``q_norm`` (applied to the per-head
    queries before :func:`formers.core.attention.attention`, which scales by ``head_dim ** -0.5``) it makes the score
    scale ``factor * head_dim ** -0.5``, the official ``qk_scale`` argument. No parameters: the state dict is the same.
    """

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, q: Tensor) -> Tensor:
        return q * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}"


class T2TViT(FormersModel):
    """T2T-ViT image classifier with the official parameter names.

    Args:
        img_size: input side (int) or ``(H, W)``, multiples of 16.
        tokens_type: ``"performer"`` (T2T-ViT-N) or ``"transformer"`` (T2T-ViT_t-N) token layers.
        in_chans: input channels.
        num_classes: classes (``0``: no head, :meth:`forward` returns the class token features).
        embed_dim, depth, num_heads, mlp_ratio: backbone width, blocks, heads, MLP ratio.
        qkv_bias: biases on the backbone qkv projections (``False`` in every official config).
        qk_scale: score scale of the backbone attention; ``None`` (default) is ``(embed_dim // num_heads) ** -0.5``,
            the scale of the official ``main.py`` training and ``--eval_checkpoint`` evaluation and of the README's
            ``model = t2t_vit_14()`` usage. The official ``t2t_vit_*(pretrained=True)`` factories set
            ``qk_scale = embed_dim ** -0.5`` (a branch copied from timm's early ViT; its download URL is empty):
            pass that value to reproduce models built that way.
        token_dim: width of the T2T token layers (64).
        drop_rate, attn_drop_rate, drop_path_rate: dropout (position, projections, MLP), attention dropout and
            stochastic depth (linear over the blocks), as official.

    Shapes:
        - x: ``(batch, in_chans, H, W)`` with ``(H, W) == img_size``
        - output: ``(batch, num_classes)``
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        tokens_type: str = "performer",
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        token_dim: int = 64,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(img_size) != 2 or any(s < 16 or s % 16 for s in img_size):
            raise ValueError(f"T2TViT: img_size must be positive multiples of 16 (the token stride), got {img_size}")
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.num_features = self.embed_dim = embed_dim
        self.tokens_to_token = T2TModule(img_size, tokens_type, in_chans, embed_dim, token_dim)
        num_patches = self.tokens_to_token.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # A fixed table, yet a Parameter (requires_grad=False) as official: it is in the checkpoints.
        self.pos_embed = nn.Parameter(get_sinusoid_encoding(num_patches + 1, embed_dim), requires_grad=False)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # torch.linspace, meta-device safe
        self.blocks = nn.ModuleList(
            TransformerBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
            )
            for i in range(depth)
        )
        self.qk_scale = qk_scale
        if qk_scale is not None:
            if not qk_scale > 0:
                raise ValueError(f"T2TViT: qk_scale must be > 0 (or None for head_dim ** -0.5), got {qk_scale}")
            for block in self.blocks:
                block.attn.q_norm = QueryScale(qk_scale * block.attn.head_dim**0.5)
        self.grad_checkpointing = False
        # timm's ViT feature taps: the patch tokens after each block (stride 16); features_only takes the last 3
        self.feature_info = [{"num_chs": embed_dim, "reduction": 16, "module": f"blocks.{i}"} for i in range(depth)]
        self.default_out_indices = tuple(range(max(depth - 3, 0), depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights)

    # ------------------------------------------------------------------------------------------- FormersModel API

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        return {"x": torch.randn(batch_size, self.in_chans, *self.img_size, device=self.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes if self.num_classes > 0 else self.num_features)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for ``num_classes`` (``0``: none); ``global_pool`` is timm's argument (class token only)."""
        if global_pool not in (None, "", "token"):
            raise ValueError(f"T2TViT: global_pool must be 'token' (class token pooling), got {global_pool!r}")
        self.num_classes = num_classes
        ref = self.cls_token  # the norm may be pruned (prune_intermediate_layers)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(init_weights)
        self.head.to(device=ref.device, dtype=ref.dtype)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each backbone block's activations in backward instead of storing them (less memory)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's ViT parameter groups: the T2T module and embeddings, one group per block (the final norm joins the
        last one), the head last (``coarse`` makes no difference)."""
        return {
            "stem": r"^cls_token|^pos_embed|^tokens_to_token",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    # -------------------------------------------------------------------------------------------------- forward

    def _check(self, x: Tensor) -> None:
        check_input("T2TViT: x", x, ndim=4, floating=True, dims="(batch, channels, height, width)")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"T2TViT: expected {self.in_chans} input channels, got {x.shape[1]} (shape {x.shape})")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"T2TViT: expected an input of size {self.img_size}, got {tuple(x.shape[-2:])}; build the model "
                "with img_size=... (checkpoint_filter_fn then regenerates the sinusoidal pos_embed for it)"
            )

    def _embed(self, x: Tensor) -> Tensor:
        self._check(x)
        x = self.tokens_to_token(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.pos_drop(x + self.pos_embed)

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised tokens ``(batch, 1 + N, embed_dim)``, class token first."""
        return self.norm(run_blocks(self.blocks, self._embed(x), self.grad_checkpointing))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ViT ``forward_intermediates``: the patch tokens after the blocks ``indices`` (last ``n`` if an int,
        all if ``None``) as ``NCHW`` maps (stride 16) or ``NLC`` tokens, the class token removed (returned alongside,
        as ``(map, class_token)`` pairs, with ``return_prefix_tokens``); ``norm`` applies the final norm to them.
        Unless ``intermediates_only``, also returns the normalised tokens of the last block run.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"T2TViT: forward_intermediates output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = self._embed(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[: max_index + 1]
        taken = []
        for i, block in enumerate(blocks):
            x = block(x)
            if i in take_indices:
                taken.append(self.norm(x) if norm else x)
        prefix_tokens = [y[:, :1] for y in taken]
        intermediates = [y[:, 1:] for y in taken]
        if output_fmt == "NCHW":
            h, w = self.tokens_to_token.grid_sizes[-1]
            intermediates = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix_tokens, strict=True))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the head / final norm); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take_indices

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------- checkpoints


def checkpoint_filter_fn(state_dict: dict[str, Any], model: T2TViT) -> dict[str, Tensor]:
    """Official T2T-ViT checkpoint (plain state dict or ``*.pth.tar`` dict) -> ``model``'s state dict.

    Picks ``state_dict_ema`` (the weights the README evaluates), else ``state_dict`` / ``model``; strips a DDP
    ``module.`` prefix. A ``pos_embed`` of another size is **regenerated** (the table is the fixed sinusoid of the
    token index, never trained, so a model built at the new size holds exactly this table) rather than bicubically
    interpolated like the official ``resize_pos_embed``.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    for wrapper in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key == "pos_embed":
            if not isinstance(value, Tensor) or value.dim() != 3 or value.shape[-1] != model.embed_dim:
                raise ValueError(
                    f"checkpoint_filter_fn: pos_embed must be (1, 1 + N, {model.embed_dim}), got {value!r:.80}"
                )
            if value.shape != model.pos_embed.shape:
                value = get_sinusoid_encoding(model.pos_embed.shape[1], model.embed_dim).to(value.dtype)
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ named configs

_CFG = make_cfg(first_conv="tokens_to_token.project", classifier="head")  # 224, crop 0.9, bicubic, ImageNet stats
_TEST_KWARGS = {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2, "token_dim": 16, "num_classes": 10}


def _create(defaults: dict[str, Any], kwargs: dict[str, Any]) -> T2TViT:
    return create(T2TViT, {**defaults, **kwargs})


def _args(tokens_type: str, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float) -> dict[str, Any]:
    return {
        "tokens_type": tokens_type,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
    }


def _register(fn):
    return register_model(
        fn, paper=_PAPER, pretrained_cfg=_CFG, filter_fn=checkpoint_filter_fn, test_kwargs=_TEST_KWARGS
    )


@_register
def t2t_vit_7(**kwargs: Any) -> T2TViT:
    """T2T-ViT-7 (Performer T2T): 256 wide, 7 blocks, 4 heads, MLP 2; 4,310,222 parameters."""
    return _create(_args("performer", 256, 7, 4, 2.0), kwargs)


@_register
def t2t_vit_10(**kwargs: Any) -> T2TViT:
    """T2T-ViT-10: 256, 10 blocks, 4 heads, MLP 2; 5,889,230 parameters."""
    return _create(_args("performer", 256, 10, 4, 2.0), kwargs)


@_register
def t2t_vit_12(**kwargs: Any) -> T2TViT:
    """T2T-ViT-12: 256, 12 blocks, 4 heads, MLP 2; 6,941,902 parameters."""
    return _create(_args("performer", 256, 12, 4, 2.0), kwargs)


@_register
def t2t_vit_14(**kwargs: Any) -> T2TViT:
    """T2T-ViT-14: 384, 14 blocks, 6 heads, MLP 3; 21,545,550 parameters."""
    return _create(_args("performer", 384, 14, 6, 3.0), kwargs)


@_register
def t2t_vit_19(**kwargs: Any) -> T2TViT:
    """T2T-ViT-19: 448, 19 blocks, 7 heads, MLP 3; 39,177,422 parameters."""
    return _create(_args("performer", 448, 19, 7, 3.0), kwargs)


@_register
def t2t_vit_24(**kwargs: Any) -> T2TViT:
    """T2T-ViT-24: 512, 24 blocks, 8 heads, MLP 3; 64,105,934 parameters."""
    return _create(_args("performer", 512, 24, 8, 3.0), kwargs)


@_register
def t2t_vit_t_14(**kwargs: Any) -> T2TViT:
    """T2T-ViT_t-14 (Transformer T2T): 384, 14 blocks, 6 heads, MLP 3; 21,541,070 parameters."""
    return _create(_args("transformer", 384, 14, 6, 3.0), kwargs)


@_register
def t2t_vit_t_19(**kwargs: Any) -> T2TViT:
    """T2T-ViT_t-19: 448, 19 blocks, 7 heads, MLP 3; 39,172,942 parameters."""
    return _create(_args("transformer", 448, 19, 7, 3.0), kwargs)


@_register
def t2t_vit_t_24(**kwargs: Any) -> T2TViT:
    """T2T-ViT_t-24: 512, 24 blocks, 8 heads, MLP 3; 64,101,454 parameters."""
    return _create(_args("transformer", 512, 24, 8, 3.0), kwargs)

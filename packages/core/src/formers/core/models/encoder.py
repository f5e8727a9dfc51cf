"""A generic transformer encoder stack and a registered sequence classifier built on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from formers.core.layers import LayerType, LearnedPositionalEmbedding, TransformerBlock, get_norm_layer, init_weights
from formers.core.layers._checks import check_key_padding_mask
from formers.core.models.base import FormersModel, check_input
from formers.core.registry import register_model

__all__ = ["TransformerEncoder", "TransformerClassifier", "transformer_classifier"]


class TransformerEncoder(nn.Module):
    """A stack of :class:`~formers.core.layers.TransformerBlock` (Vaswani et al. 2017, encoder).

    Stochastic depth grows linearly from 0 in the first block to ``drop_path_rate`` in the last (as in timm).
    Pre-norm stacks end with a final norm; post-norm stacks already end normalised and have none.

    Args:
        dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        drop_path_rate: stochastic depth rate of the last block.
        norm_first: pre-norm (``True``) or post-norm (``False``) blocks.
        norm_layer: norm name or constructor.
        **block_kwargs: the other :class:`~formers.core.layers.TransformerBlock` arguments (``mlp_layer``,
            ``qkv_bias``, ``qk_norm``, ``proj_drop``, ``attn_drop``, ``layer_scale_init``, ``act_layer``, ``backend``).

    Shapes:
        - x: ``(batch, length, dim)``
        - attn_bias: float, broadcastable to ``(batch, num_heads, length, length)``
        - key_padding_mask: bool ``(batch, length)``, ``True`` = padding
        - output: ``(batch, length, dim)``
        - packed (``cu_seqlens`` given): x and output ``(total_tokens, dim)``, cu_seqlens int ``(batch + 1,)``
          (build them with :func:`formers.core.varlen.pack`)
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        norm_first: bool = True,
        norm_layer: LayerType = "layernorm",
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth).tolist()  # timm's schedule: 0 in the first block
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                drop_path=rate,
                norm_first=norm_first,
                norm_layer=norm_layer,
                **block_kwargs,
            )
            for rate in rates
        )
        self.norm = get_norm_layer(norm_layer)(dim) if norm_first else nn.Identity()

    def forward(
        self,
        x: Tensor,
        *,
        attn_bias: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
    ) -> Tensor:
        packed = {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens, "max_seqlen": max_seqlen}
        for block in self.blocks:
            x = block(x, attn_bias=attn_bias, key_padding_mask=key_padding_mask, causal=causal, **packed)
        return self.norm(x)


class TransformerClassifier(FormersModel):
    """Classify token sequences: embedding + learned positions + transformer encoder + pooling + linear head.

    With ``pool="cls"`` a learned [CLS] token is prepended (BERT, ViT) and its final state is classified; with
    ``pool="mean"`` there is no [CLS] token and the states of the non-padding tokens are averaged. Post-norm models
    (``norm_first=False``, BERT) normalise the embeddings before the encoder; pre-norm models normalise its output.

    Args:
        vocab_size: number of token ids.
        num_classes: number of output logits.
        max_len: the longest input sequence (without the [CLS] token).
        dim: token width.
        depth: encoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout on the embeddings, attention probabilities, residual branches and before the head.
        drop_path_rate: stochastic depth rate of the last block.
        pool: ``"cls"`` or ``"mean"``.
        norm_first: pre-norm (``True``) or post-norm (``False``).
        mlp_layer: ``"mlp"``, ``"geglu"``, ``"swiglu"``... (see :func:`formers.core.layers.get_mlp_layer`).
        act_layer: MLP activation (``None``: the MLP's default).
        norm_layer: norm name or constructor.
        backend: attention backend name.

    Shapes:
        - tokens: int64 ``(batch, length)`` with ``length <= max_len``
        - key_padding_mask: bool ``(batch, length)``, ``True`` = padding token (ignored by attention and pooling)
        - output: logits ``(batch, num_classes)``
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int = 512,
        dim: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        drop_path_rate: float = 0.0,
        pool: Literal["cls", "mean"] = "cls",
        norm_first: bool = True,
        mlp_layer: str | Callable[..., nn.Module] = "mlp",
        act_layer: LayerType | None = None,
        norm_layer: LayerType = "layernorm",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"TransformerClassifier: pool must be 'cls' or 'mean', got {pool!r}")
        self.vocab_size, self.num_classes, self.max_len, self.pool = vocab_size, num_classes, max_len, pool
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = LearnedPositionalEmbedding(max_len + self.num_prefix_tokens, dim)
        self.embed_norm = get_norm_layer(norm_layer)(dim) if not norm_first else nn.Identity()
        self.embed_drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            dim,
            depth,
            num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            norm_first=norm_first,
            norm_layer=norm_layer,
            mlp_layer=mlp_layer,
            act_layer=act_layer,
            proj_drop=dropout,
            attn_drop=dropout,
            backend=backend,
        )
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.apply(init_weights)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)  # as timm's ViT

    def forward(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = self.forward_features(tokens, key_padding_mask)
        return self.forward_head(x, key_padding_mask)

    def forward_features(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Encoded states ``(batch, num_prefix_tokens + length, dim)``."""
        self._check_inputs(tokens, key_padding_mask)
        x = self.tok_embed(tokens)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            if key_padding_mask is not None:
                key_padding_mask = nn.functional.pad(key_padding_mask, (1, 0), value=False)
        x = self.embed_drop(self.embed_norm(self.pos_embed(x)))
        return self.encoder(x, key_padding_mask=key_padding_mask)

    def forward_head(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Pool the encoded states and classify them: ``(batch, num_classes)``."""
        if self.pool == "cls":
            pooled = x[:, 0]
        elif key_padding_mask is None:
            pooled = x.mean(dim=1)
        else:
            keep = (~key_padding_mask).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # an all-padding row pools to zeros
        return self.head(self.head_drop(pooled))

    def _check_inputs(self, tokens: Tensor, key_padding_mask: Tensor | None) -> None:
        check_input("tokens", tokens, ndim=2, floating=False, dims="(batch, length)")
        if tokens.dtype == torch.bool:
            raise TypeError("tokens must be an integer tensor (token ids), got torch.bool")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens has length {tokens.shape[1]} > max_len={self.max_len} of this model")
        if key_padding_mask is None:
            return
        check_key_padding_mask(type(self).__name__, key_padding_mask, tuple(tokens.shape), tokens.device)

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        """Random tokens of length ``max_len``; sample ``i`` has its last ``i % max_len`` tokens marked as padding."""
        tokens = torch.randint(0, self.vocab_size, (batch_size, self.max_len), device=self.device)
        lengths = self.max_len - torch.arange(batch_size, device=self.device) % self.max_len
        key_padding_mask = torch.arange(self.max_len, device=self.device) >= lengths[:, None]
        return {"tokens": tokens, "key_padding_mask": key_padding_mask}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes)


@register_model(
    domain="core",
    paper="Vaswani et al. 2017, Attention Is All You Need (encoder); BERT-style classification head",
    test_kwargs={"vocab_size": 50, "num_classes": 3, "max_len": 12, "dim": 32, "depth": 2, "num_heads": 4},
)
def transformer_classifier(**kwargs: Any) -> TransformerClassifier:
    """A :class:`TransformerClassifier`; needs ``vocab_size`` and ``num_classes``, other arguments have defaults."""
    return TransformerClassifier(**kwargs)

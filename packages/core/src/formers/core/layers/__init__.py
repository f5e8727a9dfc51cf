"""Transformer building blocks shared by every formers domain (timm-style ``layers`` package, no timm dependency).

Each layer documents its tensor layout in a ``Shapes:`` section. Token tensors are ``(batch, length, dim)``;
attention masks follow :mod:`formers.kernels.masks` (float ``attn_bias``, bool ``key_padding_mask`` with
``True`` = padding, bottom-right ``causal``).
"""

from formers.core.layers._checks import resolve_head_dim
from formers.core.layers.attention import MultiHeadAttention
from formers.core.layers.axial_attention import AxialAttention1d, AxialAttention2d
from formers.core.layers.block import CrossAttentionBlock, TransformerBlock
from formers.core.layers.create import LayerType, create_act, create_norm, get_act_layer, get_norm_layer
from formers.core.layers.drop import Dropout, DropPath, LayerScale, drop_path
from formers.core.layers.embed import (
    LearnedPositionalEmbedding,
    PatchEmbed,
    SinusoidalPositionalEmbedding,
    sinusoidal_embedding,
    sinusoidal_embedding_2d,
)
from formers.core.layers.kv_cache import KVCache
from formers.core.layers.linear_attention import HeadLayerNorm, LinearAttention
from formers.core.layers.mlp import GEGLU, GluMlp, Mlp, SwiGLU, get_mlp_layer
from formers.core.layers.performer import PerformerAttention as PerformerAttention  # T2T-style FAVOR+
from formers.core.layers.weight_init import init_weights
from formers.core.layers.window_attention import ShiftedWindowAttention2d, WindowAttention, WindowAttention1d

__all__ = [
    "MultiHeadAttention",
    "AxialAttention1d",
    "AxialAttention2d",
    "LinearAttention",
    "HeadLayerNorm",
    "WindowAttention",
    "ShiftedWindowAttention2d",
    "WindowAttention1d",
    "TransformerBlock",
    "CrossAttentionBlock",
    "KVCache",
    "Mlp",
    "GluMlp",
    "GEGLU",
    "SwiGLU",
    "get_mlp_layer",
    "Dropout",
    "DropPath",
    "drop_path",
    "LayerScale",
    "PatchEmbed",
    "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding",
    "sinusoidal_embedding",
    "sinusoidal_embedding_2d",
    "LayerType",
    "get_act_layer",
    "create_act",
    "get_norm_layer",
    "create_norm",
    "init_weights",
    "resolve_head_dim",
]

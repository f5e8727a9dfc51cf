"""Attention through ``torch.nn.functional.scaled_dot_product_attention`` (fused flash / memory-efficient kernels
on CPU and CUDA when the call allows them, its math path otherwise)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from formers.kernels.masks import combined_bias

__all__ = ["sdpa_attention"]


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    len_q, len_k = q.shape[-2], k.shape[-2]
    if attn_bias is None and key_padding_mask is None and (not causal or len_q == len_k):
        # No explicit mask keeps torch on its fastest kernels (flash on CPU, flash/mem-efficient on CUDA).
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
    bias = combined_bias(attn_bias, causal, key_padding_mask, len_q, len_k, q.dtype, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)

"""Attention through xformers' ``memory_efficient_attention`` (CUDA only: xformers ships no CPU kernels)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from formers.kernels.masks import combined_bias

__all__ = ["xformers_attention", "xformers_unavailable_reason"]


@functools.cache
def xformers_unavailable_reason() -> str | None:
    """``None`` when xformers' fused attention can run here, else why not."""
    try:
        import xformers.ops  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the install
        return f"xformers is not installed ({err})"
    if not torch.cuda.is_available():
        return "xformers has no CPU attention kernels and CUDA is not available"
    return None


def _aligned_bias(bias: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    """xformers wants a dense (B, H, Lq, Lk) bias whose rows start on 16-byte boundaries: pad Lk, then slice."""
    len_k = shape[-1]
    padded = (len_k + 7) // 8 * 8
    storage = bias.new_empty(*shape[:-1], padded)
    storage[..., :len_k] = bias.expand(shape)
    return storage[..., :len_k]


def xformers_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    from xformers.ops import fmha

    batch, heads, len_q, _ = q.shape
    len_k = k.shape[-2]
    if attn_bias is None and key_padding_mask is None:
        bias = fmha.attn_bias.LowerTriangularFromBottomRightMask() if causal else None
    else:
        dense = combined_bias(attn_bias, causal, key_padding_mask, len_q, len_k, q.dtype, q.device)
        bias = _aligned_bias(dense, (batch, heads, len_q, len_k))
    # xformers uses (batch, len, heads, head_dim)
    out = fmha.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p, scale=scale
    )
    return out.transpose(1, 2)

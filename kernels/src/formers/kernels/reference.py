"""Plain-math attention: the oracle every faster kernel is tested against.

``softmax(q kᵀ · scale + bias) v`` written out with matmuls, computed in float32 (float64 stays float64) whatever
the input dtype. Slow and memory-hungry (it materialises the full score matrix) by design: it must be obviously
right.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from formers.kernels.masks import causal_keep_mask

__all__ = ["reference_attention"]


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Attention on ``(batch, heads, len, head_dim)`` tensors; see :mod:`formers.kernels.masks` for mask rules."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-2, -1)) * scale
    if attn_bias is not None:
        scores = scores + attn_bias.to(acc)
    if causal:
        scores = scores.masked_fill(~causal_keep_mask(len_q, len_k, q.device), float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # A query that sees no key gets zeros (softmax of an all -inf row is NaN).
    probs = probs.masked_fill(torch.isneginf(scores.amax(dim=-1, keepdim=True)), 0.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v.to(acc)).to(v.dtype)

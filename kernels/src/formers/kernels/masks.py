"""Mask helpers shared by the attention kernels.

Conventions (the same for every kernel):

* ``attn_bias``: floating, broadcastable to ``(batch, heads, len_q, len_k)``, added to the scaled scores;
  ``-inf`` entries remove a key.
* ``causal``: query ``i`` sees key ``j`` iff ``j <= i + (len_k - len_q)`` (aligned to the bottom right, as in
  FlashAttention and xformers), which is the usual lower triangle when ``len_q == len_k`` and the right rule for
  decoding with a key/value cache.
* ``key_padding_mask``: bool ``(batch, len_k)``, ``True`` marks a padding key to ignore (``nn.MultiheadAttention``'s
  convention).
* A query row with no visible key returns zeros (what torch's SDPA returns), never NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causal_keep_mask", "combined_bias", "check_key_padding_mask"]


def causal_keep_mask(len_q: int, len_k: int, device: torch.device | None = None) -> Tensor:
    """Bool ``(len_q, len_k)``: ``True`` where a query may attend to a key (bottom-right aligned)."""
    rows = torch.arange(len_q, device=device).unsqueeze(1)
    cols = torch.arange(len_k, device=device).unsqueeze(0)
    return cols <= rows + (len_k - len_q)


def combined_bias(
    attn_bias: Tensor | None,
    causal: bool,
    key_padding_mask: Tensor | None,
    len_q: int,
    len_k: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """Fold a bias, the causal rule and key padding into one additive float bias (``None`` when all are absent).

    The result broadcasts to ``(batch, heads, len_q, len_k)``; it is only materialised as large as its inputs need.
    """
    bias = attn_bias.to(dtype) if attn_bias is not None else None
    if causal:
        causal_bias = torch.zeros(len_q, len_k, dtype=dtype, device=device)
        causal_bias.masked_fill_(~causal_keep_mask(len_q, len_k, device), float("-inf"))
        bias = causal_bias if bias is None else bias + causal_bias
    if key_padding_mask is not None:
        pad_bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=device)
        pad_bias = pad_bias.masked_fill_(key_padding_mask, float("-inf"))[:, None, None, :]
        bias = pad_bias if bias is None else bias + pad_bias
    return bias


def check_key_padding_mask(
    owner: str, mask: object, shape: tuple[int, int], device: torch.device | None = None
) -> None:
    """The one check of a ``key_padding_mask`` argument, with one message style for every caller.

    Raises ``TypeError`` unless ``mask`` is a ``torch.bool`` tensor, ``ValueError`` unless its shape is ``shape``
    (``(batch, len_k)``) and, when ``device`` is given, unless it lives there. Messages start with ``owner``.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"{owner}: key_padding_mask must be a torch.bool tensor (True = padding), got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"{owner}: key_padding_mask must be a torch.bool tensor (True = padding), got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{owner}: key_padding_mask shape {tuple(mask.shape)} does not match (batch, len_k) = {tuple(shape)}"
        )
    if device is not None and mask.device != device:
        raise ValueError(f"{owner}: key_padding_mask is on {mask.device} but the inputs are on {device}")

"""The two kernel signatures every attention kernel of :mod:`formers.kernels` implements.

A dense kernel (:class:`DenseKernel`) attends padded ``(batch, heads, len, head_dim)`` tensors; a varlen kernel
(:class:`VarlenKernel`) attends packed ``(total_tokens, heads, head_dim)`` tensors block-diagonally over the sequences
of ``cu_seqlens`` (layout in :mod:`formers.kernels.varlen`). Mask rules are those of :mod:`formers.kernels.masks`.
Kernels do not validate their inputs: :func:`formers.core.attention.attention` and
:func:`formers.core.varlen.varlen_attention` do, then call a kernel through the backend registry of
:mod:`formers.core.attention.backends`.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

__all__ = ["DenseKernel", "VarlenKernel"]


class DenseKernel(Protocol):
    """``(q, k, v, attn_bias, causal, key_padding_mask, dropout_p, scale) -> out``.

    Shapes:
        - q: ``(batch, heads, len_q, head_dim)``; k: ``(batch, heads, len_k, head_dim)``;
          v: ``(batch, heads, len_k, head_dim_v)``
        - attn_bias: float, broadcastable to ``(batch, heads, len_q, len_k)``
        - key_padding_mask: bool ``(batch, len_k)``, ``True`` = padding key
        - output: ``(batch, heads, len_q, head_dim_v)``; a query that sees no key yields zeros
    """

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attn_bias: Tensor | None = None,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        dropout_p: float = 0.0,
        scale: float | None = None,
    ) -> Tensor: ...


class VarlenKernel(Protocol):
    """``(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, dropout_p, attn_bias) -> out`` on packed sequences.

    ``attn_bias`` is an optional packed per-sequence additive bias: for each sequence ``i`` a row-major ``(len_q_i,
    len_k_i)`` block per head, the blocks concatenated in sequence order. Only kernels that declare support for it
    receive one (the core dispatch refuses the call for the others: ``AttentionBackend.varlen_bias``).

    Shapes:
        - q: ``(total_q, heads, head_dim)``; k: ``(total_k, heads, head_dim)``; v: ``(total_k, heads, head_dim_v)``
        - cu_seqlens_q, cu_seqlens_k: integer ``(batch + 1,)``
        - attn_bias: float ``(heads, sum_i len_q_i * len_k_i)``
        - output: ``(total_q, heads, head_dim_v)``; a query that sees no key yields zeros
    """

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cu_seqlens_q: Tensor,
        cu_seqlens_k: Tensor,
        causal: bool = False,
        scale: float | None = None,
        dropout_p: float = 0.0,
        attn_bias: Tensor | None = None,
    ) -> Tensor: ...

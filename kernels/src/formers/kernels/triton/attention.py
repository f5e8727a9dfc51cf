"""Fused attention in Triton: forward and backward, additive per-head bias, key padding, causal, varlen.

FlashAttention-2-style: one program per block of queries streams the keys with an online softmax whose statistics
(running max, sum, log-sum-exp) are fp32 whatever the input dtype; the score matrix is never materialised. The
backward is Triton too (one kernel for dK/dV per key block, one for dQ per query block, recomputing the
probabilities from the saved log-sum-exp); ``delta = rowsum(dO * O)`` is one torch reduction. When the bias needs a
gradient, the backward also writes the full fp32 ``dS`` ``(batch, heads, len_q, len_k)`` and sums it over the bias's
broadcast dims (O(L²) memory, only in that case). No dropout.

Masks follow :mod:`formers.kernels.masks`: bias added to the scaled scores, causal bottom-right aligned, padding
keys ignored, a query that sees no key returns zeros (and gets zero gradients).

Shapes:
    - dense: q ``(batch, heads, len_q, head_dim)``; k, v ``(batch, heads, len_k, head_dim)``;
      attn_bias broadcastable to ``(batch, heads, len_q, len_k)``; key_padding_mask bool ``(batch, len_k)``
    - varlen: q ``(total_q, heads, head_dim)``; k, v ``(total_k, heads, head_dim)``; cu_seqlens ``(batch + 1,)``;
      attn_bias broadcastable to ``(batch, heads, max_seqlen_q, max_seqlen_k)``, indexed by positions inside each
      sequence (e.g. a relative-position or ALiBi bias per head)

Tensors must be on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (tests). Inputs are not validated here; the core
dispatch (:func:`formers.core.attention.attention`, :func:`formers.core.varlen.varlen_attention`) does that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["triton_attention", "triton_varlen_attention"]


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _blocks(head_dim: int, head_dim_v: int, device: torch.device) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV): 64 x 64 tiles on CUDA (32 keys for wide heads), 16 x 16 in the CPU
    interpreter (speed of the tests)."""
    block_d, block_dv = _pow2(head_dim), _pow2(head_dim_v)
    if device.type != "cuda":
        return 16, 16, block_d, block_dv
    return (64, 64 if max(block_d, block_dv) <= 64 else 32, block_d, block_dv)


def _pow2_blocks(length: int, block: int) -> int:
    """Blocks to cover ``length``, rounded up to a power of two (the constexpr loop bound; few variants compile)."""
    n = max(1, math.ceil(length / block))
    return 1 << (n - 1).bit_length()


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    # fp32 inputs get exact fp32 dot products (no TF32) so the kernel matches the reference; bf16/fp16 use the
    # tensor cores with fp32 accumulation either way. The CPU interpreter gets bf16/fp16 dots wrong: upcast there.
    if dtype == torch.float32:
        return "ieee"
    return "tf32" if device.type == "cuda" else "upcast"


def _last_dim_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, kpm, cu_q, cu_k, max_q, max_k, causal, scale):
        from formers.kernels.triton import _attention_kernels as K

        varlen = cu_q is not None
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        if varlen:
            heads, head_dim = q.shape[1], q.shape[2]
            batch, len_q, len_k = cu_q.numel() - 1, max_q, max_k
            out = torch.empty(q.shape[0], heads, v.shape[2], dtype=q.dtype, device=q.device)
            lse = torch.empty(heads, q.shape[0], dtype=torch.float32, device=q.device)
            lse_strides = (0, lse.stride(0))
            qs, ks, vs, os_ = ((0, t.stride(1), t.stride(0)) for t in (q, k, v, out))
        else:
            batch, heads, len_q, head_dim = q.shape
            len_k = k.shape[2]
            out = torch.empty(batch, heads, len_q, v.shape[3], dtype=q.dtype, device=q.device)
            lse = torch.empty(batch, heads, len_q, dtype=torch.float32, device=q.device)
            lse_strides = (lse.stride(0), lse.stride(1))
            qs, ks, vs, os_ = ((t.stride(0), t.stride(1), t.stride(2)) for t in (q, k, v, out))
        bias_e = bias.expand(batch, heads, len_q, len_k) if bias is not None else None
        bias_strides = bias_e.stride() if bias_e is not None else (0, 0, 0, 0)
        kpm_u8 = kpm.view(torch.uint8) if kpm is not None else None
        block_m, block_n, block_d, block_dv = _blocks(head_dim, v.shape[-1], q.device)
        dummy = q.new_empty(1)
        cu_dummy = torch.zeros(2, dtype=torch.int32, device=q.device)
        grid = (math.ceil(max(len_q, 1) / block_m), batch * heads)
        K.attn_fwd_kernel[grid](
            q, k, v, out, lse,
            bias_e if bias_e is not None else dummy,
            kpm_u8 if kpm_u8 is not None else dummy,
            cu_q if varlen else cu_dummy, cu_k if varlen else cu_dummy,
            *qs, *ks, *vs, *os_, *lse_strides, *bias_strides,
            kpm_u8.stride(0) if kpm_u8 is not None else 0,
            heads, len_q, len_k, head_dim, v.shape[-1], scale,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
            N_BLOCKS=_pow2_blocks(len_k, block_n),
            VARLEN=varlen, HAS_BIAS=bias is not None, HAS_KPM=kpm is not None, CAUSAL=causal,
            PRECISION=_precision(q.dtype, q.device),
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, lse, bias, kpm, cu_q, cu_k)
        ctx.meta = (varlen, batch, heads, len_q, len_k, head_dim, causal, scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        from formers.kernels.triton import _attention_kernels as K

        q, k, v, out, lse, bias, kpm, cu_q, cu_k = ctx.saved_tensors
        varlen, batch, heads, len_q, len_k, head_dim, causal, scale = ctx.meta
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # dq/dk/dv share their strides
        dout = dout.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        delta = (dout.float() * out.float()).sum(-1)  # (total, heads) or (batch, heads, len_q)
        if varlen:
            delta = delta.transpose(0, 1).contiguous()
            lse_strides = (0, lse.stride(0))
            qs, ks, vs, dos = ((0, t.stride(1), t.stride(0)) for t in (q, k, v, dout))
        else:
            lse_strides = (lse.stride(0), lse.stride(1))
            qs, ks, vs, dos = ((t.stride(0), t.stride(1), t.stride(2)) for t in (q, k, v, dout))
        bias_e = bias.expand(batch, heads, len_q, len_k) if bias is not None else None
        bias_strides = bias_e.stride() if bias_e is not None else (0, 0, 0, 0)
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros(batch, heads, len_q, len_k, dtype=torch.float32, device=q.device) if bias_grad else None
        dbias_strides = dbias.stride()[:3] if dbias is not None else (0, 0, 0)
        kpm_u8 = kpm.view(torch.uint8) if kpm is not None else None
        block_m, block_n, block_d, block_dv = _blocks(head_dim, v.shape[-1], q.device)
        dummy = q.new_empty(1)
        cu_dummy = torch.zeros(2, dtype=torch.int32, device=q.device)
        common = dict(
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv, VARLEN=varlen,
            HAS_BIAS=bias is not None, HAS_KPM=kpm is not None, CAUSAL=causal, PRECISION=_precision(q.dtype, q.device),
        )  # fmt: skip
        masks = (
            bias_e if bias_e is not None else dummy,
            kpm_u8 if kpm_u8 is not None else dummy,
            cu_q if varlen else cu_dummy,
            cu_k if varlen else cu_dummy,
        )
        K.attn_bwd_dkdv_kernel[(math.ceil(max(len_k, 1) / block_n), batch * heads)](
            q, k, v, dout, lse, delta, *masks, dk, dv, dbias if dbias is not None else dummy,
            *qs, *ks, *vs, *dos, *lse_strides, *bias_strides,
            kpm_u8.stride(0) if kpm_u8 is not None else 0, *dbias_strides,
            heads, len_q, len_k, head_dim, v.shape[-1], scale,
            M_BLOCKS=_pow2_blocks(len_q, block_m), BIAS_GRAD=bias_grad, **common,
        )  # fmt: skip
        K.attn_bwd_dq_kernel[(math.ceil(max(len_q, 1) / block_m), batch * heads)](
            q, k, v, dout, lse, delta, *masks, dq,
            *qs, *ks, *vs, *dos, *lse_strides, *bias_strides,
            kpm_u8.stride(0) if kpm_u8 is not None else 0,
            heads, len_q, len_k, head_dim, v.shape[-1], scale,
            N_BLOCKS=_pow2_blocks(len_k, block_n), **common,
        )  # fmt: skip
        dbias_out = dbias.sum_to_size(bias.shape).to(bias.dtype) if bias_grad else None
        return dq, dk, dv, dbias_out, None, None, None, None, None, None, None


def triton_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Fused attention on ``(batch, heads, len, head_dim)`` tensors (the core backend's kernel signature)."""
    if dropout_p > 0.0:
        raise NotImplementedError("triton_attention: dropout is not implemented")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return _Attention.apply(q, k, v, attn_bias, key_padding_mask, None, None, None, None, causal, scale)


def triton_varlen_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    attn_bias: Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
) -> Tensor:
    """Fused block-diagonal attention over packed sequences (signature of the kernels in :mod:`formers.kernels.varlen`).

    ``max_seqlen_*`` default to the longest sequence (one host sync); pass them to avoid it.
    """
    if dropout_p > 0.0:
        raise NotImplementedError("triton_varlen_attention: dropout is not implemented")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max()) if cu_seqlens_q.numel() > 1 else 0
    if max_seqlen_k is None:
        max_seqlen_k = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max()) if cu_seqlens_k.numel() > 1 else 0
    return _Attention.apply(
        q, k, v, attn_bias, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale
    )

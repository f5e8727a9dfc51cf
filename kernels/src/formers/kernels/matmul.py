"""Matmul-softmax-matmul attention with an explicit backward, for CPU training (any float dtype).

Two CPU training cases where it beats torch's SDPA, so ``auto`` picks it there:

* **bf16** (backend ``cpu_bf16``): torch's fused SDPA (flash) kernel gains little from bf16 on CPU - measured at
  L=600, 8 heads, d=64, 1 thread: forward 1.2x over fp32, forward+backward **0.86x** (slower than fp32) - while bf16
  matmuls run ~4x faster than fp32 ones. Written as matmul-softmax-matmul with an explicit backward, bf16 attention
  forward+backward took 44 ms vs 83 ms for SDPA in fp32 and 96 ms for SDPA in bf16 (same shapes, interleaved
  minimums on the shared 2-core machine). Only where bf16 is native (AVX512-BF16 / AMX): on an AVX2-only CPU bf16
  matmuls are emulated (~60x slower than fp32), so ``auto`` computes bf16 attention in fp32 there
  (:func:`formers.core.machine.native_bf16`).
* **a bias that needs a gradient** (backend ``cpu_matmul``, e.g. Swin's relative position bias): SDPA cannot use its
  fused kernel then and runs its unfused math path, whose "safe softmax" adds an ``all`` reduction and a ``where`` over
  the scores. Swin-T stage-1 window shapes (``benchmarks/attention.py --batch 512 --heads 3 --length 49 --head-dim 32
  --cases learned_bias``, fp32, 1 thread), forward+backward: 68 ms vs 86 ms for SDPA (1.25x) and 78 ms naive.

Numerics: ``q kᵀ`` and ``p v`` are matmuls in the input dtype (fp32 accumulation for bf16, as every autocast matmul);
the bias is added in that dtype (masks are 0 / ``-inf``, exact); the softmax's row max and sum of exponentials are
fp32 (inside torch's CPU softmax kernel). A query that sees no key gets zero probabilities, saved as such, so its
backward is zero too (no NaN). The backward's ``rowsum(dP * P)`` is fp32. Memory: the probabilities ``(batch, heads,
len_q, len_k)`` are saved for the backward (use it per sequence for varlen batches, as :mod:`formers.kernels.varlen`
does). No dropout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from formers.kernels.masks import combined_bias

__all__ = ["matmul_attention"]


class _MatmulAttention(torch.autograd.Function):
    # torch's CPU softmax and softmax-backward kernels take bf16 tensors and compute in fp32 inside (row max, sum of
    # exponentials, sum(dP * P)): one pass each over the (len_q, len_k) tiles, 8x / 20x faster measured than
    # upcasting to fp32 tensors first (L=600, 8 heads, 1 thread).
    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        with torch.autocast("cpu", enabled=False):
            scores = torch.matmul(q * scale, k.transpose(-2, -1))  # in the input dtype
            if bias is not None:
                scores = scores + bias.to(scores.dtype)  # masks are 0 / -inf: exact in bf16 too
            probs = torch.softmax(scores, dim=-1)
            if bias is not None:
                probs = probs.nan_to_num_(0.0)  # a query that sees no key (all -inf): zeros, not NaN
            out = torch.matmul(probs, v)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale = scale
        ctx.bias_meta = None if bias is None else (bias.shape, bias.dtype)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, probs = ctx.saved_tensors
        scale = ctx.scale
        with torch.autocast("cpu", enabled=False):
            dout = dout.to(v.dtype)
            dv = torch.matmul(probs.transpose(-2, -1), dout)
            dp = torch.matmul(dout, v.transpose(-2, -1))
            ds = torch._softmax_backward_data(dp, probs, -1, probs.dtype)  # P * (dP - rowsum(dP * P)), fp32 inside
            dq = torch.matmul(ds, k).mul_(scale)
            dk = torch.matmul(ds.transpose(-2, -1), q).mul_(scale)
        dbias = None
        if ctx.bias_meta is not None and ctx.needs_input_grad[3]:
            shape, dtype = ctx.bias_meta
            dbias = ds.float().sum_to_size(shape).to(dtype)
        return dq, dk, dv, dbias, None


def matmul_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Attention on ``(batch, heads, len, head_dim)`` float tensors (the dense kernel signature of
    :mod:`formers.kernels`); masks as in :mod:`formers.kernels.masks`; returns ``(batch, heads, len_q, dv)`` in the
    dtype of the inputs."""
    if dropout_p > 0.0:
        raise NotImplementedError("matmul_attention: dropout is not implemented")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    len_q, len_k = q.shape[-2], k.shape[-2]
    # additive bias in fp32 (or the inputs' wider dtype); autograd carries its gradient back to attn_bias through the
    # folding ops
    bias_dtype = torch.promote_types(q.dtype, torch.float32)
    bias = combined_bias(attn_bias, causal, key_padding_mask, len_q, len_k, bias_dtype, q.device)
    return _MatmulAttention.apply(q, k, v, bias, scale)

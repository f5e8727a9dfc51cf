"""Fused small ops in Triton (forward and backward): residual add + LayerNorm / RMSNorm, bias + GELU, masked softmax.

Each is a :class:`torch.autograd.Function` with Triton forward and backward kernels; parameter gradients (norm
weight and bias, GELU bias, a learnable mask) are reduced over rows with a torch ``sum`` of per-program partials.
Inputs are made contiguous; statistics are fp32 and outputs keep the input dtype.

Tensors must be on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (tests). :mod:`formers.core.layers.fused`
validates inputs and dispatches to these on CUDA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["triton_add_norm", "triton_bias_gelu", "triton_masked_softmax"]


def _block(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


# ------------------------------------------------------------------------------------- residual add + LayerNorm/RMS


class _AddNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps, rms, return_sum):
        from formers.kernels.triton import _small_kernels as K

        shape, n = x.shape, x.shape[-1]
        x2 = x.reshape(-1, n).contiguous()
        res2 = residual.reshape(-1, n).contiguous() if residual is not None else None
        rows = x2.shape[0]
        y = torch.empty_like(x2)
        # The sum is what the backward normalises again; store it whenever there is a residual.
        total = torch.empty_like(x2) if res2 is not None else x2
        mean = torch.empty(rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        dummy = x2.new_empty(1)
        K.add_norm_fwd_kernel[(rows,)](
            x2, res2 if res2 is not None else dummy,
            weight if weight is not None else dummy, bias if bias is not None else dummy,
            y, total, mean, rstd, n, eps,
            BLOCK_N=_block(n), HAS_RES=res2 is not None, HAS_W=weight is not None, HAS_B=bias is not None,
            RMS=rms, STORE_SUM=res2 is not None,
        )  # fmt: skip
        ctx.save_for_backward(total, weight, bias, mean, rstd)
        ctx.meta = (shape, rms, residual is not None)
        y = y.reshape(shape)
        if return_sum:
            return y, total.reshape(shape)
        return y

    @staticmethod
    def backward(ctx, dy, dsum=None):
        from formers.kernels.triton import _small_kernels as K

        total, weight, bias, mean, rstd = ctx.saved_tensors
        shape, rms, has_res = ctx.meta
        rows, n = total.shape
        dy2 = dy.reshape(rows, n).contiguous()
        dsum2 = dsum.reshape(rows, n).contiguous() if dsum is not None else None
        dx = torch.empty_like(total)
        param_grad = (weight is not None and ctx.needs_input_grad[2]) or (bias is not None and ctx.needs_input_grad[3])
        rows_per_prog = 16 if total.device.type == "cuda" else 4
        progs = math.ceil(rows / rows_per_prog)
        dw_part = torch.empty(progs if param_grad else 1, n, dtype=torch.float32, device=total.device)
        db_part = torch.empty_like(dw_part)
        dummy = total.new_empty(1)
        K.add_norm_bwd_kernel[(progs,)](
            total, weight if weight is not None else dummy, dy2, dsum2 if dsum2 is not None else dummy,
            mean, rstd, dx, dw_part, db_part, rows, n,
            BLOCK_N=_block(n), ROWS=rows_per_prog, HAS_W=weight is not None, HAS_DSUM=dsum2 is not None,
            RMS=rms, PARAM_GRAD=param_grad,
        )  # fmt: skip
        dw = dw_part.sum(0).to(weight.dtype) if param_grad and weight is not None else None
        db = db_part.sum(0).to(bias.dtype) if param_grad and bias is not None else None
        dx = dx.reshape(shape)
        return dx, (dx if has_res else None), dw, db, None, None, None


def triton_add_norm(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float = 1e-5,
    rms: bool = False,
    return_sum: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """``s = x + residual``; ``y = LayerNorm(s)`` (``rms=True``: RMSNorm, no centring, no bias) over the last dim.

    Returns ``(y, s)`` (``s`` feeds the next residual branch in a pre-norm stack) or ``y`` if ``return_sum=False``.

    Shapes:
        - x, residual: ``(..., N)``; weight, bias: ``(N,)``; y, s: ``(..., N)``
    """
    if residual is None:
        y = _AddNorm.apply(x, None, weight, bias, eps, rms, False)
        return (y, x) if return_sum else y
    return _AddNorm.apply(x, residual, weight, bias, eps, rms, return_sum)


# ----------------------------------------------------------------------------------------------------- bias + GELU


class _BiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, approximate):
        from formers.kernels.triton import _small_kernels as K

        x = x.contiguous()
        y = torch.empty_like(x)
        n, numel = x.shape[-1], x.numel()
        block = 1024
        K.bias_gelu_fwd_kernel[(math.ceil(numel / block),)](
            x, bias if bias is not None else x, y, numel, n,
            BLOCK=block, HAS_BIAS=bias is not None, APPROX=approximate == "tanh",
        )  # fmt: skip
        ctx.save_for_backward(x, bias)
        ctx.approx = approximate == "tanh"
        return y

    @staticmethod
    def backward(ctx, dy):
        from formers.kernels.triton import _small_kernels as K

        x, bias = ctx.saved_tensors
        dy = dy.contiguous()
        dx = torch.empty_like(x)
        n, numel = x.shape[-1], x.numel()
        block = 1024
        K.bias_gelu_bwd_kernel[(math.ceil(numel / block),)](
            x, bias if bias is not None else x, dy, dx, numel, n,
            BLOCK=block, HAS_BIAS=bias is not None, APPROX=ctx.approx,
        )  # fmt: skip
        dbias = (
            dx.reshape(-1, n).float().sum(0).to(bias.dtype) if bias is not None and ctx.needs_input_grad[1] else None
        )
        return dx, dbias, None


def triton_bias_gelu(x: Tensor, bias: Tensor | None, approximate: str = "none") -> Tensor:
    """``gelu(x + bias)`` (exact erf GELU, or ``approximate="tanh"``); bias broadcast over the last dim.

    Shapes:
        - x: ``(..., N)``; bias: ``(N,)``; output: ``(..., N)``
    """
    return _BiasGelu.apply(x, bias, approximate)


# ---------------------------------------------------------------------------------------- softmax with additive mask


class _MaskedSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mask, scale):
        from formers.kernels.triton import _small_kernels as K

        shape = x.shape
        x4 = x.contiguous().reshape((1,) * (4 - x.dim()) + tuple(shape))
        n = shape[-1]
        y = torch.empty_like(x4)
        if mask is not None:
            m4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).expand(x4.shape)
            mask_strides = m4.stride()
        else:
            m4, mask_strides = x4, (0, 0, 0, 0)
        rows = x4.numel() // max(n, 1)
        K.masked_softmax_fwd_kernel[(rows,)](
            x4, m4, y, n, x4.shape[1], x4.shape[2], *mask_strides, scale,
            BLOCK_N=_block(n), HAS_MASK=mask is not None,
        )  # fmt: skip
        ctx.save_for_backward(y, mask)
        ctx.scale, ctx.shape = scale, shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        from formers.kernels.triton import _small_kernels as K

        y, mask = ctx.saved_tensors
        n = y.shape[-1]
        dy = dy.contiguous().reshape(y.shape)
        dz = torch.empty_like(y)
        K.softmax_bwd_kernel[(y.numel() // max(n, 1),)](y, dy, dz, n, BLOCK_N=_block(n))
        dx = (dz * ctx.scale).reshape(ctx.shape) if ctx.needs_input_grad[0] else None
        dmask = None
        if mask is not None and ctx.needs_input_grad[1]:
            dmask = dz.float().sum_to_size(mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).shape)
            dmask = dmask.reshape(mask.shape).to(mask.dtype)
        return dx, dmask, None


def triton_masked_softmax(x: Tensor, mask: Tensor | None, scale: float = 1.0) -> Tensor:
    """``softmax(x * scale + mask)`` over the last dim; ``mask`` broadcasts to ``x`` (rank <= 4); a row whose entries
    are all ``-inf`` gives zeros.

    Shapes:
        - x: ``(..., N)`` with at most 4 dims; mask: broadcastable to ``x``; output: like ``x``
    """
    return _MaskedSoftmax.apply(x, mask, scale)

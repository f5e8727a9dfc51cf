"""Triton kernels of the fused small ops (imported lazily: importing this module imports triton).

Row kernels handle one row of ``N`` features per program (``BLOCK_N`` = next power of two >= N); the row loops of
the parameter-gradient kernels have ``tl.constexpr`` bounds (Triton's CPU interpreter with numpy >= 2.4 rejects
runtime loop bounds). Statistics (mean, variance, softmax max and sum) are fp32 whatever the input dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

# ------------------------------------------------------------------------------------- residual add + LayerNorm/RMS


@triton.jit
def add_norm_fwd_kernel(
    X,
    RES,
    W,
    B,
    Y,
    SUM,
    MEAN,
    RSTD,
    N,
    eps,
    BLOCK_N: tl.constexpr,
    HAS_RES: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    RMS: tl.constexpr,
    STORE_SUM: tl.constexpr,
):
    """``s = x + res``; ``y = norm(s) * w + b``; rows are contiguous with stride ``N``."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    ok = cols < N
    s = tl.load(X + row * N + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        s += tl.load(RES + row * N + cols, mask=ok, other=0.0).to(tl.float32)
    if STORE_SUM:
        tl.store(SUM + row * N + cols, s.to(SUM.dtype.element_ty), mask=ok)
    if RMS:
        mean = 0.0
        centered = s
    else:
        mean = tl.sum(s, axis=0) / N
        centered = tl.where(ok, s - mean, 0.0)
    var = tl.sum(centered * centered, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    y = centered * rstd
    if HAS_W:
        y = y * tl.load(W + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_B:
        y = y + tl.load(B + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + row * N + cols, y.to(Y.dtype.element_ty), mask=ok)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)


@triton.jit
def add_norm_bwd_kernel(
    SUM,
    W,
    DY,
    DSUM,
    MEAN,
    RSTD,
    DX,
    DW_PART,
    DB_PART,
    M,
    N,
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_DSUM: tl.constexpr,
    RMS: tl.constexpr,
    PARAM_GRAD: tl.constexpr,
):
    """``ds`` of ``ROWS`` rows per program (+ the incoming grad of the returned sum); per-program dW/dB partials."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    ok = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=ok, other=0.0).to(tl.float32)
    else:
        w = tl.where(ok, 1.0, 0.0)
    dw = tl.zeros([BLOCK_N], tl.float32)
    db = tl.zeros([BLOCK_N], tl.float32)
    for i in range(0, ROWS):
        row = pid.to(tl.int64) * ROWS + i
        if row < M:
            s = tl.load(SUM + row * N + cols, mask=ok, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * N + cols, mask=ok, other=0.0).to(tl.float32)
            mean = tl.load(MEAN + row)
            rstd = tl.load(RSTD + row)
            xhat = tl.where(ok, (s - mean) * rstd, 0.0)
            wdy = w * dy
            c1 = tl.sum(xhat * wdy, axis=0) / N
            if RMS:
                ds = (wdy - xhat * c1) * rstd
            else:
                c2 = tl.sum(wdy, axis=0) / N
                ds = (wdy - (xhat * c1 + c2)) * rstd
            if HAS_DSUM:
                ds += tl.load(DSUM + row * N + cols, mask=ok, other=0.0).to(tl.float32)
            tl.store(DX + row * N + cols, ds.to(DX.dtype.element_ty), mask=ok)
            if PARAM_GRAD:
                dw += dy * xhat
                db += dy
    if PARAM_GRAD:
        tl.store(DW_PART + pid * N + cols, dw, mask=ok)
        tl.store(DB_PART + pid * N + cols, db, mask=ok)


# ----------------------------------------------------------------------------------------------------- bias + GELU


@triton.jit
def _gelu_and_grad(x, APPROX: tl.constexpr):
    """GELU(x) and its derivative, fp32. ``APPROX``: the tanh approximation."""
    if APPROX:
        k0 = 0.7978845608028654  # sqrt(2 / pi)
        inner = k0 * (x + 0.044715 * x * x * x)
        t = 2.0 * tl.sigmoid(2.0 * inner) - 1.0  # tanh
        y = 0.5 * x * (1.0 + t)
        dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k0 * (1.0 + 3.0 * 0.044715 * x * x)
    else:
        cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
        y = x * cdf
        dy = cdf + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)
    return y, dy


@triton.jit
def bias_gelu_fwd_kernel(X, BIAS, Y, numel, N, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, APPROX: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    x = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(BIAS + offs % N, mask=ok, other=0.0).to(tl.float32)
    y, _ = _gelu_and_grad(x, APPROX)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=ok)


@triton.jit
def bias_gelu_bwd_kernel(X, BIAS, DY, DX, numel, N, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, APPROX: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    x = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(BIAS + offs % N, mask=ok, other=0.0).to(tl.float32)
    _, grad = _gelu_and_grad(x, APPROX)
    dy = tl.load(DY + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(DX + offs, (dy * grad).to(DX.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------- softmax with additive mask


@triton.jit
def masked_softmax_fwd_kernel(
    X,
    MASK,
    Y,
    N,
    D1,
    D2,
    sm0,
    sm1,
    sm2,
    sm3,
    scale,
    BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr,
):
    """``softmax(x * scale + mask)`` of one row; x is ``(D0, D1, D2, N)`` contiguous, mask strided (broadcast = 0)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    ok = cols < N
    x = tl.load(X + row * N + cols, mask=ok, other=float("-inf")).to(tl.float32) * scale
    if HAS_MASK:
        i0 = row // (D1 * D2)
        i1 = (row // D2) % D1
        i2 = row % D2
        m = tl.load(MASK + i0 * sm0 + i1 * sm1 + i2 * sm2 + cols * sm3, mask=ok, other=0.0).to(tl.float32)
        x += m
    x = tl.where(ok, x, float("-inf"))
    row_max = tl.max(x, axis=0)
    safe_max = tl.where(row_max == float("-inf"), 0.0, row_max)  # a fully masked row gives zeros, not NaN
    e = tl.exp(x - safe_max)
    total = tl.sum(e, axis=0)
    y = e / tl.where(total == 0.0, 1.0, total)
    tl.store(Y + row * N + cols, y.to(Y.dtype.element_ty), mask=ok)


@triton.jit
def softmax_bwd_kernel(Y, DY, DZ, N, BLOCK_N: tl.constexpr):
    """``dz = y * (dy - sum(dy * y))``: the grad of the masked scores (the caller scales it for ``x``)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    ok = cols < N
    y = tl.load(Y + row * N + cols, mask=ok, other=0.0).to(tl.float32)
    dy = tl.load(DY + row * N + cols, mask=ok, other=0.0).to(tl.float32)
    dz = y * (dy - tl.sum(dy * y, axis=0))
    tl.store(DZ + row * N + cols, dz.to(DZ.dtype.element_ty), mask=ok)

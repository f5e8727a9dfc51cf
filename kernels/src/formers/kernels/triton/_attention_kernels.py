"""Triton kernels of :mod:`formers.kernels.triton.attention` (imported lazily: importing this module imports triton).

One program handles one block of queries (forward, dQ) or keys (dK/dV) of one (sequence, head). Dense and varlen
batches share the kernels: a dense batch has batch strides and lengths ``LEN_Q``/``LEN_K``; a varlen batch has zero
batch strides and per-sequence offsets read from ``cu_seqlens``. Positions inside the block loops are local to the
sequence, so a bias is indexed ``(sequence, head, i, j)`` in both cases.

Loop bounds are ``tl.constexpr`` (the number of blocks of the longest sequence, rounded up to a power of two so at
most log2 variants compile); blocks past a sequence's end or the causal limit are skipped by a uniform branch. That
keeps Triton's CPU interpreter working with numpy >= 2.4, which rejects runtime loop bounds there.

Softmax statistics are fp32, in base 2 (``exp2``) internally; the saved log-sum-exp ``LSE`` is in natural units, and
``+inf`` for a query that sees no key (its probabilities, recomputed in the backward, are then exactly 0).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """``a @ b`` with fp32 accumulation. ``"upcast"``: fp32 operands (Triton's CPU interpreter computes bf16 dots
    wrongly in triton 3.6, so the tests of bf16 inputs run this way); otherwise the given ``input_precision``."""
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _seq_bounds(CU, b, LEN, VARLEN: tl.constexpr):
    if VARLEN:
        start = tl.load(CU + b).to(tl.int64)
        length = (tl.load(CU + b + 1) - tl.load(CU + b)).to(tl.int32)
    else:
        start = 0
        length = LEN
    return start, length


@triton.jit
def _scores(
    q,
    k,
    BIAS,
    KPM,
    b,
    h,
    offs_m,
    offs_n,
    len_q,
    len_k,
    scale_log2,
    sbb,
    sbh,
    sbm,
    sbn,
    skpb,
    HAS_BIAS: tl.constexpr,
    HAS_KPM: tl.constexpr,
    CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Scores of a (BLOCK_M, BLOCK_N) tile in base-2 units, ``-inf`` where a key is not visible."""
    s = _dot(q, tl.trans(k), PRECISION) * scale_log2
    visible = (offs_m[:, None] < len_q) & (offs_n[None, :] < len_k)
    if HAS_BIAS:
        bias = tl.load(
            BIAS + b * sbb + h * sbh + offs_m[:, None] * sbm + offs_n[None, :] * sbn, mask=visible, other=0.0
        )
        s += bias.to(tl.float32) * 1.4426950408889634
    if HAS_KPM:
        pad = tl.load(KPM + b * skpb + offs_n, mask=offs_n < len_k, other=1)
        visible &= pad[None, :] == 0
    if CAUSAL:
        visible &= offs_n[None, :] <= offs_m[:, None] + (len_k - len_q)
    return tl.where(visible, s, float("-inf"))


@triton.jit
def attn_fwd_kernel(
    Q,
    K,
    V,
    OUT,
    LSE,
    BIAS,
    KPM,
    CU_Q,
    CU_K,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sob,
    soh,
    som,
    slb,
    slh,
    sbb,
    sbh,
    sbm,
    sbn,
    skpb,
    H,
    LEN_Q,
    LEN_K,
    HEAD_DIM,
    HEAD_DIM_V,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    N_BLOCKS: tl.constexpr,
    VARLEN: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_KPM: tl.constexpr,
    CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_start, len_q = _seq_bounds(CU_Q, b, LEN_Q, VARLEN)
    k_start, len_k = _seq_bounds(CU_K, b, LEN_K, VARLEN)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    offs_dv = tl.arange(0, BLOCK_DV)
    dv_ok = offs_dv < HEAD_DIM_V
    q_rows = Q + b * sqb + h * sqh + (q_start + offs_m)[:, None] * sqm
    q = tl.load(q_rows + offs_d[None, :], mask=(offs_m[:, None] < len_q) & d_ok[None, :], other=0.0)
    scale_log2 = scale * 1.4426950408889634

    hi = len_k
    if CAUSAL:  # the last key any query of this block sees (bottom-right aligned)
        hi = tl.minimum(hi, pid_m * BLOCK_M + BLOCK_M + len_k - len_q)
    if pid_m * BLOCK_M >= len_q:
        hi = 0

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for blk in range(0, N_BLOCKS):
        start_n = blk * BLOCK_N
        if start_n < hi:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k_ok = (offs_n[:, None] < len_k) & d_ok[None, :]
            v_ok = (offs_n[:, None] < len_k) & dv_ok[None, :]
            k = tl.load(
                K + b * skb + h * skh + (k_start + offs_n)[:, None] * skn + offs_d[None, :], mask=k_ok, other=0.0
            )
            v = tl.load(
                V + b * svb + h * svh + (k_start + offs_n)[:, None] * svn + offs_dv[None, :], mask=v_ok, other=0.0
            )
            s = _scores(
                q, k, BIAS, KPM, b, h, offs_m, offs_n, len_q, len_k, scale_log2,
                sbb, sbh, sbm, sbn, skpb, HAS_BIAS, HAS_KPM, CAUSAL, PRECISION,
            )  # fmt: skip
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet: no NaN
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION)
            m_i = m_new

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i / 1.4426950408889634 + tl.log(tl.where(empty, 1.0, l_i)))
    row_ok = offs_m < len_q
    o_rows = OUT + b * sob + h * soh + (q_start + offs_m)[:, None] * som
    tl.store(o_rows + offs_dv[None, :], out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    tl.store(LSE + b * slb + h * slh + q_start + offs_m, lse, mask=row_ok)


@triton.jit
def attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    BIAS,
    KPM,
    CU_Q,
    CU_K,
    DK,
    DV,
    DBIAS,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sdob,
    sdoh,
    sdom,
    slb,
    slh,
    sbb,
    sbh,
    sbm,
    sbn,
    skpb,
    sdbb,
    sdbh,
    sdbm,
    H,
    LEN_Q,
    LEN_K,
    HEAD_DIM,
    HEAD_DIM_V,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    M_BLOCKS: tl.constexpr,
    VARLEN: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_KPM: tl.constexpr,
    CAUSAL: tl.constexpr,
    BIAS_GRAD: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dK, dV of one key block (loop over query blocks); also writes dS to ``DBIAS`` when the bias needs a grad.

    dK and dV use the same strides as K and V (the caller allocates them alike).
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_start, len_q = _seq_bounds(CU_Q, b, LEN_Q, VARLEN)
    k_start, len_k = _seq_bounds(CU_K, b, LEN_K, VARLEN)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    offs_dv = tl.arange(0, BLOCK_DV)
    dv_ok = offs_dv < HEAD_DIM_V
    k_ok = (offs_n[:, None] < len_k) & d_ok[None, :]
    v_ok = (offs_n[:, None] < len_k) & dv_ok[None, :]
    k_ptrs = K + b * skb + h * skh + (k_start + offs_n)[:, None] * skn + offs_d[None, :]
    v_ptrs = V + b * svb + h * svh + (k_start + offs_n)[:, None] * svn + offs_dv[None, :]
    k = tl.load(k_ptrs, mask=k_ok, other=0.0)
    v = tl.load(v_ptrs, mask=v_ok, other=0.0)
    scale_log2 = scale * 1.4426950408889634

    lo = 0
    if CAUSAL:  # the first query that sees a key of this block
        lo = tl.maximum(0, pid_n * BLOCK_N - (len_k - len_q))
    hi = len_q
    if pid_n * BLOCK_N >= len_k:
        hi = 0

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for blk in range(0, M_BLOCKS):
        start_m = blk * BLOCK_M
        if (start_m < hi) & (start_m + BLOCK_M > lo):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_ok = offs_m < len_q
            q_ok = row_ok[:, None] & d_ok[None, :]
            q = tl.load(
                Q + b * sqb + h * sqh + (q_start + offs_m)[:, None] * sqm + offs_d[None, :], mask=q_ok, other=0.0
            )
            do_rows = DO + b * sdob + h * sdoh + (q_start + offs_m)[:, None] * sdom
            do = tl.load(do_rows + offs_dv[None, :], mask=row_ok[:, None] & dv_ok[None, :], other=0.0)
            lse = tl.load(LSE + b * slb + h * slh + q_start + offs_m, mask=row_ok, other=float("inf"))
            delta = tl.load(DELTA + b * slb + h * slh + q_start + offs_m, mask=row_ok, other=0.0)
            s = _scores(
                q, k, BIAS, KPM, b, h, offs_m, offs_n, len_q, len_k, scale_log2,
                sbb, sbh, sbm, sbn, skpb, HAS_BIAS, HAS_KPM, CAUSAL, PRECISION,
            )  # fmt: skip
            p = tl.exp2(s - lse[:, None] * 1.4426950408889634)  # 0 where s = -inf or lse = +inf
            dv += _dot(tl.trans(p.to(do.dtype)), do, PRECISION)
            dp = _dot(do, tl.trans(v), PRECISION)
            ds = p * (dp - delta[:, None])
            dk += _dot(tl.trans(ds.to(q.dtype)), q, PRECISION)
            if BIAS_GRAD:
                ds_ptrs = DBIAS + b * sdbb + h * sdbh + offs_m[:, None] * sdbm + offs_n[None, :]
                tl.store(ds_ptrs, ds, mask=row_ok[:, None] & (offs_n[None, :] < len_k))

    tl.store(
        DK + b * skb + h * skh + (k_start + offs_n)[:, None] * skn + offs_d[None, :],
        (dk * scale).to(DK.dtype.element_ty),
        mask=k_ok,
    )
    tl.store(
        DV + b * svb + h * svh + (k_start + offs_n)[:, None] * svn + offs_dv[None, :],
        dv.to(DV.dtype.element_ty),
        mask=v_ok,
    )


@triton.jit
def attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    BIAS,
    KPM,
    CU_Q,
    CU_K,
    DQ,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sdob,
    sdoh,
    sdom,
    slb,
    slh,
    sbb,
    sbh,
    sbm,
    sbn,
    skpb,
    H,
    LEN_Q,
    LEN_K,
    HEAD_DIM,
    HEAD_DIM_V,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    N_BLOCKS: tl.constexpr,
    VARLEN: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_KPM: tl.constexpr,
    CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dQ of one query block (loop over key blocks). dQ uses the strides of Q."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_start, len_q = _seq_bounds(CU_Q, b, LEN_Q, VARLEN)
    k_start, len_k = _seq_bounds(CU_K, b, LEN_K, VARLEN)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    offs_dv = tl.arange(0, BLOCK_DV)
    dv_ok = offs_dv < HEAD_DIM_V
    row_ok = offs_m < len_q
    q_ok = row_ok[:, None] & d_ok[None, :]
    q_ptrs = Q + b * sqb + h * sqh + (q_start + offs_m)[:, None] * sqm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=q_ok, other=0.0)
    do_rows = DO + b * sdob + h * sdoh + (q_start + offs_m)[:, None] * sdom
    do = tl.load(do_rows + offs_dv[None, :], mask=row_ok[:, None] & dv_ok[None, :], other=0.0)
    lse = tl.load(LSE + b * slb + h * slh + q_start + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + b * slb + h * slh + q_start + offs_m, mask=row_ok, other=0.0)
    scale_log2 = scale * 1.4426950408889634

    hi = len_k
    if CAUSAL:
        hi = tl.minimum(hi, pid_m * BLOCK_M + BLOCK_M + len_k - len_q)
    if pid_m * BLOCK_M >= len_q:
        hi = 0

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for blk in range(0, N_BLOCKS):
        start_n = blk * BLOCK_N
        if start_n < hi:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k_ok = (offs_n[:, None] < len_k) & d_ok[None, :]
            v_ok = (offs_n[:, None] < len_k) & dv_ok[None, :]
            k = tl.load(
                K + b * skb + h * skh + (k_start + offs_n)[:, None] * skn + offs_d[None, :], mask=k_ok, other=0.0
            )
            v = tl.load(
                V + b * svb + h * svh + (k_start + offs_n)[:, None] * svn + offs_dv[None, :], mask=v_ok, other=0.0
            )
            s = _scores(
                q, k, BIAS, KPM, b, h, offs_m, offs_n, len_q, len_k, scale_log2,
                sbb, sbh, sbm, sbn, skpb, HAS_BIAS, HAS_KPM, CAUSAL, PRECISION,
            )  # fmt: skip
            p = tl.exp2(s - lse[:, None] * 1.4426950408889634)
            dp = _dot(do, tl.trans(v), PRECISION)
            ds = p * (dp - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, PRECISION)

    tl.store(
        DQ + b * sqb + h * sqh + (q_start + offs_m)[:, None] * sqm + offs_d[None, :],
        (dq * scale).to(DQ.dtype.element_ty),
        mask=q_ok,
    )

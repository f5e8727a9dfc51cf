"""Variable-length ("varlen", padding-free) attention on packed sequences.

Layout (FlashAttention's varlen layout): the sequences of a batch are concatenated along the first dim, and
``cu_seqlens`` holds the cumulative offsets (length ``batch + 1``, starting at 0, ending at the total). Sequence ``i``
is ``q[cu_seqlens_q[i]:cu_seqlens_q[i + 1]]`` and attends only to ``k[cu_seqlens_k[i]:cu_seqlens_k[i + 1]]`` (a
block-diagonal attention pattern). ``causal`` applies within each sequence, bottom-right aligned as in
:mod:`formers.kernels.masks`; a query that sees no key returns zeros.

A packed additive bias (the per-sequence kernels only: :func:`per_sequence`) holds one ``(len_q_i, len_k_i)`` block
per head and sequence, flattened row-major and concatenated sequence after sequence: a float ``(heads, sum_i len_q_i *
len_k_i)`` tensor (Graphormer's per-graph spatial/edge bias). The blocks of ``n`` consecutive sequences of one shape
are viewed, without a copy, as ``(n, heads, len_q, len_k)`` and passed to the dense kernel as its ``attn_bias``; the
gradient flows back into the flat tensor.

Every kernel here is a :class:`~formers.kernels.protocols.VarlenKernel` (shapes there).

Kernels do not validate their inputs; :func:`formers.core.varlen.varlen_attention` does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from formers.kernels.matmul import matmul_attention
from formers.kernels.protocols import DenseKernel, VarlenKernel
from formers.kernels.reference import reference_attention
from formers.kernels.sdpa import sdpa_attention

__all__ = [
    "varlen_reference_attention",
    "varlen_sdpa_loop_attention",
    "varlen_matmul_attention",
    "per_sequence",
    "varlen_sdpa_blockmask_attention",
    "varlen_nested_attention",
    "varlen_xformers_attention",
    "block_diagonal_keep_mask",
]


def _per_sequence(
    q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, kernel, attn_bias: Tensor | None = None, **kwargs
) -> Tensor:
    """Run a ``(batch, heads, len, head_dim)`` kernel on each sequence and concatenate the outputs.

    Consecutive sequences of one shape ``(len_q, len_k)`` form one batch of a single kernel call (views, no copy): a
    caller with many small sequences (molecules) orders them by length and pays one call per distinct length instead
    of one per sequence. The runs (and the packed bias) are cut with one ``split`` per tensor (not one slice per
    sequence): its backward concatenates the per-run gradients once, where slices would each scatter into a
    zero-filled full-size gradient (measured 3x slower backward at 32 sequences).

    Shapes:
        - q: ``(total_q, heads, head_dim)``; k, v: ``(total_k, heads, head_dim[_v])``
        - attn_bias: float ``(heads, sum_i len_q_i * len_k_i)``, block ``i`` row-major ``(len_q_i, len_k_i)``
        - output: ``(total_q, heads, head_dim_v)``
    """
    lens_q, lens_k = (cu_q[1:] - cu_q[:-1]).tolist(), (cu_k[1:] - cu_k[:-1]).tolist()  # one host sync each
    runs: list[list[int]] = []  # [len_q, len_k, sequences]
    for shape in zip(lens_q, lens_k, strict=True):
        if runs and tuple(runs[-1][:2]) == shape:
            runs[-1][2] += 1
        else:
            runs.append([*shape, 1])
    heads, dim_v = v.shape[1], v.shape[2]
    qs, ks, vs = (t.split([r[i] * r[2] for r in runs]) for t, i in ((q, 0), (k, 1), (v, 1)))
    biases = [None] * len(runs) if attn_bias is None else attn_bias.split([a * b * n for a, b, n in runs], dim=1)
    outs = []
    for (len_q, len_k, n), qi, ki, vi, bi in zip(runs, qs, ks, vs, biases, strict=True):
        if len_q == 0:
            continue
        if len_k == 0:  # no key at all: zeros, as for any query that sees no key
            outs.append(v.new_zeros(n * len_q, heads, dim_v))
            continue
        if bi is not None:  # (heads, n * lq * lk) -> (n, heads, lq, lk): a view
            bi = bi.view(heads, n, len_q, len_k).transpose(0, 1)
        out = kernel(
            qi.view(n, len_q, heads, -1).transpose(1, 2),
            ki.view(n, len_k, heads, -1).transpose(1, 2),
            vi.view(n, len_k, heads, dim_v).transpose(1, 2),
            attn_bias=bi,
            **kwargs,
        )  # (n, heads, lq, dv)
        outs.append(out.transpose(1, 2).reshape(n * len_q, heads, dim_v))
    if not outs:
        return v.new_zeros(q.shape[0], heads, dim_v)
    return torch.cat(outs, dim=0)


def per_sequence(kernel: DenseKernel, name: str, doc: str) -> VarlenKernel:
    """A varlen kernel that runs the dense ``kernel`` on each packed sequence in turn (see :func:`_per_sequence`);
    it takes a packed per-sequence ``attn_bias``."""

    def varlen_kernel(
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cu_seqlens_q: Tensor,
        cu_seqlens_k: Tensor,
        causal: bool = False,
        scale: float | None = None,
        dropout_p: float = 0.0,
        attn_bias: Tensor | None = None,
    ) -> Tensor:
        return _per_sequence(
            q,
            k,
            v,
            cu_seqlens_q,
            cu_seqlens_k,
            kernel,
            attn_bias=attn_bias,
            causal=causal,
            scale=scale,
            dropout_p=dropout_p,
        )

    varlen_kernel.__name__ = varlen_kernel.__qualname__ = name
    varlen_kernel.__doc__ = doc
    return varlen_kernel


varlen_reference_attention = per_sequence(
    reference_attention,
    "varlen_reference_attention",
    "The oracle: plain-math :func:`~formers.kernels.reference.reference_attention` on each sequence in turn.",
)
varlen_sdpa_loop_attention = per_sequence(
    sdpa_attention,
    "varlen_sdpa_loop_attention",
    "One fused SDPA call per sequence, or per run of consecutive equal-length sequences (no mask tensor without a "
    "bias; work ``sum(len_q * len_k)``). Fastest measured on CPU.",
)
varlen_matmul_attention = per_sequence(
    matmul_attention,
    "varlen_matmul_attention",
    ":func:`~formers.kernels.matmul.matmul_attention` per sequence (explicit backward; CPU bf16 training, where "
    "bf16 matmuls with fp32 softmax statistics beat SDPA's bf16 backward). No dropout.",
)


def _positions(cu_seqlens: Tensor, total: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per packed token: sequence id, position in its sequence, and its sequence's length (all ``(total,)``)."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    seq_id = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=cu_seqlens.device), lengths, output_size=total
    )
    pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[seq_id]
    return seq_id, pos, lengths.long()[seq_id]


def block_diagonal_keep_mask(
    cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, total_q: int, total_k: int, causal: bool
) -> Tensor:
    """Bool ``(total_q, total_k)``: ``True`` where a packed query may attend to a packed key.

    Shapes:
        - cu_seqlens_q, cu_seqlens_k: ``(batch + 1,)``
        - output: ``(total_q, total_k)``
    """
    seq_q, pos_q, len_q = _positions(cu_seqlens_q, total_q)
    seq_k, pos_k, _ = _positions(cu_seqlens_k, total_k)
    keep = seq_q[:, None] == seq_k[None, :]
    if causal:  # bottom-right aligned: key j visible iff j <= i + (len_k - len_q), within the same sequence
        len_k_of_q = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).long()[seq_q]
        keep &= pos_k[None, :] <= (pos_q + len_k_of_q - len_q)[:, None]
    return keep


def varlen_sdpa_blockmask_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """One SDPA call over the whole packed batch with a dense block-diagonal mask (work ``total_q * total_k``).

    A :class:`~formers.kernels.protocols.VarlenKernel` without a packed ``attn_bias`` (the core dispatch refuses such
    calls for it).
    """
    keep = block_diagonal_keep_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill_(~keep, float("-inf"))
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None],
        k.transpose(0, 1)[None],
        v.transpose(0, 1)[None],
        attn_mask=bias,
        dropout_p=dropout_p,
        scale=scale,
    )[0].transpose(0, 1)
    # A query that sees no key: SDPA's softmax of an all -inf row is NaN; the convention is zeros.
    return out.masked_fill(~keep.any(dim=1)[:, None, None], 0.0)


def varlen_nested_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """SDPA on nested jagged tensors (``torch.nested``, ``layout=torch.jagged``); no causal, non-empty sequences.

    A :class:`~formers.kernels.protocols.VarlenKernel` without a packed ``attn_bias`` (refused by the core dispatch).
    """
    if causal:
        raise NotImplementedError("varlen_nested_attention: causal is not supported by jagged SDPA")

    def nest(t: Tensor, cu: Tensor) -> Tensor:
        return torch.nested.nested_tensor_from_jagged(t, cu.long()).transpose(1, 2)  # (batch, heads, j, head_dim)

    out = F.scaled_dot_product_attention(
        nest(q, cu_seqlens_q), nest(k, cu_seqlens_k), nest(v, cu_seqlens_k), dropout_p=dropout_p, scale=scale
    )
    return out.transpose(1, 2).values()


def varlen_xformers_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:  # pragma: no cover - CUDA only; xformers has no CPU kernels
    """xformers' ``memory_efficient_attention`` with a ``BlockDiagonalMask``. CUDA only (untested on CPU machines).

    A :class:`~formers.kernels.protocols.VarlenKernel` without a packed ``attn_bias`` (refused by the core dispatch).
    """
    from xformers.ops import fmha

    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    lens_q = [b - a for a, b in itertools.pairwise(cq)]
    lens_k = [b - a for a, b in itertools.pairwise(ck)]
    mask = fmha.attn_bias.BlockDiagonalMask.from_seqlens(lens_q, lens_k)
    if causal:
        mask = mask.make_causal_from_bottomright()
    # xformers wants (1, total, heads, head_dim): the packed batch is one long sequence.
    out = fmha.memory_efficient_attention(q[None], k[None], v[None], attn_bias=mask, p=dropout_p, scale=scale)
    return out[0]

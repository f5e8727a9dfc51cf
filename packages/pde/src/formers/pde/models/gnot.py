"""GNOT (Hao et al., "GNOT: A General Neural Operator Transformer for Operator Learning", ICML 2023, arXiv
2302.14376): a linear-attention transformer on point clouds that maps several input functions (and global
parameters) to an output function at arbitrary query points.

Follows the official code, thu-ml/GNOT @ 5ee2e69 (``models/mmgpt.py``: ``GNOT``, ``MIOECrossAttentionBlock``,
``LinearAttention`` / ``LinearCrossAttention`` with ``attn_type='l1'``; ``models/mlp.py``; ``args.py``), on the padded
batches of :mod:`formers.pde.pointcloud` (``coords``, ``functions``, padding masks, ``params``):

- **trunk**: a residual MLP embeds each query point, its coordinates concatenated with the global parameters θ;
- **branches**: one residual MLP per input function embeds its rows ``(x, f(x))``;
- **normalized linear attention** per head, with φ = softmax over the feature dim::

      out_i = φ(q_i) + Σ_j (φ(q_i)·φ(k_j)) v_j / Σ_j φ(q_i)·φ(k_j)

  (core's :func:`~formers.core.layers.linear_attention.normalized_linear_attention` computes the second term in
  ``O(n·d²)``; the official "+ φ(q)" is added here);
- **heterogeneous cross-attention**: one query projection, one key/value projection per input function,
  ``φ(q) + Σ_l attention_l``, each term with its own normalisation, then the output projection;
- **geometric gating mixture of experts**: ``gate = softmax(MLP(coords))`` over the experts, computed once per block
  from the query coordinates only, and every FFN is the dense mixture ``Σ_e gate_e · FFN_e(x)``;
- **block** (official order; the LayerNorm of the FFN branches is applied to the FFN's *output*)::

      x = x + CrossAttn(LN1(x), [LN2_l(z_l)])
      x = x + LN3(MoE1(x))
      x = x + SelfAttn(LN4(x))
      x = x + LN5(MoE2(x))

- **head**: a residual MLP per query point (always GELU, as the official ``out_mlp`` takes the MLP's default).

**Packed batches** (:func:`formers.pde.pointcloud.pack_point_clouds`, detected by ``query_lengths``): the rows of
all samples are concatenated, no padding. The pointwise parts (MLPs, LayerNorms, experts, gate) run on the packed
rows as they are; each attention sums ``Σ_j φ(k_j) v_jᵀ`` and ``Σ_j φ(k_j)`` per sample (segment sums) and every
query uses its own sample's sums (:func:`packed_normalized_attention`), so a batch costs what its samples cost alone.
The ``d × d`` outer products are never materialised per row: the rows are laid out in chunks of 64 rows of one
sample (each sample's last chunk zero-filled: < 64 rows of waste per sample, in the attention only), one small
matmul per chunk, the chunks summed into their sample with ``index_add``. Same arithmetic as the padded path up to
the summation order.

Departure from the official code: the official batch is padded (``pad_sequence``) without an attention mask, so the
padded rows of smaller samples enter the key/value sums and the normalisers and change the outputs of the real rows
(issue HaoZhongkai/GNOT#12). Here padded keys are masked out of every sum (the query padding for the
self-attention, each function's padding for its cross-attention), so a sample's outputs do not depend on what it is
batched with; padded query rows of the output are zeros. With no padding the arithmetic is the official one. The
official ``horiz_fourier_dim`` option (its embedding is commented out in the official forward) and the other
``attn_type`` values are not implemented.

Parameter count of the official example in the reference note (2-D coordinates, two 3-column input functions, one
output, d 128, 3 layers, 8 heads, 4 experts, ``mlp_layers`` 3): 4,725,517, equal to the official class (tests).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from formers.core.layers._checks import check_key_padding_mask, check_positive, check_probability, resolve_head_dim
from formers.core.layers.linear_attention import normalized_linear_attention
from formers.core.models import FormersModel
from formers.core.registry import register_model
from formers.pde.pointcloud import pad_rows

__all__ = [
    "ResidualMLP",
    "gnot_attention",
    "PackedSegments",
    "packed_normalized_attention",
    "NormalizedSelfAttention",
    "HeterogeneousCrossAttention",
    "GeometricGate",
    "MixtureOfExperts",
    "GNOTBlock",
    "GNOT",
    "checkpoint_filter_fn",
    "gnot_small",
    "gnot_base",
]

# the official block's activations (``MIOECrossAttentionBlock``); the MLPs accept more (``models/mlp.py``)
_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _activation(owner: str, name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class ResidualMLP(nn.Module):
    """The official ``MLP``: ``Linear(in, hidden)``, act, then ``num_layers`` residual ``x + act(Linear(x))``, then
    ``Linear(hidden, out)`` (no activation at the end).

    Shapes: ``(..., in_dim)`` -> ``(..., out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, activation: str = "gelu") -> None:
        super().__init__()
        self.input = nn.Linear(in_dim, hidden_dim)
        self.hidden = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.output = nn.Linear(hidden_dim, out_dim)
        self.act = _activation(type(self).__name__, activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.input(x))
        for layer in self.hidden:
            x = x + self.act(layer(x))
        return self.output(x)


def gnot_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """GNOT's ``"l1"`` attention of one query set on one key/value set: ``φ(q) + φ(q)(φ(k)ᵀv) / (φ(q)·Σ_j φ(k_j))``
    with φ = softmax over the feature dim; padded keys (``True`` in ``key_padding_mask``) are left out of both sums.

    Shapes: q ``(b, h, n, d)``, k ``(b, h, m, d)``, v ``(b, h, m, d)``, key_padding_mask ``(b, m)`` ->
    ``(b, h, n, d)``.
    """
    return q.softmax(dim=-1) + normalized_linear_attention(q, k, v, key_padding_mask)


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(b, n, h·d)`` -> ``(b, h, n, d)``."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """``(b, h, n, d)`` -> ``(b, n, h·d)``."""
    return x.transpose(1, 2).flatten(2)


# rows per chunk of the packed attention: one (d × C) @ (C × d) matmul per chunk; < C zero rows of waste per sample
_CHUNK_SIZE = 64
_EPS = 1e-12  # the denominator clamp of core's normalized_linear_attention


@dataclass(frozen=True)
class PackedSegments:
    """Which sample each row of a packed tensor belongs to, and the chunked layout of
    :func:`packed_normalized_attention`. Built once per forward (:meth:`from_lengths`, one host sync) and shared by
    every block.

    Fields: ``lengths`` ``(B,)`` int64 rows per sample; ``ids`` ``(total,)`` the sample of each row; ``slots``
    ``(total,)`` each row's position in the chunked layout, where sample ``b`` owns ``ceil(lengths[b] / chunk_size)``
    consecutive chunks of ``chunk_size`` rows; ``chunk_ids`` ``(num_chunks,)`` the sample of each chunk.
    """

    lengths: Tensor
    ids: Tensor
    slots: Tensor
    chunk_ids: Tensor
    num_chunks: int
    chunk_size: int

    @classmethod
    def from_lengths(
        cls, lengths: Tensor, total: int, chunk_size: int = _CHUNK_SIZE, *, owner: str = "PackedSegments",
        name: str = "lengths", rows_name: str = "the packed tensor", device: torch.device | None = None,
    ) -> PackedSegments:  # fmt: skip
        """Segments of ``total`` packed rows with ``lengths`` ``(B,)`` rows per sample (non-negative, summing to
        ``total``), on ``device`` (default: that of ``lengths``). ``owner``, ``name`` and ``rows_name`` word the
        errors."""
        if not isinstance(lengths, Tensor):
            raise TypeError(f"{owner}: {name} must be a (batch,) integer tensor, got {type(lengths).__name__}")
        if lengths.dim() != 1 or lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(
                f"{owner}: {name} must be a (batch,) integer tensor, got {lengths.dtype} "
                f"of shape {tuple(lengths.shape)}"
            )
        if lengths.numel() == 0:
            raise ValueError(f"{owner}: {name} is empty (a batch needs at least one sample)")
        lengths = lengths.to(device=device, dtype=torch.long)
        counts = (lengths + chunk_size - 1).div(chunk_size, rounding_mode="floor")
        length_sum, smallest, num_chunks = torch.stack([lengths.sum(), lengths.min(), counts.sum()]).tolist()
        if smallest < 0:
            raise ValueError(f"{owner}: {name} must be >= 0, got {lengths.tolist()}")
        if length_sum != total:
            raise ValueError(
                f"{owner}: {name} sum to {length_sum} but {rows_name} has {total} rows "
                "(packed layout: the rows of every sample one after the other, lengths[b] rows for sample b)"
            )
        batch = torch.arange(lengths.numel(), device=lengths.device)
        ids = torch.repeat_interleave(batch, lengths, output_size=total)
        starts = lengths.cumsum(0) - lengths
        chunk_starts = counts.cumsum(0) - counts
        slots = torch.arange(total, device=lengths.device) + (chunk_starts * chunk_size - starts)[ids]
        chunk_ids = torch.repeat_interleave(batch, counts, output_size=num_chunks)
        return cls(lengths, ids, slots, chunk_ids, int(num_chunks), chunk_size)

    @property
    def batch(self) -> int:
        return self.lengths.numel()

    def to_chunks(self, x: Tensor) -> Tensor:
        """Packed ``(total, h, d)`` -> ``(num_chunks, h, chunk_size, d)``, each sample's last chunk zero-filled."""
        chunked = x.new_zeros(self.num_chunks * self.chunk_size, *x.shape[1:]).index_copy(0, self.slots, x)
        return chunked.unflatten(0, (self.num_chunks, self.chunk_size)).transpose(1, 2)

    def from_chunks(self, x: Tensor) -> Tensor:
        """``(num_chunks, h, chunk_size, e)`` -> packed ``(total, h, e)`` (the fill rows dropped)."""
        return x.transpose(1, 2).flatten(0, 1).index_select(0, self.slots)


def packed_normalized_attention(
    q: Tensor, k: Tensor, v: Tensor, q_segments: PackedSegments, k_segments: PackedSegments, eps: float = _EPS
) -> Tensor:
    """Core's normalized linear attention on packed rows, each query on its own sample's keys:
    ``φq_i (Σ_j φk_j v_jᵀ) / (φq_i · Σ_j φk_j)``, both sums over the keys of the query's sample. ``q`` and ``k`` are
    the feature maps φ already (GNOT: softmax over the feature dim).

    Shapes: q ``(T, h, d)``, k ``(S, h, d)``, v ``(S, h, e)`` with T, S the packed rows of ``q_segments``,
    ``k_segments`` (the same samples) -> ``(T, h, e)``.
    """
    # a ones column after v: the same matmuls give Σ_j φk_j v_jᵀ and, as their last column, Σ_j φk_j; q times it
    # then gives numerator and denominator at once (no per-row gather of Σ_j φk_j)
    v = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)
    chunk_context = k_segments.to_chunks(k).transpose(-2, -1) @ k_segments.to_chunks(v)  # (chunks, h, d, e + 1)
    context = chunk_context.new_zeros(k_segments.batch, *chunk_context.shape[1:]).index_add(
        0, k_segments.chunk_ids, chunk_context
    )  # (B, h, d, e + 1): per sample
    out = q_segments.from_chunks(q_segments.to_chunks(q) @ context[q_segments.chunk_ids])  # (T, h, e + 1)
    return out[..., :-1] / out[..., -1:].clamp_min(eps)


class NormalizedSelfAttention(nn.Module):
    """Multi-head self-attention of :func:`gnot_attention` (official ``LinearAttention``, ``'l1'``), separate Q/K/V
    projections with biases, dropout on the attention output (``attn_dropout``), then the output projection.

    Shapes: x ``(b, n, dim)``, key_padding_mask ``(b, n)`` -> ``(b, n, dim)``; packed: x ``(total, dim)`` with its
    ``segments`` -> ``(total, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        resolve_head_dim(type(self).__name__, dim, num_heads)
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, segments: PackedSegments | None = None
    ) -> Tensor:
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if segments is None:
            q, k, v = (_split_heads(proj(x), self.num_heads) for proj in projections)
            return self.out_proj(_merge_heads(self.attn_drop(gnot_attention(q, k, v, key_padding_mask))))
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, -1)) for proj in projections)  # (total, h, d)
        q, k = q.softmax(dim=-1), k.softmax(dim=-1)
        out = q + packed_normalized_attention(q, k, v, segments, segments)
        return self.out_proj(self.attn_drop(out).flatten(-2))


class HeterogeneousCrossAttention(nn.Module):
    """Cross-attention of the query points on ``num_inputs`` input functions (official ``LinearCrossAttention``):
    one Q projection, one K and one V projection per input function, ``φ(q) + Σ_l`` (normalized attention on
    function ``l``), then the output projection. Each function's term has its own normaliser ``D_l``.

    Shapes: x ``(b, n, dim)``, functions ``[(b, m_l, dim)]``, paddings ``[(b, m_l)]`` (or ``None``) ->
    ``(b, n, dim)``; packed: x ``(total, dim)``, functions ``[(total_l, dim)]`` with ``query_segments`` and
    ``function_segments`` (paddings ignored) -> ``(total, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, num_inputs: int) -> None:
        super().__init__()
        resolve_head_dim(type(self).__name__, dim, num_heads)
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_projs = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_inputs))
        self.v_projs = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_inputs))
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        functions: Sequence[Tensor],
        paddings: Sequence[Tensor | None],
        query_segments: PackedSegments | None = None,
        function_segments: Sequence[PackedSegments] | None = None,
    ) -> Tensor:
        if query_segments is not None:
            return self._packed(x, functions, query_segments, function_segments)
        q = _split_heads(self.q_proj(x), self.num_heads)
        out = q.softmax(dim=-1)
        for z, padding, k_proj, v_proj in zip(functions, paddings, self.k_projs, self.v_projs, strict=True):
            k, v = _split_heads(k_proj(z), self.num_heads), _split_heads(v_proj(z), self.num_heads)
            out = out + normalized_linear_attention(q, k, v, padding)
        return self.out_proj(_merge_heads(out))

    def _packed(
        self,
        x: Tensor,
        functions: Sequence[Tensor],
        query_segments: PackedSegments,
        function_segments: Sequence[PackedSegments] | None,
    ) -> Tensor:
        if function_segments is None:
            raise ValueError(f"{type(self).__name__}: packed queries need function_segments for the input functions")
        heads = self.num_heads
        q = self.q_proj(x).unflatten(-1, (heads, -1)).softmax(dim=-1)  # (total, h, d)
        out = q
        for z, segments, k_proj, v_proj in zip(functions, function_segments, self.k_projs, self.v_projs, strict=True):
            k, v = k_proj(z).unflatten(-1, (heads, -1)).softmax(dim=-1), v_proj(z).unflatten(-1, (heads, -1))
            out = out + packed_normalized_attention(q, k, v, query_segments, segments)
        return self.out_proj(out.flatten(-2))


class GeometricGate(nn.Module):
    """``softmax(MLP(coords))`` over the experts (official ``gatenet``: ``coord_dim -> inner -> inner -> experts``
    with the block's activation). Depends on the query coordinates only.

    Shapes: coords ``(b, n, coord_dim)`` -> ``(b, n, num_experts)``, rows summing to 1.
    """

    def __init__(self, coord_dim: int, inner_dim: int, num_experts: int, activation: str = "gelu") -> None:
        super().__init__()
        owner = type(self).__name__
        self.fc1, self.fc2 = nn.Linear(coord_dim, inner_dim), nn.Linear(inner_dim, inner_dim)
        self.fc3 = nn.Linear(inner_dim, num_experts)
        self.act1, self.act2 = _activation(owner, activation), _activation(owner, activation)

    def forward(self, coords: Tensor) -> Tensor:
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(coords))))).softmax(dim=-1)


class _Expert(nn.Module):
    """One FFN expert ``dim -> inner -> dim``."""

    def __init__(self, dim: int, inner_dim: int, activation: str) -> None:
        super().__init__()
        self.fc1, self.act = nn.Linear(dim, inner_dim), _activation(type(self).__name__, activation)
        self.fc2 = nn.Linear(inner_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixtureOfExperts(nn.Module):
    """Dense soft mixture ``Σ_e gate_e · FFN_e(x)`` (every expert runs on every point; no load-balancing loss).

    Shapes: x ``(b, n, dim)``, gate ``(b, n, num_experts)`` -> ``(b, n, dim)``.
    """

    def __init__(self, dim: int, inner_dim: int, num_experts: int, activation: str = "gelu") -> None:
        super().__init__()
        self.experts = nn.ModuleList(_Expert(dim, inner_dim, activation) for _ in range(num_experts))

    def forward(self, x: Tensor, gate: Tensor) -> Tensor:
        out = gate[..., 0:1] * self.experts[0](x)
        for e, expert in enumerate(self.experts[1:], start=1):
            out = out + gate[..., e : e + 1] * expert(x)
        return out


class GNOTBlock(nn.Module):
    """One GNOT block (official ``MIOECrossAttentionBlock``; order in the module docstring). The gate is computed once
    from the query coordinates and shared by both mixtures.

    Shapes: x ``(b, n, dim)``, functions ``[(b, m_l, dim)]``, coords ``(b, n, coord_dim)``, query_padding
    ``(b, n)``, function_padding ``[(b, m_l)]`` -> ``(b, n, dim)``; packed (``query_segments`` given): the same
    without the batch dim, rows of all samples concatenated, with ``function_segments`` instead of the paddings.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_inputs: int,
        coord_dim: int,
        num_experts: int,
        ffn_ratio: int,
        activation: str = "gelu",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = ffn_ratio * dim
        self.norm1 = nn.LayerNorm(dim)
        self.function_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_inputs))
        self.cross_attn = HeterogeneousCrossAttention(dim, num_heads, num_inputs)
        self.norm_ffn1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.self_attn = NormalizedSelfAttention(dim, num_heads, attn_dropout)
        self.norm_ffn2 = nn.LayerNorm(dim)
        self.ffn1 = MixtureOfExperts(dim, inner, num_experts, activation)
        self.ffn2 = MixtureOfExperts(dim, inner, num_experts, activation)
        self.gate = GeometricGate(coord_dim, inner, num_experts, activation)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        functions: Sequence[Tensor],
        coords: Tensor,
        query_padding: Tensor | None = None,
        function_padding: Sequence[Tensor | None] | None = None,
        *,
        query_segments: PackedSegments | None = None,
        function_segments: Sequence[PackedSegments] | None = None,
    ) -> Tensor:
        paddings = [None] * len(functions) if function_padding is None else function_padding
        gate = self.gate(coords)
        normed = [norm(z) for norm, z in zip(self.function_norms, functions, strict=True)]
        x = x + self.drop1(self.cross_attn(self.norm1(x), normed, paddings, query_segments, function_segments))
        x = x + self.norm_ffn1(self.ffn1(x, gate))  # official: LN on the FFN's output, input not normalised
        x = x + self.drop2(self.self_attn(self.norm2(x), query_padding, query_segments))
        return x + self.norm_ffn2(self.ffn2(x, gate))


class GNOT(FormersModel):
    """GNOT on point-cloud batches (:mod:`formers.pde.pointcloud`), padded -> ``(B, N, out_channels)`` or packed ->
    ``(ΣN, out_channels)`` at the query points.

    Args:
        coord_dim: columns of ``coords`` (the space dimension; also the gate's input).
        function_channels: columns ``c_l`` of each input function's rows ``(x, f(x))``, coordinates included; its
            length is the number of input functions (at least one).
        params_dim: number of global parameters θ (0: none).
        out_channels: output channels per query point.
        hidden_dim: width ``d`` (official ``n_hidden``).
        num_layers: number of blocks (``n_layers``).
        num_heads: attention heads (``n_head``), dividing ``hidden_dim``.
        num_experts: experts of each gated FFN (``n_experts``).
        ffn_ratio: FFN and gate width as a multiple of ``hidden_dim`` (``n_inner``).
        mlp_layers: residual hidden layers of the trunk, branch and head MLPs (``mlp_layers``).
        activation: ``"gelu"``, ``"relu"``, ``"tanh"`` or ``"sigmoid"`` (``act``), for the trunk, branches, experts
            and gate; the head always uses GELU (official ``out_mlp``).
        dropout: after each attention's output projection (official ``ffn_dropout`` -> ``resid_pdrop``).
        attn_dropout: on the self-attention output before its projection (official ``attn_dropout``; the official
            cross-attention defines but never applies it).

    Inputs of ``forward``, padded: ``coords (B, N, coord_dim)``, ``functions`` (a sequence of ``(B, M_l, c_l)``, or
    one tensor when there is one input function), ``query_padding (B, N)`` and ``function_padding`` (a sequence of
    ``(B, M_l)``, entries may be ``None``; or one tensor) as bool masks with ``True`` = padding, ``params (B, p)``
    (required when ``params_dim > 0``). Packed (given ``query_lengths``): ``coords (ΣN, coord_dim)``,
    ``functions`` (a sequence of ``(ΣM_l, c_l)``, or one tensor), ``query_lengths (B,)`` and ``function_lengths``
    (a sequence of ``(B,)``, or one tensor) integer rows per sample, ``params (B, p)``; no padding masks.
    """

    def __init__(
        self,
        coord_dim: int = 2,
        function_channels: Sequence[int] = (3, 3),
        params_dim: int = 0,
        out_channels: int = 1,
        *,
        hidden_dim: int = 64,
        num_layers: int = 3,
        num_heads: int = 1,
        num_experts: int = 1,
        ffn_ratio: int = 4,
        mlp_layers: int = 3,
        activation: str = "gelu",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(
            owner,
            coord_dim=coord_dim,
            out_channels=out_channels,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            num_experts=num_experts,
            ffn_ratio=ffn_ratio,
        )
        check_probability(owner, dropout=dropout, attn_dropout=attn_dropout)
        resolve_head_dim(owner, hidden_dim, num_heads)
        if not isinstance(params_dim, int) or isinstance(params_dim, bool) or params_dim < 0:
            raise ValueError(f"{owner}: params_dim must be an int >= 0, got {params_dim!r}")
        if not isinstance(mlp_layers, int) or isinstance(mlp_layers, bool) or mlp_layers < 0:
            raise ValueError(f"{owner}: mlp_layers must be an int >= 0, got {mlp_layers!r}")
        if isinstance(function_channels, int) or not function_channels:
            raise ValueError(
                f"{owner}: function_channels must be a non-empty sequence of ints, got {function_channels!r}"
            )
        for c in function_channels:
            check_positive(owner, function_channels=c)
        _activation(owner, activation)
        self.coord_dim, self.params_dim, self.out_channels = coord_dim, params_dim, out_channels
        self.function_channels = tuple(int(c) for c in function_channels)
        self.num_inputs = len(self.function_channels)

        self.trunk = ResidualMLP(coord_dim + params_dim, hidden_dim, hidden_dim, mlp_layers, activation)
        self.branches = nn.ModuleList(
            ResidualMLP(c, hidden_dim, hidden_dim, mlp_layers, activation) for c in self.function_channels
        )
        self.blocks = nn.ModuleList(
            GNOTBlock(
                hidden_dim,
                num_heads,
                self.num_inputs,
                coord_dim,
                num_experts,
                ffn_ratio,
                activation,
                dropout,
                attn_dropout,
            )
            for _ in range(num_layers)
        )
        self.head = ResidualMLP(hidden_dim, hidden_dim, out_channels, mlp_layers, "gelu")

    def forward(
        self,
        coords: Tensor,
        functions: Sequence[Tensor] | Tensor,
        query_padding: Tensor | None = None,
        function_padding: Sequence[Tensor | None] | Tensor | None = None,
        params: Tensor | None = None,
        query_lengths: Tensor | None = None,
        function_lengths: Sequence[Tensor] | Tensor | None = None,
    ) -> Tensor:
        if query_lengths is not None or function_lengths is not None:
            if query_padding is not None or function_padding is not None:
                raise ValueError(
                    f"{type(self).__name__}: got padding masks and lengths: a batch is either padded (query_padding, "
                    "function_padding) or packed (query_lengths, function_lengths), not both"
                )
            return self._forward_packed(coords, functions, query_lengths, function_lengths, params)
        functions, function_padding = self._check_inputs(coords, functions, query_padding, function_padding, params)
        x = coords
        if self.params_dim:
            x = torch.cat([coords, params[:, None, :].expand(-1, coords.shape[1], -1)], dim=-1)
        x = self.trunk(x)
        z = [branch(f) for branch, f in zip(self.branches, functions, strict=True)]
        for block in self.blocks:
            x = block(x, z, coords, query_padding, function_padding)
        out = self.head(x)
        if query_padding is not None:  # padded query rows: zeros, like the padded targets
            out = out.masked_fill(query_padding[..., None], 0.0)
        return out

    def _forward_packed(
        self,
        coords: Tensor,
        functions: Sequence[Tensor] | Tensor,
        query_lengths: Tensor | None,
        function_lengths: Sequence[Tensor] | Tensor | None,
        params: Tensor | None,
    ) -> Tensor:
        """The packed layout: every sample's rows one after the other; ``(ΣN, out_channels)``."""
        functions, query_segments, function_segments = self._check_packed_inputs(
            coords, functions, query_lengths, function_lengths, params
        )
        x = coords
        if self.params_dim:
            x = torch.cat([coords, params[query_segments.ids]], dim=-1)  # θ of each row's sample
        x = self.trunk(x)
        z = [branch(f) for branch, f in zip(self.branches, functions, strict=True)]
        for block in self.blocks:
            x = block(x, z, coords, query_segments=query_segments, function_segments=function_segments)
        return self.head(x)

    def _check_packed_inputs(
        self,
        coords: Tensor,
        functions: Sequence[Tensor] | Tensor,
        query_lengths: Tensor | None,
        function_lengths: Sequence[Tensor] | Tensor | None,
        params: Tensor | None,
    ) -> tuple[list[Tensor], PackedSegments, list[PackedSegments]]:
        """Check a packed batch; return the functions as a list and the segments of the queries and functions."""
        owner = type(self).__name__
        if query_lengths is None or function_lengths is None:
            missing = "query_lengths" if query_lengths is None else "function_lengths"
            raise ValueError(f"{owner}: a packed batch needs query_lengths and function_lengths; {missing} is missing")
        _check_float(owner, "coords", coords, 2, f"(total_points, {self.coord_dim}) in a packed batch")
        if coords.shape[1] != self.coord_dim:
            raise ValueError(
                f"{owner}: coords has {coords.shape[1]} columns, the model was built with coord_dim={self.coord_dim}"
            )
        queries = PackedSegments.from_lengths(
            query_lengths, coords.shape[0], owner=owner, name="query_lengths", rows_name="coords", device=coords.device
        )
        functions = [functions] if isinstance(functions, Tensor) else list(functions)
        lengths = [function_lengths] if isinstance(function_lengths, Tensor) else list(function_lengths)
        if len(functions) != self.num_inputs:
            raise ValueError(
                f"{owner}: got {len(functions)} input functions, the model was built for {self.num_inputs} "
                f"(function_channels={self.function_channels})"
            )
        if len(lengths) != self.num_inputs:
            raise ValueError(f"{owner}: got {len(lengths)} function_lengths for {self.num_inputs} functions")
        segments = []
        for i, (f, length, c) in enumerate(zip(functions, lengths, self.function_channels, strict=True)):
            _check_float(owner, f"functions[{i}]", f, 2, f"(total_rows, {c}) in a packed batch")
            if f.shape[1] != c:
                raise ValueError(
                    f"{owner}: functions[{i}] has shape {tuple(f.shape)}, expected (total_rows, {c}) "
                    f"(function_channels[{i}])"
                )
            if isinstance(length, Tensor) and tuple(length.shape) != (queries.batch,):
                raise ValueError(
                    f"{owner}: function_lengths[{i}] has shape {tuple(length.shape)}, expected ({queries.batch},) "
                    "like query_lengths (one entry per sample)"
                )
            segments.append(
                PackedSegments.from_lengths(
                    length,
                    f.shape[0],
                    owner=owner,
                    name=f"function_lengths[{i}]",
                    rows_name=f"functions[{i}]",
                    device=f.device,
                )
            )
        if self.params_dim and params is None:
            raise ValueError(f"{owner}: params (batch, {self.params_dim}) is required (params_dim={self.params_dim})")
        if params is not None:
            _check_float(owner, "params", params, 2, f"(batch, {self.params_dim})")
            if tuple(params.shape) != (queries.batch, self.params_dim):
                raise ValueError(
                    f"{owner}: params has shape {tuple(params.shape)}, expected ({queries.batch}, {self.params_dim}) "
                    "(one row per sample of query_lengths)"
                )
        return functions, queries, segments

    def _check_inputs(
        self,
        coords: Tensor,
        functions: Sequence[Tensor] | Tensor,
        query_padding: Tensor | None,
        function_padding: Sequence[Tensor | None] | Tensor | None,
        params: Tensor | None,
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Check the batch against the model's sizes; return the functions and their paddings as lists."""
        owner = type(self).__name__
        _check_float(owner, "coords", coords, 3, f"(batch, points, {self.coord_dim})")
        batch, points, columns = coords.shape
        if columns != self.coord_dim:
            raise ValueError(
                f"{owner}: coords has {columns} columns, the model was built with coord_dim={self.coord_dim}"
            )
        if query_padding is not None:
            check_key_padding_mask(f"{owner} query_padding", query_padding, (batch, points), coords.device)
        functions = [functions] if isinstance(functions, Tensor) else list(functions)
        if len(functions) != self.num_inputs:
            raise ValueError(
                f"{owner}: got {len(functions)} input functions, the model was built for {self.num_inputs} "
                f"(function_channels={self.function_channels})"
            )
        if function_padding is None:
            paddings: list[Tensor | None] = [None] * self.num_inputs
        else:
            paddings = [function_padding] if isinstance(function_padding, Tensor) else list(function_padding)
            if len(paddings) != self.num_inputs:
                raise ValueError(f"{owner}: got {len(paddings)} function_padding masks for {self.num_inputs} functions")
        for i, (f, padding, c) in enumerate(zip(functions, paddings, self.function_channels, strict=True)):
            _check_float(owner, f"functions[{i}]", f, 3, f"(batch, rows, {c})")
            if f.shape[0] != batch or f.shape[2] != c:
                raise ValueError(
                    f"{owner}: functions[{i}] has shape {tuple(f.shape)}, expected ({batch}, rows, {c}) "
                    f"(batch of coords, function_channels[{i}])"
                )
            if padding is not None:
                check_key_padding_mask(f"{owner} function_padding[{i}]", padding, tuple(f.shape[:2]), f.device)
        if self.params_dim:
            if params is None:
                raise ValueError(
                    f"{owner}: params (batch, {self.params_dim}) is required (params_dim={self.params_dim})"
                )
        if params is not None:
            _check_float(owner, "params", params, 2, f"(batch, {self.params_dim})")
            if tuple(params.shape) != (batch, self.params_dim):
                raise ValueError(
                    f"{owner}: params has shape {tuple(params.shape)}, expected ({batch}, {self.params_dim})"
                )
        return functions, paddings

    # ----------------------------------------------------------------------------------------------- FormersModel

    def _example_sizes(self, batch_size: int) -> list[int]:
        return [6 + (5 * i) % 7 for i in range(batch_size)]  # ragged: 6, 11, 9, 7, ...

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        """A padded batch of ragged random point clouds: every input function on its own points (half as many rows
        plus one as the sample's query points). One input function is passed as a bare tensor."""
        sizes = self._example_sizes(batch_size)
        coords, query_padding = pad_rows([torch.rand(n, self.coord_dim) for n in sizes])
        functions, function_padding = [], []
        for i, c in enumerate(self.function_channels):
            f, pad = pad_rows([torch.randn(n // 2 + 1 + i, c) for n in sizes])
            functions.append(f.to(self.device))
            function_padding.append(pad.to(self.device))
        one = self.num_inputs == 1
        return {
            "coords": coords.to(self.device),
            "functions": functions[0] if one else tuple(functions),
            "query_padding": query_padding.to(self.device),
            "function_padding": function_padding[0] if one else tuple(function_padding),
            "params": torch.randn(batch_size, self.params_dim, device=self.device),
        }

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, max(self._example_sizes(batch_size)), self.out_channels)


def _check_float(owner: str, name: str, x: Any, ndim: int, layout: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{owner}: {name} must have shape {layout}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating tensor, got {x.dtype}")


# ------------------------------------------------------------------------------------------- official checkpoints

# official GNOT (models/mmgpt.py) key -> this model's key (regex, replacement), applied in order
_OFFICIAL_KEYS = [
    (r"^trunk_mlp\.", "trunk."),
    (r"^branch_mlps\.", "branches."),
    (r"^out_mlp\.", "head."),
    (r"^(trunk|branches\.\d+|head)\.linear_pre\.", r"\1.input."),
    (r"^(trunk|branches\.\d+|head)\.linears\.", r"\1.hidden."),
    (r"^(trunk|branches\.\d+|head)\.linear_post\.", r"\1.output."),
    (r"^blocks\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"^blocks\.(\d+)\.ln2_branch\.", r"blocks.\1.function_norms."),
    (r"^blocks\.(\d+)\.ln3\.", r"blocks.\1.norm_ffn1."),
    (r"^blocks\.(\d+)\.ln4\.", r"blocks.\1.norm2."),
    (r"^blocks\.(\d+)\.ln5\.", r"blocks.\1.norm_ffn2."),
    (r"^blocks\.(\d+)\.selfattn\.(query|key|value)\.", lambda m: f"blocks.{m[1]}.self_attn.{m[2][0]}_proj."),
    (r"^blocks\.(\d+)\.selfattn\.proj\.", r"blocks.\1.self_attn.out_proj."),
    (r"^blocks\.(\d+)\.crossattn\.query\.", r"blocks.\1.cross_attn.q_proj."),
    (r"^blocks\.(\d+)\.crossattn\.(key|value)s\.", lambda m: f"blocks.{m[1]}.cross_attn.{m[2][0]}_projs."),
    (r"^blocks\.(\d+)\.crossattn\.proj\.", r"blocks.\1.cross_attn.out_proj."),
    (r"^blocks\.(\d+)\.moe_mlp([12])\.(\d+)\.0\.", r"blocks.\1.ffn\2.experts.\3.fc1."),
    (r"^blocks\.(\d+)\.moe_mlp([12])\.(\d+)\.2\.", r"blocks.\1.ffn\2.experts.\3.fc2."),
    (r"^blocks\.(\d+)\.gatenet\.([024])\.", lambda m: f"blocks.{m[1]}.gate.fc{int(m[2]) // 2 + 1}."),
]


def checkpoint_filter_fn(state_dict: dict[str, Any], model: GNOT) -> dict[str, Tensor]:
    """An official ``GNOT`` state dict (``torch.save(model.state_dict())``, optionally wrapped in
    ``{"state_dict": ...}`` / ``{"model": ...}`` or DDP-prefixed) -> ``model``'s keys. A state dict already in this
    model's layout passes through unchanged.

    Raises:
        ValueError: keys of neither layout.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    own = set(model.state_dict())
    out, unknown = {}, []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key in own:
            out[key] = value
            continue
        new = key
        for pattern, replacement in _OFFICIAL_KEYS:
            new = re.sub(pattern, replacement, new)
        if new not in own:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"keys of neither the official GNOT nor this model: {unknown[:8]}")
    return out


# ----------------------------------------------------------------------------------------- official configurations

_PAPER = "Hao et al. 2023, GNOT: A General Neural Operator Transformer for Operator Learning (ICML 2023)"
# tiny; one input function, so that example_inputs are plain tensors the registry tests can slice per sample
_TEST_KWARGS = {
    "function_channels": (3,),
    "params_dim": 2,
    "hidden_dim": 8,
    "num_layers": 1,
    "num_heads": 2,
    "num_experts": 2,
    "ffn_ratio": 2,
    "mlp_layers": 1,
}


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def gnot_small(**kwargs: Any) -> GNOT:
    """The official ``args.py`` defaults: d 64, 3 layers, 1 head, 1 expert, FFN ratio 4, ``mlp_layers`` 3, GELU.
    Data sizes (``coord_dim``, ``function_channels``, ``params_dim``, ``out_channels``) come from the data module;
    defaults: 2-D points, two 3-column input functions, one output."""
    return GNOT(**{"hidden_dim": 64, "num_layers": 3, "num_heads": 1, "num_experts": 1, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def gnot_base(**kwargs: Any) -> GNOT:
    """The README's training command (``--n-hidden 128 --n-layers 3``) with 8 heads and 4 experts: 4,725,517
    parameters with the default data sizes (2-D points, two 3-column input functions, one output)."""
    return GNOT(**{"hidden_dim": 128, "num_layers": 3, "num_heads": 8, "num_experts": 4, **kwargs})

"""Graphormer (Ying et al., "Do Transformers Really Perform Bad for Graph Representation?", NeurIPS 2021,
arXiv 2106.05234), padding-free.

Follows the official v1 code, microsoft/Graphormer branch ``v1.0`` @ e77e6ed (``graphormer/model.py``,
``wrapper.py``, ``collator.py``, ``algos.pyx``). Every graph becomes one sequence ``[graph token, node_1 ... node_n]``
and a pre-LN transformer (``LN -> MHA -> dropout -> +res; LN -> FFN(GELU) -> dropout -> +res``, final LN) attends
within it, with one additive per-head bias per graph shared by all layers:

* centrality encoding: ``h_i = sum_f AtomEmb(x_if + 2 + 512 f) + InDegEmb(deg_i + 1) + OutDegEmb(deg_i + 1)``; one
  shared atom table with 512 rows per feature column (``convert_to_single_emb`` adds ``1 + 512 f``, the collator
  ``+1``; 0 = padding). The official model feeds the same degree (``adj.sum(1)``, distinct out-neighbours) to both
  degree tables (v1 ``model.py``: ``in_degree, out_degree = batched_data.in_degree, batched_data.in_degree``).
* spatial encoding: ``b[i, j] = SpatialEmb(spd(i, j) + 1)``, a learned scalar per head; unreachable pairs have the
  official distance 510 (bucket 511).
* multi-hop edge encoding: along one shortest path ``i = v_0, v_1, ... , v_N = j`` (first ``multi_hop_max_dist``
  hops), ``c[i, j] = sum_n mean_f(EdgeEmb(e_{v_n v_{n+1}, f} + 3 + 512 f)) @ W_n / clamp(max(spd, 1), max=
  multi_hop_max_dist)``, ``W_n`` an ``H x H`` matrix per hop (``edge_dis_encoder``); exactly the official arithmetic,
  its clamping included (the divisor of an unreachable pair is ``multi_hop_max_dist``, of the diagonal 1).
* graph token: a learned token at position 0 whose bias to and from every node (and to itself) is a learned scalar
  per head (``graph_token_virtual_distance``). Graph-level output: ``head(final_ln(token))``; node-level (PATTERN,
  CLUSTER): ``head(final_ln(node tokens))`` with the graph token still present.

Padding-free: the official collator pads every graph to the batch's largest (and drops graphs above ``max_node =
128``). Here a PyG ``Batch`` of graphs of any sizes runs packed: the tokens of all graphs are concatenated with
``cu_seqlens``, the bias is packed per graph (``(heads, sum_g (n_g + 1)²)``) and attention is block-diagonal through
:func:`formers.core.varlen.varlen_attention`. The sequences are ordered by graph size (outputs come back in batch
order), so that the per-sequence CPU kernels run all graphs of one size in one call. Shortest paths come precomputed,
O(n²) per graph, from
:class:`formers.graph.encodings.shortest_paths.ShortestPaths`; the per-pair edge sequences are walked here with
vectorised gathers (one step per hop for all pairs at once). :meth:`Graphormer.forward_padded` runs the official
padded layout (pad to the batch max, ``-inf`` bias on padding keys, dense attention) on the same weights: the
baseline of ``benchmarks/graphormer.py`` and a test comparison.

Deviations, each on inputs the official code mishandles:

* Hop padding. ``init_params`` re-draws every embedding row, ``padding_idx`` rows included, and ``padding_idx`` then
  freezes them; the collator pads each pair's edge list to the batch's longest path, so each missing hop adds
  ``EdgeEmb[0] @ W_n``: a pair's bias depends on which graphs share its batch. Here the ``padding_idx`` rows start at
  zero, where that term vanishes (the paper's formula). For official checkpoints (non-zero ``EdgeEmb[0]``) the term
  is kept per graph, up to that graph's own longest path: the output is what the official code gives the graph in a
  batch of its own, in any batch.
* Paths: v1's Floyd-Warshall drops node 0 from paths split at node 0 (fixed in v2, microsoft/Graphormer#119); paths
  here are exact. Among equally short paths another may be chosen (see :mod:`~formers.graph.encodings.shortest_paths`).
* Table overflow: distances or degrees beyond the official tables (ZINC: 40 spatial, 64 degree rows) index out of
  range in the official code; here they share the last row (a reachable distance >= ``num_spatial - 2`` shares it
  with unreachable pairs).
* Not implemented: the ``edge_type`` (direct-edge) alternative and the collator's optional ``spatial_pos_max`` mask
  (the official data module passes 1024, which masks nothing).

Parameter counts equal the official v1 classes' (tests): ZINC Slim 489,481; PCQM4M Small 12,550,721; PCQM4M 47,085,377.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from formers.core.layers import MultiHeadAttention
from formers.core.layers._checks import check_positive, check_probability
from formers.core.layers.mlp import Mlp
from formers.core.models import FormersModel
from formers.core.registry import register_model
from formers.core.varlen import unpack
from formers.graph.encodings.shortest_paths import NEXT_KEY, SPD_KEY, ShortestPaths
from formers.graph.models.encoders import MOLECULE_ATOM_VOCAB, MOLECULE_BOND_VOCAB, check_edge_index

__all__ = [
    "GraphormerLayer",
    "Graphormer",
    "checkpoint_filter_fn",
    "graphormer_slim",
    "graphormer_small",
    "graphormer_base",
    "graphormer_molecules",
    "graphormer_pattern",
    "graphormer_cluster",
]

_PAPER = "Do Transformers Really Perform Bad for Graph Representation? (Ying et al., NeurIPS 2021)"
FEATURE_OFFSET = 512  # rows per feature column in the shared tables (v1 ``convert_to_single_emb``)
UNREACHABLE_DISTANCE = 510  # v1 ``floyd_warshall``


def _vocab(owner: str, name: str, value: int | Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    sizes = (value,) if isinstance(value, int) else tuple(value)
    if not sizes or any(
        isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= FEATURE_OFFSET - 2 for s in sizes
    ):
        raise ValueError(
            f"{owner}: {name} must be an int or a sequence of ints in [1, {FEATURE_OFFSET - 2}] (one per feature "
            f"column; each column owns {FEATURE_OFFSET} rows of the shared table), got {value!r}"
        )
    return sizes


def _shared_table_rows(owner: str, name: str, vocab: tuple[int, ...], shift: int, rows: int | None) -> int:
    """Rows of a shared table (official layout: ``512 * columns + 1`` unless given) after checking they suffice."""
    rows = FEATURE_OFFSET * len(vocab) + 1 if rows is None else rows
    needed = FEATURE_OFFSET * (len(vocab) - 1) + shift + vocab[-1]  # largest index + 1
    if not isinstance(rows, int) or rows < needed:
        raise ValueError(f"{owner}: {name} has {rows!r} rows but the features need {needed} (vocabulary {vocab})")
    return rows


def _shifted(ids: Tensor, shift: int) -> Tensor:
    """Category ids ``(n, F)`` -> rows of the shared table: ``id + shift + 512 f`` (v1's +1 offsets and +1 pads)."""
    offsets = torch.arange(ids.shape[1], device=ids.device) * FEATURE_OFFSET + shift
    return ids.long() + offsets


# --------------------------------------------------------------------------------------------------------- layers


class GraphormerLayer(nn.Module):
    """v1 ``EncoderLayer``: ``x + drop(MHA(LN(x), bias))``, then ``x + drop(FFN(LN(x)))`` (pre-LN, GELU, no dropout
    inside the FFN). Dense ``(batch, len, dim)`` with a ``(batch, heads, len, len)`` bias, or packed ``(total, dim)``
    with ``cu_seqlens`` and a packed ``(heads, sum_i len_i²)`` bias."""

    def __init__(
        self, dim: int, ffn_dim: int, num_heads: int, dropout: float, attention_dropout: float, backend: str = "auto"
    ) -> None:
        super().__init__()
        self.self_attention_norm = nn.LayerNorm(dim)
        # proj_drop is the official self_attention_dropout (after the output projection)
        self.self_attention = MultiHeadAttention(
            dim, num_heads, attn_drop=attention_dropout, proj_drop=dropout, backend=backend
        )
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, ffn_dim, act_layer="gelu")
        self.ffn_dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, attn_bias: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int | None = None
    ) -> Tensor:
        x = x + self.self_attention(
            self.self_attention_norm(x), attn_bias=attn_bias, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen
        )
        return x + self.ffn_dropout(self.ffn(self.ffn_norm(x)))


# ----------------------------------------------------------------------------------------------- batch layout


@dataclass(frozen=True)
class _Layout:
    """Index bookkeeping of one batch (every graph ``g``: ``n_g`` nodes, ``T_g = n_g + 1`` tokens).

    Node-pair space: graph ``g``'s ``n_g²`` pairs ``(i, j)`` row-major, graphs in batch order (the layout of
    ``data.spd``). Packed sequences: one per graph, ordered by size (stable), each ``[graph token, its nodes]``, so that
    equal-size graphs are adjacent and the per-sequence attention kernels batch them into one call
    (:func:`formers.kernels.varlen.per_sequence`). Token space: each sequence's ``T²`` token pairs row-major, in
    sequence order (the packed bias).
    """

    num_graphs: int
    sizes: Tensor  # (G,) n_g
    node_graph: Tensor  # (N,) graph of each node
    ptr: Tensor  # (G + 1,) first node of each graph
    pair_offset: Tensor  # (G + 1,) first node pair of each graph
    pair_graph: Tensor  # (P,)
    pair_i: Tensor  # (P,) local query node
    pair_j: Tensor  # (P,) local key node
    sequence_graph: Tensor  # (G,) graph of each packed sequence
    cu_seqlens: Tensor  # int32 (G + 1,) over tokens, in sequence order
    max_tokens: int
    token_pair_count: int  # Q = sum T_g²
    pair_to_token_pair: Tensor  # (P,) position of node pair (i, j) in token space: (1 + i, 1 + j)
    graph_token_pos: Tensor  # (G,) packed position of each graph's token
    node_token_pos: Tensor  # (N,) packed position of each node

    @classmethod
    def of(cls, ptr: Tensor) -> _Layout:
        device = ptr.device
        sizes = ptr[1:] - ptr[:-1]
        num_graphs, num_nodes = sizes.numel(), int(ptr[-1])
        graphs = torch.arange(num_graphs, device=device)
        node_graph = graphs.repeat_interleave(sizes, output_size=num_nodes)
        squares = sizes * sizes
        pair_offset = torch.cat([sizes.new_zeros(1), squares.cumsum(0)])
        num_pairs = int(pair_offset[-1])
        pair_graph = graphs.repeat_interleave(squares, output_size=num_pairs)
        local = torch.arange(num_pairs, device=device) - pair_offset[pair_graph]
        n_of_pair = sizes[pair_graph]
        pair_i, pair_j = local // n_of_pair, local % n_of_pair

        sequence_graph = torch.sort(sizes, stable=True).indices
        tokens = sizes[sequence_graph] + 1  # per sequence
        cu_seqlens = torch.cat([sizes.new_zeros(1), tokens.cumsum(0)])
        token_offset = torch.cat([sizes.new_zeros(1), (tokens * tokens).cumsum(0)])
        rank = torch.empty_like(sequence_graph)
        rank[sequence_graph] = graphs  # sequence of each graph
        start, pair_start = cu_seqlens[rank], token_offset[rank]  # per graph
        return cls(
            num_graphs=num_graphs,
            sizes=sizes,
            node_graph=node_graph,
            ptr=ptr,
            pair_offset=pair_offset,
            pair_graph=pair_graph,
            pair_i=pair_i,
            pair_j=pair_j,
            sequence_graph=sequence_graph,
            cu_seqlens=cu_seqlens.to(torch.int32),
            max_tokens=int(tokens.max()) if num_graphs else 0,
            token_pair_count=int(token_offset[-1]),
            pair_to_token_pair=pair_start[pair_graph] + (1 + pair_i) * (n_of_pair + 1) + 1 + pair_j,
            graph_token_pos=start,
            node_token_pos=start[node_graph] + 1 + torch.arange(num_nodes, device=device) - ptr[node_graph],
        )

    def token_pair_rc(self) -> tuple[Tensor, Tensor, Tensor]:
        """Graph, row and column of every token pair ``(Q,)`` (token space)."""
        tokens = self.sizes[self.sequence_graph] + 1
        squares = tokens * tokens
        offset = torch.cat([squares.new_zeros(1), squares.cumsum(0)])
        sequence = torch.arange(self.num_graphs, device=tokens.device).repeat_interleave(
            squares, output_size=self.token_pair_count
        )
        local = torch.arange(self.token_pair_count, device=tokens.device) - offset[sequence]
        return self.sequence_graph[sequence], local // tokens[sequence], local % tokens[sequence]


# ---------------------------------------------------------------------------------------------------------- model


class Graphormer(FormersModel):
    """Graphormer on a PyG ``Batch`` carrying :class:`~formers.graph.encodings.shortest_paths.ShortestPaths`.

    Args:
        num_atom_types: categories of each node feature column (an int: one column). All columns share one table
            with :data:`FEATURE_OFFSET` rows per column (the official layout).
        num_bond_types: categories of each edge feature column; ``None``: no edge features (no multi-hop edge
            encoding; graphs then need only ``data.spd``).
        out_dim: outputs per graph (or per node with ``node_level``).
        num_layers, dim, num_heads, ffn_dim: transformer sizes (v1 ``n_layers``, ``hidden_dim``, ``num_heads``,
            ``ffn_dim``).
        dropout, attention_dropout, input_dropout: v1 ``dropout_rate``, ``attention_dropout_rate``,
            ``intput_dropout_rate``.
        multi_hop_max_dist: hops of each path that carry edge features (v1: ZINC 20, PCQM4M / OGB 5).
        atom_table_size, edge_table_size: rows of the shared atom / edge tables (``None``: ``512 * columns + 1``, the
            official non-ZINC size; ZINC: 64).
        num_spatial, num_degree, num_edge_dis: rows of the spatial, degree and per-hop (``x H²``) tables (official:
            512, 512, 128; ZINC: 40, 64, 40).
        node_level: predict per node (head on the node tokens) instead of per graph (head on the graph token).
        backend: attention backend of every layer's :class:`~formers.core.layers.MultiHeadAttention` (``"auto"``;
            :func:`formers.core.attention.set_attention_backend` and ``use_backend`` reach them too).

    Shapes:
        - data.x: long ``(N, F)`` (or ``(N,)`` for one column); data.edge_index: long ``(2, E)``; data.edge_attr:
          long ``(E, F_e)`` (or ``(E,)``); data.spd, data.spd_next: integer ``(sum_g n_g²,)``
        - output: ``(num_graphs, out_dim)``, or ``(N, out_dim)`` with ``node_level``
    """

    def __init__(
        self,
        num_atom_types: int | Sequence[int],
        num_bond_types: int | Sequence[int] | None = None,
        out_dim: int = 1,
        *,
        num_layers: int = 12,
        dim: int = 80,
        num_heads: int = 8,
        ffn_dim: int = 80,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        input_dropout: float = 0.1,
        multi_hop_max_dist: int = 20,
        atom_table_size: int | None = None,
        edge_table_size: int | None = None,
        num_spatial: int = 512,
        num_degree: int = 512,
        num_edge_dis: int = 128,
        node_level: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, out_dim=out_dim, num_layers=num_layers, dim=dim, num_heads=num_heads, ffn_dim=ffn_dim)
        check_positive(owner, multi_hop_max_dist=multi_hop_max_dist, num_edge_dis=num_edge_dis)
        check_probability(owner, dropout=dropout, attention_dropout=attention_dropout, input_dropout=input_dropout)
        if dim % num_heads:
            raise ValueError(f"{owner}: dim {dim} is not divisible by num_heads {num_heads}")
        if not isinstance(num_spatial, int) or num_spatial < 3:
            raise ValueError(f"{owner}: num_spatial must be an int >= 3 (padding, distance 0, ...), got {num_spatial}")
        if not isinstance(num_degree, int) or num_degree < 2:
            raise ValueError(f"{owner}: num_degree must be an int >= 2 (padding, degree 0, ...), got {num_degree}")
        self.num_atom_types = _vocab(owner, "num_atom_types", num_atom_types)
        self.num_bond_types = _vocab(owner, "num_bond_types", num_bond_types)
        self.out_dim, self.num_heads, self.dim, self.node_level = out_dim, num_heads, dim, node_level
        self.num_layers, self.num_spatial, self.num_degree = num_layers, num_spatial, num_degree
        self.multi_hop_max_dist = multi_hop_max_dist

        atom_rows = _shared_table_rows(owner, "atom_table_size", self.num_atom_types, 2, atom_table_size)
        self.atom_encoder = nn.Embedding(atom_rows, dim, padding_idx=0)
        if self.num_bond_types is not None:
            if multi_hop_max_dist > num_edge_dis:
                raise ValueError(
                    f"{owner}: multi_hop_max_dist {multi_hop_max_dist} exceeds the {num_edge_dis} per-hop matrices"
                )
            edge_rows = _shared_table_rows(owner, "edge_table_size", self.num_bond_types, 3, edge_table_size)
            self.edge_encoder = nn.Embedding(edge_rows, num_heads, padding_idx=0)
            self.edge_dis_encoder = nn.Embedding(num_edge_dis * num_heads * num_heads, 1)
        self.spatial_pos_encoder = nn.Embedding(num_spatial, num_heads, padding_idx=0)
        self.in_degree_encoder = nn.Embedding(num_degree, dim, padding_idx=0)
        self.out_degree_encoder = nn.Embedding(num_degree, dim, padding_idx=0)
        self.graph_token = nn.Embedding(1, dim)
        self.graph_token_virtual_distance = nn.Embedding(1, num_heads)
        self.input_dropout = nn.Dropout(input_dropout)
        self.layers = nn.ModuleList(
            GraphormerLayer(dim, ffn_dim, num_heads, dropout, attention_dropout, backend) for _ in range(num_layers)
        )
        self.final_ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.reset_parameters()

    @property
    def has_edge_features(self) -> bool:
        return self.num_bond_types is not None

    def reset_parameters(self) -> None:
        """v1 ``init_params``: Linear ``N(0, 0.02 / sqrt(num_layers))`` with zero bias, Embedding ``N(0, 0.02)``;
        then the ``padding_idx`` rows are zeroed (v1 re-draws them too, see the module docstring: hop padding)."""
        std = 0.02 / math.sqrt(self.num_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    # ---------------------------------------------------------------------------------------------- forward

    def forward(self, data: Data | Batch) -> Tensor:
        """Padding-free: all graphs' tokens packed, block-diagonal attention with each graph's own bias."""
        inputs = self._unpack(data)
        layout = _Layout.of(inputs["ptr"])
        tokens = self._tokens(inputs, layout)  # (N + G, dim)
        bias = self._token_pair_bias(inputs, layout).t().contiguous()  # (H, Q): the packed per-graph bias
        x = self.input_dropout(tokens)
        for layer in self.layers:
            x = layer(x, bias, cu_seqlens=layout.cu_seqlens, max_seqlen=layout.max_tokens)
        return self._readout(x, layout)

    def forward_padded(self, data: Data | Batch) -> Tensor:
        """The official collator's layout on the same weights: every graph padded to the batch's largest, a dense
        ``(G, H, T, T)`` bias with ``-inf`` on padding keys, dense attention. Same output as :meth:`forward`."""
        inputs = self._unpack(data)
        layout = _Layout.of(inputs["ptr"])
        size = layout.max_tokens
        token_index = torch.cat([layout.graph_token_pos, layout.node_token_pos])
        graph_of_token = torch.cat([torch.arange(layout.num_graphs, device=token_index.device), layout.node_graph])
        padded_pos = graph_of_token * size + token_index - layout.graph_token_pos[graph_of_token]
        padded_pos = padded_pos[torch.argsort(token_index)]  # padded position of each packed token (batch order)
        x = unpack(self.input_dropout(self._tokens(inputs, layout)), padded_pos, layout.num_graphs, size)
        bias = self._padded_bias(self._token_pair_bias(inputs, layout), layout)
        for layer in self.layers:
            x = layer(x, bias)
        return self._readout(x.flatten(0, 1)[padded_pos], layout)

    def _readout(self, packed: Tensor, layout: _Layout) -> Tensor:
        rows = layout.node_token_pos if self.node_level else layout.graph_token_pos
        return self.head(self.final_ln(packed[rows]))

    # ------------------------------------------------------------------------------------------------ tokens

    def _tokens(self, inputs: dict[str, Any], layout: _Layout) -> Tensor:
        """Packed ``(N + G, dim)``: each graph's token, then its nodes' atom + degree embeddings."""
        x, edge_index = inputs["x"], inputs["edge_index"]
        num_nodes = x.shape[0]
        nodes = self.atom_encoder(_shifted(x, 2)).sum(dim=-2)
        degree = (self._degree(edge_index, num_nodes) + 1).clamp_max(self.num_degree - 1)
        nodes = nodes + self.in_degree_encoder(degree) + self.out_degree_encoder(degree)  # v1: in_degree for both
        graph_tokens = self.graph_token.weight.expand(layout.num_graphs, -1)
        order = torch.empty(num_nodes + layout.num_graphs, dtype=torch.long, device=x.device)
        order[layout.graph_token_pos] = torch.arange(layout.num_graphs, device=x.device)
        order[layout.node_token_pos] = torch.arange(num_nodes, device=x.device) + layout.num_graphs
        return torch.cat([graph_tokens, nodes]).index_select(0, order)

    @staticmethod
    def _degree(edge_index: Tensor, num_nodes: int) -> Tensor:
        """v1 ``adj.long().sum(dim=1)``: distinct targets of each node's outgoing edges (a self-loop counts)."""
        if edge_index.shape[1] == 0:
            return edge_index.new_zeros(num_nodes)
        pairs = torch.unique(edge_index[0] * num_nodes + edge_index[1])
        return torch.bincount(pairs // num_nodes, minlength=num_nodes)

    # -------------------------------------------------------------------------------------------------- bias

    def _token_pair_bias(self, inputs: dict[str, Any], layout: _Layout) -> Tensor:
        """``(Q, H)``: each graph's ``(T, T)`` bias row-major, graphs in order; the graph token's row and column
        hold the virtual distance, node pairs the spatial (+ edge) bias."""
        spd = inputs["spd"]
        # v1 floyd_warshall: unreachable pairs, and any distance >= 510, become 510
        distance = torch.where(spd < 0, UNREACHABLE_DISTANCE, spd).clamp_max(UNREACHABLE_DISTANCE)
        pair_bias = self.spatial_pos_encoder((distance + 1).clamp_max(self.num_spatial - 1))  # (P, H)
        if self.has_edge_features:
            pair_bias = pair_bias + self._multi_hop_edge_bias(inputs, layout, distance)
        virtual = self.graph_token_virtual_distance.weight.expand(layout.token_pair_count, -1)
        return virtual.index_copy(0, layout.pair_to_token_pair, pair_bias)

    def _multi_hop_edge_bias(self, inputs: dict[str, Any], layout: _Layout, distance: Tensor) -> Tensor:
        """``(P, H)``: v1's multi-hop edge encoding. The stored next-hop matrix is walked for all pairs at once (one
        gather per hop, no autograd); the per-hop edge terms ``EdgeEmb(e) @ W_n`` are computed per edge, not per pair,
        and reach the pairs through one gather and one ``index_add``."""
        max_hops, heads = self.multi_hop_max_dist, self.num_heads
        edge_index, spd_next = inputs["edge_index"], inputs["spd_next"]
        hops = torch.where(distance == UNREACHABLE_DISTANCE, 0, distance).clamp_max(max_hops)  # real hops (0: diagonal)
        divisor = distance.clamp(1, max_hops).unsqueeze(-1).to(torch.float32)  # v1's spatial_pos_ arithmetic
        hop_weights = self.edge_dis_encoder.weight.view(-1, heads, heads)  # (num_edge_dis, H, H)
        steps = int(hops.max()) if hops.numel() else 0
        edge_emb = self.edge_encoder(_shifted(inputs["edge_attr"], 3)).mean(dim=-2)  # (E, H)
        edge_terms = (edge_emb @ hop_weights[:steps]).flatten(0, 1)  # (steps * E, H): row n * E + e

        with torch.no_grad():  # the walk: integer indices only
            walkers = (hops > 0).nonzero().squeeze(1)  # pairs with at least one hop
            graph = layout.pair_graph[walkers]
            base, size, target = layout.pair_offset[graph], layout.sizes[graph], layout.pair_j[walkers]
            # (local source, local target) -> edge id in node-pair space: the walk's edge lookup table
            src_graph = layout.node_graph[edge_index[0]]
            src = edge_index[0] - layout.ptr[src_graph]
            dst = edge_index[1] - layout.ptr[src_graph]
            edge_at = torch.full_like(hops, -1)
            edge_at[layout.pair_offset[src_graph] + src * layout.sizes[src_graph] + dst] = torch.arange(
                edge_index.shape[1], device=hops.device
            )
            current, rows = layout.pair_i[walkers], []
            for hop in range(steps):  # a pair whose path is done stays at its target (masked out below)
                following = spd_next[base + current * size + target].long()
                edge = edge_at[base + current * size + following.clamp_min(0)]
                rows.append(torch.where((following < 0) | (edge < 0), -1, hop * edge_emb.shape[0] + edge))
                current = torch.where(following < 0, current, following)
            rows = torch.stack(rows) if rows else walkers.new_zeros(0, walkers.numel())  # (steps, walkers)
            real = torch.arange(steps, device=hops.device)[:, None] < hops[walkers][None, :]
            if bool((rows[real] < 0).any()):
                raise ValueError(
                    f"{type(self).__name__}: data.{NEXT_KEY} walks over a pair of nodes that data.edge_index does "
                    "not connect; recompute ShortestPaths after any transform that changes the edges"
                )
            pair_of_term = walkers.expand(steps, -1)[real]
            term = rows[real]
        total = edge_emb.new_zeros(hops.shape[0], heads).index_add(0, pair_of_term, edge_terms[term])
        return (total + self._hop_padding(layout, hops, distance, hop_weights)) / divisor

    def _hop_padding(self, layout: _Layout, hops: Tensor, distance: Tensor, hop_weights: Tensor) -> Tensor:
        """``(P, H)``: ``sum_{n = hops}^{D_g - 1} EdgeEmb[0] @ W_n``, the official padded hops of graph ``g`` in a batch
        of its own (``D_g = min(its largest distance, multi_hop_max_dist)``). Zero unless ``EdgeEmb[0]`` is non-zero,
        as in official checkpoints; ``EdgeEmb[0]`` gets no gradient (v1: ``padding_idx``)."""
        longest = torch.zeros_like(layout.sizes).scatter_reduce(0, layout.pair_graph, distance, "amax")
        longest = longest.clamp_max(self.multi_hop_max_dist)  # (G,)
        steps = int(longest.max()) if longest.numel() else 0
        per_hop = self.edge_encoder.weight[0].detach() @ hop_weights[:steps]  # (steps, H)
        before = torch.cat([per_hop.new_zeros(1, self.num_heads), per_hop.cumsum(0)])  # before[n] = sum_{m < n}
        return before[longest[layout.pair_graph]] - before[hops]

    def _padded_bias(self, token_pair_bias: Tensor, layout: _Layout) -> Tensor:
        """``(G, H, T, T)``: the packed bias in the padded layout; ``-inf`` on padding keys (rows of padding queries
        see the real keys with bias 0, as in the official collator)."""
        size, heads = layout.max_tokens, self.num_heads
        graph, row, col = layout.token_pair_rc()
        tokens = layout.sizes + 1
        keys = torch.arange(size, device=tokens.device)
        pad_key = (keys[None, :] >= tokens[:, None])[:, None, :, None].expand(-1, size, -1, heads)  # (G, T, T, H)
        base = torch.zeros(pad_key.shape, dtype=token_pair_bias.dtype, device=tokens.device)
        base = base.masked_fill(pad_key, float("-inf")).view(-1, heads)
        dense = base.index_copy(0, (graph * size + row) * size + col, token_pair_bias)
        return dense.view(layout.num_graphs, size, size, heads).permute(0, 3, 1, 2)

    # ------------------------------------------------------------------------------------------------ inputs

    def _unpack(self, data: Any) -> dict[str, Any]:
        """The checked tensors of ``data`` (errors name the field and the fix)."""
        owner = type(self).__name__
        if not isinstance(data, Data | Batch):
            raise TypeError(f"{owner} expects one PyG Data or Batch, got {type(data).__name__}")
        x, edge_index = data.x, data.edge_index
        if x is None or edge_index is None:
            raise ValueError(f"{owner}: the batch needs `x` and `edge_index`")
        x = self._categories(owner, "data.x", x, self.num_atom_types, None)
        num_nodes = x.shape[0]
        if num_nodes == 0:
            raise ValueError(f"{owner}: the batch has no nodes")
        check_edge_index(owner, edge_index, num_nodes)
        ptr = self._ptr(owner, data, num_nodes, x.device)
        inputs = {"x": x, "edge_index": edge_index, "ptr": ptr}
        num_pairs = int((ptr[1:] - ptr[:-1]).square().sum())
        inputs["spd"] = self._pairwise(owner, data, SPD_KEY, num_pairs, ptr)
        if self.has_edge_features:
            edge_attr = getattr(data, "edge_attr", None)
            if edge_attr is None:
                raise ValueError(f"{owner}: data.edge_attr (bond categories) is missing; the model has num_bond_types")
            inputs["edge_attr"] = self._categories(
                owner, "data.edge_attr", edge_attr, self.num_bond_types, edge_index.shape[1]
            )
            inputs["spd_next"] = self._pairwise(owner, data, NEXT_KEY, num_pairs, ptr)
        # a graph whose only edges are between its own nodes: the paths and pair tables assume it
        if edge_index.numel():
            graph_of = torch.bucketize(edge_index.contiguous(), ptr[1:].contiguous(), right=True)
            if bool((graph_of[0] != graph_of[1]).any()):
                raise ValueError(f"{owner}: data.edge_index connects nodes of different graphs")
        return inputs

    @staticmethod
    def _categories(owner: str, name: str, ids: Any, vocab: tuple[int, ...], rows: int | None) -> Tensor:
        """Check a category tensor ``(rows, F)`` (``(rows,)`` for one column) against its vocabulary."""
        if not isinstance(ids, Tensor):
            raise TypeError(f"{owner}: {name} must be a tensor of category ids, got {type(ids).__name__}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{owner}: {name} must hold integer category ids, got {ids.dtype}")
        if ids.dim() == 1 and len(vocab) == 1:
            ids = ids.unsqueeze(1)
        if ids.dim() != 2 or ids.shape[1] != len(vocab) or (rows is not None and ids.shape[0] != rows):
            want = "num_nodes" if rows is None else rows
            raise ValueError(f"{owner}: {name} must have shape ({want}, {len(vocab)}), got {tuple(ids.shape)}")
        if ids.numel():
            low, high = ids.amin(0), ids.amax(0)
            limit = torch.tensor(vocab, device=ids.device)
            if bool((low < 0).any() or (high >= limit).any()):
                raise ValueError(
                    f"{owner}: {name} has ids outside the vocabulary {vocab} (column minima {low.tolist()}, maxima "
                    f"{high.tolist()})"
                )
        return ids

    @staticmethod
    def _ptr(owner: str, data: Any, num_nodes: int, device: torch.device) -> Tensor:
        ptr = getattr(data, "ptr", None)
        if ptr is None:
            if getattr(data, "batch", None) is not None and bool((data.batch != 0).any()):
                raise ValueError(f"{owner}: data.batch has several graphs but no data.ptr; batch them with PyG")
            return torch.tensor([0, num_nodes], device=device)
        if not isinstance(ptr, Tensor) or ptr.dim() != 1 or ptr.dtype != torch.long or int(ptr[-1]) != num_nodes:
            raise ValueError(f"{owner}: data.ptr must be a torch.long vector of graph offsets ending at {num_nodes}")
        if bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(f"{owner}: data.ptr must be non-decreasing")
        return ptr

    @staticmethod
    def _pairwise(owner: str, data: Any, key: str, num_pairs: int, ptr: Tensor) -> Tensor:
        value = getattr(data, key, None)
        if value is None:
            raise ValueError(
                f"{owner}: data.{key} is missing; compute it once per graph with "
                "formers.graph.encodings.shortest_paths.ShortestPaths() (e.g. as the dataset's pre_transform)"
            )
        if not isinstance(value, Tensor) or value.is_floating_point() or value.dtype == torch.bool:
            raise TypeError(
                f"{owner}: data.{key} must be an integer tensor (int16 from ShortestPaths), got "
                f"{getattr(value, 'dtype', type(value).__name__)}"
            )
        if value.dim() != 1 or value.shape[0] != num_pairs:
            raise ValueError(
                f"{owner}: data.{key} must have shape (sum of n_g², ) = ({num_pairs},) for graphs of "
                f"{(ptr[1:] - ptr[:-1]).tolist()[:8]} nodes, got {tuple(value.shape)}"
            )
        return value.long()

    # ---------------------------------------------------------------------------------------------- FormersModel

    def _example_sizes(self, batch_size: int) -> list[int]:
        return [4 + (5 * i) % 9 for i in range(batch_size)]  # mixed sizes 4, 9, 5, 10, ...

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        """Random connected graphs (a random tree plus one ring bond) of mixed sizes, valid categories and their
        shortest paths."""
        gen = torch.Generator().manual_seed(batch_size)
        graphs = [self._example_graph(n, gen) for n in self._example_sizes(batch_size)]
        return {"data": Batch.from_data_list(graphs).to(self.device)}

    def _example_graph(self, n: int, gen: torch.Generator) -> Data:
        parents = [int(torch.randint(0, i, (), generator=gen)) for i in range(1, n)]
        pairs = [*zip(range(1, n), parents, strict=True), (n - 1, 0)]  # tree + one ring (n >= 4: no duplicate)
        src, dst = zip(*pairs, strict=True)
        data = Data(edge_index=torch.tensor([src + dst, dst + src]), num_nodes=n)
        data.x = torch.stack([torch.randint(0, size, (n,), generator=gen) for size in self.num_atom_types], dim=1)
        if self.has_edge_features:
            bonds = [torch.randint(0, size, (len(pairs),), generator=gen) for size in self.num_bond_types]
            data.edge_attr = torch.stack(bonds, dim=1).repeat(2, 1)  # the same bond in both directions
        return ShortestPaths(with_next=self.has_edge_features)(data)

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        rows = sum(self._example_sizes(batch_size)) if self.node_level else batch_size
        return (rows, self.out_dim)


# ------------------------------------------------------------------------------------------- official checkpoints

_OFFICIAL_KEYS = [
    (r"^layers\.(\d+)\.self_attention\.output_layer\.", r"layers.\1.self_attention.proj."),
    (r"^layers\.(\d+)\.ffn\.layer([12])\.", r"layers.\1.ffn.fc\2."),
    (r"^(downstream_out_proj|out_proj)\.", "head."),
]
_QKV = re.compile(r"^layers\.(\d+)\.self_attention\.linear_([qkv])\.(weight|bias)$")


def checkpoint_filter_fn(state_dict: dict[str, Any], model: Graphormer) -> dict[str, Tensor]:
    """Official v1 Graphormer state dict (or Lightning checkpoint with ``state_dict``) -> ``model``'s keys.

    The embedding tables, norms and graph token keep their official names; per layer ``linear_q/k/v`` are stacked
    into the fused ``qkv`` (heads contiguous, as the official ``view(b, n, heads, d)``), ``output_layer`` becomes
    ``proj``, ``ffn.layer1/2`` become ``ffn.fc1/2``, and the head (``downstream_out_proj`` or PCQM4M's ``out_proj``)
    becomes ``head``. The padding rows are loaded as they are (see the module docstring: hop padding).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    if isinstance(state_dict.get("state_dict"), dict):  # a Lightning checkpoint
        state_dict = state_dict["state_dict"]
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.").removeprefix("model.")
        match = _QKV.match(key)
        if match:
            layer, which, kind = match.groups()
            qkv.setdefault((layer, kind), {})[which] = value
            continue
        for pattern, replacement in _OFFICIAL_KEYS:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"checkpoint_filter_fn: layer {layer} has linear_{sorted(parts)} {kind}, not q, k and v")
        out[f"layers.{layer}.self_attention.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


# ------------------------------------------------------------------------------------------------ named configs

_ZINC_TABLES = {"atom_table_size": 64, "edge_table_size": 64, "num_spatial": 40, "num_degree": 64, "num_edge_dis": 40}
_SLIM = {"num_layers": 12, "dim": 80, "num_heads": 8, "ffn_dim": 80}
_TEST_KWARGS = {"num_layers": 2, "dim": 16, "num_heads": 2, "ffn_dim": 16, "multi_hop_max_dist": 3}


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graphormer_slim(num_atom_types: int = 28, num_bond_types: int = 4, **kwargs: Any) -> Graphormer:
    """Graphormer-Slim, ZINC (v1 README: L 12, d 80, 8 heads, FFN 80, multi_hop 20; ZINC tables 64/64/40/64/40, 28
    atom / 4 bond types, one regression output); 489,481 parameters."""
    return Graphormer(num_atom_types, num_bond_types, **{**_SLIM, "multi_hop_max_dist": 20, **_ZINC_TABLES, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graphormer_small(
    num_atom_types: int | Sequence[int] = MOLECULE_ATOM_VOCAB,
    num_bond_types: int | Sequence[int] | None = MOLECULE_BOND_VOCAB,
    **kwargs: Any,
) -> Graphormer:
    """Graphormer-Small, PCQM4M-LSC (L 6, d 512, 32 heads, FFN 512, multi_hop 5; official tables: atoms 512 x 9 + 1,
    bonds 512 x 3 + 1, spatial / degree 512, 128 hop matrices); 12,550,721 parameters. Official checkpoints expect
    OGB ``smiles2graph`` category ids (9 atom, 3 bond columns)."""
    arch = {"num_layers": 6, "dim": 512, "num_heads": 32, "ffn_dim": 512, "multi_hop_max_dist": 5}
    return Graphormer(num_atom_types, num_bond_types, **{**arch, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graphormer_base(
    num_atom_types: int | Sequence[int] = MOLECULE_ATOM_VOCAB,
    num_bond_types: int | Sequence[int] | None = MOLECULE_BOND_VOCAB,
    **kwargs: Any,
) -> Graphormer:
    """Graphormer, PCQM4M-LSC (L 12, d 768, 32 heads, FFN 768, multi_hop 5; official tables as Small); 47,085,377
    parameters."""
    arch = {"num_layers": 12, "dim": 768, "num_heads": 32, "ffn_dim": 768, "multi_hop_max_dist": 5}
    return Graphormer(num_atom_types, num_bond_types, **{**arch, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graphormer_molecules(
    num_atom_types: int | Sequence[int] = MOLECULE_ATOM_VOCAB,
    num_bond_types: int | Sequence[int] | None = MOLECULE_BOND_VOCAB,
    out_dim: int = 1,
    **kwargs: Any,
) -> Graphormer:
    """The Slim architecture (L 12, d 80, 8 heads, FFN 80) on PyG ``from_smiles`` features (9 atom / 3 bond columns,
    official shared tables, multi_hop 5 as v1's OGB molecule runs) for MoleculeNet HIV (1 logit) and ESOL (1 value)."""
    return Graphormer(num_atom_types, num_bond_types, out_dim, **{**_SLIM, "multi_hop_max_dist": 5, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS)
def graphormer_pattern(
    num_atom_types: int = 3, num_classes: int = 2, num_bond_types: None = None, **kwargs: Any
) -> Graphormer:
    """The Slim architecture as a node classifier on SBM PATTERN (3 input values, 2 classes, no edge features): the
    head reads every node token (the graph token still attends)."""
    return Graphormer(num_atom_types, num_bond_types, num_classes, **{**_SLIM, "node_level": True, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS)
def graphormer_cluster(
    num_atom_types: int = 7, num_classes: int = 6, num_bond_types: None = None, **kwargs: Any
) -> Graphormer:
    """The Slim architecture as a node classifier on SBM CLUSTER (7 input values, 6 classes, no edge features)."""
    return Graphormer(num_atom_types, num_bond_types, num_classes, **{**_SLIM, "node_level": True, **kwargs})

"""Graph Transformer (Dwivedi & Bresson, "A Generalization of Transformer Networks to Graphs", AAAI 2021 DLG workshop,
arXiv 2012.09699): multi-head attention restricted to the graph's edges, with an edge stream gating the scores.

Follows the official code, graphdeeplearning/graphtransformer @ c9cd493 (``layers/graph_transformer_edge_layer.py``,
``layers/graph_transformer_layer.py``, ``layers/mlp_readout_layer.py``, ``nets/*/graph_transformer_net.py``), on PyG
``MessagePassing`` over ``edge_index`` (sparse: no padding, no dense ``n x n`` matrix). For an edge ``j -> i``, per head
of width ``d_k``:

    w_ij  = (K h_j ⊙ Q h_i) / sqrt(d_k) ⊙ E e_ij        a d_k-vector: also the edge stream's new message
    s_ij  = exp(clamp(sum(w_ij), -5, 5))
    h_i'  = sum_j s_ij V h_j / (sum_j s_ij + 1e-6)

(without edge features, the SBM layer: ``s_ij = exp(clamp(K h_j · Q h_i / sqrt(d_k), -5, 5))`` and no ``1e-6``). No
self-loops: a node's own state enters through the residual only. Each stream (nodes, and edges when present) then runs
``O-projection -> residual -> norm -> FFN (d -> 2d -> d, ReLU) -> residual -> norm``: post-norm, BatchNorm by default
(the paper's headline configurations), LayerNorm optional. Q/K/V/E have no bias.

Inputs: atom (node) categories embedded, plus ``Linear(k, d)`` of the Laplacian eigenvectors
(:class:`formers.graph.encodings.laplacian.LaplacianPE`, computed once by the data stage) whose column signs are flipped
at random once per training forward, shared by every graph of the batch (the official ``train_epoch``); no flip in
eval. Graph tasks: mean over nodes -> ``MLPReadout`` (d -> d/2 -> d/4 -> out). Node tasks (SBM PATTERN / CLUSTER):
``MLPReadout`` on every node.

Parameter counts equal the official classes': ZINC 588,929, PATTERN 522,982, CLUSTER 524,026 (tests). The last
layer's edge stream (O_e, norms, FFN_e) exists in the official net but never reaches the output; it is kept, so that
counts and official state dicts match, and frozen (``requires_grad=False``) and skipped in ``forward``: the official
optimizer never updates it either (its gradient is ``None``).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from formers.core.layers._checks import check_positive, check_probability, resolve_head_dim
from formers.core.models import FormersModel
from formers.core.registry import register_model
from formers.graph.encodings.laplacian import LaplacianPE
from formers.graph.models.encoders import (
    MOLECULE_ATOM_VOCAB,
    MOLECULE_BOND_VOCAB,
    CategoricalEncoder,
    check_edge_index,
    check_vocab_sizes,
)

__all__ = [
    "CategoricalEncoder",
    "GraphTransformerAttention",
    "GraphTransformerLayer",
    "MLPReadout",
    "GraphTransformer",
    "checkpoint_filter_fn",
    "graph_transformer_zinc",
    "graph_transformer_pattern",
    "graph_transformer_cluster",
    "graph_transformer_molecules",
]

_SCORE_CLAMP = 5.0  # official: exp(score.clamp(-5, 5)), "for softmax numerical stability"
_EDGE_EPS = 1e-6  # official edge layer: wV / (z + 1e-6); the SBM layer divides by z alone


class GraphTransformerAttention(MessagePassing):
    """Multi-head attention over the edges ``j -> i`` of ``edge_index`` (Q from the destination ``i``, K and V from the
    source ``j``), optionally gated per dimension by the edge features.

    Shapes: ``h`` ``(n, dim)``, ``e`` ``(E, dim)`` or ``None`` -> ``(n, dim)`` and the per-dimension edge scores
    ``(E, dim)`` (``None`` without edge features).
    """

    def __init__(self, dim: int, num_heads: int, *, edge_gated: bool, bias: bool = False) -> None:
        super().__init__(aggr="add", node_dim=0)
        self.num_heads = num_heads
        self.head_dim = resolve_head_dim(type(self).__name__, dim, num_heads)
        self.scale = math.sqrt(self.head_dim)
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.e_proj = nn.Linear(dim, dim, bias=bias) if edge_gated else None

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        n, per_head = h.shape[0], (self.num_heads, self.head_dim)
        q, k, v = (proj(h).view(n, *per_head) for proj in (self.q_proj, self.k_proj, self.v_proj))
        gate = None if self.e_proj is None else self.e_proj(e).view(-1, *per_head)
        scores = self.edge_updater(edge_index, q=q, k=k, gate=gate, size=(n, n))  # (E, heads, head_dim)
        out = self.propagate(edge_index, v=v, scores=scores, size=(n, n))  # (n, heads, head_dim + 1)
        weighted, norm = out.split([self.head_dim, 1], dim=-1)
        if self.e_proj is None:
            # official SBM layer: wV / z. z >= exp(-5) wherever a node has an in-edge; clamping only keeps a node
            # without in-edges at 0 instead of 0 / 0
            h_out = weighted / norm.clamp_min(torch.finfo(norm.dtype).tiny)
        else:
            h_out = weighted / (norm + _EDGE_EPS)
        e_out = None if self.e_proj is None else scores.reshape(scores.shape[0], -1)
        return h_out.reshape(n, -1), e_out

    def edge_update(self, q_i: Tensor, k_j: Tensor, gate: Tensor | None) -> Tensor:
        scores = k_j * q_i / self.scale  # per dimension (the SBM layer sums them at once: same sum below)
        return scores if gate is None else scores * gate

    def message(self, v_j: Tensor, scores: Tensor) -> Tensor:
        weight = scores.sum(dim=-1, keepdim=True).clamp(-_SCORE_CLAMP, _SCORE_CLAMP).exp()
        return torch.cat([v_j * weight, weight], dim=-1)  # numerator and denominator in one scatter


def _post_norm(dim: int, layer_norm: bool, batch_norm: bool) -> nn.Sequential:
    """The official order when both are on: LayerNorm, then BatchNorm (empty: identity)."""
    norms: OrderedDict[str, nn.Module] = OrderedDict()
    if layer_norm:
        norms["layer_norm"] = nn.LayerNorm(dim)
    if batch_norm:
        norms["batch_norm"] = nn.BatchNorm1d(dim)
    return nn.Sequential(norms)


class FeedForward(nn.Module):
    """``fc2(dropout(relu(fc1(x))))``, ``dim -> 2 dim -> dim``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2, self.dropout = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), dropout

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.dropout(F.relu(self.fc1(x)), self.dropout, self.training))


class Stream(nn.Module):
    """What follows the attention for one stream (nodes or edges): ``O -> residual -> norm -> FFN -> residual ->
    norm`` (post-norm), with dropout on the attention output."""

    def __init__(self, dim: int, dropout: float, layer_norm: bool, batch_norm: bool, residual: bool) -> None:
        super().__init__()
        self.dropout, self.residual = dropout, residual
        self.out_proj = nn.Linear(dim, dim)
        self.norm1 = _post_norm(dim, layer_norm, batch_norm)
        self.ffn = FeedForward(dim, dropout)
        self.norm2 = _post_norm(dim, layer_norm, batch_norm)

    def forward(self, x: Tensor, attn_out: Tensor) -> Tensor:
        y = self.out_proj(F.dropout(attn_out, self.dropout, self.training))
        x = self.norm1(x + y if self.residual else y)
        y = self.ffn(x)
        return self.norm2(x + y if self.residual else y)


class GraphTransformerLayer(nn.Module):
    """One Graph Transformer layer: edge attention, then the node stream and (with edge features) the edge stream.

    Shapes: ``h`` ``(n, dim)``, ``e`` ``(E, dim)`` or ``None`` -> the same.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        edge_stream: bool,
        dropout: float = 0.0,
        layer_norm: bool = False,
        batch_norm: bool = True,
        residual: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.attn = GraphTransformerAttention(dim, num_heads, edge_gated=edge_stream, bias=bias)
        self.node = Stream(dim, dropout, layer_norm, batch_norm, residual)
        self.edge = Stream(dim, dropout, layer_norm, batch_norm, residual) if edge_stream else None

    def forward(
        self, h: Tensor, edge_index: Tensor, e: Tensor | None = None, update_edges: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        h_attn, e_attn = self.attn(h, edge_index, e)
        h = self.node(h, h_attn)
        if self.edge is not None and update_edges:
            e = self.edge(e, e_attn)
        return h, e


class MLPReadout(nn.Module):
    """The official ``MLPReadout``: ``num_hidden`` halving Linear + ReLU layers, then a Linear to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, num_hidden: int = 2) -> None:
        super().__init__()
        widths = [in_dim // 2**i for i in range(num_hidden + 1)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.layers.append(nn.Linear(widths[-1], out_dim))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class GraphTransformer(FormersModel):
    """Graph Transformer on a PyG ``Batch``: graph-level ``(num_graphs, out_dim)`` or, with ``node_level=True``,
    node-level ``(num_nodes, out_dim)`` outputs.

    The batch holds ``x`` (``(n,)`` / ``(n, columns)`` integer categories), ``edge_index`` ``(2, E)`` (both directions
    of every bond; no self-loops needed or wanted), ``edge_attr`` (integer bond categories, when
    ``num_bond_types`` is given) and ``lap_pe`` (float ``(n, pe_dim)``, from
    :class:`~formers.graph.encodings.laplacian.LaplacianPE`, when ``pe_dim > 0``).

    Args:
        num_atom_types: node vocabulary: an int (one column, one embedding: the official layout) or one size per
            column (an embedding per column, summed).
        num_bond_types: edge vocabulary likewise; ``None``: no edge features.
        out_dim: outputs per graph (regression targets, logits) or, node-level, classes per node.
        node_level: predict per node (the SBM nets) instead of pooling (the molecule nets).
        hidden_dim, num_layers, num_heads: width, depth, heads (head width ``hidden_dim / num_heads``).
        pe_dim: Laplacian eigenvectors added to the input (``Linear(pe_dim, hidden_dim)``); 0: none.
        edge_stream: run the edge stream (gated scores, edge updates). ``None``: iff ``num_bond_types`` is given. True
            without ``num_bond_types`` is the official ``edge_feat: false`` ZINC variant (every edge starts from
            ``Linear(1, d)`` of a constant 1).
        dropout: on attention outputs and inside the FFN; in_feat_dropout: on the input embedding.
        layer_norm, batch_norm: post-norms (both: LayerNorm then BatchNorm, as the official code).
        residual: residual connections.
        bias: bias of the Q/K/V/E projections (official ``use_bias``, off).
        readout: graph pooling ``"mean"`` (official default), ``"sum"`` or ``"max"``.
        flip_pe_sign: draw a random ±1 per eigenvector column in every training forward (torch's CPU RNG, as the
            official ``torch.rand(k) >= 0.5``); off: the encoding is used as stored.
    """

    def __init__(
        self,
        num_atom_types: int | Sequence[int] = 28,
        num_bond_types: int | Sequence[int] | None = 4,
        out_dim: int = 1,
        *,
        node_level: bool = False,
        hidden_dim: int = 64,
        num_layers: int = 10,
        num_heads: int = 8,
        pe_dim: int = 8,
        edge_stream: bool | None = None,
        dropout: float = 0.0,
        in_feat_dropout: float = 0.0,
        layer_norm: bool = False,
        batch_norm: bool = True,
        residual: bool = True,
        bias: bool = False,
        readout: str = "mean",
        flip_pe_sign: bool = True,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, out_dim=out_dim, hidden_dim=hidden_dim, num_layers=num_layers, num_heads=num_heads)
        check_probability(owner, dropout=dropout, in_feat_dropout=in_feat_dropout)
        if not isinstance(pe_dim, int) or pe_dim < 0:
            raise ValueError(f"{owner}: pe_dim must be an int >= 0 (0: no Laplacian PE), got {pe_dim!r}")
        if readout not in ("mean", "sum", "max"):
            raise ValueError(f"{owner}: readout must be 'mean', 'sum' or 'max', got {readout!r}")
        if hidden_dim // 4 < 1:
            raise ValueError(f"{owner}: hidden_dim must be >= 4 (the readout MLP halves it twice), got {hidden_dim}")
        self.num_atom_types = check_vocab_sizes(owner, "num_atom_types", num_atom_types)
        self.num_bond_types = (
            None if num_bond_types is None else check_vocab_sizes(owner, "num_bond_types", num_bond_types)
        )
        self.edge_stream = self.num_bond_types is not None if edge_stream is None else bool(edge_stream)
        if self.num_bond_types is not None and not self.edge_stream:
            raise ValueError(f"{owner}: num_bond_types needs the edge stream (edge_stream=True or None)")
        self.out_dim, self.node_level, self.pe_dim = out_dim, node_level, pe_dim
        self.readout, self.flip_pe_sign = readout, flip_pe_sign

        self.atom_encoder = CategoricalEncoder(self.num_atom_types, hidden_dim)
        self.pe_encoder = nn.Linear(pe_dim, hidden_dim) if pe_dim else None
        self.bond_encoder: nn.Module | None = None
        if self.num_bond_types is not None:
            self.bond_encoder = CategoricalEncoder(self.num_bond_types, hidden_dim)
        elif self.edge_stream:
            self.bond_encoder = nn.Linear(1, hidden_dim)  # official edge_feat=False: every edge feature is 1
        self.in_feat_dropout = nn.Dropout(in_feat_dropout)
        self.layers = nn.ModuleList(
            GraphTransformerLayer(
                hidden_dim,
                num_heads,
                edge_stream=self.edge_stream,
                dropout=dropout,
                layer_norm=layer_norm,
                batch_norm=batch_norm,
                residual=residual,
                bias=bias,
            )
            for _ in range(num_layers)
        )
        if self.edge_stream:  # never reaches the output (module docstring): kept for the official layout, frozen
            self.layers[-1].edge.requires_grad_(False)
        self.head = MLPReadout(hidden_dim, out_dim)

    # ------------------------------------------------------------------------------------------------------ forward

    def forward(self, data: Data | Batch) -> Tensor:
        x, edge_index, edge_attr, pe, batch, num_graphs = self._unpack(data)
        h = self.atom_encoder(x)
        # the molecule net drops out the atom embedding before adding the PE, the SBM net the sum (both 0 by default)
        if not self.node_level:
            h = self.in_feat_dropout(h)
        if self.pe_encoder is not None:
            h = h + self.pe_encoder(self._maybe_flip_signs(pe))
        if self.node_level:
            h = self.in_feat_dropout(h)
        e = None
        if isinstance(self.bond_encoder, CategoricalEncoder):
            e = self.bond_encoder(edge_attr)
        elif self.bond_encoder is not None:
            e = self.bond_encoder(h.new_ones(edge_index.shape[1], 1))
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h, e = layer(h, edge_index, e, update_edges=i < last)
        if self.node_level:
            return self.head(h)
        return self.head(scatter(h, batch, dim=0, dim_size=num_graphs, reduce=self.readout))

    def _maybe_flip_signs(self, pe: Tensor) -> Tensor:
        """Training: one random ±1 per eigenvector column, shared by the whole batch (official ``train_epoch``:
        ``torch.rand(k)`` on the CPU generator, ``>= 0.5`` -> +1). Eval: unchanged."""
        if not (self.training and self.flip_pe_sign):
            return pe
        sign = torch.where(torch.rand(pe.shape[1]) >= 0.5, 1.0, -1.0)
        return pe * sign.to(device=pe.device, dtype=pe.dtype)

    def _unpack(self, data: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor, int]:
        """``(x, edge_index, edge_attr, lap_pe, batch, num_graphs)`` of ``data``, checked (errors name the field)."""
        owner = type(self).__name__
        if not isinstance(data, Data | Batch):
            raise TypeError(f"{owner} expects one PyG Data or Batch, got {type(data).__name__}")
        x, edge_index = data.x, data.edge_index
        if x is None or edge_index is None:
            raise ValueError(f"{owner}: the batch needs `x` and `edge_index`")
        if not isinstance(x, Tensor) or x.dim() not in (1, 2):
            raise ValueError(f"{owner}: data.x must be (num_nodes, {len(self.num_atom_types)}) category ids")
        n = x.shape[0]
        if n == 0:
            raise ValueError(f"{owner}: the batch has no nodes")
        self.atom_encoder.check(owner, "data.x", x, n)
        check_edge_index(owner, edge_index, n)
        edge_attr = None
        if isinstance(self.bond_encoder, CategoricalEncoder):
            edge_attr = getattr(data, "edge_attr", None)
            if edge_attr is None:
                raise ValueError(f"{owner}: data.edge_attr (bond categories) is missing; the model has num_bond_types")
            self.bond_encoder.check(owner, "data.edge_attr", edge_attr, edge_index.shape[1])
        pe = None
        if self.pe_encoder is not None:
            pe = getattr(data, "lap_pe", None)
            if pe is None:
                raise ValueError(
                    f"{owner}: data.lap_pe is missing; compute it once with "
                    f"formers.graph.encodings.laplacian.LaplacianPE({self.pe_dim}) (or build the model with pe_dim=0)"
                )
            if not isinstance(pe, Tensor) or not pe.is_floating_point():
                raise TypeError(f"{owner}: data.lap_pe must be a floating tensor, got {getattr(pe, 'dtype', pe)}")
            if pe.dim() != 2 or pe.shape[0] != n or pe.shape[1] < self.pe_dim:
                raise ValueError(f"{owner}: data.lap_pe must have shape ({n}, >= {self.pe_dim}), got {tuple(pe.shape)}")
            # columns are ordered by eigenvalue, so the first pe_dim of a wider stored LapPE are LapPE(pe_dim): one
            # prepared dataset serves models of any PE width
            pe = pe[:, : self.pe_dim]
        batch = getattr(data, "batch", None)
        if batch is None:
            batch, num_graphs = edge_index.new_zeros(n), 1
        else:
            if not isinstance(batch, Tensor) or batch.shape != (n,) or batch.dtype != torch.long:
                raise ValueError(f"{owner}: data.batch must be a torch.long vector of {n} graph ids")
            num_graphs = int(data.num_graphs)
        return x, edge_index, edge_attr, pe, batch, num_graphs

    # ----------------------------------------------------------------------------------------------- FormersModel

    def _example_sizes(self, batch_size: int) -> list[int]:
        return [4 + (5 * i) % 9 for i in range(batch_size)]  # mixed sizes 4, 9, 5, 10, ...

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        """Random connected graphs (a random tree plus one ring bond) of mixed, fixed sizes with valid categories and
        their Laplacian PE."""
        graphs = [self._example_graph(n) for n in self._example_sizes(batch_size)]
        return {"data": Batch.from_data_list(graphs).to(self.device)}

    def _example_graph(self, n: int) -> Data:
        parents = [int(torch.randint(0, i, ()).item()) for i in range(1, n)]
        pairs = [*zip(range(1, n), parents, strict=True), (n - 1, 0)]  # tree + one ring (n >= 4: no duplicate)
        src, dst = zip(*pairs, strict=True)
        edge_index = torch.tensor([src + dst, dst + src])
        x = torch.stack([torch.randint(0, size, (n,)) for size in self.num_atom_types], dim=1)
        data = Data(x=x, edge_index=edge_index, num_nodes=n)
        if self.num_bond_types is not None:
            bonds = torch.stack([torch.randint(0, size, (len(pairs),)) for size in self.num_bond_types], dim=1)
            data.edge_attr = torch.cat([bonds, bonds])  # the same bond in both directions
        if self.pe_dim:
            data = LaplacianPE(self.pe_dim)(data)
        return data

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        rows = sum(self._example_sizes(batch_size)) if self.node_level else batch_size
        return (rows, self.out_dim)


# ------------------------------------------------------------------------------------------- official checkpoints

# official GraphTransformerNet key -> this model's key (regex, replacement); the stream of "O", "FFN_layer",
# "batch_norm1" (SBM layer, no edge stream) is the node stream
_OFFICIAL_KEYS = [
    (r"^embedding_h\.", "atom_encoder.embeddings.0."),
    (r"^embedding_lap_pos_enc\.", "pe_encoder."),
    (r"^layers\.(\d+)\.attention\.Q\.", r"layers.\1.attn.q_proj."),
    (r"^layers\.(\d+)\.attention\.K\.", r"layers.\1.attn.k_proj."),
    (r"^layers\.(\d+)\.attention\.V\.", r"layers.\1.attn.v_proj."),
    (r"^layers\.(\d+)\.attention\.proj_e\.", r"layers.\1.attn.e_proj."),
    (r"^layers\.(\d+)\.O(_h)?\.", r"layers.\1.node.out_proj."),
    (r"^layers\.(\d+)\.O_e\.", r"layers.\1.edge.out_proj."),
    (r"^layers\.(\d+)\.(batch|layer)_norm([12])(_h)?\.", r"layers.\1.node.norm\3.\2_norm."),
    (r"^layers\.(\d+)\.(batch|layer)_norm([12])_e\.", r"layers.\1.edge.norm\3.\2_norm."),
    (r"^layers\.(\d+)\.FFN(_h)?_layer([12])\.", r"layers.\1.node.ffn.fc\3."),
    (r"^layers\.(\d+)\.FFN_e_layer([12])\.", r"layers.\1.edge.ffn.fc\2."),
    (r"^MLP_layer\.FC_layers\.", "head.layers."),
]


def checkpoint_filter_fn(state_dict: dict[str, Any], model: GraphTransformer) -> dict[str, Tensor]:
    """An official ``GraphTransformerNet`` state dict (molecules or SBM net; ``torch.save(model.state_dict())``,
    optionally wrapped in ``{"state_dict": ...}`` / ``{"model": ...}`` or DDP-prefixed) -> ``model``'s keys.

    ``embedding_e`` becomes the single-column bond embedding, or the ``Linear(1, d)`` of the ``edge_feat: false``
    variant, whichever ``model`` has. A state dict already in this model's layout passes through unchanged.

    Raises:
        ValueError: keys of the WL positional encoding (not implemented here) or of no known layout.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    bond_prefix = (
        "bond_encoder.embeddings.0." if isinstance(model.bond_encoder, CategoricalEncoder) else "bond_encoder."
    )
    own = set(model.state_dict())
    out, unknown = {}, []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key in own:
            out[key] = value
            continue
        if key.startswith("embedding_wl_pos_enc."):
            raise ValueError("the WL positional encoding (embedding_wl_pos_enc, an ablation) is not implemented here")
        new = re.sub(r"^embedding_e\.", bond_prefix, key)
        for pattern, replacement in _OFFICIAL_KEYS:
            new = re.sub(pattern, replacement, new)
        if new == key:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"keys of neither the official GraphTransformerNet nor this model: {unknown[:8]}")
    return out


# ----------------------------------------------------------------------------------------- official configurations

_PAPER = (
    "A Generalization of Transformer Networks to Graphs (Dwivedi & Bresson, AAAI 2021 DLG workshop, arXiv 2012.09699)"
)
_TEST_KWARGS = {"hidden_dim": 16, "num_layers": 2, "num_heads": 2}
# configs/*_LapPE_*_500k_sparse_graph_BN.json: L 10, 8 heads, BN, residual, no dropout, mean readout, no self-loops
_ZINC = {"hidden_dim": 64, "num_layers": 10, "num_heads": 8, "pe_dim": 8}
_SBM = {"hidden_dim": 80, "num_layers": 10, "num_heads": 8, "num_bond_types": None, "node_level": True}


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graph_transformer_zinc(num_atom_types: int = 28, num_bond_types: int = 4, **kwargs: Any) -> GraphTransformer:
    """ZINC (``molecules_GraphTransformer_LapPE_ZINC_500k_sparse_graph_BN.json``): d 64, 10 layers, 8 heads, LapPE 8,
    28 atom / 4 bond types, one regression output; 588,929 parameters."""
    return GraphTransformer(num_atom_types, num_bond_types, **{**_ZINC, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graph_transformer_pattern(num_atom_types: int = 3, num_classes: int = 2, **kwargs: Any) -> GraphTransformer:
    """SBM PATTERN (``SBMs_GraphTransformer_LapPE_PATTERN_500k_sparse_graph_BN.json``): node classification, d 80,
    10 layers, 8 heads, LapPE 2, node signal vocabulary 3, 2 classes, no edge features; 522,982 parameters."""
    return GraphTransformer(num_atom_types, out_dim=num_classes, **{**_SBM, "pe_dim": 2, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graph_transformer_cluster(num_atom_types: int = 7, num_classes: int = 6, **kwargs: Any) -> GraphTransformer:
    """SBM CLUSTER (``SBMs_GraphTransformer_LapPE_CLUSTER_500k_sparse_graph_BN.json``): node classification, d 80,
    10 layers, 8 heads, LapPE 10, node signal vocabulary 7, 6 classes, no edge features; 524,026 parameters."""
    return GraphTransformer(num_atom_types, out_dim=num_classes, **{**_SBM, "pe_dim": 10, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def graph_transformer_molecules(
    num_atom_types: int | Sequence[int] = MOLECULE_ATOM_VOCAB,
    num_bond_types: int | Sequence[int] | None = MOLECULE_BOND_VOCAB,
    out_dim: int = 1,
    **kwargs: Any,
) -> GraphTransformer:
    """The ZINC architecture on PyG ``from_smiles`` features (9 atom and 3 bond columns, one embedding per column,
    summed) for MoleculeNet HIV (1 logit) and ESOL (1 value)."""
    return GraphTransformer(num_atom_types, num_bond_types, out_dim, **{**_ZINC, **kwargs})

"""GPS (Rampášek et al. 2022) as PyG builds it: the baseline every formers-graph model is trained beside.

This is PyG's own layer (:class:`torch_geometric.nn.GPSConv` with a :class:`~torch_geometric.nn.GINEConv` local
message-passing network) assembled exactly as PyG's ``examples/graph_gps.py``: random-walk structural encodings (RWSE,
20 steps) -> BatchNorm -> Linear to ``rwse_dim`` channels, concatenated to the atom embedding; edge embeddings; 10 GPS
layers with 4 heads and attention dropout 0.5; add-pooling; an MLP ``c -> c/2 -> c/4 -> out``. With ZINC's 28 atom and
4 bond types it has 423,857 parameters (the reference note's count of the example). It is the model a PyG user would
pick instead, so it stays PyG's code: its attention is ``torch.nn.MultiheadAttention`` on a padded batch
(``to_dense_batch``), not formers' attention.

Inputs: a PyG ``Batch`` with ``x`` (long atom/node categories), ``edge_index``, ``edge_attr`` (long bond categories;
absent for graphs without edge features, then one learned edge vector is used), ``rwse`` (``(num_nodes, 20)``, PyG's
``AddRandomWalkPE(20, attr_name="rwse")``) and ``batch``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GINEConv, GPSConv, global_add_pool
from torch_geometric.transforms import AddRandomWalkPE

from formers.core.models import FormersModel
from formers.core.registry import register_model
from formers.graph.models.encoders import MOLECULE_ATOM_VOCAB, MOLECULE_BOND_VOCAB, CategoricalEncoder

__all__ = ["GPS", "gps_zinc", "gps_molecules", "gps_pattern", "gps_cluster"]


def _mlp_readout(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim // 4), nn.ReLU(), nn.Linear(dim // 4, out_dim)
    )


class GPS(FormersModel):
    """PyG's GPS example model (see the module docstring).

    Args:
        num_atom_types: node vocabulary (``int``) or per-column vocabularies.
        num_bond_types: edge vocabulary (``int``/sequence) or ``None`` for graphs without edge features.
        out_dim: outputs per graph (``node_level=False``) or classes per node (``node_level=True``).
        channels: width (64 in the example).
        rwse_dim: channels of the RWSE projection (8), taken out of ``channels`` for the node embedding.
        walk_length: RWSE steps (20).
        num_layers, heads: GPS layers (10) and attention heads (4).
        attn_dropout: dropout of the global attention (0.5 in the example).
        node_level: one output per node (SBM tasks) instead of add-pooling per graph.
    """

    def __init__(
        self,
        num_atom_types: int | Sequence[int] = 28,
        num_bond_types: int | Sequence[int] | None = 4,
        out_dim: int = 1,
        channels: int = 64,
        rwse_dim: int = 8,
        walk_length: int = 20,
        num_layers: int = 10,
        heads: int = 4,
        attn_dropout: float = 0.5,
        node_level: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < rwse_dim < channels:
            raise ValueError(f"GPS: rwse_dim must be in (0, channels={channels}), got {rwse_dim}")
        self.num_atom_types, self.num_bond_types = num_atom_types, num_bond_types
        self.out_dim, self.walk_length, self.node_level = out_dim, walk_length, node_level
        self.node_emb = CategoricalEncoder(num_atom_types, channels - rwse_dim)
        self.pe_norm = nn.BatchNorm1d(walk_length)
        self.pe_lin = nn.Linear(walk_length, rwse_dim)
        if num_bond_types is None:
            self.edge_emb = None
            self.edge_vector = nn.Parameter(torch.zeros(1, channels))  # one learned "edge" for featureless edges
        else:
            self.edge_emb = CategoricalEncoder(num_bond_types, channels)
        self.convs = nn.ModuleList(
            GPSConv(
                channels,
                GINEConv(nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))),
                heads=heads,
                attn_type="multihead",
                attn_kwargs={"dropout": attn_dropout},
            )
            for _ in range(num_layers)
        )
        self.head = _mlp_readout(channels, out_dim)

    def forward(self, data: Data | Batch) -> Tensor:
        for key in ("x", "edge_index", "rwse"):
            if getattr(data, key, None) is None:
                raise ValueError(
                    f"GPS: the batch has no `{key}`"
                    + (" (add AddRandomWalkPE(20, attr_name='rwse'))" if key == "rwse" else "")
                )
        if not data.rwse.is_floating_point() or data.rwse.dim() != 2 or data.rwse.shape[1] != self.walk_length:
            raise ValueError(
                f"GPS: rwse must be float (num_nodes, {self.walk_length}), got {data.rwse.dtype} "
                f"{tuple(data.rwse.shape)}"
            )
        self.node_emb.check("GPS", "data.x", data.x, data.num_nodes)
        if self.edge_emb is not None:
            self.edge_emb.check("GPS", "data.edge_attr", getattr(data, "edge_attr", None), data.edge_index.shape[1])
        batch = data.batch if getattr(data, "batch", None) is not None else data.x.new_zeros(data.num_nodes)
        x = torch.cat([self.node_emb(data.x), self.pe_lin(self.pe_norm(data.rwse))], dim=-1)
        if self.edge_emb is None:
            edge_attr = self.edge_vector.expand(data.edge_index.shape[1], -1)
        else:
            edge_attr = self.edge_emb(data.edge_attr)
        for conv in self.convs:
            x = conv(x, data.edge_index, batch, edge_attr=edge_attr)
        if not self.node_level:
            x = global_add_pool(x, batch)
        return self.head(x)

    def example_inputs(self, batch_size: int = 2) -> dict[str, Batch]:
        return {
            "data": example_graph_batch(
                self.num_atom_types, self.num_bond_types, batch_size, self.device, walk_length=self.walk_length
            )
        }

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        data = self.example_inputs(batch_size)["data"]
        return (data.num_nodes if self.node_level else batch_size, self.out_dim)


def example_graph_batch(
    num_atom_types: int | Sequence[int],
    num_bond_types: int | Sequence[int] | None,
    batch_size: int,
    device: torch.device,
    *,
    walk_length: int = 20,
) -> Batch:
    """A deterministic batch of ring-with-chord graphs of mixed sizes (5, 6, 7, ... nodes) with valid categories."""
    generator = torch.Generator().manual_seed(0)
    atom_sizes = [num_atom_types] if isinstance(num_atom_types, int) else list(num_atom_types)
    graphs = []
    for index in range(batch_size):
        n = 5 + index
        ring = torch.arange(n)
        src = torch.cat([ring, torch.tensor([0])])
        dst = torch.cat([(ring + 1) % n, torch.tensor([n // 2])])
        edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
        x = torch.stack([torch.randint(0, size, (n,), generator=generator) for size in atom_sizes], dim=1)
        data = Data(x=x, edge_index=edge_index, num_nodes=n)
        if num_bond_types is not None:
            bond_sizes = [num_bond_types] if isinstance(num_bond_types, int) else list(num_bond_types)
            half = torch.stack([torch.randint(0, s, (n + 1,), generator=generator) for s in bond_sizes], dim=1)
            data.edge_attr = torch.cat([half, half])
        data = AddRandomWalkPE(walk_length, attr_name="rwse")(data)
        graphs.append(data)
    return Batch.from_data_list(graphs).to(device)


_PAPER = "Rampášek et al. 2022, Recipe for a General, Powerful, Scalable Graph Transformer (PyG examples/graph_gps.py)"
_TINY = {"channels": 16, "rwse_dim": 4, "num_layers": 2, "heads": 2}


@register_model(paper=_PAPER, test_kwargs=_TINY)
def gps_zinc(**kwargs) -> GPS:
    """PyG's example on ZINC: 28 atom / 4 bond types, 64 channels, 10 layers, 4 heads (423,857 parameters)."""
    return GPS(**{"num_atom_types": 28, "num_bond_types": 4, "out_dim": 1, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TINY)
def gps_molecules(**kwargs) -> GPS:
    """The ZINC architecture on PyG ``from_smiles`` features (9 atom / 3 bond columns): MoleculeNet HIV, ESOL."""
    sizes = {"num_atom_types": MOLECULE_ATOM_VOCAB, "num_bond_types": MOLECULE_BOND_VOCAB}
    return GPS(**{**sizes, "out_dim": 1, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TINY)
def gps_pattern(num_classes: int = 2, **kwargs) -> GPS:
    """Node classification on SBM PATTERN (3 input values, 2 classes), no edge features."""
    return GPS(**{"num_atom_types": 3, "num_bond_types": None, "out_dim": num_classes, "node_level": True, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TINY)
def gps_cluster(num_classes: int = 6, **kwargs) -> GPS:
    """Node classification on SBM CLUSTER (7 input values, 6 classes), no edge features."""
    return GPS(**{"num_atom_types": 7, "num_bond_types": None, "out_dim": num_classes, "node_level": True, **kwargs})

"""Shared input encoders of the graph models: categorical node/edge features -> vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.utils.smiles import e_map, x_map

from formers.core.layers._checks import check_positive

__all__ = ["MOLECULE_ATOM_VOCAB", "MOLECULE_BOND_VOCAB", "CategoricalEncoder", "check_edge_index", "check_vocab_sizes"]

MOLECULE_ATOM_VOCAB = tuple(len(values) for values in x_map.values())  # PyG from_smiles: 9 atom columns
MOLECULE_BOND_VOCAB = tuple(len(values) for values in e_map.values())  # 3 bond columns


def check_vocab_sizes(owner: str, name: str, sizes: int | Sequence[int]) -> tuple[int, ...]:
    """The per-column vocabulary sizes of ``sizes`` (an int: one column), checked (errors name ``owner``/``name``)."""
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    if not sizes:
        raise ValueError(f"{owner}: {name} needs at least one column")
    check_positive(owner, **{f"{name}[{i}]": size for i, size in enumerate(sizes)})
    return sizes


class CategoricalEncoder(nn.Module):
    """One ``nn.Embedding`` per categorical column, summed (OGB's ``AtomEncoder`` semantics; one column: the official
    ``embedding_h`` / ``embedding_e``).

    Shapes: ``(n,)`` or ``(n, num_columns)`` integer ids -> ``(n, dim)``.
    """

    def __init__(self, vocab_sizes: int | Sequence[int], dim: int) -> None:
        super().__init__()
        self.vocab_sizes = check_vocab_sizes(type(self).__name__, "vocab_sizes", vocab_sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(size, dim) for size in self.vocab_sizes)

    def forward(self, ids: Tensor) -> Tensor:
        ids = ids.view(-1, 1) if ids.dim() == 1 else ids
        out = self.embeddings[0](ids[:, 0])
        for column, embedding in enumerate(self.embeddings[1:], start=1):
            out = out + embedding(ids[:, column])
        return out

    def check(self, owner: str, name: str, ids: Tensor, rows: int) -> None:
        """Raise ``TypeError`` / ``ValueError`` naming ``name`` unless ``ids`` is ``(rows, num_columns)`` in range."""
        if not isinstance(ids, Tensor):
            raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(ids).__name__}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{owner}: {name} must hold integer category ids, got {ids.dtype}")
        columns = len(self.vocab_sizes)
        if not (
            ids.dim() == 2 and ids.shape == (rows, columns) or ids.dim() == 1 and columns == 1 and len(ids) == rows
        ):
            raise ValueError(f"{owner}: {name} must have shape ({rows}, {columns}), got {tuple(ids.shape)}")
        ids = ids.view(rows, columns)
        if rows and bool(((ids < 0) | (ids >= ids.new_tensor(self.vocab_sizes))).any()):
            raise ValueError(
                f"{owner}: {name} has ids outside the vocabulary sizes {self.vocab_sizes} (per column: min "
                f"{ids.amin(0).tolist()}, max {ids.amax(0).tolist()})"
            )


def check_edge_index(owner: str, edge_index: object, num_nodes: int) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming ``owner`` unless ``edge_index`` is a ``(2, E)`` long tensor of node
    ids in ``[0, num_nodes)``."""
    if not isinstance(edge_index, Tensor) or edge_index.dtype != torch.long:
        raise TypeError(
            f"{owner}: data.edge_index must be a torch.long tensor, got {getattr(edge_index, 'dtype', edge_index)}"
        )
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{owner}: data.edge_index must have shape (2, num_edges), got {tuple(edge_index.shape)}")
    if edge_index.numel() and bool(((edge_index < 0) | (edge_index >= num_nodes)).any()):
        raise ValueError(
            f"{owner}: data.edge_index refers to nodes outside [0, {num_nodes}) (the batch has {num_nodes} nodes)"
        )

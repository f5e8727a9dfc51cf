"""Laplacian eigenvector positional encoding (Dwivedi et al., Benchmarking GNNs; Dwivedi & Bresson 2021).

The official Graph Transformer computes, once per graph (graphdeeplearning/graphtransformer ``data/molecules.py::
laplacian_positional_encoding``)::

    L = I - D^{-1/2} A D^{-1/2}          (in-degrees clipped at 1, so an isolated node has L_ii = 1)
    eigenvalues ascending, eigenvectors 1..k   (the trivial eigenvector 0 is dropped)

and flips the sign of every eigenvector column at random once per *training batch* (the sign of an eigenvector is
arbitrary, so the model must not learn it). That flip lives in the model
(:class:`formers.graph.models.graph_transformer.GraphTransformer`, training mode only), not here: this transform keeps
the sign the eigensolver returns. PyG's ``AddLaplacianEigenvectorPE`` differs on exactly that point: it draws ONE
random sign vector when the transform runs, so used as a ``pre_transform`` the sign is frozen for the whole training
and no augmentation happens; it also needs ``num_nodes > k`` where this transform zero-fills.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import eigsh
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = ["LaplacianPE", "normalized_laplacian", "laplacian_eigenvectors"]


def normalized_laplacian(edge_index: Tensor, num_nodes: int) -> sp.csr_matrix:
    """``I - D^{-1/2} A D^{-1/2}`` as a float64 CSR matrix, degrees clipped at 1 (the official construction).

    ``A[i, j]`` counts the edges ``j -> i`` (duplicates add up) and ``D`` holds the in-degrees, so for an undirected
    graph stored with both directions (PyG's convention) ``A`` is symmetric and ``D`` the usual degree.
    """
    src, dst = edge_index.cpu().numpy()
    ones = np.ones(src.shape[0], dtype=np.float64)
    adj = sp.coo_matrix((ones, (dst, src)), shape=(num_nodes, num_nodes)).tocsr()  # sums duplicate edges
    in_degree = np.bincount(dst, minlength=num_nodes).astype(np.float64)
    scale = sp.diags(np.clip(in_degree, 1, None) ** -0.5)
    return (sp.eye(num_nodes, format="csr") - scale @ adj @ scale).tocsr()


def laplacian_eigenvectors(
    edge_index: Tensor, num_nodes: int, k: int, *, dense_max_nodes: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(m,)`` and eigenvectors ``(num_nodes, m)`` 1..k of the normalized Laplacian, ascending,
    ``m = min(k, num_nodes - 1)`` (float64).

    Graphs with at most ``dense_max_nodes`` nodes use the dense symmetric solver (``numpy.linalg.eigh``, exact and
    deterministic); larger ones use ``scipy.sparse.linalg.eigsh(which="SA")`` for the ``k + 1`` smallest eigenpairs,
    with a fixed start vector so that the result is reproducible.

    Raises:
        ValueError: the graph is not undirected (``A`` is not symmetric), where the eigenvectors would be complex.
    """
    laplacian = normalized_laplacian(edge_index, num_nodes)
    if abs(laplacian - laplacian.T).max() > 1e-12:
        raise ValueError(
            "LaplacianPE expects an undirected graph (every edge stored in both directions, as PyG's from_smiles and "
            "ToUndirected give); this edge_index has edges without their reverse"
        )
    wanted = min(k, num_nodes - 1)
    if wanted <= 0:
        return np.zeros(0), np.zeros((num_nodes, 0))
    if num_nodes <= max(dense_max_nodes, k + 2):  # eigsh needs k + 1 < n
        eigvals, eigvecs = np.linalg.eigh(laplacian.toarray())
    else:
        start = np.random.default_rng(0).uniform(0.5, 1.5, num_nodes)  # fixed: eigsh's default start is random
        eigvals, eigvecs = eigsh(laplacian, k=wanted + 1, which="SA", v0=start)
    order = np.argsort(eigvals, kind="stable")
    return eigvals[order][1 : wanted + 1], eigvecs[:, order][:, 1 : wanted + 1]


class LaplacianPE(BaseTransform):
    """Store the Laplacian eigenvector positional encoding of a graph as ``data[attr_name]``, float32 ``(n, k)``.

    Columns are the eigenvectors 1..k of ``I - D^{-1/2} A D^{-1/2}`` (ascending eigenvalues, the trivial eigenvector 0
    dropped, unit norm, the solver's sign). A graph with ``n - 1 < k`` non-trivial eigenvectors gets zero columns
    beyond ``n - 1`` (a single node: all zeros), so every graph of a dataset has ``k`` columns and batches concatenate.
    A disconnected graph keeps its extra zero eigenvalues (one per further component) among the columns, as the
    official code does. No random sign flip happens here (see the module docstring): the model draws one per training
    batch.

    Args:
        k: number of eigenvectors (GT: ZINC 8, PATTERN 2, CLUSTER 10).
        attr_name: where to store the encoding.
        eigvals_attr_name: where to store the eigenvalues ``(1, k)`` as well (zero-filled like the vectors), or
            ``None`` not to store them.
        dense_max_nodes: graphs up to this many nodes use the dense solver, larger ones ``scipy``'s sparse ``eigsh``
            (molecules and the SBM graphs, at most a few hundred nodes, are always dense).
    """

    def __init__(
        self,
        k: int,
        attr_name: str = "lap_pe",
        eigvals_attr_name: str | None = None,
        dense_max_nodes: int = 500,
    ) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"LaplacianPE: k must be a positive int, got {k!r}")
        self.k, self.attr_name, self.eigvals_attr_name = k, attr_name, eigvals_attr_name
        self.dense_max_nodes = dense_max_nodes

    def forward(self, data: Data) -> Data:
        num_nodes, edge_index = data.num_nodes, data.edge_index
        if num_nodes is None or edge_index is None:
            raise ValueError("LaplacianPE needs data.edge_index and a known number of nodes (data.x or num_nodes)")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ValueError(f"LaplacianPE: edge_index refers to nodes outside [0, {num_nodes})")
        pe, eigvals = torch.zeros(num_nodes, self.k), torch.zeros(1, self.k)
        if num_nodes > 1:
            values, vectors = laplacian_eigenvectors(
                edge_index, num_nodes, self.k, dense_max_nodes=self.dense_max_nodes
            )
            pe[:, : vectors.shape[1]] = torch.from_numpy(vectors)
            eigvals[0, : values.shape[0]] = torch.from_numpy(values)
        data[self.attr_name] = pe
        if self.eigvals_attr_name is not None:
            data[self.eigvals_attr_name] = eigvals
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, attr_name={self.attr_name!r})"

"""All-pairs shortest paths for Graphormer's spatial and multi-hop edge encodings (Ying et al. 2021).

The official v1 code (microsoft/Graphormer ``graphormer/algos.pyx``) runs Floyd-Warshall in Cython on each graph,
then materialises every pair's edge features along one shortest path as an ``(n, n, max_dist, features)`` tensor,
O(n² · hops) per graph. This transform stores O(n²) instead, two small-integer tensors per graph, and the model
(:class:`formers.graph.models.graphormer.Graphormer`) walks the paths with vectorised gathers:

* ``spd``: ``int16 (n * n,)``, row-major: ``spd[i * n + j]`` = number of edges on a shortest path ``i -> j``
  (``0`` on the diagonal, :data:`UNREACHABLE` = ``-1`` when ``j`` cannot be reached; the model maps it to the
  official bucket 510).
* ``spd_next``: ``int16 (n * n,)``, row-major: the node that follows ``i`` on the chosen shortest path ``i -> j``
  (``-1`` on the diagonal and for unreachable pairs). The path is ``i, next[i, j], next[next[i, j], j], ..., j``:
  every hop follows the same shortest-path tree rooted at ``j``, so the walk always ends at ``j`` after ``spd[i,
  j]`` hops and the first ``multi_hop_max_dist`` hops are found without walking the rest.

Paths follow ``edge_index`` from source to target (``A[src, dst]``, the official adjacency), unweighted. The "next
node" matrix is the predecessor matrix of the reversed graph: ``scipy.sparse.csgraph.shortest_path`` on ``Aᵀ``
returns, for each source ``j``, the predecessor of ``i`` on a path ``j -> i`` in ``Aᵀ``, which is the node after
``i`` on a path ``i -> j`` in ``A``.

Which shortest path is stored when several exist differs from the official Floyd-Warshall choice (the paper: "one
of the shortest paths"); the distances are identical. The official v1 path reconstruction also drops node 0 from any
path whose recorded split point is node 0 (``get_all_edges`` returns ``[]`` for ``k == 0``; fixed in v2 by
microsoft/Graphormer#119); the paths here are exact.

Batching (PyG collate): both keys are plain tensors whose names contain neither ``index`` nor ``batch``, so PyG
concatenates them along dim 0 (``__cat_dim__`` = 0) without any increment (``__inc__`` = 0). That is what the model
needs: the values are graph-local node ids and distances, and graph ``g``'s block starts at ``sum_{h < g} n_h²``
(the model recomputes these offsets from ``ptr``). Local ids keep the values small enough for ``int16``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = ["ShortestPaths", "UNREACHABLE", "SPD_KEY", "NEXT_KEY", "shortest_path_matrices"]

UNREACHABLE = -1
SPD_KEY, NEXT_KEY = "spd", "spd_next"
_MAX_NODES = torch.iinfo(torch.int16).max  # local ids and distances must fit int16


def shortest_path_matrices(edge_index: Tensor, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Hop distances and next nodes of every ordered pair, as ``int64 (num_nodes, num_nodes)`` arrays.

    ``dist[i, j]``: edges on a shortest path ``i -> j`` along ``edge_index`` (``-1`` unreachable, ``0`` for
    ``i == j``); ``nxt[i, j]``: the node after ``i`` on that path (``-1`` for ``i == j`` and unreachable pairs).
    Duplicate edges and self-loops change nothing.
    """
    if num_nodes == 0:
        empty = np.zeros((0, 0), dtype=np.int64)
        return empty, empty.copy()
    src, dst = edge_index.cpu().numpy()
    reverse = sp.csr_matrix((np.ones(src.shape[0]), (dst, src)), shape=(num_nodes, num_nodes))  # Aᵀ
    dist_rev, pred_rev = shortest_path(reverse, directed=True, unweighted=True, return_predecessors=True)
    dist = dist_rev.T  # dist_rev[j, i] = d_Aᵀ(j -> i) = d_A(i -> j)
    nxt = pred_rev.T.astype(np.int64)  # pred_rev[j, i]: the node before i on j -> i in Aᵀ = after i on i -> j in A
    reachable = np.isfinite(dist)
    dist = np.where(reachable, dist, UNREACHABLE).astype(np.int64)
    nxt = np.where(nxt < 0, -1, nxt)  # scipy marks "no predecessor" (diagonal, unreachable) with -9999
    return dist, nxt


class ShortestPaths(BaseTransform):
    """Store a graph's all-pairs shortest-path distances (``data.spd``) and next-hop nodes (``data.spd_next``).

    Both are ``int16 (n * n,)`` row-major (module docstring). Computed once, e.g. as a dataset ``pre_transform``;
    memory is ``4 n²`` bytes per graph (ZINC's ~23 nodes: ~2 KB; a 120-node SBM graph: 58 KB).

    Args:
        with_next: also store ``spd_next`` (needed by the multi-hop edge encoding; a model without edge features
            needs ``spd`` only).
    """

    def __init__(self, with_next: bool = True) -> None:
        self.with_next = with_next

    def forward(self, data: Data) -> Data:
        if data.edge_index is None:
            raise ValueError("ShortestPaths: the graph has no edge_index")
        num_nodes = data.num_nodes
        if num_nodes is None:
            raise ValueError("ShortestPaths: cannot tell the number of nodes (set data.num_nodes or data.x)")
        if num_nodes > _MAX_NODES:
            raise ValueError(f"ShortestPaths: {num_nodes} nodes do not fit the int16 node ids (max {_MAX_NODES})")
        dist, nxt = shortest_path_matrices(data.edge_index, num_nodes)
        data[SPD_KEY] = torch.from_numpy(dist.reshape(-1)).to(torch.int16)
        if self.with_next:
            data[NEXT_KEY] = torch.from_numpy(nxt.reshape(-1)).to(torch.int16)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(with_next={self.with_next})"

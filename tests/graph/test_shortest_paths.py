"""ShortestPaths: distances and next hops against closed forms (path, cycle, star, disconnected, single node,
directed), walks that follow edges, PyG batching (no increments, dim-0 concatenation) and errors."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from formers.graph.encodings import shortest_paths as sp_mod
from formers.graph.encodings.shortest_paths import UNREACHABLE, ShortestPaths, shortest_path_matrices


def undirected(pairs: list[tuple[int, int]]) -> torch.Tensor:
    if not pairs:
        return torch.zeros(2, 0, dtype=torch.long)
    src, dst = zip(*pairs, strict=True)
    return torch.tensor([src + dst, dst + src])


def encode(edge_index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = ShortestPaths()(Data(edge_index=edge_index, num_nodes=n))
    assert data.spd.dtype == data.spd_next.dtype == torch.int16
    assert data.spd.shape == data.spd_next.shape == (n * n,)
    return data.spd.view(n, n).long(), data.spd_next.view(n, n).long()


def assert_walks_are_shortest_paths(spd: torch.Tensor, nxt: torch.Tensor, edge_index: torch.Tensor) -> None:
    """From every i, following next[., j] reaches j in exactly spd[i, j] steps, each along an edge."""
    edges = set(zip(edge_index[0].tolist(), edge_index[1].tolist(), strict=True))
    n = spd.shape[0]
    for i in range(n):
        for j in range(n):
            if spd[i, j] < 0 or i == j:
                assert nxt[i, j] == -1
                continue
            node, steps = i, 0
            while node != j:
                following = int(nxt[node, j])
                assert (node, following) in edges
                node, steps = following, steps + 1
            assert steps == spd[i, j]


def test_path_graph_closed_form() -> None:
    n = 6
    edge_index = undirected([(i, i + 1) for i in range(n - 1)])
    spd, nxt = encode(edge_index, n)
    idx = torch.arange(n)
    torch.testing.assert_close(spd, (idx[:, None] - idx[None, :]).abs())
    want_next = idx[:, None] + torch.sign(idx[None, :] - idx[:, None])
    want_next.fill_diagonal_(-1)
    torch.testing.assert_close(nxt, want_next)


@pytest.mark.parametrize("n", [5, 6])
def test_cycle_closed_form(n: int) -> None:
    edge_index = undirected([(i, (i + 1) % n) for i in range(n)])
    spd, nxt = encode(edge_index, n)
    idx = torch.arange(n)
    gap = (idx[:, None] - idx[None, :]).abs()
    torch.testing.assert_close(spd, torch.minimum(gap, n - gap))
    assert_walks_are_shortest_paths(spd, nxt, edge_index)  # even n: antipodes have two paths, either is fine


def test_star_closed_form() -> None:
    n = 5
    edge_index = undirected([(0, k) for k in range(1, n)])
    spd, nxt = encode(edge_index, n)
    want = torch.full((n, n), 2)
    want[0, :] = want[:, 0] = 1
    want.fill_diagonal_(0)
    torch.testing.assert_close(spd, want)
    leaves = torch.arange(1, n)
    assert torch.all(nxt[leaves[:, None], leaves[None, :]][~torch.eye(n - 1, dtype=torch.bool)] == 0)  # via the hub
    torch.testing.assert_close(nxt[0, 1:], leaves)
    torch.testing.assert_close(nxt[1:, 0], torch.zeros(n - 1, dtype=torch.long))


def test_disconnected_and_isolated_nodes() -> None:
    edge_index = undirected([(0, 1), (2, 3)])  # node 4 isolated
    spd, nxt = encode(edge_index, 5)
    assert spd[0, 1] == 1 and spd[2, 3] == 1
    for i, j in [(0, 2), (1, 3), (3, 0), (4, 0), (0, 4), (4, 3)]:
        assert spd[i, j] == UNREACHABLE and nxt[i, j] == -1
    assert torch.all(spd.diagonal() == 0) and torch.all(nxt.diagonal() == -1)


def test_single_node_and_empty_graph() -> None:
    spd, nxt = encode(torch.zeros(2, 0, dtype=torch.long), 1)
    assert spd.tolist() == [[0]] and nxt.tolist() == [[-1]]
    dist, following = shortest_path_matrices(torch.zeros(2, 0, dtype=torch.long), 0)
    assert dist.shape == following.shape == (0, 0)


def test_directed_edges_are_followed_from_source_to_target() -> None:
    edge_index = torch.tensor([[0, 1], [1, 2]])  # 0 -> 1 -> 2 only
    spd, nxt = encode(edge_index, 3)
    assert spd[0, 2] == 2 and nxt[0, 2] == 1 and nxt[1, 2] == 2
    assert spd[2, 0] == UNREACHABLE and spd[1, 0] == UNREACHABLE


def test_random_graphs_walks_and_duplicate_edges() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (7, 12, 20):
        pairs = [(i, int(torch.randint(0, i, (), generator=gen))) for i in range(1, n)]
        pairs += [tuple(torch.randint(0, n, (2,), generator=gen).tolist()) for _ in range(n // 3)]  # rings, loops
        edge_index = undirected(pairs)
        spd, nxt = encode(torch.cat([edge_index, edge_index], dim=1), n)  # duplicates change nothing
        assert_walks_are_shortest_paths(spd, nxt, edge_index)
        # distances satisfy the Bellman equation: d(i, j) = 1 + min over out-neighbours k of d(k, j)
        for i in range(n):
            nbrs = edge_index[1][edge_index[0] == i].unique()
            nbrs = nbrs[nbrs != i]
            for j in range(n):
                if j != i:
                    assert spd[i, j] == 1 + spd[nbrs, j].min()


def test_batching_concatenates_without_increment() -> None:
    a = ShortestPaths()(Data(x=torch.zeros(3, 1, dtype=torch.long), edge_index=undirected([(0, 1), (1, 2)])))
    b = ShortestPaths()(Data(x=torch.zeros(2, 1, dtype=torch.long), edge_index=undirected([(0, 1)])))
    for key in ("spd", "spd_next"):
        assert a.__cat_dim__(key, a[key]) == 0 and a.__inc__(key, a[key]) == 0
    batch = Batch.from_data_list([a, b])
    torch.testing.assert_close(batch.spd, torch.cat([a.spd, b.spd]))
    torch.testing.assert_close(batch.spd_next, torch.cat([a.spd_next, b.spd_next]))  # graph-local ids stay local
    torch.testing.assert_close(batch.get_example(1).spd_next, b.spd_next)
    assert batch.spd.dtype == torch.int16


def test_without_next_and_repr() -> None:
    data = ShortestPaths(with_next=False)(Data(edge_index=undirected([(0, 1)]), num_nodes=2))
    assert "spd_next" not in data and data.spd.tolist() == [0, 1, 1, 0]
    assert repr(ShortestPaths()) == "ShortestPaths(with_next=True)"


def test_errors(monkeypatch) -> None:
    with pytest.raises(ValueError, match="no edge_index"):
        ShortestPaths()(Data(x=torch.zeros(2, 1)))
    monkeypatch.setattr(sp_mod, "_MAX_NODES", 3)
    with pytest.raises(ValueError, match="4 nodes do not fit the int16"):
        ShortestPaths()(Data(edge_index=undirected([(0, 1)]), num_nodes=4))

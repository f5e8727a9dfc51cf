"""The SBM generator (PATTERN / CLUSTER): the statistics the benchmarking-gnns notebooks' parameters imply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from formers.graph.sbm import (
    ClusterParams,
    PatternParams,
    block_model,
    cluster_graph,
    cluster_splits,
    pattern_splits,
)


def edge_densities(graphs, first_block=None):
    """Edge density of node pairs inside one block and between two blocks (optionally: pairs of ``first_block`` with
    the other blocks separately)."""
    hits, totals = np.zeros(3), np.zeros(3)
    for graph in graphs:
        upper = np.triu_indices(len(graph.blocks), 1)
        a, b = graph.blocks[upper[0]], graph.blocks[upper[1]]
        edge = graph.adjacency[upper]
        kind = np.where(a == b, 0, 1)
        if first_block is not None:
            kind = np.where((a != b) & ((a == first_block) | (b == first_block)), 2, kind)
        for k in range(3):
            hits[k] += edge[kind == k].sum()
            totals[k] += (kind == k).sum()
    return hits / np.maximum(totals, 1)


@pytest.fixture(scope="module")
def pattern():
    return pattern_splits((300, 40, 40), seed=3)


@pytest.fixture(scope="module")
def cluster():
    return cluster_splits((300, 40, 40), seed=3)


def test_block_model_is_symmetric_without_self_loops():
    rng = np.random.default_rng(0)
    adjacency = block_model(np.repeat(np.arange(3), 10), 0.5, 0.2, rng)
    assert adjacency.dtype == bool and (adjacency == adjacency.T).all() and not adjacency.diagonal().any()


def test_pattern_statistics(pattern):
    params = PatternParams()
    graphs = pattern["train"]
    within, between, pattern_links = edge_densities(graphs, first_block=params.num_communities)
    assert within == pytest.approx(params.p, abs=0.01)  # blocks and the pattern itself: p = p_pattern = 0.5
    assert between == pytest.approx(params.q, abs=0.01)
    assert pattern_links == pytest.approx(params.q_pattern, abs=0.01)
    for graph in graphs:
        sizes = np.bincount(graph.blocks)
        assert len(sizes) == params.num_communities + 1 and sizes.min() >= 5 and sizes.max() < 35
        assert (graph.labels == (graph.blocks == params.num_communities)).all()
    signal = np.concatenate([g.signal for g in graphs])
    assert set(np.unique(signal)) == {0, 1, 2} and np.bincount(signal).min() / len(signal) > 0.3
    positive = np.concatenate([g.labels for g in graphs]).mean()
    assert 0.12 < positive < 0.22  # pattern ~ 19.5 of ~117 nodes: about 1/6


def test_pattern_instances_are_shared_within_and_across_splits(pattern):
    def fingerprint(graph):  # the pattern's size, internal edges and signal multiset (node order is shuffled)
        inside = graph.labels == 1
        return (
            int(inside.sum()),
            int(graph.adjacency[np.ix_(inside, inside)].sum()),
            tuple(np.bincount(graph.signal[inside], minlength=3)),
        )

    train, val = pattern["train"], pattern["val"]
    assert fingerprint(train[0]) == fingerprint(train[1]) == fingerprint(train[2])  # 300 graphs / 100 instances
    assert fingerprint(train[0]) == fingerprint(val[0])  # the same instance in val (40 graphs -> 0, 2, 5, ...)
    assert len({fingerprint(g) for g in train}) > 80


def test_cluster_statistics(cluster):
    params = ClusterParams()
    graphs = cluster["train"]
    within, between, _ = edge_densities(graphs)
    assert within == pytest.approx(params.p, abs=0.01) and between == pytest.approx(params.q, abs=0.01)
    labels = np.concatenate([g.labels for g in graphs])
    assert np.abs(np.bincount(labels) / len(labels) - 1 / 6).max() < 0.02  # balanced communities
    for graph in graphs:
        assert (graph.labels == graph.blocks).all()
        seeds = np.flatnonzero(graph.signal)
        assert len(seeds) == params.num_communities  # one seed node per community ...
        assert sorted(graph.signal[seeds] - 1) == sorted(graph.blocks[seeds]) == list(range(6))  # ... labelled r + 1
        assert (graph.signal[seeds] - 1 == graph.blocks[seeds]).all()


def test_node_order_is_shuffled(cluster):
    # unshuffled, the communities would be consecutive runs of nodes
    runs = [int((np.diff(g.blocks) != 0).sum()) for g in cluster["train"][:20]]
    assert min(runs) > 20


def test_to_data_layout(pattern, cluster):
    for graph in (pattern["train"][0], cluster["train"][0]):
        data = graph.to_data()
        n = len(graph.blocks)
        assert data.x.shape == (n, 1) and data.y.shape == (n,) and data.x.dtype == data.y.dtype == torch.long
        assert data.edge_index.dtype == torch.long and data.edge_attr is None
        assert data.edge_index.shape[1] == graph.adjacency.sum()
        rebuilt = torch.zeros(n, n, dtype=torch.bool)
        rebuilt[data.edge_index[0], data.edge_index[1]] = True
        assert torch.equal(rebuilt, torch.from_numpy(graph.adjacency))
        order = data.edge_index[0] * n + data.edge_index[1]
        assert torch.equal(order, order.sort().values)  # PyG's sorted edge order
    assert int(cluster["train"][0].to_data().x.max()) <= 6


def test_determinism_per_seed():
    first = cluster_splits((4, 3, 3), seed=11)
    again = cluster_splits((4, 3, 3), seed=11)
    other = cluster_splits((4, 3, 3), seed=12)
    for split in ("train", "val", "test"):
        for a, b in zip(first[split], again[split], strict=True):
            assert np.array_equal(a.adjacency, b.adjacency) and np.array_equal(a.signal, b.signal)
    assert not np.array_equal(first["train"][0].blocks, other["train"][0].blocks) or not np.array_equal(
        first["train"][0].adjacency, other["train"][0].adjacency
    )
    bigger = cluster_splits((9, 3, 3), seed=11)  # the val/test streams do not depend on the train size
    assert all(np.array_equal(a.adjacency, b.adjacency) for a, b in zip(first["val"], bigger["val"], strict=True))
    p1, p2 = pattern_splits((5, 2, 2), seed=5), pattern_splits((5, 2, 2), seed=5)
    assert all(np.array_equal(a.adjacency, b.adjacency) for a, b in zip(p1["test"], p2["test"], strict=True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="three positive integers"):
        cluster_splits((10, 0, 1))
    with pytest.raises(ValueError, match="community sizes"):
        cluster_splits((1, 1, 1), params=ClusterParams(size_min=9, size_max=5))
    with pytest.raises(ValueError, match="pattern sizes"):
        pattern_splits((1, 1, 1), params=PatternParams(pattern_size_min=0))


def test_single_graph_generator_sizes():
    graph = cluster_graph(ClusterParams(size_min=4, size_max=4), np.random.default_rng(0))
    assert np.bincount(graph.blocks).tolist() == [4] * 6

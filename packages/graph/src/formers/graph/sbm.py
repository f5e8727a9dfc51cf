"""The stochastic-block-model node-classification datasets of benchmarking-gnns: PATTERN and CLUSTER, regenerated.

The official pickles are not available; this is their generator (``data/SBMs/generate_SBM_PATTERN.ipynb`` and
``generate_SBM_CLUSTER.ipynb`` at graphdeeplearning/benchmarking-gnns b6c4077, final cells), with the same
parameters and the same sampling steps, vectorised with numpy (one uniform draw per node pair instead of a Python
loop per pair) and seeded (the notebooks used the unseeded global numpy state, so no byte-for-byte copy is possible).

* **Block model** (:func:`block_model`): ``num_communities`` communities with sizes uniform in ``[size_min,
  size_max)``; every node pair is an edge with probability ``p`` inside a community and ``q`` between two; no
  self-loops, undirected.
* **PATTERN** (:func:`pattern_graph`, :func:`pattern_splits`): 5 communities of U[5, 35) nodes, p = 0.5, q = 0.35;
  node signal uniform over a vocabulary of 3. Each of 100 *pattern instances* is one random graph of U[5, 35) nodes
  (edge probability 0.5; the notebook passes ``p`` here, equal to ``p_pattern``) with its own fixed signal; every
  graph of that instance appends the pattern's nodes to a fresh block model, connects each pattern node to each
  block node with probability ``q_pattern`` = 0.5, and shuffles the node order. Label 1 = the node belongs to the
  pattern. 100 train + 20 val + 20 test graphs per instance: 10,000 / 2,000 / 2,000; val and test use the same 100
  patterns as train.
* **CLUSTER** (:func:`cluster_graph`, :func:`cluster_splits`): 6 communities of U[5, 35) nodes, p = 0.55, q = 0.25,
  node order shuffled; every node's signal is 0 except one random node per community, whose signal is
  ``community + 1`` (vocabulary 7). Label = community. 10,000 / 1,000 / 1,000 graphs.

Graphs: ``x`` long ``(n, 1)`` signal, ``y`` long ``(n,)`` label, ``edge_index`` long ``(2, E)`` in both directions
(PyG order), no edge features (benchmarking-gnns sets an all-ones edge feature that carries nothing).

Seeding: ``np.random.SeedSequence(seed)`` spawns one stream for the pattern instances and one per split, so the
val and test graphs of a seed do not depend on the train size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch_geometric.data import Data

__all__ = [
    "ClusterParams",
    "PatternParams",
    "SBMGraph",
    "block_model",
    "cluster_graph",
    "cluster_splits",
    "pattern_graph",
    "pattern_splits",
    "random_pattern",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PatternParams:
    """PATTERN's generator parameters (the notebook's final configuration, "v4")."""

    num_communities: int = 5
    size_min: int = 5
    size_max: int = 35  # exclusive, as np.random.randint
    p: float = 0.5
    q: float = 0.35
    vocab_size: int = 3
    pattern_size_min: int = 5
    pattern_size_max: int = 35  # exclusive
    p_pattern: float = 0.5  # edge probability inside the pattern (the notebook passes p = 0.5)
    q_pattern: float = 0.5  # pattern <-> block-model edge probability
    num_patterns: int = 100

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClusterParams:
    """CLUSTER's generator parameters."""

    num_communities: int = 6
    size_min: int = 5
    size_max: int = 35  # exclusive
    p: float = 0.55
    q: float = 0.25

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SBMGraph:
    """One generated graph before conversion to PyG.

    Attributes:
        adjacency: bool ``(n, n)``, symmetric, zero diagonal.
        blocks: int ``(n,)`` community of each node (PATTERN: the pattern is block ``num_communities``).
        signal: int ``(n,)`` node input value.
        labels: int ``(n,)`` node class.
    """

    adjacency: np.ndarray
    blocks: np.ndarray
    signal: np.ndarray
    labels: np.ndarray

    def to_data(self) -> Data:
        """``Data(x (n, 1) long, y (n,) long, edge_index (2, E) long)``, edges in both directions, row-major order."""
        rows, cols = np.nonzero(self.adjacency)  # row-major: PyG's sorted order
        return Data(
            x=torch.from_numpy(self.signal.astype(np.int64)).reshape(-1, 1),
            y=torch.from_numpy(self.labels.astype(np.int64)),
            edge_index=torch.from_numpy(np.stack([rows, cols]).astype(np.int64)),
        )


def _symmetric_bernoulli(probability: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A symmetric bool matrix with a zero diagonal whose upper-triangle entries are Bernoulli(``probability``)."""
    n = probability.shape[0]
    upper = np.triu(rng.random((n, n)) < probability, k=1)
    return upper | upper.T


def block_model(blocks: np.ndarray, p: float, q: float, rng: np.random.Generator) -> np.ndarray:
    """SBM adjacency for the community ids ``blocks``: edge probability ``p`` within, ``q`` between communities."""
    same = blocks[:, None] == blocks[None, :]
    return _symmetric_bernoulli(np.where(same, p, q), rng)


def random_pattern(size: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """An Erdos-Renyi graph (the notebook's ``random_pattern``): bool ``(size, size)``."""
    return _symmetric_bernoulli(np.full((size, size), p), rng)


def _community_ids(num_communities: int, size_min: int, size_max: int, rng: np.random.Generator) -> np.ndarray:
    """Community id of every node, communities in order, each of ``U[size_min, size_max)`` nodes."""
    sizes = (
        np.full(num_communities, size_max)
        if size_max == size_min
        else rng.integers(size_min, size_max, size=num_communities)
    )
    return np.repeat(np.arange(num_communities), sizes)


def _shuffled(graph: SBMGraph, rng: np.random.Generator) -> SBMGraph:
    order = rng.permutation(graph.adjacency.shape[0])
    return SBMGraph(
        adjacency=graph.adjacency[np.ix_(order, order)],
        blocks=graph.blocks[order],
        signal=graph.signal[order],
        labels=graph.labels[order],
    )


def pattern_graph(
    pattern: np.ndarray, pattern_signal: np.ndarray, params: PatternParams, rng: np.random.Generator
) -> SBMGraph:
    """One PATTERN graph: a block model with a random signal, the given pattern appended and linked to it with
    probability ``q_pattern``, nodes shuffled; label 1 on the pattern's nodes."""
    blocks = _community_ids(params.num_communities, params.size_min, params.size_max, rng)
    graph_adj = block_model(blocks, params.p, params.q, rng)
    signal = rng.integers(params.vocab_size, size=blocks.shape[0])
    n, n0 = blocks.shape[0], pattern.shape[0]
    links = rng.random((n0, n)) < params.q_pattern  # pattern node i <-> graph node j
    adjacency = np.block([[graph_adj, links.T], [links, pattern]])
    all_blocks = np.concatenate([blocks, np.full(n0, params.num_communities)])
    graph = SBMGraph(
        adjacency=adjacency,
        blocks=all_blocks,
        signal=np.concatenate([signal, pattern_signal]),
        labels=(all_blocks == params.num_communities).astype(np.int64),
    )
    return _shuffled(graph, rng)


def cluster_graph(params: ClusterParams, rng: np.random.Generator) -> SBMGraph:
    """One CLUSTER graph: a shuffled block model; one random node per community carries signal ``community + 1``,
    all others 0; label = community."""
    blocks = _community_ids(params.num_communities, params.size_min, params.size_max, rng)
    graph = _shuffled(
        SBMGraph(
            adjacency=block_model(blocks, params.p, params.q, rng),
            blocks=blocks,
            signal=np.zeros_like(blocks),
            labels=blocks.copy(),
        ),
        rng,
    )
    for community in range(params.num_communities):  # one seed node per community (a loop over 6, not over edges)
        members = np.flatnonzero(graph.blocks == community)
        graph.signal[members[rng.integers(members.shape[0])]] = community + 1
    return graph


def _check_sizes(sizes: Sequence[int]) -> tuple[int, int, int]:
    if len(sizes) != 3 or any(int(s) != s or s < 1 for s in sizes):
        raise ValueError(f"sizes must be three positive integers (train, val, test), got {list(sizes)}")
    return int(sizes[0]), int(sizes[1]), int(sizes[2])


def _check_range(name: str, low: int, high: int) -> None:
    if not 1 <= low <= high:
        raise ValueError(f"{name}: need 1 <= min <= max, got [{low}, {high})")


def pattern_splits(
    sizes: Sequence[int] = (10_000, 2_000, 2_000),
    *,
    seed: int = 0,
    params: PatternParams = PatternParams(),
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[SBMGraph]]:
    """The PATTERN splits: graph ``j`` of a split uses pattern instance ``j * num_patterns // size`` (100 / 20 / 20
    consecutive graphs per instance at the paper sizes, as the notebook's loop).

    Args:
        sizes: train / val / test graph counts.
        seed: the seed of every random draw.
        params: generator parameters.
        progress: called with 1 after each graph (a progress bar's ``update``).
    """
    sizes = _check_sizes(sizes)
    _check_range("community sizes", params.size_min, params.size_max)
    _check_range("pattern sizes", params.pattern_size_min, params.pattern_size_max)
    if params.num_patterns < 1:
        raise ValueError(f"num_patterns must be >= 1, got {params.num_patterns}")
    pattern_stream, *split_streams = np.random.SeedSequence(seed).spawn(1 + len(SPLITS))
    pattern_rng = np.random.default_rng(pattern_stream)
    patterns = []
    for _ in range(params.num_patterns):
        size = (
            params.pattern_size_min
            if params.pattern_size_min == params.pattern_size_max
            else int(pattern_rng.integers(params.pattern_size_min, params.pattern_size_max))
        )
        patterns.append(
            (random_pattern(size, params.p_pattern, pattern_rng), pattern_rng.integers(params.vocab_size, size=size))
        )
    splits = {}
    for name, size, stream in zip(SPLITS, sizes, split_streams, strict=True):
        rng = np.random.default_rng(stream)
        graphs = []
        for j in range(size):
            pattern, pattern_signal = patterns[j * params.num_patterns // size]
            graphs.append(pattern_graph(pattern, pattern_signal, params, rng))
            if progress is not None:
                progress(1)
        splits[name] = graphs
    return splits


def cluster_splits(
    sizes: Sequence[int] = (10_000, 1_000, 1_000),
    *,
    seed: int = 0,
    params: ClusterParams = ClusterParams(),
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[SBMGraph]]:
    """The CLUSTER splits (independent graphs; arguments as :func:`pattern_splits`)."""
    sizes = _check_sizes(sizes)
    _check_range("community sizes", params.size_min, params.size_max)
    splits = {}
    for name, size, stream in zip(SPLITS, sizes, np.random.SeedSequence(seed).spawn(len(SPLITS)), strict=True):
        rng = np.random.default_rng(stream)
        graphs = []
        for _ in range(size):
            graphs.append(cluster_graph(params, rng))
            if progress is not None:
                progress(1)
        splits[name] = graphs
    return splits

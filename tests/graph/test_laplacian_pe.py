"""LaplacianPE on graphs with known spectra: eigenvalues against closed forms, L v = λ v, orthonormality, zero-fill,
disconnected graphs and single nodes, dense and sparse solvers, no sign flip at transform time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from formers.graph.encodings.laplacian import LaplacianPE, normalized_laplacian


def undirected(pairs: list[tuple[int, int]], num_nodes: int) -> Data:
    src, dst = zip(*pairs, strict=True) if pairs else ((), ())
    edge_index = torch.tensor([src + dst, dst + src], dtype=torch.long).view(2, -1)
    return Data(edge_index=edge_index, num_nodes=num_nodes)


def path(n: int) -> Data:
    return undirected([(i, i + 1) for i in range(n - 1)], n)


def cycle(n: int) -> Data:
    return undirected([(i, (i + 1) % n) for i in range(n)], n)


def star(leaves: int) -> Data:
    return undirected([(0, i) for i in range(1, leaves + 1)], leaves + 1)


def dense_laplacian(data: Data) -> np.ndarray:
    """I - D^{-1/2} A D^{-1/2} written out densely here (degrees clipped at 1), independent of the transform."""
    n = data.num_nodes
    adj = np.zeros((n, n))
    for s, d in data.edge_index.t().tolist():
        adj[d, s] += 1.0
    scale = np.diag(np.clip(adj.sum(1), 1, None) ** -0.5)
    return np.eye(n) - scale @ adj @ scale


def encode(data: Data, k: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    out = LaplacianPE(k, eigvals_attr_name="lap_eigvals", **kwargs)(data.clone())
    assert out.lap_pe.dtype == torch.float32 and out.lap_pe.shape == (data.num_nodes, k)
    return out.lap_pe.double().numpy(), out.lap_eigvals[0].double().numpy()


def check_eigenpairs(data: Data, vectors: np.ndarray, values: np.ndarray, columns: int) -> None:
    laplacian = dense_laplacian(data)
    v, lam = vectors[:, :columns], values[:columns]
    np.testing.assert_allclose(laplacian @ v, v * lam, atol=1e-5)  # L v = λ v (float32 storage)
    np.testing.assert_allclose(v.T @ v, np.eye(columns), atol=1e-5)  # orthonormal columns


@pytest.mark.parametrize("n", [5, 12])
def test_path_graph_spectrum(n):
    """Path P_n: eigenvalues 1 - cos(pi j / (n - 1)), j = 0..n-1 (all simple); vectors 1..k returned."""
    k = 3
    vectors, values = encode(path(n), k)
    expected = [1 - math.cos(math.pi * j / (n - 1)) for j in range(1, k + 1)]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    check_eigenpairs(path(n), vectors, values, k)


def test_cycle_graph_spectrum():
    """Cycle C_n: eigenvalues 1 - cos(2 pi j / n), each j != 0, n/2 twice (degenerate pairs)."""
    n, k = 8, 5
    vectors, values = encode(cycle(n), k)
    expected = sorted(1 - math.cos(2 * math.pi * j / n) for j in range(n))[1 : k + 1]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    check_eigenpairs(cycle(n), vectors, values, k)


def test_star_graph_spectrum():
    """Star with m leaves: eigenvalues 0, 1 (m - 1 times), 2."""
    m, k = 5, 5
    vectors, values = encode(star(m), k)
    np.testing.assert_allclose(values, [1, 1, 1, 1, 2], atol=1e-6)
    check_eigenpairs(star(m), vectors, values, k)


def test_trivial_eigenvector_is_dropped():
    """Connected graph: the dropped eigenvector is D^{1/2} 1 (eigenvalue 0); the kept ones are orthogonal to it."""
    data = star(4)
    vectors, _ = encode(data, 4)
    degree = np.bincount(data.edge_index[1].numpy(), minlength=data.num_nodes)
    np.testing.assert_allclose(np.sqrt(degree) @ vectors, 0, atol=1e-5)


def test_zero_fill_when_the_graph_is_small():
    """n - 1 < k: columns beyond n - 1 are zero, the others are the real eigenvectors."""
    vectors, values = encode(path(3), 6)
    assert np.all(vectors[:, 2:] == 0) and np.all(values[2:] == 0)
    np.testing.assert_allclose(values[:2], [1.0, 2.0], atol=1e-6)  # P_3: 0, 1, 2
    check_eigenpairs(path(3), vectors, values, 2)


def test_single_node_and_empty_edge_sets():
    vectors, values = encode(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=1), 4)
    assert np.all(vectors == 0) and np.all(values == 0)
    # three isolated nodes: L = I (degrees clipped at 1), eigenvalue 1 three times; output defined, finite
    vectors, values = encode(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=3), 4)
    np.testing.assert_allclose(values, [1, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(vectors[:, :2].T @ vectors[:, :2], np.eye(2), atol=1e-6)


def test_disconnected_graph():
    """Two triangles: eigenvalues 0, 0, 1.5 x 4; one zero is dropped, the other (a component indicator direction)
    stays, as in the official code."""
    data = undirected([(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)], 6)
    vectors, values = encode(data, 5)
    np.testing.assert_allclose(values, [0, 1.5, 1.5, 1.5, 1.5], atol=1e-6)
    check_eigenpairs(data, vectors, values, 5)


def test_sparse_solver_matches_closed_form_and_dense():
    """Above ``dense_max_nodes`` the sparse eigsh path runs: same eigenvalues (closed form) and same subspaces."""
    n, k = 40, 4
    sparse_vectors, sparse_values = encode(path(n), k, dense_max_nodes=10)
    dense_vectors, dense_values = encode(path(n), k)
    expected = [1 - math.cos(math.pi * j / (n - 1)) for j in range(1, k + 1)]
    np.testing.assert_allclose(sparse_values, expected, atol=1e-6)
    np.testing.assert_allclose(dense_values, expected, atol=1e-6)
    # simple eigenvalues: the vectors agree up to sign
    np.testing.assert_allclose(np.abs(np.sum(sparse_vectors * dense_vectors, axis=0)), 1, atol=1e-5)
    check_eigenpairs(path(n), sparse_vectors, sparse_values, k)
    # and the sparse path is reproducible (fixed start vector)
    np.testing.assert_array_equal(encode(path(n), k, dense_max_nodes=10)[0], sparse_vectors)


def test_no_sign_flip_at_transform_time():
    """Unlike PyG's AddLaplacianEigenvectorPE (one random flip per call), the transform is deterministic: the random
    flip happens in the model, per training batch."""
    torch.manual_seed(0)
    first = LaplacianPE(4)(cycle(9)).lap_pe
    torch.manual_seed(1)
    assert torch.equal(LaplacianPE(4)(cycle(9)).lap_pe, first)


def test_laplacian_construction_and_batching():
    data = star(3)
    np.testing.assert_allclose(normalized_laplacian(data.edge_index, 4).toarray(), dense_laplacian(data), atol=1e-12)
    graphs = [LaplacianPE(3)(g) for g in (path(2), cycle(5), star(4))]
    batch = Batch.from_data_list(graphs)
    assert batch.lap_pe.shape == (2 + 5 + 5, 3)
    torch.testing.assert_close(batch.lap_pe[2:7], graphs[1].lap_pe)


def test_bad_inputs():
    with pytest.raises(ValueError, match="positive int"):
        LaplacianPE(0)
    directed = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    with pytest.raises(ValueError, match="undirected"):
        LaplacianPE(2)(directed)
    with pytest.raises(ValueError, match="outside"):
        LaplacianPE(2)(Data(edge_index=torch.tensor([[0, 3], [3, 0]]), num_nodes=3))

"""Graphormer: official v1 parameter counts, equality with a test oracle that follows the official v1 code step by
step (``wrapper.preprocess_item``, ``algos.floyd_warshall`` / ``gen_edge_input``, ``collator.collator``,
``model.Graphormer.forward``; microsoft/Graphormer branch v1.0 @ e77e6ed) on a state dict in the official layout,
padding-free correctness (a graph gives in any batch what it gives alone, > 128 nodes included), the padded layout,
permutation equivariance, gradients, a short fit, backends and input errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_smiles

from _bench import benchmark_module
from formers.core.attention import BackendUnavailableError, set_attention_backend, use_backend
from formers.core.registry import create_model, get_model_entry
from formers.graph.encodings.shortest_paths import ShortestPaths
from formers.graph.models.graphormer import Graphormer, _Layout, checkpoint_filter_fn

TINY = get_model_entry("graphormer_slim").test_kwargs
SMILES = [
    "CCO", "CC(=O)O", "c1ccccc1", "CC(C)O", "CCN(CC)CC", "c1ccncc1", "CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccccc1O",
    "CCOC(=O)C", "C1CCCCC1", "CC(C)CC(C)(C)C", "c1ccc2ccccc2c1", "OCC(O)CO", "CC#N", "CCCCCCCC", "ClC(Cl)Cl",
    "CC(C)(C)O", "c1ccoc1", "C1CCOC1", "CS(=O)C", "NCCO", "CC(N)C(=O)O", "O=C1CCCCC1", "c1cc[nH]c1",
    "CCc1ccccc1", "FC(F)(F)c1ccccc1", "CCCCO", "OC1CCCCC1", "CC=CC", "Brc1ccccc1",
]  # fmt: skip


# ------------------------------------------------------------------------------------------------------ helpers


def undirected(pairs: list[tuple[int, int]]) -> torch.Tensor:
    if not pairs:
        return torch.zeros(2, 0, dtype=torch.long)
    src, dst = zip(*pairs, strict=True)
    return torch.tensor([src + dst, dst + src])


def random_graph(n: int, gen: torch.Generator, *, rings: int = 1, atoms: int = 28, bonds: tuple[int, int] = (1, 4)):
    """A random tree plus ``rings`` extra bonds; ZINC-style categories (x (n, 1), edge_attr (E, 1))."""
    pairs = [(i, int(torch.randint(0, i, (), generator=gen))) for i in range(1, n)]
    existing = {frozenset(p) for p in pairs}
    for _ in range(rings if n > 3 else 0):
        a, b = torch.randint(0, n, (2,), generator=gen).tolist()
        if a != b and frozenset((a, b)) not in existing:
            pairs.append((a, b))
            existing.add(frozenset((a, b)))
    bond = torch.randint(bonds[0], bonds[1], (len(pairs), 1), generator=gen)
    data = Data(
        x=torch.randint(0, atoms, (n, 1), generator=gen),
        edge_index=undirected(pairs),
        edge_attr=torch.cat([bond, bond]),
        num_nodes=n,
    )
    return ShortestPaths()(data)


def molecule(smiles: str) -> Data:
    data = from_smiles(smiles)
    return ShortestPaths()(Data(x=data.x, edge_index=data.edge_index, edge_attr=data.edge_attr, smiles=smiles))


def tiny(name: str = "graphormer_slim", **kwargs) -> Graphormer:
    return create_model(name, **{**get_model_entry(name).test_kwargs, **kwargs})


def randomize(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> None:
    """Weights far from the tiny init, so that every term of the arithmetic shows in the outputs (norm gains ~1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = name.endswith(("norm.weight", "final_ln.weight"))
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if gain else std) + float(gain))


# ------------------------------------------------------------------------------------------------ test oracle
# The official v1 pipeline, transcribed step by step (numpy / torch functional), for a state dict in the official
# key layout. Nothing below calls formers.


def convert_to_single_emb(x: torch.Tensor, offset: int = 512) -> torch.Tensor:  # v1 wrapper.py
    feature_num = x.size(1) if len(x.size()) > 1 else 1
    feature_offset = 1 + torch.arange(0, feature_num * offset, offset, dtype=torch.long)
    return x + feature_offset


def floyd_warshall(adj: np.ndarray, fixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """v1 ``algos.floyd_warshall`` (``fixed``: v2's path initialisation to -1, microsoft/Graphormer#119). The inner
    i, j loops are vectorised per k; row and column k do not change during round k, so this is the same result."""
    n = adj.shape[0]
    m = adj.astype(np.int64).copy()
    path = np.full((n, n), -1 if fixed else 0, dtype=np.int64)
    m[m == 0] = 510
    np.fill_diagonal(m, 0)
    for k in range(n):
        cost = m[:, k : k + 1] + m[k : k + 1, :]
        better = m > cost
        m[better] = cost[better]
        path[better] = k
    path[m >= 510] = 510
    m[m >= 510] = 510
    return m, path


def get_all_edges(path: np.ndarray, i: int, j: int, none: int) -> list[int]:  # v1: none = 0 (the defect); v2: -1
    k = path[i][j]
    if k == none:
        return []
    return get_all_edges(path, i, k, none) + [k] + get_all_edges(path, k, j, none)


def gen_edge_input(max_dist: int, path_of, edge_feat: np.ndarray) -> np.ndarray:
    """v1 ``algos.gen_edge_input`` with the node path of a pair given by ``path_of(i, j)`` (``None``: unreachable)."""
    n = edge_feat.shape[0]
    edge_fea_all = -1 * np.ones([n, n, max_dist, edge_feat.shape[-1]], dtype=np.int64)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            nodes = path_of(i, j)
            if nodes is None:
                continue
            for k in range(len(nodes) - 1):
                edge_fea_all[i, j, k, :] = edge_feat[nodes[k], nodes[k + 1], :]
    return edge_fea_all


def fw_path_of(path: np.ndarray, fixed: bool):
    none = -1 if fixed else 0
    return lambda i, j: None if path[i][j] == 510 else [i, *get_all_edges(path, i, j, none), j]


def stored_path_of(data: Data):
    """The path the formers transform stored (followed node by node, the plain way)."""
    n = data.num_nodes
    spd, nxt = data.spd.view(n, n).tolist(), data.spd_next.view(n, n).tolist()

    def path_of(i: int, j: int) -> list[int] | None:
        if spd[i][j] < 0:
            return None
        nodes = [i]
        while nodes[-1] != j:
            nodes.append(nxt[nodes[-1]][j])
        return nodes

    return path_of


def preprocess_item(data: Data, paths: str = "stored") -> dict[str, torch.Tensor]:
    """v1 ``wrapper.preprocess_item``; ``paths``: ``"stored"`` (the formers transform's paths, for graphs with ties),
    ``"v1"`` (the official Floyd-Warshall reconstruction) or ``"v2"`` (with the #119 fix)."""
    edge_attr, edge_index, x = data.edge_attr, data.edge_index, data.x
    n = x.size(0)
    x = convert_to_single_emb(x)
    adj = torch.zeros([n, n], dtype=torch.bool)
    adj[edge_index[0, :], edge_index[1, :]] = True
    if len(edge_attr.size()) == 1:
        edge_attr = edge_attr[:, None]
    attn_edge_type = torch.zeros([n, n, edge_attr.size(-1)], dtype=torch.long)
    attn_edge_type[edge_index[0, :], edge_index[1, :]] = convert_to_single_emb(edge_attr) + 1
    shortest_path_result, path = floyd_warshall(adj.numpy(), fixed=paths == "v2")
    max_dist = int(np.amax(shortest_path_result))
    path_of = stored_path_of(data) if paths == "stored" else fw_path_of(path, fixed=paths == "v2")
    edge_input = gen_edge_input(max_dist, path_of, attn_edge_type.numpy())
    return {
        "x": x,
        "attn_bias": torch.zeros([n + 1, n + 1], dtype=torch.float),
        "spatial_pos": torch.from_numpy(shortest_path_result).long(),
        "in_degree": adj.long().sum(dim=1).view(-1),
        "edge_input": torch.from_numpy(edge_input).long(),
    }


def collate(items: list[dict], multi_hop_max_dist: int, spatial_pos_max: int = 1024) -> dict[str, torch.Tensor]:
    """v1 ``collator.collator`` (its pad helpers inlined; max_node large enough to keep every graph)."""
    xs = [it["x"] for it in items]
    edge_inputs = [it["edge_input"][:, :, :multi_hop_max_dist, :] for it in items]
    attn_biases = [it["attn_bias"].clone() for it in items]
    for bias, it in zip(attn_biases, items, strict=True):
        bias[1:, 1:][it["spatial_pos"] >= spatial_pos_max] = float("-inf")
    max_node_num = max(i.size(0) for i in xs)
    max_dist = max(i.size(-2) for i in edge_inputs)

    def pad_2d(x, padlen):
        x = x + 1
        new_x = x.new_zeros([padlen, x.size(1)])
        new_x[: x.size(0)] = x
        return new_x[None]

    def pad_1d(x, padlen):
        x = x + 1
        new_x = x.new_zeros([padlen])
        new_x[: x.size(0)] = x
        return new_x[None]

    def pad_bias(x, padlen):
        xlen = x.size(0)
        new_x = x.new_zeros([padlen, padlen]).fill_(float("-inf"))
        new_x[:xlen, :xlen] = x
        new_x[xlen:, :xlen] = 0
        return new_x[None]

    def pad_spatial(x, padlen):
        x = x + 1
        new_x = x.new_zeros([padlen, padlen])
        new_x[: x.size(0), : x.size(0)] = x
        return new_x[None]

    def pad_3d(x, p1, p2, p3):
        x = x + 1
        new_x = x.new_zeros([p1, p2, p3, x.size(-1)])
        new_x[: x.size(0), : x.size(1), : x.size(2)] = x
        return new_x[None]

    return {
        "x": torch.cat([pad_2d(i, max_node_num) for i in xs]),
        "edge_input": torch.cat([pad_3d(i, max_node_num, max_node_num, max_dist) for i in edge_inputs]),
        "attn_bias": torch.cat([pad_bias(i, max_node_num + 1) for i in attn_biases]),
        "spatial_pos": torch.cat([pad_spatial(it["spatial_pos"], max_node_num) for it in items]),
        "in_degree": torch.cat([pad_1d(it["in_degree"], max_node_num) for it in items]),
    }


def official_forward(
    sd: dict[str, torch.Tensor], batch: dict, num_layers: int, heads: int, mhmd: int, node_level=False
):
    """v1 ``Graphormer.forward`` (multi_hop, eval: no dropout) and its ``EncoderLayer`` / ``MultiHeadAttention``."""
    attn_bias, spatial_pos, x = batch["attn_bias"], batch["spatial_pos"], batch["x"]
    in_degree, out_degree = batch["in_degree"], batch["in_degree"]
    edge_input = batch["edge_input"]
    n_graph, n_node = x.size()[:2]
    graph_attn_bias = attn_bias.clone().unsqueeze(1).repeat(1, heads, 1, 1)
    spatial_pos_bias = F.embedding(spatial_pos, sd["spatial_pos_encoder.weight"]).permute(0, 3, 1, 2)
    graph_attn_bias[:, :, 1:, 1:] = graph_attn_bias[:, :, 1:, 1:] + spatial_pos_bias
    t = sd["graph_token_virtual_distance.weight"].view(1, heads, 1)
    graph_attn_bias[:, :, 1:, 0] = graph_attn_bias[:, :, 1:, 0] + t
    graph_attn_bias[:, :, 0, :] = graph_attn_bias[:, :, 0, :] + t
    spatial_pos_ = spatial_pos.clone()
    spatial_pos_[spatial_pos_ == 0] = 1
    spatial_pos_ = torch.where(spatial_pos_ > 1, spatial_pos_ - 1, spatial_pos_)
    spatial_pos_ = spatial_pos_.clamp(0, mhmd)
    edge_input = edge_input[:, :, :, :mhmd, :]
    edge_input = F.embedding(edge_input, sd["edge_encoder.weight"]).mean(-2)
    max_dist = edge_input.size(-2)
    edge_input_flat = edge_input.permute(3, 0, 1, 2, 4).reshape(max_dist, -1, heads)
    edge_input_flat = torch.bmm(edge_input_flat, sd["edge_dis_encoder.weight"].reshape(-1, heads, heads)[:max_dist])
    edge_input = edge_input_flat.reshape(max_dist, n_graph, n_node, n_node, heads).permute(1, 2, 3, 0, 4)
    edge_input = (edge_input.sum(-2) / (spatial_pos_.float().unsqueeze(-1))).permute(0, 3, 1, 2)
    graph_attn_bias[:, :, 1:, 1:] = graph_attn_bias[:, :, 1:, 1:] + edge_input
    graph_attn_bias = graph_attn_bias + attn_bias.unsqueeze(1)  # reset
    node_feature = F.embedding(x, sd["atom_encoder.weight"]).sum(dim=-2)
    node_feature = (
        node_feature
        + F.embedding(in_degree, sd["in_degree_encoder.weight"])
        + F.embedding(out_degree, sd["out_degree_encoder.weight"])
    )
    graph_token_feature = sd["graph_token.weight"].unsqueeze(0).repeat(n_graph, 1, 1)
    output = torch.cat([graph_token_feature, node_feature], dim=1)
    for i in range(num_layers):
        output = official_layer(output, graph_attn_bias, sd, f"layers.{i}.", heads)
    dim = output.shape[-1]
    output = F.layer_norm(output, (dim,), sd["final_ln.weight"], sd["final_ln.bias"])
    rows = output[:, 1:, :] if node_level else output[:, 0, :]
    return F.linear(rows, sd["downstream_out_proj.weight"], sd["downstream_out_proj.bias"])


def official_layer(x, attn_bias, sd, p, heads):
    dim = x.shape[-1]
    d_k = dim // heads
    y = F.layer_norm(x, (dim,), sd[p + "self_attention_norm.weight"], sd[p + "self_attention_norm.bias"])
    a = p + "self_attention."
    b = y.size(0)
    q = F.linear(y, sd[a + "linear_q.weight"], sd[a + "linear_q.bias"]).view(b, -1, heads, d_k).transpose(1, 2)
    k = F.linear(y, sd[a + "linear_k.weight"], sd[a + "linear_k.bias"]).view(b, -1, heads, d_k)
    v = F.linear(y, sd[a + "linear_v.weight"], sd[a + "linear_v.bias"]).view(b, -1, heads, d_k).transpose(1, 2)
    k = k.transpose(1, 2).transpose(2, 3)
    q = q * d_k**-0.5
    s = torch.softmax(torch.matmul(q, k) + attn_bias, dim=3)
    y = s.matmul(v).transpose(1, 2).contiguous().view(b, -1, heads * d_k)
    x = x + F.linear(y, sd[a + "output_layer.weight"], sd[a + "output_layer.bias"])
    y = F.layer_norm(x, (dim,), sd[p + "ffn_norm.weight"], sd[p + "ffn_norm.bias"])
    y = F.gelu(F.linear(y, sd[p + "ffn.layer1.weight"], sd[p + "ffn.layer1.bias"]))
    return x + F.linear(y, sd[p + "ffn.layer2.weight"], sd[p + "ffn.layer2.bias"])


def official_state_dict(model: Graphormer, seed: int, zero_edge_padding: bool) -> dict[str, torch.Tensor]:
    """Random weights in the official v1 key layout and shapes (v1 ``__init__``), large enough to matter;
    ``zero_edge_padding=False`` leaves the edge table's padding row random, as v1's ``init_params`` does."""
    gen = torch.Generator().manual_seed(seed)
    heads, dim = model.num_heads, model.dim
    ffn = model.layers[0].ffn.fc1.out_features

    def rnd(*shape, std=0.3):
        return torch.randn(*shape, generator=gen) * std

    sd = {
        "atom_encoder.weight": rnd(*model.atom_encoder.weight.shape),
        "edge_encoder.weight": rnd(*model.edge_encoder.weight.shape),
        "edge_dis_encoder.weight": rnd(*model.edge_dis_encoder.weight.shape),
        "spatial_pos_encoder.weight": rnd(model.num_spatial, heads),
        "in_degree_encoder.weight": rnd(model.num_degree, dim),
        "out_degree_encoder.weight": rnd(model.num_degree, dim),
        "graph_token.weight": rnd(1, dim),
        "graph_token_virtual_distance.weight": rnd(1, heads),
        "final_ln.weight": 1 + rnd(dim, std=0.1),
        "final_ln.bias": rnd(dim, std=0.1),
        "downstream_out_proj.weight": rnd(model.out_dim, dim),
        "downstream_out_proj.bias": rnd(model.out_dim),
    }
    if zero_edge_padding:
        sd["edge_encoder.weight"][0] = 0.0
    for i in range(model.num_layers):
        p = f"layers.{i}."
        for norm in ("self_attention_norm", "ffn_norm"):
            sd[p + norm + ".weight"], sd[p + norm + ".bias"] = 1 + rnd(dim, std=0.1), rnd(dim, std=0.1)
        for lin in ("linear_q", "linear_k", "linear_v", "output_layer"):
            sd[p + f"self_attention.{lin}.weight"], sd[p + f"self_attention.{lin}.bias"] = rnd(dim, dim), rnd(dim)
        sd[p + "ffn.layer1.weight"], sd[p + "ffn.layer1.bias"] = rnd(ffn, dim), rnd(ffn)
        sd[p + "ffn.layer2.weight"], sd[p + "ffn.layer2.bias"] = rnd(dim, ffn), rnd(dim)
    return sd


def oracle(sd, model: Graphormer, graphs: list[Data], paths: str = "stored", node_level: bool = False):
    items = [preprocess_item(g, paths) for g in graphs]
    batch = collate(items, model.multi_hop_max_dist)
    out = official_forward(sd, batch, model.num_layers, model.num_heads, model.multi_hop_max_dist, node_level)
    if node_level:  # real nodes only
        return torch.cat([out[g, : graph.num_nodes] for g, graph in enumerate(graphs)])
    return out


def loaded(model: Graphormer, sd: dict) -> Graphormer:
    model.load_state_dict(checkpoint_filter_fn({"state_dict": sd}, model))  # strict: every key mapped
    return model.eval()


# ---------------------------------------------------------------------------------------------- parameter counts


def official_v1_param_count(layers, dim, heads, ffn, atom_rows, edge_rows, edge_dis, spatial, degree, out=1) -> int:
    """v1 ``Graphormer.__init__`` counted by hand: tables, layers (2 LN, q/k/v/o, FFN), final LN, head, graph token."""
    tables = atom_rows * dim + edge_rows * heads + edge_dis * heads * heads + spatial * heads + 2 * degree * dim
    layer = 2 * 2 * dim + 4 * (dim * dim + dim) + (dim * ffn + ffn) + (ffn * dim + dim)
    return tables + layers * layer + 2 * dim + (dim * out + out) + dim + heads


@pytest.mark.parametrize(
    ("name", "expected", "arch"),
    [
        ("graphormer_slim", 489_481, (12, 80, 8, 80, 64, 64, 40, 40, 64)),
        ("graphormer_small", 12_550_721, (6, 512, 32, 512, 4609, 1537, 128, 512, 512)),
        ("graphormer_base", 47_085_377, (12, 768, 32, 768, 4609, 1537, 128, 512, 512)),
        ("graphormer_molecules", 945_953, (12, 80, 8, 80, 4609, 1537, 128, 512, 512)),
    ],
)
def test_official_parameter_counts(name: str, expected: int, arch: tuple) -> None:
    """ZINC Slim 489,481, PCQM4M Small 12,550,721 and base 47,085,377: the v1 classes' counts (reference note 2.3)."""
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_parameters() == expected == official_v1_param_count(*arch)


# ----------------------------------------------------------------------------------------------- the oracle


def test_matches_official_v1_zinc_layout() -> None:
    """ZINC tables, one atom / bond column: the padding-free model equals the official forward on the padded batch."""
    model = tiny(multi_hop_max_dist=4, num_heads=4, ffn_dim=24)
    gen = torch.Generator().manual_seed(1)
    graphs = [random_graph(n, gen, rings=r) for n, r in [(7, 1), (12, 2), (2, 0), (18, 3), (5, 0)]]
    sd = official_state_dict(model, seed=0, zero_edge_padding=True)
    loaded(model, sd)
    with torch.no_grad():
        ours = model(Batch.from_data_list(graphs))
    torch.testing.assert_close(ours, oracle(sd, model, graphs), rtol=1e-5, atol=1e-5)


def test_matches_official_v1_molecules_with_unreachable_pairs() -> None:
    """Official shared tables (9 atom / 3 bond columns, 512 rows each), salts (unreachable pairs: bucket 511, divisor
    multi_hop_max_dist) and a lone ion, node-level head too."""
    model = tiny("graphormer_molecules", num_heads=4, multi_hop_max_dist=3)
    graphs = [molecule(s) for s in ["CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]", "CCO.O", "c1ccccc1", "[K+]", "CC"]]
    sd = official_state_dict(model, seed=1, zero_edge_padding=True)
    loaded(model, sd)
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), oracle(sd, model, graphs), rtol=1e-5, atol=1e-5)
        model.node_level = True
        torch.testing.assert_close(model(batch), oracle(sd, model, graphs, node_level=True), rtol=1e-5, atol=1e-5)


def test_official_checkpoint_padding_row_gives_each_graph_its_lone_official_output() -> None:
    """v1's init re-draws the edge table's padding row: the official output then depends on the batch (padded hops
    add ``EdgeEmb[0] @ W_n``). Loaded here, every graph gets, in any batch, what the official code gives it alone."""
    model = tiny(multi_hop_max_dist=5, num_heads=4)
    gen = torch.Generator().manual_seed(2)
    graphs = [random_graph(n, gen, rings=r) for n, r in [(9, 1), (4, 0), (16, 2), (6, 1)]]
    sd = official_state_dict(model, seed=2, zero_edge_padding=False)
    loaded(model, sd)
    with torch.no_grad():
        ours = model(Batch.from_data_list(graphs))
    alone = torch.cat([oracle(sd, model, [g]) for g in graphs])
    torch.testing.assert_close(ours, alone, rtol=1e-5, atol=1e-5)
    mixed = oracle(sd, model, graphs)
    assert (mixed - alone).abs().max() > 1e-3  # the official batch dependence this avoids


def test_paths_match_official_floyd_warshall_and_its_node_0_defect() -> None:
    """Where the shortest path is unique (trees), the stored paths give v2's edge inputs exactly. v1 drops node 0
    from paths that Floyd-Warshall splits at node 0 (here 1 - 0 - 2) and reads a non-existent edge instead."""
    gen = torch.Generator().manual_seed(3)
    for n in (2, 6, 11):
        tree = random_graph(n, gen, rings=0)
        np.testing.assert_array_equal(
            preprocess_item(tree, "stored")["edge_input"], preprocess_item(tree, "v2")["edge_input"]
        )
    line = ShortestPaths()(
        Data(
            x=torch.zeros(3, 1, dtype=torch.long),
            edge_index=undirected([(0, 1), (0, 2)]),
            edge_attr=torch.tensor([[1], [2], [1], [2]]),
        )
    )
    good, v1 = preprocess_item(line, "stored")["edge_input"], preprocess_item(line, "v1")["edge_input"]
    np.testing.assert_array_equal(good, preprocess_item(line, "v2")["edge_input"])
    assert good[1, 2, :, 0].tolist() == [1 + 2, 2 + 2]  # bonds 1 then 2, shifted by v1's +1 +1
    assert v1[1, 2, :, 0].tolist() == [0, -1]  # v1: "edge" 1 -> 2 (none), one hop


def test_checkpoint_filter_fn_keys() -> None:
    model = tiny()
    sd = official_state_dict(model, seed=0, zero_edge_padding=True)
    mapped = checkpoint_filter_fn({"state_dict": {f"model.{k}": v for k, v in sd.items()}}, model)
    assert set(mapped) == set(model.state_dict())
    q, k, v = (sd[f"layers.1.self_attention.linear_{w}.weight"] for w in "qkv")
    torch.testing.assert_close(mapped["layers.1.self_attention.qkv.weight"], torch.cat([q, k, v]))
    torch.testing.assert_close(mapped["head.bias"], sd["downstream_out_proj.bias"])
    pcq = {
        ("out_proj" + k.removeprefix("downstream_out_proj") if k.startswith("downstream") else k): v
        for k, v in sd.items()
    }
    assert "head.weight" in checkpoint_filter_fn(pcq, model)
    del sd["layers.0.self_attention.linear_k.bias"]
    with pytest.raises(ValueError, match="layer 0 has linear_"):
        checkpoint_filter_fn(sd, model)


# --------------------------------------------------------------------------------------------- padding-free


def test_each_graph_gives_what_it_gives_alone_including_a_large_graph() -> None:
    """Mixed sizes, a disconnected graph, a single node and a 150-node graph (the official collator drops > 128)."""
    model = tiny(num_spatial=512, num_degree=512)
    randomize(model)
    model.eval()
    gen = torch.Generator().manual_seed(4)
    big = random_graph(150, gen, rings=20)
    no_bonds = {"edge_index": torch.zeros(2, 0, dtype=torch.long), "edge_attr": torch.zeros(0, 1, dtype=torch.long)}
    pair = ShortestPaths()(Data(x=torch.tensor([[1], [2]]), num_nodes=2, **no_bonds))  # two unreachable atoms
    graphs = [random_graph(8, gen), big, random_graph(1, gen), pair, random_graph(23, gen, rings=3)]
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        together = model(batch)
        for g, graph in enumerate(graphs):
            torch.testing.assert_close(model(graph), together[g : g + 1], rtol=1e-5, atol=1e-5)
        model.node_level = True
        nodes = model(batch)
        alone = torch.cat([model(Batch.from_data_list([g])) for g in graphs])
    torch.testing.assert_close(nodes, alone, rtol=1e-5, atol=1e-5)


def test_padded_layout_matches_packed_forward_and_gradients() -> None:
    model = tiny(dropout=0.0, attention_dropout=0.0, input_dropout=0.0)
    randomize(model, std=0.2)
    gen = torch.Generator().manual_seed(5)
    batch = Batch.from_data_list([random_graph(n, gen, rings=2) for n in (3, 14, 7, 1)])
    packed, padded = model(batch), model.forward_padded(batch)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), list(model.parameters())) for out in (packed, padded)]
    for name, a, b in zip([n for n, _ in model.named_parameters()], *grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_permutation_equivariance() -> None:
    """Relabel the nodes (and recompute the paths): same graph output, permuted node outputs. Trees (one shortest
    path per pair, so edge sequences are unique) with bonds; any graph without edge features."""
    gen = torch.Generator().manual_seed(6)
    cases = [
        ("graphormer_slim", random_graph(10, gen, rings=0), {}),
        ("graphormer_slim", None, {"num_bond_types": None}),
    ]
    for name, graph, kwargs in cases:
        model = tiny(name, **kwargs)
        randomize(model)
        model.eval()
        if graph is None:
            graph = random_graph(11, gen, rings=4)
            del graph.edge_attr, graph.spd_next
        n = graph.num_nodes
        perm = torch.randperm(n, generator=gen)
        inverse = torch.argsort(perm)  # old id -> new id
        moved = Data(x=graph.x[perm], edge_index=inverse[graph.edge_index], num_nodes=n)
        if "edge_attr" in graph:
            moved.edge_attr = graph.edge_attr
        moved = ShortestPaths(with_next="edge_attr" in graph)(moved)
        with torch.no_grad():
            torch.testing.assert_close(model(moved), model(graph), rtol=1e-5, atol=1e-5)
            model.node_level = True
            torch.testing.assert_close(model(moved), model(graph)[perm], rtol=1e-5, atol=1e-5)


def test_unreachable_pairs_use_the_last_bucket_of_a_small_table() -> None:
    """ZINC's 40-row spatial table: v1 would index row 511 and crash; here the pair gets the last row."""
    model = tiny().eval()
    gen = torch.Generator().manual_seed(7)
    a, b = random_graph(3, gen), random_graph(2, gen)
    salt = ShortestPaths()(
        Data(
            x=torch.cat([a.x, b.x]),
            edge_index=torch.cat([a.edge_index, b.edge_index + 3], 1),
            edge_attr=torch.cat([a.edge_attr, b.edge_attr]),
        )
    )
    with torch.no_grad():
        out = model(salt)
        model.spatial_pos_encoder.weight[-1] += 1.0
        assert not torch.allclose(model(salt), out)
        model.edge_encoder.weight[0] = torch.randn(2)  # as in an official checkpoint
        inputs = model._unpack(salt)
        bias = model._token_pair_bias(inputs, _Layout.of(inputs["ptr"]))  # (Q, H): one graph, 6 tokens
    hops = model.multi_hop_max_dist  # disconnected: the official hop count is multi_hop_max_dist, all padding
    padding = model.edge_encoder.weight[0] @ model.edge_dis_encoder.weight.view(-1, 2, 2)[:hops].sum(0)
    want = model.spatial_pos_encoder.weight[-1] + padding / hops  # node 0 -> node 4 (token 1 -> token 5)
    torch.testing.assert_close(bias.view(6, 6, -1)[1, 5], want)


def test_gradients_reach_every_parameter_and_the_bias_tables() -> None:
    model = tiny().train()
    out = model(**model.example_inputs(3))
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name in ("spatial_pos_encoder", "edge_dis_encoder", "graph_token_virtual_distance", "edge_encoder"):
        assert getattr(model, name).weight.grad.abs().sum() > 0, name
    assert model.edge_encoder.weight.grad[0].abs().sum() == 0  # padding row frozen, as v1's padding_idx


def test_short_fit_on_molecules_loss_falls() -> None:
    """30 SMILES (PyG from_smiles), the molecules config shrunk: regress the (standardised) aromatic atom share."""
    torch.manual_seed(0)
    graphs = [molecule(s) for s in SMILES]
    target = torch.stack([g.x[:, 7].float().mean() for g in graphs])  # from_smiles column 7: is_aromatic
    target = ((target - target.mean()) / target.std())[:, None]
    batch = Batch.from_data_list(graphs)
    model = tiny("graphormer_molecules", dropout=0.0, attention_dropout=0.0, input_dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(model(batch), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses[::8]


# ----------------------------------------------------------------------------------------------- backends


def test_follows_attention_backend_settings() -> None:
    model = tiny().eval()
    inputs = model.example_inputs(2)
    with torch.no_grad():
        auto = model(**inputs)
        with use_backend("reference"):
            torch.testing.assert_close(model(**inputs), auto, rtol=1e-5, atol=1e-5)
        with use_backend("sdpa_blockmask"), pytest.raises(BackendUnavailableError, match="no packed attention bias"):
            model(**inputs)
        set_attention_backend(model, "nested")
        with pytest.raises(BackendUnavailableError, match="'nested'.*no packed attention bias"):
            model(**inputs)
        set_attention_backend(model, "reference")
        torch.testing.assert_close(model(**inputs), auto, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.forward_padded(inputs["data"]), auto, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- errors


def _batch(**changes) -> Batch:
    gen = torch.Generator().manual_seed(8)
    batch = Batch.from_data_list([random_graph(4, gen), random_graph(5, gen)])
    for key, value in changes.items():
        if value is None:
            del batch[key]
        else:
            batch[key] = value(batch) if callable(value) else value
    return batch


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"spd": None}, ValueError, r"data.spd is missing.*ShortestPaths"),
        ({"spd_next": None}, ValueError, r"data.spd_next is missing"),
        ({"spd": lambda b: b.spd.float()}, TypeError, "data.spd must be an integer tensor"),
        ({"spd_next": lambda b: b.spd_next[:-1]}, ValueError, r"shape \(sum of n_g², \) = \(41,\)"),
        ({"x": lambda b: b.x.float()}, TypeError, "data.x must hold integer category ids"),
        ({"x": lambda b: b.x + 28}, ValueError, "outside the vocabulary"),
        ({"x": lambda b: b.x.repeat(1, 2)}, ValueError, r"data.x must have shape \(num_nodes, 1\)"),
        ({"edge_attr": None}, ValueError, "edge_attr .* is missing"),
        ({"edge_index": lambda b: b.edge_index.int()}, TypeError, "edge_index must be a torch.long"),
        ({"edge_index": lambda b: b.edge_index.flip(1)[:, 1:]}, ValueError, "edge_attr must have shape"),
    ],
)
def test_bad_inputs(changes, error, match) -> None:
    model = tiny().eval()
    with torch.no_grad(), pytest.raises(error, match=match):
        model(_batch(**changes))


def test_paths_that_no_longer_match_the_edges_are_refused() -> None:
    model = tiny().eval()
    batch = _batch()
    keep = ~((batch.edge_index[0] == 0) | (batch.edge_index[1] == 0))  # drop node 0's bonds after the transform
    batch.edge_index, batch.edge_attr = batch.edge_index[:, keep], batch.edge_attr[keep]
    with torch.no_grad(), pytest.raises(ValueError, match="recompute ShortestPaths"):
        model(batch)
    with pytest.raises(TypeError, match="one PyG Data or Batch"):
        model({"x": batch.x})
    cross = _batch()
    cross.edge_index = torch.cat([cross.edge_index, torch.tensor([[0], [5]])], 1)
    cross.edge_attr = torch.cat([cross.edge_attr, cross.edge_attr[:1]])
    with torch.no_grad(), pytest.raises(ValueError, match="different graphs"):
        model(cross)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 10, "num_heads": 3}, "not divisible"),
        ({"multi_hop_max_dist": 50}, "exceeds the 40 per-hop"),
        ({"atom_table_size": 20}, "atom_table_size has 20 rows but the features need 30"),
        ({"num_atom_types": 600}, "num_atom_types must be"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_spatial": 2}, "num_spatial"),
    ],
)
def test_bad_configs(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_official_init() -> None:
    """v1 init_params: Linear N(0, 0.02 / sqrt(L)), zero bias; Embedding N(0, 0.02); padding rows zero here."""
    torch.manual_seed(0)
    model = create_model("graphormer_molecules")
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(weights.std().item() - 0.02 / math.sqrt(12)) < 2e-4
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert abs(model.atom_encoder.weight[1:].std().item() - 0.02) < 5e-4
    for table in (model.atom_encoder, model.edge_encoder, model.spatial_pos_encoder, model.in_degree_encoder):
        assert table.weight[0].abs().max() == 0


# ---------------------------------------------------------------------------------------------------- benchmark

ZINC_SMILES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "graph" / "zinc_jtvae" / "test.txt"


def test_benchmark_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--threads", "1", "--layers", "1", "--repeats", "1", "--warmup", "0", "--compare-backends"]
    args += ["--attention-dropout", "0", "--sbm-graphs", "3", "--sbm-min", "8", "--sbm-max", "12"]
    args += ["--molecules", "4" if ZINC_SMILES.is_file() else "0", "--json", str(tmp_path / "g.json")]
    with benchmark_module("graphormer") as bench:
        metrics = bench.main(args)
    written = json.loads((tmp_path / "g.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]
    assert written == metrics
    for result in metrics["workloads"].values():
        assert result["max_abs_output_diff"] < 1e-5
        assert result["speedup_padded_over_padding_free"] > 0
        assert set(result["times"]) == {"padding_free", "padded", "padding_free[sdpa]", "padding_free[cpu_matmul]"}
    assert "speedup padded / padding-free" in capsys.readouterr().out

"""Graph Transformer: official parameter counts, equality with the official DGL arithmetic (an oracle written here step
by step from graphdeeplearning/graphtransformer @ c9cd493, on state dicts in the official layout loaded through the key
map), the per-batch LapPE sign flip, permutation equivariance, gradients, a short fit on real molecules, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_smiles

from formers.core.registry import create_model, get_model_entry
from formers.core.weights import load_into
from formers.graph.encodings.laplacian import LaplacianPE
from formers.graph.models.graph_transformer import GraphTransformer, checkpoint_filter_fn

# ------------------------------------------------------------------------------------------------------- helpers


def random_graph(n: int, *, atom_vocab: int, bond_vocab: int | None, pe_dim: int, gen: torch.Generator) -> Data:
    """A connected undirected graph: a random tree plus a few extra edges, both directions, with categories + LapPE."""
    pairs = {(i, int(torch.randint(0, i, (), generator=gen))) for i in range(1, n)}
    for _ in range(n // 3):
        a, b = torch.randint(0, n, (2,), generator=gen).tolist()
        if a != b and (a, b) not in pairs and (b, a) not in pairs:
            pairs.add((a, b))
    src, dst = zip(*sorted(pairs), strict=True)
    data = Data(x=torch.randint(0, atom_vocab, (n, 1), generator=gen), edge_index=torch.tensor([src + dst, dst + src]))
    if bond_vocab is not None:
        bonds = torch.randint(0, bond_vocab, (len(pairs), 1), generator=gen)
        data.edge_attr = torch.cat([bonds, bonds])
    return LaplacianPE(pe_dim)(data) if pe_dim else data


def random_graphs(sizes, **kwargs) -> list[Data]:
    gen = torch.Generator().manual_seed(123)
    return [random_graph(n, gen=gen, **kwargs) for n in sizes]


def rand(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen) * scale


# ----------------------------------------------------------------------------------- official layout and arithmetic
# Both written from the official classes: nets/molecules_graph_regression/graph_transformer_net.py (edge layer,
# layers/graph_transformer_edge_layer.py) and nets/SBMs_node_classification/graph_transformer_net.py (layer without
# edge features, layers/graph_transformer_layer.py); MLPReadout from layers/mlp_readout_layer.py.


def official_state_dict(cfg: dict, seed: int = 0) -> dict[str, Tensor]:
    """Random weights under the official parameter names and shapes; norms with non-trivial running statistics."""
    gen = torch.Generator().manual_seed(seed)
    d, sbm, sd = cfg["hidden"], cfg["sbm"], {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        sd[f"{name}.weight"] = rand(gen, fan_out, fan_in, scale=fan_in**-0.5)
        if bias:
            sd[f"{name}.bias"] = rand(gen, fan_out, scale=0.1)

    def norms(name: str) -> None:
        if cfg["layer_norm"]:
            sd[f"{name.replace('NORM', 'layer_norm')}.weight"] = 1 + rand(gen, d, scale=0.1)
            sd[f"{name.replace('NORM', 'layer_norm')}.bias"] = rand(gen, d, scale=0.1)
        if cfg["batch_norm"]:
            bn = name.replace("NORM", "batch_norm")
            sd[f"{bn}.weight"], sd[f"{bn}.bias"] = 1 + rand(gen, d, scale=0.1), rand(gen, d, scale=0.1)
            sd[f"{bn}.running_mean"] = rand(gen, d, scale=0.3)
            sd[f"{bn}.running_var"] = 0.5 + torch.rand(d, generator=gen) * 1.5
            sd[f"{bn}.num_batches_tracked"] = torch.tensor(100)

    if cfg["pe_dim"]:
        linear("embedding_lap_pos_enc", cfg["pe_dim"], d)
    sd["embedding_h.weight"] = rand(gen, cfg["atoms"], d)
    if not sbm:
        if cfg["bonds"] is not None:
            sd["embedding_e.weight"] = rand(gen, cfg["bonds"], d)
        else:  # edge_feat False: nn.Linear(1, hidden_dim)
            linear("embedding_e", 1, d)
    for i in range(cfg["L"]):
        p = f"layers.{i}."
        for proj in ("Q", "K", "V") + (() if sbm else ("proj_e",)):
            linear(p + f"attention.{proj}", d, d, bias=False)
        for s in ("",) if sbm else ("_h", "_e"):
            linear(p + f"O{s}", d, d)
            norms(p + f"NORM1{s}")
            linear(p + f"FFN{s}_layer1", d, 2 * d)
            linear(p + f"FFN{s}_layer2", 2 * d, d)
            norms(p + f"NORM2{s}")
    linear("MLP_layer.FC_layers.0", d, d // 2)
    linear("MLP_layer.FC_layers.1", d // 2, d // 4)
    linear("MLP_layer.FC_layers.2", d // 4, cfg["out"])
    return sd


def o_linear(sd: dict, name: str, x: Tensor) -> Tensor:
    out = x @ sd[f"{name}.weight"].t()
    return out + sd[f"{name}.bias"] if f"{name}.bias" in sd else out


def o_norm(sd: dict, cfg: dict, name: str, x: Tensor) -> Tensor:
    """``if layer_norm: h = layer_norm(h)``, then ``if batch_norm: h = batch_norm(h)`` (eval: running statistics)."""
    if cfg["layer_norm"]:
        ln = name.replace("NORM", "layer_norm")
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5) * sd[f"{ln}.weight"] + sd[f"{ln}.bias"]
    if cfg["batch_norm"]:
        bn = name.replace("NORM", "batch_norm")
        x = (x - sd[f"{bn}.running_mean"]) / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5)
        x = x * sd[f"{bn}.weight"] + sd[f"{bn}.bias"]
    return x


def o_send_and_recv_sum(messages: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """DGL ``send_and_recv(..., fn.sum)``: each node sums the messages of its in-edges, one edge at a time here."""
    out = messages.new_zeros(num_nodes, *messages.shape[1:])
    for edge in range(messages.shape[0]):
        out[dst[edge]] = out[dst[edge]] + messages[edge]
    return out


def o_edge_attention(sd: dict, p: str, h: Tensor, e: Tensor, src: Tensor, dst: Tensor, heads: int):
    """graph_transformer_edge_layer.MultiHeadAttentionLayer.forward + propagate_attention."""
    dk = h.shape[1] // heads
    q_h = o_linear(sd, p + "attention.Q", h).view(-1, heads, dk)
    k_h = o_linear(sd, p + "attention.K", h).view(-1, heads, dk)
    v_h = o_linear(sd, p + "attention.V", h).view(-1, heads, dk)
    proj_e = o_linear(sd, p + "attention.proj_e", e).view(-1, heads, dk)
    score = k_h[src] * q_h[dst]  # src_dot_dst('K_h', 'Q_h', 'score'): no sum in the edge layer
    score = score / np.sqrt(dk)  # scaling('score', np.sqrt(self.out_dim))
    score = score * proj_e  # imp_exp_attn('score', 'proj_e')
    e_out = score  # out_edge_features('score')
    score = torch.exp(score.sum(-1, keepdim=True).clamp(-5, 5))  # exp('score')
    w_v = o_send_and_recv_sum(v_h[src] * score, dst, h.shape[0])  # fn.src_mul_edge('V_h', 'score'), fn.sum
    z = o_send_and_recv_sum(score, dst, h.shape[0])  # fn.copy_edge('score'), fn.sum
    h_out = w_v / (z + torch.full_like(z, 1e-6))
    return h_out, e_out


def o_sbm_attention(sd: dict, p: str, h: Tensor, src: Tensor, dst: Tensor, heads: int) -> Tensor:
    """graph_transformer_layer.MultiHeadAttentionLayer: src_dot_dst sums, scaled_exp, wV / z (no eps)."""
    dk = h.shape[1] // heads
    q_h = o_linear(sd, p + "attention.Q", h).view(-1, heads, dk)
    k_h = o_linear(sd, p + "attention.K", h).view(-1, heads, dk)
    v_h = o_linear(sd, p + "attention.V", h).view(-1, heads, dk)
    score = (k_h[src] * q_h[dst]).sum(-1, keepdim=True)
    score = torch.exp((score / np.sqrt(dk)).clamp(-5, 5))
    return o_send_and_recv_sum(v_h[src] * score, dst, h.shape[0]) / o_send_and_recv_sum(score, dst, h.shape[0])


def o_stream(sd: dict, cfg: dict, p: str, s: str, x_in: Tensor, attn: Tensor) -> Tensor:
    """GraphTransformerLayer.forward for one stream (dropout 0): O, residual, norm1, FFN, residual, norm2."""
    x = o_linear(sd, p + f"O{s}", attn.reshape(-1, cfg["hidden"]))
    x = x_in + x
    x = o_norm(sd, cfg, p + f"NORM1{s}", x)
    x_in2 = x
    x = o_linear(sd, p + f"FFN{s}_layer2", torch.relu(o_linear(sd, p + f"FFN{s}_layer1", x)))
    return o_norm(sd, cfg, p + f"NORM2{s}", x_in2 + x)


def official_forward(sd: dict, cfg: dict, graphs: list[Data]) -> Tensor:
    """GraphTransformerNet.forward (eval: no sign flip), graphs batched as dgl.batch does."""
    batch = Batch.from_data_list(graphs)
    src, dst = batch.edge_index
    h = sd["embedding_h.weight"][batch.x[:, 0]]
    if cfg["pe_dim"]:
        h = h + o_linear(sd, "embedding_lap_pos_enc", batch.lap_pe.float())
    if cfg["sbm"]:
        for i in range(cfg["L"]):
            h = o_stream(sd, cfg, f"layers.{i}.", "", h, o_sbm_attention(sd, f"layers.{i}.", h, src, dst, cfg["heads"]))
        hg = h  # node classification: MLPReadout on every node
    else:
        if cfg["bonds"] is not None:
            e = sd["embedding_e.weight"][batch.edge_attr[:, 0]]
        else:
            e = o_linear(sd, "embedding_e", torch.ones(src.shape[0], 1))
        for i in range(cfg["L"]):
            p = f"layers.{i}."
            h_attn, e_attn = o_edge_attention(sd, p, h, e, src, dst, cfg["heads"])
            h, e = o_stream(sd, cfg, p, "_h", h, h_attn), o_stream(sd, cfg, p, "_e", e, e_attn)
        hg = torch.stack([h[batch.batch == g].mean(0) for g in range(batch.num_graphs)])  # dgl.mean_nodes
    y = torch.relu(o_linear(sd, "MLP_layer.FC_layers.0", hg))
    y = torch.relu(o_linear(sd, "MLP_layer.FC_layers.1", y))
    return o_linear(sd, "MLP_layer.FC_layers.2", y)


def ours_for(cfg: dict) -> GraphTransformer:
    return GraphTransformer(
        cfg["atoms"],
        None if cfg["sbm"] else cfg["bonds"],
        cfg["out"],
        node_level=cfg["sbm"],
        hidden_dim=cfg["hidden"],
        num_layers=cfg["L"],
        num_heads=cfg["heads"],
        pe_dim=cfg["pe_dim"],
        edge_stream=not cfg["sbm"],
        layer_norm=cfg["layer_norm"],
        batch_norm=cfg["batch_norm"],
    )


TINY = {"hidden": 16, "L": 3, "heads": 4, "pe_dim": 3, "atoms": 5, "bonds": 3, "out": 2, "layer_norm": False}
ORACLE_CASES = {
    "molecules_bn": {**TINY, "sbm": False, "batch_norm": True},
    "molecules_ln": {**TINY, "sbm": False, "layer_norm": True, "batch_norm": False},
    "molecules_ln_bn": {**TINY, "sbm": False, "layer_norm": True, "batch_norm": True},
    "molecules_no_edge_feat": {**TINY, "sbm": False, "bonds": None, "batch_norm": True},
    "molecules_no_pe": {**TINY, "sbm": False, "pe_dim": 0, "batch_norm": True},
    "sbm_bn": {**TINY, "sbm": True, "bonds": None, "out": 3, "batch_norm": True},
    "sbm_ln": {**TINY, "sbm": True, "bonds": None, "out": 3, "layer_norm": True, "batch_norm": False},
}


# ---------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("graph_transformer_zinc", 588_929),
        ("graph_transformer_pattern", 522_982),
        ("graph_transformer_cluster", 524_026),
    ],
)
def test_official_parameter_counts(name, params):
    """configs/*_LapPE_*_500k_sparse_graph_BN.json, counted on the official classes (reference note 1.3)."""
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_parameters() == params


def test_variant_parameter_counts_and_the_frozen_last_edge_stream():
    """ZINC without PE / without edge features (reference note 1.3); the last layer's edge stream (O_e, BN, FFN_e:
    20,992 parameters at d 64) never reaches the output and is frozen."""
    with torch.device("meta"):
        assert GraphTransformer(pe_dim=0).num_parameters() == 588_353
        assert GraphTransformer(num_bond_types=None, edge_stream=True).num_parameters() == 588_801
        assert GraphTransformer(num_bond_types=None, edge_stream=True, pe_dim=0).num_parameters() == 588_225
        zinc = create_model("graph_transformer_zinc")
    assert zinc.num_parameters(trainable_only=True) == 588_929 - 20_992
    assert not any(p.requires_grad for p in zinc.layers[-1].edge.parameters())
    assert all(p.requires_grad for p in zinc.layers[-2].edge.parameters())


def test_official_state_dict_layout_at_full_size():
    """The official ZINC layout has 588,929 parameters and every key maps onto the model (strict load)."""
    cfg = {"hidden": 64, "L": 10, "heads": 8, "pe_dim": 8, "atoms": 28, "bonds": 4, "out": 1, "sbm": False}
    official = official_state_dict({**cfg, "layer_norm": False, "batch_norm": True})
    assert sum(
        v.numel() for k, v in official.items() if not k.endswith(("running_mean", "running_var", "tracked"))
    ) == (588_929)
    model = create_model("graph_transformer_zinc")
    load_into(model, official, filter_fn=checkpoint_filter_fn)
    torch.testing.assert_close(model.layers[9].attn.e_proj.weight, official["layers.9.attention.proj_e.weight"])
    torch.testing.assert_close(model.head.layers[2].bias, official["MLP_layer.FC_layers.2.bias"])


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_matches_official_arithmetic(case):
    """Official-layout weights through the key map: the same outputs as the step-by-step official arithmetic (eval
    mode, BatchNorm running statistics non-trivial), to 1e-5."""
    cfg = ORACLE_CASES[case]
    official = official_state_dict(cfg)
    model = ours_for(cfg).eval()
    load_into(model, official, filter_fn=checkpoint_filter_fn)
    graphs = random_graphs(
        [2, 7, 5, 11], atom_vocab=cfg["atoms"], bond_vocab=None if cfg["sbm"] else cfg["bonds"], pe_dim=cfg["pe_dim"]
    )
    with torch.no_grad():
        ours = model(Batch.from_data_list(graphs))
        expected = official_forward(official, cfg, graphs)
    assert ours.shape == expected.shape == ((25 if cfg["sbm"] else 4), cfg["out"])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_key_map_names_and_pass_through():
    model = ours_for(ORACLE_CASES["molecules_bn"])
    official = official_state_dict(ORACLE_CASES["molecules_bn"])
    mapped = checkpoint_filter_fn({"state_dict": {f"module.{k}": v for k, v in official.items()}}, model)
    assert set(mapped) == set(model.state_dict())
    assert set(checkpoint_filter_fn(model.state_dict(), model)) == set(model.state_dict())
    with pytest.raises(ValueError, match="WL positional"):
        checkpoint_filter_fn({"embedding_wl_pos_enc.weight": torch.zeros(1)}, model)
    with pytest.raises(ValueError, match="neither"):
        checkpoint_filter_fn({"encoder.foo": torch.zeros(1)}, model)


def pe_inputs_seen(model: GraphTransformer, data: Batch) -> Tensor:
    """What the LapPE Linear receives in one forward."""
    seen = []
    handle = model.pe_encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    model(data)
    handle.remove()
    return seen[0]


def test_lap_pe_sign_flip_per_training_batch_only():
    """Training: one random ±1 per eigenvector column (torch.rand(k) >= 0.5, the official train loop's draw), shared
    by every node of every graph of the batch, fresh in every forward. Eval: the stored encoding, unflipped."""
    model = create_model("graph_transformer_zinc", **get_model_entry("graph_transformer_zinc").test_kwargs)
    data = Batch.from_data_list(random_graphs([6, 9, 12], atom_vocab=28, bond_vocab=4, pe_dim=8))
    pe = data.lap_pe
    nonzero = pe.abs() > 1e-6
    signs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        official_draw = torch.rand(8)
        official_sign = torch.where(official_draw >= 0.5, 1.0, -1.0)
        torch.manual_seed(seed)
        flipped = pe_inputs_seen(model.train(), data)
        ratio = torch.where(nonzero, flipped / pe.where(nonzero, 1.0), 0.0)
        column_sign = ratio.sum(0).sign()
        assert torch.equal(ratio, column_sign.expand_as(ratio) * nonzero)  # one sign per column, whole batch
        assert torch.equal(column_sign, official_sign)
        signs.append(column_sign)
    assert not torch.equal(signs[0], signs[1])  # two training forwards, two draws
    state = torch.get_rng_state()
    assert torch.equal(pe_inputs_seen(model.eval(), data), pe)  # eval: no flip, no random draw
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(pe_inputs_seen(create_model("graph_transformer_zinc", flip_pe_sign=False).train(), data), pe)


def permuted(data: Data, gen: torch.Generator) -> tuple[Data, Tensor]:
    """The same graph with its nodes renumbered (new node i = old node perm[i]) and its edges shuffled."""
    n = data.num_nodes
    perm = torch.randperm(n, generator=gen)
    new_id = torch.empty_like(perm)
    new_id[perm] = torch.arange(n)
    edge_order = torch.randperm(data.edge_index.shape[1], generator=gen)
    out = Data(x=data.x[perm], edge_index=new_id[data.edge_index][:, edge_order], lap_pe=data.lap_pe[perm])
    if data.edge_attr is not None:
        out.edge_attr = data.edge_attr[edge_order]
    return out, perm


@pytest.mark.parametrize("name", ["graph_transformer_zinc", "graph_transformer_cluster"])
def test_permutation_equivariance(name):
    """Renumbering nodes and shuffling edges: the same graph outputs, node outputs permuted alike."""
    model = create_model(name, **get_model_entry(name).test_kwargs).eval()
    node_level = model.node_level
    graphs = random_graphs([5, 8, 13], atom_vocab=7, bond_vocab=None if node_level else 4, pe_dim=model.pe_dim)
    gen = torch.Generator().manual_seed(7)
    shuffled, perms = zip(*(permuted(g, gen) for g in graphs), strict=True)
    with torch.no_grad():
        ref = model(Batch.from_data_list(graphs))
        out = model(Batch.from_data_list(list(shuffled)))
    if node_level:
        offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
        ref = torch.cat([ref[o + p] for o, p in zip(offsets, perms, strict=False)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["graph_transformer_zinc", "graph_transformer_pattern"])
def test_each_graph_alone_equals_its_batch_row(name):
    """Eval: no information crosses graphs (attention over edges only, per-graph readout, BN running stats)."""
    model = create_model(name, **get_model_entry(name).test_kwargs).eval()
    batch = model.example_inputs(3)["data"]
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(Batch.from_data_list([g])) for g in batch.to_data_list()])
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_trainable_parameter():
    model = create_model("graph_transformer_molecules", hidden_dim=16, num_layers=3, num_heads=4, dropout=0.1)
    model.train()
    out = model(**model.example_inputs(4))
    out.square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
        else:
            assert name.startswith("layers.2.edge.") and param.grad is None, name


def test_isolated_nodes_stay_finite():
    """A node without in-edges gets zero attention output (official edge layer: 0 / 1e-6; SBM layer: 0 / 0 guarded)."""
    for name in ("graph_transformer_zinc", "graph_transformer_pattern"):
        model = create_model(name, **get_model_entry(name).test_kwargs).eval()
        data = model.example_inputs(1)["data"]
        data.x = torch.cat([data.x, data.x[:1]])
        data.lap_pe = torch.cat([data.lap_pe, torch.zeros(1, model.pe_dim)])
        data.batch = torch.cat([data.batch, data.batch[:1]])
        with torch.no_grad():
            assert torch.isfinite(model(data)).all()


SMILES = [
    "CCO", "CC(=O)O", "c1ccccc1", "CCN(CC)CC", "CC(C)O", "OCC(O)CO", "c1ccncc1", "CC(=O)Nc1ccc(O)cc1",
    "CCCCCCCC", "ClC(Cl)Cl", "CC(C)(C)O", "c1ccc2ccccc2c1", "O=C(O)c1ccccc1O", "CCOC(=O)C", "NCCO",
    "CC1=CC(=O)C=CC1=O", "C1CCCCC1", "CN1CCC[C@H]1c1cccnc1", "OC1CCCCC1", "CCCCO", "Fc1ccccc1", "Brc1ccccc1",
    "CS(C)=O", "C=CC#N", "CC(=O)OC1=CC=CC=C1C(=O)O", "Oc1ccc(cc1)C(C)(C)C", "CCCCCCCCCCCCCCCC(=O)O", "N#Cc1ccccc1",
    "O=C1CCCCC1", "CCOCC",
]  # fmt: skip


def test_short_fit_on_real_molecules_lowers_the_loss():
    """~30 real molecules (PyG from_smiles features, LapPE 8), target: Crippen logP (RDKit), standardized."""
    from rdkit import Chem
    from rdkit.Chem import Crippen

    graphs = [LaplacianPE(8)(from_smiles(s)) for s in SMILES]
    logp = torch.tensor([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in SMILES])
    target = ((logp - logp.mean()) / logp.std()).unsqueeze(1)
    batch = Batch.from_data_list(graphs)
    torch.manual_seed(0)
    model = create_model("graph_transformer_molecules", hidden_dim=32, num_layers=2, num_heads=4).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.l1_loss(model(batch), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


def test_bad_inputs_raise_clear_errors():
    model = create_model("graph_transformer_zinc", **get_model_entry("graph_transformer_zinc").test_kwargs).eval()
    good = model.example_inputs(2)["data"]

    def with_(**changes) -> Batch:
        data = good.clone()
        for key, value in changes.items():
            if value is None:
                del data[key]
            else:
                data[key] = value
        return data

    n, num_edges = good.num_nodes, good.edge_index.shape[1]
    cases = [
        (with_(lap_pe=None), ValueError, "lap_pe is missing.*LaplacianPE"),
        (with_(lap_pe=good.lap_pe.long()), TypeError, "lap_pe must be a floating"),
        (with_(lap_pe=good.lap_pe[:, :3]), ValueError, r"lap_pe must have shape"),
        (with_(x=good.x.float()), TypeError, "data.x must hold integer"),
        (with_(x=good.x + 28), ValueError, "data.x has ids outside"),
        (with_(edge_index=good.edge_index.float()), TypeError, "edge_index must be a torch.long"),
        (with_(edge_index=good.edge_index[:1]), ValueError, r"edge_index must have shape \(2, num_edges\)"),
        (with_(edge_index=torch.cat([good.edge_index, torch.tensor([[0], [n]])], 1)), ValueError, "outside"),
        (with_(edge_attr=None), ValueError, "edge_attr .* is missing"),
        (with_(edge_attr=good.edge_attr[: num_edges - 1]), ValueError, r"edge_attr must have shape"),
    ]
    for data, error, match in cases:
        with pytest.raises(error, match=match):
            model(data)
    with pytest.raises(TypeError, match="expects one PyG Data or Batch"):
        model(good.x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_dim": 10, "num_heads": 4}, "divisible"),
        ({"readout": "attention"}, "readout"),
        ({"pe_dim": -1}, "pe_dim"),
        ({"num_bond_types": 4, "edge_stream": False}, "edge stream"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraphTransformer(**{"hidden_dim": 16, "num_layers": 1, "num_heads": 2, **kwargs})


def test_benchmark_runs_on_real_molecules(tmp_path, capsys):
    """benchmarks/graph_transformer.py end to end at the tiny sizes: every contender timed, JSON with the machine."""
    import json

    from _bench import benchmark_module

    with benchmark_module("graph_transformer") as bench:
        if not bench.DEFAULT_SMILES.is_file():
            pytest.skip(f"shared data not available: {bench.DEFAULT_SMILES}")
        args = ["--tiny", "--molecules", "6", "--rounds", "1", "--warmup", "0", "--json", str(tmp_path / "b.json")]
        metrics = bench.main(args)
    out = capsys.readouterr().out
    assert all(name in out for name in bench.CONTENDERS)
    written = json.loads((tmp_path / "b.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]
    assert written == metrics and metrics["config"]["threads"] == 1
    assert metrics["gt"]["s_per_step"] > 0 and metrics["gps"]["gt_over_this"] > 0

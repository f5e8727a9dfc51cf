"""GNOT (formers.pde.models.gnot): the official parameter count, equality with the official arithmetic (an oracle
written here from thu-ml/GNOT @ 5ee2e69 ``models/mmgpt.py`` step by step, with the official module names, loaded into
our model through the registered ``checkpoint_filter_fn``), padding invariance (and the official code's padding
defect), normalisation of the attention, the coordinate-only gate, gradients and input errors; the packed
(padding-free) layout: equal outputs and gradients to the padded batch and to each sample alone, the chunked segment
sums against a quadratic oracle, the packed relative L2 of the task and the errors on inconsistent lengths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.layers.linear_attention import normalized_linear_attention
from formers.core.registry import create_model, get_model_entry
from formers.pde.models.gnot import (
    GNOT,
    HeterogeneousCrossAttention,
    PackedSegments,
    checkpoint_filter_fn,
    gnot_attention,
    packed_normalized_attention,
)
from formers.pde.pointcloud import collate_point_clouds, pack_point_clouds, pad_rows
from formers.pde.task import OperatorTask, relative_l2, relative_l2_packed

TINY = {
    "coord_dim": 2,
    "function_channels": (3, 4),
    "params_dim": 2,
    "out_channels": 2,
    "hidden_dim": 16,
    "num_layers": 2,
    "num_heads": 2,
    "num_experts": 3,
    "ffn_ratio": 2,
    "mlp_layers": 2,
}


# ------------------------------------------------------------------------------------ oracle: the official arithmetic


class OfficialMLP(nn.Module):
    """``models/mlp.py::MLP``: act(linear_pre), ``n_layers`` of ``act(linear(x)) + x``, linear_post."""

    def __init__(self, n_input: int, n_hidden: int, n_output: int, n_layers: int) -> None:
        super().__init__()
        self.linear_pre = nn.Linear(n_input, n_hidden)
        self.linear_post = nn.Linear(n_hidden, n_output)
        self.linears = nn.ModuleList([nn.Linear(n_hidden, n_hidden) for _ in range(n_layers)])

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.linear_pre(x))
        for linear in self.linears:
            x = F.gelu(linear(x)) + x
        return self.linear_post(x)


class OfficialSelfAttention(nn.Module):
    """``LinearAttention`` with ``attn_type='l1'``."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.key, self.query, self.value = (
            nn.Linear(n_embd, n_embd),
            nn.Linear(n_embd, n_embd),
            nn.Linear(n_embd, n_embd),
        )
        self.proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q = self.query(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = self.key(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.softmax(dim=-1)
        k = k.softmax(dim=-1)
        k_cumsum = k.sum(dim=-2, keepdim=True)
        D_inv = 1.0 / (q * k_cumsum).sum(dim=-1, keepdim=True)
        context = k.transpose(-2, -1) @ v
        y = (q @ context) * D_inv + q
        y = y.transpose(1, 2).reshape(B, T, C)  # 'b h n d -> b n (h d)'
        return self.proj(y)


class OfficialCrossAttention(nn.Module):
    """``LinearCrossAttention``: one query, keys/values per input, ``q + Σ_i (q (k_iᵀ v_i)) D_i⁻¹``."""

    def __init__(self, n_embd: int, n_head: int, n_inputs: int) -> None:
        super().__init__()
        self.query = nn.Linear(n_embd, n_embd)
        self.keys = nn.ModuleList([nn.Linear(n_embd, n_embd) for _ in range(n_inputs)])
        self.values = nn.ModuleList([nn.Linear(n_embd, n_embd) for _ in range(n_inputs)])
        self.proj = nn.Linear(n_embd, n_embd)
        self.n_head, self.n_inputs = n_head, n_inputs

    def forward(self, x: Tensor, y: list[Tensor]) -> Tensor:
        B, T1, C = x.shape
        q = self.query(x).view(B, T1, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.softmax(dim=-1)
        out = q
        for i in range(self.n_inputs):
            T2 = y[i].shape[1]
            k = self.keys[i](y[i]).view(B, T2, self.n_head, C // self.n_head).transpose(1, 2)
            v = self.values[i](y[i]).view(B, T2, self.n_head, C // self.n_head).transpose(1, 2)
            k = k.softmax(dim=-1)
            k_cumsum = k.sum(dim=-2, keepdim=True)
            D_inv = 1.0 / (q * k_cumsum).sum(dim=-1, keepdim=True)
            out = out + 1 * (q @ (k.transpose(-2, -1) @ v)) * D_inv
        out = out.transpose(1, 2).reshape(B, T1, C)
        return self.proj(out)


class OfficialBlock(nn.Module):
    """``MIOECrossAttentionBlock`` (GELU, no dropout)."""

    def __init__(self, n_embd: int, n_head: int, n_inputs: int, n_experts: int, n_inner: int, space_dim: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2_branch = nn.ModuleList([nn.LayerNorm(n_embd) for _ in range(n_inputs)])
        self.ln3, self.ln4, self.ln5 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.selfattn = OfficialSelfAttention(n_embd, n_head)
        self.crossattn = OfficialCrossAttention(n_embd, n_head, n_inputs)
        self.n_experts, self.n_inputs = n_experts, n_inputs

        def experts() -> nn.ModuleList:
            return nn.ModuleList(
                [
                    nn.Sequential(nn.Linear(n_embd, n_inner), nn.GELU(), nn.Linear(n_inner, n_embd))
                    for _ in range(n_experts)
                ]
            )

        self.moe_mlp1, self.moe_mlp2 = experts(), experts()
        self.gatenet = nn.Sequential(
            nn.Linear(space_dim, n_inner),
            nn.GELU(),
            nn.Linear(n_inner, n_inner),
            nn.GELU(),
            nn.Linear(n_inner, n_experts),
        )

    def forward(self, x: Tensor, y: list[Tensor], pos: Tensor) -> Tensor:
        gate_score = F.softmax(self.gatenet(pos), dim=-1).unsqueeze(2)  # B, T1, 1, m
        x = x + self.crossattn(self.ln1(x), [self.ln2_branch[i](y[i]) for i in range(self.n_inputs)])
        x_moe1 = torch.stack([self.moe_mlp1[i](x) for i in range(self.n_experts)], dim=-1)
        x_moe1 = (gate_score * x_moe1).sum(dim=-1, keepdim=False)
        x = x + self.ln3(x_moe1)
        x = x + self.selfattn(self.ln4(x))
        x_moe2 = torch.stack([self.moe_mlp2[i](x) for i in range(self.n_experts)], dim=-1)
        x_moe2 = (gate_score * x_moe2).sum(dim=-1, keepdim=False)
        return x + self.ln5(x_moe2)


class OfficialGNOT(nn.Module):
    """``GNOT`` (``models/mmgpt.py``) on already padded tensors, exactly as the official forward sees them after
    ``pad_sequence``: no masks."""

    def __init__(self, trunk_size, branch_sizes, space_dim, output_size, n_layers, n_hidden, n_head, n_experts, n_inner,
                 mlp_layers):  # fmt: skip
        super().__init__()
        self.space_dim, self.n_inputs = space_dim, len(branch_sizes)
        self.trunk_mlp = OfficialMLP(trunk_size, n_hidden, n_hidden, mlp_layers)
        self.branch_mlps = nn.ModuleList([OfficialMLP(b, n_hidden, n_hidden, mlp_layers) for b in branch_sizes])
        self.blocks = nn.Sequential(
            *[
                OfficialBlock(n_hidden, n_head, len(branch_sizes), n_experts, n_inner * n_hidden, space_dim)
                for _ in range(n_layers)
            ]
        )
        self.out_mlp = OfficialMLP(n_hidden, n_hidden, output_size, mlp_layers)

    def forward(self, x: Tensor, u_p: Tensor, inputs: list[Tensor]) -> Tensor:
        pos = x[:, :, 0 : self.space_dim]
        x = torch.cat([x, u_p.unsqueeze(1).repeat([1, x.shape[1], 1])], dim=-1)
        x = self.trunk_mlp(x)
        z = [self.branch_mlps[i](inputs[i]) for i in range(self.n_inputs)]
        for block in self.blocks:
            x = block(x, z, pos)
        return self.out_mlp(x)


def official_for(kw: dict) -> OfficialGNOT:
    return OfficialGNOT(
        trunk_size=kw["coord_dim"] + kw["params_dim"],
        branch_sizes=list(kw["function_channels"]),
        space_dim=kw["coord_dim"],
        output_size=kw["out_channels"],
        n_layers=kw["num_layers"],
        n_hidden=kw["hidden_dim"],
        n_head=kw["num_heads"],
        n_experts=kw["num_experts"],
        n_inner=kw["ffn_ratio"],
        mlp_layers=kw["mlp_layers"],
    )


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, LayerNorm affines included (so that their mapping is checked too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))


def pair(kw: dict = TINY, seed: int = 0) -> tuple[GNOT, OfficialGNOT]:
    """Our model with the oracle's weights, loaded through the registered filter_fn."""
    torch.manual_seed(seed)
    official = official_for(kw).eval()
    randomize(official, seed)
    model = create_model("gnot_small", **kw).eval()
    filter_fn = get_model_entry("gnot_small").filter_fn
    assert filter_fn is checkpoint_filter_fn
    model.load_state_dict(filter_fn(official.state_dict(), model), strict=True)
    return model, official


def sample(n: int, rows: tuple[int, ...], kw: dict = TINY, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "coords": torch.rand(n, kw["coord_dim"], generator=gen),
        "functions": tuple(
            torch.randn(m, c, generator=gen) for m, c in zip(rows, kw["function_channels"], strict=True)
        ),
        "params": torch.randn(kw["params_dim"], generator=gen),
        "target": torch.zeros(n, kw["out_channels"]),
    }


def run_official(official: OfficialGNOT, inputs: dict) -> Tensor:
    return official(inputs["coords"], inputs["params"], list(inputs["functions"]))


# ---------------------------------------------------------------------------------------------------------- tests


def test_parameter_count_of_the_reference_example():
    # 2-D trunk, two 3-column branches, one output, d 128, 3 layers, 8 heads, 4 experts, mlp_layers 3
    model = create_model("gnot_base")
    assert model.num_parameters() == 4_725_517
    kw = {**TINY, "coord_dim": 2, "function_channels": (3, 3), "params_dim": 0, "out_channels": 1, "hidden_dim": 128,
          "num_layers": 3, "num_heads": 8, "num_experts": 4, "ffn_ratio": 4, "mlp_layers": 3}  # fmt: skip
    assert sum(p.numel() for p in official_for(kw).parameters()) == 4_725_517
    small = create_model("gnot_small")  # official args.py defaults: d 64, 3 layers, 1 head, 1 expert
    assert (small.num_parameters(), len(small.blocks), small.blocks[0].cross_attn.num_heads) == (593_412, 3, 1)


def test_matches_official_arithmetic_without_padding():
    model, official = pair()
    batch, _ = collate_point_clouds([sample(40, (17, 23), seed=s) for s in range(3)])  # equal sizes: no padding
    assert not batch["query_padding"].any()
    with torch.no_grad():
        expected = run_official(official, batch)
        ours = model(**batch)  # all-False masks
        ours_unmasked = model(batch["coords"], batch["functions"], params=batch["params"])
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_unmasked, expected, atol=1e-5, rtol=1e-5)
    model, official = model.double(), official.double()  # float64: equal to rounding
    batch = {k: v.double() if k in ("coords", "params") else v for k, v in batch.items()}
    batch["functions"] = tuple(f.double() for f in batch["functions"])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch), run_official(official, batch), atol=1e-11, rtol=1e-11)


def test_padding_does_not_change_real_points_and_the_official_code_does():
    model, official = pair(seed=1)
    small = sample(30, (12, 9), seed=10)
    big = [sample(55, (25, 31), seed=11), sample(47, (30, 14), seed=12)]
    alone, _ = collate_point_clouds([small])
    batched, _ = collate_point_clouds([small, *big])
    assert batched["query_padding"][0].sum() == 25 and batched["function_padding"][1][0].sum() == 22
    with torch.no_grad():
        ours_diff = (model(**alone)[0] - model(**batched)[0, :30]).abs().max().item()
        official_diff = (run_official(official, alone)[0] - run_official(official, batched)[0, :30]).abs().max().item()
        padded_rows = model(**batched)[0, 30:]
    assert ours_diff < 1e-5
    assert official_diff > 1e-2  # the official code's defect (issue #12): padding leaks into the real points
    assert torch.equal(padded_rows, torch.zeros_like(padded_rows))


def test_attention_rows_are_normalised_and_skip_padded_keys():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4, generator=gen), torch.randn(2, 3, 9, 4, generator=gen)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 5:] = True
    ones = torch.ones(2, 3, 9, 4)
    ones[1, :, 5:] = 1e3  # padded values must not count
    out = gnot_attention(q, k, ones, padding)
    torch.testing.assert_close(out - q.softmax(-1), torch.ones(2, 3, 7, 4))  # Σ_j w_ij = 1 (the D normalisation)
    # the explicit quadratic form: w_ij = φ(q_i)·φ(k_j) over the real keys, divided by its row sum
    v = torch.randn(2, 3, 9, 4, generator=gen)
    scores = (q.softmax(-1) @ k.softmax(-1).transpose(-2, -1)).masked_fill(padding[:, None, None, :], 0.0)
    weights = scores / scores.sum(-1, keepdim=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))
    torch.testing.assert_close(gnot_attention(q, k, v, padding), q.softmax(-1) + weights @ v)


def test_cross_attention_is_a_sum_of_separately_normalised_attentions():
    torch.manual_seed(0)
    attn = HeterogeneousCrossAttention(dim=8, num_heads=2, num_inputs=2)
    x, z = torch.randn(2, 5, 8), [torch.randn(2, 6, 8), torch.randn(2, 4, 8)]
    paddings = [torch.tensor([[False] * 6, [False] * 3 + [True] * 3]), None]

    def heads(t: Tensor) -> Tensor:
        return t.view(2, -1, 2, 4).transpose(1, 2)

    q = heads(attn.q_proj(x)).softmax(-1)
    out = q.clone()
    for zl, pad, k_proj, v_proj in zip(z, paddings, attn.k_projs, attn.v_projs, strict=True):
        scores = q @ heads(k_proj(zl)).softmax(-1).transpose(-2, -1)
        if pad is not None:
            scores = scores.masked_fill(pad[:, None, None, :], 0.0)
        out = out + (scores / scores.sum(-1, keepdim=True)) @ heads(v_proj(zl))
    expected = attn.out_proj(out.transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x, z, paddings), expected)


def test_gate_depends_only_on_the_query_coordinates():
    model, _ = pair(seed=2)
    gates: list[tuple[Tensor, Tensor]] = []
    hook = model.blocks[0].gate.register_forward_hook(lambda m, args, out: gates.append((args[0], out)))
    a, _ = collate_point_clouds([sample(20, (8, 9), seed=3), sample(15, (5, 11), seed=4)])
    b = {**a, "functions": tuple(torch.randn_like(f) for f in a["functions"]), "params": torch.randn_like(a["params"])}
    c = {**a, "coords": a["coords"] + 0.5}
    with torch.no_grad():
        for inputs in (a, b, c):
            model(**inputs)
    hook.remove()
    (in_a, gate_a), (_, gate_b), (_, gate_c) = gates
    assert torch.equal(in_a, a["coords"])
    assert torch.equal(gate_a, gate_b)  # other functions and parameters: the same gate
    assert not torch.allclose(gate_a, gate_c)  # other coordinates: another gate
    torch.testing.assert_close(gate_a.sum(-1), torch.ones(gate_a.shape[:-1]))


def test_gradients_reach_every_parameter_and_never_padded_rows():
    model, _ = pair(seed=3)
    model.train()
    inputs, target = collate_point_clouds([sample(12, (6, 7), seed=5), sample(18, (9, 4), seed=6)])
    coords = inputs["coords"].clone().requires_grad_(True)
    functions = tuple(f.clone().requires_grad_(True) for f in inputs["functions"])
    out = model(**{**inputs, "coords": coords, "functions": functions})
    out[~target["padding"]].pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())
    assert coords.grad[0, 12:].abs().max() == 0 and coords.grad[0, :12].abs().max() > 0
    for f, pad in zip(functions, inputs["function_padding"], strict=True):
        assert f.grad[pad].abs().max() == 0 and f.grad[~pad].abs().max() > 0


def test_one_function_as_a_bare_tensor():
    kw = {**TINY, "function_channels": (3,)}
    model = create_model("gnot_small", **kw).eval()
    inputs, _ = collate_point_clouds([sample(10, (4,), kw, seed=7), sample(6, (8,), kw, seed=8)])
    bare = {**inputs, "functions": inputs["functions"][0], "function_padding": inputs["function_padding"][0]}
    with torch.no_grad():
        torch.testing.assert_close(model(**bare), model(**inputs), atol=0, rtol=0)


def test_checkpoint_filter_fn_layouts_and_unknown_keys():
    model, official = pair()
    ours = model.state_dict()
    assert checkpoint_filter_fn(ours, model).keys() == ours.keys()  # our own layout passes through
    wrapped = {"state_dict": {f"module.{k}": v for k, v in official.state_dict().items()}}
    assert checkpoint_filter_fn(wrapped, model).keys() == ours.keys()
    with pytest.raises(ValueError, match="neither the official GNOT"):
        checkpoint_filter_fn({**official.state_dict(), "blocks.0.mystery.weight": torch.zeros(1)}, model)


def test_clear_errors_on_bad_inputs():
    model, _ = pair()
    good, _ = collate_point_clouds([sample(10, (4, 5), seed=9)])
    cases = [
        ({"coords": good["coords"][..., :1]}, ValueError, "coord_dim=2"),
        ({"coords": good["coords"][0]}, ValueError, "coords must have shape"),
        ({"coords": good["coords"].long()}, TypeError, "floating"),
        ({"functions": good["functions"][:1]}, ValueError, "got 1 input functions, the model was built for 2"),
        ({"functions": (good["functions"][0], good["functions"][0])}, ValueError, r"functions\[1\] has shape"),
        ({"function_padding": good["function_padding"][:1]}, ValueError, "1 function_padding masks for 2"),
        ({"function_padding": (good["function_padding"][0], good["function_padding"][0])}, ValueError, "shape"),
        ({"query_padding": good["query_padding"].float()}, TypeError, "torch.bool"),
        ({"query_padding": good["query_padding"][:, :3]}, ValueError, "query_padding"),
        ({"params": None}, ValueError, "params .* is required"),
        ({"params": good["params"][:, :1]}, ValueError, "params has shape"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            model(**{**good, **change})
    with pytest.raises(ValueError, match="function_channels"):
        GNOT(function_channels=())
    with pytest.raises(ValueError, match="not divisible"):
        GNOT(hidden_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="activation"):
        GNOT(activation="swish")


# ------------------------------------------------------------------------------------------- packed (padding-free)

# ragged on purpose: more than one 64-row chunk, exactly one chunk, one row past it, a one-row function
PACKED_SIZES = [(30, (12, 9)), (150, (70, 1)), (64, (64, 65)), (65, (3, 130))]


def packed_samples(kw: dict = TINY, sizes: list = PACKED_SIZES, seed: int = 20) -> list[dict]:
    return [sample(n, rows, kw, seed=seed + i) for i, (n, rows) in enumerate(sizes)]


def real_rows(padded_out: Tensor, padding: Tensor) -> Tensor:
    """The rows of the real points of a padded output, sample after sample (the packed order)."""
    return padded_out[~padding]


def test_pack_point_clouds_layout():
    samples = packed_samples()
    inputs, target = pack_point_clouds(samples)
    padded, padded_target = collate_point_clouds(samples)
    assert set(inputs) == {"coords", "query_lengths", "functions", "function_lengths", "params"}
    assert inputs["query_lengths"].tolist() == [n for n, _ in PACKED_SIZES]
    assert inputs["query_lengths"].dtype == torch.int64
    assert [f.tolist() for f in inputs["function_lengths"]] == [[r[j] for _, r in PACKED_SIZES] for j in range(2)]
    assert torch.equal(inputs["coords"], real_rows(padded["coords"], padded["query_padding"]))
    for f, pf, pad in zip(inputs["functions"], padded["functions"], padded["function_padding"], strict=True):
        assert torch.equal(f, real_rows(pf, pad))
    assert torch.equal(inputs["params"], padded["params"])
    assert set(target) == {"values", "lengths"} and torch.equal(target["lengths"], inputs["query_lengths"])
    assert torch.equal(target["values"], real_rows(padded_target["values"], padded_target["padding"]))
    with pytest.raises(ValueError, match="pack_point_clouds: empty batch"):
        pack_point_clouds([])
    with pytest.raises(ValueError, match="different numbers of input functions"):
        pack_point_clouds([samples[0], {**samples[1], "functions": samples[1]["functions"][:1]}])
    with pytest.raises(ValueError, match="sample 1: no query points"):
        pack_point_clouds([samples[0], {**samples[1], "coords": torch.zeros(0, 2), "target": torch.zeros(0, 2)}])


def test_packed_segments_chunk_layout():
    lengths = torch.tensor([5, 0, 3, 4])
    seg = PackedSegments.from_lengths(lengths, 12, chunk_size=4)
    assert seg.ids.tolist() == [0] * 5 + [2] * 3 + [3] * 4
    # sample 0: chunks 0-1 (rows 0..4 -> slots 0..4), sample 1: none, sample 2: chunk 2, sample 3: chunk 3
    assert seg.slots.tolist() == [0, 1, 2, 3, 4, 8, 9, 10, 12, 13, 14, 15]
    assert seg.chunk_ids.tolist() == [0, 0, 2, 3] and seg.num_chunks == 4 and seg.batch == 4
    x = torch.randn(12, 2, 3)
    chunks = seg.to_chunks(x)
    assert chunks.shape == (4, 2, 4, 3)
    assert chunks[1, :, 1:].abs().max() == 0 and chunks[2, :, 3].abs().max() == 0  # each sample's fill rows
    assert torch.equal(seg.from_chunks(chunks), x)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_packed_attention_matches_a_quadratic_oracle_per_sample(chunk_size):
    gen = torch.Generator().manual_seed(1)
    q_lengths, k_lengths = torch.tensor([7, 1, 10]), torch.tensor([4, 9, 0])  # sample 2 has no keys
    q = torch.randn(18, 2, 4, generator=gen).softmax(-1)
    k = torch.randn(13, 2, 4, generator=gen).softmax(-1)
    v = torch.randn(13, 2, 5, generator=gen)
    qs = PackedSegments.from_lengths(q_lengths, 18, chunk_size)
    ks = PackedSegments.from_lengths(k_lengths, 13, chunk_size)
    out = packed_normalized_attention(q, k, v, qs, ks)
    expected = []
    for qi, ki, vi in zip(q.split(q_lengths.tolist()), k.split(k_lengths.tolist()), v.split(k_lengths.tolist()),
                          strict=True):  # fmt: skip
        scores = torch.einsum("nhd,mhd->hnm", qi, ki)
        weights = scores / scores.sum(-1, keepdim=True).clamp_min(1e-12)
        expected.append(torch.einsum("hnm,mhe->nhe", weights, vi))
    torch.testing.assert_close(out, torch.cat(expected))
    assert out[8:].abs().max() == 0  # no keys: the attention term is zero, as with an all-padded key set
    # and core's padded kernel on the same data agrees, the all-masked key set included (log: softmax(log φ) = φ)
    (qp, qpad), (kp, pad), (vp, _) = (pad_rows(list(t.split(n.tolist()))) for t, n in
                                      ((q, q_lengths), (k, k_lengths), (v, k_lengths)))  # fmt: skip
    padded = normalized_linear_attention(*(t.transpose(1, 2) for t in (qp.log(), kp.clamp_min(1e-30).log(), vp)), pad)
    torch.testing.assert_close(padded.transpose(1, 2)[~qpad], out)


def test_packed_equals_padded_equals_each_sample_alone_and_the_official_arithmetic():
    model, official = pair(seed=4)
    samples = packed_samples()
    packed, _ = pack_point_clouds(samples)
    padded, target = collate_point_clouds(samples)
    with torch.no_grad():
        out = model(**packed)
        padded_out = model(**padded)
        alone = [model(**collate_point_clouds([s])[0])[0] for s in samples]
        official_alone = [run_official(official, collate_point_clouds([s])[0])[0] for s in samples]
    assert out.shape == (sum(n for n, _ in PACKED_SIZES), TINY["out_channels"]) and out.abs().max() > 0.1
    torch.testing.assert_close(out, real_rows(padded_out, target["padding"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, torch.cat(alone), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, torch.cat(official_alone), atol=1e-5, rtol=1e-5)
    # float64: the same numbers to rounding (only the summation order differs)
    model = model.double()
    packed64 = {**packed, "coords": packed["coords"].double(), "params": packed["params"].double(),
                "functions": tuple(f.double() for f in packed["functions"])}  # fmt: skip
    padded64 = {**padded, "coords": padded["coords"].double(), "params": padded["params"].double(),
                "functions": tuple(f.double() for f in padded["functions"])}  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(model(**packed64), real_rows(model(**padded64), target["padding"]),
                                   atol=1e-12, rtol=1e-12)  # fmt: skip


def test_packed_gradients_equal_padded_gradients():
    model, _ = pair(seed=5)
    model.train()  # dropout is 0: train mode changes nothing else
    samples = packed_samples(seed=30)
    packed, packed_target = pack_point_clouds(samples)
    padded, padded_target = collate_point_clouds(samples)

    def grads(inputs: dict, real: Tensor | None, dtype: torch.dtype) -> list[Tensor]:
        """Gradients of the parameters, then of coords and of each function's rows."""
        model.to(dtype).zero_grad(set_to_none=True)
        coords = inputs["coords"].to(dtype).requires_grad_(True)
        functions = tuple(f.to(dtype).requires_grad_(True) for f in inputs["functions"])
        out = model(**{**inputs, "coords": coords, "functions": functions, "params": inputs["params"].to(dtype)})
        weights = torch.linspace(0.5, 1.5, out.shape[-1], dtype=dtype)
        (out if real is None else out[real]).sin().mul(weights).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()] + [coords.grad]
        if real is not None:  # the padded rows' gradients are zeros (tested above); compare the real ones
            grads[-1] = real_rows(coords.grad, padded["query_padding"])
        for f, pad in zip(functions, padded["function_padding"], strict=True):
            grads.append(f.grad if real is None else real_rows(f.grad, pad))
        return grads

    # float32: each layout is ~1e-5..1e-4 (of the largest entry) from float64 in the key biases (sums with heavy
    # cancellation); float64 shows the two are the same arithmetic
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 3e-4)):
        packed_grads = grads(packed, None, dtype)
        padded_grads = grads(padded, ~padded_target["padding"], dtype)
        assert all(g.abs().sum() > 0 for g in packed_grads)
        for a, b in zip(packed_grads, padded_grads, strict=True):
            scale = b.abs().max().item()  # the summation orders differ: relative to the gradient's size
            torch.testing.assert_close(a, b, atol=tolerance * max(scale, 1.0), rtol=tolerance)
    assert packed_target["lengths"].tolist() == [n for n, _ in PACKED_SIZES]


def test_packed_one_function_as_a_bare_tensor_and_no_params():
    kw = {**TINY, "function_channels": (3,), "params_dim": 0}
    model = create_model("gnot_small", **kw).eval()
    samples = [sample(10, (4,), kw, seed=7), sample(70, (80,), kw, seed=8)]
    packed, _ = pack_point_clouds(samples)
    padded, target = collate_point_clouds(samples)
    bare = {**packed, "functions": packed["functions"][0], "function_lengths": packed["function_lengths"][0]}
    with torch.no_grad():
        torch.testing.assert_close(model(**bare), model(**packed), atol=0, rtol=0)
        torch.testing.assert_close(model(**bare), real_rows(model(**padded), target["padding"]), atol=1e-5, rtol=1e-5)


def test_packed_clear_errors_on_inconsistent_lengths():
    model, _ = pair()
    good, _ = pack_point_clouds(packed_samples()[:2])  # 30 + 150 points, functions 12 + 70 and 9 + 1 rows
    f0, f1 = good["function_lengths"]
    cases = [
        ({"query_lengths": torch.tensor([30, 149])}, ValueError, "query_lengths sum to 179 but coords has 180 rows"),
        ({"function_lengths": (f0, torch.tensor([9, 2]))}, ValueError,
         r"function_lengths\[1\] sum to 11 but functions\[1\] has 10 rows"),
        ({"function_lengths": (f0, torch.tensor([10, 1, 0]))}, ValueError, r"function_lengths\[1\] has shape \(3,\)"),
        ({"function_lengths": (f0,)}, ValueError, "got 1 function_lengths for 2 functions"),
        ({"function_lengths": None}, ValueError, "function_lengths is missing"),
        ({"query_lengths": torch.tensor([190, -10])}, ValueError, "query_lengths must be >= 0"),
        ({"query_lengths": torch.tensor([30.0, 150.0])}, TypeError, "query_lengths must be a .* integer tensor"),
        ({"query_lengths": torch.tensor([[30, 150]])}, TypeError, "query_lengths must be a .* integer tensor"),
        ({"query_lengths": torch.tensor([], dtype=torch.int64)}, ValueError, "query_lengths is empty"),
        ({"query_padding": torch.zeros(2, 150, dtype=torch.bool)}, ValueError, "either padded .* or packed"),
        ({"coords": good["coords"][None]}, ValueError, "coords must have shape .* packed"),
        ({"coords": good["coords"][:, :1]}, ValueError, "coord_dim=2"),
        ({"functions": (good["functions"][0], good["functions"][0])}, ValueError, r"functions\[1\] has shape"),
        ({"functions": (good["functions"][0][None], good["functions"][1])}, ValueError, "functions.0. must have"),
        ({"params": good["params"][:1]}, ValueError, r"params has shape .* \(one row per sample"),
        ({"params": None}, ValueError, "params .* is required"),
    ]  # fmt: skip
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            model(**{**good, **change})


def test_relative_l2_packed_and_the_task_on_packed_batches():
    gen = torch.Generator().manual_seed(3)
    samples = packed_samples()
    for s in samples:
        s["target"] = torch.randn(s["coords"].shape[0], TINY["out_channels"], generator=gen)
    packed, packed_target = pack_point_clouds(samples)
    padded, padded_target = collate_point_clouds(samples)
    pred_padded = torch.randn(padded_target["values"].shape, generator=gen)
    pred_packed = real_rows(pred_padded, padded_target["padding"])
    expected = relative_l2(pred_padded, padded_target["values"], padded_target["padding"])
    got = relative_l2_packed(pred_packed, packed_target["values"], packed_target["lengths"])
    torch.testing.assert_close(got, expected)
    alone = torch.stack([relative_l2(p[None], t[None])[0] for p, t in
                         zip(pred_packed.split([n for n, _ in PACKED_SIZES]), [s["target"] for s in samples],
                             strict=True)])  # fmt: skip
    torch.testing.assert_close(got, alone)
    with pytest.raises(ValueError, match="sum to the 309 rows"):
        relative_l2_packed(pred_packed, packed_target["values"], torch.tensor([30, 150, 64, 64]))
    with pytest.raises(ValueError, match="differ"):
        relative_l2_packed(pred_packed[1:], packed_target["values"], packed_target["lengths"])

    task = OperatorTask("gnot_small", model_kwargs=dict(TINY))
    task.model.load_state_dict(pair(seed=6)[0].state_dict())
    batch = (packed, packed_target)
    assert task.batch_size(batch, packed, packed_target) == len(samples)
    with torch.no_grad():
        out_packed = task.predict_fields(packed)
        out_padded = task.predict_fields(padded)
        loss_packed = task.loss(out_packed, packed_target)
        loss_padded = task.loss(out_padded, padded_target)
    assert out_packed.shape == packed_target["values"].shape
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="output"):
        task.loss(out_packed[1:], packed_target)

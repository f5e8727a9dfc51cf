"""Padding-free (varlen) batches: packing helpers, every CPU varlen kernel against the oracle and against padded
``attention()``, packed transformer layers against the padded batch, input errors and the tiny benchmark run.

Notation: ``T`` packed tokens, ``H`` heads, ``D`` head_dim, ``cu`` cumulative sequence offsets.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from _bench import benchmark_module
from core.backend_spy import spy_backends
from formers.core.attention import (
    BackendUnavailableError,
    attention,
    backend_names,
    get_backend,
    register_backend,
    use_backend,
)
from formers.core.attention import backends as backends_mod
from formers.core.layers import TransformerBlock
from formers.core.models.encoder import TransformerEncoder
from formers.core.varlen import (
    PackedBatch,
    cu_seqlens_from_lengths,
    lengths_from_cu_seqlens,
    pack,
    unpack,
    varlen_attention,
)

CPU_BACKENDS = ["reference", "sdpa", "sdpa_loop", "sdpa_blockmask", "nested"]
FAST_BACKENDS = [*(name for name in CPU_BACKENDS if name != "reference"), "cpu_matmul"]  # cpu_matmul: training only
LENGTHS = {"mixed": [5, 1, 9, 3], "ones": [1, 1, 1], "single": [7]}
H, D = 2, 8
TOL = {"atol": 1e-5, "rtol": 1e-5}


def padding_mask(lengths: list[int]) -> torch.Tensor:
    """Bool ``(B, max_len)``, ``True`` = padding (right-padded)."""
    return torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]


def packed_qkv(lengths: list[int], seed: int = 0, grad: bool = False) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    return tuple(torch.randn(total, H, D, generator=gen).requires_grad_(grad) for _ in range(3))


def padded_attention(q, k, v, lengths: list[int], causal: bool) -> torch.Tensor:
    """``attention()`` on the padded batch with a key_padding_mask, returned packed (real tokens only)."""
    mask = padding_mask(lengths)
    _, _, _, idx = pack(torch.zeros(len(lengths), max(lengths), 1), mask)
    batch, seq = mask.shape

    def pad(t: torch.Tensor) -> torch.Tensor:
        return unpack(t, idx, batch, seq).transpose(1, 2)  # (B, H, L, D)

    out = attention(pad(q), pad(k), pad(v), key_padding_mask=mask, causal=causal, backend="reference")
    return out.transpose(1, 2).flatten(0, 1)[idx]


def call(backend: str, q, k, v, cu, causal: bool) -> torch.Tensor:
    return varlen_attention(q, k, v, cu, causal=causal, backend=backend)


def serving(backends: list[str]) -> list[tuple[str, bool]]:
    """(backend, causal) pairs the backend can serve (nested has no causal mode: tested as an error instead)."""
    return [(name, causal) for name in backends for causal in (False, True) if not (name == "nested" and causal)]


# ------------------------------------------------------------------------------------------------------ helpers


def test_pack_unpack_round_trip() -> None:
    x = torch.randn(3, 6, 4, 2)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 1]], dtype=torch.bool)
    packed, cu, max_len, idx = pack(x, mask)
    assert packed.shape == (2 + 6 + 2, 4, 2)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 2, 8, 10]
    assert max_len == 6
    assert torch.equal(packed[8:], x[2, [1, 3]])
    back = unpack(packed, idx, 3, 6)
    assert torch.equal(back, x.masked_fill(mask[..., None, None], 0.0))
    batch = PackedBatch.from_padded(x, mask)
    assert torch.equal(batch.unpack(), back) and batch.batch == 3 and batch.seq_len == 6
    full, cu_full, _, _ = pack(x, None)
    assert full.shape[0] == 18 and cu_full.tolist() == [0, 6, 12, 18]


def test_unpack_is_differentiable() -> None:
    packed = torch.randn(4, 3, requires_grad=True)
    out = unpack(packed, torch.tensor([0, 1, 4, 5]), 2, 3)
    (out * torch.arange(18.0).reshape(2, 3, 3)).sum().backward()
    assert torch.equal(packed.grad, torch.arange(18.0).reshape(6, 3)[[0, 1, 4, 5]])


def test_cu_seqlens_helpers() -> None:
    cu = cu_seqlens_from_lengths([3, 0, 2])
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 3, 5]
    assert lengths_from_cu_seqlens(cu).tolist() == [3, 0, 2]
    assert cu_seqlens_from_lengths(torch.tensor([4])).tolist() == [0, 4]
    with pytest.raises(ValueError, match=">= 0"):
        cu_seqlens_from_lengths([2, -1])
    with pytest.raises(TypeError, match="integer"):
        cu_seqlens_from_lengths(torch.tensor([1.0, 2.0]))


# ------------------------------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("lengths", list(LENGTHS.values()), ids=list(LENGTHS))
@pytest.mark.parametrize(("backend", "causal"), serving(CPU_BACKENDS))
def test_backend_matches_reference_and_padded(backend: str, lengths: list[int], causal: bool) -> None:
    q, k, v = packed_qkv(lengths)
    cu = cu_seqlens_from_lengths(lengths)
    out = call(backend, q, k, v, cu, causal)
    ref = varlen_attention(q, k, v, cu, causal=causal, backend="reference")
    assert out.shape == (sum(lengths), H, D)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(out, padded_attention(q, k, v, lengths, causal), **TOL)


@pytest.mark.parametrize(("backend", "causal"), serving(FAST_BACKENDS))
def test_backend_gradients_match_reference(backend: str, causal: bool) -> None:
    lengths = LENGTHS["mixed"]
    cu = cu_seqlens_from_lengths(lengths)
    grads = []
    for name in ("reference", backend):
        q, k, v = packed_qkv(lengths, seed=1, grad=True)
        weight = torch.randn(sum(lengths), H, D, generator=torch.Generator().manual_seed(2))
        (call(name, q, k, v, cu, causal) * weight).sum().backward()
        grads.append([t.grad for t in (q, k, v)])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", ["sdpa_loop", "sdpa_blockmask"])
def test_gradients_with_empty_sequence(backend: str) -> None:
    lengths = [3, 0, 2]
    cu = cu_seqlens_from_lengths(lengths)
    grads = []
    for name in ("reference", backend):
        q, k, v = packed_qkv(lengths, seed=6, grad=True)
        torch.autograd.backward(call(name, q, k, v, cu, causal=True).sum(), inputs=[q, k, v])
        grads.append([t.grad for t in (q, k, v)])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", ["reference", "sdpa_loop", "sdpa_blockmask"])
def test_cross_lengths_causal_bottom_right_and_empty(backend: str) -> None:
    """Different q / k lengths per sequence (bottom-right causal), an empty sequence, a query with no key."""
    lens_q, lens_k = [2, 0, 3, 1], [4, 1, 2, 0]
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(sum(lens_q), H, D, generator=gen)
    k, v = (torch.randn(sum(lens_k), H, D, generator=gen) for _ in range(2))
    cu_q, cu_k = cu_seqlens_from_lengths(lens_q), cu_seqlens_from_lengths(lens_k)
    out = varlen_attention(q, k, v, cu_q, cu_k, causal=True, backend=backend)
    # sequence 0: 2 queries, 4 keys -> query 0 sees keys 0..2; check against padded attention() of that sequence
    first = attention(
        q[None, :2].transpose(1, 2), k[None, :4].transpose(1, 2), v[None, :4].transpose(1, 2), causal=True
    )
    torch.testing.assert_close(out[:2], first[0].transpose(0, 1), **TOL)
    # sequence 2: 3 queries, 2 keys -> query 0 sees no key (zeros); sequence 3: no key at all (zeros)
    assert torch.all(out[2] == 0) and torch.all(out[5] == 0)
    assert torch.isfinite(out).all()


def test_auto_matches_reference_and_picks_cpu_path() -> None:
    lengths = LENGTHS["mixed"]
    q, k, v = packed_qkv(lengths)
    cu = cu_seqlens_from_lengths(lengths).long()  # int64 offsets are accepted too
    torch.testing.assert_close(varlen_attention(q, k, v, cu), varlen_attention(q, k, v, cu, backend="reference"), **TOL)
    assert set(CPU_BACKENDS) | {"xformers", "triton", "cpu_bf16", "cpu_matmul"} <= set(backend_names(varlen=True))


# ------------------------------------------------------------------------------------------------------- dispatch


@pytest.fixture
def varlen_calls(monkeypatch):
    """Record which backend's varlen kernel each packed attention call reaches."""
    return spy_backends(monkeypatch)


def test_use_backend_reaches_packed_path(varlen_calls) -> None:
    q, k, v = packed_qkv([3, 2])
    cu = cu_seqlens_from_lengths([3, 2])
    varlen_attention(q, k, v, cu)
    with use_backend("reference"):
        varlen_attention(q, k, v, cu)
        varlen_attention(q, k, v, cu, backend="sdpa_blockmask")  # explicit wins over the context
    with use_backend("sdpa"):
        varlen_attention(q, k, v, cu)
    assert varlen_calls == ["varlen:sdpa", "varlen:reference", "varlen:sdpa_blockmask", "varlen:sdpa"]


def test_use_backend_and_backend_arg_reach_packed_layers(varlen_calls) -> None:
    lengths = [4, 2, 5]
    x, cu = torch.randn(sum(lengths), 16), cu_seqlens_from_lengths(lengths)
    encoder = TransformerEncoder(16, 2, 2)
    with use_backend("reference"):
        encoder(x, cu_seqlens=cu)
    assert varlen_calls == ["varlen:reference", "varlen:reference"]
    varlen_calls.clear()
    TransformerEncoder(16, 1, 2, backend="sdpa_blockmask")(x, cu_seqlens=cu)  # MHA passes its backend name through
    assert varlen_calls == ["varlen:sdpa_blockmask"]


def test_forced_backend_that_cannot_serve_packed_call_says_why() -> None:
    q, k, v = packed_qkv([3])
    cu = cu_seqlens_from_lengths([3])
    with use_backend("xformers"), pytest.raises(BackendUnavailableError, match="backend 'xformers'.*packed.*CUDA"):
        varlen_attention(q, k, v, cu)
    spare = dataclasses.replace(get_backend("sdpa"), name="dense_only", varlen_kernel=None)
    register_backend(spare)
    try:
        with use_backend("dense_only"), pytest.raises(BackendUnavailableError, match="'dense_only'.*no varlen kernel"):
            varlen_attention(q, k, v, cu)
    finally:
        backends_mod._BACKENDS.pop("dense_only")


# ------------------------------------------------------------------------------------------------------- errors


def test_forcing_xformers_on_cpu_raises_with_reason() -> None:
    q, k, v = packed_qkv([3])
    with pytest.raises(
        BackendUnavailableError, match="backend 'xformers' cannot serve this packed.*(CUDA|cuda|xformers)"
    ):
        varlen_attention(q, k, v, cu_seqlens_from_lengths([3]), backend="xformers")
    with pytest.raises(BackendUnavailableError, match="causal"):
        varlen_attention(q, k, v, cu_seqlens_from_lengths([3]), causal=True, backend="nested")
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        varlen_attention(q, k, v, cu_seqlens_from_lengths([3]), backend="flash")


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda q, k, v, cu: (q[0], k, v, cu), ValueError, "rank 3"),
        (lambda q, k, v, cu: (q, k.double(), v, cu), TypeError, "share a dtype"),
        (lambda q, k, v, cu: (q, k[:, :1], v, cu), ValueError, "share heads"),
        (lambda q, k, v, cu: (q, k, v[:-1], cu), ValueError, "token counts"),
        (lambda q, k, v, cu: (q, k, v, cu.float()), TypeError, "int32 or int64"),
        (lambda q, k, v, cu: (q, k, v, cu[None]), ValueError, "1-D"),
        (lambda q, k, v, cu: (q, k, v, cu + 1), ValueError, "start at 0"),
        (lambda q, k, v, cu: (q, k, v, torch.tensor([0, 4, 2, 6], dtype=torch.int32)), ValueError, "non-decreasing"),
        (lambda q, k, v, cu: (q, k, v, torch.tensor([0, 2, 5], dtype=torch.int32)), ValueError, "ends at 5"),
        (lambda q, k, v, cu: (q.int(), k, v, cu), TypeError, "floating"),
    ],
)
def test_bad_inputs(mutate, error: type[Exception], match: str) -> None:
    q, k, v = packed_qkv([2, 4])
    args = mutate(q, k, v, cu_seqlens_from_lengths([2, 4]))
    with pytest.raises(error, match=match):
        varlen_attention(*args)


def test_bad_pack_inputs() -> None:
    with pytest.raises(TypeError, match="torch.bool"):
        pack(torch.randn(2, 3, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="shape"):
        pack(torch.randn(2, 3, 4), torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="indices"):
        unpack(torch.randn(3, 4), torch.arange(2), 1, 3)


def test_cu_seqlens_device_mismatch() -> None:
    q, k, v = packed_qkv([2])
    with pytest.raises(ValueError, match="is on meta"):
        varlen_attention(q, k, v, torch.tensor([0, 2], dtype=torch.int32, device="meta"))


# ------------------------------------------------------------------------------------------------------- layers


def _padded_vs_packed(model: torch.nn.Module, lengths: list[int], causal: bool) -> None:
    """Packed forward == padded forward (with key_padding_mask) on the real tokens, and parameter gradients agree."""
    dim = 16
    mask = padding_mask(lengths)
    x = torch.randn(len(lengths), max(lengths), dim, generator=torch.Generator().manual_seed(4))
    batch = PackedBatch.from_padded(x, mask)
    outs, grads = [], []
    for packed in (False, True):
        model.zero_grad()
        if packed:
            out = model(batch.data, cu_seqlens=batch.cu_seqlens, max_seqlen=batch.max_seqlen, causal=causal)
        else:
            out = model(x, key_padding_mask=mask, causal=causal).flatten(0, 1)[batch.indices]
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
        (out * weight).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0], **TOL)
    for name, want in grads[0].items():
        torch.testing.assert_close(grads[1][name], want, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["prenorm", "postnorm"])
def test_block_packed_matches_padded(norm_first: bool, causal: bool) -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, norm_first=norm_first, qk_norm=True)
    _padded_vs_packed(block, [5, 1, 8, 3], causal)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_encoder_packed_matches_padded(backend: str) -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 2, 2, backend=backend)
    _padded_vs_packed(encoder, [6, 2, 1, 7], causal=False)


def test_packed_drop_path_is_per_sequence() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, drop_path=0.5).train()
    block.attn.proj.weight.data.zero_()  # only the MLP branch moves x: a dropped branch leaves a sequence unchanged
    block.attn.proj.bias.data.zero_()
    lengths = [4, 3, 5, 2, 6, 3, 4, 5]
    x = torch.randn(sum(lengths), 16)
    cu = cu_seqlens_from_lengths(lengths)
    changed = (block(x, cu_seqlens=cu) - x).abs().amax(dim=1) > 0
    per_seq = [chunk.tolist() for chunk in changed.split(lengths)]
    assert all(len(set(flags)) == 1 for flags in per_seq)  # all tokens of a sequence share one draw
    assert {flags[0] for flags in per_seq} == {True, False}  # 8 draws at p=0.5 with this seed: some of each


def test_packed_layer_errors() -> None:
    block = TransformerBlock(16, 2)
    cu = cu_seqlens_from_lengths([2, 3])
    with pytest.raises(ValueError, match=r"packed \(total_tokens, 16\)"):
        block(torch.randn(1, 5, 16), cu_seqlens=cu)
    with pytest.raises(ValueError, match="carry no padding"):
        block(torch.randn(5, 16), cu_seqlens=cu, key_padding_mask=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="ends at 5"):
        block(torch.randn(4, 16), cu_seqlens=cu)


# ---------------------------------------------------------------------------------------------------- benchmark


def test_benchmark_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--threads", "1", "--batch", "3", "--min-len", "2", "--max-len", "9", "--dim", "16", "--heads", "2"]
    args += ["--depth", "1", "--repeats", "1", "--warmup", "0", "--json", str(tmp_path / "v.json")]
    with benchmark_module("varlen") as bench:
        metrics = bench.main(args)
    written = json.loads((tmp_path / "v.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == metrics
    for mode in ("fwd", "fwd_bwd"):
        assert metrics["encoder"][mode]["speedup"] > 0
        assert metrics["encoder"][mode]["max_abs_err"] < 1e-4
        assert metrics["kernels"][mode]["sdpa_loop"]["vs_padded"] > 0
    assert "padding-free" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("heads", "head_dim", "dv", "match"),
    [(0, 8, 8, "heads must be >= 1"), (2, 0, 8, "head_dim must be >= 1"), (2, 8, 0, "head_dim of v must be >= 1")],
    ids=["no_heads", "no_head_dim", "no_value_dim"],
)
@pytest.mark.parametrize("backend", ["auto", "reference", "sdpa_blockmask"])
def test_degenerate_sizes_are_refused_before_any_kernel(backend, heads, head_dim, dv, match) -> None:
    q = torch.randn(5, heads, head_dim)
    v = torch.randn(5, heads, dv)
    with pytest.raises(ValueError, match=f"varlen_attention: {match}"):
        varlen_attention(q, q, v, cu_seqlens_from_lengths([2, 3]), backend=backend)

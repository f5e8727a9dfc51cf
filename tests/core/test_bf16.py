"""CPU bf16 autocast: softmax statistics and norms stay fp32 on every attention path, the bf16 training kernel
(``cpu_bf16``) against the fp32 oracle, what ``auto`` picks on a CPU with and without native bf16, and fp32 vs bf16
loss curves of a short fit.

Whether bf16 is native is faked (``formers.core.machine.native_bf16``) so both rules are checked on every machine: the
``cpu_bf16`` kernel is correct anywhere, it is only slow where bf16 is emulated.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _bench import benchmark_module
from core.backend_spy import spy_backends
from formers.core import machine
from formers.core.attention import BackendUnavailableError, attention
from formers.core.attention import backends as backends_mod
from formers.core.layers import TransformerBlock
from formers.core.varlen import cu_seqlens_from_lengths, varlen_attention
from formers.kernels.reference import reference_attention

BF16 = torch.bfloat16


def autocast():
    return torch.autocast("cpu", dtype=BF16)


def fake_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Make this process's CPU look like one with (``True``) or without native bf16."""
    monkeypatch.setattr(machine, "native_bf16", lambda *args, **kwargs: native)


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with native bf16, where the ``cpu_bf16`` kernel is available."""
    fake_native_bf16(monkeypatch, True)


# --------------------------------------------------------------------------------------------- fp32 statistics


@pytest.mark.parametrize(("backend", "grad"), [("sdpa", False), ("reference", False), ("cpu_bf16", True)])
def test_attention_softmax_statistics_are_fp32(backend: str, grad: bool, native: None) -> None:
    """Uniform attention over 2048 keys: the output must be the mean of v. A bf16 running sum of the 2048
    probabilities would stall (bf16 cannot count past 256 in steps of one) and a bf16 max/exp would drift."""
    length = 2048
    q = torch.zeros(1, 2, 4, 16, dtype=BF16, requires_grad=grad)
    k = torch.randn(1, 2, length, 16).to(BF16)
    v = torch.randn(1, 2, length, 16).to(BF16)
    with autocast():
        out = attention(q, k, v, backend=backend)
    want = v.float().mean(dim=2, keepdim=True).expand(1, 2, 4, 16)
    torch.testing.assert_close(out.float(), want, atol=1e-2, rtol=0)


@pytest.mark.parametrize("native_bf16", [True, False], ids=["native", "emulated"])
def test_varlen_bf16_training_path_keeps_fp32_statistics(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    fake_native_bf16(monkeypatch, native_bf16)
    lengths = [1500, 3]
    cu = cu_seqlens_from_lengths(lengths)
    q = torch.zeros(sum(lengths), 2, 16, dtype=BF16, requires_grad=True)
    v = torch.randn(sum(lengths), 2, 16).to(BF16)
    out = varlen_attention(q, torch.randn_like(v), v, cu)  # auto: cpu_bf16 where native, else sdpa in fp32
    assert out.dtype == BF16
    for (a, b), o in zip([(0, 1500), (1500, 1503)], out.split(lengths), strict=True):
        torch.testing.assert_close(o.float(), v[a:b].float().mean(0, keepdim=True).expand_as(o), atol=1e-2, rtol=0)


def test_layer_norms_keep_fp32_statistics_under_autocast() -> None:
    """Every LayerNorm of a block under autocast: its bf16 output equals fp32 normalisation of its input up to the
    final bf16 rounding, even with a large common offset (bf16 statistics would be off by the offset's rounding)."""
    torch.manual_seed(0)
    block = TransformerBlock(64, 4)
    seen = []

    def check(module, inputs, output):
        (x,) = inputs
        seen.append(output.dtype)
        want = F.layer_norm(x.float(), module.normalized_shape, module.weight, module.bias, module.eps)
        torch.testing.assert_close(output.float(), want, atol=4e-2, rtol=2e-2)

    for norm in (block.norm1, block.norm2):
        norm.register_forward_hook(check)
    x = torch.randn(2, 8, 64) * 0.5 + 50.0
    with autocast():
        block(x)
    assert len(seen) == 2


# ------------------------------------------------------------------------------------------------ cpu_bf16 kernel


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"causal": True}, {"bias": True}, {"bias": True, "causal": True, "padding": True}],
    ids=["plain", "causal", "bias", "everything"],
)
def test_cpu_bf16_matches_fp32_oracle(kwargs: dict, native: None) -> None:
    q, k, v = (torch.randn(2, 3, 9, 16).to(BF16).requires_grad_() for _ in range(3))
    call = {"causal": kwargs.get("causal", False)}
    if kwargs.get("bias"):
        call["attn_bias"] = torch.randn(1, 3, 9, 9, requires_grad=True)
    if kwargs.get("padding"):
        kpm = torch.zeros(2, 9, dtype=torch.bool)
        kpm[0] = True  # sample 0 sees nothing: zeros
        kpm[1, :3] = True
        call["key_padding_mask"] = kpm
    inputs = [q, k, v] + ([call["attn_bias"]] if "attn_bias" in call else [])
    out = attention(q, k, v, backend="cpu_bf16", **call)
    assert out.dtype == BF16 and torch.isfinite(out).all()
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = reference_attention(*ref_in, call.get("attn_bias"), call["causal"], call.get("key_padding_mask"))
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    weight = torch.randn(out.shape)
    grads = torch.autograd.grad((out.float() * weight).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weight).sum(), ref_in + inputs[3:])
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)


def test_cpu_bf16_refuses_what_it_cannot_serve(native: None) -> None:
    q = torch.randn(1, 1, 4, 8, requires_grad=True)
    with pytest.raises(BackendUnavailableError, match="bfloat16"):
        attention(q, q, q, backend="cpu_bf16")
    qb = q.detach().to(BF16).requires_grad_()
    with pytest.raises(BackendUnavailableError, match="dropout"):
        attention(qb, qb, qb, dropout_p=0.1, backend="cpu_bf16")
    with torch.no_grad(), pytest.raises(BackendUnavailableError, match="training"):
        attention(qb, qb, qb, backend="cpu_bf16")
    big = torch.zeros(1, 1, 1, 8, dtype=BF16, requires_grad=True).expand(64, 8, 1024, 8)  # 512 Mi scores: too many
    with pytest.raises(BackendUnavailableError, match="GiB of probabilities"):
        attention(big, big, big, backend="cpu_bf16")


# ---------------------------------------------------------------------------------------------------- dispatch


@pytest.fixture
def picks(monkeypatch):
    return spy_backends(monkeypatch)


def test_cpu_bf16_refuses_where_bf16_is_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_native_bf16(monkeypatch, False)
    qb = torch.randn(1, 1, 4, 8, dtype=BF16, requires_grad=True)
    with pytest.raises(BackendUnavailableError, match="bf16 is emulated on this CPU"):
        attention(qb, qb, qb, backend="cpu_bf16")
    cu = cu_seqlens_from_lengths([4])
    with pytest.raises(BackendUnavailableError, match="bf16 is emulated on this CPU"):
        varlen_attention(qb[0].transpose(0, 1), qb[0].transpose(0, 1), qb[0].transpose(0, 1), cu, backend="cpu_bf16")


def run_block_calls() -> None:
    """A block's dense and packed attention: bf16 training, bf16 inference, fp32 training."""
    block = TransformerBlock(16, 2)
    x = torch.randn(2, 5, 16, requires_grad=True)
    packed, cu = torch.randn(7, 16, requires_grad=True), cu_seqlens_from_lengths([3, 4])
    with autocast():
        block(x)
        block(packed, cu_seqlens=cu)
        with torch.no_grad():
            block(x)
            block(packed, cu_seqlens=cu)
    block(x)
    block(packed, cu_seqlens=cu)


def test_auto_uses_cpu_bf16_for_bf16_training_only_where_bf16_is_native(monkeypatch, picks) -> None:
    fake_native_bf16(monkeypatch, True)
    run_block_calls()
    assert picks == ["cpu_bf16", "varlen:cpu_bf16", "sdpa", "varlen:sdpa", "sdpa", "varlen:sdpa"]


def _dtype_spy(kernel, label: str, seen: list):
    """``kernel`` recording ``(label, q's dtype, CPU autocast on?)`` of each call it serves."""
    if kernel is None:
        return None

    def spy(*args, **kwargs):
        seen.append((label, args[0].dtype, torch.is_autocast_enabled("cpu")))
        return kernel(*args, **kwargs)

    return spy


def test_auto_computes_bf16_attention_in_fp32_where_bf16_is_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without native bf16, auto never picks a bf16 kernel: bf16 calls run the fp32 kernels on upcast inputs (autocast
    off, or SDPA would be cast down again) and return bf16."""
    fake_native_bf16(monkeypatch, False)
    seen: list[tuple[str, torch.dtype, bool]] = []
    for b in backends_mod.all_backends():
        spied = {
            "kernel": _dtype_spy(b.kernel, b.name, seen),
            "varlen_kernel": _dtype_spy(b.varlen_kernel, f"varlen:{b.name}", seen),
        }
        monkeypatch.setitem(backends_mod._BACKENDS, b.name, dataclasses.replace(b, **spied))
    run_block_calls()
    fp32 = torch.float32
    assert seen == [
        ("sdpa", fp32, False), ("varlen:sdpa", fp32, False), ("sdpa", fp32, False), ("varlen:sdpa", fp32, False),
        ("sdpa", fp32, False), ("varlen:sdpa", fp32, False),
    ]  # fmt: skip
    q = torch.randn(1, 2, 6, 8, dtype=BF16, requires_grad=True)
    bias = torch.randn(1, 2, 6, 6, dtype=BF16, requires_grad=True)  # a learned bias: the fp32 matmul kernel serves
    out = attention(q, q, q, attn_bias=bias)
    assert out.dtype == BF16 and seen[-1] == ("cpu_matmul", fp32, False)
    want = reference_attention(q.float(), q.float(), q.float(), bias.float(), False, None)
    torch.testing.assert_close(out.float(), want, atol=1e-2, rtol=1e-2)
    out.float().sum().backward()
    assert q.grad.dtype == BF16 and bias.grad.dtype == BF16


# ------------------------------------------------------------------------------------------------ loss curves


def test_bf16_loss_curve_tracks_fp32() -> None:
    with benchmark_module("bf16_encoder") as bench:
        curves = bench.fit_curves(15, dim=32, depth=1, heads=2, batch=8)
        gap = bench.curve_gap(curves)
    assert curves["fp32"][-5:] != curves["bf16"][-5:]  # bf16 really ran in bf16
    assert sum(curves["fp32"][-5:]) < sum(curves["fp32"][:5])  # the task is learnt
    assert sum(curves["bf16"][-5:]) < sum(curves["bf16"][:5])
    assert gap < 0.05, (gap, curves)


def test_bf16_benchmark_tiny_run(tmp_path: Path) -> None:
    args = ["--threads", "1", "--batch", "3", "--min-len", "4", "--max-len", "9", "--dim", "16", "--heads", "2"]
    args += ["--depth", "1", "--repeats", "1", "--warmup", "0", "--profile", "--fit-steps", "6", "--compare-sdpa"]
    with benchmark_module("bf16_encoder") as bench:
        metrics = bench.main([*args, "--metrics-json", str(tmp_path / "b.json")])
    written = json.loads((tmp_path / "b.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == metrics
    assert metrics["steps"]["threads_1"]["speedup"] > 0
    assert metrics["steps"]["threads_1"]["speedup_bf16_sdpa"] > 0
    assert metrics["steps"]["profile"]["bf16"][0]["self_ms"] >= 0
    assert len(metrics["fit"]["fp32"]) == 6

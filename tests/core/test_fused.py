"""Fused small ops of ``formers.core.layers.fused``: every impl against plain torch, forward and gradients,
fp32 statistics for bf16 inputs, dispatch and input errors. The Triton impl runs in Triton's CPU interpreter
(``TRITON_INTERPRET=1`` from ``tests/conftest.py``); ``compile`` is exercised by ``benchmarks/fused_ops.py``
(its first call costs seconds of Inductor codegen, too slow for this suite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _bench import benchmark_module
from formers.core.layers.fused import (
    AddLayerNorm,
    AddRMSNorm,
    add_layer_norm,
    add_rms_norm,
    bias_gelu,
    masked_softmax,
)
from formers.kernels.triton import interpreter_active

IMPLS = ["eager", pytest.param("triton", marks=pytest.mark.skipif(not interpreter_active(), reason="interpreter"))]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _check(got, want, inputs, tol=TOL):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)
    weights = [torch.randn_like(t) for t in got]
    g1 = torch.autograd.grad(sum((a * w).sum() for a, w in zip(got, weights, strict=True)), inputs)
    g2 = torch.autograd.grad(sum((b * w).sum() for b, w in zip(want, weights, strict=True)), inputs)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_bias_gelu(impl: str) -> None:
    x, b = torch.randn(2, 5, 24, requires_grad=True), torch.randn(24, requires_grad=True)
    _check(bias_gelu(x, b, impl=impl), F.gelu(x + b), [x, b])
    _check(bias_gelu(x, b, "tanh", impl=impl), F.gelu(x + b, approximate="tanh"), [x, b])


@pytest.mark.parametrize("impl", IMPLS)
def test_add_layer_norm_and_rms_norm(impl: str) -> None:
    x, r = torch.randn(2, 5, 24, requires_grad=True), torch.randn(2, 5, 24, requires_grad=True)
    w, b = torch.randn(24, requires_grad=True), torch.randn(24, requires_grad=True)
    _check(add_layer_norm(x, r, w, b, impl=impl), (F.layer_norm(x + r, (24,), w, b), x + r), [x, r, w, b])
    _check(add_rms_norm(x, r, w, impl=impl), (F.rms_norm(x + r, (24,), w, 1e-6), x + r), [x, r, w])


@pytest.mark.parametrize("impl", IMPLS)
def test_masked_softmax(impl: str) -> None:
    x = torch.randn(2, 3, 5, 7, requires_grad=True)
    mask = torch.randn(2, 1, 1, 7).masked_fill(torch.rand(2, 1, 1, 7) < 0.3, float("-inf"))
    _check(masked_softmax(x, mask, 0.5, impl=impl), torch.softmax(x * 0.5 + mask, -1), [x])
    full = torch.full((5, 7), float("-inf"))
    out = masked_softmax(x, full, impl=impl)
    assert (out == 0).all()  # every row fully masked: zeros, not NaN


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_statistics_are_fp32(impl: str) -> None:
    """Large common offsets and long rows: bf16 accumulation would visibly lose precision; fp32 stats do not."""
    x = (torch.randn(4, 256) * 0.5 + 64.0).bfloat16()
    y, _ = add_layer_norm(x, None, impl=impl)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.layer_norm(x.float(), (256,)), atol=3e-2, rtol=2e-2)
    logits = torch.zeros(2, 4096, dtype=torch.bfloat16)  # a bf16 running sum of 4096 ones stalls at 256
    probs = masked_softmax(logits, impl=impl)
    torch.testing.assert_close(probs.float().sum(-1), torch.ones(2), atol=1e-2, rtol=0)


def test_modules_keep_layernorm_state_dict() -> None:
    ln, fused = torch.nn.LayerNorm(16), AddLayerNorm(16)
    fused.load_state_dict(ln.state_dict())
    x, r = torch.randn(3, 16), torch.randn(3, 16)
    out, total = fused(x, r)
    torch.testing.assert_close(out, ln(x + r))
    torch.testing.assert_close(total, x + r)
    rms = AddRMSNorm(16)
    torch.testing.assert_close(rms(x)[0], torch.nn.RMSNorm(16, eps=1e-6)(x))


def test_auto_dispatch_on_cpu_follows_the_measurements() -> None:
    import formers.core.layers.fused as fused

    cpu = torch.device("cpu")
    assert fused._resolve("auto", cpu, "add_layer_norm", 1 << 30) == "eager"  # compile did not pay
    assert fused._resolve("auto", cpu, "bias_gelu", 1000) == "eager"  # small: not worth a compile
    assert fused._resolve("auto", cpu, "bias_gelu", fused.CPU_COMPILE_MIN_NUMEL) == "compile"
    assert fused.CPU_MEASUREMENTS["bias_gelu/fp32"]["fwd"] > 1 > fused.CPU_MEASUREMENTS["add_layer_norm/fp32"]["fwd"]
    if not interpreter_active():
        with pytest.raises(RuntimeError, match="impl='triton' cannot run here"):
            bias_gelu(torch.randn(2, 4), impl="triton")


def test_bad_inputs() -> None:
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        bias_gelu(x, torch.randn(4))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        bias_gelu(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="approximate"):
        bias_gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="residual shape"):
        add_layer_norm(x, torch.randn(2, 7))
    with pytest.raises(ValueError, match="impl must be one of"):
        add_rms_norm(x, None, impl="fast")
    with pytest.raises(ValueError, match="does not broadcast"):
        masked_softmax(x, torch.randn(3, 8))
    with pytest.raises(TypeError, match="mask must be a floating tensor"):
        masked_softmax(x, torch.ones(2, 8, dtype=torch.bool))


def test_fused_ops_benchmark_tiny_run(tmp_path: Path) -> None:
    """The benchmark's eager path and its bookkeeping, at a tiny size (no compile: ``--no-compile``)."""
    args = ["--gelu-shape", "4", "32", "--ln-shape", "4", "16", "--repeats", "1", "--warmup", "0", "--no-compile"]
    with benchmark_module("fused_ops") as bench:
        metrics = bench.main([*args, "--json", str(tmp_path / "f.json")])
    assert json.loads((tmp_path / "f.json").read_text()) == metrics
    for key in ("bias_gelu/fp32", "bias_gelu/bf16", "add_layer_norm/fp32", "add_layer_norm/bf16"):
        assert metrics["ops"][key]["fwd_bwd"]["eager"]["median_ms"] > 0

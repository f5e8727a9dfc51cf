"""Triton kernels against the plain-torch reference, forward and gradients, on CPU through Triton's interpreter.

``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports triton; shapes are tiny (the interpreter
is 50-400x slower than torch). The dense attention backend also runs through every case of
``tests/core/test_attention.py`` (it is registered as backend ``triton``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from formers.kernels.reference import reference_attention
from formers.kernels.triton import interpreter_active
from formers.kernels.triton.attention import triton_attention, triton_varlen_attention
from formers.kernels.varlen import varlen_reference_attention

pytestmark = pytest.mark.skipif(
    not interpreter_active() and not torch.cuda.is_available(), reason="needs CUDA or TRITON_INTERPRET=1"
)
TOL = {"atol": 2e-5, "rtol": 2e-5}


def _grads(out, inputs, weight):
    return torch.autograd.grad((out * weight).sum(), inputs)


def _assert_all_close(got, want, tol=TOL):
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"tensor {i}: {m}")


# ------------------------------------------------------------------------------------------------------- attention


def _per_sequence_reference(q, k, v, cu, bias, causal):
    """Reference attention per sequence, with the bias indexed by positions inside the sequence."""
    outs = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        n = b - a
        if n == 0:
            continue
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        bs = bias[..., :n, :n] if bias is not None else None
        outs.append(reference_attention(qs, ks, vs, bs, causal)[0].transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_varlen_attention_forward_and_gradients(causal: bool, with_bias: bool) -> None:
    lengths = [5, 1, 19, 0, 9]  # an empty sequence, a single token, one longer than a 16-row block
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    total, heads, dim = sum(lengths), 2, 8
    q, k, v = (torch.randn(total, heads, dim, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, heads, 19, 19, requires_grad=True) if with_bias else None  # per head, per position pair
    inputs = [q, k, v] + ([bias] if with_bias else [])
    out = triton_varlen_attention(q, k, v, cu, cu, causal=causal, attn_bias=bias)
    want = _per_sequence_reference(q, k, v, cu, bias, causal)
    torch.testing.assert_close(out, want, **TOL)
    weight = torch.randn_like(out)
    _assert_all_close(_grads(out, inputs, weight), _grads(want, inputs, weight), {"atol": 1e-4, "rtol": 1e-4})


def test_varlen_attention_cross_lengths_bottom_right_causal() -> None:
    lens_q, lens_k = [3, 6, 2], [7, 6, 1]
    cu_q = torch.tensor([0, 3, 9, 11], dtype=torch.int32)
    cu_k = torch.tensor([0, 7, 13, 14], dtype=torch.int32)
    q = torch.randn(sum(lens_q), 2, 8, requires_grad=True)
    k, v = (torch.randn(sum(lens_k), 2, 8, requires_grad=True) for _ in range(2))
    out = triton_varlen_attention(q, k, v, cu_q, cu_k, causal=True)
    want = varlen_reference_attention(q, k, v, cu_q, cu_k, causal=True)
    torch.testing.assert_close(out, want, **TOL)
    assert (out[9] == 0).all()  # sequence 3: 2 queries, 1 key -> query 0 sees nothing
    weight = torch.randn_like(out)
    _assert_all_close(_grads(out, [q, k, v], weight), _grads(want, [q, k, v], weight), {"atol": 1e-4, "rtol": 1e-4})


def test_attention_bf16_keeps_fp32_statistics() -> None:
    """bf16 in, bf16 out; the softmax runs in fp32, so the error is bf16 rounding of the inputs/outputs only."""
    q, k, v = (torch.randn(2, 2, 24, 16) for _ in range(3))
    bias = torch.randn(1, 2, 24, 24) * 3
    out = triton_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias.bfloat16(), True)
    assert out.dtype == torch.bfloat16
    want = reference_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias.bfloat16(), True)  # fp32 math
    torch.testing.assert_close(out.float(), want.float(), atol=1e-2, rtol=1e-2)


def test_large_scores_do_not_overflow() -> None:
    """Online softmax subtracts the running max: scores of 1e4 stay finite (a naive exp would overflow)."""
    q = torch.full((1, 1, 20, 8), 30.0)
    k = torch.full((1, 1, 20, 8), 30.0)
    v = torch.randn(1, 1, 20, 8)
    out = triton_attention(q, k, v)
    torch.testing.assert_close(out, reference_attention(q, k, v), **TOL)


def test_varlen_backend_through_core_dispatch() -> None:
    from formers.core.attention import use_backend
    from formers.core.layers import TransformerBlock
    from formers.core.varlen import cu_seqlens_from_lengths, varlen_attention

    lengths = [4, 7, 2]
    cu = cu_seqlens_from_lengths(lengths)
    q, k, v = (torch.randn(sum(lengths), 2, 8) for _ in range(3))
    want = varlen_attention(q, k, v, cu, backend="reference")
    torch.testing.assert_close(varlen_attention(q, k, v, cu, backend="triton"), want, **TOL)
    block = TransformerBlock(16, 2)
    x = torch.randn(sum(lengths), 16)
    with use_backend("reference"):
        expected = block(x, cu_seqlens=cu)
    with use_backend("triton"):
        torch.testing.assert_close(block(x, cu_seqlens=cu), expected, **TOL)
    torch.testing.assert_close(TransformerBlock(16, 2, backend="triton").eval()(x, cu_seqlens=cu).shape, x.shape)


def test_forcing_triton_on_cpu_without_interpreter_says_why() -> None:
    code = (
        "import torch\n"
        "from formers.core.attention import attention, BackendUnavailableError, list_backends\n"
        "from formers.core.varlen import varlen_attention\n"
        "q = torch.randn(1, 1, 4, 8)\n"
        "assert not next(i for i in list_backends() if i.name == 'triton').available\n"
        "for call in (lambda: attention(q, q, q, backend='triton'),\n"
        "             lambda: varlen_attention(q[0].transpose(0, 1), q[0].transpose(0, 1), q[0].transpose(0, 1),\n"
        "                                      torch.tensor([0, 4], dtype=torch.int32), backend='triton')):\n"
        "    try:\n"
        "        call()\n"
        "    except BackendUnavailableError as err:\n"
        "        print('REFUSED:', err)\n"
        "assert attention(q, q, q).shape == q.shape  # auto never picks triton on CPU\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    refusals = [line for line in result.stdout.splitlines() if line.startswith("REFUSED:")]
    assert len(refusals) == 2
    assert all("TRITON_INTERPRET=1" in line and "CUDA" in line for line in refusals)


# ------------------------------------------------------------------------------------------------------ benchmark


def test_gpu_benchmark_exits_cleanly_without_cuda_and_its_cases_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Without CUDA, ``main`` prints why and returns; the case code itself runs on CPU tensors through the
    interpreter (tiny sizes), so a GPU user does not meet its first bug."""
    from types import SimpleNamespace

    from _bench import benchmark_module

    with benchmark_module("gpu_attention") as bench:
        if not torch.cuda.is_available():
            assert bench.main([]) == {"skipped": "no CUDA device"}
            assert "no CUDA GPU" in capsys.readouterr().out
        args = SimpleNamespace(seed=0, heads=2, head_dim=16, batch=2, modes=["fwd", "fwd_bwd"], repeats=1, warmup=0)
        for case in ("bias", "varlen"):
            res = bench.bench_case(case, args, 16, torch.device("cpu"))
            for name in ("ours_triton", "naive" if case == "bias" else "sdpa_loop"):
                assert res["fwd_bwd"][name]["median_ms"] > 0
                assert res["fwd"][name]["max_abs_err"] < 5e-2, (case, name, res)

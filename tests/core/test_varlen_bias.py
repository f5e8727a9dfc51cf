"""A packed per-sequence additive bias on varlen attention (Graphormer's per-graph spatial bias): every serving
backend equals dense reference attention run sequence by sequence with that sequence's bias block, gradients reach
the bias, backends whose varlen kernel takes no bias refuse the call and say why, and the input checks.

Layout: ``attn_bias`` is float ``(H, sum_i len_q_i * len_k_i)``; sequence ``i``'s block is row-major ``(len_q_i,
len_k_i)`` per head, blocks in sequence order.
"""

from __future__ import annotations

import pytest
import torch

from core.backend_spy import spy_backends
from formers.core import machine
from formers.core.attention import BackendUnavailableError, attention, register_backend, use_backend
from formers.core.attention import backends as backends_mod
from formers.core.layers import MultiHeadAttention
from formers.core.varlen import _validate, cu_seqlens_from_lengths, varlen_attention

H, D = 2, 8
LENGTHS = {"mixed": [5, 1, 0, 9, 3], "repeated": [4, 4, 2, 4, 4, 4, 7, 7], "single": [6]}  # runs of equal lengths
SERVING = ["reference", "sdpa", "sdpa_loop", "cpu_matmul"]  # cpu_bf16: bf16 test below
REFUSING = ["sdpa_blockmask", "nested", "xformers", "triton"]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def inputs(lens_q: list[int], lens_k: list[int] | None = None, seed: int = 0, grad: bool = False):
    lens_k = lens_q if lens_k is None else lens_k
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lens_q), H, D, generator=gen)
    k, v = (torch.randn(sum(lens_k), H, D, generator=gen) for _ in range(2))
    bias = torch.randn(H, sum(a * b for a, b in zip(lens_q, lens_k, strict=True)), generator=gen)
    bias[:, ::7] = float("-inf")  # some keys removed by the bias itself
    tensors = [t.requires_grad_(grad) for t in (q, k, v, bias)]
    return (*tensors, cu_seqlens_from_lengths(lens_q), cu_seqlens_from_lengths(lens_k))


def oracle(q, k, v, bias, lens_q, lens_k, causal=False):
    """Dense reference ``attention()`` on each sequence with its own ``(1, H, lq, lk)`` bias block."""
    outs, off_q, off_k, off_b = [], 0, 0, 0
    for lq, lk in zip(lens_q, lens_k, strict=True):
        block = bias[:, off_b : off_b + lq * lk].reshape(H, lq, lk)[None]
        if lq and lk:
            qs, ks, vs = (
                t.transpose(0, 1)[None] for t in (q[off_q : off_q + lq], k[off_k : off_k + lk], v[off_k : off_k + lk])
            )
            outs.append(attention(qs, ks, vs, attn_bias=block, causal=causal, backend="reference")[0].transpose(0, 1))
        elif lq:
            outs.append(q.new_zeros(lq, H, D))
        off_q, off_k, off_b = off_q + lq, off_k + lk, off_b + lq * lk
    return torch.cat(outs)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("lengths", list(LENGTHS.values()), ids=list(LENGTHS))
@pytest.mark.parametrize("backend", SERVING)
def test_serving_backend_matches_reference_per_sequence(backend: str, lengths: list[int], causal: bool) -> None:
    q, k, v, bias, cu, _ = inputs(lengths, grad=backend == "cpu_matmul")  # cpu_matmul serves training calls only
    out = varlen_attention(q, k, v, cu, attn_bias=bias, causal=causal, backend=backend)
    torch.testing.assert_close(out, oracle(q, k, v, bias, lengths, lengths, causal), **TOL)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", SERVING)
def test_gradients_flow_to_the_bias_and_match_reference(backend: str) -> None:
    lengths = LENGTHS["repeated"]
    q, k, v, bias, cu, _ = inputs(lengths, seed=1, grad=True)
    weight = torch.randn(sum(lengths), H, D)
    got = torch.autograd.grad(
        (varlen_attention(q, k, v, cu, attn_bias=bias, backend=backend) * weight).sum(), (q, k, v, bias)
    )
    want = torch.autograd.grad((oracle(q, k, v, bias, lengths, lengths) * weight).sum(), (q, k, v, bias))
    for name, a, b in zip("qkv", got, want, strict=False):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(got[3], want[3], atol=1e-4, rtol=1e-4)
    assert got[3].abs().sum() > 0
    assert torch.all(got[3][:, ::7] == 0)  # removed keys get no gradient


def test_cross_lengths_and_empty_key_sequences() -> None:
    lens_q, lens_k = [3, 4, 2, 2], [5, 0, 2, 2]  # a sequence without keys: zeros
    q, k, v, bias, cu_q, cu_k = inputs(lens_q, lens_k, seed=2)
    assert bias.shape == (H, 3 * 5 + 0 + 4 + 4)
    for backend in ("reference", "sdpa"):
        out = varlen_attention(q, k, v, cu_q, cu_k, attn_bias=bias, backend=backend)
        torch.testing.assert_close(out, oracle(q, k, v, bias, lens_q, lens_k), **TOL)
        assert torch.all(out[3:7] == 0)


@pytest.mark.parametrize("native", [True, False], ids=["native_bf16", "emulated_bf16"])
def test_bf16_training_with_a_bias_auto(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """auto on bf16 training with a packed bias: cpu_bf16 where bf16 is native; where it is emulated, an fp32 kernel on
    upcast inputs (cpu_bf16 refuses, naming the CPU). The same result and a bias gradient either way."""
    monkeypatch.setattr(machine, "native_bf16", lambda *args, **kwargs: native)
    lengths = LENGTHS["mixed"]
    q, k, v, bias, cu, _ = inputs(lengths, seed=3)
    q16, k16, v16 = (t.bfloat16().requires_grad_() for t in (q, k, v))
    bias_grad = bias.clone().requires_grad_()
    picks = spy_backends(monkeypatch)
    out = varlen_attention(q16, k16, v16, cu, attn_bias=bias_grad)  # auto: bf16 training on CPU
    assert picks == (["varlen:cpu_bf16"] if native else ["varlen:sdpa"])
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), oracle(q, k, v, bias, lengths, lengths), atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert bias_grad.grad is not None and torch.isfinite(bias_grad.grad).all()
    if not native:
        with pytest.raises(BackendUnavailableError, match="bf16 is emulated on this CPU"):
            varlen_attention(q16, k16, v16, cu, attn_bias=bias_grad, backend="cpu_bf16")


@pytest.mark.parametrize("backend", REFUSING)
def test_backends_without_bias_support_refuse_and_say_why(backend: str) -> None:
    q, k, v, bias, cu, _ = inputs([3, 2])
    serving = r"\['cpu_bf16', 'cpu_matmul', 'reference', 'sdpa', 'sdpa_loop'\]"
    match = rf"'{backend}' cannot serve this packed.*takes no packed attention bias.*{serving}"
    with pytest.raises(BackendUnavailableError, match=match):
        varlen_attention(q, k, v, cu, attn_bias=bias, backend=backend)
    with use_backend(backend), pytest.raises(BackendUnavailableError, match="takes no packed attention bias"):
        varlen_attention(q, k, v, cu, attn_bias=bias)


def test_a_new_backend_takes_no_bias_unless_it_says_so() -> None:
    spare = backends_mod.AttentionBackend(
        name="_loop_without_bias", kernel=None, varlen_kernel=get_kernel("sdpa"), description="test"
    )
    register_backend(spare)
    try:
        q, k, v, bias, cu, _ = inputs([3, 2])
        with pytest.raises(BackendUnavailableError, match="_loop_without_bias's varlen kernel takes no packed"):
            varlen_attention(q, k, v, cu, attn_bias=bias, backend="_loop_without_bias")
        varlen_attention(q, k, v, cu, backend="_loop_without_bias")  # without a bias it serves
    finally:
        backends_mod._BACKENDS.pop("_loop_without_bias")


def get_kernel(name: str):
    return backends_mod.get_backend(name).varlen_kernel


def test_triton_kernel_wrapper_refuses_a_packed_bias() -> None:
    q, k, v, bias, cu, _ = inputs([3])
    with pytest.raises(NotImplementedError, match="no packed per-sequence attn_bias"):
        backends_mod._triton_varlen_kernel(q, k, v, cu, cu, attn_bias=bias)


def test_auto_picks_sdpa_on_cpu_for_a_bias_with_or_without_gradient(monkeypatch) -> None:
    """Measured (benchmarks/graphormer.py --compare-backends --attention-dropout 0): cpu_matmul is no faster than
    sdpa on Graphormer's packed training steps, so auto keeps sdpa for packed calls (it picks cpu_matmul for dense
    calls with a learned bias)."""
    calls = spy_backends(monkeypatch)
    for grad in (False, True):
        q, k, v, bias, cu, _ = inputs([4, 4, 3], grad=grad)
        varlen_attention(q, k, v, cu, attn_bias=bias)
    assert calls == ["varlen:sdpa", "varlen:sdpa"]


def test_call_description_carries_the_bias() -> None:
    q, k, v, bias, cu, _ = inputs([3, 2], grad=True)
    call = _validate(q, k, v, cu, cu, False, 0.0, bias)
    assert call.packed and call.has_bias and call.bias_needs_grad and call.num_scores == H * 13
    with torch.no_grad():
        assert not _validate(q, k, v, cu, cu, False, 0.0, bias).bias_needs_grad
    assert not _validate(q, k, v, cu, cu, False, 0.0).has_bias


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda b: b[:, :-1], ValueError, r"shape \(heads, sum_i len_q_i \* len_k_i\) = \(2, 13\).*3x3, 2x2"),
        (lambda b: b[:1], ValueError, r"= \(2, 13\)"),
        (lambda b: b.reshape(-1), ValueError, r"got \(26,\)"),
        (lambda b: b.view(2, 1, 13), ValueError, r"got \(2, 1, 13\)"),
        (lambda b: b > 0, TypeError, "attn_bias must be a floating tensor"),
        (lambda b: b.tolist(), TypeError, "attn_bias must be a torch.Tensor"),
    ],
)
def test_bad_bias(make, error, match) -> None:
    q, k, v, bias, cu, _ = inputs([3, 2])
    with pytest.raises(error, match=match):
        varlen_attention(q, k, v, cu, attn_bias=make(bias))


def test_packed_multi_head_attention_takes_a_packed_bias() -> None:
    """MultiHeadAttention on packed tokens with a packed bias equals the dense layer on each sequence alone."""
    lengths, dim = [4, 6, 4], 16
    mha = MultiHeadAttention(dim, H).eval()
    x = torch.randn(sum(lengths), dim)
    bias = torch.randn(H, sum(n * n for n in lengths))
    cu = cu_seqlens_from_lengths(lengths)
    with torch.no_grad():
        packed = mha(x, attn_bias=bias, cu_seqlens=cu)
        start, off = 0, 0
        for n in lengths:
            dense = mha(x[start : start + n][None], attn_bias=bias[:, off : off + n * n].reshape(1, H, n, n))
            torch.testing.assert_close(packed[start : start + n], dense[0], **TOL)
            start, off = start + n, off + n * n
    with pytest.raises(ValueError, match="carry no padding"):
        mha(x, cu_seqlens=cu, key_padding_mask=torch.zeros(1, sum(lengths), dtype=torch.bool))

"""``formers.core.attention``: every backend against the reference oracle, dispatch rules and input errors.

Notation: ``B`` batch, ``H`` heads, ``Lq`` / ``Lk`` query / key lengths, ``D`` / ``Dv`` query-key / value head dims.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
from unittest import mock

import pytest
import torch

from core.backend_spy import spy_backends
from formers.core import machine
from formers.core.attention import (
    BackendUnavailableError,
    attention,
    available_backends,
    list_backends,
    mask_to_bias,
    use_backend,
)

ALL_BACKENDS = [info.name for info in list_backends() if info.dense]
FAST_BACKENDS = [name for name in ALL_BACKENDS if name != "reference"]


def run(backend: str, q, k, v, **kwargs):
    """Call one backend; skip the test when the backend cannot run here or refuses this call (e.g. CUDA-only).

    ``cpu_bf16`` is checked on every CPU: its kernel is correct anywhere, it is only unavailable (slow) where bf16 is
    emulated, so it runs as on a CPU with native bf16.
    """
    native = mock.patch.object(machine, "native_bf16", return_value=True)
    with native if backend == "cpu_bf16" else contextlib.nullcontext():
        if backend not in available_backends():
            reason = next(i.reason for i in list_backends() if i.name == backend)
            pytest.skip(f"{backend} unavailable: {reason}")
        try:
            return attention(q, k, v, backend=backend, **kwargs)
        except BackendUnavailableError as err:
            pytest.skip(str(err))


@dataclasses.dataclass(frozen=True)
class Case:
    """One attention call: shapes plus which masks to build."""

    B: int = 2
    H: int = 3
    Lq: int = 5
    Lk: int = 5
    D: int = 8
    Dv: int | None = None
    bias_shape: str | None = None  # a key of bias_shapes()
    causal: bool = False
    padding: bool = False

    def make(self, dtype=torch.float32, requires_grad=False):
        B, H, Lq, Lk, D = self.B, self.H, self.Lq, self.Lk, self.D
        q = torch.randn(B, H, Lq, D, dtype=dtype)
        k = torch.randn(B, H, Lk, D, dtype=dtype)
        v = torch.randn(B, H, Lk, self.Dv or D, dtype=dtype)
        kwargs = {"causal": self.causal}
        if self.bias_shape is not None:
            kwargs["attn_bias"] = torch.randn(self.bias_shapes()[self.bias_shape], dtype=dtype)
        if self.padding:
            kpm = torch.zeros(B, Lk, dtype=torch.bool)
            kpm[0, -2:] = True  # sample 0: last two keys are padding
            kpm[-1, :1] = True  # last sample: first key is padding
            kwargs["key_padding_mask"] = kpm
        tensors = [q, k, v] + ([kwargs["attn_bias"]] if "attn_bias" in kwargs else [])
        for t in tensors:
            t.requires_grad_(requires_grad)
        return q, k, v, kwargs

    def bias_shapes(self):
        B, H, Lq, Lk = self.B, self.H, self.Lq, self.Lk
        return {
            "full": (B, H, Lq, Lk),
            "per_head": (1, H, Lq, Lk),
            "2d": (Lq, Lk),
            "per_key": (B, 1, 1, Lk),
            "head_scalar": (H, 1, 1),
        }


CASES = {
    "plain": Case(),
    "bias_full": Case(bias_shape="full"),
    "bias_per_head": Case(bias_shape="per_head"),
    "bias_2d": Case(bias_shape="2d"),
    "bias_per_key": Case(bias_shape="per_key"),
    "bias_head_scalar": Case(bias_shape="head_scalar"),
    "causal_square": Case(causal=True),
    "causal_short_q": Case(Lq=3, Lk=7, causal=True),
    "padding": Case(padding=True),
    "cross_dv": Case(Lq=4, Lk=7, Dv=5),
    "everything": Case(Lq=3, Lk=7, Dv=6, bias_shape="per_head", causal=True, padding=True),
}


def manual_attention(q, k, v, attn_bias=None, causal=False, key_padding_mask=None):
    """The formula with explicit loops-free math in float64, written independently of the kernels."""
    q, k, v = q.double(), k.double(), v.double()
    Lq, Lk = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_bias is not None:
        scores = scores + attn_bias.double()
    allowed = torch.ones(Lq, Lk, dtype=torch.bool)
    if causal:
        for i in range(Lq):  # query i sees keys j <= i + (Lk - Lq)
            allowed[i, i + (Lk - Lq) + 1 :] = False
    allowed = allowed.expand(scores.shape)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    weights = torch.where(allowed, scores.exp(), torch.zeros_like(scores))
    norm = weights.sum(-1, keepdim=True)
    return (weights / norm.clamp_min(1e-300)) @ v


# ---------------------------------------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_reference_matches_formula(case):
    q, k, v, kwargs = case.make()
    out = attention(q, k, v, backend="reference", **kwargs)
    torch.testing.assert_close(out.double(), manual_attention(q, k, v, **kwargs), atol=1e-5, rtol=1e-5)


def test_causal_is_bottom_right_aligned():
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    out = attention(q, k, v, causal=True, backend="reference")
    # query 0 sees keys 0..2, query 1 sees all four keys
    keep = torch.tensor([[True, True, True, False], [True, True, True, True]])
    torch.testing.assert_close(out, attention(q, k, v, attn_bias=mask_to_bias(keep), backend="reference"))


# ------------------------------------------------------------------------------------------- backends vs reference


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_fp32(backend, case):
    q, k, v, kwargs = case.make()
    out = run(backend, q, k, v, **kwargs)
    assert out.shape == (case.B, case.H, case.Lq, case.Dv or case.D)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, attention(q, k, v, backend="reference", **kwargs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["plain", "bias_per_head", "causal_short_q", "padding", "everything"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_bf16(backend, case):
    q, k, v, kwargs = CASES[case].make(dtype=torch.bfloat16)
    out = run(backend, q, k, v, **kwargs)
    assert out.dtype == torch.bfloat16
    expected = attention(q, k, v, backend="reference", **kwargs)  # softmax in float32 on the same bf16 inputs
    torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("case", ["plain", "bias_full", "bias_per_head", "causal_short_q", "padding", "everything"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_gradients_match_reference(backend, case):
    q, k, v, kwargs = CASES[case].make(requires_grad=True)
    inputs = [q, k, v] + ([kwargs["attn_bias"]] if "attn_bias" in kwargs else [])
    out = run(backend, q, k, v, **kwargs)
    weight = torch.randn_like(out)
    grads = torch.autograd.grad((out * weight).sum(), inputs)
    ref = attention(q, k, v, backend="reference", **kwargs)
    ref_grads = torch.autograd.grad((ref * weight).sum(), inputs)
    for name, got, want in zip("q k v attn_bias".split(), grads, ref_grads, strict=False):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"grad of {n}: {m}")


def _gradcheck_inputs():
    g = torch.Generator().manual_seed(1)
    shapes = [(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 3), (1, 2, 3, 5)]  # q, k, v (Dv != D), bias
    return [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradcheck_float64(backend):
    q, k, v, bias = _gradcheck_inputs()
    kpm = torch.tensor([[False, False, False, True, False]])
    fn = lambda q, k, v, bias: run(backend, q, k, v, attn_bias=bias, key_padding_mask=kpm, causal=True)
    assert torch.autograd.gradcheck(fn, (q, k, v, bias), fast_mode=True)


# ------------------------------------------------------------------------------------------------ fully masked rows


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_query_without_visible_key_gives_zeros(backend):
    q, k, v = (torch.randn(2, 2, 4, 8, requires_grad=True) for _ in range(3))
    kpm = torch.zeros(2, 4, dtype=torch.bool)
    kpm[0] = True  # every key of sample 0 is padding
    out = run(backend, q, k, v, key_padding_mask=kpm)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_causal_with_more_queries_than_keys_zeroes_the_first_rows(backend):
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    out = run(backend, q, k, v, causal=True)  # query i sees keys j <= i - 2
    assert torch.isfinite(out).all()
    assert (out[:, :, :2] == 0).all()
    torch.testing.assert_close(out, attention(q, k, v, causal=True, backend="reference"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_dropout_changes_the_output_in_training(backend):
    q, k, v, _ = CASES["plain"].make()
    plain = run(backend, q, k, v)
    dropped = run(backend, q, k, v, dropout_p=0.5)
    assert torch.isfinite(dropped).all()
    assert not torch.allclose(plain, dropped)


# ------------------------------------------------------------------------------------------------------- dispatch


@pytest.fixture
def calls(monkeypatch):
    """Record which backend's kernel each ``attention`` call reaches."""
    return spy_backends(monkeypatch)


def test_auto_picks_sdpa_on_cpu(calls):
    for name in ["plain", "bias_per_head", "causal_short_q", "padding", "everything"]:
        q, k, v, kwargs = CASES[name].make()
        attention(q, k, v, **kwargs)
    assert calls == ["sdpa"] * 5


def test_use_backend_routes_auto_calls(calls):
    q, k, v, _ = CASES["plain"].make()
    with use_backend("reference"):
        attention(q, k, v)
        attention(q, k, v, backend="sdpa")  # an explicit backend wins over the context
        with use_backend("auto"):
            attention(q, k, v)
        attention(q, k, v)
    attention(q, k, v)
    assert calls == ["reference", "sdpa", "sdpa", "reference", "sdpa"]


def test_forcing_xformers_on_cpu_says_why():
    q, k, v, _ = CASES["plain"].make()
    with pytest.raises(BackendUnavailableError, match="xformers") as err:
        attention(q, k, v, backend="xformers")
    assert "CUDA" in str(err.value) or "not installed" in str(err.value)
    with use_backend("xformers"), pytest.raises(BackendUnavailableError, match="cannot serve this dense call"):
        attention(q, k, v)


def test_unknown_backend_is_a_value_error():
    q, k, v, _ = CASES["plain"].make()
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'.*reference"):
        attention(q, k, v, backend="flash9")
    with pytest.raises(ValueError, match="unknown attention backend"):
        with use_backend("flash9"):
            pass


def test_backend_listing():
    names = [info.name for info in list_backends()]
    assert {"reference", "sdpa", "xformers"} <= set(names)
    assert {"reference", "sdpa"} <= set(available_backends())
    for info in list_backends():
        assert info.available == (info.reason is None)
        assert info.description


def test_module_entry_point_lists_backends():
    result = subprocess.run(
        [sys.executable, "-m", "formers.core.attention"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    for name in ("reference", "sdpa", "xformers"):
        assert name in result.stdout


# --------------------------------------------------------------------------------------------------- input errors


def _bad_inputs():
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    return {
        "q rank 3": ((q[0], k, v), {}, ValueError, "rank 4"),
        "k rank 5": ((q, k[None], v), {}, ValueError, "rank 4"),
        "head dims differ": ((q, k[..., :4], v), {}, ValueError, "head_dim differ"),
        "k v lengths differ": ((q, k, v[:, :, :5]), {}, ValueError, "lengths differ"),
        "heads differ": ((q, k[:, :2], v[:, :2]), {}, ValueError, "share \\(batch, heads\\)"),
        "mixed dtypes": ((q, k.double(), v), {}, TypeError, "share a dtype"),
        "integer q": ((q.long(), k.long(), v.long()), {}, TypeError, "floating"),
        "float padding mask": ((q, k, v), {"key_padding_mask": kpm.float()}, TypeError, "torch.bool"),
        "padding mask shape": ((q, k, v), {"key_padding_mask": kpm[:, :5]}, ValueError, "key_padding_mask"),
        "padding mask device": ((q, k, v), {"key_padding_mask": kpm.to("meta")}, ValueError, "meta"),
        "bias device": ((q, k, v), {"attn_bias": torch.zeros(4, 6, device="meta")}, ValueError, "meta"),
        "bias does not broadcast": ((q, k, v), {"attn_bias": torch.zeros(2, 3, 4, 5)}, ValueError, "broadcast"),
        "bias too large": ((q, k, v), {"attn_bias": torch.zeros(4, 3, 4, 6)}, ValueError, "broadcast"),
        "bool bias": ((q, k, v), {"attn_bias": torch.ones(4, 6, dtype=torch.bool)}, TypeError, "mask_to_bias"),
        "dropout out of range": ((q, k, v), {"dropout_p": 1.0}, ValueError, "dropout_p"),
        "not a tensor": ((q.tolist(), k, v), {}, TypeError, "torch.Tensor"),
    }


@pytest.mark.parametrize("name", _bad_inputs().keys())
def test_bad_inputs_raise_clear_errors(name):
    args, kwargs, error, match = _bad_inputs()[name]
    with pytest.raises(error, match=match):
        attention(*args, **kwargs)


def test_mask_to_bias():
    keep = torch.tensor([[True, False], [False, False]])
    bias = mask_to_bias(keep, dtype=torch.float64)
    assert bias.dtype == torch.float64
    assert bias[0, 0] == 0 and torch.isneginf(bias[0, 1]) and torch.isneginf(bias[1]).all()
    with pytest.raises(TypeError, match="torch.bool"):
        mask_to_bias(keep.float())


def test_bias_from_padding_equals_key_padding_mask():
    q, k, v, kwargs = CASES["padding"].make()
    bias = mask_to_bias(~kwargs["key_padding_mask"])[:, None, None, :]
    torch.testing.assert_close(attention(q, k, v, attn_bias=bias), attention(q, k, v, **kwargs))


# ------------------------------------------------------------------------------- one key_padding_mask check


def _kpm_callers():
    from formers.core.layers.linear_attention import LinearAttention
    from formers.core.models.encoder import TransformerClassifier
    from formers.core.varlen import pack

    q = torch.randn(2, 2, 5, 8)
    x = torch.randn(2, 5, 16)
    clf = TransformerClassifier(vocab_size=10, num_classes=2, max_len=5, dim=16, depth=1, num_heads=2)
    tokens = torch.randint(0, 10, (2, 5))
    return {
        "attention": lambda m: attention(q, q, q, key_padding_mask=m),
        "pack": lambda m: pack(x, m),
        "LinearAttention": lambda m: LinearAttention(16, 2)(x, key_padding_mask=m),
        "TransformerClassifier": lambda m: clf(tokens, m),
    }


@pytest.mark.parametrize("owner", ["attention", "pack", "LinearAttention", "TransformerClassifier"])
def test_key_padding_mask_errors_share_one_style(owner):
    run = _kpm_callers()[owner]
    with pytest.raises(TypeError, match=rf"^{owner}: key_padding_mask must be a torch.bool tensor \(True = padding\)"):
        run(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=rf"^{owner}: key_padding_mask shape \(2, 4\) does not match \(batch, len_k\)"):
        run(torch.zeros(2, 4, dtype=torch.bool))
    run(torch.zeros(2, 5, dtype=torch.bool))  # the right mask passes


def test_attention_compiles_without_graph_breaks() -> None:
    """torch.compile traces attention() whole, use_backend() included (a ContextVar read would break the graph)."""
    import torch._dynamo

    q = torch.randn(1, 2, 16, 8)

    def run(q: torch.Tensor) -> torch.Tensor:
        return attention(q, q, q, causal=True)

    with use_backend("reference"):
        explained = torch._dynamo.explain(run)(q)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(run, backend="eager", fullgraph=True)
    with use_backend("reference"):
        torch.testing.assert_close(compiled(q), run(q))


# ------------------------------------------------------------------------------------------ cpu_matmul (learned bias)


@pytest.mark.parametrize("masks", [{}, {"causal": True, "padding": True}], ids=["bias", "bias+causal+padding"])
def test_cpu_matmul_matches_reference_when_training_a_bias(masks):
    case = Case(B=2, H=3, Lq=6, Lk=6, D=8, bias_shape="per_head", **masks)
    q, k, v, kwargs = case.make(requires_grad=True)
    if masks:
        kwargs["key_padding_mask"][0] = True  # sample 0 sees no key: zeros, zero gradients
    out = attention(q, k, v, backend="cpu_matmul", **kwargs)
    inputs = (q, k, v, kwargs["attn_bias"])
    ref_in = [t.detach().requires_grad_() for t in inputs]
    ref = attention(*ref_in[:3], backend="reference", **{**kwargs, "attn_bias": ref_in[3]})
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn(out.shape)
    grads = torch.autograd.grad((out * weight).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weight).sum(), ref_in)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_auto_picks_cpu_matmul_only_for_training_with_a_learned_bias(monkeypatch):
    seen = spy_backends(monkeypatch, ["sdpa", "cpu_matmul"])
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    learned, fixed = torch.zeros(3, 5, 5, requires_grad=True), torch.zeros(3, 5, 5)
    attention(q, q, q, attn_bias=learned)  # training a bias: SDPA would run unfused
    attention(q, q, q, attn_bias=fixed)  # a constant mask: SDPA's fused kernel
    attention(q, q, q, attn_bias=learned, dropout_p=0.1)  # no dropout in cpu_matmul
    with torch.no_grad():
        attention(q, q, q, attn_bias=learned)  # inference
    assert seen == ["cpu_matmul", "sdpa", "sdpa", "sdpa"]
    with pytest.raises(BackendUnavailableError, match="learned bias"):
        attention(q, q, q, attn_bias=fixed, backend="cpu_matmul")


# ------------------------------------------------------------------------------------------- degenerate sizes


def test_zero_heads_is_a_value_error_not_a_dead_interpreter():
    """0 heads used to kill the interpreter (SIGFPE in torch's CPU SDPA): run the call in a child process so that a
    regression fails this test instead of taking pytest down with it."""
    code = (
        "import torch\n"
        "from formers.core.attention import attention\n"
        "q = torch.randn(1, 0, 4, 8)\n"
        "try:\n"
        "    attention(q, q, q)\n"
        "except ValueError as err:\n"
        "    print('ValueError:', err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"child died with {result.returncode}: {result.stderr[-2000:]}"
    assert "ValueError: attention: heads must be >= 1, got 0" in result.stdout


@pytest.mark.parametrize(
    ("q_shape", "kv_shape", "dv", "match"),
    [
        ((1, 0, 4, 8), (1, 0, 4, 8), 8, "heads must be >= 1"),
        ((1, 2, 4, 0), (1, 2, 4, 0), 8, "head_dim must be >= 1"),
        ((1, 2, 4, 8), (1, 2, 4, 8), 0, "head_dim of v must be >= 1"),
        ((1, 2, 0, 8), (1, 2, 4, 8), 8, "len_q and len_k must be >= 1"),
        ((1, 2, 4, 8), (1, 2, 0, 8), 8, "len_q and len_k must be >= 1"),
    ],
    ids=["no_heads", "no_head_dim", "no_value_dim", "no_queries", "no_keys"],
)
@pytest.mark.parametrize("backend", ["auto", "reference", "sdpa"])
def test_degenerate_sizes_are_refused_before_any_kernel(backend, q_shape, kv_shape, dv, match):
    q, k = torch.randn(q_shape), torch.randn(kv_shape)
    v = torch.randn(*kv_shape[:3], dv)
    with pytest.raises(ValueError, match=match):
        attention(q, k, v, backend=backend)


def test_an_empty_batch_still_runs():
    q = torch.randn(0, 2, 4, 8)
    assert attention(q, q, q).shape == (0, 2, 4, 8)

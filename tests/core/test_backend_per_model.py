"""``set_attention_backend(model, name)`` reaches every attention call of every registered model, dense and packed.

Each registered model is built with its registry ``test_kwargs``; after ``set_attention_backend(model, "reference")``
a spy on every backend's kernels must see only the oracle, and the output must match the ``auto`` backend's.
"""

from __future__ import annotations

import pytest
import torch

from core.backend_spy import spy_backends
from formers.core.attention import (
    AttentionBackendMixin,
    BackendUnavailableError,
    attention_modules,
    set_attention_backend,
    use_backend,
)
from formers.core.layers import MultiHeadAttention
from formers.core.models.encoder import TransformerEncoder
from formers.core.registry import get_model_entry, list_models
from formers.core.varlen import cu_seqlens_from_lengths

# Models whose attention is not softmax attention: nothing for a backend to route, so set_attention_backend refuses.
NOT_SOFTMAX = {
    "autoformer": "AutoCorrelation (FFT period aggregation), no softmax attention call",
    # sparse attention over graph edges with exp(clamp(score, -5, 5)) weights (message passing), not a softmax call
    **{
        f"graph_transformer_{c}": "edge attention (message passing)"
        for c in ("zinc", "pattern", "cluster", "molecules")
    },
    # PyG's GPSConv: torch.nn.MultiheadAttention on a padded batch, the baseline users would pick, kept as PyG has it
    **{f"gps_{c}": "PyG's own torch.nn.MultiheadAttention" for c in ("zinc", "molecules", "pattern", "cluster")},
    # formers-pde: softmax-free attention (Galerkin / Fourier, GNOT's normalized linear attention, FactFormer's axial
    # low-rank kernels) and neuraloperator's FNO (spectral convolutions): no softmax attention call anywhere
    **{
        name: "linear attention / factorized kernels / spectral convolutions"
        for name in list_models()
        if name.startswith(("galerkin_", "fourier_", "factformer_", "gnot_", "fno_"))
    },
    # kMaX-DeepLab: axial and query self-attention normalise their logits with BatchNorm (and add relative position
    # terms) before the softmax, the cross-attention is a k-means argmax: no attention() call to route (except in
    # kmax_swin_tiny's Swin backbone, which is routed like Swin's)
    **{
        name: "BatchNorm'd attention logits, k-means argmax"
        for name in list_models()
        if name.startswith("kmax_") and name != "kmax_swin_tiny"
    },
}
ORACLE = "reference"


def build(name: str) -> torch.nn.Module:
    entry = get_model_entry(name)
    return entry.create(**entry.test_kwargs).eval()


@pytest.mark.parametrize("name", sorted(set(list_models()) - set(NOT_SOFTMAX)))
def test_every_attention_call_of_a_model_uses_its_backend(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(name)
    inputs = model.example_inputs(2)
    with torch.no_grad():
        auto = model(**inputs)
    assert set_attention_backend(model, ORACLE) is model
    assert all(m.backend == ORACLE for _, m in attention_modules(model))
    seen = spy_backends(monkeypatch)
    with torch.no_grad():
        routed = model(**inputs)
    assert seen, f"{name}: no attention call reached a backend"
    assert set(seen) <= {ORACLE, f"varlen:{ORACLE}"}, f"{name}: calls that ignored the model's backend: {seen}"
    torch.testing.assert_close(routed, auto, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(NOT_SOFTMAX))
def test_models_without_softmax_attention_refuse_a_backend(name: str) -> None:
    with pytest.raises(ValueError, match="no module that calls attention"):
        set_attention_backend(build(name), ORACLE)


def test_unknown_backend_name_is_refused_up_front_listing_the_names() -> None:
    model = TransformerEncoder(16, 2, 2)
    with pytest.raises(ValueError, match=r"unknown attention backend 'flash9'.*'reference'.*'sdpa'"):
        set_attention_backend(model, "flash9")
    assert all(m.backend == "auto" for _, m in attention_modules(model))  # nothing was half-set
    with pytest.raises(ValueError, match="unknown attention backend"):
        MultiHeadAttention(16, 2, backend="flash9")


def test_backend_reaches_packed_calls_and_auto_restores_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = TransformerEncoder(16, 2, 2).eval()
    lengths = [3, 1, 4]
    x, cu = torch.randn(sum(lengths), 16), cu_seqlens_from_lengths(lengths)
    seen = spy_backends(monkeypatch)
    set_attention_backend(encoder, "sdpa_blockmask")
    encoder(x, cu_seqlens=cu)
    assert seen == ["varlen:sdpa_blockmask"] * 2
    seen.clear()
    set_attention_backend(encoder, "auto")
    encoder(x, cu_seqlens=cu)
    assert seen == ["varlen:sdpa"] * 2


def test_backend_without_kernel_for_the_call_raises_the_same_way_set_or_forced() -> None:
    """A backend set on the module and one forced with use_backend refuse the same call with the same error
    (no fallback to auto): a varlen-only backend on dense input, cpu_matmul on packed inference."""
    mha = MultiHeadAttention(16, 2).eval()
    packed, cu = torch.randn(5, 16), cu_seqlens_from_lengths([2, 3])
    dense = torch.randn(2, 3, 16)
    for name, x, kwargs, why in [
        ("sdpa_loop", dense, {}, "serves packed tokens .*only"),
        ("cpu_matmul", packed, {"cu_seqlens": cu}, "cpu_matmul is for training"),
    ]:
        messages = []
        mha.backend = name
        with torch.no_grad(), pytest.raises(BackendUnavailableError, match=why) as set_err:
            mha(x, **kwargs)
        messages.append(str(set_err.value))
        mha.backend = "auto"
        with torch.no_grad(), use_backend(name), pytest.raises(BackendUnavailableError, match=why) as forced_err:
            mha(x, **kwargs)
        messages.append(str(forced_err.value))
        assert messages[0] == messages[1]


def test_cpu_matmul_trains_packed_tokens_like_the_oracle() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2)
    lengths = [3, 5]
    x, cu = torch.randn(sum(lengths), 16, requires_grad=True), cu_seqlens_from_lengths(lengths)
    outs = []
    for name in ("reference", "cpu_matmul"):
        mha.backend = name
        out = mha(x, cu_seqlens=cu)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        outs.append((out, grad))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)


def test_every_core_attention_module_shares_the_backend_attribute() -> None:
    from formers.core.layers import ShiftedWindowAttention2d, WindowAttention, WindowAttention1d

    for module in (
        MultiHeadAttention(8, 2),
        WindowAttention(8, 2, 2),
        ShiftedWindowAttention2d(8, 2, 2, 1),
        WindowAttention1d(8, 2, 4),
    ):
        assert isinstance(module, AttentionBackendMixin) and module.backend == "auto"

"""Informer: paper parameter count, equivalence with Informer2020's arithmetic, ProbSparse sizes / sampling /
batch consistency (the TSLib bare-squeeze bug), distilling length, generative decoder."""

from __future__ import annotations

import math

import pytest
import torch

from formers.core.registry import create_model, get_model_entry
from formers.timeseries.models.informer import DistilConv, Informer
from formers.timeseries.models.prob_attention import InformerAttention, prob_attention, prob_sparse_sizes
from timeseries import _tslib_reference as ref

TINY = get_model_entry("informer").test_kwargs


def tiny(**kwargs) -> Informer:
    return create_model("informer", **{**TINY, **kwargs})


def test_paper_parameter_count():
    """TSLib ETTh1 script configuration: 11,328,007 parameters, as the reference implementations."""
    with torch.device("meta"):
        model = create_model("informer")
    assert model.num_parameters() == 11_328_007


def test_forward_shape_and_gradient():
    model = tiny().train()
    out = model(**model.example_inputs(3))
    assert out.shape == (3, TINY["pred_len"], 7)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("training", [True, False])
def test_matches_informer2020_arithmetic(training):
    """Same weights and RNG as a transcription of Informer2020 (prob attention, mix, full cross, distil)."""
    cfg = {**TINY, "enc_in": 7, "dec_in": 7, "c_out": 7, "e_layers": 2, "d_layers": 1, "factor": 3}
    model = tiny(dropout=0.0, eval_sample_seed=None)
    reference = ref.InformerReference(cfg)
    ref.copy_by_order(reference, model)
    model.train(training), reference.train(training)
    inputs = model.example_inputs(3)
    with torch.no_grad():
        torch.manual_seed(7)
        expected = reference(**inputs)
        torch.manual_seed(7)
        actual = model(**inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("factor", "len_q", "len_k", "sizes"), [(3, 96, 96, (15, 15)), (3, 144, 144, (15, 15))])
def test_prob_sparse_sizes_paper(factor, len_q, len_k, sizes):
    """u = c·⌈ln L_Q⌉, U = c·⌈ln L_K⌉: 15 and 15 at L = 96 / 144 with factor 3; 25 with factor 5."""
    assert prob_sparse_sizes(factor, len_q, len_k) == sizes
    assert prob_sparse_sizes(5, 96, 96) == (25, 25)
    assert prob_sparse_sizes(3, 48, 96) == (12, 15)  # after one distilling step
    assert prob_sparse_sizes(5, 8, 8) == (8, 8)  # capped at L


@pytest.mark.parametrize("causal", [False, True])
def test_prob_attention_matches_reference_kernel(causal):
    q, k, v = (torch.randn(2, 3, 40, 8) for _ in range(3))
    torch.manual_seed(3)
    expected = ref.ProbAttention(causal, factor=2)(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    torch.manual_seed(3)
    actual = prob_attention(q, k, v, factor=2, causal=causal)
    torch.testing.assert_close(actual.transpose(1, 2), expected)


def test_both_selection_paths_agree():
    """Dense-scores-then-gather (short L) and gathered sampled keys (long L) select the same queries."""
    q, k, v = (torch.randn(2, 2, 50, 2) for _ in range(3))  # L_K = 50 > U·D = 2·⌈ln 50⌉·2: sampled-keys path
    index = torch.randint(50, (50, 8))
    long_path = prob_attention(q, k, v, factor=2, index_sample=index)
    q8, k8, v8 = (torch.nn.functional.pad(t, (0, 30)) for t in (q, k, v))  # D = 32: dense path, same dot products
    dense_path = prob_attention(q8, k8, v8, factor=2, index_sample=index, scale=2**-0.5)[..., :2]
    torch.testing.assert_close(long_path, dense_path)


def test_active_queries_attend_and_lazy_queries_get_mean():
    q, k, v = torch.randn(1, 1, 30, 4), torch.randn(1, 1, 30, 4), torch.randn(1, 1, 30, 4)
    out = prob_attention(q, k, v, factor=1)
    u, _ = prob_sparse_sizes(1, 30, 30)
    full = torch.softmax(q @ k.transpose(-2, -1) / 2, -1) @ v
    is_full = torch.isclose(out, full, atol=1e-6).all(-1)[0, 0]
    is_mean = torch.isclose(out, v.mean(2, keepdim=True), atol=1e-6).all(-1)[0, 0]
    assert int(is_full.sum()) == u and bool((is_full | is_mean).all())
    causal = prob_attention(q, k, v, factor=1, causal=True)
    lazy = ~torch.isclose(
        causal,
        torch.softmax(
            (q @ k.transpose(-2, -1) / 2).masked_fill(torch.ones(30, 30, dtype=torch.bool).triu(1), -math.inf), -1
        )
        @ v,
        atol=1e-6,
    ).all(-1)[0, 0]
    torch.testing.assert_close(causal[0, 0, lazy], v.cumsum(2)[0, 0, lazy])  # cumsum, not a cumulative mean


def test_batch_consistency_with_one_head():
    """n_heads = 1, seeded RNG: sample i of the batch equals the sample alone. TSLib's bare ``squeeze()`` fails this."""
    q, k, v = (torch.randn(4, 1, 40, 8) for _ in range(3))

    def run(fn, *tensors):
        torch.manual_seed(11)
        return fn(*tensors)

    ours = run(lambda *t: prob_attention(*t, factor=2), q, k, v)
    for i in range(4):
        single = run(lambda *t: prob_attention(*t, factor=2), q[i : i + 1], k[i : i + 1], v[i : i + 1])
        torch.testing.assert_close(ours[i : i + 1], single)

    def tslib(*t):
        return ref.ProbAttention(False, factor=2, bare_squeeze=True)(*(x.transpose(1, 2) for x in t))

    batched = run(tslib, q, k, v)
    singles = torch.cat([run(tslib, q[i : i + 1], k[i : i + 1], v[i : i + 1]) for i in range(4)])
    assert (batched - singles).abs().max() > 1e-3  # the bug this implementation avoids


def test_eval_sampling_is_seeded_and_training_redraws():
    layer = InformerAttention(16, 2, factor=1).eval()
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)
        layer.eval_sample_seed = None  # the reference: a fresh key sample even in eval
        assert not torch.equal(layer(x), layer(x))
        layer.train()
        assert not torch.equal(layer(x), layer(x))


def test_mix_layout():
    """mix=True flattens the (B, H, L, D) context without moving heads next to features (Informer2020 #229)."""
    layer = InformerAttention(8, 2, "full", mix=True).eval()
    plain = InformerAttention(8, 2, "full", mix=False).eval()
    plain.load_state_dict(layer.state_dict())
    captured = {}
    plain.out_projection.register_forward_hook(lambda m, a, o: captured.__setitem__("plain", a[0]))
    layer.out_projection.register_forward_hook(lambda m, a, o: captured.__setitem__("mix", a[0]))
    x = torch.randn(2, 6, 8)
    layer(x), plain(x)
    heads_last = captured["plain"].view(2, 6, 2, 4).transpose(1, 2)  # (B, H, L, D)
    torch.testing.assert_close(captured["mix"], heads_last.reshape(2, 6, 8))


@pytest.mark.parametrize(("length", "out"), [(96, 48), (48, 24), (24, 12), (25, 13)])
def test_distil_length(length, out):
    """Padding 1 (Informer2020): 96 -> 48 (TSLib's padding 2 gives 49)."""
    assert DistilConv(8)(torch.randn(2, length, 8)).shape == (2, out, 8)


def test_encoder_output_length_and_distil_off():
    model = create_model("informer", d_model=16, d_ff=16, n_heads=2, e_layers=3).eval()
    x = model.example_inputs(2)
    with torch.no_grad():
        assert model.encode(x["x_enc"], x["x_mark_enc"]).shape == (2, 24, 16)  # 96 -> 48 -> 24
        flat = create_model("informer", d_model=16, d_ff=16, n_heads=2, distil=False).eval()
        assert flat.distil is None
        assert flat.encode(x["x_enc"], x["x_mark_enc"]).shape == (2, 96, 16)


def test_decoder_self_attention_is_causal():
    """Before the mix layout, position t of the causal full-attention layer ignores later inputs.

    (ProbSparse masks the active rows and uses cumsum for the lazy ones, but *which* rows are active is chosen with
    sampled keys from anywhere in the sequence, as in the reference; checked against it in
    test_prob_attention_matches_reference_kernel. The whole decoder is not causal in the reference either: the
    circular token conv and the mix scramble both look ahead; no leak only because the horizon inputs are zeros.)
    """
    layer = InformerAttention(8, 2, "full", causal=True).eval()
    x = torch.randn(2, 30, 8)
    later = x.clone()
    later[:, 20:] = torch.randn(2, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(later)[:, :20], layer(x)[:, :20])


def test_x_dec_defaults_to_label_window_and_zeros():
    model = tiny().eval()
    inputs = model.example_inputs(2)
    x_enc = inputs["x_enc"]
    x_dec = torch.cat([x_enc[:, -TINY["label_len"] :], torch.zeros(2, TINY["pred_len"], 7)], 1)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x_enc, inputs["x_mark_enc"], None, inputs["x_mark_dec"]),
            model(x_enc, inputs["x_mark_enc"], x_dec, inputs["x_mark_dec"]),
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attn": "sparse"}, ValueError, "attn"),
        ({"label_len": 30}, ValueError, "label_len"),
        ({"factor": 0}, ValueError, "factor"),
        ({"n_heads": 3}, ValueError, "divisible"),
        ({"distill": True}, TypeError, "distill"),
    ],
)
def test_bad_configs(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny(**kwargs)


def test_bad_inputs():
    model = tiny().eval()
    inputs = model.example_inputs(2)
    with pytest.raises(ValueError, match="x_dec must have shape"):
        model(**{**inputs, "x_dec": inputs["x_dec"][:, :-1]})
    with pytest.raises(ValueError, match="x_mark_dec must have shape"):
        model(**{**inputs, "x_mark_dec": inputs["x_mark_dec"][:, :-1]})
    with pytest.raises(ValueError, match="x_dec is required"):
        tiny(dec_in=3)(inputs["x_enc"])


def test_model_batch_consistency_with_one_head():
    """Whole model, n_heads = 1, eval (seeded key sample): every sample of a batch equals that sample alone."""
    model = tiny(n_heads=1).eval()
    inputs = model.example_inputs(4)
    with torch.no_grad():
        batched = model(**inputs)
        for i in range(4):
            single = model(**{k: v[i : i + 1] for k, v in inputs.items()})
            torch.testing.assert_close(single, batched[i : i + 1], rtol=1e-4, atol=1e-5)

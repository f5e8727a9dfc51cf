"""Autoformer: paper parameter count, equivalence with the reference arithmetic, decomposition and
Auto-Correlation unit checks (top_k, train/eval delay selection, roll/gather equivalence)."""

from __future__ import annotations

import math

import pytest
import torch

from formers.core.registry import create_model, get_model_entry
from formers.timeseries.models.auto_correlation import (
    auto_correlation,
    delay_correlation,
    time_delay_aggregation,
    top_k_delays,
)
from formers.timeseries.models.autoformer import Autoformer
from formers.timeseries.models.decomposition import MovingAvg, SeasonalLayerNorm, SeriesDecomp
from timeseries import _tslib_reference as ref

TINY = get_model_entry("autoformer").test_kwargs


def tiny(**kwargs) -> Autoformer:
    return create_model("autoformer", **{**TINY, **kwargs})


def test_paper_parameter_count():
    """TSLib ETTh1 script configuration: 10,535,943 parameters, as the reference implementation."""
    with torch.device("meta"):
        model = create_model("autoformer")
    assert model.num_parameters() == 10_535_943


def test_forward_shape_and_gradient():
    model = tiny().train()
    out = model(**model.example_inputs(3))
    assert out.shape == (3, TINY["pred_len"], 7)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("training", [False, True])
def test_matches_reference_arithmetic(training):
    """Same weights as a transcription of TSLib's Autoformer (roll/gather loops, 1x1 convs): same forecast."""
    cfg = {**TINY, "enc_in": 7, "dec_in": 7, "c_out": 7, "e_layers": 2, "d_layers": 1, "factor": 3}
    model = tiny(dropout=0.0, factor=3)
    reference = ref.AutoformerReference(cfg)
    ref.copy_by_order(reference, model)
    model.train(training), reference.train(training)
    inputs = model.example_inputs(3)
    with torch.no_grad():
        expected = reference(**inputs)
        actual = model(**inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("factor", "length", "k"), [(3, 96, 13), (3, 144, 14), (1, 96, 4), (1, 2, 1), (5, 3, 3)])
def test_top_k_counts(factor, length, k):
    """int(c · ln L): 13 delays for L = 96 and 14 for L = 144 at the scripts' factor 3 (clamped to [1, L])."""
    assert top_k_delays(factor, length) == k


def test_delay_correlation_is_circular_cross_correlation():
    q, k = torch.randn(2, 10, 3), torch.randn(2, 10, 3)
    corr = delay_correlation(q, k)
    direct = torch.stack([(torch.roll(q, -tau, 1) * k).sum(1).mean(-1) for tau in range(10)], dim=1)
    torch.testing.assert_close(corr, direct, rtol=1e-5, atol=1e-5)


def test_aggregation_equals_roll_and_gather():
    """The circulant matmul equals the reference's roll (training) and gather-on-doubled-values (inference)."""
    batch, length, channels, k = 3, 11, 4, 3
    values = torch.randn(batch, length, channels)
    delays = torch.stack([torch.randperm(length)[:k] for _ in range(batch)])
    weights = torch.softmax(torch.randn(batch, k), -1)
    out = time_delay_aggregation(values, delays, weights)
    rolled = sum(
        weights[:, i, None, None] * torch.stack([torch.roll(values[b], -int(delays[b, i]), 0) for b in range(batch)])
        for i in range(k)
    )
    doubled = values.repeat(1, 2, 1)
    index = torch.arange(length)[None, :, None] + delays[:, :, None, None]  # (B, k, L, 1)
    gathered = sum(
        weights[:, i, None, None] * torch.gather(doubled, 1, index[:, i].expand(-1, -1, channels)) for i in range(k)
    )
    torch.testing.assert_close(out, rolled)
    torch.testing.assert_close(out, gathered)


def test_train_vs_eval_delay_selection():
    """Training: one delay set for the batch (from the batch-mean correlation); eval: per sample."""
    length = 24
    t = torch.arange(length, dtype=torch.float32)
    # sample 0 has period 6, sample 1 period 8: their strongest non-zero delays differ
    x = torch.stack([torch.sin(2 * math.pi * t / 6), torch.sin(2 * math.pi * t / 8)])[:, :, None].repeat(1, 1, 4)
    v = torch.randn(2, length, 4)
    factor = 1 / math.log(length) * 2  # top_k = 2 delays
    for batch_delays, fn in ((True, ref.time_delay_agg_training), (False, ref.time_delay_agg_inference)):
        out = auto_correlation(x, x, v, factor, batch_delays=batch_delays)
        q4 = x.view(2, length, 2, 2)
        corr = torch.fft.irfft(
            torch.fft.rfft(q4.permute(0, 2, 3, 1), dim=-1) * torch.fft.rfft(q4.permute(0, 2, 3, 1), dim=-1).conj(),
            n=length,
            dim=-1,
        )
        expected = (
            fn(factor, v.view(2, length, 2, 2).permute(0, 2, 3, 1), corr).permute(0, 3, 1, 2).reshape(2, length, 4)
        )
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    batch, single = auto_correlation(x, x, v, factor, True), auto_correlation(x[1:], x[1:], v[1:], factor, True)
    assert not torch.allclose(batch[1:], single, atol=1e-3)  # batch-shared delays: sample 1 depends on sample 0
    batch, single = auto_correlation(x, x, v, factor, False), auto_correlation(x[1:], x[1:], v[1:], factor, False)
    torch.testing.assert_close(batch[1:], single)  # per-sample delays at inference


def test_layer_switches_with_mode():
    model = tiny(dropout=0.0)
    inputs = model.example_inputs(4)
    with torch.no_grad():
        train_out = model.train()(**inputs)
        eval_out = model.eval()(**inputs)
    assert not torch.allclose(train_out, eval_out)


def test_cross_correlation_pads_shorter_keys():
    """L > S: keys and values are zero-padded to L (the reference's cross-attention onto the encoder)."""
    q, k, v = torch.randn(2, 12, 4), torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    padded = torch.nn.functional.pad
    expected = auto_correlation(q, padded(k, (0, 0, 0, 4)), padded(v, (0, 0, 0, 4)), 1.0)
    torch.testing.assert_close(auto_correlation(q, k, v, 1.0), expected)
    assert auto_correlation(q[:, :6], k, v, 1.0).shape == (2, 6, 4)  # L < S: truncated to L


@pytest.mark.parametrize("length", [30, 300])  # the averaging-matrix matmul (L <= 256) and the running sum
@pytest.mark.parametrize("kernel", [1, 3, 5, 25])
def test_moving_average_matches_reference_for_odd_kernels(kernel, length):
    x = torch.randn(2, length, 3)
    # the running sum (long series) drifts by ~1e-5 over 300 steps; the averaging-matrix path is exact to fp32
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if length > 256 else {}
    torch.testing.assert_close(MovingAvg(kernel)(x), ref.moving_avg(kernel)(x), **tolerance)
    if length == 30:
        x = x.requires_grad_()
        grad = torch.autograd.grad(MovingAvg(kernel)(x).square().sum(), x)[0]
        torch.testing.assert_close(grad, torch.autograd.grad(ref.moving_avg(kernel)(x).square().sum(), x)[0])
        with torch.autocast("cpu", dtype=torch.bfloat16):  # averaged in float32, returned in the input's dtype
            assert MovingAvg(kernel)(x.bfloat16()).dtype == torch.bfloat16
    seasonal, trend = SeriesDecomp(kernel)(x)
    torch.testing.assert_close(seasonal + trend, x)
    assert seasonal.shape == x.shape


@pytest.mark.parametrize("kernel", [2, 4, 24])
def test_even_kernel_keeps_the_length(kernel):
    """The reference returns L - 1 steps for an even kernel; here the window of t is [t - k/2 + 1, t + k/2]."""
    x = torch.randn(2, 30, 3)
    assert ref.moving_avg(kernel)(x).shape[1] == 29
    trend = MovingAvg(kernel)(x)
    assert trend.shape == x.shape
    padded = torch.cat([x[:, :1].expand(-1, kernel // 2 - 1, -1), x, x[:, -1:].expand(-1, kernel // 2, -1)], 1)
    expected = torch.stack([padded[:, t : t + kernel].mean(1) for t in range(30)], 1)
    torch.testing.assert_close(trend, expected)
    assert tiny(moving_avg=kernel)(**tiny().example_inputs(2)).shape == (2, TINY["pred_len"], 7)


def test_moving_average_rejects_bad_kernels():
    with pytest.raises(ValueError, match="kernel_size"):
        MovingAvg(0)
    with pytest.raises(TypeError, match="moving_avg must be an integer"):  # the builder names the argument
        tiny(moving_avg=2.5)


def test_seasonal_layernorm_has_zero_time_mean():
    out = SeasonalLayerNorm(6)(torch.randn(2, 9, 6) * 3 + 1)
    torch.testing.assert_close(out.mean(1), torch.zeros(2, 6), rtol=0, atol=1e-6)


def test_x_dec_values_are_not_used_but_checked():
    model = tiny().eval()
    inputs = model.example_inputs(2)
    with torch.no_grad():
        out = model(**inputs)
        torch.testing.assert_close(model(**{**inputs, "x_dec": torch.randn_like(inputs["x_dec"])}), out)
        torch.testing.assert_close(model(inputs["x_enc"], inputs["x_mark_enc"], None, inputs["x_mark_dec"]), out)
    with pytest.raises(ValueError, match="x_dec must have shape"):
        model(**{**inputs, "x_dec": inputs["x_dec"][:, 1:]})
    with pytest.raises(ValueError, match="both x_mark_enc and x_mark_dec"):
        model(inputs["x_enc"], inputs["x_mark_enc"], inputs["x_dec"])


def test_univariate_target_output():
    """c_out = 1 (features 'MS'): the last channel of the broadcast trend + seasonal sum, as the reference."""
    assert tiny(c_out=1)(**tiny().example_inputs(2)).shape == (2, TINY["pred_len"], 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dec_in": 3}, ValueError, "dec_in"),
        ({"c_out": 3}, ValueError, "c_out"),
        ({"label_len": 30}, ValueError, "label_len"),
        ({"factor": 0}, ValueError, "factor"),
        ({"embed": "sinus"}, ValueError, "embed"),
        ({"d_layer": 2}, TypeError, "d_layer"),
    ],
)
def test_bad_configs(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny(**kwargs)


@pytest.mark.parametrize("embed", ["fixed", "learned"])
def test_integer_time_marks(embed):
    model = tiny(embed=embed).eval()
    inputs = model.example_inputs(2)
    assert not inputs["x_mark_enc"].is_floating_point()
    assert model(**inputs).shape == (2, TINY["pred_len"], 7)

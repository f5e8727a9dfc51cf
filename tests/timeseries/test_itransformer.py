"""iTransformer: paper parameter count, inverted tokens, per-window normalization round trip, input checks."""

from __future__ import annotations

import pytest
import torch

from formers.core.registry import create_model, get_model_entry
from formers.timeseries.models.itransformer import ITransformer
from timeseries import _tslib_reference as ref

TINY = get_model_entry("itransformer").test_kwargs


def tiny(**kwargs) -> ITransformer:
    return create_model("itransformer", **{**TINY, **kwargs})


def test_paper_parameter_count():
    """Official ETTh1 H=96 configuration (d_model = d_ff = 256, 2 layers): 841,568 parameters, as the reference."""
    with torch.device("meta"):
        model = create_model("itransformer")
    assert model.num_parameters() == 841_568
    assert (model.seq_len, model.pred_len, model.enc_in, model.num_marks) == (96, 96, 7, 4)


def test_forward_shape_and_gradient():
    model = tiny().train()
    inputs = model.example_inputs(3)
    out = model(**inputs)
    assert out.shape == (3, 8, 7)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_matches_reference_arithmetic():
    """Same weights as a transcription of the official iTransformer (separate q/k/v, 1x1 convs): same forecast and
    same gradients."""
    model = tiny(dropout=0.0, e_layers=2)
    reference = ref.ITransformerReference({**TINY, "e_layers": 2})
    model.load_state_dict(reference.formers_state_dict())
    inputs = model.example_inputs(3)
    torch.testing.assert_close(model(**inputs), reference(**inputs), rtol=1e-4, atol=1e-5)
    model(**inputs).square().mean().backward()
    reference(**inputs).square().mean().backward()
    torch.testing.assert_close(model.projector.weight.grad, reference.projector.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        model.enc_embedding.value_embedding.weight.grad, reference.value_embedding.weight.grad, rtol=1e-4, atol=1e-6
    )


def test_time_features_become_extra_tokens():
    """N variates + 4 hourly time-feature tokens enter the encoder; the output keeps the N variates only."""
    model = tiny().eval()
    seen = []
    model.layers[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    inputs = model.example_inputs(2)
    with torch.no_grad():
        out = model(**inputs)
        assert seen[-1] == (2, 7 + 4, TINY["d_model"])
        model(inputs["x_enc"])  # no time marks: N tokens
        assert seen[-1] == (2, 7, TINY["d_model"])
    assert out.shape == (2, TINY["pred_len"], 7)


def test_x_dec_is_ignored():
    model = tiny().eval()
    x, marks = model.example_inputs(2).values()
    x_dec = torch.randn(2, TINY["label_len"] + TINY["pred_len"], 7)
    mark_dec = torch.rand(2, TINY["label_len"] + TINY["pred_len"], 4)
    with torch.no_grad():
        ref = model(x, marks)
        other = model(x, marks, x_dec, mark_dec)
    torch.testing.assert_close(ref, other, rtol=0, atol=0)
    with pytest.raises(TypeError, match="x_dec must be a floating"):
        model(x, marks, x_dec.long())
    with pytest.raises(ValueError, match="x_mark_dec must have shape"):
        model(x, marks, x_dec, mark_dec[..., :2])


def test_constant_series_round_trip():
    """A constant window normalizes to zeros; with a zero projector the forecast is that constant exactly."""
    model = tiny(dropout=0.0).eval()
    torch.nn.init.zeros_(model.projector.weight)
    torch.nn.init.zeros_(model.projector.bias)
    level = torch.tensor([3.0, -2.0, 0.5, 10.0, 0.0, 7.25, -100.0])
    x = level.expand(2, TINY["seq_len"], 7).clone()
    with torch.no_grad():
        out = model(x, model.example_inputs(2)["x_mark_enc"])
    torch.testing.assert_close(out, level.expand(2, TINY["pred_len"], 7), rtol=0, atol=1e-6)


def test_normalization_makes_model_shift_and_scale_equivariant():
    """Per-window mean/std normalization with exact de-normalization: f(a·x + b) = a·f(x) + b per channel."""
    model = tiny().eval()
    inputs = model.example_inputs(2)
    x = inputs["x_enc"]
    scale, shift = torch.rand(1, 1, 7) * 5 + 0.5, torch.randn(1, 1, 7) * 10
    with torch.no_grad():
        ref = model(x, inputs["x_mark_enc"])
        moved = model(x * scale + shift, inputs["x_mark_enc"])
    torch.testing.assert_close(moved, ref * scale + shift, rtol=1e-4, atol=1e-3)


def test_use_norm_off_is_not_equivariant():
    model = tiny(use_norm=False).eval()
    x = model.example_inputs(2)["x_enc"]
    with torch.no_grad():
        assert not torch.allclose(model(x + 5.0), model(x) + 5.0, atol=1e-3)


def test_c_out_keeps_the_last_variates():
    model = tiny().eval()
    inputs = model.example_inputs(2)
    with torch.no_grad():
        full = model(**inputs)
        model.c_out = 1
        target = model(**inputs)
    torch.testing.assert_close(target, full[..., -1:])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"c_out": 8}, ValueError, "c_out"),
        ({"embed": "fixed"}, ValueError, "timeF"),
        ({"freq": "fortnight"}, ValueError, "unknown freq"),
        ({"seq_len": 0}, ValueError, "seq_len"),
        ({"d_model": 16, "n_heads": 3}, ValueError, "divisible"),
        ({"lookback": 3}, TypeError, "lookback"),
    ],
)
def test_bad_configs(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny(**kwargs)


def test_bad_inputs():
    model = tiny().eval()
    inputs = model.example_inputs(2)
    with pytest.raises(ValueError, match="x_enc must have shape"):
        model(inputs["x_enc"][:, :-1])
    with pytest.raises(ValueError, match="x_enc must have shape"):
        model(inputs["x_enc"][..., :-1])
    with pytest.raises(TypeError, match="x_enc must be a floating"):
        model(inputs["x_enc"].long())
    with pytest.raises(ValueError, match="x_mark_enc must have shape"):
        model(inputs["x_enc"], inputs["x_mark_enc"][..., :3])
    with pytest.raises(TypeError, match="x_mark_enc must be a floating"):
        model(inputs["x_enc"], inputs["x_mark_enc"].long())


def test_minute_frequency_aliases():
    """Old ('t') and current ('min') pandas aliases give the same 5 minute-level features."""
    assert tiny(freq="t").num_marks == tiny(freq="min").num_marks == tiny(freq="15min").num_marks == 5


def test_one_tslib_config_builds_every_forecaster():
    """The TSLib hyper-parameter names are accepted by all three factories (unused ones are ignored, as in TSLib)."""
    config = dict(seq_len=24, label_len=12, pred_len=8, enc_in=3, dec_in=3, c_out=3, d_model=16, n_heads=2)
    config |= dict(e_layers=1, d_layers=1, d_ff=16, factor=3, moving_avg=5, dropout=0.0, embed="timeF", freq="h")
    config |= dict(activation="gelu", distil=True)
    for name in ("itransformer", "autoformer", "informer"):
        model = create_model(name, **config).eval()
        with torch.no_grad():
            assert model(**model.example_inputs(2)).shape == (2, 8, 3)

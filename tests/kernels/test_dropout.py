"""formers.kernels.dropout: the cheaper CPU dropout mask, and the core Dropout layer that uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from formers.core.layers import Dropout, Mlp
from formers.kernels.dropout import dropout, dropout_keep_mask, quantized_drop_probability


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_drop_rate_and_scale_match_p(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = dropout(x, p)
    kept = y != 0
    # 400k Bernoulli draws: the kept fraction is within 5 standard deviations of 1 - p
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - quantized_drop_probability(p))))
    assert abs(y.mean().item() - 1.0) < 5 * sigma / (1 - p)  # unbiased


def test_every_16_bit_lane_is_uniform() -> None:
    # the four int16 lanes of one 64-bit draw must all be uniform (the default int64 range would leave the top bit 0,
    # so every fourth element would almost never be dropped)
    torch.manual_seed(0)
    keep = dropout_keep_mask((100_000, 4), 0.5)
    lanes = keep.float().mean(0)
    assert torch.all((lanes - 0.5).abs() < 0.01), lanes


def test_gradient_is_the_same_mask_and_scale() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 128, requires_grad=True)
    y = dropout(x, 0.25)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    kept = y.detach() != 0
    scale = 1 / (1 - quantized_drop_probability(0.25))
    torch.testing.assert_close(x.grad, upstream * kept * scale)
    torch.testing.assert_close(y.detach(), x.detach() * kept * scale)


def test_seeded_masks_repeat() -> None:
    x = torch.randn(32, 50)
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    assert torch.equal(a, b)


def test_probability_is_a_multiple_of_one_65536th() -> None:
    assert quantized_drop_probability(0.1) == 6554 / 65536
    assert quantized_drop_probability(0.5) == 0.5
    assert abs(quantized_drop_probability(0.1) - 0.1) < 1e-5


@pytest.mark.parametrize(
    "case",
    ["eval", "p0", "p1", "inplace", "tiny_p"],
)
def test_falls_back_to_torch_where_the_fast_mask_does_not_apply(case: str) -> None:
    x = torch.randn(16, 8)
    kwargs = {"p": 0.2, "training": True, "inplace": False}
    if case == "eval":
        kwargs["training"] = False
    elif case == "p0":
        kwargs["p"] = 0.0
    elif case == "p1":
        kwargs["p"] = 1.0
    elif case == "inplace":
        kwargs["inplace"] = True
    else:
        kwargs["p"] = 1e-7  # rounds to 0 on the 16-bit grid: torch's own dropout keeps the exact p
    torch.manual_seed(0)
    expected = F.dropout(x.clone(), **kwargs)
    torch.manual_seed(0)
    assert torch.equal(dropout(x.clone(), **kwargs), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_keeps_the_input_dtype(dtype: torch.dtype) -> None:
    x = (torch.rand(32, 32) + 0.5).to(dtype).requires_grad_()  # no exact zeros
    y = dropout(x, 0.5)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == dtype
    assert torch.equal(x.grad != 0, y.detach() != 0)


def test_bad_probability_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(torch.ones(2), 1.5)


def test_dropout_layer_is_an_nn_dropout() -> None:
    layer = Dropout(0.1)
    assert isinstance(layer, nn.Dropout) and repr(layer) == "Dropout(p=0.1, inplace=False)"
    x = torch.randn(4, 8)
    assert torch.equal(layer.eval()(x), x)
    torch.manual_seed(0)
    y = layer.train()(x)
    assert ((y == 0) | torch.isclose(y, x / (1 - quantized_drop_probability(0.1)))).all()
    assert isinstance(Mlp(8, 16, drop=0.1).drop1, Dropout)

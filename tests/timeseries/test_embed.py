"""Embeddings of the TSLib family: shapes, parameter counts, frequency aliases, token conv circularity."""

from __future__ import annotations

import math

import pytest
import torch

from formers.timeseries.models.embed import (
    DataEmbedding,
    DataEmbedding_inverted,
    DataEmbedding_wo_pos,
    PositionalEmbedding,
    TemporalEmbedding,
    TokenEmbedding,
    time_feature_dim,
)


@pytest.mark.parametrize(
    ("freq", "dim"),
    [("h", 4), ("H", 4), ("t", 5), ("min", 5), ("15min", 5), ("s", 6), ("m", 1), ("ME", 1), ("a", 0), ("Y", 0)]
    + [("q", 1), ("QE", 1), ("w", 2), ("W-SUN", 2), ("d", 3), ("b", 3)],
)
def test_time_feature_dim(freq, dim):
    assert time_feature_dim(freq) == dim


def test_time_feature_dim_rejects_unknown():
    with pytest.raises(ValueError, match="unknown freq 'x'"):
        time_feature_dim("x")
    with pytest.raises(TypeError, match="freq must be a string"):
        time_feature_dim(4)


def test_positional_embedding_matches_reference_formula():
    d_model = 8
    pe = PositionalEmbedding(d_model)(torch.zeros(1, 5, 3))[0]
    pos = torch.arange(5.0)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
    expected = torch.zeros(5, d_model)
    expected[:, 0::2], expected[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    torch.testing.assert_close(pe, expected)


def test_token_embedding_is_circular_conv():
    emb = TokenEmbedding(3, 4)
    x = torch.randn(2, 10, 3)
    out = emb(x)
    assert out.shape == (2, 10, 4)
    padded = torch.cat([x[:, -1:], x, x[:, :1]], dim=1).transpose(1, 2)
    torch.testing.assert_close(out, torch.nn.functional.conv1d(padded, emb.token_conv.weight).transpose(1, 2))


def test_data_embedding_parameter_counts():
    """timeF, 7 variates, d_model 512: token conv 7*512*3 + time linear 4*512, no bias, no positional parameters."""
    assert sum(p.numel() for p in DataEmbedding(7, 512).parameters()) == 12_800
    assert sum(p.numel() for p in DataEmbedding_wo_pos(7, 512).parameters()) == 12_800
    assert sum(p.numel() for p in DataEmbedding_inverted(96, 256).parameters()) == 96 * 256 + 256


def test_data_embedding_without_position_differs_by_the_table():
    torch.manual_seed(0)
    with_pos, wo_pos = DataEmbedding(3, 8, dropout=0.0), DataEmbedding_wo_pos(3, 8, dropout=0.0)
    wo_pos.load_state_dict(with_pos.state_dict())
    x, marks = torch.randn(2, 6, 3), torch.rand(2, 6, 4)
    diff = with_pos(x, marks) - wo_pos(x, marks)
    torch.testing.assert_close(diff, PositionalEmbedding(8)(x).expand(2, -1, -1))


@pytest.mark.parametrize(("embed", "trainable"), [("fixed", 0), ("learned", (13 + 32 + 7 + 24) * 8)])
def test_temporal_embedding(embed, trainable):
    emb = TemporalEmbedding(8, embed, "h")
    assert sum(p.numel() for p in emb.parameters()) == trainable
    marks = torch.tensor([[[12, 31, 6, 23]]])
    assert emb(marks).shape == (1, 1, 8)
    assert TemporalEmbedding(8, embed, "t").num_marks == 5


def test_inverted_embedding_tokens():
    emb = DataEmbedding_inverted(12, 8)
    assert emb(torch.randn(2, 12, 5), torch.rand(2, 12, 4)).shape == (2, 9, 8)
    assert emb(torch.randn(2, 12, 5)).shape == (2, 5, 8)


@pytest.mark.parametrize("freq", ["h", "min", "s", "ME", "QE", "YE", "W", "D", "B", "t", "m", "a", "Y", "q", "15min"])
def test_model_time_feature_dim_matches_the_data_pipeline(freq):
    """The models' feature count per frequency equals what the data module builds (yearly: none, as gluonts)."""
    from formers.timeseries.timefeatures import num_time_features

    assert time_feature_dim(freq) == num_time_features(freq)

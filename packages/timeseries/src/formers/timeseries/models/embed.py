"""Input embeddings of the Time-Series-Library family (``layers/Embed.py`` of TSLib, Informer2020 and Autoformer).

* :class:`TokenEmbedding`: circular Conv1d (k=3, no bias) over the variates of each time step.
* :class:`PositionalEmbedding`: fixed sinusoidal table (Vaswani et al. 2017), interleaved sin/cos.
* :class:`TimeFeatureEmbedding`: ``embed='timeF'``: a bias-free linear map of the continuous timestamp features.
* :class:`TemporalEmbedding`: ``embed='fixed'|'learned'``: integer [month, day, weekday, hour(, minute)] tables.
* :class:`DataEmbedding` (Informer), :class:`DataEmbedding_wo_pos` (Autoformer), :class:`DataEmbedding_inverted`
  (iTransformer: one token per variate).

``freq`` accepts the old pandas letters ('h', 't', 'm', 'a', ...) and the current aliases ('min', 'ME', 'Y', ...);
pandas 3 rejects the old ones, so the data pipeline may pass either.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from formers.core.layers import Dropout, sinusoidal_embedding

__all__ = [
    "time_feature_dim",
    "TokenEmbedding",
    "PositionalEmbedding",
    "FixedEmbedding",
    "TemporalEmbedding",
    "TimeFeatureEmbedding",
    "DataEmbedding",
    "DataEmbedding_wo_pos",
    "DataEmbedding_inverted",
    "build_temporal_embedding",
]

# Number of timeF features per base frequency, keyed by canonical name: what formers.timeseries.timefeatures (gluonts)
# builds. TSLib's ``freq_map`` says 1 for yearly data but its features are empty there (a shape error in TSLib).
_FREQ_DIMS = {"h": 4, "min": 5, "s": 6, "month": 1, "quarter": 1, "year": 0, "w": 2, "d": 3, "b": 3}
_FREQ_ALIASES = {
    "h": "h",
    "H": "h",
    "t": "min",
    "T": "min",
    "min": "min",
    "s": "s",
    "S": "s",
    "m": "month",
    "M": "month",
    "ME": "month",
    "MS": "month",
    "q": "quarter",
    "Q": "quarter",
    "QE": "quarter",
    "QS": "quarter",
    "a": "year",
    "A": "year",
    "y": "year",
    "Y": "year",
    "YE": "year",
    "YS": "year",
    "w": "w",
    "W": "w",
    "d": "d",
    "D": "d",
    "b": "b",
    "B": "b",
}
_EMBED_TYPES = ("timeF", "fixed", "learned")


def _canonical_freq(freq: str) -> str:
    if not isinstance(freq, str):
        raise TypeError(f"freq must be a string such as 'h' or 'min', got {type(freq).__name__}")
    # '15min' -> 'min', 'W-SUN' -> 'W': the feature set depends on the base unit only (gluonts' to_offset).
    base = re.sub(r"^\d+", "", freq.strip()).split("-")[0]
    if base not in _FREQ_ALIASES:
        raise ValueError(f"unknown freq {freq!r}; expected one of {sorted(_FREQ_ALIASES)} (optionally with a multiple)")
    return _FREQ_ALIASES[base]


def time_feature_dim(freq: str) -> int:
    """Number of ``timeF`` features for ``freq`` ('h' -> 4, 'min'/'t' -> 5, 's' -> 6, 'ME'/'m' -> 1, ...)."""
    return _FREQ_DIMS[_canonical_freq(freq)]


class TokenEmbedding(nn.Module):
    """Value embedding: Conv1d(c_in, d_model, k=3, circular padding 1, no bias) along time, Kaiming-normal init.

    Shapes:
        - x: ``(batch, length, c_in)`` -> ``(batch, length, d_model)``
    """

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        # Padding 1 (not the reference's version-string-dependent 2) keeps the length, as on modern torch.
        self.token_conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.token_conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.token_conv(x.transpose(1, 2)).transpose(1, 2)


class PositionalEmbedding(nn.Module):
    """Fixed sinusoidal position table (not a parameter); returns ``(1, length, d_model)`` for broadcasting."""

    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_embedding(torch.arange(max_len), d_model)[None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"PositionalEmbedding: length {x.shape[1]} exceeds max_len {self.pe.shape[1]}")
        return self.pe[:, : x.shape[1]]


class FixedEmbedding(nn.Module):
    """Frozen sinusoidal lookup table of ``c_in`` integer values (TSLib ``FixedEmbedding``), kept as a buffer."""

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("weight", sinusoidal_embedding(torch.arange(c_in), d_model), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.embedding(x, self.weight)


class TemporalEmbedding(nn.Module):
    """Sum of per-field embeddings of integer time marks ``[month, day, weekday, hour(, minute // 15)]``.

    ``embed_type='fixed'`` uses frozen sinusoidal tables, ``'learned'`` trainable :class:`torch.nn.Embedding`;
    the minute table (size 4: quarter hours) exists for minute frequencies only, as in TSLib.
    """

    sizes = {"month": 13, "day": 32, "weekday": 7, "hour": 24, "minute": 4}

    def __init__(self, d_model: int, embed_type: str = "fixed", freq: str = "h") -> None:
        super().__init__()
        table = FixedEmbedding if embed_type == "fixed" else nn.Embedding
        self.fields = ["month", "day", "weekday", "hour"] + (["minute"] if _canonical_freq(freq) == "min" else [])
        self.tables = nn.ModuleDict({f: table(self.sizes[f], d_model) for f in self.fields})

    @property
    def num_marks(self) -> int:
        return len(self.fields)

    def forward(self, x_mark: Tensor) -> Tensor:
        x_mark = x_mark.long()
        return sum(self.tables[f](x_mark[..., i]) for i, f in enumerate(self.fields))


class TimeFeatureEmbedding(nn.Module):
    """``embed='timeF'``: ``Linear(n_time_features(freq), d_model, bias=False)`` on continuous features."""

    def __init__(self, d_model: int, freq: str = "h") -> None:
        super().__init__()
        self.num_marks = time_feature_dim(freq)
        self.embed = nn.Linear(self.num_marks, d_model, bias=False)

    def forward(self, x_mark: Tensor) -> Tensor:
        return self.embed(x_mark.to(self.embed.weight.dtype))  # e.g. float64 marks from pandas


def build_temporal_embedding(d_model: int, embed: str, freq: str) -> TimeFeatureEmbedding | TemporalEmbedding:
    """The time-mark embedding of ``embed`` ('timeF', 'fixed' or 'learned')."""
    if embed not in _EMBED_TYPES:
        raise ValueError(f"embed must be one of {_EMBED_TYPES}, got {embed!r}")
    if embed == "timeF":
        return TimeFeatureEmbedding(d_model, freq)
    return TemporalEmbedding(d_model, embed, freq)


class DataEmbedding(nn.Module):
    """Informer's embedding: token + positional (+ temporal when ``x_mark`` is given), then dropout.

    Shapes:
        - x: ``(batch, length, c_in)``; x_mark: ``(batch, length, num_marks)`` or ``None``
        - output: ``(batch, length, d_model)``
    """

    def __init__(self, c_in: int, d_model: int, embed: str = "timeF", freq: str = "h", dropout: float = 0.1) -> None:
        super().__init__()
        self.value_embedding = TokenEmbedding(c_in, d_model)
        self.position_embedding = PositionalEmbedding(d_model)
        self.temporal_embedding = build_temporal_embedding(d_model, embed, freq)
        self.dropout = Dropout(dropout)

    @property
    def num_marks(self) -> int:
        return self.temporal_embedding.num_marks

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        out = self.value_embedding(x) + self.position_embedding(x).to(x.dtype)
        if x_mark is not None:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)


class DataEmbedding_wo_pos(DataEmbedding):  # noqa: N801 - the reference name, kept for recognisability
    """Autoformer's embedding: :class:`DataEmbedding` without the positional term."""

    def __init__(self, c_in: int, d_model: int, embed: str = "timeF", freq: str = "h", dropout: float = 0.1) -> None:
        super().__init__(c_in, d_model, embed, freq, dropout)
        del self.position_embedding

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        out = self.value_embedding(x)
        if x_mark is not None:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)


class DataEmbedding_inverted(nn.Module):  # noqa: N801
    """iTransformer's embedding: each variate's whole series ``(seq_len,)`` is one token, ``Linear(seq_len, d_model)``.

    Time marks, when given, become extra tokens (one per feature), so the output has ``N + num_marks`` tokens.

    Shapes:
        - x: ``(batch, seq_len, N)``; x_mark: ``(batch, seq_len, num_marks)`` or ``None``
        - output: ``(batch, N (+ num_marks), d_model)``
    """

    def __init__(self, seq_len: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.value_embedding = nn.Linear(seq_len, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        tokens = x if x_mark is None else torch.cat([x, x_mark.to(x.dtype)], dim=-1)
        return self.dropout(self.value_embedding(tokens.transpose(1, 2)))

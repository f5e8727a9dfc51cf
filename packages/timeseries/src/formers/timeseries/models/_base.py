"""Pieces shared by the forecasting models: the input contract (:class:`Forecaster`) and the post-LN encoder layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from formers.core.layers import Dropout, Mlp
from formers.core.models import FormersModel, check_input

__all__ = ["Forecaster", "EncoderLayer", "check_positive"]


def check_positive(owner: str, **values: int) -> None:
    """Raise ``ValueError`` naming the first non-positive (or non-integer) size among ``values``."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


class Forecaster(FormersModel):
    """Base of the TSLib-style forecasters: ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec) -> (B, pred_len, c_out)``.

    Subclasses set ``seq_len``, ``label_len``, ``pred_len``, ``enc_in``, ``dec_in``, ``c_out``, ``num_marks``
    (time features per step), ``integer_marks`` (``embed`` fixed/learned accepts integer marks) and ``uses_decoder``.
    """

    seq_len: int
    label_len: int
    pred_len: int
    enc_in: int
    dec_in: int
    c_out: int
    num_marks: int
    integer_marks: bool = False
    uses_decoder: bool = True

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.pred_len, self.c_out)

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch laid out as the data pipeline builds it (x_dec = last label_len steps, then zeros)."""
        device = self.device
        dec_len = self.label_len + self.pred_len
        x_enc = torch.randn(batch_size, self.seq_len, self.enc_in, device=device)
        marks = torch.rand(batch_size, self.seq_len + self.pred_len, self.num_marks, device=device) - 0.5
        if self.integer_marks:  # valid indices of every table (month 13, day 32, weekday 7, hour 24, minute 4)
            marks = torch.randint(0, 4, marks.shape, device=device)
        x_dec = torch.zeros(batch_size, dec_len, self.dec_in, device=device)
        if self.label_len:
            x_dec[:, : self.label_len] = torch.randn(batch_size, self.label_len, self.dec_in, device=device)
        if not self.uses_decoder:
            return {"x_enc": x_enc, "x_mark_enc": marks[:, : self.seq_len]}
        return {
            "x_enc": x_enc,
            "x_mark_enc": marks[:, : self.seq_len],
            "x_dec": x_dec,
            "x_mark_dec": marks[:, self.seq_len - self.label_len :],
        }

    def _check_inputs(
        self, x_enc: Tensor, x_mark_enc: Tensor | None, x_dec: Tensor | None, x_mark_dec: Tensor | None
    ) -> Tensor | None:
        """Validate shapes and dtypes; returns ``x_dec``, built from ``x_enc`` when ``None`` (decoder models only)."""
        name = type(self).__name__
        check_input(f"{name}: x_enc", x_enc, ndim=3, floating=True, dims="(batch, seq_len, enc_in)")
        batch = x_enc.shape[0]
        self._check_shape(f"{name}: x_enc", x_enc, (batch, self.seq_len, self.enc_in), "(batch, seq_len, enc_in)")
        self._check_marks(f"{name}: x_mark_enc", x_mark_enc, batch, self.seq_len)
        if not self.uses_decoder:  # ignored inputs: still reject a malformed batch (a pipeline bug) early
            if x_dec is not None:
                check_input(f"{name}: x_dec", x_dec, ndim=3, floating=True, dims="(batch, length, dec_in)")
            if x_mark_dec is not None:
                self._check_marks(f"{name}: x_mark_dec", x_mark_dec, batch, None)
            return None
        dec_len = self.label_len + self.pred_len
        if x_dec is None:
            if self.dec_in != self.enc_in:
                raise ValueError(f"{name}: x_dec is required when dec_in ({self.dec_in}) != enc_in ({self.enc_in})")
            start = x_enc[:, self.seq_len - self.label_len :]
            x_dec = torch.cat([start, x_enc.new_zeros(batch, self.pred_len, self.enc_in)], dim=1)
        layout = "(batch, label_len + pred_len, dec_in)"
        check_input(f"{name}: x_dec", x_dec, ndim=3, floating=True, dims=layout)
        self._check_shape(f"{name}: x_dec", x_dec, (batch, dec_len, self.dec_in), layout)
        self._check_marks(f"{name}: x_mark_dec", x_mark_dec, batch, dec_len)
        if (x_mark_enc is None) != (x_mark_dec is None):
            raise ValueError(f"{name}: pass both x_mark_enc and x_mark_dec, or neither")
        return x_dec

    def _check_marks(self, what: str, marks: Tensor | None, batch: int, length: int | None) -> None:
        """Rank, dtype and shape of time marks; ``length=None`` accepts any length."""
        if marks is None:
            return
        check_input(what, marks, ndim=3, dims="(batch, length, n_time_features)")
        if not marks.is_floating_point() and not self.integer_marks:
            raise TypeError(f"{what} must be a floating tensor (embed='timeF' features), got {marks.dtype}")
        expected = (batch, marks.shape[1] if length is None else length, self.num_marks)
        self._check_shape(what, marks, expected, "(batch, length, n_time_features)")

    @staticmethod
    def _check_shape(what: str, x: Tensor, expected: tuple[int, ...], layout: str) -> None:
        if tuple(x.shape) != expected:
            raise ValueError(f"{what} must have shape {expected} {layout}, got {tuple(x.shape)}")


class EncoderLayer(nn.Module):
    """Post-LN transformer layer of TSLib: ``x = norm1(x + drop(attn(x)))``, ``x = norm2(x + ffn(x))``.

    The reference's position-wise 1x1 convolutions are :class:`formers.core.layers.Mlp` linears (same parameters,
    no transposes). ``attention`` is any module called as ``attention(x) -> (batch, length, d_model)``.
    """

    def __init__(
        self, attention: nn.Module, d_model: int, d_ff: int, dropout: float = 0.1, activation: str = "gelu"
    ) -> None:
        super().__init__()
        self.attention = attention
        self.dropout = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = Mlp(d_model, d_ff, act_layer=activation, drop=dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, num_queries: int | None = None) -> Tensor:
        """``num_queries``: compute the first ``num_queries`` rows only (every token still a key and value; the
        attention must take ``num_queries``, as :class:`~formers.core.layers.MultiHeadAttention` does)."""
        if num_queries is None:
            x = self.norm1(x + self.dropout(self.attention(x)))
        else:
            x = self.norm1(x[:, :num_queries] + self.dropout(self.attention(x, num_queries=num_queries)))
        return self.norm2(x + self.ffn(x))

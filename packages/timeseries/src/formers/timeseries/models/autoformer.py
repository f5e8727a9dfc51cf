"""Autoformer (Wu et al., NeurIPS 2021, arXiv 2106.13008): decomposition transformer with Auto-Correlation.

Follows TSLib ``models/Autoformer.py`` (identical to thuml/Autoformer apart from formatting):

* the input is split into seasonal and trend parts by a moving average (:mod:`.decomposition`);
* the decoder gets ``[seasonal(x_enc)[-label_len:]; zeros(H)]`` (embedded) and accumulates the trend, starting from
  ``[trend(x_enc)[-label_len:]; mean(x_enc) repeated H]``; every decoder layer adds the projection of the trends its
  three decompositions removed;
* every layer decomposes after each residual sum and keeps only the seasonal part; feed-forward convs have no bias;
* no positional embedding (``DataEmbedding_wo_pos``); seasonal LayerNorm (:class:`SeasonalLayerNorm`);
* the decoder self-Auto-Correlation is unmasked (as in the reference: the future half of its input is zeros).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from formers.core.layers import Dropout, Mlp
from formers.core.registry import register_model
from formers.timeseries.models._base import Forecaster, check_positive
from formers.timeseries.models.auto_correlation import AutoCorrelationLayer
from formers.timeseries.models.decomposition import SeasonalLayerNorm, SeriesDecomp
from formers.timeseries.models.embed import DataEmbedding_wo_pos

__all__ = ["Autoformer", "AutoformerEncoderLayer", "AutoformerDecoderLayer", "autoformer"]


class AutoformerEncoderLayer(nn.Module):
    """``x = decomp(x + drop(AutoCorr(x)))``, ``x = decomp(x + FFN(x))``; the trends are discarded."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, factor: float, moving_avg: int, dropout: float, activation: str
    ) -> None:
        super().__init__()
        self.attention = AutoCorrelationLayer(d_model, n_heads, factor)
        self.ffn = Mlp(d_model, d_ff, act_layer=activation, bias=False, drop=dropout)
        self.decomp1 = SeriesDecomp(moving_avg)
        self.decomp2 = SeriesDecomp(moving_avg)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x, _ = self.decomp1(x + self.dropout(self.attention(x)))
        x, _ = self.decomp2(x + self.ffn(x))
        return x


class AutoformerDecoderLayer(nn.Module):
    """Self- and cross-Auto-Correlation and FFN, each followed by a decomposition; returns (seasonal, trend delta).

    The three removed trends are summed and projected to ``c_out`` by a circular Conv1d (k=3, no bias).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        c_out: int,
        factor: float,
        moving_avg: int,
        dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.self_attention = AutoCorrelationLayer(d_model, n_heads, factor)
        self.cross_attention = AutoCorrelationLayer(d_model, n_heads, factor)
        self.ffn = Mlp(d_model, d_ff, act_layer=activation, bias=False, drop=dropout)
        self.decomp1 = SeriesDecomp(moving_avg)
        self.decomp2 = SeriesDecomp(moving_avg)
        self.decomp3 = SeriesDecomp(moving_avg)
        self.dropout = Dropout(dropout)
        self.projection = nn.Conv1d(d_model, c_out, kernel_size=3, padding=1, padding_mode="circular", bias=False)

    def forward(self, x: Tensor, cross: Tensor) -> tuple[Tensor, Tensor]:
        x, trend1 = self.decomp1(x + self.dropout(self.self_attention(x)))
        x, trend2 = self.decomp2(x + self.dropout(self.cross_attention(x, cross)))
        x, trend3 = self.decomp3(x + self.ffn(x))
        return x, self._project_trend(trend1 + trend2 + trend3)

    def _project_trend(self, trend: Tensor) -> Tensor:
        """``self.projection`` (circular Conv1d, k=3) in the time-major layout: one matmul to the 3 taps' outputs,
        then ``y[t] = z_0[t-1] + z_1[t] + z_2[t+1]``, sparing the (B, d_model, L) transposes of a Conv1d."""
        c_out = self.projection.out_channels
        taps = trend @ self.projection.weight.permute(1, 2, 0).flatten(1)  # (B, L, 3 * c_out), tap-major
        prev, center, nxt = taps.split(c_out, dim=-1)
        return prev.roll(1, dims=1) + center + nxt.roll(-1, dims=1)


class Autoformer(Forecaster):
    """Autoformer forecaster.

    ``x_dec`` is validated but, as in the reference, only its shape matters: the decoder input is rebuilt from the
    decomposition of ``x_enc`` (hence ``dec_in`` must equal ``enc_in``). ``c_out`` is ``enc_in`` (multivariate) or
    1: the reference then broadcasts the 1-channel seasonal output onto the ``enc_in``-channel trend and the
    experiment keeps the last channel (the target in the TSLib layout), which is what is returned.

    Shapes:
        - x_enc: ``(B, seq_len, enc_in)``; x_mark_enc: ``(B, seq_len, n_tf)`` or ``None``
        - x_dec: ``(B, label_len + pred_len, dec_in)`` or ``None``; x_mark_dec: ``(B, label_len + pred_len, n_tf)``
        - output: ``(B, pred_len, c_out)``
    """

    def __init__(
        self,
        seq_len: int = 96,
        label_len: int = 48,
        pred_len: int = 96,
        enc_in: int = 7,
        dec_in: int = 7,
        c_out: int = 7,
        d_model: int = 512,
        n_heads: int = 8,
        e_layers: int = 2,
        d_layers: int = 1,
        d_ff: int = 2048,
        factor: float = 3,
        moving_avg: int = 25,
        dropout: float = 0.1,
        embed: str = "timeF",
        freq: str = "h",
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        check_positive("Autoformer", seq_len=seq_len, label_len=label_len, pred_len=pred_len, enc_in=enc_in)
        check_positive("Autoformer", dec_in=dec_in, c_out=c_out, d_model=d_model, n_heads=n_heads, d_ff=d_ff)
        check_positive("Autoformer", e_layers=e_layers, d_layers=d_layers)
        if label_len > seq_len:
            raise ValueError(f"Autoformer: label_len ({label_len}) cannot exceed seq_len ({seq_len})")
        if dec_in != enc_in:
            raise ValueError(f"Autoformer: dec_in ({dec_in}) must equal enc_in ({enc_in}); the decoder reads x_enc")
        if c_out not in (enc_in, 1):
            raise ValueError(f"Autoformer: c_out must be enc_in ({enc_in}) or 1, got {c_out}")
        if not factor > 0:
            raise ValueError(f"Autoformer: factor must be positive, got {factor}")
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.enc_in, self.dec_in, self.c_out = enc_in, dec_in, c_out
        self.decomp = SeriesDecomp(moving_avg)
        self.enc_embedding = DataEmbedding_wo_pos(enc_in, d_model, embed, freq, dropout)
        self.dec_embedding = DataEmbedding_wo_pos(dec_in, d_model, embed, freq, dropout)
        self.num_marks = self.enc_embedding.num_marks
        self.integer_marks = embed != "timeF"
        layer_args = (d_model, n_heads, d_ff)
        self.encoder = nn.ModuleList(
            AutoformerEncoderLayer(*layer_args, factor, moving_avg, dropout, activation) for _ in range(e_layers)
        )
        self.encoder_norm = SeasonalLayerNorm(d_model)
        self.decoder = nn.ModuleList(
            AutoformerDecoderLayer(*layer_args, c_out, factor, moving_avg, dropout, activation) for _ in range(d_layers)
        )
        self.decoder_norm = SeasonalLayerNorm(d_model)
        self.projection = nn.Linear(d_model, c_out)

    def forward(
        self,
        x_enc: Tensor,
        x_mark_enc: Tensor | None = None,
        x_dec: Tensor | None = None,
        x_mark_dec: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(x_enc, x_mark_enc, x_dec, x_mark_dec)
        # decomposition init of the decoder: seasonal -> zeros, trend -> the input mean over the horizon
        seasonal_init, trend_init = self.decomp(x_enc)
        mean = x_enc.mean(dim=1, keepdim=True).expand(-1, self.pred_len, -1)
        trend = torch.cat([trend_init[:, -self.label_len :], mean], dim=1)
        seasonal = torch.cat([seasonal_init[:, -self.label_len :], torch.zeros_like(mean)], dim=1)

        enc_out = self.enc_embedding(x_enc, x_mark_enc)
        for layer in self.encoder:
            enc_out = layer(enc_out)
        enc_out = self.encoder_norm(enc_out)

        dec_out = self.dec_embedding(seasonal, x_mark_dec)
        for layer in self.decoder:
            dec_out, residual_trend = layer(dec_out, enc_out)
            trend = trend + residual_trend
        seasonal_part = self.projection(self.decoder_norm(dec_out))
        out = trend + seasonal_part  # c_out = 1 broadcasts onto the enc_in trend channels, as in the reference
        return out[:, -self.pred_len :, -self.c_out :]


@register_model(
    name="autoformer",
    paper="Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term Series Forecasting "
    "(Wu et al., NeurIPS 2021)",
    test_kwargs={
        "seq_len": 24,
        "label_len": 12,
        "pred_len": 8,
        "d_model": 16,
        "d_ff": 32,
        "n_heads": 2,
        "moving_avg": 5,
    },
)
def autoformer(*, distil: bool = True, **kwargs: Any) -> Autoformer:
    """Autoformer at the TSLib ETTh1 script configuration by default (10,535,943 parameters); keyword arguments are
    :class:`Autoformer`'s (the defaults live there).

    ``distil`` is accepted so that one TSLib-style configuration serves every forecaster; Autoformer has no
    distilling (TSLib ignores it too).
    """
    del distil
    return Autoformer(**kwargs)

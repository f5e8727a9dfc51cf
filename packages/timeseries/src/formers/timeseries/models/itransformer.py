"""iTransformer (Liu et al., ICLR 2024, arXiv 2310.06625): attention across variates instead of across time.

Each variate's whole look-back window is one token (``Linear(seq_len, d_model)``); the timeF features of the window
become extra tokens. A plain post-LN encoder (full attention, no mask, no positional embedding) mixes the tokens,
``Linear(d_model, pred_len)`` maps each token to the horizon, and the time-feature tokens are dropped. The series are
normalized per window and per channel (mean, std over time; Non-stationary Transformer's "series stationarization")
and de-normalized exactly afterwards. Follows thuml/iTransformer ``model/iTransformer.py`` (``use_norm=1``,
``class_strategy=projection``), which TSLib copies.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from formers.core.layers import MultiHeadAttention
from formers.core.registry import register_model
from formers.timeseries.models._base import EncoderLayer, Forecaster, check_positive
from formers.timeseries.models.embed import DataEmbedding_inverted, build_temporal_embedding

__all__ = ["ITransformer", "itransformer"]


class ITransformer(Forecaster):
    """iTransformer forecaster (no decoder: ``label_len``, ``x_dec`` and ``x_mark_dec`` are ignored).

    The output holds the last ``c_out`` variates of the input (``c_out == enc_in`` for multivariate forecasting;
    ``c_out=1`` returns the target, which the TSLib data layout puts last).

    Shapes:
        - x_enc: ``(batch, seq_len, enc_in)``; x_mark_enc: ``(batch, seq_len, n_time_features)`` or ``None``
        - output: ``(batch, pred_len, c_out)``
    """

    uses_decoder = False

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        enc_in: int = 7,
        c_out: int = 7,
        d_model: int = 256,
        n_heads: int = 8,
        e_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.1,
        activation: str = "gelu",
        embed: str = "timeF",
        freq: str = "h",
        use_norm: bool = True,
        label_len: int = 48,
        dec_in: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("ITransformer", seq_len=seq_len, pred_len=pred_len, enc_in=enc_in, c_out=c_out)
        check_positive("ITransformer", d_model=d_model, n_heads=n_heads, e_layers=e_layers, d_ff=d_ff)
        if c_out > enc_in:
            raise ValueError(f"ITransformer: c_out ({c_out}) cannot exceed enc_in ({enc_in}); it forecasts its inputs")
        if embed != "timeF":
            raise ValueError(f"ITransformer: time features become tokens, so embed must be 'timeF', got {embed!r}")
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.enc_in, self.dec_in, self.c_out = enc_in, dec_in or enc_in, c_out
        self.num_marks = build_temporal_embedding(2, embed, freq).num_marks  # validates freq
        self.use_norm = use_norm
        self.enc_embedding = DataEmbedding_inverted(seq_len, d_model, dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(MultiHeadAttention(d_model, n_heads, attn_drop=dropout), d_model, d_ff, dropout, activation)
            for _ in range(e_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.projector = nn.Linear(d_model, pred_len)

    def forward(
        self,
        x_enc: Tensor,
        x_mark_enc: Tensor | None = None,
        x_dec: Tensor | None = None,
        x_mark_dec: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(x_enc, x_mark_enc, x_dec, x_mark_dec)
        if self.use_norm:
            # Mean is detached, std is not (as in the reference); 1e-5 keeps constant series finite.
            means = x_enc.mean(1, keepdim=True).detach()
            x_enc = x_enc - means
            stdev = (x_enc.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
            x_enc = x_enc / stdev
        tokens = self.enc_embedding(x_enc, x_mark_enc)  # (B, N + n_marks, d_model): the N variates first
        for layer in self.layers[:-1]:
            tokens = layer(tokens)
        # the time-feature tokens are dropped at the output, so the last layer computes the N variate rows only (they
        # still attend to the time-feature tokens): the reference's outputs, without its discarded rows
        tokens = self.layers[-1](tokens, num_queries=self.enc_in)
        out = self.projector(self.norm(tokens)).transpose(1, 2)  # (B, pred_len, N)
        if self.use_norm:
            out = out * stdev + means
        return out[:, :, self.enc_in - self.c_out :]


@register_model(
    name="itransformer",
    paper="iTransformer: Inverted Transformers Are Effective for Time Series Forecasting (Liu et al., ICLR 2024)",
    test_kwargs={"seq_len": 24, "label_len": 12, "pred_len": 8, "d_model": 16, "d_ff": 32, "n_heads": 2},
)
def itransformer(
    *, factor: int = 1, d_layers: int = 1, moving_avg: int = 25, distil: bool = True, **kwargs: Any
) -> ITransformer:
    """iTransformer at the official ETTh1 (H = 96/192) configuration by default; keyword arguments are
    :class:`ITransformer`'s (the defaults live there): d_model = d_ff = 256, 2 layers.

    ``label_len``, ``dec_in``, ``factor``, ``d_layers``, ``moving_avg`` and ``distil`` are accepted so that one
    TSLib-style configuration serves every forecaster, and are unused here (no decoder, no decomposition, no
    distilling; the reference's FullAttention ignores ``factor``).
    """
    del factor, d_layers, moving_avg, distil
    return ITransformer(**kwargs)

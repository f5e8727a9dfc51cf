"""Informer (Zhou et al., AAAI 2021, arXiv 2012.07436): ProbSparse attention, distilling, generative decoder.

Convention: **Informer2020** (the paper's code, zhouhaoyi/Informer2020 ``models/model.py``), which gives the same
parameter count as TSLib (11,328,007 at the ETTh1 configuration):

* encoder: ProbSparse self-attention layers (post-LN, GELU FFN), with a distilling ``ConvLayer`` between consecutive
  layers: Conv1d(k=3, circular, **padding 1**) -> BatchNorm -> ELU -> MaxPool(k=3, s=2, p=1), so 96 -> 48;
* decoder: causal ProbSparse self-attention with the ``mix`` output layout, **full** cross-attention (no mix);
* embedding: token Conv1d + sinusoidal position + time features; the decoder input is ``[x_enc[-label_len:]; 0]``
  and the whole horizon comes out of one forward pass (no autoregression); projection ``Linear(d_model, c_out)``.

TSLib's Informer differs in three ways: distil conv padding 2 (96 -> 49), ProbSparse cross-attention, and the "mix"
layout in every ProbSparse layer (its ProbAttention returns ``(B, H, L, D)``, which its AttentionLayer flattens
directly). ``attn='full'`` swaps ProbSparse for full attention (Informer2020's ``--attn full``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from formers.core.layers import Dropout, Mlp
from formers.core.registry import register_model
from formers.timeseries.models._base import EncoderLayer, Forecaster, check_positive
from formers.timeseries.models.embed import DataEmbedding
from formers.timeseries.models.prob_attention import InformerAttention

__all__ = ["Informer", "DistilConv", "InformerDecoderLayer", "informer"]


class DistilConv(nn.Module):
    """Self-attention distilling: Conv1d(k=3, circular) -> BatchNorm1d -> ELU -> MaxPool1d(3, 2, 1); halves L.

    Output length ``⌊(L - 1) / 2⌋ + 1`` (96 -> 48) with Informer2020's padding 1.

    Shapes:
        - x: ``(B, L, d_model)`` -> ``(B, ⌊(L - 1) / 2⌋ + 1, d_model)``
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.down_conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(channels)
        self.activation = nn.ELU()
        self.max_pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(self.norm(self.down_conv(x.transpose(1, 2))))
        return self.max_pool(x).transpose(1, 2)


class InformerDecoderLayer(nn.Module):
    """Post-LN decoder layer: self-attention, cross-attention onto the encoder output, FFN (Informer2020)."""

    def __init__(
        self, self_attention: nn.Module, cross_attention: nn.Module, d_model: int, d_ff: int, dropout: float, act: str
    ) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attention = cross_attention
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = Mlp(d_model, d_ff, act_layer=act, drop=dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, cross: Tensor, keep_last: int | None = None) -> Tensor:
        """``keep_last``: compute only the last ``keep_last`` output positions. Past the self-attention everything is
        position-wise, so the forecast positions of the last layer need nothing of the other rows (the label part):
        the same outputs for ~1/3 fewer decoder FLOPs at the paper's 48 + 96."""
        attended = self.self_attention(x, keep_last=keep_last)
        if keep_last is not None:
            x = x[:, x.shape[1] - keep_last :]
        x = self.norm1(x + self.dropout(attended))
        x = self.norm2(x + self.dropout(self.cross_attention(x, cross)))
        return self.norm3(x + self.ffn(x))


class Informer(Forecaster):
    """Informer forecaster (see the module docstring for the convention).

    Shapes:
        - x_enc: ``(B, seq_len, enc_in)``; x_mark_enc: ``(B, seq_len, n_tf)`` or ``None``
        - x_dec: ``(B, label_len + pred_len, dec_in)``, built from ``x_enc`` when ``None``;
          x_mark_dec: ``(B, label_len + pred_len, n_tf)`` or ``None``
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
        factor: int = 3,
        dropout: float = 0.1,
        embed: str = "timeF",
        freq: str = "h",
        activation: str = "gelu",
        distil: bool = True,
        attn: str = "prob",
        mix: bool = True,
        eval_sample_seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_positive("Informer", seq_len=seq_len, pred_len=pred_len, enc_in=enc_in, dec_in=dec_in, c_out=c_out)
        check_positive("Informer", d_model=d_model, n_heads=n_heads, d_ff=d_ff, e_layers=e_layers, d_layers=d_layers)
        check_positive("Informer", factor=factor)
        if not isinstance(label_len, int) or not 0 <= label_len <= seq_len:
            raise ValueError(f"Informer: label_len must be an integer in [0, seq_len={seq_len}], got {label_len!r}")
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.enc_in, self.dec_in, self.c_out = enc_in, dec_in, c_out
        self.enc_embedding = DataEmbedding(enc_in, d_model, embed, freq, dropout)
        self.dec_embedding = DataEmbedding(dec_in, d_model, embed, freq, dropout)
        self.num_marks = self.enc_embedding.num_marks
        self.integer_marks = embed != "timeF"

        def attention(kind: str, **kwargs) -> InformerAttention:
            return InformerAttention(
                d_model, n_heads, kind, factor=factor, dropout=dropout, eval_sample_seed=eval_sample_seed, **kwargs
            )

        self.encoder = nn.ModuleList(
            EncoderLayer(attention(attn), d_model, d_ff, dropout, activation) for _ in range(e_layers)
        )
        self.distil = nn.ModuleList(DistilConv(d_model) for _ in range(e_layers - 1)) if distil else None
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            InformerDecoderLayer(
                attention(attn, causal=True, mix=mix), attention("full"), d_model, d_ff, dropout, activation
            )
            for _ in range(d_layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, c_out)
        self.prepare_eval_samples()

    def prepare_eval_samples(self) -> None:
        """Draw the seeded eval key sample of every ProbSparse layer for this model's lengths (seq_len, halved at
        each distilling step; label_len + pred_len in the decoder), so eval forwards and ``torch.export`` reuse it.
        Call it again after changing a layer's ``eval_sample_seed`` if the model is to be exported."""
        length = self.seq_len
        for i, layer in enumerate(self.encoder):
            layer.attention.prepare_eval_sample(length, length)
            if self.distil is not None and i < len(self.distil):
                length = (length - 1) // 2 + 1  # DistilConv: ⌊(L - 1) / 2⌋ + 1
        dec_len = self.label_len + self.pred_len
        for layer in self.decoder:
            layer.self_attention.prepare_eval_sample(dec_len, dec_len)

    def encode(self, x_enc: Tensor, x_mark_enc: Tensor | None = None) -> Tensor:
        """Encoder output ``(B, L_enc, d_model)``; ``L_enc`` halves at each distilling step."""
        x = self.enc_embedding(x_enc, x_mark_enc)
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if self.distil is not None and i < len(self.distil):
                x = self.distil[i](x)
        return self.encoder_norm(x)

    def forward(
        self,
        x_enc: Tensor,
        x_mark_enc: Tensor | None = None,
        x_dec: Tensor | None = None,
        x_mark_dec: Tensor | None = None,
    ) -> Tensor:
        x_dec = self._check_inputs(x_enc, x_mark_enc, x_dec, x_mark_dec)
        enc_out = self.encode(x_enc, x_mark_enc)
        x = self.dec_embedding(x_dec, x_mark_dec)
        for i, layer in enumerate(self.decoder):
            # only the forecast rows of the last layer reach the output (the reference computes and drops the rest)
            x = layer(x, enc_out, keep_last=self.pred_len if i == len(self.decoder) - 1 else None)
        return self.projection(self.decoder_norm(x))


@register_model(
    name="informer",
    paper="Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting (Zhou et al., AAAI 2021)",
    test_kwargs={"seq_len": 24, "label_len": 12, "pred_len": 8, "d_model": 16, "d_ff": 32, "n_heads": 2},
)
def informer(*, moving_avg: int = 25, **kwargs: Any) -> Informer:
    """Informer at the TSLib ETTh1 script configuration by default (factor 3; 11,328,007 parameters); keyword
    arguments are :class:`Informer`'s (the defaults live there).

    ``moving_avg`` is accepted so that one TSLib-style configuration serves every forecaster (unused: no
    decomposition). ``attn``, ``mix`` are Informer2020 options; ``eval_sample_seed`` see :class:`InformerAttention`.
    """
    del moving_avg
    return Informer(**kwargs)

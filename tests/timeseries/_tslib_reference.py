"""Transcriptions of the reference arithmetic (TSLib @ 4e938a1 / Informer2020 @ 29f2a73) for equivalence tests.

Kept close to the original code on purpose (Python loops over delays, roll / gather, 1x1 convs), minus
configuration plumbing. Test-only; never imported by the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------------ Autoformer
class moving_avg(nn.Module):  # noqa: N801
    def __init__(self, kernel_size, stride=1):
        super().__init__()
        self.kernel_size = kernel_size
        self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=stride, padding=0)

    def forward(self, x):
        front = x[:, 0:1, :].repeat(1, (self.kernel_size - 1) // 2, 1)
        end = x[:, -1:, :].repeat(1, (self.kernel_size - 1) // 2, 1)
        x = torch.cat([front, x, end], dim=1)
        return self.avg(x.permute(0, 2, 1)).permute(0, 2, 1)


class series_decomp(nn.Module):  # noqa: N801
    def __init__(self, kernel_size):
        super().__init__()
        self.moving_avg = moving_avg(kernel_size)

    def forward(self, x):
        moving_mean = self.moving_avg(x)
        return x - moving_mean, moving_mean


class my_Layernorm(nn.Module):  # noqa: N801
    def __init__(self, channels):
        super().__init__()
        self.layernorm = nn.LayerNorm(channels)

    def forward(self, x):
        x_hat = self.layernorm(x)
        bias = torch.mean(x_hat, dim=1).unsqueeze(1).repeat(1, x.shape[1], 1)
        return x_hat - bias


def time_delay_agg_training(factor, values, corr):
    head, channel, length = values.shape[1], values.shape[2], values.shape[3]
    top_k = int(factor * math.log(length))
    mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
    index = torch.topk(torch.mean(mean_value, dim=0), top_k, dim=-1)[1]
    weights = torch.stack([mean_value[:, index[i]] for i in range(top_k)], dim=-1)
    tmp_corr = torch.softmax(weights, dim=-1)
    delays_agg = torch.zeros_like(values).float()
    for i in range(top_k):
        pattern = torch.roll(values, -int(index[i]), -1)
        delays_agg = delays_agg + pattern * (
            tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length)
        )
    return delays_agg


def time_delay_agg_inference(factor, values, corr):
    batch, head, channel, length = values.shape
    init_index = torch.arange(length).unsqueeze(0).unsqueeze(0).unsqueeze(0).repeat(batch, head, channel, 1)
    top_k = int(factor * math.log(length))
    mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
    weights, delay = torch.topk(mean_value, top_k, dim=-1)
    tmp_corr = torch.softmax(weights, dim=-1)
    tmp_values = values.repeat(1, 1, 1, 2)
    delays_agg = torch.zeros_like(values).float()
    for i in range(top_k):
        tmp_delay = init_index + delay[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length)
        pattern = torch.gather(tmp_values, dim=-1, index=tmp_delay)
        delays_agg = delays_agg + pattern * (
            tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length)
        )
    return delays_agg


def auto_correlation(queries, keys, values, factor, training):
    """TSLib ``AutoCorrelation.forward`` on ``(B, L, H, E)`` inputs."""
    B, L, H, E = queries.shape
    _, S, _, D = values.shape
    if L > S:
        zeros = torch.zeros_like(queries[:, : (L - S), :]).float()
        values = torch.cat([values, zeros], dim=1)
        keys = torch.cat([keys, zeros], dim=1)
    else:
        values = values[:, :L, :, :]
        keys = keys[:, :L, :, :]
    q_fft = torch.fft.rfft(queries.permute(0, 2, 3, 1).contiguous(), dim=-1)
    k_fft = torch.fft.rfft(keys.permute(0, 2, 3, 1).contiguous(), dim=-1)
    corr = torch.fft.irfft(q_fft * torch.conj(k_fft), n=L, dim=-1)
    agg = time_delay_agg_training if training else time_delay_agg_inference
    return agg(factor, values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)


class AutoCorrelationLayer(nn.Module):
    def __init__(self, d_model, n_heads, factor):
        super().__init__()
        d_keys = d_model // n_heads
        self.query_projection = nn.Linear(d_model, d_keys * n_heads)
        self.key_projection = nn.Linear(d_model, d_keys * n_heads)
        self.value_projection = nn.Linear(d_model, d_keys * n_heads)
        self.out_projection = nn.Linear(d_keys * n_heads, d_model)
        self.n_heads, self.factor = n_heads, factor

    def forward(self, queries, keys, values):
        B, L, _ = queries.shape
        _, S, _ = keys.shape
        H = self.n_heads
        q = self.query_projection(queries).view(B, L, H, -1)
        k = self.key_projection(keys).view(B, S, H, -1)
        v = self.value_projection(values).view(B, S, H, -1)
        out = auto_correlation(q, k, v, self.factor, self.training)
        return self.out_projection(out.reshape(B, L, -1))


class AutoformerReference(nn.Module):
    """TSLib ``models/Autoformer.py`` forecast path, e_layers encoder layers and d_layers decoder layers."""

    def __init__(self, cfg):
        super().__init__()
        d, dff, k = cfg["d_model"], cfg["d_ff"], cfg["moving_avg"]
        self.cfg = cfg
        self.decomp = series_decomp(k)

        def emb(c_in):
            m = nn.ModuleDict(
                {
                    "token": nn.Conv1d(c_in, d, 3, padding=1, padding_mode="circular", bias=False),
                    "time": nn.Linear(4, d, bias=False),
                }
            )
            return m

        self.enc_emb, self.dec_emb = emb(cfg["enc_in"]), emb(cfg["dec_in"])
        self.enc_layers = nn.ModuleList()
        for _ in range(cfg["e_layers"]):
            self.enc_layers.append(
                nn.ModuleDict(
                    {
                        "attn": AutoCorrelationLayer(d, cfg["n_heads"], cfg["factor"]),
                        "conv1": nn.Conv1d(d, dff, 1, bias=False),
                        "conv2": nn.Conv1d(dff, d, 1, bias=False),
                    }
                )
            )
        self.enc_norm = my_Layernorm(d)
        self.dec_layers = nn.ModuleList()
        for _ in range(cfg["d_layers"]):
            self.dec_layers.append(
                nn.ModuleDict(
                    {
                        "self": AutoCorrelationLayer(d, cfg["n_heads"], cfg["factor"]),
                        "cross": AutoCorrelationLayer(d, cfg["n_heads"], cfg["factor"]),
                        "conv1": nn.Conv1d(d, dff, 1, bias=False),
                        "conv2": nn.Conv1d(dff, d, 1, bias=False),
                        "proj": nn.Conv1d(d, cfg["c_out"], 3, padding=1, padding_mode="circular", bias=False),
                    }
                )
            )
        self.dec_norm = my_Layernorm(d)
        self.projection = nn.Linear(d, cfg["c_out"])

    def _embed(self, emb, x, mark):
        return emb["token"](x.permute(0, 2, 1)).transpose(1, 2) + emb["time"](mark)

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
        label_len, pred_len = self.cfg["label_len"], self.cfg["pred_len"]
        mean = torch.mean(x_enc, dim=1).unsqueeze(1).repeat(1, pred_len, 1)
        zeros = torch.zeros([x_dec.shape[0], pred_len, x_dec.shape[2]])
        seasonal_init, trend_init = self.decomp(x_enc)
        trend = torch.cat([trend_init[:, -label_len:, :], mean], dim=1)
        seasonal_init = torch.cat([seasonal_init[:, -label_len:, :], zeros], dim=1)
        x = self._embed(self.enc_emb, x_enc, x_mark_enc)
        decomp = series_decomp(self.cfg["moving_avg"])
        for layer in self.enc_layers:
            x = x + layer["attn"](x, x, x)
            x, _ = decomp(x)
            y = F.gelu(layer["conv1"](x.transpose(-1, 1)))
            y = layer["conv2"](y).transpose(-1, 1)
            x, _ = decomp(x + y)
        enc_out = self.enc_norm(x)
        x = self._embed(self.dec_emb, seasonal_init, x_mark_dec)
        for layer in self.dec_layers:
            x = x + layer["self"](x, x, x)
            x, trend1 = decomp(x)
            x = x + layer["cross"](x, enc_out, enc_out)
            x, trend2 = decomp(x)
            y = F.gelu(layer["conv1"](x.transpose(-1, 1)))
            y = layer["conv2"](y).transpose(-1, 1)
            x, trend3 = decomp(x + y)
            residual = layer["proj"]((trend1 + trend2 + trend3).permute(0, 2, 1)).transpose(1, 2)
            trend = trend + residual
        x = self.projection(self.dec_norm(x))
        return (trend + x)[:, -pred_len:, :]


def copy_by_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters position by position (shapes may differ only by 1x1-conv vs linear)."""
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    assert len(src_params) == len(dst_params)
    with torch.no_grad():
        for s, d in zip(src_params, dst_params, strict=True):
            assert s.numel() == d.numel(), (s.shape, d.shape)
            d.copy_(s.reshape(d.shape))

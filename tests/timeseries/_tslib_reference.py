"""Transcriptions of the reference arithmetic (TSLib @ 4e938a1 / Informer2020 @ 29f2a73) for equivalence tests.

Kept close to the original code on purpose (Python loops over delays, roll / gather, 1x1 convs), minus
configuration plumbing. Dropout sits where the originals apply it, with ``cfg["dropout"]`` (default 0: the
equivalence tests compare deterministic forwards; ``benchmarks/timeseries_step.py --reference`` trains with 0.1).
Test and benchmark code only; never imported by the package.
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
        self.drop = nn.Dropout(cfg.get("dropout", 0.0))
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
        return self.drop(emb["token"](x.permute(0, 2, 1)).transpose(1, 2) + emb["time"](mark))

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
            x = x + self.drop(layer["attn"](x, x, x))
            x, _ = decomp(x)
            y = self.drop(F.gelu(layer["conv1"](x.transpose(-1, 1))))
            y = self.drop(layer["conv2"](y).transpose(-1, 1))
            x, _ = decomp(x + y)
        enc_out = self.enc_norm(x)
        x = self._embed(self.dec_emb, seasonal_init, x_mark_dec)
        for layer in self.dec_layers:
            x = x + self.drop(layer["self"](x, x, x))
            x, trend1 = decomp(x)
            x = x + self.drop(layer["cross"](x, enc_out, enc_out))
            x, trend2 = decomp(x)
            y = self.drop(F.gelu(layer["conv1"](x.transpose(-1, 1))))
            y = self.drop(layer["conv2"](y).transpose(-1, 1))
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


# ------------------------------------------------------------------------------------------------ Informer
class ProbAttention(nn.Module):
    """Informer2020 ``models/attn.py`` ProbAttention on ``(B, L, H, D)``; ``bare_squeeze=True`` is TSLib's bug."""

    def __init__(self, mask_flag=True, factor=5, bare_squeeze=False):
        super().__init__()
        self.factor, self.mask_flag, self.bare_squeeze = factor, mask_flag, bare_squeeze

    def _prob_QK(self, Q, K, sample_k, n_top):
        B, H, L_K, E = K.shape
        _, _, L_Q, _ = Q.shape
        K_expand = K.unsqueeze(-3).expand(B, H, L_Q, L_K, E)
        index_sample = torch.randint(L_K, (L_Q, sample_k))
        K_sample = K_expand[:, :, torch.arange(L_Q).unsqueeze(1), index_sample, :]
        Q_K_sample = torch.matmul(Q.unsqueeze(-2), K_sample.transpose(-2, -1))
        Q_K_sample = Q_K_sample.squeeze() if self.bare_squeeze else Q_K_sample.squeeze(-2)
        M = Q_K_sample.max(-1)[0] - torch.div(Q_K_sample.sum(-1), L_K)
        M_top = M.topk(n_top, sorted=False)[1]
        Q_reduce = Q[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], M_top, :]
        return torch.matmul(Q_reduce, K.transpose(-2, -1)), M_top

    def forward(self, queries, keys, values):
        B, L_Q, H, D = queries.shape
        _, L_K, _, _ = keys.shape
        queries, keys, values = queries.transpose(2, 1), keys.transpose(2, 1), values.transpose(2, 1)
        U_part = self.factor * int(math.ceil(math.log(L_K)))
        u = self.factor * int(math.ceil(math.log(L_Q)))
        U_part = U_part if U_part < L_K else L_K
        u = u if u < L_Q else L_Q
        scores_top, index = self._prob_QK(queries, keys, sample_k=U_part, n_top=u)
        scores_top = scores_top * (1.0 / math.sqrt(D))
        if not self.mask_flag:
            V_sum = values.mean(dim=-2)
            context = V_sum.unsqueeze(-2).expand(B, H, L_Q, V_sum.shape[-1]).clone()
        else:
            context = values.cumsum(dim=-2)
        if self.mask_flag:
            _mask = torch.ones(L_Q, scores_top.shape[-1], dtype=torch.bool).triu(1)
            _mask_ex = _mask[None, None, :].expand(B, H, L_Q, scores_top.shape[-1])
            indicator = _mask_ex[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], index, :]
            scores_top = scores_top.masked_fill(indicator.view(scores_top.shape), -math.inf)
        attn = torch.softmax(scores_top, dim=-1)
        context[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], index, :] = torch.matmul(
            attn, values
        ).type_as(context)
        return context.transpose(2, 1).contiguous()


class FullAttention(nn.Module):
    def __init__(self, mask_flag=True, attention_dropout=0.0):
        super().__init__()
        self.mask_flag = mask_flag
        self.dropout = nn.Dropout(attention_dropout)

    def forward(self, queries, keys, values):
        B, L, H, E = queries.shape
        scores = torch.einsum("blhe,bshe->bhls", queries, keys)
        if self.mask_flag:
            scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), -math.inf)
        A = self.dropout(torch.softmax(scores / math.sqrt(E), dim=-1))
        return torch.einsum("bhls,bshd->blhd", A, values).contiguous()


class AttentionLayer(nn.Module):
    def __init__(self, attention, d_model, n_heads, mix=False):
        super().__init__()
        self.inner_attention = attention
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)
        self.n_heads, self.mix = n_heads, mix

    def forward(self, queries, keys, values):
        B, L, _ = queries.shape
        _, S, _ = keys.shape
        H = self.n_heads
        out = self.inner_attention(
            self.query_projection(queries).view(B, L, H, -1),
            self.key_projection(keys).view(B, S, H, -1),
            self.value_projection(values).view(B, S, H, -1),
        )
        if self.mix:
            out = out.transpose(2, 1).contiguous()
        return self.out_projection(out.view(B, L, -1))


class InformerReference(nn.Module):
    """Informer2020 ``models/model.py`` (attn='prob', mix=True, distil=True, timeF), modules declared
    in the order of :class:`formers.timeseries.models.informer.Informer` so that parameters copy by position."""

    def __init__(self, cfg):
        super().__init__()
        d, dff, H, c = cfg["d_model"], cfg["d_ff"], cfg["n_heads"], cfg["factor"]
        self.cfg = cfg
        p = cfg.get("dropout", 0.0)
        self.drop = nn.Dropout(p)

        def emb(c_in):
            return nn.ModuleDict(
                {
                    "token": nn.Conv1d(c_in, d, 3, padding=1, padding_mode="circular", bias=False),
                    "time": nn.Linear(4, d, bias=False),
                }
            )

        def ffn():
            return nn.ModuleDict({"conv1": nn.Conv1d(d, dff, 1), "conv2": nn.Conv1d(dff, d, 1)})

        self.enc_emb, self.dec_emb = emb(cfg["enc_in"]), emb(cfg["dec_in"])
        self.enc_layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "attn": AttentionLayer(ProbAttention(False, c), d, H),
                    "norm1": nn.LayerNorm(d),
                    "ffn": ffn(),
                    "norm2": nn.LayerNorm(d),
                }
            )
            for _ in range(cfg["e_layers"])
        )
        self.convs = nn.ModuleList(
            nn.ModuleDict(
                {
                    "down": nn.Conv1d(d, d, 3, padding=1, padding_mode="circular"),
                    "norm": nn.BatchNorm1d(d),
                }
            )
            for _ in range(cfg["e_layers"] - 1)
        )
        self.enc_norm = nn.LayerNorm(d)
        self.dec_layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "self": AttentionLayer(ProbAttention(True, c), d, H, mix=True),
                    "norm1": nn.LayerNorm(d),
                    "cross": AttentionLayer(FullAttention(False, p), d, H),
                    "norm2": nn.LayerNorm(d),
                    "ffn": ffn(),
                    "norm3": nn.LayerNorm(d),
                }
            )
            for _ in range(cfg["d_layers"])
        )
        self.dec_norm = nn.LayerNorm(d)
        self.projection = nn.Linear(d, cfg["c_out"])
        pos = torch.arange(5000.0)[:, None]
        div = torch.exp(torch.arange(0, d, 2).float() * -(math.log(10000.0) / d))
        pe = torch.zeros(5000, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe[None], persistent=False)

    def _embed(self, emb, x, mark):
        return self.drop(
            emb["token"](x.permute(0, 2, 1)).transpose(1, 2) + self.pe[:, : x.shape[1]] + emb["time"](mark)
        )

    def _ffn(self, ffn, x):
        y = self.drop(F.gelu(ffn["conv1"](x.transpose(-1, 1))))
        return self.drop(ffn["conv2"](y).transpose(-1, 1))

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
        x = self._embed(self.enc_emb, x_enc, x_mark_enc)
        for i, layer in enumerate(self.enc_layers):
            x = layer["norm1"](x + self.drop(layer["attn"](x, x, x)))
            x = layer["norm2"](x + self._ffn(layer["ffn"], x))
            if i < len(self.convs):
                conv = self.convs[i]
                y = F.elu(conv["norm"](conv["down"](x.permute(0, 2, 1))))
                x = F.max_pool1d(y, kernel_size=3, stride=2, padding=1).transpose(1, 2)
        enc_out = self.enc_norm(x)
        x = self._embed(self.dec_emb, x_dec, x_mark_dec)
        for layer in self.dec_layers:
            x = layer["norm1"](x + self.drop(layer["self"](x, x, x)))
            x = layer["norm2"](x + self.drop(layer["cross"](x, enc_out, enc_out)))
            x = layer["norm3"](x + self._ffn(layer["ffn"], x))
        return self.projection(self.dec_norm(x))[:, -self.cfg["pred_len"] :, :]


# ------------------------------------------------------------------------------------------------ iTransformer
class ITransformerReference(nn.Module):
    """thuml/iTransformer ``model/iTransformer.py`` (= TSLib's; use_norm=1, class_strategy=projection): separate
    q/k/v projections, 1x1-conv FFN, post-LN encoder layers."""

    def __init__(self, cfg):
        super().__init__()
        d, dff, H = cfg["d_model"], cfg["d_ff"], cfg["n_heads"]
        self.cfg = cfg
        self.value_embedding = nn.Linear(cfg["seq_len"], d)
        self.dropout = nn.Dropout(cfg.get("dropout", 0.0))
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "attn": AttentionLayer(FullAttention(False, cfg.get("dropout", 0.0)), d, H),
                    "norm1": nn.LayerNorm(d),
                    "conv1": nn.Conv1d(d, dff, 1),
                    "conv2": nn.Conv1d(dff, d, 1),
                    "norm2": nn.LayerNorm(d),
                }
            )
            for _ in range(cfg["e_layers"])
        )
        self.norm = nn.LayerNorm(d)
        self.projector = nn.Linear(d, cfg["pred_len"])

    def forward(self, x_enc, x_mark_enc, x_dec=None, x_mark_dec=None):
        pred_len = self.cfg["pred_len"]
        means = x_enc.mean(1, keepdim=True).detach()
        x_enc = x_enc - means
        stdev = torch.sqrt(torch.var(x_enc, dim=1, keepdim=True, unbiased=False) + 1e-5)
        x_enc = x_enc / stdev
        _, _, N = x_enc.shape
        x = self.dropout(self.value_embedding(torch.cat([x_enc.permute(0, 2, 1), x_mark_enc.permute(0, 2, 1)], 1)))
        for layer in self.layers:
            x = x + self.dropout(layer["attn"](x, x, x))
            y = x = layer["norm1"](x)
            y = self.dropout(F.gelu(layer["conv1"](y.transpose(-1, 1))))
            y = self.dropout(layer["conv2"](y).transpose(-1, 1))
            x = layer["norm2"](x + y)
        dec_out = self.projector(self.norm(x)).permute(0, 2, 1)[:, :, :N]
        dec_out = dec_out * stdev[:, 0, :].unsqueeze(1).repeat(1, pred_len, 1)
        dec_out = dec_out + means[:, 0, :].unsqueeze(1).repeat(1, pred_len, 1)
        return dec_out[:, -pred_len:, :]

    def formers_state_dict(self):
        """These weights under :class:`formers.timeseries.models.itransformer.ITransformer`'s names (fused qkv)."""
        state = {"enc_embedding.value_embedding." + k: v for k, v in self.value_embedding.state_dict().items()}
        for i, layer in enumerate(self.layers):
            attn, prefix = layer["attn"], f"layers.{i}."
            for kind in ("weight", "bias"):
                projections = (attn.query_projection, attn.key_projection, attn.value_projection)
                state[prefix + "attention.qkv." + kind] = torch.cat([getattr(p, kind) for p in projections])
                state[prefix + "attention.proj." + kind] = getattr(attn.out_projection, kind)
                state[prefix + "ffn.fc1." + kind] = getattr(layer["conv1"], kind).squeeze(-1)
                state[prefix + "ffn.fc2." + kind] = getattr(layer["conv2"], kind).squeeze(-1)
                for norm in ("norm1", "norm2"):
                    state[prefix + f"{norm}.{kind}"] = getattr(layer[norm], kind)
        state.update({"norm." + k: v for k, v in self.norm.state_dict().items()})
        state.update({"projector." + k: v for k, v in self.projector.state_dict().items()})
        return state

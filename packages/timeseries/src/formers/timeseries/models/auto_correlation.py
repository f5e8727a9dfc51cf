"""Auto-Correlation (Autoformer, Wu et al., NeurIPS 2021, §3.2): attention over time delays instead of positions.

The period-based dependencies are the circular cross-correlation of queries and keys, computed with the FFT
(Wiener-Khinchin). The ``top_k = int(factor * ln L)`` delays with the largest correlation (averaged over heads and
channels) are kept, their correlations are softmax-normalised, and the values rolled by each delay are summed with
those weights ("time-delay aggregation"). As in the reference (TSLib ``layers/AutoCorrelation.py``):

* training picks the delays from the correlation averaged over the batch as well (one delay set per batch, per-sample
  weights); inference picks them per sample (``time_delay_agg_training`` / ``time_delay_agg_inference``);
* when the keys are shorter than the queries (cross-attention) they are zero-padded, otherwise truncated to L;
* the reference's attention dropout is constructed but never applied, so there is none here.

Because both the delay selection (a mean over heads and channels) and the aggregation (the same weights for every
channel) treat all ``heads x head_dim`` channels alike, the head split does not change the arithmetic; the
channels are processed flat. Two exact rewrites make it fast: the head/channel mean is taken in the frequency domain
before a single inverse FFT (the inverse FFT is linear), and the k rolls are one batched matmul with a circulant
matrix holding the k weights, instead of a Python loop over delays.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["top_k_delays", "delay_correlation", "time_delay_aggregation", "auto_correlation", "AutoCorrelationLayer"]


def top_k_delays(factor: float, length: int) -> int:
    """Number of delays kept: ``int(factor * ln length)`` (natural log), clamped to ``[1, length]``."""
    return min(length, max(1, int(factor * math.log(length))))


def delay_correlation(q: Tensor, k: Tensor) -> Tensor:
    """Circular cross-correlation ``R(τ) = Σ_t q[t + τ] · k[t]``, averaged over channels: ``(B, L, C) -> (B, L)``.

    ``k`` must already have ``q``'s length. Computed in float32 (the FFT has no half-precision CPU kernel).
    """
    length = q.shape[1]
    # FFT along the last dim (time-last layout): about 2x faster on CPU than along dim 1 of (B, L, C)
    q_fft = torch.fft.rfft(q.float().transpose(1, 2), dim=-1)
    k_fft = torch.fft.rfft(k.float().transpose(1, 2), dim=-1)
    return torch.fft.irfft((q_fft * k_fft.conj()).mean(1), n=length, dim=-1)


def time_delay_aggregation(values: Tensor, delays: Tensor, weights: Tensor) -> Tensor:
    """``out[b, t] = Σ_i weights[b, i] · values[b, (t + delays[b, i]) mod L]``, i.e. Σ_i w_i · roll(V, -τ_i).

    Built as one matmul with the circulant matrix ``A[b, t, s] = a_b[(s - t) mod L]`` where ``a_b`` holds the
    weights at the delays (zeros elsewhere): exact, vectorised, and differentiable in ``weights`` and ``values``.

    Shapes:
        - values: ``(B, L, C)``; delays: int ``(B, k)``; weights: ``(B, k)``
        - output: ``(B, L, C)``
    """
    batch, length, _ = values.shape
    dense = weights.new_zeros(batch, length).scatter_add(1, delays, weights)  # a_b[τ]
    steps = torch.arange(length, device=values.device)
    circulant = dense[:, (steps[None, :] - steps[:, None]) % length]  # (B, L_t, L_s)
    return torch.matmul(circulant.to(values.dtype), values)


def auto_correlation(q: Tensor, k: Tensor, v: Tensor, factor: float = 1.0, batch_delays: bool = False) -> Tensor:
    """Auto-Correlation of projected inputs ``q (B, L, C)``, ``k, v (B, S, C)`` -> ``(B, L, C)``.

    Args:
        factor: ``c`` in ``top_k = int(c · ln L)``.
        batch_delays: choose one delay set for the whole batch (the reference's training mode) instead of one per
            sample (its inference mode).
    """
    length, src_len = q.shape[1], k.shape[1]
    if length > src_len:  # cross-attention onto a shorter encoder output: zero-pad keys and values in time
        k = F.pad(k, (0, 0, 0, length - src_len))
        v = F.pad(v, (0, 0, 0, length - src_len))
    else:
        k, v = k[:, :length], v[:, :length]
    corr = delay_correlation(q, k)  # (B, L)
    top_k = top_k_delays(factor, length)
    if batch_delays:
        delays = torch.topk(corr.mean(0), top_k).indices.expand(corr.shape[0], top_k)
        weights = corr.gather(1, delays)
    else:
        weights, delays = torch.topk(corr, top_k, dim=-1)
    return time_delay_aggregation(v, delays, torch.softmax(weights, dim=-1))


class AutoCorrelationLayer(nn.Module):
    """Auto-Correlation with query/key/value/output projections (TSLib ``AutoCorrelationLayer``).

    Self-correlation when ``context`` is ``None``; otherwise keys and values come from ``context``. The delays are
    batch-shared in training mode and per-sample in eval mode, as in the reference.

    Shapes:
        - x: ``(batch, L, d_model)``; context: ``(batch, S, d_model)``; output: ``(batch, L, d_model)``
    """

    def __init__(self, d_model: int, n_heads: int, factor: float = 1.0) -> None:
        super().__init__()
        inner = (d_model // n_heads) * n_heads  # the reference's d_keys = d_model // n_heads per head
        if inner == 0:
            raise ValueError(f"AutoCorrelationLayer: n_heads ({n_heads}) exceeds d_model ({d_model})")
        self.factor = factor
        self.query_projection = nn.Linear(d_model, inner)
        self.key_projection = nn.Linear(d_model, inner)
        self.value_projection = nn.Linear(d_model, inner)
        self.out_projection = nn.Linear(inner, d_model)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        out = auto_correlation(
            self.query_projection(x),
            self.key_projection(context),
            self.value_projection(context),
            self.factor,
            batch_delays=self.training,
        )
        return self.out_projection(out)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

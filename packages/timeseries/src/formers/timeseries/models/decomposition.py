"""Autoformer's series decomposition (Wu et al., NeurIPS 2021, §3.1): trend = moving average, seasonal = rest.

Matches TSLib ``layers/Autoformer_EncDec.py`` (``moving_avg``, ``series_decomp``, ``my_Layernorm``) for odd
kernels. The reference pads ``(k - 1) // 2`` copies on *both* ends, which makes an even kernel return a series one
step shorter and crash downstream (Autoformer #84); here an even kernel pads ``k // 2 - 1`` steps in front and
``k // 2`` behind, so the length is always kept (the window of step ``t`` is ``[t - k/2 + 1, t + k/2]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MovingAvg", "SeriesDecomp", "SeasonalLayerNorm"]


class MovingAvg(nn.Module):
    """Moving average along time with replicate padding at both ends (length-preserving for any kernel size).

    Shapes:
        - x: ``(batch, length, channels)`` -> ``(batch, length, channels)``
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1:
            raise ValueError(f"MovingAvg: kernel_size must be a positive integer, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.pad_front, self.pad_end = (kernel_size - 1) // 2, kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        if k == 1:
            return x
        # Replicate padding (the reference repeats the first / last value), then window sums from a running sum:
        # O(L) instead of avg_pool's O(k L), and no transposes. The running sum is taken in float32 (bf16 inputs too)
        # around the first value, so a large level does not cost precision.
        first = x[:, :1].float()
        padded = torch.cat([x[:, :1].expand(-1, self.pad_front, -1), x, x[:, -1:].expand(-1, self.pad_end, -1)], 1)
        csum = (padded.float() - first).cumsum(dim=1)  # (B, L + k - 1, C)
        window = csum[:, k - 1 :] - F.pad(csum[:, :-k], (0, 0, 1, 0))
        return (window / k + first).to(x.dtype)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class SeriesDecomp(nn.Module):
    """``(seasonal, trend) = (x - MovingAvg(x), MovingAvg(x))``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_avg = MovingAvg(kernel_size)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        trend = self.moving_avg(x)
        return x - trend, trend


class SeasonalLayerNorm(nn.Module):
    """LayerNorm over channels, then the mean over time is removed (TSLib ``my_Layernorm``, for the seasonal part)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        x_hat = self.layernorm(x)
        return x_hat - x_hat.mean(dim=1, keepdim=True)

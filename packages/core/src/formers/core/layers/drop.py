"""Dropout with a cheaper CPU mask (:class:`Dropout`), stochastic depth (:class:`DropPath`) and residual scaling
(:class:`LayerScale`).

These are small re-implementations of ``timm.layers.DropPath`` / ``LayerScale`` on purpose: formers does not depend
on timm, whose import costs ~4.5 s and pulls in torchvision, which the graph, PDE and bytes packages never need.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from formers.kernels.dropout import dropout

__all__ = ["Dropout", "drop_path", "DropPath", "LayerScale"]


class Dropout(nn.Dropout):
    """``torch.nn.Dropout`` with the cheaper CPU mask of :func:`formers.kernels.dropout.dropout` (a 16-bit uniform
    number per element instead of a ``bernoulli_`` draw; ``p`` rounded to a multiple of 1/65536). Same arguments,
    state and ``repr``; elsewhere than on CPU it is ``nn.Dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.inplace)


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> Tensor:
    """Zero whole samples of a residual branch with probability ``drop_prob`` (Huang et al. 2016, stochastic depth).

    Kept samples are scaled by ``1 / (1 - drop_prob)`` (when ``scale_by_keep``) so the expectation is unchanged.
    Identity when not ``training`` or when ``drop_prob == 0``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # one draw per sample, broadcast over the other dims
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    if scale_by_keep and keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Stochastic depth per sample, applied to the output of a residual branch.

    Args:
        drop_prob: probability of dropping a sample's branch, in ``[0, 1)``.
        scale_by_keep: scale the kept samples by ``1 / (1 - drop_prob)``.

    Shapes:
        - input: ``(batch, *)``
        - output: ``(batch, *)``
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


class LayerScale(nn.Module):
    """Learnable per-channel scale of a residual branch, initialised small (Touvron et al. 2021, CaiT).

    Args:
        dim: number of channels (last dimension).
        init_values: initial value of every scale.

    Shapes:
        - input: ``(*, dim)``
        - output: ``(*, dim)``
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"dim={self.gamma.numel()}, init_values={self.init_values}"

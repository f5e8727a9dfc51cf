"""Performer attention with positive random features, in the form of T2T-ViT's ``token_performer.py`` (Yuan et al.
2021, after Choromanski et al. 2021): the "linear attention family" member that vision's T2T module uses.

Unlike :class:`formers.core.layers.LinearAttention` (``kind="performer"``: ``d^-1/4`` scaling, max-stabilised
features, redrawable buffer), this follows the official T2T code exactly, so its checkpoints load and give the same
numbers:

* a fused ``kqv`` projection, split in the order **k, q, v**;
* a frozen random matrix ``w`` of shape ``(m, d)``, ``m = int(d · kernel_ratio)``, initialised as
  ``orthogonal_(randn(m, d)) · √m`` and stored as a ``requires_grad=False`` parameter (it is in the checkpoints);
* features ``prm_exp(x) = exp(x wᵀ − |x|²/2) / √m`` (no scaling of ``x``, no stabiliser);
* ``y = φ(q) (φ(k)ᵀ v) / (φ(q) · Σ_j φ(k_j) + ε)`` with ``ε = 1e-8``, in float32 (autocast off), linear in length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from formers.core.layers._checks import check_positive, check_tokens

__all__ = ["PerformerAttention", "prm_exp", "prm_attention"]


def prm_exp(x: Tensor, w: Tensor) -> Tensor:
    """Positive random features of the Gaussian kernel: ``exp(x wᵀ − |x|²/2) / √m`` (T2T's ``prm_exp``).

    ``E_w[prm_exp(x) · prm_exp(y)] = exp(xᵀy)`` when the rows of ``w`` are standard Gaussian.

    Shapes:
        - x: ``(*, n, d)``
        - w: ``(m, d)``
        - output: ``(*, n, m)``, float32 (float64 stays float64)
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    x = x.to(dtype)
    logits = torch.matmul(x, w.to(dtype).transpose(0, 1)) - x.pow(2).sum(dim=-1, keepdim=True) / 2
    return torch.exp(logits) / math.sqrt(w.shape[0])


def prm_attention(q: Tensor, k: Tensor, v: Tensor, w: Tensor, eps: float = 1e-8) -> Tensor:
    """Linear-cost attention ``φ(q) (φ(k)ᵀ v) / (φ(q) · Σ_j φ(k_j) + eps)`` with ``φ = prm_exp(·, w)``.

    Computed in float32 with autocast disabled (as the official ``.float()`` intends: the exponentials overflow in
    half precision); the result is float32 (float64 for float64 inputs).

    Shapes:
        - q: ``(*, n, d)``; k: ``(*, l, d)``; v: ``(*, l, e)``; w: ``(m, d)``
        - output: ``(*, n, e)``
    """
    if torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return prm_attention(q, k, v, w, eps)
    qp, kp = prm_exp(q, w), prm_exp(k, w)  # (*, n, m), (*, l, m)
    v = v.to(qp.dtype)
    denom = torch.matmul(qp, kp.sum(dim=-2).unsqueeze(-1))  # (*, n, 1)
    return torch.matmul(qp, torch.matmul(kp.transpose(-2, -1), v)) / (denom + eps)


class PerformerAttention(nn.Module):
    """Single-head (as T2T) or multi-head Performer self-attention with ``prm_exp`` features.

    ``forward(x) = drop(proj(y))``, or ``v + drop(proj(y))`` with ``v_residual=True``: T2T's token layers change
    the width (``dim`` → ``out_dim``), so their attention residual is ``v`` rather than ``x``. With several heads,
    ``w`` (of shape ``(m, head_dim)``) is shared by the heads.

    Args:
        dim: input width.
        out_dim: width of q, k, v and of the output (T2T's ``in_dim · head_cnt``; default ``dim``).
        num_heads: heads (T2T uses 1).
        kernel_ratio: random features per head as a fraction of ``head_dim`` (``m = int(head_dim · ratio)``).
        proj_drop: dropout after ``proj`` (T2T's ``dp1`` = 0.1).
        eps: added to the normaliser (T2T's ``epsilon`` = 1e-8).
        v_residual: return ``v + attention`` (T2T) instead of the attention alone.

    Shapes:
        - x: ``(batch, length, dim)``
        - output: ``(batch, length, out_dim)``
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        num_heads: int = 1,
        kernel_ratio: float = 0.5,
        proj_drop: float = 0.0,
        eps: float = 1e-8,
        v_residual: bool = False,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        check_positive("PerformerAttention", dim=dim, out_dim=out_dim, num_heads=num_heads)
        if out_dim % num_heads != 0:
            raise ValueError(f"PerformerAttention: out_dim {out_dim} is not divisible by num_heads {num_heads}")
        self.dim, self.emb, self.num_heads, self.head_dim = dim, out_dim, num_heads, out_dim // num_heads
        self.m = int(self.head_dim * kernel_ratio)
        if self.m < 1:
            raise ValueError(f"PerformerAttention: kernel_ratio {kernel_ratio} gives no random feature")
        self.epsilon, self.v_residual = eps, v_residual
        self.kqv = nn.Linear(dim, 3 * out_dim)
        self.dp = nn.Dropout(proj_drop)
        self.proj = nn.Linear(out_dim, out_dim)
        w = torch.empty(self.m, self.head_dim)
        if not w.is_meta:  # the QR of orthogonal_ needs data; meta-device builds only count parameters
            nn.init.orthogonal_(w)
            w.mul_(math.sqrt(self.m))
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        check_tokens(type(self).__name__, "x", x, self.dim)
        batch, length, _ = x.shape
        k, q, v = self.kqv(x).split(self.emb, dim=-1)  # the official order is k, q, v
        if self.num_heads == 1:
            y = prm_attention(q, k, v, self.w, self.epsilon)
        else:
            heads = [t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)]
            y = prm_attention(*heads, self.w, self.epsilon).transpose(1, 2).reshape(batch, length, self.emb)
        y = self.dp(self.proj(y.to(v.dtype)))
        return v + y if self.v_residual else y

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, out_dim={self.emb}, num_heads={self.num_heads}, m={self.m}, "
            f"eps={self.epsilon}, v_residual={self.v_residual}"
        )

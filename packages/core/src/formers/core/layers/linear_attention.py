"""Linear-attention family (Galerkin, Fourier, GNOT normalized, Performer) behind one multi-head module.

Notation: ``b`` batch, ``n`` length, ``h`` heads, ``d`` head_dim. The kernels live in :mod:`formers.kernels.linear`;
this module owns the projections, the per-head LayerNorms of Cao (2021) and the Performer's random projection.
``key_padding_mask`` is bool ``(b, n)`` with ``True`` = padding token (padded keys contribute nothing).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.layers._checks import check_key_padding_mask, check_tokens, resolve_head_dim
from formers.kernels.linear import (
    causal_linear_attention,
    favor_feature_map,
    fourier_attention,
    galerkin_attention,
    normalized_linear_attention,
    orthogonal_random_features,
    performer_attention,
)

__all__ = ["LinearAttention"]

KINDS = ("galerkin", "fourier", "normalized", "performer")


class HeadLayerNorm(nn.Module):
    """LayerNorm over ``head_dim`` with separate affine parameters per head (as in Cao's ``SimpleAttention``).

    Shapes:
        - x: ``(b, h, n, d)``
        - output: ``(b, h, n, d)``
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_heads, 1, head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class LinearAttention(nn.Module):
    """Multi-head softmax-free / kernelised self-attention with the shape contract of ``MultiHeadAttention``.

    Kinds:
        - ``"galerkin"`` (Cao 2021): per-head LayerNorm on K and V, ``Q (Kᵀ V) / n``; linear in ``n``.
        - ``"fourier"`` (Cao 2021): per-head LayerNorm on Q and K, ``(Q Kᵀ / √d / n) V``; quadratic in ``n``.
        - ``"normalized"`` (GNOT, Hao et al. 2023): softmax feature maps, rows normalised to sum to 1 (GNOT's
          extra ``+ q`` term is not included); padded keys are masked, unlike the official code.
        - ``"performer"`` (Choromanski et al. 2021): FAVOR+ estimate of softmax attention with a fixed orthogonal
          random projection per layer (a persistent buffer, shared by the heads, redrawn by ``redraw_projection``).

    Args:
        dim: width of the input and of the output.
        num_heads: number of heads.
        kind: one of ``"galerkin"``, ``"fourier"``, ``"normalized"``, ``"performer"``.
        head_dim: width of each head (default ``dim // num_heads``, which must then divide evenly).
        qkv_bias: add biases to the fused ``qkv`` projection (Cao's code has them).
        proj_drop: dropout after the output projection.
        nb_features: number of random features (``"performer"`` only; default ``round(d · ln d)``, at least 1).
        causal: token ``i`` attends to tokens ``≤ i`` only (chunked linear-cost computation for every kind).
        chunk_size: chunk length of the causal computation.

    Shapes:
        - x: ``(batch, length, dim)``
        - key_padding_mask: bool ``(batch, length)``, ``True`` = ignore this key (not with ``causal``)
        - output: ``(batch, length, dim)``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        kind: str = "galerkin",
        head_dim: int | None = None,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        nb_features: int | None = None,
        causal: bool = False,
        chunk_size: int = 128,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"LinearAttention: kind must be one of {KINDS}, got {kind!r}")
        head_dim = resolve_head_dim("LinearAttention", dim, num_heads, head_dim)
        if nb_features is not None and kind != "performer":
            raise ValueError(f"LinearAttention: nb_features applies to kind='performer' only, got kind={kind!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.kind, self.causal, self.chunk_size = kind, causal, chunk_size
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_norm = HeadLayerNorm(num_heads, head_dim) if kind == "fourier" else nn.Identity()
        self.k_norm = HeadLayerNorm(num_heads, head_dim) if kind in ("galerkin", "fourier") else nn.Identity()
        self.v_norm = HeadLayerNorm(num_heads, head_dim) if kind == "galerkin" else nn.Identity()
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.nb_features = None
        if kind == "performer":
            self.nb_features = nb_features or max(1, round(head_dim * math.log(head_dim)))
            self.register_buffer("projection", orthogonal_random_features(self.nb_features, head_dim))

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Draw a new Performer random projection in place (``"performer"`` only)."""
        if self.kind != "performer":
            raise ValueError(f"LinearAttention: redraw_projection needs kind='performer', got {self.kind!r}")
        self.projection.copy_(orthogonal_random_features(self.nb_features, self.head_dim, generator))

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None) -> Tensor:
        self._check_inputs(x, key_padding_mask)
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (b, h, n, d)
        q, k, v = self.q_norm(q), self.k_norm(k), self.v_norm(v)
        out = self._causal(q, k, v) if self.causal else self._attend(q, k, v, key_padding_mask)
        out = out.transpose(1, 2).flatten(2)  # (b, h, n, d) -> (b, n, h * d)
        return self.proj_drop(self.proj(out))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        if self.kind == "galerkin":
            return galerkin_attention(q, k, v, key_padding_mask)
        if self.kind == "fourier":
            return fourier_attention(q, k, v, key_padding_mask)
        if self.kind == "normalized":
            return normalized_linear_attention(q, k, v, key_padding_mask)
        return performer_attention(q, k, v, self.projection, key_padding_mask)

    def _causal(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        length = q.shape[-2]
        if self.kind == "galerkin":
            return causal_linear_attention(q, k, v, self.chunk_size, scale=1.0 / length)
        if self.kind == "fourier":
            return causal_linear_attention(q, k, v, self.chunk_size, scale=1.0 / (length * math.sqrt(self.head_dim)))
        if self.kind == "normalized":
            return causal_linear_attention(q.softmax(-1), k.softmax(-1), v, self.chunk_size, normalize=True)
        scale = self.head_dim**-0.25
        q_feat = favor_feature_map(q * scale, self.projection, is_query=True)
        k_feat = favor_feature_map(k * scale, self.projection, is_query=False)
        return causal_linear_attention(q_feat, k_feat, v, self.chunk_size, normalize=True)

    def _check_inputs(self, x: Tensor, key_padding_mask: Tensor | None) -> None:
        name = type(self).__name__
        check_tokens(name, "x", x, self.dim)
        if key_padding_mask is None:
            return
        if self.causal:
            raise ValueError(f"{name}: key_padding_mask is not supported with causal=True (pad on the right instead)")
        check_key_padding_mask(name, key_padding_mask, tuple(x.shape[:2]), x.device)

    def extra_repr(self) -> str:
        extra = f", nb_features={self.nb_features}" if self.kind == "performer" else ""
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, kind={self.kind!r}, "
            f"causal={self.causal}{extra}"
        )

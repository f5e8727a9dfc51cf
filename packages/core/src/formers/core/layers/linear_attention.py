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

# the bare kernels, re-exported so the domains reach them through core (import-linter: domains never import kernels)
__all__ = [
    "HeadLayerNorm",
    "LinearAttention",
    "fourier_attention",
    "galerkin_attention",
    "normalized_linear_attention",
]

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
        if self.weight.shape[0] == 1:  # one head: LayerNorm's own fused affine
            return F.layer_norm(x, x.shape[-1:], self.weight.view(-1), self.bias.view(-1), self.eps)
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight)


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
        pos_dim: width of the coordinates ``pos`` concatenated in front of every head's q, k and v after the
            per-head norms (Cao's ``SimpleAttention``); each head then yields ``pos_dim + head_dim`` channels and
            ``proj`` maps ``num_heads · (pos_dim + head_dim)`` to ``dim``. ``0`` (default): no coordinates.
        norm_eps: epsilon of the per-head LayerNorms.
        qkv_xavier_gain: if given, Cao's initialisation of the q, k, v projections (see :meth:`init_qkv_`):
            each of the three weights ``xavier_uniform_(gain)`` plus ``qkv_diagonal · I``, biases zero. ``None``
            (default): PyTorch's ``nn.Linear`` initialisation.
        qkv_diagonal: the diagonal added by that initialisation.

    Shapes:
        - x: ``(batch, length, dim)``
        - key_padding_mask: bool ``(batch, length)``, ``True`` = ignore this key (not with ``causal``)
        - pos: ``(batch or 1, length, pos_dim)``, required exactly when ``pos_dim > 0``
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
        pos_dim: int = 0,
        norm_eps: float = 1e-5,
        qkv_xavier_gain: float | None = None,
        qkv_diagonal: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"LinearAttention: kind must be one of {KINDS}, got {kind!r}")
        head_dim = resolve_head_dim("LinearAttention", dim, num_heads, head_dim)
        if nb_features is not None and kind != "performer":
            raise ValueError(f"LinearAttention: nb_features applies to kind='performer' only, got kind={kind!r}")
        if not isinstance(pos_dim, int) or isinstance(pos_dim, bool) or pos_dim < 0:
            raise ValueError(f"LinearAttention: pos_dim must be a non-negative int, got {pos_dim!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.kind, self.causal, self.chunk_size, self.pos_dim = kind, causal, chunk_size, pos_dim
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_norm = HeadLayerNorm(num_heads, head_dim, norm_eps) if kind == "fourier" else nn.Identity()
        self.k_norm = HeadLayerNorm(num_heads, head_dim, norm_eps) if kind in ("galerkin", "fourier") else nn.Identity()
        self.v_norm = HeadLayerNorm(num_heads, head_dim, norm_eps) if kind == "galerkin" else nn.Identity()
        self.proj = nn.Linear(num_heads * (head_dim + pos_dim), dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.nb_features = None
        if kind == "performer":
            self.nb_features = nb_features or max(1, round(head_dim * math.log(head_dim)))
            self.register_buffer("projection", orthogonal_random_features(self.nb_features, head_dim + pos_dim))
        if qkv_xavier_gain is not None:
            self.init_qkv_(qkv_xavier_gain, qkv_diagonal)

    @torch.no_grad()
    def init_qkv_(self, gain: float, diagonal: float = 0.0) -> None:
        """Cao's initialisation of ``W_Q``, ``W_K``, ``W_V`` (``SimpleAttention._reset_parameters``), in place.

        Each ``(inner, dim)`` block of the fused ``qkv`` weight gets its own ``xavier_uniform_(gain)`` (the fan of
        one projection, not of the fused matrix) plus ``diagonal`` on its main diagonal; the biases become zero.
        """
        inner = self.num_heads * self.head_dim
        for block in self.qkv.weight.split(inner, dim=0):
            nn.init.xavier_uniform_(block, gain=gain)
            block.add_(diagonal * torch.eye(*block.shape, dtype=block.dtype, device=block.device))
        if self.qkv.bias is not None:
            self.qkv.bias.zero_()

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Draw a new Performer random projection in place (``"performer"`` only)."""
        if self.kind != "performer":
            raise ValueError(f"LinearAttention: redraw_projection needs kind='performer', got {self.kind!r}")
        self.projection.copy_(orthogonal_random_features(self.nb_features, self.head_dim + self.pos_dim, generator))

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        self._check_inputs(x, key_padding_mask, pos)
        batch, length, _ = x.shape
        # one GEMM per projection (blocks of the fused weight): contiguous outputs, fewer copies than splitting one
        # strided (b, n, 3, h, d) result, the same numbers
        biases = (None,) * 3 if self.qkv.bias is None else self.qkv.bias.chunk(3)
        q, k, v = (
            F.linear(x, weight, bias).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for weight, bias in zip(self.qkv.weight.chunk(3), biases, strict=True)
        )  # each (b, h, n, d)
        q, k, v = self.q_norm(q), self.k_norm(k), self.v_norm(v)
        if self.pos_dim:  # Cao: the raw coordinates in front of every head's q, k, v, after the norms
            pos = pos.to(q.dtype)[:, None].expand(batch, self.num_heads, length, self.pos_dim)
            q, k, v = (torch.cat([pos, t], dim=-1) for t in (q, k, v))
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
            return causal_linear_attention(q, k, v, self.chunk_size, scale=1.0 / (length * math.sqrt(q.shape[-1])))
        if self.kind == "normalized":
            return causal_linear_attention(q.softmax(-1), k.softmax(-1), v, self.chunk_size, normalize=True)
        scale = q.shape[-1] ** -0.25
        q_feat = favor_feature_map(q * scale, self.projection, is_query=True)
        k_feat = favor_feature_map(k * scale, self.projection, is_query=False)
        return causal_linear_attention(q_feat, k_feat, v, self.chunk_size, normalize=True)

    def _check_inputs(self, x: Tensor, key_padding_mask: Tensor | None, pos: Tensor | None = None) -> None:
        name = type(self).__name__
        check_tokens(name, "x", x, self.dim)
        if self.pos_dim and pos is None:
            raise ValueError(f"{name}: pos (batch, length, {self.pos_dim}) is required when pos_dim={self.pos_dim}")
        if not self.pos_dim and pos is not None:
            raise ValueError(f"{name}: pos given but pos_dim=0 (build the layer with pos_dim > 0)")
        if pos is not None and (
            pos.dim() != 3 or pos.shape[0] not in (1, x.shape[0]) or tuple(pos.shape[1:]) != (x.shape[1], self.pos_dim)
        ):
            raise ValueError(
                f"{name}: pos must have shape ({x.shape[0]} or 1, {x.shape[1]}, {self.pos_dim}), got {tuple(pos.shape)}"
            )
        if key_padding_mask is None:
            return
        if self.causal:
            raise ValueError(f"{name}: key_padding_mask is not supported with causal=True (pad on the right instead)")
        check_key_padding_mask(name, key_padding_mask, tuple(x.shape[:2]), x.device)

    def extra_repr(self) -> str:
        extra = f", nb_features={self.nb_features}" if self.kind == "performer" else ""
        extra += f", pos_dim={self.pos_dim}" if self.pos_dim else ""
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, kind={self.kind!r}, "
            f"causal={self.causal}{extra}"
        )

"""Softmax-free and kernelised ("linear") attention on ``(batch, heads, n, d)`` tensors, with quadratic references.

Notation: ``b`` batch, ``h`` heads, ``n`` query length, ``m`` key/value length, ``d`` head_dim, ``r`` random
features. The fast kernels associate the product as ``q (kᵀ v)`` (cost ``O(n·d²)``, memory ``O(n·d + d²)``); each
``*_reference`` function computes the same quantity as ``(q kᵀ) v`` with the full ``(n, m)`` score matrix and is the
oracle the tests compare against. Learned parts (the per-head LayerNorms of the Galerkin/Fourier layers, the random
projection of the Performer) belong to ``formers.core.layers.linear_attention.LinearAttention``, not to the kernels.

``key_padding_mask`` is bool ``(b, m)`` with ``True`` = padding key (the convention of :mod:`formers.kernels.masks`):
a padded key contributes nothing, and the ``1/n`` quadrature weight of the Galerkin/Fourier kernels counts only
the real keys of each sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "causal_linear_attention",
    "causal_linear_attention_reference",
    "favor_feature_map",
    "fourier_attention",
    "fourier_attention_reference",
    "galerkin_attention",
    "galerkin_attention_reference",
    "normalized_linear_attention",
    "normalized_linear_attention_reference",
    "orthogonal_random_features",
    "performer_attention",
    "performer_attention_reference",
]

_EPS = 1e-12


def _mask_keys(k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | float]:
    """Zero the padded keys/values; return them with the number of real keys, ``(b, 1, 1, 1)`` or a float."""
    if key_padding_mask is None:
        return k, v, float(k.shape[-2])
    keep = (~key_padding_mask)[:, None, :, None].to(k.dtype)  # (b, 1, m, 1)
    count = keep.sum(dim=-2, keepdim=True).clamp_min(1.0)  # (b, 1, 1, 1)
    return k * keep, v * keep, count


def galerkin_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """Galerkin-type attention of Cao (2021): ``q (kᵀ v) / m``, no softmax, linear in the sequence length.

    The per-head LayerNorms on ``k`` and ``v`` of the Galerkin Transformer are applied by the module before this
    call; the kernel is the bare bilinear form with the ``1/m`` quadrature weight (no ``1/√d``, as in Cao's code).

    Shapes:
        - q: ``(b, h, n, d)``
        - k: ``(b, h, m, d)``
        - v: ``(b, h, m, e)``
        - key_padding_mask: bool ``(b, m)``, ``True`` = padding key
        - output: ``(b, h, n, e)``
    """
    k, v, count = _mask_keys(k, v, key_padding_mask)
    context = torch.matmul(k.transpose(-2, -1), v) / count  # (b, h, d, e): never an (n, m) tensor
    return torch.matmul(q, context)


def galerkin_attention_reference(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """Quadratic oracle of :func:`galerkin_attention`: ``((q kᵀ) v) / m`` with the full score matrix."""
    return fourier_attention_reference(q, k, v, key_padding_mask, scale=1.0)


def fourier_attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Fourier-type attention of Cao (2021): ``((q kᵀ) · scale / m) v``, no softmax, quadratic in the length.

    ``scale`` defaults to ``1/√d`` as in Cao's code (``libs/layers.py::attention``). The per-head LayerNorms on
    ``q`` and ``k`` are applied by the module before this call.

    Shapes:
        - q: ``(b, h, n, d)``
        - k: ``(b, h, m, d)``
        - v: ``(b, h, m, e)``
        - key_padding_mask: bool ``(b, m)``, ``True`` = padding key
        - output: ``(b, h, n, e)``
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    k, v, count = _mask_keys(k, v, key_padding_mask)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (scale / count)
    return torch.matmul(scores, v)


def fourier_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Explicit-sum oracle of :func:`fourier_attention` (``out_i = Σ_j (q_i·k_j) v_j · scale / m``, real keys)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    keep = torch.ones(k.shape[0], k.shape[-2], dtype=torch.bool, device=k.device)
    if key_padding_mask is not None:
        keep = ~key_padding_mask
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * keep[:, None, None, :]
    count = keep.sum(dim=-1).clamp_min(1).to(q.dtype)[:, None, None, None]
    return torch.einsum("bhnm,bhme->bhne", scores * scale / count, v)


def normalized_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None, eps: float = _EPS
) -> Tensor:
    """GNOT's normalized linear attention (Hao et al. 2023): ``φ(q) (φ(k)ᵀ v) / (φ(q) · Σ_j φ(k_j))``.

    ``φ`` is a softmax over the feature dim (``dim=-1``) of each query and each key, as in GNOT's ``"l1"``
    attention, so every query's weights over the keys are positive and sum to 1. GNOT's extra ``+ φ(q)`` residual
    term is not part of the kernel. Unlike the official code, padded keys are masked out of both sums.

    Shapes:
        - q: ``(b, h, n, d)``
        - k: ``(b, h, m, d)``
        - v: ``(b, h, m, e)``
        - key_padding_mask: bool ``(b, m)``, ``True`` = padding key
        - output: ``(b, h, n, e)``
    """
    q, k = q.softmax(dim=-1), k.softmax(dim=-1)
    k, v, _ = _mask_keys(k, v, key_padding_mask)
    return _normalized_product(q, k, v, eps)


def normalized_linear_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None, eps: float = _EPS
) -> Tensor:
    """Quadratic oracle of :func:`normalized_linear_attention`: row-normalised ``φ(q) φ(k)ᵀ`` times ``v``."""
    scores = torch.matmul(q.softmax(dim=-1), k.softmax(dim=-1).transpose(-2, -1))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    return torch.matmul(scores / scores.sum(dim=-1, keepdim=True).clamp_min(eps), v)


def _normalized_product(q: Tensor, k: Tensor, v: Tensor, eps: float) -> Tensor:
    """``q (kᵀ v) / (q · Σ_j k_j)`` for non-negative features."""
    numerator = torch.matmul(q, torch.matmul(k.transpose(-2, -1), v))
    denominator = torch.matmul(q, k.sum(dim=-2).unsqueeze(-1))  # (b, h, n, 1)
    return numerator / denominator.clamp_min(eps)


def orthogonal_random_features(
    nb_features: int, dim: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Performer's orthogonal Gaussian projection ``(nb_features, dim)`` (Choromanski et al. 2021).

    Rows come in blocks of ``dim`` orthonormal vectors (QR of a Gaussian matrix), each rescaled by the norm of an
    independent Gaussian vector so that the rows are marginally ``N(0, I)``.
    """
    blocks = []
    for _ in range(math.ceil(nb_features / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        blocks.append(torch.linalg.qr(gaussian).Q.T)
    rows = torch.cat(blocks)[:nb_features]
    norms = torch.randn(nb_features, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (rows * norms).to(dtype)


def favor_feature_map(x: Tensor, projection: Tensor, *, is_query: bool = True) -> Tensor:
    """FAVOR+ positive random features ``exp(wᵀx − |x|²/2) / √r`` (Choromanski et al. 2021).

    For numerical stability a maximum is subtracted inside the exponential: per row for queries (it cancels in
    each query's normalisation) and over all keys and features of a head for keys (a constant shared by all keys,
    so it cancels as well). Scale ``x`` by ``d^(-1/4)`` beforehand to approximate ``softmax(q kᵀ/√d)``.

    Shapes:
        - x: ``(b, h, n, d)``
        - projection: ``(r, d)``
        - output: ``(b, h, n, r)``
    """
    logits = torch.matmul(x, projection.to(x.dtype).transpose(0, 1)) - x.pow(2).sum(dim=-1, keepdim=True) / 2
    if is_query:
        shift = logits.amax(dim=-1, keepdim=True)
    else:
        shift = logits.amax(dim=(-2, -1), keepdim=True)
    return torch.exp(logits - shift.detach()) / math.sqrt(projection.shape[0])


def performer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    key_padding_mask: Tensor | None = None,
    eps: float = _EPS,
) -> Tensor:
    """Performer FAVOR+ attention: an unbiased, linear-cost estimate of ``softmax(q kᵀ/√d) v``.

    ``q`` and ``k`` are scaled by ``d^(-1/4)``, mapped by :func:`favor_feature_map` and combined as in
    :func:`normalized_linear_attention`. The error shrinks as the number of random features ``r`` grows.

    Shapes:
        - q: ``(b, h, n, d)``
        - k: ``(b, h, m, d)``
        - v: ``(b, h, m, e)``
        - projection: ``(r, d)``, e.g. :func:`orthogonal_random_features`
        - key_padding_mask: bool ``(b, m)``, ``True`` = padding key
        - output: ``(b, h, n, e)``
    """
    q_feat, k_feat = _performer_features(q, k, projection)
    k_feat, v, _ = _mask_keys(k_feat, v, key_padding_mask)
    return _normalized_product(q_feat, k_feat, v, eps)


def performer_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    key_padding_mask: Tensor | None = None,
    eps: float = _EPS,
) -> Tensor:
    """Quadratic oracle of :func:`performer_attention` (same random features, explicit score matrix)."""
    q_feat, k_feat = _performer_features(q, k, projection)
    scores = torch.matmul(q_feat, k_feat.transpose(-2, -1))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    return torch.matmul(scores / scores.sum(dim=-1, keepdim=True).clamp_min(eps), v)


def _performer_features(q: Tensor, k: Tensor, projection: Tensor) -> tuple[Tensor, Tensor]:
    data_scale = q.shape[-1] ** -0.25
    q_feat = favor_feature_map(q * data_scale, projection, is_query=True)
    k_feat = favor_feature_map(k * data_scale, projection, is_query=False)
    return q_feat, k_feat


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    chunk_size: int = 128,
    *,
    scale: float = 1.0,
    normalize: bool = False,
    eps: float = _EPS,
) -> Tensor:
    """Causal linear attention ``out_i = scale · Σ_{j≤i} (q_i·k_j) v_j``, computed chunk by chunk.

    Within a chunk the masked ``(c, c)`` scores are used; the keys of earlier chunks enter through a running sum of
    ``kᵀ v`` (``(d, e)`` per head), so cost is ``O(n·(c + d)·e)`` and no ``(n, n)`` tensor is formed. With
    ``normalize=True`` each row is divided by ``Σ_{j≤i} q_i·k_j`` (for non-negative feature maps: the causal
    versions of :func:`normalized_linear_attention` and :func:`performer_attention`; ``scale`` then cancels).
    ``n`` need not be a multiple of ``chunk_size``. Self-attention only (``q``, ``k``, ``v`` of one length).

    Shapes:
        - q, k: ``(b, h, n, d)``
        - v: ``(b, h, n, e)``
        - output: ``(b, h, n, e)``
    """
    if chunk_size < 1:
        raise ValueError(f"causal_linear_attention: chunk_size must be >= 1, got {chunk_size}")
    if not q.shape[-2] == k.shape[-2] == v.shape[-2]:
        raise ValueError(f"causal_linear_attention: q, k, v lengths differ: {q.shape}, {k.shape}, {v.shape}")
    state = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1])  # Σ kᵀ v over the previous chunks
    key_sum = q.new_zeros(*q.shape[:-2], 1, q.shape[-1])  # Σ k over the previous chunks
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        qc, kc, vc = (t[..., start : start + chunk_size, :] for t in (q, k, v))
        scores = torch.matmul(qc, kc.transpose(-2, -1)).tril()  # (b, h, c, c), causal inside the chunk
        numerator = torch.matmul(qc, state) + torch.matmul(scores, vc)
        if normalize:
            denominator = (qc * key_sum).sum(dim=-1, keepdim=True) + scores.sum(dim=-1, keepdim=True)
            outputs.append(numerator / denominator.clamp_min(eps))
            key_sum = key_sum + kc.sum(dim=-2, keepdim=True)
        else:
            outputs.append(numerator * scale)
        state = state + torch.matmul(kc.transpose(-2, -1), vc)
    return torch.cat(outputs, dim=-2)


def causal_linear_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float = 1.0, normalize: bool = False, eps: float = _EPS
) -> Tensor:
    """Quadratic oracle of :func:`causal_linear_attention`: lower-triangular ``q kᵀ`` times ``v``."""
    scores = torch.matmul(q, k.transpose(-2, -1)).tril()
    if normalize:
        return torch.matmul(scores / scores.sum(dim=-1, keepdim=True).clamp_min(eps), v)
    return torch.matmul(scores, v) * scale

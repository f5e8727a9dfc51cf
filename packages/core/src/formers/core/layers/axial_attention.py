"""DeepLab2-style axial attention (Wang et al. 2020, "Axial-DeepLab", arXiv 2003.07853), as used by MaX-DeepLab and
kMaX-DeepLab's pixel decoder (DeepLab2 ``model/layers/axial_layers.py``; PyTorch port in bytedance/kmax-deeplab,
``kmax_pixel_decoder.py``).

:class:`AxialAttention1d` attends along one axis of ``(N, C, L)`` sequences:

- a 1x1 ``qkv`` convolution without bias, then BatchNorm over the ``2 * key_depth + value_depth`` channels;
- per head, three similarity maps: content ``q . k``, query-RPE ``q . r^q_{l,m}`` and key-RPE ``k_m . r^k_{l,m}``,
  concatenated to ``3 * heads`` channels, batch-normalised, and summed (no ``1 / sqrt(d)`` scaling: the BN scales);
- softmax over the keys in float32 (autocast off);
- retrieved content ``sum_m w_{lm} v_m`` and retrieved value-RPE ``sum_m w_{lm} r^v_{l,m}``, concatenated to
  ``2 * value_depth`` channels, batch-normalised and summed.

The relative position tables are ``nn.Embedding(2 * max_span - 1, depth)`` (``max_span = 255`` as in DeepLab2): the
embedding of the distance ``m - l`` sits at row ``m - l + max_span - 1``. Unlike the official code, which builds the
``(L, L)`` distance matrix for a length fixed at construction, the index is computed for the *actual* length at run
time, so one module serves any axis length up to ``max_span`` (a longer axis is a ``ValueError``; the table has no
rows for its distances).

Padding: ``key_padding_mask`` (bool ``(N, L)``, ``True`` = padding, the :mod:`formers.kernels.masks` convention) adds
``-inf`` to the logits of padded keys after the similarity BatchNorm, so a padded key gets exactly zero weight. A
sequence whose keys are all padding (e.g. a column of a map that lies entirely in the padded region) gets zero
weights instead of NaN (the kernels' rule: a query with no visible key returns zeros). In training, the BatchNorm
statistics still include the padded positions (as in the official code, which pads every image to a fixed size); in
eval mode the BN layers are per-channel affine maps, so the real positions' output equals the unpadded computation.

:class:`AxialAttention2d` is DeepLab2's ``AxialAttention2D``: the height axis (on ``(N * W, C, H)``), then the width
axis (on ``(N * H, value_depth, W)``), with the official permutes; it takes a ``(N, H, W)`` padding mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.layers._checks import check_input, check_key_padding_mask, check_positive

__all__ = ["MAX_SPAN", "relative_distance_index", "AxialAttention1d", "AxialAttention2d"]

MAX_SPAN = 255  # DeepLab2's largest supported axis length


def relative_distance_index(length: int, max_span: int = MAX_SPAN, device: torch.device | None = None) -> Tensor:
    """``(length, length)`` int64 rows into a ``2 * max_span - 1`` table: ``key - query + max_span - 1``.

    DeepLab2's ``_compute_relative_distance_matrix(L, L)`` (query and key lengths equal: no memory flange).
    """
    if length > max_span:
        raise ValueError(
            f"axial attention: an axis of length {length} exceeds max_span={max_span}: the relative position tables "
            f"have rows for distances up to {max_span - 1} only (use a smaller input or a model built with a larger "
            "max_span)"
        )
    index = torch.arange(length, device=device)
    return index[None, :] - index[:, None] + (max_span - 1)


def _trunc_normal_tf_(tensor: Tensor, std: float) -> Tensor:
    """timm's ``trunc_normal_tf_``: a standard normal truncated to ``[-2, 2]``, then scaled by ``std`` (the
    TensorFlow ``TruncatedNormal`` initializer used by DeepLab2)."""
    with torch.no_grad():
        nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0)
        return tensor.mul_(std)


def _bn1d(channels: int, eps: float, momentum: float) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=eps, momentum=momentum)


class AxialAttention1d(nn.Module):
    """Multi-head attention along one axis with relative positions in queries, keys and values (DeepLab2).

    Args:
        in_channels: channels ``C`` of the input.
        key_depth: total query/key channels (all heads).
        value_depth: total value channels = output channels (all heads).
        num_heads: heads; must divide ``key_depth`` and ``value_depth``.
        max_span: the largest axis length the tables serve (255 in DeepLab2).
        bn_eps, bn_momentum: of every BatchNorm (TensorFlow's 1e-3 / 0.99 decay = PyTorch momentum 0.01).

    State-dict keys: ``qkv.weight`` (Conv1d), ``norm_qkv``, ``query_rpe`` / ``key_rpe`` / ``value_rpe`` (Embedding),
    ``norm_similarity`` (BatchNorm2d over ``3 * heads``), ``norm_output`` (BatchNorm1d over ``2 * value_depth``).

    Shapes:
        - x: ``(N, in_channels, L)`` with ``L <= max_span``
        - key_padding_mask: optional bool ``(N, L)``, ``True`` = padding
        - output: ``(N, value_depth, L)``
    """

    def __init__(
        self,
        in_channels: int,
        key_depth: int,
        value_depth: int,
        num_heads: int = 8,
        max_span: int = MAX_SPAN,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(
            owner,
            in_channels=in_channels,
            key_depth=key_depth,
            value_depth=value_depth,
            num_heads=num_heads,
            max_span=max_span,
        )
        if key_depth % num_heads or value_depth % num_heads:
            raise ValueError(
                f"{owner}: key_depth {key_depth} and value_depth {value_depth} must be divisible by num_heads "
                f"{num_heads}"
            )
        self.in_channels = in_channels
        self.key_depth = key_depth
        self.value_depth = value_depth
        self.num_heads = num_heads
        self.max_span = max_span
        qkv_channels = 2 * key_depth + value_depth
        self.qkv = nn.Conv1d(in_channels, qkv_channels, kernel_size=1, bias=False)
        self.norm_qkv = _bn1d(qkv_channels, bn_eps, bn_momentum)
        self.query_rpe = nn.Embedding(2 * max_span - 1, key_depth // num_heads)
        self.key_rpe = nn.Embedding(2 * max_span - 1, key_depth // num_heads)
        self.value_rpe = nn.Embedding(2 * max_span - 1, value_depth // num_heads)
        self.norm_similarity = nn.BatchNorm2d(3 * num_heads, eps=bn_eps, momentum=bn_momentum)
        self.norm_output = _bn1d(2 * value_depth, bn_eps, bn_momentum)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DeepLab2's initialisation: qkv ~ truncated normal (std ``in_channels ** -0.5``), tables ~ truncated
        normal (std 1), BatchNorms 1 / 0."""
        _trunc_normal_tf_(self.qkv.weight, std=self.in_channels**-0.5)
        for table in (self.query_rpe, self.key_rpe, self.value_rpe):
            _trunc_normal_tf_(table.weight, std=1.0)
        for norm in (self.norm_qkv, self.norm_similarity, self.norm_output):
            norm.reset_parameters()

    def relative_embeddings(self, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``(L, L, depth)`` query, key and value embeddings ``r_{l,m}`` of the distances ``m - l``."""
        index = relative_distance_index(length, self.max_span, self.query_rpe.weight.device)
        return tuple(table.weight[index] for table in (self.query_rpe, self.key_rpe, self.value_rpe))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        owner = type(self).__name__
        check_input(f"{owner}: x", x, ndim=3, floating=True, dims="(batch, channels, length)")
        n, c, length = x.shape
        if c != self.in_channels:
            raise ValueError(f"{owner}: expected {self.in_channels} input channels, got {c} (shape {tuple(x.shape)})")
        if key_padding_mask is not None:
            check_key_padding_mask(owner, key_padding_mask, (n, length), x.device)
        heads = self.num_heads
        qkv = self.norm_qkv(self.qkv(x))
        q, k, v = torch.split(qkv, [self.key_depth, self.key_depth, self.value_depth], dim=1)
        q = q.reshape(n, heads, self.key_depth // heads, length)
        k = k.reshape(n, heads, self.key_depth // heads, length)
        v = v.reshape(n, heads, self.value_depth // heads, length)
        query_rpe, key_rpe, value_rpe = self.relative_embeddings(length)

        content = torch.einsum("bhdl,bhdm->bhlm", q, k)
        query_similarity = torch.einsum("bhdl,lmd->bhlm", q, query_rpe)
        key_similarity = torch.einsum("bhdm,lmd->bhlm", k, key_rpe)
        logits = torch.cat([content, query_similarity, key_similarity], dim=1)
        logits = self.norm_similarity(logits).reshape(n, 3, heads, length, length).sum(dim=1)

        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = logits.float()
            if key_padding_mask is None:
                weights = F.softmax(logits, dim=-1)
            else:
                # a sequence with no real key keeps its logits unmasked (no NaN, even in backward) and gets zero
                # weights below
                has_key = ~key_padding_mask.all(dim=-1)  # (N,)
                masked = key_padding_mask & has_key[:, None]
                bias = torch.zeros(masked.shape, dtype=logits.dtype, device=logits.device)
                bias = bias.masked_fill(masked, -math.inf)
                weights = F.softmax(logits + bias[:, None, None, :], dim=-1)
                weights = weights * has_key[:, None, None, None].to(weights.dtype)

        retrieved = torch.einsum("bhlm,bhdm->bhdl", weights, v)
        retrieved_rpe = torch.einsum("bhlm,lmd->bhdl", weights, value_rpe)
        out = torch.cat([retrieved, retrieved_rpe], dim=1).reshape(n, 2 * self.value_depth, length)
        return self.norm_output(out).reshape(n, 2, self.value_depth, length).sum(dim=1)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, key_depth={self.key_depth}, value_depth={self.value_depth}, "
            f"num_heads={self.num_heads}, max_span={self.max_span}"
        )


class AxialAttention2d(nn.Module):
    """Height-axis then width-axis :class:`AxialAttention1d` on a ``(N, C, H, W)`` map (DeepLab2's
    ``AxialAttention2D``).

    Args:
        in_channels: input channels.
        filters: base width: ``key_depth = round(filters * key_expansion)``, ``value_depth = round(filters *
            value_expansion)``; the width axis takes the height axis's ``value_depth`` channels.
        key_expansion, value_expansion: 1 and 2 in kMaX-DeepLab.
        num_heads, max_span, bn_eps, bn_momentum: of both axes.

    Shapes:
        - x: ``(N, in_channels, H, W)`` with ``H, W <= max_span``
        - key_padding_mask: optional bool ``(N, H, W)``, ``True`` = padding
        - output: ``(N, value_depth, H, W)``
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        key_expansion: float = 1.0,
        value_expansion: float = 2.0,
        num_heads: int = 8,
        max_span: int = MAX_SPAN,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, filters=filters)
        self.key_depth = int(round(filters * key_expansion))
        self.value_depth = int(round(filters * value_expansion))
        common = dict(num_heads=num_heads, max_span=max_span, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.height_axis = AxialAttention1d(in_channels, self.key_depth, self.value_depth, **common)
        self.width_axis = AxialAttention1d(self.value_depth, self.key_depth, self.value_depth, **common)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        owner = type(self).__name__
        check_input(f"{owner}: x", x, ndim=4, floating=True, dims="(batch, channels, height, width)")
        n, c, h, w = x.shape
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
                raise TypeError(f"{owner}: key_padding_mask must be a torch.bool (N, H, W) tensor (True = padding)")
            if tuple(key_padding_mask.shape) != (n, h, w):
                raise ValueError(
                    f"{owner}: key_padding_mask shape {tuple(key_padding_mask.shape)} does not match (N, H, W) = "
                    f"{(n, h, w)}"
                )
        v = self.value_depth
        # height axis: (N, C, H, W) -> (N, W, C, H) -> (N * W, C, H)
        x = x.permute(0, 3, 1, 2).reshape(n * w, c, h)
        mask = None if key_padding_mask is None else key_padding_mask.permute(0, 2, 1).reshape(n * w, h)
        x = self.height_axis(x, mask)
        # (N, W, V, H) -> (N, H, V, W) -> (N * H, V, W)
        x = x.reshape(n, w, v, h).permute(0, 3, 2, 1).reshape(n * h, v, w)
        mask = None if key_padding_mask is None else key_padding_mask.reshape(n * h, w)
        x = self.width_axis(x, mask)
        # (N, H, V, W) -> (N, V, H, W)
        return x.reshape(n, h, v, w).permute(0, 2, 1, 3).contiguous()

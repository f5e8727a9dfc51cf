"""Windowed and shifted-window self-attention: Swin (Liu et al. 2021) in 2-D, ByteFormer (Horton et al. 2023) in 1-D.

The pieces follow the official Swin code (``microsoft/Swin-Transformer``, ``models/swin_transformer.py``) and timm:

- :func:`window_partition` / :func:`window_reverse` cut a ``(B, H, W, C)`` map into ``(B * nW, Wh, Ww, C)`` windows
  (batch-major, windows in row-major order) and back; :func:`window_partition_1d` / :func:`window_reverse_1d` do the
  same for ``(B, L, C)`` sequences.
- :func:`relative_position_index` is Swin's ``(dy + Wh - 1) * (2 Ww - 1) + (dx + Ww - 1)`` index into a learnable
  ``((2 Wh - 1) (2 Ww - 1), heads)`` bias table (1-D: ``i - j + W - 1`` into a ``(2 W - 1, heads)`` table).
- :func:`shifted_window_mask` is Swin's additive mask for the cyclically shifted map: tokens of different regions
  (those that ``torch.roll`` brought next to each other) get ``-100.0``, others ``0.0``.
- :class:`WindowAttention` attends within ``(B * nW, N, C)`` windows; the relative position bias and the optional
  mask become one ``attn_bias`` for :func:`formers.core.attention.attention`, so SDPA's fused kernel serves it.
  Its parameter names (``qkv``, ``proj``, ``relative_position_bias_table``, buffer ``relative_position_index``)
  match the official Swin and timm, so their checkpoints load 1:1.
- :class:`ShiftedWindowAttention2d` is the attention half of a Swin block on ``(B, H, W, C)``: roll by ``-shift``,
  partition, attend with the mask, reverse, roll back. Same state-dict keys as :class:`WindowAttention`.
- :class:`WindowAttention1d` is the 1-D analogue (ByteFormer), optionally shifted. Unlike the official ByteFormer
  code, the wrap-around mask does reach attention (see ``shared/reference/bytes.md`` section 2.4). Besides the dense
  ``(B, L, C)`` call it runs padded batches (``lengths=``: padding keys and the wrap-around masked) and packed
  sequences (``cu_seqlens=``: every window, and each part of a window split by the wrap-around, is one attention
  segment of the real tokens only; :func:`window_segments_1d`, :class:`PackedWindows1d`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from formers.core.attention import AttentionBackendMixin, attention
from formers.core.layers._checks import check_input, check_probability, check_tokens, resolve_head_dim
from formers.core.varlen import varlen_attention

__all__ = [
    "window_partition",
    "window_reverse",
    "window_partition_1d",
    "window_reverse_1d",
    "relative_position_index",
    "shifted_window_mask",
    "shifted_window_mask_1d",
    "window_segments_1d",
    "PackedWindows1d",
    "WindowAttention",
    "ShiftedWindowAttention2d",
    "WindowAttention1d",
]

MASK_VALUE = -100.0  # the official Swin value (not -inf): a masked pair still gets exp(-100) ~ 0 weight


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``7 -> (7, 7)``; a pair is returned as a tuple; anything else raises ``ValueError``."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _check_window(window: tuple[int, ...], shift: tuple[int, ...], owner: str) -> None:
    if any(not isinstance(w, int) or w < 1 for w in window):
        raise ValueError(f"{owner}: window_size must be positive, got {window}")
    if any(not 0 <= s < w for s, w in zip(shift, window, strict=True)):
        raise ValueError(f"{owner}: shift_size must satisfy 0 <= shift < window_size, got {shift} for {window}")


def _check_multiple(owner: str, sizes: tuple[int, ...], window: tuple[int, ...]) -> None:
    if any(s % w for s, w in zip(sizes, window, strict=True)):
        raise ValueError(f"{owner}: spatial size {sizes} is not a multiple of the window {window}; pad the input first")


# --------------------------------------------------------------------------------------------------------------------
# partition / reverse


def window_partition(x: Tensor, window_size: int | tuple[int, int]) -> Tensor:
    """Cut a channels-last map into non-overlapping windows (Swin layout).

    Args:
        x: the map.
        window_size: ``Ws`` or ``(Wh, Ww)``; ``H`` and ``W`` must be multiples of it.

    Returns:
        The windows, batch-major, then row-major over the window grid.

    Shapes:
        - x: ``(B, H, W, C)``
        - output: ``(B * nW, Wh, Ww, C)`` with ``nW = (H / Wh) (W / Ww)``
    """
    wh, ww = _pair(window_size, "window_size")
    if x.dim() != 4:
        raise ValueError(f"window_partition: x must have rank 4 (B, H, W, C), got shape {tuple(x.shape)}")
    b, h, w, c = x.shape
    _check_multiple("window_partition", (h, w), (wh, ww))
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, c)


def window_reverse(windows: Tensor, window_size: int | tuple[int, int], H: int, W: int) -> Tensor:  # noqa: N803
    """Inverse of :func:`window_partition`.

    Shapes:
        - windows: ``(B * nW, Wh, Ww, C)``
        - output: ``(B, H, W, C)``
    """
    wh, ww = _pair(window_size, "window_size")
    _check_multiple("window_reverse", (H, W), (wh, ww))
    if windows.dim() != 4 or tuple(windows.shape[1:3]) != (wh, ww):
        raise ValueError(f"window_reverse: windows must be (B * nW, {wh}, {ww}, C), got {tuple(windows.shape)}")
    num_windows = (H // wh) * (W // ww)
    if windows.shape[0] % num_windows:
        raise ValueError(f"window_reverse: {windows.shape[0]} windows is not a multiple of nW = {num_windows}")
    b = windows.shape[0] // num_windows
    x = windows.reshape(b, H // wh, W // ww, wh, ww, -1)  # reshape: windows may be a non-contiguous view
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, H, W, -1)


def window_partition_1d(x: Tensor, window_size: int) -> Tensor:
    """Cut a token sequence into non-overlapping windows.

    Shapes:
        - x: ``(B, L, C)`` with ``L`` a multiple of ``window_size``
        - output: ``(B * L / window_size, window_size, C)``
    """
    if x.dim() != 3:
        raise ValueError(f"window_partition_1d: x must have rank 3 (B, L, C), got shape {tuple(x.shape)}")
    _check_multiple("window_partition_1d", (x.shape[1],), (window_size,))
    return x.reshape(-1, window_size, x.shape[-1])


def window_reverse_1d(windows: Tensor, window_size: int, L: int) -> Tensor:  # noqa: N803
    """Inverse of :func:`window_partition_1d`.

    Shapes:
        - windows: ``(B * L / window_size, window_size, C)``
        - output: ``(B, L, C)``
    """
    _check_multiple("window_reverse_1d", (L,), (window_size,))
    if windows.dim() != 3 or windows.shape[1] != window_size or windows.shape[0] % (L // window_size):
        raise ValueError(
            f"window_reverse_1d: windows must be (B * {L // window_size}, {window_size}, C), got {tuple(windows.shape)}"
        )
    return windows.reshape(-1, L, windows.shape[-1])


# --------------------------------------------------------------------------------------------------------------------
# relative position index and shift masks


def relative_position_index(window_size: int | tuple[int, ...]) -> Tensor:
    """Index of each (query, key) pair of a window into the relative position bias table.

    ``7`` or ``(Wh, Ww)``: the official Swin index ``(dy + Wh - 1) (2 Ww - 1) + (dx + Ww - 1)`` with
    ``dy = y_q - y_k``, ``dx = x_q - x_k``, values in ``[0, (2 Wh - 1)(2 Ww - 1))``. A 1-tuple ``(W,)``: the 1-D index
    ``i - j + W - 1`` in ``[0, 2 W - 1)``.

    Shapes:
        - output: long ``(N, N)`` with ``N = Wh * Ww`` (2-D) or ``N = W`` (1-D)
    """
    if isinstance(window_size, tuple) and len(window_size) == 1:
        pos = torch.arange(window_size[0])
        return pos[:, None] - pos[None, :] + window_size[0] - 1
    wh, ww = _pair(window_size, "window_size")
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2): (dy, dx)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


def _region_labels(size: int, window: int, shift: int) -> Tensor:
    """Swin's three regions along one axis: ``[0, -window)``, ``[-window, -shift)``, ``[-shift, size)``."""
    labels = torch.zeros(size, dtype=torch.long)
    if shift > 0:
        labels[size - window : size - shift] = 1
        labels[size - shift :] = 2
    return labels


def _labels_to_mask(window_labels: Tensor, value: float) -> Tensor:
    """``(nW, N)`` region labels -> ``(nW, N, N)`` additive mask: ``value`` across regions, ``0`` within."""
    differ = window_labels[:, None, :] != window_labels[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, value)


@functools.lru_cache(maxsize=32)
def _shifted_window_mask_cpu(
    height: int, width: int, window: tuple[int, int], shift: tuple[int, int], value: float
) -> Tensor:
    labels = _region_labels(height, window[0], shift[0])[:, None] * 3 + _region_labels(width, window[1], shift[1])
    windows = window_partition(labels[None, :, :, None], window).flatten(1)  # (nW, N)
    return _labels_to_mask(windows, value)


def shifted_window_mask(
    H: int,  # noqa: N803
    W: int,  # noqa: N803
    window_size: int | tuple[int, int],
    shift_size: int | tuple[int, int],
    *,
    value: float = MASK_VALUE,
) -> Tensor:
    """Additive attention mask of Swin's shifted windows (SW-MSA), as in the official code.

    The rolled map is labelled with the 3 x 3 regions given by the slices ``(0, -Ws)``, ``(-Ws, -s)``, ``(-s, None)``
    of each axis; a (query, key) pair of one window gets ``value`` (``-100.0``) when their labels differ, else ``0``.
    With ``shift_size == 0`` the mask is all zeros.

    Returns:
        A new float32 tensor on the CPU (move it with ``.to(device, dtype)``).

    Shapes:
        - output: ``(nW, N, N)`` with ``nW = (H / Wh)(W / Ww)`` and ``N = Wh * Ww``
    """
    window, shift = _pair(window_size, "window_size"), _pair(shift_size, "shift_size")
    _check_window(window, shift, "shifted_window_mask")
    _check_multiple("shifted_window_mask", (H, W), window)
    return _shifted_window_mask_cpu(H, W, window, shift, float(value)).clone()


def shifted_window_mask_1d(L: int, window_size: int, shift_size: int, *, value: float = MASK_VALUE) -> Tensor:  # noqa: N803
    """1-D analogue of :func:`shifted_window_mask`: after ``roll(-shift)``, the wrapped-around tail is its own region.

    Shapes:
        - output: float32 ``(L / window_size, window_size, window_size)``
    """
    _check_window((window_size,), (shift_size,), "shifted_window_mask_1d")
    _check_multiple("shifted_window_mask_1d", (L,), (window_size,))
    labels = _region_labels(L, window_size, shift_size).view(-1, window_size)
    return _labels_to_mask(labels, value)


# --------------------------------------------------------------------------------------------------------------------
# packed (padding-free) 1-D windows


def window_segments_1d(lengths: Sequence[int], window_size: int, shift_size: int = 0) -> list[int]:
    """Lengths of the attention segments of packed sequences, in packed order.

    A sequence of ``n`` tokens rolled by ``-shift`` and cut into windows of ``W`` (padded to a multiple of ``W``) has
    its real tokens grouped as ``[0, shift)`` (the part the roll wrapped to the end: masked from the rest of its
    window) and ``[shift + i W, shift + (i + 1) W)``, each cut at ``n``; without a shift, ``[i W, (i + 1) W)``. This
    grouping does not depend on how much padding follows the sequence. Empty sequences give no segment.
    """
    _check_window((window_size,), (shift_size,), "window_segments_1d")
    segments: list[int] = []
    for n in lengths:
        n = int(n)
        if n < 0:
            raise ValueError(f"window_segments_1d: lengths must be >= 0, got {n}")
        head = min(shift_size, n)
        if head:
            segments.append(head)
        full, tail = divmod(n - head, window_size)
        segments.extend([window_size] * full)
        if tail:
            segments.append(tail)
    return segments


@dataclass(frozen=True)
class PackedWindows1d:
    """Where the tokens of packed sequences sit in their (shifted) windows; built by :meth:`build` (cached).

    Attributes:
        segments: segment lengths in packed order (:func:`window_segments_1d`).
        cu_seqlens: int32 ``(S + 1,)`` offsets of the segments (the ``varlen`` layout).
        full: long ``(F * W,)`` packed positions of the tokens of the ``F`` full segments, segment after segment.
        partial: long ``(P, Wp)`` packed position of slot ``j`` of the ``P`` shorter segments (``Wp`` = the longest
            of them; empty slots point at token 0 and are masked).
        partial_pad: bool ``(P, Wp)``, ``True`` = empty slot.
        inverse: long ``(total,)``: ``cat(full, partial[~partial_pad])[inverse]`` is the identity (puts the grouped
            outputs back in packed order).
    """

    segments: tuple[int, ...]
    window_size: int
    cu_seqlens: Tensor
    full: Tensor
    partial: Tensor
    partial_pad: Tensor
    inverse: Tensor

    @staticmethod
    def build(lengths: Sequence[int], window_size: int, shift_size: int, device: torch.device) -> PackedWindows1d:
        """The layout of packed sequences of ``lengths`` tokens for windows of ``window_size`` shifted by ``shift``."""
        return _packed_windows_1d(tuple(int(n) for n in lengths), window_size, shift_size, str(device))


@functools.lru_cache(maxsize=64)
def _packed_windows_1d(lengths: tuple[int, ...], window: int, shift: int, device: str) -> PackedWindows1d:
    # cached: every layer of a stage with the same shift reuses it within a forward (and the backward)
    segments = window_segments_1d(lengths, window, shift)
    seg = torch.tensor(segments, dtype=torch.long)
    cu = torch.zeros(len(segments) + 1, dtype=torch.long)
    cu[1:] = seg.cumsum(0)
    starts = cu[:-1]
    is_full = seg == window
    full = (starts[is_full][:, None] + torch.arange(window)).flatten()
    part_len, part_start = seg[~is_full], starts[~is_full]
    width = int(part_len.max()) if part_len.numel() else 0
    slots = torch.arange(width)
    partial_pad = slots[None, :] >= part_len[:, None]
    partial = (part_start[:, None] + slots).masked_fill(partial_pad, 0)
    order = torch.cat([full, partial[~partial_pad]])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return PackedWindows1d(
        segments=tuple(segments),
        window_size=window,
        cu_seqlens=cu.to(device=device, dtype=torch.int32),
        full=full.to(device),
        partial=partial.to(device),
        partial_pad=partial_pad.to(device),
        inverse=inverse.to(device),
    )


@functools.lru_cache(maxsize=64)
def _segment_relative_index(segments: tuple[int, ...], window: int, device: str) -> Tensor:
    """``i - j + W - 1`` of every (query, key) pair of every segment, blocks row-major in segment order."""
    blocks = [relative_position_index((window,))[:n, :n].flatten() for n in sorted(set(segments))]
    by_len = dict(zip(sorted(set(segments)), blocks, strict=True))
    return torch.cat([by_len[n] for n in segments]).to(device) if segments else torch.zeros(0, dtype=torch.long)


# --------------------------------------------------------------------------------------------------------------------
# modules


class _WindowAttentionBase(AttentionBackendMixin, nn.Module):
    """Shared ``qkv`` / ``proj`` projections and the windowed attention call."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_shape: tuple[int, ...],
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        backend: str,
    ) -> None:
        super().__init__()
        self.head_dim = resolve_head_dim(type(self).__name__, dim, num_heads)
        check_probability(type(self).__name__, attn_drop=attn_drop, proj_drop=proj_drop)
        self.dim = dim
        self.num_heads = num_heads
        self.scale = self.head_dim**-0.5
        self.backend = backend
        self.attn_drop = attn_drop
        self.window_tokens = 1
        for w in window_shape:
            self.window_tokens *= w
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _init_bias_table(self, table_size: int, window_shape: tuple[int, ...]) -> None:
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_size, self.num_heads))
        index = relative_position_index(window_shape)
        self.register_buffer("relative_position_index", index, persistent=True)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor | None:
        """The learned bias gathered per (query, key) pair, ``(num_heads, N, N)`` (``None`` without a table)."""
        table = getattr(self, "relative_position_bias_table", None)
        if table is None:
            return None
        n = self.window_tokens
        return table[self.relative_position_index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)

    def _check_windows(self, x: Tensor, mask: Tensor | None) -> None:
        name = type(self).__name__
        check_tokens(name, "x", x, self.dim)
        if x.shape[1] != self.window_tokens:
            raise ValueError(f"{name}: x must hold {self.window_tokens} tokens per window, got shape {tuple(x.shape)}")
        if mask is None:
            return
        n = self.window_tokens
        if not isinstance(mask, Tensor) or mask.dim() != 3 or tuple(mask.shape[1:]) != (n, n):
            raise ValueError(
                f"{name}: mask must have shape (num_windows, {n}, {n}), got {getattr(mask, 'shape', mask)}"
            )
        if not mask.is_floating_point():
            raise TypeError(f"{name}: mask must be an additive float tensor, got {mask.dtype}")
        if x.shape[0] % mask.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} windows in x is not a multiple of the mask's {mask.shape[0]}")

    def _attend(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Attention within each window; with a mask, the windows are folded into the head axis (no bias copy)."""
        self._check_windows(x, mask)
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B * nW, h, N, d)
        bias = self.relative_position_bias()
        if bias is not None:
            bias = bias.to(q.dtype).unsqueeze(0)  # (1, h, N, N)
        if mask is not None:
            nw = mask.shape[0]
            mask = mask.to(device=q.device, dtype=q.dtype).unsqueeze(1)  # (nW, 1, N, N)
            bias = mask if bias is None else bias + mask  # (nW, h or 1, N, N)
            bias = bias.expand(nw, self.num_heads, n, n).reshape(1, nw * self.num_heads, n, n)
            q, k, v = (t.reshape(b_ // nw, nw * self.num_heads, n, self.head_dim) for t in (q, k, v))
        out = attention(
            q,
            k,
            v,
            attn_bias=bias,
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
            backend=self.backend,
        )
        out = out.reshape(b_, self.num_heads, n, self.head_dim).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(out))


class WindowAttention(_WindowAttentionBase):
    """Window multi-head self-attention with a relative position bias (Swin W-MSA / SW-MSA).

    Args:
        dim: token width ``C``.
        num_heads: number of heads (``dim`` must divide evenly).
        window_size: ``Ws`` or ``(Wh, Ww)``.
        qkv_bias: add a bias to the fused ``qkv`` projection.
        attn_drop: dropout on the attention probabilities (training only).
        proj_drop: dropout after the output projection.
        backend: attention backend name, ``"auto"`` by default (see ``python -m formers.core.attention``).

    Shapes:
        - x: ``(B * nW, N, C)`` with ``N = Wh * Ww`` (from :func:`window_partition`, flattened)
        - mask: float ``(nW, N, N)`` additive (e.g. :func:`shifted_window_mask`); ``B * nW`` windows of ``x`` are
          batch-major, so window ``i`` of ``x`` uses ``mask[i % nW]``
        - output: ``(B * nW, N, C)``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        window = _pair(window_size, "window_size")
        _check_window(window, (0, 0), type(self).__name__)
        super().__init__(dim, num_heads, window, qkv_bias, attn_drop, proj_drop, backend)
        self.window_size = window
        self._init_bias_table((2 * window[0] - 1) * (2 * window[1] - 1), window)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self._attend(x, mask)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, backend={self.backend!r}"


class ShiftedWindowAttention2d(WindowAttention):
    """The attention half of a Swin block on a channels-last map: roll, partition, attend, reverse, roll back.

    State-dict keys equal :class:`WindowAttention`'s (and the official Swin's / timm's ``attn.*``). The shift mask is
    built on first use for each ``(H, W)`` and cached. ``H`` and ``W`` must be multiples of the window; as in Swin,
    pick ``window = resolution`` and ``shift_size = 0`` when the map is not larger than the window.

    Args:
        dim, num_heads, window_size, qkv_bias, attn_drop, proj_drop, backend: as in :class:`WindowAttention`.
        shift_size: cyclic shift ``s`` or ``(sh, sw)``, ``0 <= s < window`` (Swin: ``window // 2`` on odd blocks).

    Shapes:
        - x: ``(B, H, W, C)``
        - output: ``(B, H, W, C)``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int],
        shift_size: int | tuple[int, int] = 0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__(dim, num_heads, window_size, qkv_bias, attn_drop, proj_drop, backend)
        self.shift_size = _pair(shift_size, "shift_size")
        _check_window(self.window_size, self.shift_size, type(self).__name__)

    @property
    def is_shifted(self) -> bool:
        return any(self.shift_size)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend ``x`` ``(B, H, W, C)`` in (shifted) windows; ``mask`` overrides the shift mask built for ``(H, W)``
        (e.g. a precomputed buffer, as Swin keeps); it is ignored without a shift, as in Swin."""
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"{name}: x must be (B, H, W, {self.dim}), got shape {getattr(x, 'shape', x)}")
        b, h, w, c = x.shape
        _check_multiple(name, (h, w), self.window_size)
        sh, sw = self.shift_size
        if self.is_shifted:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
            if mask is None:
                mask = _shifted_window_mask_cpu(h, w, self.window_size, self.shift_size, MASK_VALUE)
        else:
            mask = None
        # reshape, not view: with one window row and B = 1 the partition is a non-contiguous view of x
        windows = window_partition(x, self.window_size).reshape(-1, self.window_tokens, c)
        windows = self._attend(windows, mask)
        x = window_reverse(windows.view(-1, *self.window_size, c), self.window_size, h, w)
        if self.is_shifted:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shift_size={self.shift_size}"


PACKED_MODES = ("varlen", "grouped")


class WindowAttention1d(_WindowAttentionBase):
    """1-D windowed self-attention over a token sequence (ByteFormer), optionally shifted, optional relative bias.

    The sequence is rolled by ``-shift_size``, cut into windows of ``window_size`` tokens, attended per window and put
    back. With a shift, tokens that the roll wrapped around from the start to the end do not attend across the ends
    (additive ``-100.0`` mask, as in Swin). ByteFormer uses no relative bias (``relative_position_bias=False``).

    Three layouts (one set of weights):

    - dense ``forward(x)``: ``(B, L, C)``, every token real, ``L`` a multiple of the window (unchanged behaviour);
      ``wrap_around_mask=False`` drops the wrap-around mask (the official ByteFormer code's defect, for checkpoint
      parity only).
    - padded ``forward(x, lengths=n)``: ``(B, L, C)`` right-padded rows of ``n[b]`` real tokens, any ``L``: the rows
      are padded to a multiple of the window, padding keys and the wrap-around are masked with ``-inf``, so a row's
      real outputs do not depend on the padding; padding positions of the output are zeros.
    - packed ``forward(x, cu_seqlens=cu)``: ``(total, C)`` real tokens only, sequences back to back. Each window, and
      each part of a window split by the wrap-around, is one attention segment (:func:`window_segments_1d`), so
      nothing is masked and nothing is padded. ``packed_mode="varlen"`` (default) runs the segments through
      :func:`~formers.core.varlen.varlen_attention` in packed order (on CPU one fused SDPA call per run of
      equal-length segments, no mask); ``"grouped"`` gathers the full segments into one dense ``(F, heads, W, d)``
      :func:`~formers.core.attention.attention` call and the shorter ones into one call padded to the longest of
      them (key padding masked), at the price of two gathers (measured ~15 % slower for ByteFormer-Ti training on
      one CPU thread). Both give the padded layout's real outputs.

    Args:
        dim: token width ``C``.
        num_heads: number of heads.
        window_size: tokens per window ``W`` (ByteFormer: 128).
        shift_size: cyclic shift, ``0 <= shift < W`` (ByteFormer: 0 / 64 alternating).
        qkv_bias, attn_drop, proj_drop, backend: as in :class:`WindowAttention`.
        relative_position_bias: learn a ``(2 W - 1, num_heads)`` bias table indexed by ``i - j``.
        packed_mode: ``"varlen"`` or ``"grouped"``, the kernel layout of the packed call (see above).

    Shapes:
        - x: ``(B, L, C)`` with ``L`` a multiple of ``window_size`` (dense), any ``L`` with ``lengths`` ``(B,)``, or
          ``(total, C)`` with ``cu_seqlens`` int ``(B + 1,)``
        - output: the shape of ``x``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int = 0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
        relative_position_bias: bool = False,
        packed_mode: str = "varlen",
    ) -> None:
        _check_window((window_size,), (shift_size,), type(self).__name__)
        super().__init__(dim, num_heads, (window_size,), qkv_bias, attn_drop, proj_drop, backend)
        self.window_size = window_size
        self.shift_size = shift_size
        self.packed_mode = packed_mode
        if relative_position_bias:
            self._init_bias_table(2 * window_size - 1, (window_size,))

    @property
    def packed_mode(self) -> str:
        return self._packed_mode

    @packed_mode.setter
    def packed_mode(self, mode: str) -> None:
        if mode not in PACKED_MODES:
            raise ValueError(f"{type(self).__name__}: packed_mode must be one of {PACKED_MODES}, got {mode!r}")
        self._packed_mode = mode

    def forward(
        self,
        x: Tensor,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        cu_seqlens: Tensor | None = None,
        wrap_around_mask: bool = True,
    ) -> Tensor:
        name = type(self).__name__
        if (lengths is not None or cu_seqlens is not None) and not wrap_around_mask:
            raise ValueError(f"{name}: wrap_around_mask=False is only for the dense layout (no lengths / cu_seqlens)")
        if cu_seqlens is not None:
            if lengths is not None:
                raise ValueError(f"{name}: pass lengths (padded layout) or cu_seqlens (packed layout), not both")
            return self._forward_packed(x, cu_seqlens)
        if lengths is not None:
            return self._forward_padded(x, lengths)
        check_tokens(name, "x", x, self.dim)
        length = x.shape[1]
        _check_multiple(name, (length,), (self.window_size,))
        mask = None
        if self.shift_size:
            x = torch.roll(x, shifts=-self.shift_size, dims=1)
            if wrap_around_mask:
                mask = shifted_window_mask_1d(length, self.window_size, self.shift_size)
        out = window_reverse_1d(self._attend(window_partition_1d(x, self.window_size), mask), self.window_size, length)
        if self.shift_size:
            out = torch.roll(out, shifts=self.shift_size, dims=1)
        return out

    # ---------------------------------------------------------------------------------------------------- padded

    def _forward_padded(self, x: Tensor, lengths: Tensor | Sequence[int]) -> Tensor:
        name = type(self).__name__
        check_tokens(name, "x", x, self.dim)
        b, length, c = x.shape
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (b,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise ValueError(
                f"{name}: lengths must be integers of shape ({b},), got {lengths.dtype} {tuple(lengths.shape)}"
            )
        if b and (bool((lengths < 0).any()) or bool((lengths > length).any())):
            raise ValueError(f"{name}: lengths must be in [0, {length}], got {lengths.tolist()}")
        w, s = self.window_size, self.shift_size
        padded = -(-length // w) * w
        real = torch.arange(padded, device=x.device)[None, :] < lengths[:, None]  # (B, P)
        x = nn.functional.pad(x, (0, 0, 0, padded - length))
        if s:
            x, real = torch.roll(x, -s, dims=1), torch.roll(real, -s, dims=1)
        windows = window_partition_1d(x, w)  # (B * nW, W, C)
        n_windows = windows.shape[0]
        qkv = self.qkv(windows).reshape(n_windows, w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias()
        bias = None if bias is None else bias.to(q.dtype).unsqueeze(0)  # (1, h, W, W)
        if s:  # the wrap-around: -inf between the two regions of each row's last window
            shift = shifted_window_mask_1d(padded, w, s, value=float("-inf")).to(device=q.device, dtype=q.dtype)
            shift = shift.unsqueeze(1).repeat(b, 1, 1, 1)  # (B * nW, 1, W, W), windows batch-major
            bias = shift if bias is None else bias + shift
        out = attention(
            q,
            k,
            v,
            attn_bias=bias,
            key_padding_mask=~real.reshape(n_windows, w),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
            backend=self.backend,
        )
        out = out.transpose(1, 2).reshape(b, padded, c)
        if s:
            out, real = torch.roll(out, s, dims=1), torch.roll(real, s, dims=1)
        out = self.proj_drop(self.proj(out[:, :length]))
        return out.masked_fill(~real[:, :length, None], 0.0)

    # ---------------------------------------------------------------------------------------------------- packed

    def _forward_packed(self, x: Tensor, cu_seqlens: Tensor) -> Tensor:
        name = type(self).__name__
        check_input(f"{name}: packed x", x, ndim=2, floating=True, dims=f"(total, {self.dim})")
        if x.shape[-1] != self.dim:
            raise ValueError(f"{name}: packed x must have {self.dim} channels, got shape {tuple(x.shape)}")
        if not isinstance(cu_seqlens, Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
            raise ValueError(f"{name}: cu_seqlens must be a 1-D int tensor (batch + 1,), got {cu_seqlens!r}")
        offsets = cu_seqlens.tolist()
        if offsets[0] != 0 or offsets[-1] != x.shape[0] or any(b < a for a, b in itertools.pairwise(offsets)):
            raise ValueError(f"{name}: cu_seqlens must rise from 0 to {x.shape[0]} tokens, got {offsets}")
        lengths = [b - a for a, b in itertools.pairwise(offsets)]
        layout = PackedWindows1d.build(lengths, self.window_size, self.shift_size, x.device)
        if x.shape[0] == 0:
            return self.proj_drop(self.proj(x))
        if self.packed_mode == "varlen":
            out = self._attend_varlen(x, layout)
        else:
            out = self._attend_grouped(x, layout)
        return self.proj_drop(self.proj(out))

    def _attend_varlen(self, x: Tensor, layout: PackedWindows1d) -> Tensor:
        """Every segment one sequence of :func:`varlen_attention` (packed order, no gather)."""
        t = x.shape[0]
        q, k, v = self.qkv(x).view(t, 3, self.num_heads, self.head_dim).unbind(1)
        bias = None
        table = getattr(self, "relative_position_bias_table", None)
        if table is not None:  # packed per-segment bias (heads, sum_i n_i^2)
            index = _segment_relative_index(layout.segments, self.window_size, str(x.device))
            bias = table[index].t().to(q.dtype)
        out = varlen_attention(
            q,
            k,
            v,
            layout.cu_seqlens,
            scale=self.scale,
            dropout_p=self.attn_drop if self.training else 0.0,
            attn_bias=bias,
            backend=self.backend,
        )
        return out.reshape(t, self.dim)

    def _attend_grouped(self, x: Tensor, layout: PackedWindows1d) -> Tensor:
        """Full segments as one dense batch, shorter ones as one batch padded to the longest of them."""
        w, h, d = self.window_size, self.num_heads, self.head_dim
        n_full, (n_part, width) = layout.full.numel() // w, layout.partial.shape
        qkv = self.qkv(x[torch.cat([layout.full, layout.partial.flatten()])])
        bias = self.relative_position_bias()  # (h, W, W) or None
        dropout = self.attn_drop if self.training else 0.0
        outs = []
        for rows, seg_len, pad in ((n_full, w, None), (n_part, width, layout.partial_pad)):
            if rows == 0:
                continue
            part, qkv = qkv[: rows * seg_len], qkv[rows * seg_len :]
            q, k, v = part.view(rows, seg_len, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            seg_bias = None if bias is None else bias[:, :seg_len, :seg_len].to(q.dtype).unsqueeze(0)
            out = attention(
                q,
                k,
                v,
                attn_bias=seg_bias,
                key_padding_mask=pad,
                dropout_p=dropout,
                scale=self.scale,
                backend=self.backend,
            )
            out = out.transpose(1, 2).reshape(rows * seg_len, self.dim)
            outs.append(out if pad is None else out[~pad.flatten()])
        return torch.cat(outs)[layout.inverse]

    def extra_repr(self) -> str:
        bias = hasattr(self, "relative_position_bias_table")
        return (
            f"dim={self.dim}, window_size={self.window_size}, shift_size={self.shift_size}, "
            f"num_heads={self.num_heads}, relative_position_bias={bias}, backend={self.backend!r}, "
            f"packed_mode={self.packed_mode!r}"
        )

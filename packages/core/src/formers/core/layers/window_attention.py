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
  code, the wrap-around mask does reach attention (see ``shared/reference/bytes.md`` section 2.4).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from formers.core.attention import AttentionBackendMixin, attention
from formers.core.layers._checks import check_probability, check_tokens, resolve_head_dim

__all__ = [
    "window_partition",
    "window_reverse",
    "window_partition_1d",
    "window_reverse_1d",
    "relative_position_index",
    "shifted_window_mask",
    "shifted_window_mask_1d",
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


class WindowAttention1d(_WindowAttentionBase):
    """1-D windowed self-attention over a token sequence (ByteFormer), optionally shifted, optional relative bias.

    The sequence is rolled by ``-shift_size``, cut into windows of ``window_size`` tokens, attended per window and put
    back. With a shift, tokens that the roll wrapped around from the start to the end do not attend across the ends
    (additive ``-100.0`` mask, as in Swin). ByteFormer uses no relative bias (``relative_position_bias=False``).

    Args:
        dim: token width ``C``.
        num_heads: number of heads.
        window_size: tokens per window ``W`` (ByteFormer: 128).
        shift_size: cyclic shift, ``0 <= shift < W`` (ByteFormer: 0 / 64 alternating).
        qkv_bias, attn_drop, proj_drop, backend: as in :class:`WindowAttention`.
        relative_position_bias: learn a ``(2 W - 1, num_heads)`` bias table indexed by ``i - j``.

    Shapes:
        - x: ``(B, L, C)`` with ``L`` a multiple of ``window_size`` (pad first)
        - output: ``(B, L, C)``
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
    ) -> None:
        _check_window((window_size,), (shift_size,), type(self).__name__)
        super().__init__(dim, num_heads, (window_size,), qkv_bias, attn_drop, proj_drop, backend)
        self.window_size = window_size
        self.shift_size = shift_size
        if relative_position_bias:
            self._init_bias_table(2 * window_size - 1, (window_size,))

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        check_tokens(name, "x", x, self.dim)
        length = x.shape[1]
        _check_multiple(name, (length,), (self.window_size,))
        mask = None
        if self.shift_size:
            x = torch.roll(x, shifts=-self.shift_size, dims=1)
            mask = shifted_window_mask_1d(length, self.window_size, self.shift_size)
        out = window_reverse_1d(self._attend(window_partition_1d(x, self.window_size), mask), self.window_size, length)
        if self.shift_size:
            out = torch.roll(out, shifts=self.shift_size, dims=1)
        return out

    def extra_repr(self) -> str:
        bias = hasattr(self, "relative_position_bias_table")
        return (
            f"dim={self.dim}, window_size={self.window_size}, shift_size={self.shift_size}, "
            f"num_heads={self.num_heads}, relative_position_bias={bias}, backend={self.backend!r}"
        )

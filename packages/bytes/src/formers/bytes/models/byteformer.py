"""ByteFormer (Horton et al., "Bytes Are All You Need: Transformers Operating Directly On File Bytes", TMLR 2024,
arXiv 2306.00238): a classifier of raw file bytes, padding-free.

Follows apple/ml-cvnets @ 7771756 (``cvnets/models/classification/byteformer.py``, ``config/byteformer.py``,
``cvnets/modules/windowed_transformer.py``, ``cvnets/layers/token_merging.py``; apple/corenet has the same code):

* ``Embedding(257, d, padding_idx=256)`` (256 byte values + the padding/mask id 256, whose row stays zero) ->
  ``Conv1d(d, d, k, stride k // 2, bias=False)`` (50 % overlap; ``k`` 32 in the TIFF/WAV configs) -> a learned
  positional table of ``max_num_tokens`` rows sliced to the ``N`` tokens (no interpolation) -> dropout.
* ``depth`` pre-norm encoder layers (``LN -> MHA -> dropout -> +res``, ``LN -> FFN(GELU, 4 d) -> +res``, LayerNorm
  eps 1e-5) attending in windows of 128 tokens, shifted by 0 / 64 on alternate layers (``torch.roll``).
* ``TokenMerging`` after layers 0, 1, 3, 5, 7, 9: concatenate tokens ``(2 i, 2 i + 1)`` (an odd count is padded with
  one zero token) -> ``Linear(2 d, d, bias=False)`` -> LayerNorm (the norm comes after the projection): 64x fewer
  tokens. (The official ``unfold`` interleaves the pair channel by channel; :func:`checkpoint_filter_fn` reorders
  the projection's columns to the concatenation.)
* final LayerNorm -> mean over the tokens -> ``Linear(d, num_classes)``.

The official defaults: dropout, attention dropout, FFN dropout and stochastic depth 0 (the config's
``pos_emb_drop_p = 0.1`` is never read: the embedding dropout uses ``dropout``); GELU (exact); Linear init
trunc-normal std 0.02 (the configs' ``linear_init``), embeddings trunc-normal std ``d ** -0.5``, Conv1d PyTorch's
default (cvnets' init only touches Conv2d/3d).

**Correct by default** (``shared/reference/bytes.md`` 2.4: the official padding mask is never set and neither it nor
the shift mask reaches attention). Here a row's logits depend only on its own ``lengths[b]`` bytes:

* conv tokens per row: ``N_b = (max(n_b, k) - k) // (k // 2) + 1`` from its own byte count ``n_b`` (the conv drops
  trailing bytes that do not fill a kernel, as the official conv does at the batch end). A file shorter than ``k``
  bytes is padded to ``k`` with id 256 (the zero padding embedding): one token. A row of 0 bytes is refused
  (``ValueError`` naming the row), as are ids outside 0..256 and rows with more than ``max_num_tokens`` tokens (the
  message gives the limit in bytes, ``max_num_tokens * (k // 2) + k - 1``).
* windows: each row is windowed on its own, the wrap-around of the shifted windows is separated (as the official
  code intends), merging pairs a row's odd last token with zeros, the mean pool divides by the row's own count.
* ``padding_free=True`` (default): only real tokens are computed. The conv runs on the packed receptive fields, the
  layers on packed tokens (``(total, d)``), attention per window segment
  (:class:`formers.core.layers.WindowAttention1d` with ``cu_seqlens``: every window, and each part of a window split
  by the wrap-around, is one sequence of :func:`formers.core.varlen.varlen_attention`), merging per row, the pool
  per row.
* ``padding_free=False``: the same arithmetic on the padded batch with padding and wrap-around masks (the pad-and-mask
  baseline of the benchmark); same outputs up to float rounding.
* ``official_compat=True``: the official arithmetic with its defects, for released ml-cvnets/corenet checkpoints
  (through :func:`checkpoint_filter_fn`): the batch is padded with 256 to its longest row, every row gets the batch's
  token count, the windows are padded with zero tokens (before the pre-norm), padding and wrapped-around tokens
  attend, merging and the pool see padded tokens and the pool divides by the batch's token count. Logits then depend
  on the batch. (A batch shorter than ``k`` bytes, where the official conv fails, is padded to ``k`` with 256; drop
  path, 0 in every official config, is drawn per row instead of per window.)

The conv is computed as ``conv(embed(ids))[o] = sum_t (W[:, :, t] @ E)[ids[t], o]``: one ``(k, 257, d)`` table of
per-tap projected embeddings, then a sum of ``k`` table rows per token (``F.embedding_bag``): the same linear map as
``Conv1d`` on the embedded bytes (to float rounding) at ``1/d`` of its multiply-adds, without the ``(B, L, d)``
byte-level activation (BF-Ti, 8 FSDD WAV files, one CPU thread: 88 ms forward + backward against 1.35 s).

Weight decay: the official configs exclude only 1-D parameters (``no_decay_bn_filter_bias``), so the positional and
byte tables are decayed; :class:`ByteFormer` names no ``no_weight_decay`` parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.layers import DropPath, Mlp, WindowAttention1d
from formers.core.layers._checks import check_input, check_positive, check_probability
from formers.core.layers.drop import drop_path
from formers.core.models import FormersModel
from formers.core.registry import register_model
from formers.core.varlen import cu_seqlens_from_lengths

__all__ = [
    "PAD_ID",
    "VOCAB_SIZE",
    "ByteFormerBlock",
    "TokenMerging",
    "ByteFormer",
    "num_conv_tokens",
    "checkpoint_filter_fn",
    "byteformer_tiny",
    "byteformer_small",
    "byteformer_base",
    "byteformer_huge",
]

_PAPER = "Bytes Are All You Need: Transformers Operating Directly On File Bytes (Horton et al., TMLR 2024)"
PAD_ID = 256  # padding / mask id; its embedding row is zero (padding_idx)
VOCAB_SIZE = 257
DEFAULT_DOWNSAMPLE = (0, 1, 3, 5, 7, 9)  # official: [T, T, F, T, F, T, F, T, F, T, F, F]


def num_conv_tokens(num_bytes: int, kernel_size: int) -> int:
    """Tokens the stride-``k // 2`` conv makes of ``num_bytes`` bytes (files shorter than ``k`` count as ``k``)."""
    return (max(num_bytes, kernel_size) - kernel_size) // (kernel_size // 2) + 1


def _as_per_layer(owner: str, name: str, value: int | Sequence[int], depth: int) -> tuple[int, ...]:
    values = (value,) * depth if isinstance(value, int) else tuple(value)
    if len(values) == 1:
        values *= depth
    if len(values) != depth or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"{owner}: {name} must be an int or {depth} ints (one per layer), got {value!r}")
    return values


# ----------------------------------------------------------------------------------------------------------- layers


def _packed_drop_path(x: Tensor, module: nn.Module, lengths: Tensor) -> Tensor:
    """Stochastic depth per row on packed tokens ``(total, d)``: one draw per row, repeated over its tokens."""
    if not isinstance(module, DropPath) or not module.training or module.drop_prob == 0.0:
        return x
    keep = drop_path(x.new_ones(lengths.numel(), 1), module.drop_prob, True, module.scale_by_keep)
    return x * keep.repeat_interleave(lengths, dim=0, output_size=x.shape[0])


class ByteFormerBlock(nn.Module):
    """ml-cvnets ``WindowedTransformerEncoder``: ``x + drop(attn(LN(x)))``, then ``x + FFN(LN(x))`` with windowed
    attention (:class:`~formers.core.layers.WindowAttention1d`, no relative bias).

    ``forward(x, cu_seqlens=cu)`` on packed rows ``(total, d)``, ``forward(x, lengths=n)`` on a padded batch
    ``(B, L, d)`` (padding masked), ``forward(x, official=True)`` the official arithmetic on ``(B, L, d)`` (rows padded
    with zero tokens to a multiple of the window *before* the norm, no mask at all).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        shift_size: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "auto",
        packed_mode: str = "varlen",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention1d(
            dim,
            num_heads,
            window_size,
            shift_size,
            attn_drop=attn_dropout,
            proj_drop=dropout,
            backend=backend,
            packed_mode=packed_mode,
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer="gelu", drop=dropout)
        self.mlp.drop1 = nn.Dropout(ffn_dropout)  # official: ffn_dropout after the activation, dropout after fc2
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        *,
        lengths: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
        official: bool = False,
    ) -> Tensor:
        if cu_seqlens is not None:
            rows = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
            x = x + _packed_drop_path(self.attn(self.norm1(x), cu_seqlens=cu_seqlens), self.drop_path, rows)
            return x + _packed_drop_path(self.mlp(self.norm2(x)), self.drop_path, rows)
        if official:
            n = x.shape[1]
            padded = F.pad(x, (0, 0, 0, -n % self.attn.window_size))  # zero tokens, normed like real ones
            attn = self.attn(self.norm1(padded), wrap_around_mask=False)[:, :n]
        else:
            attn = self.attn(self.norm1(x), lengths=lengths)
        x = x + self.drop_path(attn)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TokenMerging(nn.Module):
    """ml-cvnets ``TokenMerging`` (window 2): ``LN(Linear(2 d -> d, no bias)(concat(x_2i, x_2i+1)))``; an odd row is
    padded with one zero token.

    ``forward(x)`` on ``(B, L, d)`` (every token merged: the official arithmetic), ``forward(x, lengths=n)`` zeroes the
    padding first (so a row's odd last token pairs with zeros), ``forward_packed(x, lengths)`` on packed rows.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(2 * dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, L, d) -> (B, ceil(L / 2), d)``; ``lengths (B,)``: tokens at or after ``lengths[b]`` count as zeros."""
        if lengths is not None:
            padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
            x = x.masked_fill(padding[..., None], 0.0)
        x = F.pad(x, (0, 0, 0, x.shape[1] % 2))
        return self.norm(self.reduction(x.reshape(x.shape[0], x.shape[1] // 2, 2 * self.dim)))

    def forward_packed(self, x: Tensor, lengths: Sequence[int]) -> Tensor:
        """Packed rows ``(sum n_b, d) -> (sum ceil(n_b / 2), d)``; odd rows get one zero token before merging."""
        if any(n % 2 for n in lengths):
            lens = torch.tensor(lengths, device=x.device)
            halves = (lens + 1) // 2
            starts = torch.cumsum(lens, 0) - lens
            new_starts = 2 * (torch.cumsum(halves, 0) - halves)
            dest = torch.arange(x.shape[0], device=x.device) + (new_starts - starts).repeat_interleave(
                lens, output_size=x.shape[0]
            )
            x = x.new_zeros(2 * int(halves.sum()), self.dim).index_copy(0, dest, x)
        return self.norm(self.reduction(x.reshape(x.shape[0] // 2, 2 * self.dim)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window=2"


# ------------------------------------------------------------------------------------------------------------ model


class ByteFormer(FormersModel):
    """ByteFormer classifier of byte sequences (see the module docstring).

    Args:
        num_classes: classifier outputs.
        dim, depth, num_heads: encoder width, layers and heads (tiny 192/12/3, small 384/12/6, base 768/12/12, huge
            1280/32/20).
        mlp_ratio: FFN width over ``dim`` (4).
        conv_kernel_size: ``k`` of the byte conv (stride ``k // 2``), ``>= 2``. Official argparse default 16; the
            ImageNet TIFF and Speech Commands WAV configs (and the factories here) use 32.
        max_num_tokens: rows of the learned positional table = the most conv tokens per row (configs: 50,000).
        window_size: tokens per attention window, one int or one per layer (128).
        window_shifts: shift per layer; ``None``: ``0, window // 2`` alternating (official ``[0, 64] * 6``).
        downsample: indices of the layers followed by a TokenMerging; ``None``: 0, 1, 3, 5, 7, 9 (the official
            pattern; for other depths those below ``depth`` - the official code has no default for 32 layers).
        dropout: dropout after the embedding, after the attention projection and after the FFN (official
            ``dropout``, 0).
        attn_dropout, ffn_dropout: dropout on the attention probabilities / after the FFN activation (0).
        drop_path_rate: stochastic depth, linear from 0 at the first layer to this value at the last (0).
        padding_free: run on packed real tokens (default) or pad-and-mask on the padded batch (same outputs).
        official_compat: reproduce the official code's arithmetic and defects (for official checkpoints).
        packed_mode: the attention layout of the packed path, ``"varlen"`` (default, faster on CPU) or
            ``"grouped"`` (:class:`~formers.core.layers.WindowAttention1d`).
        backend: attention backend of every layer (``"auto"``; ``set_attention_backend`` reaches them too).

    Shapes:
        - tokens: long ``(B, L)`` byte ids in 0..256, rows right-padded with 256
        - lengths: long ``(B,)`` real bytes per row, ``1 <= lengths[b] <= L``; ``None``: every position is real
        - output: ``(B, num_classes)`` logits
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        conv_kernel_size: int = 32,
        max_num_tokens: int = 50_000,
        window_size: int | Sequence[int] = 128,
        window_shifts: Sequence[int] | None = None,
        downsample: Sequence[int] | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        padding_free: bool = True,
        official_compat: bool = False,
        packed_mode: str = "varlen",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, num_classes=num_classes, dim=dim, depth=depth, num_heads=num_heads)
        check_positive(owner, max_num_tokens=max_num_tokens)
        check_probability(
            owner, dropout=dropout, attn_dropout=attn_dropout, ffn_dropout=ffn_dropout, drop_path_rate=drop_path_rate
        )
        if isinstance(conv_kernel_size, bool) or not isinstance(conv_kernel_size, int) or conv_kernel_size < 2:
            raise ValueError(f"{owner}: conv_kernel_size must be an int >= 2 (stride k // 2), got {conv_kernel_size!r}")
        windows = _as_per_layer(owner, "window_size", window_size, depth)
        shifts = (
            tuple(0 if i % 2 == 0 else w // 2 for i, w in enumerate(windows))
            if window_shifts is None
            else _as_per_layer(owner, "window_shifts", window_shifts, depth)
        )
        merges = tuple(i for i in DEFAULT_DOWNSAMPLE if i < depth) if downsample is None else tuple(downsample)
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < depth for i in merges):
            raise ValueError(f"{owner}: downsample must hold layer indices in [0, {depth}), got {downsample!r}")
        self.num_classes, self.dim, self.depth = num_classes, dim, depth
        self.conv_kernel_size, self.conv_stride = conv_kernel_size, conv_kernel_size // 2
        self.max_num_tokens = max_num_tokens
        self.window_sizes, self.window_shifts, self.downsample = windows, shifts, tuple(sorted(set(merges)))
        self.padding_free, self.official_compat = padding_free, official_compat

        self.embed = nn.Embedding(VOCAB_SIZE, dim, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(dim, dim, conv_kernel_size, stride=self.conv_stride, bias=False)
        self.pos_embed = nn.Parameter(torch.empty(max_num_tokens, dim))
        self.pos_drop = nn.Dropout(dropout)
        rates = [round(drop_path_rate * i / max(depth - 1, 1), 3) for i in range(depth)]  # official np.linspace
        self.blocks = nn.ModuleList(
            ByteFormerBlock(
                dim,
                num_heads,
                mlp_ratio,
                windows[i],
                shifts[i],
                dropout=dropout,
                attn_dropout=attn_dropout,
                ffn_dropout=ffn_dropout,
                drop_path=rates[i],
                backend=backend,
                packed_mode=packed_mode,
            )
            for i in range(depth)
        )
        self.merges = nn.ModuleDict({str(i): TokenMerging(dim) for i in self.downsample})
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: embeddings and positions trunc-normal std ``d ** -0.5`` (padding row 0), Linear trunc-normal
        std 0.02 with zero bias, LayerNorm 1/0; the conv keeps PyTorch's default."""
        std = self.dim**-0.5
        with torch.no_grad():
            nn.init.trunc_normal_(self.embed.weight[:PAD_ID], std=std)
            self.embed.weight[PAD_ID].zero_()
            nn.init.trunc_normal_(self.pos_embed, std=std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def max_num_bytes(self) -> int:
        """The longest input (bytes) whose conv tokens fit the positional table."""
        return self.max_num_tokens * self.conv_stride + self.conv_kernel_size - 1

    def num_tokens(self, num_bytes: int) -> int:
        """Conv tokens of a row of ``num_bytes`` real bytes (see :func:`num_conv_tokens`)."""
        return num_conv_tokens(num_bytes, self.conv_kernel_size)

    # ------------------------------------------------------------------------------------------------- inputs

    def _check_inputs(self, tokens: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor, list[int]]:
        owner = type(self).__name__
        check_input(f"{owner}: tokens", tokens, ndim=2, floating=False, dims="(batch, length)")
        if tokens.dtype == torch.bool:
            raise TypeError(f"{owner}: tokens must be an integer tensor of byte ids, got {tokens.dtype}")
        batch, length = tokens.shape
        if batch == 0 or length == 0:
            raise ValueError(
                f"{owner}: tokens must hold at least one row and one byte, got shape {tuple(tokens.shape)}"
            )
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high > PAD_ID:
            raise ValueError(
                f"{owner}: tokens must be byte ids in 0..{PAD_ID} ({PAD_ID} = padding), got values in [{low}, {high}]"
                + ("; pad with 256, not -1 (the official collate's value)" if low == -1 else "")
            )
        if lengths is None:
            lengths = torch.full((batch,), length, dtype=torch.long, device=tokens.device)
        else:
            check_input(f"{owner}: lengths", lengths, ndim=1, floating=False, dims="(batch,)")
            if lengths.dtype == torch.bool:
                raise TypeError(f"{owner}: lengths must be an integer tensor, got {lengths.dtype}")
            if lengths.shape[0] != batch:
                raise ValueError(f"{owner}: lengths has {lengths.shape[0]} rows but tokens has {batch}")
            lengths = lengths.to(device=tokens.device, dtype=torch.long)
        sizes = lengths.tolist()
        empty = [b for b, n in enumerate(sizes) if n <= 0]
        if empty:
            raise ValueError(f"{owner}: lengths must be >= 1 byte, but row(s) {empty} have {[sizes[b] for b in empty]}")
        over = [b for b, n in enumerate(sizes) if n > length]
        if over:
            raise ValueError(f"{owner}: lengths of row(s) {over} exceed the {length} columns of tokens")
        return tokens.long(), lengths, sizes  # uint8 / int32 ids: 256 must fit

    def _check_token_count(self, num_bytes: int, where: str) -> int:
        count = self.num_tokens(num_bytes)
        if count > self.max_num_tokens:
            raise ValueError(
                f"{type(self).__name__}: {where} has {num_bytes} bytes -> {count} tokens after the conv (kernel "
                f"{self.conv_kernel_size}, stride {self.conv_stride}), more than max_num_tokens={self.max_num_tokens}:"
                f" inputs may have at most {self.max_num_bytes} bytes (crop them or build with more max_num_tokens)"
            )
        return count

    # ------------------------------------------------------------------------------------------------- stages

    def conv_tokens(self, windows: Tensor) -> Tensor:
        """``Conv1d(Embedding(ids))`` of each token's receptive field.

        The conv is linear in the embedded bytes, so tap ``t`` of it maps byte id ``v`` to ``U[t, v] = W[:, :, t] @
        E[v]``: one ``(k, 257, d)`` table, then each token sums its ``k`` rows (``embedding_bag``). The padding row
        of ``E`` is detached, so it keeps the zero gradient of ``padding_idx``.

        Shapes:
            - windows: long ``(T, k)`` byte ids
            - output: ``(T, d)``
        """
        k = self.conv_kernel_size
        weight = self.embed.weight
        embed = torch.cat([weight[:PAD_ID], weight[PAD_ID:].detach()])
        table = torch.einsum("vc,oct->tvo", embed, self.conv.weight).reshape(k * VOCAB_SIZE, self.dim)
        offsets = torch.arange(k, device=windows.device) * VOCAB_SIZE
        return F.embedding_bag(windows + offsets, table, mode="sum")

    def _byte_grid(self, tokens: Tensor, lengths: Tensor | None) -> Tensor:
        """``tokens`` with every position at or after ``lengths[b]`` set to 256, padded to at least ``k`` columns."""
        if lengths is not None:
            padding = torch.arange(tokens.shape[1], device=tokens.device)[None, :] >= lengths[:, None]
            tokens = tokens.masked_fill(padding, PAD_ID)
        return F.pad(tokens, (0, max(0, self.conv_kernel_size - tokens.shape[1])), value=PAD_ID)

    def _padded_embed(self, grid: Tensor, num_tokens: int) -> Tensor:
        """Conv tokens ``[0, num_tokens)`` of every row of a byte grid ``(B, L')`` plus positions: ``(B, N, d)``."""
        windows = grid.unfold(1, self.conv_kernel_size, self.conv_stride)[:, :num_tokens]  # (B, N, k)
        x = self.conv_tokens(windows.reshape(-1, self.conv_kernel_size)).view(grid.shape[0], num_tokens, self.dim)
        return self.pos_drop(x + self.pos_embed[:num_tokens])

    def _packed_embed(self, grid: Tensor, counts: list[int]) -> Tensor:
        """Conv tokens of row ``b``'s first ``counts[b]`` windows, rows back to back, plus positions: ``(T, d)``."""
        device = grid.device
        counts_t = torch.tensor(counts, device=device)
        total = sum(counts)
        rows = torch.arange(len(counts), device=device).repeat_interleave(counts_t, output_size=total)
        position = torch.arange(total, device=device) - (torch.cumsum(counts_t, 0) - counts_t)[rows]
        starts = rows * grid.shape[1] + position * self.conv_stride
        windows = grid.flatten()[starts[:, None] + torch.arange(self.conv_kernel_size, device=device)]
        return self.pos_drop(self.conv_tokens(windows) + self.pos_embed[position])

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        tokens, lengths, sizes = self._check_inputs(tokens, lengths)
        if self.official_compat:
            return self._forward_official(tokens, lengths)
        counts = [self._check_token_count(n, f"row {b}") for b, n in enumerate(sizes)]
        grid = self._byte_grid(tokens, lengths)
        if self.padding_free:
            return self._forward_packed(grid, counts)
        return self._forward_padded(grid, counts)

    def _forward_packed(self, grid: Tensor, counts: list[int]) -> Tensor:
        x = self._packed_embed(grid, counts)
        cu = cu_seqlens_from_lengths(counts).to(grid.device)
        for i, block in enumerate(self.blocks):
            x = block(x, cu_seqlens=cu)
            if str(i) in self.merges:
                x = self.merges[str(i)].forward_packed(x, counts)
                counts = [(n + 1) // 2 for n in counts]
                cu = cu_seqlens_from_lengths(counts).to(grid.device)
        x = self.norm(x)
        counts_t = (cu[1:] - cu[:-1]).long()
        rows = torch.arange(len(counts), device=x.device).repeat_interleave(counts_t, output_size=x.shape[0])
        pooled = x.new_zeros(len(counts), self.dim).index_add(0, rows, x) / counts_t[:, None].to(x.dtype)
        return self.head(pooled)

    def _forward_padded(self, grid: Tensor, counts: list[int]) -> Tensor:
        x = self._padded_embed(grid, max(counts))
        n = torch.tensor(counts, device=grid.device)
        for i, block in enumerate(self.blocks):
            x = block(x, lengths=n)
            if str(i) in self.merges:
                x = self.merges[str(i)](x, lengths=n)
                n = (n + 1) // 2
        x = self.norm(x)
        real = torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]
        pooled = x.masked_fill(~real[..., None], 0.0).sum(1) / n[:, None].to(x.dtype)
        return self.head(pooled)

    def _forward_official(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        grid = self._byte_grid(tokens, lengths)  # the official collate pads with -1 -> 256
        x = self._padded_embed(grid, self._check_token_count(grid.shape[1], "the padded batch"))
        for i, block in enumerate(self.blocks):
            x = block(x, official=True)
            if str(i) in self.merges:
                x = self.merges[str(i)](x)
        x = self.norm(x)
        return self.head(x.mean(dim=1))  # the official normaliser counts every (padded) token

    # --------------------------------------------------------------------------------------------- contract

    def example_inputs(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Rows of decreasing length, from ``8 k`` bytes down to ``k // 2`` (shorter than the kernel), right-padded
        with 256."""
        k = self.conv_kernel_size
        length = min(8 * k, self.max_num_bytes)
        generator = torch.Generator().manual_seed(0)
        step = (length - k // 2) // max(batch_size - 1, 1)
        lengths = torch.tensor([length - i * step for i in range(batch_size)])
        tokens = torch.randint(0, 256, (batch_size, length), generator=generator)
        tokens = tokens.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], PAD_ID)
        return {"tokens": tokens.to(self.device), "lengths": lengths.to(self.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, self.num_classes)

    def extra_repr(self) -> str:
        return (
            f"conv_kernel_size={self.conv_kernel_size}, max_num_tokens={self.max_num_tokens}, "
            f"downsample={self.downsample}, padding_free={self.padding_free}, official_compat={self.official_compat}"
        )


# ------------------------------------------------------------------------------------------- official checkpoints

_BLOCK_KEYS = {
    "pre_norm_mha.0": "norm1",
    "pre_norm_mha.1.qkv_proj": "attn.qkv",
    "pre_norm_mha.1.out_proj": "attn.proj",
    "pre_norm_ffn.0": "norm2",
    "pre_norm_ffn.1": "mlp.fc1",
    "pre_norm_ffn.4": "mlp.fc2",
}
_TOP_KEYS = {
    "embeddings.weight": "embed.weight",
    "token_reduction_net.weight": "conv.weight",
    "post_transformer_norm.weight": "norm.weight",
    "post_transformer_norm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def checkpoint_filter_fn(state_dict: dict[str, Any], model: ByteFormer | None = None) -> dict[str, Tensor]:
    """Official ml-cvnets / corenet ByteFormer state dict -> ``model``'s keys.

    Accepts the plain state dict of the released ``.pt`` files or one nested under ``"model_state_dict"`` (cvnets
    training checkpoints), ``"state_dict"`` or ``"model"``; a ``module.`` prefix (DDP) is dropped. ``transformer.i``
    becomes ``blocks.i`` (``pre_norm_mha.0/1.qkv_proj/1.out_proj`` -> ``norm1/attn.qkv/attn.proj``,
    ``pre_norm_ffn.0/1/4`` -> ``norm2/mlp.fc1/mlp.fc2``), ``downsamplers.downsample_i`` becomes ``merges.i``, the
    positional table ``pos_embed.pos_embed.pos_embed`` ``(1, 1, M, d)`` becomes ``pos_embed`` ``(M, d)`` - cut to the
    model's ``max_num_tokens`` when that is smaller (the official forward only reads the first rows) -, the merge
    projection's input columns are reordered (the official ``unfold`` interleaves the pair channel by channel,
    ``c * 2 + j``; here the pair is concatenated, ``j * d + c``) and
    ``embeddings`` / ``token_reduction_net`` / ``post_transformer_norm`` / ``classifier`` become ``embed`` / ``conv`` /
    ``norm`` / ``head``. Unknown keys pass through unchanged (a strict load then names them).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    for nest in ("model_state_dict", "state_dict", "model"):
        if isinstance(state_dict.get(nest), dict):
            state_dict = state_dict[nest]
            break
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key in _TOP_KEYS:
            key = _TOP_KEYS[key]
        elif key == "pos_embed.pos_embed.pos_embed":
            value = value.reshape(value.shape[-2], value.shape[-1])
            rows = getattr(model, "max_num_tokens", value.shape[0])
            key, value = "pos_embed", value[:rows] if rows < value.shape[0] else value
        elif key.startswith("transformer."):
            _, layer, rest = key.split(".", 2)
            for official, ours in _BLOCK_KEYS.items():
                if rest.startswith(official + "."):
                    key = f"blocks.{layer}.{ours}{rest[len(official) :]}"
                    break
        elif key.startswith("downsamplers.downsample_"):
            layer, rest = key.removeprefix("downsamplers.downsample_").split(".", 1)
            key = f"merges.{layer}.{rest}"
            if rest == "reduction.weight":  # official input layout c * 2 + j (unfold) -> ours j * d + c (concat)
                value = value.reshape(value.shape[0], -1, 2).transpose(1, 2).reshape(value.shape[0], -1)
        out[key] = value
    return out


# -------------------------------------------------------------------------------------------------- named configs

_TEST_KWARGS = {
    "dim": 16,
    "depth": 2,
    "num_heads": 2,
    "conv_kernel_size": 4,
    "window_size": 4,
    "max_num_tokens": 64,
    "num_classes": 3,
}


def _byteformer(dim: int, depth: int, num_heads: int, **kwargs: Any) -> ByteFormer:
    # keyword overrides win (the registry's tiny test sizes, other widths for experiments)
    return ByteFormer(**{"dim": dim, "depth": depth, "num_heads": num_heads, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def byteformer_tiny(**kwargs: Any) -> ByteFormer:
    """BF-Ti (mode ``tiny``): d 192, 12 layers, 3 heads, FFN 768; ``conv_kernel_size`` 32, ``max_num_tokens`` 50,000
    (the TIFF / WAV configs). 16,805,416 parameters with 1000 classes (7,205,416 without the positional table)."""
    return _byteformer(**{"dim": 192, "depth": 12, "num_heads": 3, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def byteformer_small(**kwargs: Any) -> ByteFormer:
    """Mode ``small``: d 384, 12 layers, 6 heads, FFN 1536."""
    return _byteformer(**{"dim": 384, "depth": 12, "num_heads": 6, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def byteformer_base(**kwargs: Any) -> ByteFormer:
    """Mode ``base``: d 768, 12 layers, 12 heads, FFN 3072."""
    return _byteformer(**{"dim": 768, "depth": 12, "num_heads": 12, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def byteformer_huge(**kwargs: Any) -> ByteFormer:
    """Mode ``huge``: d 1280, 32 layers, 20 heads (head dim 64), FFN 5120. The official code has no default window
    shift / downsample lists for 32 layers; here shifts alternate 0 / 64 and merges follow layers 0, 1, 3, 5, 7, 9."""
    return _byteformer(**{"dim": 1280, "depth": 32, "num_heads": 20, **kwargs})

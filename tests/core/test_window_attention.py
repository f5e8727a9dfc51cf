"""Windowed / shifted-window attention (Swin 2-D, ByteFormer 1-D) against transliterations of the official code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _bench import benchmark_module
from formers.core.layers.window_attention import (
    ShiftedWindowAttention2d,
    WindowAttention,
    WindowAttention1d,
    relative_position_index,
    shifted_window_mask,
    shifted_window_mask_1d,
    window_partition,
    window_partition_1d,
    window_reverse,
    window_reverse_1d,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- transliterations of microsoft/Swin-Transformer models/swin_transformer.py --------------------------------------


def official_relative_position_index(wh: int, ww: int) -> torch.Tensor:
    coords_h = torch.arange(wh)
    coords_w = torch.arange(ww)
    coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += wh - 1
    relative_coords[:, :, 1] += ww - 1
    relative_coords[:, :, 0] *= 2 * ww - 1
    return relative_coords.sum(-1)


def official_window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def official_attn_mask(h: int, w: int, ws: int, ss: int) -> torch.Tensor:
    img_mask = torch.zeros((1, h, w, 1))
    slices = (slice(0, -ws), slice(-ws, -ss), slice(-ss, None))
    cnt = 0
    for hs in slices:
        for wsl in slices:
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    mask_windows = official_window_partition(img_mask, ws).view(-1, ws * ws)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


def reference_window_attention(module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Plain math: ``softmax(q kᵀ · scale + bias + mask) v`` then ``proj``, with the module's own weights."""
    b_, n, c = x.shape
    h = module.num_heads
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(b_, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * module.scale) @ k.transpose(-2, -1)
    table = getattr(module, "relative_position_bias_table", None)
    if table is not None:
        bias = table[module.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b_ // nw, nw, h, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, h, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b_, n, c)
    return F.linear(out, module.proj.weight, module.proj.bias)


# --- partition / reverse --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [2, (2, 3), 6])
def test_partition_round_trip_2d(window) -> None:
    x = torch.randn(2, 6, 6, 5, generator=_gen())
    windows = window_partition(x, window)
    wh, ww = (window, window) if isinstance(window, int) else window
    assert windows.shape == (2 * (6 // wh) * (6 // ww), wh, ww, 5)
    torch.testing.assert_close(window_reverse(windows, window, 6, 6), x, rtol=0, atol=0)


def test_partition_matches_official_layout() -> None:
    x = torch.randn(3, 14, 21, 4, generator=_gen())
    torch.testing.assert_close(window_partition(x, 7), official_window_partition(x, 7), rtol=0, atol=0)
    assert torch.equal(window_partition(x, 7)[4], x[0, 7:14, 7:14])  # batch-major, row-major window grid


def test_partition_round_trip_1d() -> None:
    x = torch.randn(3, 12, 5, generator=_gen())
    windows = window_partition_1d(x, 4)
    assert windows.shape == (9, 4, 5)
    assert torch.equal(windows[4], x[1, 4:8])
    torch.testing.assert_close(window_reverse_1d(windows, 4, 12), x, rtol=0, atol=0)


def test_partition_errors() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        window_partition(torch.zeros(1, 7, 8, 3), 4)
    with pytest.raises(ValueError, match="rank 4"):
        window_partition(torch.zeros(7, 8, 3), 4)
    with pytest.raises(ValueError, match="not a multiple"):
        window_reverse(torch.zeros(4, 4, 4, 3), 4, 8, 6)
    with pytest.raises(ValueError, match="not a multiple"):
        window_partition_1d(torch.zeros(1, 10, 3), 4)
    with pytest.raises(ValueError, match="not a multiple"):
        window_reverse_1d(torch.zeros(2, 4, 3), 4, 10)


# --- relative position index and masks ------------------------------------------------------------------------------


def test_relative_position_index_window7_matches_official() -> None:
    index = relative_position_index(7)
    assert index.shape == (49, 49)
    assert index.min() == 0 and index.max() == 168
    assert torch.equal(index, official_relative_position_index(7, 7))
    assert torch.equal(relative_position_index((3, 5)), official_relative_position_index(3, 5))


def test_relative_position_index_window2_by_hand() -> None:
    # tokens (y, x) = (0,0), (0,1), (1,0), (1,1); index = (dy + 1) * 3 + (dx + 1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)


def test_relative_position_index_1d() -> None:
    expected = torch.tensor([[2, 1, 0], [3, 2, 1], [4, 3, 2]])
    assert torch.equal(relative_position_index((3,)), expected)


@pytest.mark.parametrize(("size", "window", "shift"), [(56, 7, 3), (8, 4, 2), (12, 4, 1)])
def test_shifted_mask_matches_official(size: int, window: int, shift: int) -> None:
    mask = shifted_window_mask(size, size, window, shift)
    assert mask.dtype == torch.float32
    assert mask.shape == ((size // window) ** 2, window**2, window**2)
    torch.testing.assert_close(mask, official_attn_mask(size, size, window, shift), rtol=0, atol=0)


def test_shifted_mask_structure() -> None:
    mask = shifted_window_mask(8, 8, 4, 2)  # 2 x 2 windows of 16 tokens
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert torch.all(mask[0] == 0)  # top-left window: untouched by the roll, a single region
    assert torch.all(mask.diagonal(dim1=-2, dim2=-1) == 0)  # every token sees itself
    assert torch.equal(mask, mask.transpose(-2, -1))
    # top-right window: columns 0-1 of the window (region A) vs 2-3 (wrapped region B)
    cols = torch.arange(16) % 4
    same = (cols[:, None] < 2) == (cols[None, :] < 2)
    assert torch.equal(mask[1] == 0, same)
    # bottom-right window: 4 regions of 2 x 2 tokens
    region = (torch.arange(16) // 4 >= 2).long() * 2 + (cols >= 2).long()
    assert torch.equal(mask[3] == 0, region[:, None] == region[None, :])
    assert torch.all(shifted_window_mask(8, 8, 4, 0) == 0)


def test_shifted_mask_1d() -> None:
    mask = shifted_window_mask_1d(12, 4, 1)
    assert mask.shape == (3, 4, 4)
    assert torch.all(mask[:2] == 0)
    region = torch.tensor([0, 0, 0, 1])  # the last token came from the start of the sequence
    assert torch.equal(mask[2] == 0, region[:, None] == region[None, :])
    with pytest.raises(ValueError, match="shift"):
        shifted_window_mask_1d(12, 4, 4)


# --- modules ------------------------------------------------------------------------------------------------------


def test_state_dict_keys_match_swin() -> None:
    torch.manual_seed(0)
    layer = WindowAttention(96, 3, 7)
    assert set(layer.state_dict()) == {
        "qkv.weight",
        "qkv.bias",
        "proj.weight",
        "proj.bias",
        "relative_position_bias_table",
        "relative_position_index",
    }
    assert layer.relative_position_bias_table.shape == (169, 3)
    # trunc_normal_(std=.02) as in Swin / timm (whose cut-off at +-2 is absolute, so in effect a plain normal)
    assert 0.015 < layer.relative_position_bias_table.std().item() < 0.025
    assert set(ShiftedWindowAttention2d(96, 3, 7, 3).state_dict()) == set(layer.state_dict())


@pytest.mark.parametrize("masked", [False, True])
def test_window_attention_matches_reference(masked: bool) -> None:
    torch.manual_seed(0)
    layer = WindowAttention(16, 2, (2, 3)).eval()
    nn_ = 6
    with torch.no_grad():
        layer.relative_position_bias_table.normal_()  # visible bias
    x = torch.randn(3 * 4, nn_, 16, generator=_gen(1))
    mask = None
    if masked:
        mask = torch.where(torch.rand(4, nn_, nn_, generator=_gen(2)) < 0.3, -100.0, 0.0)
        mask.diagonal(dim1=-2, dim2=-1).zero_()
    with torch.no_grad():
        torch.testing.assert_close(layer(x, mask), reference_window_attention(layer, x, mask), **TOL)


@pytest.mark.parametrize("shift", [0, 2])
def test_shifted_module_matches_official_pipeline(shift: int) -> None:
    torch.manual_seed(0)
    layer = ShiftedWindowAttention2d(16, 2, 4, shift).eval()
    x = torch.randn(2, 8, 12, 16, generator=_gen(3))
    rolled = torch.roll(x, (-shift, -shift), dims=(1, 2)) if shift else x
    windows = official_window_partition(rolled, 4).view(-1, 16, 16)
    mask = None
    if shift:
        img_mask_h, img_mask_w = 8, 12
        mask = shifted_window_mask(img_mask_h, img_mask_w, 4, shift)
    out = reference_window_attention(layer, windows, mask).view(-1, 4, 4, 16)
    out = window_reverse(out, 4, 8, 12)
    expected = torch.roll(out, (shift, shift), dims=(1, 2)) if shift else out
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, **TOL)


def test_shift_zero_equals_unshifted_path() -> None:
    torch.manual_seed(0)
    plain = WindowAttention(16, 2, 4).eval()
    shifted = ShiftedWindowAttention2d(16, 2, 4, 0).eval()
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 8, 16, generator=_gen(4))
    windows = window_partition(x, 4).view(-1, 16, 16)
    expected = window_reverse(plain(windows).view(-1, 4, 4, 16), 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(shifted(x), expected, **TOL)


@pytest.mark.parametrize("shift", [0, 2])
def test_gradients_reach_every_parameter(shift: int) -> None:
    torch.manual_seed(0)
    layer = ShiftedWindowAttention2d(16, 2, 4, shift)
    x = torch.randn(2, 8, 8, 16, generator=_gen(5), requires_grad=True)
    layer(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shift", [0, 3])
def test_reference_backend_equals_auto(shift: int) -> None:
    torch.manual_seed(0)
    auto = ShiftedWindowAttention2d(24, 3, 7, shift).eval()
    ref = ShiftedWindowAttention2d(24, 3, 7, shift, backend="reference").eval()
    ref.load_state_dict(auto.state_dict())
    x = torch.randn(2, 14, 14, 24, generator=_gen(6))
    with torch.no_grad():
        torch.testing.assert_close(ref(x), auto(x), **TOL)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("rel_bias", [False, True])
def test_window_attention_1d_matches_reference(shift: int, rel_bias: bool) -> None:
    torch.manual_seed(0)
    layer = WindowAttention1d(16, 2, 4, shift, relative_position_bias=rel_bias).eval()
    x = torch.randn(2, 12, 16, generator=_gen(7))
    rolled = torch.roll(x, -shift, dims=1)
    mask = shifted_window_mask_1d(12, 4, shift) if shift else None
    out = reference_window_attention(layer, rolled.reshape(-1, 4, 16), mask).reshape(2, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.roll(out, shift, dims=1), **TOL)


def test_window_attention_1d_wrap_around_is_masked() -> None:
    """With shift 2 and window 4 on 8 tokens, the windows are [2..5] and [6, 7 | 0, 1]: 7 and 0 must not mix."""
    torch.manual_seed(0)
    layer = WindowAttention1d(8, 1, 4, 2).eval()
    x = torch.randn(1, 8, 8, generator=_gen(8))
    y = x.clone()
    y[0, 0] += 1.0
    with torch.no_grad():
        delta = (layer(y) - layer(x)).abs().amax(-1)[0]
    assert torch.all(delta[6:] < 1e-30 + 1e-6 * delta[0])  # exp(-100) leakage only
    assert delta[1] > 1e-3 and torch.all(delta[2:6] == 0)


def test_errors() -> None:
    layer = WindowAttention(16, 2, 4)
    with pytest.raises(ValueError, match="channels"):
        layer(torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match="16 tokens per window"):
        layer(torch.randn(2, 9, 16))
    with pytest.raises(ValueError, match="mask must have shape"):
        layer(torch.randn(4, 16, 16), torch.zeros(2, 16, 9))
    with pytest.raises(ValueError, match="multiple of the mask"):
        layer(torch.randn(3, 16, 16), torch.zeros(2, 16, 16))
    with pytest.raises(TypeError, match="float"):
        layer(torch.randn(4, 16, 16), torch.zeros(2, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        WindowAttention(15, 2, 4)
    with pytest.raises(ValueError, match="shift"):
        ShiftedWindowAttention2d(16, 2, 4, 4)
    shifted = ShiftedWindowAttention2d(16, 2, 4, 2)
    with pytest.raises(ValueError, match="not a multiple"):
        shifted(torch.randn(1, 8, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, H, W, 16\)"):
        shifted(torch.randn(1, 8, 8, 12))
    layer_1d = WindowAttention1d(16, 2, 4, 2)
    with pytest.raises(ValueError, match="not a multiple"):
        layer_1d(torch.randn(1, 10, 16))
    with pytest.raises(ValueError, match="channels"):
        layer_1d(torch.randn(1, 8, 12))


def test_benchmark_tiny_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with benchmark_module("window_attention") as bench:
        metrics = bench.main(["--tiny", "--metrics-json", str(tmp_path / "m.json")])
    written = json.loads((tmp_path / "m.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == metrics
    for mode in ("fwd", "fwd_bwd"):
        assert metrics["speed"][mode]["naive_vs_formers"] > 0
    assert metrics["max_abs_diff"] < 1e-4
    assert "x" in capsys.readouterr().out


@pytest.mark.parametrize("shift", [0, 1])
def test_one_window_row_with_batch_one(shift: int) -> None:
    """B = 1 and a map one window high: the partition is a non-contiguous view (a ``.view`` of it raised)."""
    torch.manual_seed(0)
    layer = ShiftedWindowAttention2d(16, 2, 4, shift).eval()
    x = torch.randn(2, 4, 12, 16, generator=_gen(8))
    with torch.no_grad():
        batched = layer(x)
        for i in range(2):
            torch.testing.assert_close(layer(x[i : i + 1]), batched[i : i + 1], **TOL)


def test_precomputed_mask_equals_the_built_one() -> None:
    torch.manual_seed(0)
    layer = ShiftedWindowAttention2d(16, 2, 4, 2).eval()
    x = torch.randn(2, 8, 8, 16, generator=_gen(9))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, shifted_window_mask(8, 8, 4, 2)), layer(x), **TOL)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: WindowAttention(16, 0, 4), "num_heads must be a positive int, got 0"),
        (lambda: WindowAttention(16, 2, 0), "window_size must be positive"),
        (lambda: WindowAttention(16, 3, 4), "dim 16 is not divisible by num_heads 3"),
        (lambda: ShiftedWindowAttention2d(16, 2, (4, -1)), "window_size must be positive"),
        (lambda: ShiftedWindowAttention2d(16, 2, 4, 4), "shift_size must satisfy"),
        (lambda: WindowAttention1d(16, 2, 0), "window_size must be positive"),
        (lambda: WindowAttention1d(0, 2, 4), "dim must be a positive int, got 0"),
        (lambda: WindowAttention(16, 2, 4, attn_drop=1.5), r"attn_drop must be in \[0, 1\)"),
    ],
    ids=["heads0", "window0", "indivisible", "window_negative", "shift_too_large", "1d_window0", "1d_dim0", "drop"],
)
def test_constructors_name_the_bad_argument(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()

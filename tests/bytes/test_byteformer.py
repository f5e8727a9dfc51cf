"""ByteFormer: exact parameter counts, equality of ``official_compat=True`` with a test oracle that follows the official
forward step by step (apple/ml-cvnets @ 7771756: ``ByteFormer.get_backbone_inputs`` / ``apply_token_reduction_net`` /
``backbone_forward`` / ``forward``, ``WindowedTransformerEncoder``, ``TransformerEncoder``, ``MultiHeadAttention
.forward_default``, ``TokenMerging``) on a state dict in the official layout, its defects, and the correct default
model: padding invariance, padding never read, packed == padded == varlen/grouped, the wrap-around mask, short files,
gradients and input errors. The packed / padded paths of ``formers.core.layers.WindowAttention1d`` are checked here too.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from formers.bytes.models.byteformer import (
    PAD_ID,
    ByteFormer,
    ByteFormerBlock,
    TokenMerging,
    byteformer_base,
    byteformer_huge,
    byteformer_small,
    byteformer_tiny,
    checkpoint_filter_fn,
    num_conv_tokens,
)
from formers.core.attention import set_attention_backend
from formers.core.layers import WindowAttention1d
from formers.core.layers.window_attention import window_segments_1d
from formers.core.registry import create_model, get_model_entry
from formers.core.varlen import cu_seqlens_from_lengths

TINY = get_model_entry("byteformer_tiny").test_kwargs
FSDD = Path(__file__).resolve().parents[3] / "shared" / "data" / "bytes" / "fsdd" / "recordings"
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"shared data not available at {FSDD}")

# a small configuration with every feature of the official one: odd token counts, lengths that are not multiples of
# the window, shifted layers, merges after layers 0, 1, 3
SMALL = {"dim": 16, "depth": 4, "num_heads": 2, "conv_kernel_size": 4, "window_size": 4, "max_num_tokens": 64}
SMALL_CFG = {**SMALL, "num_classes": 5, "shifts": [0, 2, 0, 2], "downsample": [True, True, False, True]}


def padded_batch(rows: list[list[int]], length: int | None = None, pad: int = PAD_ID) -> torch.Tensor:
    length = length or max(len(r) for r in rows)
    out = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def random_rows(lengths: list[int], seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=gen).tolist() for n in lengths]


def small_model(**kwargs) -> ByteFormer:
    return ByteFormer(5, **{**SMALL, **kwargs}).eval()


# ------------------------------------------------------------------------------------ the official code, step by step


def official_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official key names and shapes (every norm and bias non-trivial)."""
    gen = torch.Generator().manual_seed(seed)
    d, k, m, c = cfg["dim"], cfg["conv_kernel_size"], cfg["max_num_tokens"], cfg["num_classes"]

    def rnd(*shape, scale=0.2, shift=0.0):
        return torch.randn(*shape, generator=gen) * scale + shift

    sd = {
        "embeddings.weight": rnd(257, d, scale=d**-0.5),
        "token_reduction_net.weight": rnd(d, d, k, scale=(d * k) ** -0.5),
        "pos_embed.pos_embed.pos_embed": rnd(1, 1, m, d, scale=d**-0.5),
        "post_transformer_norm.weight": rnd(d, scale=0.1, shift=1.0),
        "post_transformer_norm.bias": rnd(d, scale=0.1),
        "classifier.weight": rnd(c, d),
        "classifier.bias": rnd(c),
    }
    sd["embeddings.weight"][256] = 0.0  # padding_idx row of the official Embedding
    for i in range(cfg["depth"]):
        p = f"transformer.{i}."
        for norm in ("pre_norm_mha.0", "pre_norm_ffn.0"):
            sd[p + norm + ".weight"], sd[p + norm + ".bias"] = rnd(d, scale=0.1, shift=1.0), rnd(d, scale=0.1)
        sd[p + "pre_norm_mha.1.qkv_proj.weight"], sd[p + "pre_norm_mha.1.qkv_proj.bias"] = rnd(3 * d, d), rnd(3 * d)
        sd[p + "pre_norm_mha.1.out_proj.weight"], sd[p + "pre_norm_mha.1.out_proj.bias"] = rnd(d, d), rnd(d)
        sd[p + "pre_norm_ffn.1.weight"], sd[p + "pre_norm_ffn.1.bias"] = rnd(4 * d, d), rnd(4 * d)
        sd[p + "pre_norm_ffn.4.weight"], sd[p + "pre_norm_ffn.4.bias"] = rnd(d, 4 * d, scale=0.1), rnd(d)
        if cfg["downsample"][i]:
            q = f"downsamplers.downsample_{i}."
            sd[q + "reduction.weight"] = rnd(d, 2 * d, scale=(2 * d) ** -0.5)
            sd[q + "norm.weight"], sd[q + "norm.bias"] = rnd(d, scale=0.1, shift=1.0), rnd(d, scale=0.1)
    return sd


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """``ByteFormer.forward`` of ml-cvnets on ``x`` (padding = -1, as its collate pads), eval mode, its defects kept."""
    d, k, heads, w = cfg["dim"], cfg["conv_kernel_size"], cfg["num_heads"], cfg["window_size"]
    x = x.clone()
    # get_backbone_inputs: the padding mask through boolean indexing + fill_ on the copy (a no-op)
    mask = torch.zeros_like(x, dtype=torch.float)
    mask[x == -1].fill_(float("-inf"))
    x[x == -1] = 256  # embeddings.padding_idx (-1 -> 256)
    x = F.embedding(x, sd["embeddings.weight"], padding_idx=256)
    # apply_token_reduction_net
    b, n, _ = x.shape
    x = F.conv1d(x.permute(0, 2, 1), sd["token_reduction_net.weight"], stride=k // 2).permute(0, 2, 1)
    mask = mask.reshape(b, n, 1).unfold(dimension=1, size=k, step=k // 2)  # unfold_tokens
    mask = mask.reshape(-1, 1, k).transpose(1, 2).max(dim=1).values.view(x.shape[0], x.shape[1])
    x = x + sd["pos_embed.pos_embed.pos_embed"].reshape(1, cfg["max_num_tokens"], d)[:, : x.shape[1]]
    # backbone_forward
    for i in range(cfg["depth"]):
        p, shift = f"transformer.{i}.", cfg["shifts"][i]
        b, n, c = x.shape
        # window_x_and_key_padding_mask: pad_x_and_mask, roll, window_partition
        pad = (w - n % w) % w
        kpm = F.pad(mask, (0, pad), value=float("-inf"))
        xw = F.pad(x, (0, 0, 0, pad), value=0)
        if shift > 0:
            xw, kpm = torch.roll(xw, shifts=-shift, dims=1), torch.roll(kpm, shifts=-shift, dims=1)
        xw = xw.reshape(b * xw.shape[1] // w, w, c)
        # (total_mask is built from kpm and the shift mask here, then never used)
        # TransformerEncoder.forward(x, None, attn_mask=None)
        res = xw
        y = F.layer_norm(xw, (d,), sd[p + "pre_norm_mha.0.weight"], sd[p + "pre_norm_mha.0.bias"])
        bw, s, _ = y.shape
        qkv = F.linear(y, sd[p + "pre_norm_mha.1.qkv_proj.weight"], sd[p + "pre_norm_mha.1.qkv_proj.bias"])
        qkv = qkv.reshape(bw, s, 3, heads, -1).transpose(1, 3).contiguous()
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        query = query * (d // heads) ** -0.5
        attn = torch.softmax(torch.matmul(query, key.transpose(-1, -2)).float(), dim=-1)
        out = torch.matmul(attn, value).transpose(1, 2).reshape(bw, s, -1)
        out = F.linear(out, sd[p + "pre_norm_mha.1.out_proj.weight"], sd[p + "pre_norm_mha.1.out_proj.bias"])
        y = out + res
        z = F.layer_norm(y, (d,), sd[p + "pre_norm_ffn.0.weight"], sd[p + "pre_norm_ffn.0.bias"])
        z = F.gelu(F.linear(z, sd[p + "pre_norm_ffn.1.weight"], sd[p + "pre_norm_ffn.1.bias"]))
        y = y + F.linear(z, sd[p + "pre_norm_ffn.4.weight"], sd[p + "pre_norm_ffn.4.bias"])
        # unwindow_x
        y = y.reshape(b, (y.shape[0] // b) * w, c)
        if shift > 0:
            y = torch.roll(y, shifts=shift, dims=1)
        x = y[:, :n]
        if cfg["downsample"][i]:  # TokenMerging
            q = f"downsamplers.downsample_{i}."
            x = x.clone()
            x[mask == float("-inf")] = 0
            pad = (2 - x.shape[1] % 2) % 2
            mask = F.pad(mask, (0, pad), value=float("-inf"))
            x = F.pad(x, (0, 0, 0, pad), value=0)
            b, n, c = x.shape
            x = x.unfold(1, 2, 2).reshape(b, n // 2, c * 2)  # channel-interleaved pairs
            x = F.linear(x, sd[q + "reduction.weight"])
            x = F.layer_norm(x, (d,), sd[q + "norm.weight"], sd[q + "norm.bias"])
            mask = mask.unfold(1, 2, 2).max(dim=-1).values
    x = F.layer_norm(x, (d,), sd["post_transformer_norm.weight"], sd["post_transformer_norm.bias"])
    # forward: masked mean with a mask that is all zeros
    attn_mask = mask.view(x.shape[0], x.shape[1], 1)
    x = x.clone()
    x[(attn_mask == float("-inf")).expand(-1, -1, x.shape[-1])] = 0
    norms = (attn_mask == 0).sum(dim=1)
    return F.linear(torch.sum(x, dim=1) / norms, sd["classifier.weight"], sd["classifier.bias"])


def official_num_parameters(d: int, depth: int, classes: int, k: int, tokens: int, merges: int) -> int:
    """Parameters of the official module tree: Embedding, Conv1d, positions, encoder layers, merges, norm, head."""
    layer = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return (
        257 * d + d * d * k + tokens * d + depth * layer + merges * (2 * d * d + 2 * d) + 2 * d + d * classes + classes
    )


# ------------------------------------------------------------------------------------------------------ tests


def test_parameter_counts():
    assert byteformer_tiny().num_parameters() == 16_805_416  # BF-Ti, k 32, 1000 classes, 50,000 positions
    assert official_num_parameters(192, 12, 1000, 32, 50_000, 6) == 16_805_416
    assert 16_805_416 - 50_000 * 192 == 7_205_416  # the reference note's 7.21 M without the positional table
    with torch.device("meta"):  # no memory for the larger modes
        counts = {f.__name__: f().num_parameters() for f in (byteformer_small, byteformer_base, byteformer_huge)}
    assert counts == {
        "byteformer_small": official_num_parameters(384, 12, 1000, 32, 50_000, 6),
        "byteformer_base": official_num_parameters(768, 12, 1000, 32, 50_000, 6),
        "byteformer_huge": official_num_parameters(1280, 32, 1000, 32, 50_000, 6),
    }
    tiny = byteformer_tiny(conv_kernel_size=16, max_num_tokens=10_000, num_classes=12)
    assert tiny.num_parameters() == official_num_parameters(192, 12, 12, 16, 10_000, 6)


def test_official_layout():
    model = byteformer_tiny(max_num_tokens=100)
    assert model.window_sizes == (128,) * 12 and model.window_shifts == (0, 64) * 6
    assert model.downsample == (0, 1, 3, 5, 7, 9)
    assert model.conv.stride == (16,) and model.conv.bias is None and model.embed.padding_idx == 256
    assert not model.embed.weight[256].any()
    block = model.blocks[1]
    assert block.attn.shift_size == 64 and block.attn.num_heads == 3 and block.mlp.fc1.out_features == 768
    assert block.norm1.eps == 1e-5 and model.merges["0"].reduction.bias is None


def test_official_compat_matches_the_official_forward():
    sd = official_state_dict(SMALL_CFG)
    model = small_model(official_compat=True)
    model.load_state_dict(checkpoint_filter_fn(sd, model))
    lengths = [37, 20, 9, 2]  # 17 tokens (odd, not a multiple of the window), a file shorter than k
    rows = random_rows(lengths)
    with torch.no_grad():
        ours = model(padded_batch(rows), torch.tensor(lengths))
        alone = model(padded_batch(rows[:1]))
    torch.testing.assert_close(ours, official_forward(sd, padded_batch(rows, pad=-1), SMALL_CFG), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, official_forward(sd, padded_batch(rows[:1]), SMALL_CFG), atol=1e-5, rtol=1e-5)


def test_checkpoint_filter_fn_nesting_prefixes_and_position_cut():
    sd = official_state_dict(SMALL_CFG)
    model = small_model(official_compat=True, max_num_tokens=40)  # fewer positions than the checkpoint's 64
    plain = checkpoint_filter_fn(sd, model)
    assert plain["pos_embed"].shape == (40, 16)
    model.load_state_dict(plain)  # strict
    for nest in ("model", "state_dict", "model_state_dict"):
        nested = checkpoint_filter_fn({nest: {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, model)
        assert nested.keys() == plain.keys() and all(torch.equal(nested[k], plain[k]) for k in plain)
    rows = random_rows([30, 11], seed=1)
    with torch.no_grad():
        out = model(padded_batch(rows), torch.tensor([30, 11]))
    torch.testing.assert_close(out, official_forward(sd, padded_batch(rows, pad=-1), SMALL_CFG), atol=1e-5, rtol=1e-5)


def test_correct_model_is_padding_invariant_and_official_compat_is_not():
    sd = official_state_dict(SMALL_CFG)
    rows = random_rows([23, 61, 50, 37], seed=2)
    outs = {}
    for compat in (False, True):
        model = small_model(official_compat=compat)
        model.load_state_dict(checkpoint_filter_fn(sd, model))
        with torch.no_grad():
            alone = model(padded_batch(rows[:1]))
            batched = model(padded_batch(rows), torch.tensor([len(r) for r in rows]))
        outs[compat] = (alone[0], batched[0])
    torch.testing.assert_close(*outs[False], atol=1e-5, rtol=1e-5)
    assert (outs[True][0] - outs[True][1]).abs().max() > 1e-2  # the official defect: padding changes the logits


@pytest.mark.parametrize("padding_free", [True, False])
def test_padding_values_are_never_read(padding_free):
    model = small_model(padding_free=padding_free)
    lengths = [40, 13, 3]
    tokens = padded_batch(random_rows(lengths, seed=3), length=48)
    garbage = tokens.clone()
    keep = torch.arange(48)[None, :] < torch.tensor(lengths)[:, None]
    garbage[~keep] = torch.randint(0, 257, (int((~keep).sum()),))
    with torch.no_grad():
        torch.testing.assert_close(model(garbage, torch.tensor(lengths)), model(tokens, torch.tensor(lengths)))


def test_packed_equals_padded_and_both_attention_layouts():
    lengths = [61, 24, 5, 2, 33]
    tokens, lens = padded_batch(random_rows(lengths, seed=4)), torch.tensor(lengths)
    model = small_model(dropout=0.0).train()  # train mode: the gradients of every path are compared
    results = {}
    for padding_free, mode in ((True, "varlen"), (True, "grouped"), (False, "varlen")):
        model.padding_free = padding_free
        for block in model.blocks:
            block.attn.packed_mode = mode
        model.zero_grad()
        out = model(tokens, lens)
        (out * torch.arange(1.0, 6.0)).sum().backward()
        results[padding_free, mode] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    ref_out, ref_grads = results[True, "varlen"]
    for key in ((True, "grouped"), (False, "varlen")):
        out, grads = results[key]
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=f"{key} {name}")


def test_rows_alone_equal_rows_in_a_batch():
    model = small_model()
    lengths = [64, 9, 1, 4, 47]
    rows = random_rows(lengths, seed=5)
    with torch.no_grad():
        batched = model(padded_batch(rows, length=70), torch.tensor(lengths))
        alone = torch.cat([model(padded_batch([r])) for r in rows])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_integer_dtypes_of_the_ids_agree():
    model = small_model()
    lengths = torch.tensor([30, 7])
    tokens = padded_batch(random_rows([30, 7], seed=9))
    with torch.no_grad():
        expected = model(tokens, lengths)
        torch.testing.assert_close(model(tokens.int(), lengths.int()), expected)
        row = tokens[:1, :30]  # no padding id: fits uint8
        torch.testing.assert_close(model(row.to(torch.uint8)), expected[:1])


def test_short_files_are_padded_to_the_kernel_with_256():
    model = small_model()
    assert [num_conv_tokens(n, 4) for n in (1, 3, 4, 5, 6, 7)] == [1, 1, 1, 1, 2, 2]
    row = random_rows([3], seed=6)[0]
    with torch.no_grad():
        torch.testing.assert_close(model(padded_batch([row])), model(padded_batch([row + [PAD_ID]])))


def test_wrap_around_is_masked_in_shifted_windows():
    """7 tokens, window 4, shift 2: the official layout pads to 8 and rolls, so the last window holds tokens
    [6, pad | 0, 1]; token 6 must not see tokens 0 and 1 (the official code lets it)."""
    torch.manual_seed(0)
    block = ByteFormerBlock(8, 2, 4.0, window_size=4, shift_size=2).eval()
    x = torch.randn(1, 7, 8)
    y = x.clone()
    y[0, 0] += torch.randn(8)  # not a constant shift, which the pre-norm would remove
    with torch.no_grad():
        for run in (
            lambda t: block(t[0], cu_seqlens=cu_seqlens_from_lengths([7]))[None],
            lambda t: block(t, lengths=torch.tensor([7])),
        ):
            delta = (run(y) - run(x)).abs().amax(-1)[0]
            assert delta[6] == 0 and delta[1] > 1e-3 and torch.all(delta[2:6] == 0)
        official = (block(y, official=True) - block(x, official=True)).abs().amax(-1)[0]
    assert official[6] > 1e-3  # the official defect: the end attends to the start


def test_token_merging_packed_equals_padded():
    torch.manual_seed(0)
    merge = TokenMerging(8)
    lengths = [5, 2, 1, 6]
    x = torch.randn(4, 6, 8)
    packed = torch.cat([x[i, :n] for i, n in enumerate(lengths)])
    dense = merge(x, lengths=torch.tensor(lengths))
    expected = torch.cat([dense[i, : (n + 1) // 2] for i, n in enumerate(lengths)])
    torch.testing.assert_close(merge.forward_packed(packed, lengths), expected)
    # an odd row's last token is paired with a zero token
    last = merge.norm(merge.reduction(torch.cat([x[0, 4], torch.zeros(8)])))
    torch.testing.assert_close(dense[0, 2], last)


def test_gradients_reach_every_parameter_but_the_padding_row():
    model = small_model(drop_path_rate=0.1, dropout=0.1).train()
    lengths = [50, 7]
    out = model(padded_batch(random_rows(lengths, seed=7)), torch.tensor(lengths))
    F.cross_entropy(out, torch.tensor([1, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not model.embed.weight.grad[PAD_ID].any()
    assert model.embed.weight.grad[:PAD_ID].abs().sum() > 0 and model.pos_embed.grad[: num_conv_tokens(50, 4)].any()


def test_errors_name_the_problem():
    model = small_model()
    tokens = padded_batch(random_rows([10, 6], seed=8))
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        model(tokens, torch.tensor([10, 0]))
    with pytest.raises(ValueError, match="exceed the 10 columns"):
        model(tokens, torch.tensor([11, 6]))
    with pytest.raises(ValueError, match=r"0\.\.256.*pad with 256"):
        model(tokens.masked_fill(tokens == PAD_ID, -1))
    with pytest.raises(ValueError, match=r"values in \[\d+, 257\]"):
        model(tokens.masked_fill(tokens == PAD_ID, 257))
    too_long = model.max_num_bytes + 1
    assert model.max_num_bytes == 64 * 2 + 4 - 1 and model.num_tokens(model.max_num_bytes) == 64
    long_tokens = torch.zeros(2, too_long, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"row 0 has {too_long} bytes -> 65 tokens.*at most {too_long - 1} bytes"):
        model(long_tokens, torch.tensor([too_long, 5]))
    model(long_tokens, torch.tensor([too_long - 1, 5]))  # at the limit: fine
    model.official_compat = True
    with pytest.raises(ValueError, match="the padded batch has"):
        model(long_tokens, torch.tensor([too_long - 1, 5]))
    with pytest.raises(TypeError, match="integer"):
        model(tokens.float())
    with pytest.raises(ValueError, match="lengths has 3 rows"):
        model(tokens, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="conv_kernel_size"):
        ByteFormer(dim=8, num_heads=2, conv_kernel_size=1)
    with pytest.raises(ValueError, match="downsample"):
        ByteFormer(dim=8, num_heads=2, depth=2, downsample=[2])
    with pytest.raises(ValueError, match="packed_mode"):
        ByteFormer(dim=8, num_heads=2, depth=2, packed_mode="nested")


def test_registry_and_backends():
    model = create_model("byteformer_tiny", **TINY).eval()
    inputs = model.example_inputs(3)
    assert inputs["lengths"].min() < model.conv_kernel_size < inputs["lengths"].max()
    with torch.no_grad():
        auto = model(**inputs)
        set_attention_backend(model, "reference")
        reference = model(**inputs)
    assert auto.shape == model.expected_output_shape(3)
    torch.testing.assert_close(reference, auto, atol=1e-5, rtol=1e-5)
    assert get_model_entry("byteformer_huge").filter_fn is checkpoint_filter_fn


# --------------------------------------------------------------------------- core: WindowAttention1d packed / padded


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("rel_bias", [False, True])
def test_window_attention_1d_packed_and_padded_layouts(shift, rel_bias):
    torch.manual_seed(0)
    layer = WindowAttention1d(16, 2, 8, shift, relative_position_bias=rel_bias).eval()
    lengths = [5, 23, 16, 1, 40, 0]
    x = torch.randn(len(lengths), 41, 16)
    with torch.no_grad():
        padded = layer(x, lengths=torch.tensor(lengths))
        assert not padded[0, 5:].any()  # padding positions are zeros
        expected = torch.cat([padded[i, :n] for i, n in enumerate(lengths)])
        alone = torch.cat([layer(x[i : i + 1, :n], lengths=[n])[0] for i, n in enumerate(lengths)])
        torch.testing.assert_close(alone, expected, atol=1e-6, rtol=1e-5)
        packed = torch.cat([x[i, :n] for i, n in enumerate(lengths)])
        for mode in ("varlen", "grouped"):
            layer.packed_mode = mode
            out = layer(packed, cu_seqlens=cu_seqlens_from_lengths(lengths))
            torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        full = torch.randn(2, 24, 16)  # every token real: the dense layout (-100 wrap mask) agrees
        torch.testing.assert_close(layer(full, lengths=[24, 24]), layer(full), atol=1e-6, rtol=1e-5)


def test_window_attention_1d_dense_without_the_wrap_mask_is_the_official_defect():
    torch.manual_seed(0)
    layer = WindowAttention1d(8, 1, 4, 2).eval()
    x = torch.randn(1, 8, 8)
    with torch.no_grad():
        unmasked = layer(x, wrap_around_mask=False)
        rolled = torch.roll(x, -2, dims=1).reshape(2, 4, 8)  # no mask at all: plain attention per rolled window
        q, k, v = layer.qkv(rolled).reshape(2, 4, 3, 8).unbind(2)
        window_outputs = layer.proj(torch.softmax(q @ k.transpose(1, 2) * 8**-0.5, -1) @ v)
    torch.testing.assert_close(unmasked, torch.roll(window_outputs.reshape(1, 8, 8), 2, dims=1))
    with pytest.raises(ValueError, match="wrap_around_mask=False"):
        layer(x, lengths=[8], wrap_around_mask=False)


def test_window_segments_and_layout_errors():
    assert window_segments_1d([7, 2, 0, 13], 4, 2) == [2, 4, 1, 2, 2, 4, 4, 3]
    assert window_segments_1d([7, 8], 4) == [4, 3, 4, 4]
    layer = WindowAttention1d(8, 2, 4, 2)
    x = torch.randn(10, 8)
    with pytest.raises(ValueError, match="rise from 0 to 10"):
        layer(x, cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32))
    with pytest.raises(ValueError, match="not both"):
        layer(x[None], lengths=[10], cu_seqlens=torch.tensor([0, 10]))
    with pytest.raises(TypeError, match="floating"):
        layer(x.long(), cu_seqlens=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"lengths must be in \[0, 10\]"):
        layer(x[None], lengths=[11])


# ------------------------------------------------------------------------------------------------- real bytes


@needs_fsdd
def test_fsdd_wav_bytes_packed_equals_padded_and_alone():
    """The official layout (k 32, window 128, 12 layers, 6 merges) at a small width on three real WAV files."""
    files = sorted(FSDD.glob("*.wav"))[:3]
    rows = [list(path.read_bytes()) for path in files]
    lengths = torch.tensor([len(r) for r in rows])
    assert all(math.ceil(n / 16) > 128 for n in lengths.tolist())  # several windows per file
    model = byteformer_tiny(dim=16, num_heads=2, num_classes=10, max_num_tokens=2048).eval()
    with torch.no_grad():
        packed = model(padded_batch(rows), lengths)
        alone = torch.cat([model(padded_batch([r])) for r in rows])
        model.padding_free = False
        padded = model(padded_batch(rows), lengths)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)

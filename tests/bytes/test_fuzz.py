"""Fuzz: seeded random byte files of random lengths 0..100k, plus the edge lengths (0, 1, 15, 16, 17, ByteFormer's
and bGPT's exact limits and one byte over), through a tiny ByteFormer (forward with lengths), a tiny bGPT (the
evaluation path: ``sliding_windows`` + ``file_window`` + ``collate_sequences`` + forward) and ``generate``. Every case
either gives finite outputs or raises a ``ValueError`` that says what is wrong; nothing crashes or hangs."""

from __future__ import annotations

import random

import pytest
import torch

from formers.bytes.data import (
    body_patches,
    collate_bytes,
    collate_sequences,
    file_patches,
    file_window,
    sliding_windows,
)
from formers.bytes.generation import file_prompt, generate
from formers.bytes.models.bgpt import BGPT
from formers.bytes.models.byteformer import ByteFormer
from formers.bytes.patches import PATCH_SIZE, file_sequence

# tiny models at the official byte geometry: ByteFormer's conv k 32 / stride 16, bGPT's 16-byte patches
BF_TOKENS = 4096
BF_LIMIT = BF_TOKENS * 16 + 32 - 1  # 65,567 bytes: the longest input whose conv tokens fit the positional table
BGPT_WINDOW = 64
BGPT_LIMIT = (BGPT_WINDOW - 2) * PATCH_SIZE  # 992 bytes: header + data + end patch fill the window exactly

EDGE = {"empty": 0, "one": 1, "15": 15, "16": 16, "17": 17, "bf_limit": BF_LIMIT, "bf_over": BF_LIMIT + 1,
        "bgpt_limit": BGPT_LIMIT, "bgpt_over": BGPT_LIMIT + 1, "100k": 100_000}  # fmt: skip
_rng = random.Random(20240218)
RANDOM = {f"random{i}": (_rng.randint(0, 100_000) if i % 2 else int(10 ** _rng.uniform(0, 5))) for i in range(10)}
CASES = {**EDGE, **RANDOM}
EXTENSIONS = ["wav", "py", "bin", "", "mid"]


def file_bytes(name: str) -> bytes:
    """The case's file: seeded random bytes (two cases are constant: all 0xff, all 0x00)."""
    n = CASES[name]
    if name == "bgpt_limit":
        return b"\xff" * n
    if name == "17":
        return b"\x00" * n
    gen = torch.Generator().manual_seed(sorted(CASES).index(name))
    return bytes(torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).tolist())


def extension(name: str) -> str:
    return EXTENSIONS[sorted(CASES).index(name) % len(EXTENSIONS)]


@pytest.fixture(scope="module")
def byteformer() -> ByteFormer:
    torch.manual_seed(0)
    model = ByteFormer(5, dim=8, depth=2, num_heads=2, window_size=16, max_num_tokens=BF_TOKENS).eval()
    assert model.max_num_bytes == BF_LIMIT
    return model


@pytest.fixture(scope="module")
def bgpt() -> BGPT:
    torch.manual_seed(0)
    return BGPT(dim=16, num_heads=2, patch_num_layers=1, byte_num_layers=1, patch_length=BGPT_WINDOW).eval()


# --------------------------------------------------------------------------------------------------- ByteFormer
@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_byteformer_forward(byteformer: ByteFormer, name: str) -> None:
    data = file_bytes(name)
    with torch.no_grad():
        if not data:  # collate_bytes of an empty file: a (1, 0) batch
            inputs = {"tokens": torch.zeros(1, 0, dtype=torch.long), "lengths": torch.zeros(1, dtype=torch.long)}
            with pytest.raises(ValueError, match="at least one row and one byte"):
                byteformer(**inputs)
            return
        inputs, _ = collate_bytes([(data, 0)])
        if len(data) > BF_LIMIT:
            with pytest.raises(ValueError, match=f"at most {BF_LIMIT} bytes"):
                byteformer(**inputs)
            return
        logits = byteformer(**inputs)
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


@pytest.mark.timeout(60)
def test_byteformer_batch_of_every_case(byteformer: ByteFormer) -> None:
    """The valid files in one padded batch give each row's logits alone; an empty row in a batch is named."""
    names = [n for n in CASES if 0 < CASES[n] <= BF_LIMIT]
    inputs, _ = collate_bytes([(file_bytes(n), 0) for n in names])
    with torch.no_grad():
        batch = byteformer(**inputs)
        alone = torch.cat([byteformer(**collate_bytes([(file_bytes(n), 0)])[0]) for n in names])
        assert torch.isfinite(batch).all()
        torch.testing.assert_close(batch, alone, atol=1e-4, rtol=1e-4)
        inputs["lengths"][2] = 0
        with pytest.raises(ValueError, match=r"lengths must be >= 1 byte, but row\(s\) \[2\]"):
            byteformer(**inputs)


# --------------------------------------------------------------------------------------------------------- bGPT
@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_bgpt_sliding_windows_forward(bgpt: BGPT, name: str) -> None:
    data, ext = file_bytes(name), extension(name)
    windows = sliding_windows(body_patches(len(data)), BGPT_WINDOW)
    items = [file_window(data, ext, start, length, count_from) for start, length, count_from in windows]
    # every real byte is counted by exactly one window; a window fits the model
    assert sum(int(item.real_mask.sum()) for item in items) == len(data)
    assert max(len(item) for item in items) <= BGPT_WINDOW
    sequence = file_sequence(data, ext)
    assert len(sequence) == file_patches(len(data))
    with torch.no_grad():
        if len(sequence) <= BGPT_WINDOW:  # a file that fits is one window: the file sequence itself
            assert len(items) == 1 and torch.equal(items[0].patches, sequence.patches)
            assert torch.equal(items[0].target_mask, sequence.target_mask)
            assert torch.isfinite(bgpt(sequence.patches[None])).all()
        else:
            with pytest.raises(ValueError, match=f"patch_length={BGPT_WINDOW}"):
                bgpt(sequence.patches[None])
        for chunk in range(0, len(items), 64):
            inputs, masks = collate_sequences(items[chunk : chunk + 64])
            logits = bgpt(**inputs)
            assert logits.shape == (*inputs["patches"].shape, 257)
            assert torch.isfinite(logits).all()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_from_random_prompts(bgpt: BGPT, use_cache: bool) -> None:
    """A random prefix of every case as a prompt (empty, inside a patch, longer than the window: slid), 3 patches."""
    rng = random.Random(7)
    names = list(CASES) if use_cache else ["empty", "17", "bgpt_over", "100k"]
    prompts = []
    for name in names:
        data = file_bytes(name)
        prompts.append(file_prompt(data[: rng.randint(0, len(data))], extension(name)))
    results = generate(bgpt, prompts, max_new_patches=3, temperature=1.0, top_k=50, seed=0, use_cache=use_cache)
    assert len(results) == len(prompts)
    for result in results:
        assert isinstance(result.data, bytes) and len(result.data) <= 3 * PATCH_SIZE
        assert result.patches.dim() == 2 and result.patches.shape[1] == PATCH_SIZE and 1 <= len(result.patches) <= 3
        assert int(result.patches.min()) >= 0 and int(result.patches.max()) <= 256

"""Benchmark formers-bytes in one run: padding-free vs padded training steps on real files, bGPT generation with key /
value caches vs the official recompute loop, and each model's training step against its official arithmetic.

Sections (fp32, one training step = forward, loss, backward; threads pinned; candidates interleaved, medians of
``--repeats`` rounds; a ratio ``a_vs_b`` is ``median(a) / median(b)``, so > 1 means ``b`` is faster):

* ``padding``: the same weights on the same batch, padding-free vs pad-and-mask.
  ByteFormer (``padding_free=True`` vs ``False``, cross-entropy on the digit labels) on FSDD WAV files: a seeded
  sample of 8 recordings, and 7 of them with the longest recording of the dataset (36,568 bytes) instead of the 8th.
  bGPT (``packed=True`` vs ``packed=False``: the patch decoder packed with varlen causal attention vs padded with a
  key padding mask; the byte decoder runs on the target patches only in both, as in the official code) on 8 seeded
  CPython standard-library files (``file_sequence``, cropped to the model's window: header + the first
  ``patch_length - 1`` body patches), loss on ``target_mask``. Then the byte decoder limited to the target file's
  patches with ``decode_mask`` (what ``ByteLMTask`` does for ``loss_on="target"``) vs decoding every patch, on 8
  seeded Nottingham ABC -> MIDI conversion pairs that fit the window (same loss, same gradients). Each batch records
  its token fill ratio: real tokens (conv tokens / patches) over the padded batch's ``B x longest``.
* ``generation``: ``generate(..., use_cache=True)`` (batched, KV caches at both levels) vs ``use_cache=False`` (the
  official recompute loop, one sample at a time), greedy, the same 4 prompts (the first 250..600 bytes of seeded
  CPython files, so prompts end inside a patch and have different lengths), a fixed number of new patches; generated
  bytes per second of each and whether both produced identical bytes. The untrained models' end-id embedding row
  (tied to the output head) is zeroed so that greedy decoding never picks 256 and every sample runs the full
  ``max_new_patches`` (an untrained model would otherwise stop at a random patch).
* ``official``: ours vs the official arithmetic, with the same weights on the same batch. ByteFormer: the test
  oracle of ``tests/bytes/test_byteformer.py`` (``official_forward``: ml-cvnets' forward step by step in plain torch,
  Conv1d on the embedded bytes, every row padded to the batch's longest, no masks) and our ``official_compat=True``
  path vs our default padding-free model, on the seeded FSDD sample. bGPT: the oracle of
  ``tests/bytes/test_bgpt.py`` (``OfficialBGPT``: HF ``transformers`` GPT-2 modules under the official names, the
  official forward and loss over every predicted byte) vs ours loaded through ``checkpoint_filter_fn``, same loss, on
  the CPython batch; the largest logit / loss differences are recorded (a check that both compute the same thing).
  Skipped with a note where ``transformers`` is not installed.

Sizes: ``--sizes small`` (default) BF-Ti (``byteformer_tiny``, the positional table sized to FSDD's longest file as in
``pipelines/bytes/fsdd_byteformer.yaml``) and ``bgpt_small``; generation at a small bGPT (d 128, 3 + 2 layers, 64
patches) and at ``bgpt_small``. ``--sizes paper``: BF-Ti and ``bgpt_512`` (generation at ``bgpt_small`` and
``bgpt_512``): slow on a CPU. ``--sizes tiny``: toy widths (the test). Sections whose data is missing under ``--data``
are skipped with a note in the JSON (generation then uses seeded random prompts).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bytes.py --threads 1 --json results/bench/bytes.json
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import Timing, interleaved_timings, load_average, pin_threads, write_json
from formers.bytes.abc_midi import read_tunes
from formers.bytes.data import collate_bytes, collate_sequences, conversion_patches, crop_sequence
from formers.bytes.generation import file_prompt, generate
from formers.bytes.models.bgpt import BGPT
from formers.bytes.models.bgpt import checkpoint_filter_fn as bgpt_filter
from formers.bytes.models.byteformer import PAD_ID, ByteFormer
from formers.bytes.models.byteformer import checkpoint_filter_fn as byteformer_filter
from formers.bytes.patches import PAD, ByteSequence, conversion_sequence, file_sequence
from formers.bytes.task import masked_cross_entropy, predicted_patch_mask
from formers.core.machine import machine_report
from formers.core.registry import create_model

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests" / "bytes"
CPU = torch.device("cpu")
BATCH = 8
FSDD_LONGEST_TOKENS = 2304  # rows of the positional table: FSDD's longest file (36,568 B) has 2,284 conv tokens

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "byteformer": ("byteformer_tiny", {"dim": 16, "depth": 4, "num_heads": 2, "window_size": 16}),
        "bgpt": (
            "bgpt_small",
            {"dim": 32, "num_heads": 2, "patch_num_layers": 2, "byte_num_layers": 1, "patch_length": 32},
        ),
        "generation": {
            "tiny": (
                "bgpt_small",
                {"dim": 32, "num_heads": 2, "patch_num_layers": 2, "byte_num_layers": 1, "patch_length": 24},
            )
        },
        "new_patches": 4,
        "prompts": 2,
    },
    "small": {
        "byteformer": ("byteformer_tiny", {}),
        "bgpt": ("bgpt_small", {}),
        "generation": {
            "small": (
                "bgpt_small",
                {"dim": 128, "num_heads": 2, "patch_num_layers": 3, "byte_num_layers": 2, "patch_length": 64},
            ),
            "bgpt_small": ("bgpt_small", {}),
        },
        "new_patches": 16,
        "prompts": 4,
    },
    "paper": {
        "byteformer": ("byteformer_tiny", {}),
        "bgpt": ("bgpt_512", {}),
        "generation": {"bgpt_small": ("bgpt_small", {}), "bgpt_512": ("bgpt_512", {})},
        "new_patches": 16,
        "prompts": 4,
    },
}


# ------------------------------------------------------------------------------------------------------ helpers
def oracle_module(name: str) -> ModuleType:
    """``tests/bytes/test_<name>.py``: the official-arithmetic oracle of a family (loaded by path, as a module)."""
    path = TESTS / f"test_{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bytes_oracle_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ms(t: Timing) -> dict[str, float]:
    return {"median_ms": round(t.median * 1e3, 2), "min_ms": round(t.best * 1e3, 2)}


def compare(candidates: dict[str, Callable[[], object]], args: argparse.Namespace, base: str) -> dict[str, Any]:
    """Interleaved timings of ``candidates`` and each one's median over ``base``'s."""
    timings = interleaved_timings(candidates, repeats=args.repeats, warmup=args.warmup, device=CPU)
    out: dict[str, Any] = {name: ms(t) for name, t in timings.items()}
    for name, t in timings.items():
        if name != base:
            out[f"{name}_vs_{base}"] = round(t.median / timings[base].median, 3)
    return out


def training_step(loss: Callable[[], Tensor], params: list[Tensor]) -> Callable[[], None]:
    """One training step: gradients cleared, forward + loss, backward."""

    def run() -> None:
        for p in params:
            p.grad = None
        loss().backward()

    return run


def build(name: str, kwargs: dict[str, Any], **extra: Any) -> Any:
    torch.manual_seed(0)
    return create_model(name, **{**kwargs, **extra}).train()


def seeded_sample(items: list[Any], count: int, seed: int) -> list[Any]:
    return random.Random(seed).sample(items, min(count, len(items)))


def fill(real: list[int]) -> float:
    """Real tokens over the padded batch's tokens (``B x longest``)."""
    return round(sum(real) / (len(real) * max(real)), 3)


# ------------------------------------------------------------------------------------------------------- data
def fsdd_batches(root: Path) -> dict[str, list[tuple[bytes, int, str]]] | None:
    """``{"sample": 8 seeded recordings, "with_longest": 7 of them + the longest one}`` as (bytes, digit, name)."""
    folder = root / "bytes" / "fsdd" / "recordings"
    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not files:
        return None
    sample = seeded_sample(files, BATCH, 0)
    longest = max(files, key=lambda p: (p.stat().st_size, p.name))
    with_longest = [p for p in sample if p != longest][: BATCH - 1] + [longest]

    def read(paths: list[Path]) -> list[tuple[bytes, int, str]]:
        return [(p.read_bytes(), int(p.name[0]), p.name) for p in paths]  # FSDD names: <digit>_<speaker>_<take>.wav

    return {"sample": read(sample), "with_longest": read(with_longest)}


def cpython_files(root: Path, count: int, seed: int, max_bytes: int | None = None) -> list[tuple[bytes, str]] | None:
    """A seeded sample of CPython files (non-empty; at most ``max_bytes`` long when given)."""
    folder = root / "bytes" / "code" / "cpython-3.11.7-Lib"
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else []
    if max_bytes is not None:
        files = [p for p in files if 0 < p.stat().st_size <= max_bytes]
    if not files:
        return None
    return [(p.read_bytes(), str(p.relative_to(folder))) for p in seeded_sample(files, count, seed)]


def size_bytes(size: dict[str, Any]) -> int:
    """The most file bytes a whole-file bGPT sequence of the benchmark's model holds (header and end patch aside)."""
    return (bgpt_model(size).patch_length - 2) * 16


def crop(sequence: ByteSequence, window: int) -> ByteSequence:
    """A file sequence cut to ``window`` patches: the header and the first ``window - 1`` body patches."""
    return sequence if len(sequence) <= window else crop_sequence(sequence, 0, window - 1)


def conversion_pairs(root: Path, window: int) -> list[tuple[ByteSequence, str]] | None:
    folder = root / "bytes" / "abc" / "nottingham"
    if not folder.is_dir():
        return None
    tunes = [t for t in read_tunes(folder) if conversion_patches(len(t.abc), len(t.midi)) <= window]
    return [(conversion_sequence(t.abc, "abc", t.midi, "mid"), t.name) for t in seeded_sample(tunes, BATCH, 0)]


# ------------------------------------------------------------------------------------------------------ padding
def byteformer_model(size: dict[str, Any], **extra: Any) -> ByteFormer:
    name, kwargs = size["byteformer"]
    return build(name, {"num_classes": 10, "max_num_tokens": FSDD_LONGEST_TOKENS, **kwargs}, **extra)


def byteformer_padding(files: list[tuple[bytes, int, str]], model: ByteFormer, args: argparse.Namespace) -> dict:
    inputs, labels = collate_bytes([(data, label) for data, label, _ in files])
    params = list(model.parameters())

    def step(padding_free: bool) -> Callable[[], None]:
        def loss() -> Tensor:
            model.padding_free = padding_free
            return F.cross_entropy(model(**inputs), labels)

        return training_step(loss, params)

    tokens = [model.num_tokens(len(data)) for data, _, _ in files]
    facts = {
        "files": [name for _, _, name in files],
        "bytes": [len(d) for d, _, _ in files],
        "tokens": tokens,
        "token_fill": fill(tokens),
    }
    result = compare({"padding_free": step(True), "padded": step(False)}, args, "padding_free")
    model.padding_free = True
    return {**facts, **result}


def bgpt_loss(model: BGPT, inputs: dict[str, Tensor], masks: dict[str, Tensor], **kwargs: Any) -> Tensor:
    """``ByteLMTask``'s ``target`` loss: cross-entropy over the target bytes of the predicted patches."""
    patches, num = inputs["patches"], inputs["num_patches"]
    logits = model(patches, num, **kwargs)
    mask = masks["target_mask"] & predicted_patch_mask(num, patches.shape[1], patches.shape[2])
    return masked_cross_entropy(logits, patches, mask).mean()


def bgpt_padding(sequences: list[ByteSequence], names: list[str], model: BGPT, args: argparse.Namespace) -> dict:
    """Three candidates on one batch: packed (formers' default), padded (patch decoder on the padded batch with a key
    padding mask, byte decoder on the real patches only — as the official code selects them) and naive padded (the
    padded batch all the way: every patch row, padding included, goes through the byte decoder, the loss masked
    afterwards — what a padded implementation without row selection computes)."""
    inputs, masks = collate_sequences(sequences)
    params = list(model.parameters())

    def step(packed: bool, naive: bool = False) -> Callable[[], None]:
        def loss() -> Tensor:
            model.packed = packed
            if not naive:
                return bgpt_loss(model, inputs, masks)
            patches, num = inputs["patches"], inputs["num_patches"]
            logits = model(patches)  # num_patches=None: every row counts as real, so every row is decoded
            mask = masks["target_mask"] & predicted_patch_mask(num, patches.shape[1], patches.shape[2])
            return masked_cross_entropy(logits, patches, mask).mean()

        return training_step(loss, params)

    counts = inputs["num_patches"].tolist()
    facts = {"files": names, "patches": counts, "token_fill": fill(counts)}
    candidates = {"packed": step(True), "padded": step(False), "padded_naive": step(False, naive=True)}
    result = compare(candidates, args, "packed")
    model.packed = True
    return {**facts, **result}


def bgpt_decode_mask(pairs: list[tuple[ByteSequence, str]], model: BGPT, args: argparse.Namespace) -> dict:
    inputs, masks = collate_sequences([s for s, _ in pairs])
    decode_mask = masks["target_mask"].any(dim=-1)
    params = list(model.parameters())
    counts = inputs["num_patches"].tolist()
    targets = sum(n - 1 for n in counts)  # the patches a full decode runs the byte decoder on
    facts = {
        "tunes": [name for _, name in pairs],
        "patches": counts,
        "token_fill": fill(counts),
        "decoded_fraction": round(int(decode_mask[:, 1:].sum()) / targets, 3),
    }
    candidates = {
        "decode_target": training_step(lambda: bgpt_loss(model, inputs, masks, decode_mask=decode_mask), params),
        "decode_all": training_step(lambda: bgpt_loss(model, inputs, masks), params),
    }
    return {**facts, **compare(candidates, args, "decode_target")}


def padding_section(args: argparse.Namespace, size: dict[str, Any], data: dict[str, Any], notes: list[str]) -> dict:
    out: dict[str, Any] = {}
    if data["fsdd"] is None:
        notes.append("padding.byteformer skipped: no FSDD recordings under --data (bytes/fsdd/recordings)")
    else:
        model = byteformer_model(size)
        out["byteformer"] = {"model": size["byteformer"][0], "params": model.num_parameters()}
        for case, files in data["fsdd"].items():
            out["byteformer"][case] = row = byteformer_padding(files, model, args)
            print(f"padding byteformer {case}: {row}", flush=True)
    model = bgpt_model(size)
    if data["cpython"] is None:
        notes.append("padding.bgpt skipped: no CPython files under --data (bytes/code/cpython-3.11.7-Lib)")
    else:
        out.setdefault("bgpt", {"model": size["bgpt"][0], "params": model.num_parameters()})
        sequences = [crop(file_sequence(d, "py"), model.patch_length) for d, _ in data["cpython"]]
        out["bgpt"]["cpython"] = row = bgpt_padding(sequences, [n for _, n in data["cpython"]], model, args)
        print(f"padding bgpt cpython: {row}", flush=True)
        whole = data["cpython_whole"] or []
        if len(whole) < 2:
            notes.append("padding.bgpt.cpython_whole skipped: fewer than 2 CPython files fit the model's window")
        else:
            sequences = [file_sequence(d, "py") for d, _ in whole]  # whole files, no crop: their natural lengths
            out["bgpt"]["cpython_whole"] = row = bgpt_padding(sequences, [n for _, n in whole], model, args)
            print(f"padding bgpt cpython_whole: {row}", flush=True)
    pairs = conversion_pairs(args.data, model.patch_length)
    if pairs is None:
        notes.append("padding.bgpt.conversion skipped: no Nottingham pairs under --data (bytes/abc/nottingham)")
    else:
        out.setdefault("bgpt", {"model": size["bgpt"][0], "params": model.num_parameters()})
        out["bgpt"]["conversion"] = row = bgpt_decode_mask(pairs, model, args)
        print(f"padding bgpt conversion: {row}", flush=True)
    return out


def bgpt_model(size: dict[str, Any]) -> BGPT:
    name, kwargs = size["bgpt"]
    return build(name, {"drop_rate": 0.0, "attn_drop_rate": 0.0, **kwargs})


# --------------------------------------------------------------------------------------------------- generation
def prompts_for(data: dict[str, Any], count: int, seed: int = 1) -> tuple[list[Tensor], str]:
    """``count`` prompts of 250..600 bytes (not patch multiples): CPython files, or seeded random bytes."""
    lengths = [250 + (350 * i) // max(count - 1, 1) for i in range(count)]
    files = data["generation_files"]
    if files is not None:
        return [file_prompt(d[:n], "py") for (d, _), n in zip(files, lengths, strict=False)], "cpython"
    gen = torch.Generator().manual_seed(seed)
    return [file_prompt(bytes(torch.randint(0, 256, (n,), generator=gen).tolist()), "py") for n in lengths], "random"


def generation_case(
    name: str, kwargs: dict[str, Any], prompts: list[Tensor], args: argparse.Namespace, new_patches: int
) -> dict:
    model = build(name, {"drop_rate": 0.0, "attn_drop_rate": 0.0, **kwargs}).eval()
    with torch.no_grad():
        model.byte_embed.weight[PAD].zero_()  # greedy never ends the untrained model's samples (module docstring)
    outputs: dict[str, list[bytes]] = {}

    def run(use_cache: bool) -> Callable[[], None]:
        def go() -> None:
            result = generate(model, prompts, max_new_patches=new_patches, temperature=0.0, use_cache=use_cache)
            outputs["cached" if use_cache else "recompute"] = [g.data for g in result]

        return go

    repeats = argparse.Namespace(repeats=max(1, (args.repeats + 1) // 2), warmup=min(args.warmup, 1))
    timings = interleaved_timings(
        {"cached": run(True), "recompute": run(False)}, repeats=repeats.repeats, warmup=repeats.warmup, device=CPU
    )
    generated = sum(len(d) for d in outputs["cached"])
    row: dict[str, Any] = {
        "model": name,
        "params": model.num_parameters(),
        "patch_length": model.patch_length,
        "prompts": len(prompts),
        "prompt_patches": [len(p) // model.patch_size for p in prompts],
        "new_patches": new_patches,
        "generated_bytes": generated,
        "identical": outputs["cached"] == outputs["recompute"],
        "repeats": repeats.repeats,
    }
    for key, t in timings.items():
        row[key] = {**ms(t), "bytes_per_s": round(generated / t.median, 1)}
    row["recompute_vs_cached"] = round(timings["recompute"].median / timings["cached"].median, 3)
    return row


def generation_section(args: argparse.Namespace, size: dict[str, Any], data: dict[str, Any], notes: list[str]) -> dict:
    prompts, source = prompts_for(data, size["prompts"])
    if source == "random":
        notes.append("generation: no CPython files under --data, seeded random prompts used")
    out: dict[str, Any] = {"prompt_source": source}
    for label, (name, kwargs) in size["generation"].items():
        out[label] = row = generation_case(name, kwargs, prompts, args, size["new_patches"])
        print(f"generation {label}: {row}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------- official
def byteformer_official(files: list[tuple[bytes, int, str]], size: dict[str, Any], args: argparse.Namespace) -> dict:
    oracle = oracle_module("byteformer")
    model = byteformer_model(size)
    windows = set(model.window_sizes)
    assert len(windows) == 1, "the oracle takes one window size"
    cfg = {
        "dim": model.dim,
        "conv_kernel_size": model.conv_kernel_size,
        "num_heads": model.blocks[0].attn.num_heads,
        "window_size": windows.pop(),
        "max_num_tokens": model.max_num_tokens,
        "num_classes": model.num_classes,
        "depth": model.depth,
        "shifts": list(model.window_shifts),
        "downsample": [i in model.downsample for i in range(model.depth)],
    }
    sd = oracle.official_state_dict(cfg, seed=0)
    model.load_state_dict(byteformer_filter(sd, model))
    compat = byteformer_model(size, official_compat=True)
    compat.load_state_dict(model.state_dict())
    sd = {k: v.clone().requires_grad_(True) for k, v in sd.items()}
    inputs, labels = collate_bytes([(data, label) for data, label, _ in files])
    official_ids = inputs["tokens"].masked_fill(inputs["tokens"] == PAD_ID, -1)  # the official collate pads with -1
    with torch.no_grad():
        reference = oracle.official_forward(sd, official_ids, cfg)
        diff = (compat(**inputs) - reference).abs().max().item()
        scale = reference.abs().max().item()
    candidates = {
        "formers": training_step(lambda: F.cross_entropy(model(**inputs), labels), list(model.parameters())),
        "official": training_step(
            lambda: F.cross_entropy(oracle.official_forward(sd, official_ids, cfg), labels), list(sd.values())
        ),
        "official_compat": training_step(lambda: F.cross_entropy(compat(**inputs), labels), list(compat.parameters())),
    }
    tokens = [model.num_tokens(len(d)) for d, _, _ in files]
    facts = {
        "model": size["byteformer"][0],
        "params": model.num_parameters(),
        "batch": "padding.byteformer.sample",
        "token_fill": fill(tokens),
        "official_compat_logits_max_abs_diff": diff,  # float rounding: Conv1d vs the per-tap tables, sums of 32 taps
        "official_logits_max_abs": scale,
    }
    return {**facts, **compare(candidates, args, "formers")}


def bgpt_official(sequences: list[ByteSequence], size: dict[str, Any], args: argparse.Namespace) -> dict:
    oracle = oracle_module("bgpt")
    model = bgpt_model(size)
    torch.manual_seed(0)
    official = oracle.OfficialBGPT(
        model.patch_length,
        model.dim,
        model.patch_decoder.blocks[0].attn.num_heads,
        model.patch_decoder.depth,
        model.byte_decoder.depth,
    ).train()
    for module in official.modules():  # the benchmark's models run without dropout (deterministic, comparable)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.load_state_dict(bgpt_filter(official.state_dict(), model), strict=True)
    inputs, _ = collate_sequences(sequences)
    patches, num = inputs["patches"], inputs["num_patches"]
    masks = (torch.arange(patches.shape[1]) < num[:, None]).long()
    flat = patches.reshape(len(patches), -1)
    every = predicted_patch_mask(num, patches.shape[1], patches.shape[2])

    def ours_loss() -> Tensor:  # the official loss: every byte of patches 1 .. num_patches - 1
        return masked_cross_entropy(model(patches, num), patches, every).mean()

    with torch.no_grad():
        diff = abs(ours_loss().item() - official(flat, masks)[1].item())
    candidates = {
        "formers": training_step(ours_loss, list(model.parameters())),
        "official": training_step(lambda: official(flat, masks)[1], list(official.parameters())),
    }
    facts = {
        "model": size["bgpt"][0],
        "params": model.num_parameters(),
        "batch": "padding.bgpt.cpython",
        "token_fill": fill(num.tolist()),
        "loss_abs_diff": diff,
    }
    return {**facts, **compare(candidates, args, "formers")}


def official_section(args: argparse.Namespace, size: dict[str, Any], data: dict[str, Any], notes: list[str]) -> dict:
    out: dict[str, Any] = {}
    if data["fsdd"] is None:
        notes.append("official.byteformer skipped: no FSDD recordings under --data")
    else:
        out["byteformer"] = row = byteformer_official(data["fsdd"]["sample"], size, args)
        print(f"official byteformer: {row}", flush=True)
    if importlib.util.find_spec("transformers") is None:
        notes.append("official.bgpt skipped: transformers (the HF GPT-2 of the official code) is not installed")
    elif data["cpython"] is None:
        notes.append("official.bgpt skipped: no CPython files under --data")
    else:
        window = bgpt_model(size).patch_length
        sequences = [crop(file_sequence(d, "py"), window) for d, _ in data["cpython"]]
        out["bgpt"] = row = bgpt_official(sequences, size, args)
        print(f"official bgpt: {row}", flush=True)
    return out


# ------------------------------------------------------------------------------------------------------- table
def table(metrics: dict[str, Any]) -> str:
    """The readable summary: one line per comparison."""
    lines = [
        "ratio = the second candidate's median / the first's (formers' default); fill = real / padded tokens",
        f"{'section / case':<40} {'candidate ms (median)':<52} {'ratio':>8} {'fill':>6}",
    ]

    def add(label: str, row: dict[str, Any], ratio_key: str, names: list[str]) -> None:
        times = "  ".join(f"{n} {row[n]['median_ms']:.1f}" for n in names if n in row)
        lines.append(f"{label:<40} {times:<52} {row[ratio_key]:>7.2f}x {row.get('token_fill', ''):>6}")

    padding = metrics.get("padding", {})
    for case in ("sample", "with_longest"):
        if case in padding.get("byteformer", {}):
            add(
                f"padding byteformer {case}",
                padding["byteformer"][case],
                "padded_vs_padding_free",
                ["padding_free", "padded"],
            )
    for case in ("cpython", "cpython_whole"):
        if case in padding.get("bgpt", {}):
            row = padding["bgpt"][case]
            add(f"padding bgpt {case}", row, "padded_vs_packed", ["packed", "padded"])
            add(f"padding bgpt {case} (naive)", row, "padded_naive_vs_packed", ["packed", "padded_naive"])
    if "conversion" in padding.get("bgpt", {}):
        add(
            "decode_mask bgpt conversion",
            padding["bgpt"]["conversion"],
            "decode_all_vs_decode_target",
            ["decode_target", "decode_all"],
        )
    for label, row in metrics.get("generation", {}).items():
        if isinstance(row, dict):
            add(
                f"generation {label} ({row['generated_bytes']} B, same={row['identical']})",
                row,
                "recompute_vs_cached",
                ["cached", "recompute"],
            )
            lines.append(
                f"{'':<40} bytes/s: cached {row['cached']['bytes_per_s']}, recompute {row['recompute']['bytes_per_s']}"
            )
    official = metrics.get("official", {})
    if "byteformer" in official:
        add("official byteformer (oracle)", official["byteformer"], "official_vs_formers", ["formers", "official"])
        add(
            "official byteformer (official_compat)",
            official["byteformer"],
            "official_compat_vs_formers",
            ["formers", "official_compat"],
        )
    if "bgpt" in official:
        add("official bgpt (HF GPT-2 oracle)", official["bgpt"], "official_vs_formers", ["formers", "official"])
    env = metrics["env"]
    load = f"load average (1 min) {env['load_before']:.2f} before / {env['load_after']:.2f} after"
    run = f"threads {env['threads']}, repeats {env['repeats']}, sizes {env['sizes']}"
    lines.append(f"{run}, {load}, {env['seconds']:.0f} s")
    report = machine_report()
    cpu = report["cpu"]
    lines.append(
        f"machine: {cpu['model']} ({cpu['capability']}, {cpu['cores']} cores), torch {report['torch']['version']}"
    )
    lines.extend(f"note: {note}" for note in metrics["notes"])
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sizes", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data"),
        help="the shared data root (relative paths: from the repository root)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["padding", "generation", "official"],
        choices=["padding", "generation", "official"],
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_absolute():
        args.data = (REPO / args.data).resolve()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    start = time.perf_counter()
    size = SIZES[args.sizes]
    notes: list[str] = []
    env = {
        "threads": threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "sizes": args.sizes,
        "data": str(args.data),
        "load_before": load_average(),
    }
    metrics: dict[str, Any] = {"env": env, "notes": notes}
    data = {
        "fsdd": fsdd_batches(args.data),
        "cpython": cpython_files(args.data, BATCH, 0),
        "cpython_whole": cpython_files(args.data, BATCH, 0, max_bytes=size_bytes(size)),
        "generation_files": cpython_files(args.data, size["prompts"], 1),
    }
    sections = {"padding": padding_section, "generation": generation_section, "official": official_section}
    for name in ("padding", "generation", "official"):
        if name in args.sections:
            metrics[name] = sections[name](args, size, data, notes)
    env["load_after"], env["seconds"] = load_average(), round(time.perf_counter() - start, 1)
    print(table(metrics), flush=True)
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

"""Sampling files from a :class:`~formers.bytes.models.bgpt.BGPT`: batched prompts, key/value caches at both
levels, each sample stopping at its own end.

The official loop (sanderwood/bgpt @ 56b98d6 ``inference.py`` / ``bGPTLMHeadModel.generate``): encode the context
patches, take the last patch state, then sample the next patch byte by byte from the byte decoder, re-running the
byte decoder on ``[h, b_0 .. b_j]`` for every byte, *until it emits 256 or has 16 bytes*; the file ends at the first
256 of a generated patch; otherwise the patch joins the context and the whole context is encoded again. A prompt
whose length is not a multiple of 16 ends with the first bytes of the next patch: they are given, the rest of that
patch is sampled (``generate`` of the official class).

:func:`generate` does the same with ``use_cache=True`` (default) in a batch: the patch decoder keeps one
:class:`~formers.core.layers.KVCache` per block across patches (each new patch is one cached step; prompts of
different lengths are left-padded once, with a key padding mask), the byte decoder one per block across the bytes
of a patch (reset at every patch), and samples that end leave the batch. ``use_cache=False`` is the official
recompute loop, one sample at a time: the reference of the tests and the baseline of the benchmark.

**Sliding window** (both modes, beyond the official code, which stops at ``PATCH_LENGTH``): when a context would
exceed ``model.patch_length`` patches it is cut to its first patch (the header: the file type) plus its last
``patch_length // 2`` patches, re-encoded from position 0, and generation continues; a prompt longer than the window
is cut the same way before the first patch. In conversion only the source header is kept that way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from formers.bytes.models.bgpt import BGPT
from formers.bytes.patches import PAD, conversion_sequence, header_patch

__all__ = ["Generation", "generate", "file_prompt", "conversion_prompt", "slide_window"]

OnBytes = Callable[[int, bytes], None]


@dataclass
class Generation:
    """One sample's output.

    Attributes:
        patches: long ``(n, patch_size)``: the generated patches (the first one starts with the prompt's trailing
            partial patch, if any); when ``ended``, the last one holds the end marker 256 and 256s after it.
        data: the generated file bytes (prompt bytes excluded), up to the first 256.
        ended: the sample emitted the end marker; ``False``: stopped by ``max_new_patches``.
    """

    patches: Tensor
    data: bytes
    ended: bool


def file_prompt(data: bytes, extension: str, patch_size: int = 16) -> Tensor:
    """A prompt that continues a file: header patch + ``data`` as flat byte ids ``(patch_size + len(data),)``; the
    bytes after the last full patch start the first generated patch. ``data=b""``: a new file of that type."""
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)
    return torch.cat([header_patch(extension, patch_size), raw])


def conversion_prompt(source: bytes, source_extension: str, target_extension: str, patch_size: int = 16) -> Tensor:
    """``[hdr(src)] [src + pad] [hdr(tgt)]``: the official conversion prompt (the source without its end patch, then
    the target header), ``(P, patch_size)``."""
    return conversion_sequence(source, source_extension, b"", target_extension, patch_size).patches[:-1]


def slide_window(patches: Tensor, patch_length: int) -> Tensor:
    """``patches`` ``(P, patch_size)`` unchanged if ``P <= patch_length``, else the first (header) patch followed by
    the last ``patch_length // 2`` patches."""
    if patches.shape[0] <= patch_length:
        return patches
    keep = patch_length // 2
    return torch.cat([patches[:1], patches[patches.shape[0] - keep :]]) if keep else patches[:1]


# ------------------------------------------------------------------------------------------------------ sampling


@dataclass
class _Sampler:
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator | None

    def __call__(self, logits: Tensor) -> Tensor:
        """Next ids ``(A,)`` from logits ``(A, vocab)``: greedy at temperature 0, else top-k / top-p filtered
        sampling at ``temperature``."""
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= self.top_p  # the top one always stays
            logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=self.generator)[:, 0]


def _check_options(max_new_patches: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(max_new_patches, int) or isinstance(max_new_patches, bool) or max_new_patches < 1:
        raise ValueError(f"generate: max_new_patches must be a positive int, got {max_new_patches!r}")
    if not temperature >= 0:
        raise ValueError(f"generate: temperature must be >= 0 (0: greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate: top_k must be None or a positive int, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be None or in (0, 1], got {top_p!r}")


def _split_prompt(index: int, prompt: Tensor, patch_size: int) -> tuple[Tensor, list[int]]:
    """``(full patches (P, patch_size), the trailing partial patch's bytes)`` of one prompt, checked."""
    where = f"generate: prompts[{index}]"
    if not isinstance(prompt, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor of byte ids, got {type(prompt).__name__}")
    if prompt.is_floating_point() or prompt.is_complex() or prompt.dtype == torch.bool:
        raise TypeError(f"{where} must hold integer byte ids, got {prompt.dtype}")
    if prompt.dim() == 2 and prompt.shape[1] == patch_size:
        flat = prompt.reshape(-1)
    elif prompt.dim() == 1:
        flat = prompt
    else:
        raise ValueError(
            f"{where} must be (num_patches, {patch_size}) patches or flat (length,) byte ids, got "
            f"shape {tuple(prompt.shape)}"
        )
    flat = flat.long().cpu()
    full = flat.numel() // patch_size
    if full < 1:
        raise ValueError(f"{where} needs at least one full patch (the header patch: file_prompt(b'', 'ext'))")
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > PAD):
        raise ValueError(f"{where} must hold byte ids in 0..256")
    partial = flat[full * patch_size :].tolist()
    if PAD in partial:
        raise ValueError(f"{where}: its trailing partial patch holds 256 (the end marker): the file has already ended")
    return flat[: full * patch_size].view(full, patch_size), partial


# -------------------------------------------------------------------------------------------------- entry point


def generate(
    model: BGPT,
    prompts: Sequence[Tensor],
    *,
    max_new_patches: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    on_bytes: OnBytes | None = None,
) -> list[Generation]:
    """Sample a continuation of every prompt (module docstring: the official stopping rule, the caches and the
    sliding window).

    Args:
        model: a :class:`~formers.bytes.models.bgpt.BGPT` (run in eval mode here, its mode restored after).
        prompts: per sample, patches ``(P, patch_size)`` or flat byte ids ``(length,)`` (ids 0..256) starting with a
            header patch: :func:`file_prompt` (a new file, or a file to continue), :func:`conversion_prompt`.
        max_new_patches: the most patches generated per sample (the end patch included).
        temperature: softmax temperature; 0 = greedy (argmax).
        top_k, top_p: keep the ``top_k`` most likely ids / the smallest set of probability ``>= top_p`` (official
            ``top_k_sampling`` / ``top_p_sampling``); ``None``: off.
        seed: seeds the sampling generator (same batch, same seed: same output); ``None``: torch's global RNG.
        use_cache: cached batched decoding; ``False``: the official recompute loop, one sample at a time.
        on_bytes: ``on_bytes(sample_index, new_bytes)`` after each patch with the file bytes it added (streaming);
            the chunks of a sample concatenate to its ``Generation.data``.

    Returns:
        One :class:`Generation` per prompt, in order.
    """
    if not isinstance(model, BGPT):
        raise TypeError(f"generate: model must be a BGPT, got {type(model).__name__}")
    if isinstance(prompts, Tensor) or not isinstance(prompts, Sequence) or not prompts:
        raise TypeError("generate: prompts must be a non-empty list of tensors (one prompt per sample)")
    _check_options(max_new_patches, temperature, top_k, top_p)
    split = [_split_prompt(i, prompt, model.patch_size) for i, prompt in enumerate(prompts)]
    device = model.device
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    sampler = _Sampler(float(temperature), top_k, top_p, generator)
    contexts = [slide_window(patches.to(device), model.patch_length) for patches, _ in split]
    forced = [partial for _, partial in split]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            loop = _generate_cached if use_cache else _generate_recompute
            return loop(model, contexts, forced, max_new_patches, sampler, on_bytes)
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------------- cached, batched


class _Outputs:
    """The per-sample outputs being built, and the bookkeeping of one finished patch."""

    def __init__(self, count: int) -> None:
        self.patches: list[list[Tensor]] = [[] for _ in range(count)]
        self.data = [bytearray() for _ in range(count)]
        self.ended = [False] * count

    def add(self, sample: int, patch: Tensor, given: int, on_bytes: OnBytes | None) -> bool:
        """Record ``patch`` (its first ``given`` bytes came from the prompt); ``True`` if the file ended in it."""
        ids = patch.tolist()
        stop = ids.index(PAD) if PAD in ids else len(ids)
        new = bytes(ids[given:stop])
        self.patches[sample].append(patch.cpu())
        self.data[sample] += new
        if new and on_bytes is not None:
            on_bytes(sample, new)
        self.ended[sample] = stop < len(ids)
        return self.ended[sample]

    def results(self) -> list[Generation]:
        return [
            Generation(torch.stack(patches), bytes(data), ended)
            for patches, data, ended in zip(self.patches, self.data, self.ended, strict=True)
        ]


class _PatchState:
    """The patch decoder's caches for the active samples (left-padded), their next positions and last states."""

    def __init__(self, model: BGPT, contexts: list[Tensor]) -> None:
        """Prefill: encode the (left-padded) contexts in one batch, keeping the keys and values."""
        lengths = torch.tensor([len(c) for c in contexts], device=contexts[0].device)
        longest = int(lengths.max())
        pads = longest - lengths
        ids = torch.full((len(contexts), longest, model.patch_size), PAD, dtype=torch.long, device=lengths.device)
        for row, context in enumerate(contexts):
            ids[row, int(pads[row]) :] = context
        columns = torch.arange(longest, device=lengths.device)
        padding = columns < pads[:, None]
        self.padding: Tensor | None = padding if bool(padding.any()) else None
        self.caches = model.patch_decoder.new_caches()
        positions = (columns - pads[:, None]).clamp_min(0)  # left padding: every row's real patches start at 0
        hidden = model.patch_decoder(
            model.patch_embed(ids), positions, key_padding_mask=self.padding, kv_caches=self.caches
        )
        self.last = hidden[:, -1]
        self.next_position = lengths

    def select(self, rows: list[int]) -> None:
        """Keep the batch rows ``rows`` (samples still generating)."""
        index = torch.tensor(rows, device=self.last.device)
        for cache in self.caches:
            cache.select(index)
        self.last, self.next_position = self.last[index], self.next_position[index]
        if self.padding is not None:
            self.padding = self.padding[index]

    def step(self, model: BGPT, patches: Tensor) -> None:
        """Append one patch per row ``(A, patch_size)``: one cached step of the patch decoder."""
        if self.padding is not None:
            self.padding = torch.cat([self.padding, self.padding.new_zeros(len(patches), 1)], dim=1)
        x = model.patch_embed(patches)[:, None]
        hidden = model.patch_decoder(
            x, self.next_position[:, None], key_padding_mask=self.padding, kv_caches=self.caches
        )
        self.last = hidden[:, 0]
        self.next_position = self.next_position + 1


def _sample_patch(model: BGPT, last: Tensor, given: list[list[int]], sampler: _Sampler) -> Tensor:
    """One patch per row ``(A, patch_size)`` from the patch states ``last`` ``(A, dim)``: the byte decoder with a KV
    cache, byte after byte; a row stops at its 256 (the rest of its patch is 256); ``given`` bytes are forced."""
    rows, size = last.shape[0], model.patch_size
    forced = torch.full((rows, size), -1, dtype=torch.long, device=last.device)
    for row, prefix in enumerate(given):
        forced[row, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
    tokens = torch.full((rows, size), PAD, dtype=torch.long, device=last.device)
    done = torch.zeros(rows, dtype=torch.bool, device=last.device)
    caches = model.byte_decoder.new_caches()
    x = last[:, None]
    for j in range(size):
        position = torch.full((1,), j, dtype=torch.long, device=last.device)
        hidden = model.byte_decoder(x, position, kv_caches=caches)
        byte = sampler(model.lm_head(hidden[:, 0]))
        byte = torch.where(forced[:, j] >= 0, forced[:, j], byte)
        byte = torch.where(done, PAD, byte)
        tokens[:, j] = byte
        done = done | (byte == PAD)
        if bool(done.all()):
            break
        x = model.byte_embed(byte)[:, None]
    return tokens


def _generate_cached(
    model: BGPT,
    contexts: list[Tensor],
    forced: list[list[int]],
    max_new_patches: int,
    sampler: _Sampler,
    on_bytes: OnBytes | None,
) -> list[Generation]:
    outputs = _Outputs(len(contexts))
    active = list(range(len(contexts)))
    state = _PatchState(model, contexts)
    for step in range(max_new_patches):
        given = [forced[i] if step == 0 else [] for i in active]
        patches = _sample_patch(model, state.last, given, sampler)
        keep = [row for row, i in enumerate(active) if not outputs.add(i, patches[row], len(given[row]), on_bytes)]
        if not keep or step == max_new_patches - 1:
            break
        active = [active[row] for row in keep]
        for row, i in zip(keep, active, strict=True):
            contexts[i] = torch.cat([contexts[i], patches[row : row + 1]])
        if any(len(contexts[i]) > model.patch_length for i in active):
            # a context is full: slide it and re-encode every active sample (rare: once per patch_length / 2 patches)
            for i in active:
                contexts[i] = slide_window(contexts[i], model.patch_length)
            state = _PatchState(model, [contexts[i] for i in active])
        else:
            state.select(keep)
            state.step(model, patches[keep])
    return outputs.results()


# ------------------------------------------------------------------------------------------ official recompute loop


def _generate_recompute(
    model: BGPT,
    contexts: list[Tensor],
    forced: list[list[int]],
    max_new_patches: int,
    sampler: _Sampler,
    on_bytes: OnBytes | None,
) -> list[Generation]:
    """The official loop, batch 1: the whole context through the patch decoder for every patch, ``[h, bytes so
    far]`` through the byte decoder for every byte."""
    outputs = _Outputs(len(contexts))
    size, device = model.patch_size, contexts[0].device
    for i, context in enumerate(contexts):
        for step in range(max_new_patches):
            positions = torch.arange(len(context), device=device)
            last = model.patch_decoder(model.patch_embed(context[None]), positions)[0, -1]
            patch = list(forced[i]) if step == 0 else []
            given = len(patch)
            while len(patch) < size:
                so_far = torch.tensor(patch, dtype=torch.long, device=device)
                x = torch.cat([last[None], model.byte_embed(so_far)])[None]
                hidden = model.byte_decoder(x, torch.arange(x.shape[1], device=device))
                byte = int(sampler(model.lm_head(hidden[:, -1]))[0])
                patch.append(byte)
                if byte == PAD:
                    break
            patch_ids = torch.tensor(patch + [PAD] * (size - len(patch)), dtype=torch.long, device=device)
            if outputs.add(i, patch_ids, given, on_bytes):
                break
            context = slide_window(torch.cat([context, patch_ids[None]]), model.patch_length)
    return outputs.results()

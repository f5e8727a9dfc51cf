"""bGPT's file format: a file as a sequence of 16-byte patches, and the masks that say which bytes a loss counts.

The official layout (sanderwood/bgpt ``train-gen.py`` ``read_bytes``; reference note section 1.2)::

    [header patch] [file bytes, right-padded with 256 to a multiple of 16] [end patch = 16 x 256]

The header patch holds the file extension (``b"py"``, ``b"abc"``) right-padded with 256. Id 256 is padding and the
end marker. Conversion (``abc -> mid``) is the input file *without* its end patch followed by the target file with
its own header: ``[hdr(abc)] [abc bytes] [hdr(mid)] [mid bytes] [end]``.

Two masks travel with every sequence (shape ``(num_patches, patch_size)``, aligned with the patches):

- ``real_mask``: the bytes of the file being modelled (the target file in conversion) — what bits per byte count;
- ``target_mask``: ``real_mask`` plus the one terminator (the first 256 after the last real byte), so a model trained
  on it learns to stop. The official loss ("all") instead counts every byte of every predicted patch: pads, the end
  patch and, in conversion, the input file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PATCH_SIZE",
    "PAD",
    "ByteSequence",
    "header_patch",
    "file_sequence",
    "conversion_sequence",
    "sequence_to_bytes",
    "check_extension",
]

PATCH_SIZE = 16
PAD = 256  # padding and end marker (the 257th byte id)


def check_extension(extension: str, patch_size: int = PATCH_SIZE) -> bytes:
    """The header bytes of ``extension`` (leading dot dropped), refusing ones that do not fit a patch or hold
    non-ASCII characters."""
    ext = extension.lstrip(".")
    try:
        raw = ext.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"file extension {extension!r} is not ASCII; bGPT headers hold ASCII extensions") from None
    if len(raw) > patch_size:
        raise ValueError(f"file extension {extension!r} has {len(raw)} bytes; a header patch holds {patch_size}")
    return raw


def header_patch(extension: str, patch_size: int = PATCH_SIZE) -> Tensor:
    """``(patch_size,)`` long: the extension's bytes right-padded with 256."""
    raw = check_extension(extension, patch_size)
    patch = torch.full((patch_size,), PAD, dtype=torch.long)
    if raw:
        patch[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    return patch


def _body(data: bytes, patch_size: int) -> Tensor:
    """File bytes right-padded with 256 to a multiple of ``patch_size``, then the end patch: ``(P, patch_size)``."""
    n = len(data)
    data_patches = -(-n // patch_size)
    flat = torch.full(((data_patches + 1) * patch_size,), PAD, dtype=torch.long)
    if n:
        flat[:n] = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    return flat.view(-1, patch_size)


@dataclass
class ByteSequence:
    """One bGPT sequence: ``patches`` ``(P, patch_size)`` long in ``0..256`` and its two bool masks (same shape)."""

    patches: Tensor
    target_mask: Tensor
    real_mask: Tensor

    def __len__(self) -> int:
        return self.patches.shape[0]


def _masks_for(body_start: int, num_bytes: int, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Masks marking ``num_bytes`` real bytes from flat position ``body_start`` and the terminator after them."""
    flat_real = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    flat_real[body_start : body_start + num_bytes] = True
    flat_target = flat_real.clone()
    flat_target[body_start + num_bytes] = True  # the first 256 after the file: always inside the body's end patch
    return flat_target.view(shape), flat_real.view(shape)


def file_sequence(data: bytes, extension: str, patch_size: int = PATCH_SIZE) -> ByteSequence:
    """``[header] [data + pad] [end]`` with the masks of a language-modelling sequence (the whole file is target)."""
    patches = torch.cat([header_patch(extension, patch_size)[None], _body(data, patch_size)])
    target, real = _masks_for(patch_size, len(data), tuple(patches.shape))
    return ByteSequence(patches, target, real)


def conversion_sequence(
    source: bytes, source_extension: str, target: bytes, target_extension: str, patch_size: int = PATCH_SIZE
) -> ByteSequence:
    """``[hdr(src)] [src + pad] [hdr(tgt)] [tgt + pad] [end]``: the official conversion layout (the input's end
    patch dropped). The masks cover the target file only."""
    src = _body(source, patch_size)[:-1]  # without its end patch
    src_header, tgt_header = header_patch(source_extension, patch_size), header_patch(target_extension, patch_size)
    head = torch.cat([src_header[None], src, tgt_header[None]])
    patches = torch.cat([head, _body(target, patch_size)])
    target_mask, real = _masks_for(head.shape[0] * patch_size, len(target), tuple(patches.shape))
    return ByteSequence(patches, target_mask, real)


def sequence_to_bytes(patches: Tensor, *, skip_patches: int = 1) -> bytes:
    """The file bytes of a (generated) patch sequence: drop ``skip_patches`` leading patches (the header, or the
    whole prompt in conversion) and stop at the first 256."""
    if patches.dim() != 2:
        raise ValueError(f"patches must be (num_patches, patch_size), got shape {tuple(patches.shape)}")
    flat = patches[skip_patches:].reshape(-1)
    stop = (flat == PAD).nonzero()
    end = int(stop[0]) if stop.numel() else flat.numel()
    if end and (flat[:end].min() < 0 or flat[:end].max() > 255):
        raise ValueError("patches hold ids outside 0..256")
    return bytes(flat[:end].to(torch.uint8).tolist())

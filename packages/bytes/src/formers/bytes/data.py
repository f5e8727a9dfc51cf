"""formers-bytes data modules: raw file bytes as ByteFormer classification batches and as bGPT patch sequences.

Every module is a :class:`formers.core.data.SplitDataModule` configured by plain typed arguments (LightningCLI YAML).

**Classification (ByteFormer)**, batches ``({"tokens": (B, L) long, "lengths": (B,) long}, target (B,) long)``,
bytes right-padded with 256 (:func:`collate_bytes`):

- :class:`FSDDDataModule`: the Free Spoken Digit Dataset's WAV files as stored (header included), label = the digit.
  Official split: takes 0-4 are the test set (300 files); validation = takes ``val_takes`` (default 5-9, 300 files);
  train = the other takes (2,400 files). Files longer than ``max_bytes`` keep their first ``max_bytes`` bytes (the
  RIFF header and the start of the sound); the default, 36,568, is FSDD's longest file, so nothing is cut.
  Optional train-time augmentation (:class:`WavAugment`) keeps valid WAV bytes.
- :class:`ImageBytesDataModule`: CIFAR-10 JPEGs read straight from the tar, re-encoded to TIFF or PNG
  (``compress_level=0``) or kept as JPEG bytes. Official train/test split; validation = the last ``val_per_class``
  images (by file name) of every training class (default 500: 45,000 / 5,000 / 10,000).

**bGPT sequences**, items :class:`formers.bytes.patches.ByteSequence`, batches
``({"patches": (B, P, 16) long, "num_patches": (B,) long}, {"target_mask": (B, P, 16) bool, "real_mask": ...})``
right-padded with 256-patches and False masks (:func:`collate_sequences`):

- :class:`ByteLMDataModule`: language modelling on one text file cut into documents (tiny-shakespeare) or on a folder
  of files (the CPython standard library).
- :class:`ConversionDataModule`: Nottingham ABC -> MIDI pairs (:mod:`formers.bytes.abc_midi`).
- :class:`CPUSimDataModule`: CPU-state simulation files (:mod:`formers.bytes.cpu_sim`); only the states after the random
  initial state are counted.

Window policy (``window_patches`` = the model's ``patch_length``, :meth:`SequenceDataModule.model_sizes`):

- training: a sequence longer than the window is cropped to a random patch-aligned window of its body, with the
  header patch kept first; the masks are cropped with it, so only the bytes inside the window count;
- evaluation: a long file is covered by deterministic sliding windows (header + ``window_patches - 1`` body patches,
  stride half of that); every window after the first masks out the bytes an earlier window already counted, so each
  byte is counted exactly once, with at least half a window of context (except in the first window), and bits per
  byte over held-out files are exact (:func:`sliding_windows`);
- conversion and CPU simulation need the whole sequence: pairs / files longer than the window are excluded, and the
  counts are stated (:attr:`SequenceDataModule.summary`, a warning, and the checkpoint's data state).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import warnings
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from formers.bytes.abc_midi import Tune, read_tunes
from formers.bytes.patches import (
    PAD,
    PATCH_SIZE,
    ByteSequence,
    check_extension,
    conversion_sequence,
    file_sequence,
    header_patch,
)
from formers.core.data import SplitDataModule

__all__ = [
    "collate_bytes",
    "collate_sequences",
    "crop_sequence",
    "file_window",
    "states_sequence",
    "sliding_windows",
    "body_patches",
    "file_patches",
    "conversion_patches",
    "hash_fraction",
    "WavAugment",
    "ByteFilesDataset",
    "FSDDDataModule",
    "ImageBytesDataModule",
    "read_cifar_tar",
    "encode_image",
    "ClassificationDataModule",
    "TarImageDataset",
    "SequenceDataModule",
    "LMTrainDataset",
    "LMEvalDataset",
    "ConversionDataset",
    "CPUSimDataset",
    "ByteLMDataModule",
    "ConversionDataModule",
    "CPUSimDataModule",
    "FSDD_TEST_TAKES",
]

SPLITS = ("train", "val", "test")
FSDD_TEST_TAKES = (0, 1, 2, 3, 4)  # the official FSDD test set (repo README): takes 0-4 of every speaker and digit
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def _as_uint8(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


# ================================================================================================ classification
def collate_bytes(items: Sequence[tuple[Tensor | bytes, int]]) -> tuple[dict[str, Tensor], Tensor]:
    """ByteFormer batch of ``(bytes, label)`` items (bytes as a 1-D uint8 / long tensor or a ``bytes`` object).

    Returns:
        ``({"tokens": (B, L) long right-padded with 256, "lengths": (B,) long}, target (B,) long)``, L = the longest
        item.
    """
    if not items:
        raise ValueError("collate_bytes got an empty batch")
    rows = [_as_uint8(data) if isinstance(data, (bytes, bytearray)) else data for data, _ in items]
    for i, row in enumerate(rows):
        if row.dim() != 1:
            raise ValueError(f"item {i} of the batch: bytes must be 1-D, got shape {tuple(row.shape)}")
    lengths = torch.tensor([row.numel() for row in rows], dtype=torch.long)
    tokens = torch.full((len(rows), int(lengths.max())), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : row.numel()] = row.long()
    target = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return {"tokens": tokens, "lengths": lengths}, target


class WavAugment:
    """Train-time augmentation of a PCM WAV file that returns valid WAV bytes of the same length.

    Applied on the samples (reference note 2.2, the official Speech Commands recipe): a circular **roll** by a shift
    drawn uniformly from ``[-int(N * roll_fraction), int(N * roll_fraction))`` samples (the official ``Roll``), a
    **gain** drawn uniformly in ``[-gain_db, gain_db]`` dB (off by default, as in the official recipe) and additive
    Gaussian **noise** at ``noise_db`` dB of full scale (a stand-in for the official ambient-noise files at -50 dB,
    which FSDD lacks; ``None``: off). Samples are clipped to the sample range and the file is written back with the
    stdlib ``wave`` module (canonical 44-byte RIFF header; FSDD's files all have exactly that header). Random draws use
    torch's default generator, which Lightning's ``seed_everything`` and the DataLoader's per-worker seeding make
    reproducible. The official in-dataset mixup is not done (targets are class indices).
    """

    def __init__(self, roll_fraction: float = 0.1, gain_db: float = 0.0, noise_db: float | None = -50.0) -> None:
        if not 0 <= roll_fraction < 1 or gain_db < 0:
            raise ValueError(f"roll_fraction must be in [0, 1) and gain_db >= 0, got {roll_fraction}, {gain_db}")
        self.roll_fraction, self.gain_db, self.noise_db = roll_fraction, gain_db, noise_db

    def __call__(self, data: bytes) -> bytes:
        try:
            with wave.open(io.BytesIO(data)) as reader:
                params = reader.getparams()
                frames = reader.readframes(reader.getnframes())
        except (wave.Error, EOFError) as err:
            raise ValueError(f"not a PCM WAV file ({err})") from err
        width = params.sampwidth
        if width not in (1, 2, 4):
            raise ValueError(f"WAV sample width {width} bytes is not supported (1, 2 or 4)")
        dtype = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}[width]
        ints = np.frombuffer(frames, dtype=dtype).astype(np.float64)
        scale, offset = float(2 ** (8 * width - 1)), 128.0 if width == 1 else 0.0  # 8-bit WAV is unsigned
        x = torch.from_numpy((ints - offset) / scale).view(-1, params.nchannels)  # (N, channels) in [-1, 1)
        n = x.shape[0]
        reach = int(n * self.roll_fraction)
        if reach > 0:
            x = torch.roll(x, int(torch.randint(-reach, reach, (1,))), dims=0)
        if self.gain_db > 0:
            x = x * 10.0 ** (float(torch.empty(1).uniform_(-self.gain_db, self.gain_db)) / 20.0)
        if self.noise_db is not None:
            x = x + 10.0 ** (self.noise_db / 20.0) * torch.randn(x.shape, dtype=x.dtype)
        ints_out = (x * scale).round().clamp(-scale, scale - 1) + offset
        out = io.BytesIO()
        with wave.open(out, "wb") as writer:
            writer.setparams(params)
            writer.writeframes(ints_out.numpy().astype(dtype).tobytes())
        return out.getvalue()

    def __repr__(self) -> str:
        return f"WavAugment(roll_fraction={self.roll_fraction}, gain_db={self.gain_db}, noise_db={self.noise_db})"


class ByteFilesDataset(Dataset):
    """Files on disk as ``(uint8 bytes, label)``, read when indexed, optionally transformed, then cut to ``max_bytes``
    (the first ``max_bytes`` bytes kept)."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        max_bytes: int | None = None,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.max_bytes, self.transform = list(paths), list(labels), max_bytes, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path = self.paths[i]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err}") from err
        if self.transform is not None:
            try:
                data = self.transform(data)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from err
        if self.max_bytes is not None:
            data = data[: self.max_bytes]
        return _as_uint8(data), self.labels[i]


class ClassificationDataModule(SplitDataModule):
    """Base of the byte-classification modules: class names, :func:`collate_bytes`, the data state for predict."""

    kind = "classification"

    def __init__(self, batch_size: int, num_workers: int, pin_memory: bool) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.classes: list[str] = []

    def model_sizes(self) -> dict[str, Any]:
        """``num_classes``."""
        return {"num_classes": len(self.classes)}

    def collate(self) -> Callable[[list[Any]], Any]:
        return collate_bytes

    def data_facts(self) -> dict[str, Any]:
        """What predict needs to turn a new file into the model's input (besides the class names)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Plain types (checkpoints load with ``weights_only=True``): kind, class names, input preparation."""
        return {"kind": self.kind, "classes": list(self.classes), **self.data_facts()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume: refuse a checkpoint trained on other classes."""
        saved = state_dict.get("classes")
        if saved is not None and list(saved) != list(self.classes):
            raise ValueError(f"the checkpoint was trained on classes {saved}, this data has {self.classes}")


class FSDDDataModule(ClassificationDataModule):
    """FSDD spoken digits as raw WAV bytes (module docstring: split, cut, augmentation).

    Args:
        root: the ``recordings/`` folder (``{digit}_{speaker}_{take}.wav``).
        max_bytes: keep at most the first ``max_bytes`` bytes of a file (``None``: no limit); default = FSDD's longest
            file (36,568 bytes), so nothing is cut.
        val_takes: the takes of every speaker and digit held out for validation (not 0-4, the test takes).
        augment: train-time :class:`WavAugment` (roll, gain, noise; the validation and test files are never changed).
        roll_fraction, gain_db, noise_db: the augmentation's settings (:class:`WavAugment`).
        batch_size, num_workers, pin_memory: loader settings.
    """

    kind = "fsdd"

    def __init__(
        self,
        root: str = "../shared/data/bytes/fsdd/recordings",
        max_bytes: int | None = 36_568,
        val_takes: Sequence[int] = (5, 6, 7, 8, 9),
        augment: bool = False,
        roll_fraction: float = 0.1,
        gain_db: float = 0.0,
        noise_db: float | None = -50.0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        self.val_takes = sorted({int(t) for t in val_takes})
        clash = sorted(set(self.val_takes) & set(FSDD_TEST_TAKES))
        if clash:
            raise ValueError(f"val_takes {clash} are test takes (FSDD's test set is takes 0-4); choose takes >= 5")
        self.root, self.max_bytes, self.augment = Path(root), max_bytes, augment
        self.augmentation = WavAugment(roll_fraction, gain_db, noise_db) if augment else None
        self.classes = [str(d) for d in range(10)]
        self.cut_files: dict[str, int] = {}

    def files(self) -> list[tuple[Path, int, str, int]]:
        """``(path, digit, speaker, take)`` of every recording, sorted by name.

        Raises:
            ValueError: a missing folder, no ``.wav`` file, or a file name off the ``{digit}_{speaker}_{take}.wav``
                pattern (naming it).
        """
        if not self.root.is_dir():
            raise ValueError(
                f"FSDD folder {self.root} does not exist; point root at free-spoken-digit-dataset's recordings/ "
                "(../shared/data/bytes/fsdd/recordings, see its SOURCES.md)"
            )
        out = []
        for path in sorted(self.root.glob("*.wav")):
            match = _FSDD_NAME.match(path.name)
            if match is None:
                raise ValueError(f"{path}: the name is not {{digit}}_{{speaker}}_{{take}}.wav")
            out.append((path, int(match[1]), match[2], int(match[3])))
        if not out:
            raise ValueError(f"FSDD folder {self.root} holds no .wav file")
        return out

    def build_splits(self) -> dict[str, Dataset]:
        parts: dict[str, list[tuple[Path, int]]] = {split: [] for split in SPLITS}
        for path, digit, _, take in self.files():
            split = "test" if take in FSDD_TEST_TAKES else "val" if take in self.val_takes else "train"
            parts[split].append((path, digit))
        if self.max_bytes is not None:  # stated: files longer than max_bytes keep their first max_bytes bytes
            limit = self.max_bytes
            self.cut_files = {s: sum(p.stat().st_size > limit for p, _ in parts[s]) for s in SPLITS}
        return {
            split: ByteFilesDataset(
                [p for p, _ in files],
                [d for _, d in files],
                self.max_bytes,
                self.augmentation if split == "train" else None,
            )
            for split, files in parts.items()
        }

    def data_facts(self) -> dict[str, Any]:
        return {"encoding": "wav", "max_bytes": self.max_bytes, "val_takes": list(self.val_takes)}


# ------------------------------------------------------------------------------------------------ CIFAR-10 bytes
ENCODINGS = ("tiff", "png", "jpeg")


def read_cifar_tar(archive: str | Path) -> tuple[list[str], dict[str, list[tuple[str, int, int, int]]]]:
    """Index the members of an uncompressed ``{train,test}/<class>/<name>.jpg`` tar once (nothing is extracted).

    Returns:
        ``(classes, members)``: the sorted class folder names (label order, as ImageFolder) and, per split
        (``train`` / ``test``), ``(name, label, data offset, size)`` sorted by member name.

    Raises:
        ValueError: a missing or compressed archive, a member off the layout, or train / test with other classes.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ValueError(
            f"image archive {archive} does not exist; point archive at cifar10-jpg.tar "
            "(../shared/data/vision/cifar10, see its SOURCES.md)"
        )
    found: dict[str, list[tuple[str, str, int, int]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:") as tar:  # "r:": uncompressed only, so data offsets are file offsets
            for member in tar:
                if member.isdir():
                    continue
                parts = member.name.split("/")
                if not (member.isfile() and len(parts) == 3 and parts[0] in found and parts[2]):
                    raise ValueError(
                        f"{archive}: member {member.name!r} is not train/<class>/<file> or test/<class>/<file>"
                    )
                found[parts[0]].append((member.name, parts[1], member.offset_data, member.size))
    except tarfile.ReadError as err:
        raise ValueError(f"{archive} is not an uncompressed tar ({err}); decompress it first") from err
    classes = sorted({c for _, c, _, _ in found["train"]})
    test_classes = sorted({c for _, c, _, _ in found["test"]})
    if not classes or classes != test_classes:
        raise ValueError(f"{archive}: train has classes {classes}, test has {test_classes}; they must be equal")
    label = {name: i for i, name in enumerate(classes)}
    members = {split: sorted((n, label[c], o, s) for n, c, o, s in rows) for split, rows in found.items()}
    return classes, members


def encode_image(data: bytes, encoding: str) -> bytes:
    """An image file's bytes as ``encoding``: ``"jpeg"`` keeps JPEG bytes as they are; ``"tiff"`` (uncompressed)
    and ``"png"`` (``compress_level=0``, as the ByteFormer fix of ml-cvnets issue #100) re-encode the decoded RGB."""
    if encoding == "jpeg":
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    if encoding == "tiff":
        rgb.save(out, format="TIFF")
    elif encoding == "png":
        rgb.save(out, format="PNG", compress_level=0)
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return out.getvalue()


class TarImageDataset(Dataset):
    """Members of an uncompressed tar as ``(encoded image bytes, label)``; each process opens the tar once."""

    def __init__(self, archive: Path, members: Sequence[tuple[str, int, int, int]], encoding: str) -> None:
        self.archive, self.members, self.encoding = archive, list(members), encoding
        self._handle: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:  # worker processes open their own handle
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if self._pid != os.getpid():
            self._handle, self._pid = open(self.archive, "rb"), os.getpid()  # noqa: SIM115  (kept open)
        name, label, offset, size = self.members[i]
        self._handle.seek(offset)
        try:
            data = encode_image(self._handle.read(size), self.encoding)
        except OSError as err:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(f"{self.archive}: member {name} does not decode ({err})") from err
        return _as_uint8(data), label


class ImageBytesDataModule(ClassificationDataModule):
    """CIFAR-10 (or any ``{train,test}/<class>/`` image tar) as file bytes for ByteFormer (module docstring).

    Args:
        archive: the uncompressed tar (members ``train/<class>/<name>`` and ``test/<class>/<name>``).
        encoding: ``"tiff"`` / ``"png"`` (decoded and re-encoded, fixed length per image size) or ``"jpeg"`` (the
            stored bytes, variable length).
        val_per_class: validation = the last ``val_per_class`` training images of each class in name order.
        limit_per_class: at most the first this many images of each class in every split (quick CPU runs).
        batch_size, num_workers, pin_memory: loader settings.
    """

    kind = "image_bytes"

    def __init__(
        self,
        archive: str = "../shared/data/vision/cifar10/cifar10-jpg.tar",
        encoding: Literal["tiff", "png", "jpeg"] = "tiff",
        val_per_class: int = 500,
        limit_per_class: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if val_per_class < 1 or (limit_per_class is not None and limit_per_class < 1):
            raise ValueError(f"val_per_class and limit_per_class must be >= 1, got {val_per_class}, {limit_per_class}")
        self.archive, self.encoding = Path(archive), encoding
        self.val_per_class, self.limit_per_class = val_per_class, limit_per_class
        self._members: dict[str, list[tuple[str, int, int, int]]] | None = None

    def _index(self) -> dict[str, list[tuple[str, int, int, int]]]:
        if self._members is None:
            self.classes, self._members = read_cifar_tar(self.archive)
        return self._members

    def model_sizes(self) -> dict[str, Any]:
        self._index()
        return super().model_sizes()

    def split_members(self) -> dict[str, list[tuple[str, int, int, int]]]:
        """``(member, label, offset, size)`` per split after the validation slice and the per-class limit."""
        members = self._index()
        splits: dict[str, list[tuple[str, int, int, int]]] = {split: [] for split in SPLITS}
        for label in range(len(self.classes)):
            train = [m for m in members["train"] if m[1] == label]
            if len(train) <= self.val_per_class:
                raise ValueError(
                    f"{self.archive}: class {self.classes[label]!r} has {len(train)} training images, not more than "
                    f"val_per_class={self.val_per_class}"
                )
            cut = len(train) - self.val_per_class
            chosen = {"train": train[:cut], "val": train[cut:], "test": [m for m in members["test"] if m[1] == label]}
            for split, rows in chosen.items():
                splits[split].extend(rows[: self.limit_per_class])
        return splits

    def build_splits(self) -> dict[str, Dataset]:
        return {
            split: TarImageDataset(self.archive, rows, self.encoding) for split, rows in self.split_members().items()
        }

    def data_facts(self) -> dict[str, Any]:
        return {"encoding": self.encoding}


# ================================================================================================ bGPT sequences
def collate_sequences(items: Sequence[ByteSequence]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """bGPT batch of :class:`ByteSequence` items (module docstring): patches right-padded with 256-patches, masks
    with False."""
    if not items:
        raise ValueError("collate_sequences got an empty batch")
    num_patches = torch.tensor([len(item) for item in items], dtype=torch.long)
    size = items[0].patches.shape[1]
    batch, longest = len(items), int(num_patches.max())
    patches = torch.full((batch, longest, size), PAD, dtype=torch.long)
    target_mask = torch.zeros((batch, longest, size), dtype=torch.bool)
    real_mask = torch.zeros((batch, longest, size), dtype=torch.bool)
    for i, item in enumerate(items):
        if item.patches.shape[1] != size:
            raise ValueError(f"item {i} has patches of {item.patches.shape[1]} bytes, item 0 of {size}")
        n = len(item)
        patches[i, :n], target_mask[i, :n], real_mask[i, :n] = item.patches, item.target_mask, item.real_mask
    return {"patches": patches, "num_patches": num_patches}, {"target_mask": target_mask, "real_mask": real_mask}


def crop_sequence(sequence: ByteSequence, start: int, length: int, count_from: int = 0) -> ByteSequence:
    """The header patch (patch 0) followed by body patches ``[start, start + length)`` (body patch ``k`` = patch
    ``k + 1``), masks cropped alike and cleared on body patches ``< count_from`` (already counted elsewhere)."""
    body = len(sequence) - 1
    if not (0 <= start and length >= 1 and start + length <= body):
        raise ValueError(f"window [{start}, {start + length}) is outside the {body} body patches")
    keep = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(start + 1, start + length + 1)])
    target, real = sequence.target_mask[keep].clone(), sequence.real_mask[keep].clone()
    done = max(0, min(count_from - start, length))
    target[1 : 1 + done], real[1 : 1 + done] = False, False
    return ByteSequence(sequence.patches[keep].clone(), target, real)


def file_window(
    data: bytes, extension: str, start: int, length: int, count_from: int = 0, patch_size: int = PATCH_SIZE
) -> ByteSequence:
    """``crop_sequence(file_sequence(data, extension), start, length, count_from)`` built from the bytes of the
    window only (a long file is never turned into its full patch tensor).

    The body of ``file_sequence`` has ``ceil(len(data) / patch_size) + 1`` patches (the data, then the end patch).
    """
    n = len(data)
    body = -(-n // patch_size) + 1
    if not (0 <= start and length >= 1 and start + length <= body):
        raise ValueError(f"window [{start}, {start + length}) is outside the {body} body patches")
    lo = start * patch_size
    flat = torch.full((length * patch_size,), PAD, dtype=torch.long)
    chunk = data[lo : lo + length * patch_size]
    if chunk:
        flat[: len(chunk)] = _as_uint8(chunk).long()
    position = torch.arange(lo, lo + length * patch_size)  # byte position in the body
    counted = position >= count_from * patch_size
    real = counted & (position < n)
    target = real | (counted & (position == n))  # the terminator: the first 256 after the file
    no_mask = torch.zeros((1, patch_size), dtype=torch.bool)
    return ByteSequence(
        torch.cat([header_patch(extension, patch_size)[None], flat.view(length, patch_size)]),
        torch.cat([no_mask, target.view(length, patch_size)]),
        torch.cat([no_mask, real.view(length, patch_size)]),
    )


def body_patches(num_bytes: int, patch_size: int = PATCH_SIZE) -> int:
    """Body patches of a file sequence: its data patches and the end patch."""
    return -(-num_bytes // patch_size) + 1


def file_patches(num_bytes: int, patch_size: int = PATCH_SIZE) -> int:
    """Patches of ``file_sequence`` of a ``num_bytes`` file: header, data, end patch."""
    return 1 + body_patches(num_bytes, patch_size)


def sliding_windows(num_body: int, window_patches: int) -> list[tuple[int, int, int]]:
    """Evaluation windows ``(start, length, count_from)`` over ``num_body`` body patches (module docstring).

    Each window holds the header and ``window_patches - 1`` body patches (or the whole body when it fits); windows
    start every ``(window_patches - 1) // 2`` body patches, the last one aligned with the end; a window counts only
    the patches after the previous window's end (``count_from``), so every patch is counted exactly once.
    """
    span = window_patches - 1
    if span < 2:
        raise ValueError(f"window_patches must be >= 3 (header + 2 body patches), got {window_patches}")
    if num_body <= span:
        return [(0, num_body, 0)]
    stride = span // 2
    starts = [*range(0, num_body - span, stride), num_body - span]
    return [(s, span, 0 if k == 0 else starts[k - 1] + span) for k, s in enumerate(starts)]


def states_sequence(data: bytes, extension: str, counted_from: int, patch_size: int = PATCH_SIZE) -> ByteSequence:
    """``file_sequence(data, extension)`` with masks on the bytes from file offset ``counted_from`` on (and the
    terminator) only: in a CPU-simulation file the program and the initial state are random, the states after them
    are what the model must predict."""
    sequence = file_sequence(data, extension, patch_size)
    skip = patch_size + counted_from  # header patch + the bytes before counted_from
    for mask in (sequence.target_mask, sequence.real_mask):
        mask.view(-1)[:skip] = False
    return sequence


class LMTrainDataset(Dataset):
    """Training documents as bGPT sequences, a random window of those longer than ``window_patches``."""

    def __init__(self, documents: Sequence[bytes], extensions: Sequence[str], window_patches: int) -> None:
        self.documents, self.extensions, self.window_patches = list(documents), list(extensions), window_patches

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, i: int) -> ByteSequence:
        data, span = self.documents[i], self.window_patches - 1
        body = body_patches(len(data))
        if body <= span:
            return file_sequence(data, self.extensions[i])
        start = int(torch.randint(0, body - span + 1, (1,)))  # torch's RNG: seeded per worker, reproducible
        return file_window(data, self.extensions[i], start, span)


class LMEvalDataset(Dataset):
    """Held-out documents as the deterministic sliding windows of :func:`sliding_windows` (each byte counted once)."""

    def __init__(self, documents: Sequence[bytes], extensions: Sequence[str], window_patches: int) -> None:
        self.documents, self.extensions = list(documents), list(extensions)
        self.windows = [
            (d, *window)
            for d, data in enumerate(self.documents)
            for window in sliding_windows(body_patches(len(data)), window_patches)
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> ByteSequence:
        d, start, length, count_from = self.windows[i]
        return file_window(self.documents[d], self.extensions[d], start, length, count_from)


class SequenceDataModule(SplitDataModule):
    """Base of the bGPT modules: the window, :func:`collate_sequences`, the data state.

    ``model_sizes()`` gives ``{"patch_length": window_patches}``: the window is the model's number of learned patch
    positions, written once in the data section; a model configured with another ``patch_length`` stops the run with
    one sentence naming both values (``formers.core.tasks.merge_data_sizes``).
    """

    kind = "sequence"

    def __init__(self, window_patches: int, batch_size: int, num_workers: int, pin_memory: bool) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if not isinstance(window_patches, int) or window_patches < 3:
            raise ValueError(f"window_patches must be an integer >= 3, got {window_patches!r}")
        self.window_patches = window_patches
        #: what the split building counted and left out, per split (stated in warnings and in the data state)
        self.summary: dict[str, Any] = {}

    def model_sizes(self) -> dict[str, Any]:
        """``patch_length`` = ``window_patches`` (class docstring)."""
        return {"patch_length": self.window_patches}

    def collate(self) -> Callable[[list[Any]], Any]:
        return collate_sequences

    def data_facts(self) -> dict[str, Any]:
        """What predict / generation needs: the header extension(s) (subclasses)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "window_patches": self.window_patches,
            "patch_size": PATCH_SIZE,
            **self.data_facts(),
            "summary": self.summary,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume: refuse a checkpoint of another kind of data or another window."""
        for key, mine in (("kind", self.kind), ("window_patches", self.window_patches)):
            if key in state_dict and state_dict[key] != mine:
                raise ValueError(f"the checkpoint was trained with {key}={state_dict[key]!r}, this data has {mine!r}")

    def _state(self, what: str, counts: dict[str, int], why: str) -> None:
        """Record ``counts`` per split in :attr:`summary` and warn when any is non-zero."""
        self.summary[what] = dict(counts)
        if any(counts.values()):
            warnings.warn(f"{type(self).__name__}: {what} {counts} ({why})", stacklevel=3)


def _split_by_order(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Index bounds ``(val_start, test_start)``: the last ``round(count * test_fraction)`` items are the test set,
    the ``round(count * val_fraction)`` before them the validation set."""
    test_start = count - round(count * test_fraction)
    return test_start - round(count * val_fraction), test_start


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum < 1, got {val_fraction}, {test_fraction}"
        )


class ByteLMDataModule(SequenceDataModule):
    """bGPT language modelling on one text file or a folder of files (module docstring: windows).

    - ``kind="text"``: ``source`` is one file. Its bytes are split by position (the last ``test_fraction`` = 10% is
      the test set, the ``val_fraction`` = 5% before it the validation set) and each part is cut into documents of
      ``chunk_bytes`` (the last one shorter). Header = ``extension``, by default the file's suffix (``txt``).
    - ``kind="files"``: ``source`` is a folder; the files matching ``glob`` are sorted by their relative path in
      byte order (C locale) and split by position the same way (SOURCES.md's suggestion for the CPython library);
      empty files are skipped after the split (counted in :attr:`summary`). Header = ``extension``, by default each
      file's own suffix (``py``).

    Args:
        source: the text file or the folder.
        kind: ``"text"`` or ``"files"``.
        extension: the header's extension (``None``: from the file names).
        glob: the files of a folder (``kind="files"``), relative to it.
        chunk_bytes: document size of ``kind="text"`` (``None``: ``(window_patches - 2) * 16``, a document fills one
            window: header + data + end patch).
        window_patches: the model's patch window (= its ``patch_length``).
        val_fraction, test_fraction: the split (module docstring).
        limit: at most the first this many documents per split (quick runs).
        batch_size, num_workers, pin_memory: loader settings.
    """

    kind = "lm"

    def __init__(
        self,
        source: str,
        kind: Literal["text", "files"] = "text",
        extension: str | None = None,
        glob: str = "**/*.py",
        chunk_bytes: int | None = None,
        window_patches: int = 256,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        limit: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(window_patches, batch_size, num_workers, pin_memory)
        if kind not in ("text", "files"):
            raise ValueError(f"kind must be 'text' or 'files', got {kind!r}")
        _check_fractions(val_fraction, test_fraction)
        if extension is not None:
            check_extension(extension)
        self.chunk_bytes = chunk_bytes if chunk_bytes is not None else (window_patches - 2) * PATCH_SIZE
        if self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (documents per split), got {limit}")
        self.source, self.source_kind, self.extension, self.glob = Path(source), kind, extension, glob
        self.val_fraction, self.test_fraction, self.limit = val_fraction, test_fraction, limit
        self.split_names: dict[str, list[str]] = {}

    def _text_documents(self) -> dict[str, tuple[list[bytes], list[str]]]:
        if not self.source.is_file():
            raise ValueError(f"text file {self.source} does not exist (kind='text' reads one file)")
        data = self.source.read_bytes()
        if not data:
            raise ValueError(f"text file {self.source} is empty")
        extension = self.extension if self.extension is not None else self.source.suffix.lstrip(".")
        check_extension(extension)
        val_start, test_start = _split_by_order(len(data), self.val_fraction, self.test_fraction)
        bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, len(data))}
        out = {}
        for split, (lo, hi) in bounds.items():
            docs = [data[i : min(i + self.chunk_bytes, hi)] for i in range(lo, hi, self.chunk_bytes)]
            out[split] = (docs, [extension] * len(docs))
            self.split_names[split] = [f"{self.source.name}[{lo}:{hi}]"]
        return out

    def _file_documents(self) -> dict[str, tuple[list[bytes], list[str]]]:
        if not self.source.is_dir():
            raise ValueError(f"source folder {self.source} does not exist (kind='files' reads a folder)")
        paths = sorted(
            (p for p in self.source.glob(self.glob) if p.is_file()),
            key=lambda p: p.relative_to(self.source).as_posix().encode("utf-8", "surrogateescape"),
        )
        if not paths:
            raise ValueError(f"no file in {self.source} matches {self.glob!r}")
        val_start, test_start = _split_by_order(len(paths), self.val_fraction, self.test_fraction)
        bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, len(paths))}
        out, empty = {}, {}
        for split, (lo, hi) in bounds.items():
            docs, extensions, names = [], [], []
            for path in paths[lo:hi]:
                data = path.read_bytes()
                if data:
                    extension = self.extension if self.extension is not None else path.suffix.lstrip(".")
                    try:
                        check_extension(extension)
                    except ValueError as err:
                        raise ValueError(f"{path}: {err}; set extension") from err
                    docs.append(data)
                    extensions.append(extension)
                    names.append(path.relative_to(self.source).as_posix())
            empty[split] = hi - lo - len(docs)
            out[split] = (docs, extensions)
            self.split_names[split] = names
        self._state("skipped empty files", empty, "an empty file has nothing to model")
        return out

    def build_splits(self) -> dict[str, Dataset]:
        parts = self._text_documents() if self.source_kind == "text" else self._file_documents()
        if self.limit is not None:
            parts = {s: (docs[: self.limit], exts[: self.limit]) for s, (docs, exts) in parts.items()}
            self.split_names = {s: names[: self.limit] for s, names in self.split_names.items()}
        splits: dict[str, Dataset] = {"train": LMTrainDataset(*parts["train"], self.window_patches)}
        splits.update({s: LMEvalDataset(*parts[s], self.window_patches) for s in ("val", "test")})
        self.summary["documents"] = {s: len(parts[s][0]) for s in SPLITS}
        self.summary["bytes"] = {s: sum(map(len, parts[s][0])) for s in SPLITS}
        self.summary["eval_windows"] = {s: len(splits[s]) for s in ("val", "test")}  # type: ignore[arg-type]
        return splits

    def data_facts(self) -> dict[str, Any]:
        if self.extension is not None:
            extension = self.extension
        elif self.source_kind == "text":
            extension = self.source.suffix.lstrip(".")
        else:
            extension = None  # each file's own suffix
        return {"source_kind": self.source_kind, "extension": extension, "chunk_bytes": self.chunk_bytes}


class ConversionDataset(Dataset):
    """ABC -> MIDI pairs as ``conversion_sequence(abc, "abc", midi, "mid")``."""

    def __init__(self, tunes: Sequence[Tune]) -> None:
        self.tunes = list(tunes)

    def __len__(self) -> int:
        return len(self.tunes)

    def __getitem__(self, i: int) -> ByteSequence:
        tune = self.tunes[i]
        return conversion_sequence(tune.abc, "abc", tune.midi, "mid")


def conversion_patches(source_bytes: int, target_bytes: int, patch_size: int = PATCH_SIZE) -> int:
    """Patches of a conversion sequence: header, source data, target header, target data, end patch."""
    return 1 + -(-source_bytes // patch_size) + 1 + -(-target_bytes // patch_size) + 1


def hash_fraction(name: str) -> float:
    """A stable number in [0, 1) from a name (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64


class ConversionDataModule(SequenceDataModule):
    """bGPT ABC -> MIDI conversion on the Nottingham pairs (:func:`formers.bytes.abc_midi.read_tunes`).

    Split by tune, stable across runs and machines: a tune whose name's :func:`hash_fraction` is below
    ``test_fraction`` is a test tune, below ``test_fraction + val_fraction`` a validation tune, else a training tune.
    Conversion needs the whole target (and the whole input), so pairs longer than ``window_patches`` are excluded,
    counted per split in :attr:`summary` (at 512 patches: 29 of the 1,034 pairs).

    Args:
        root: the Nottingham folder (``ABC_cleaned/``, ``MIDI/``).
        window_patches: the model's patch window (512 in the paper).
        val_fraction, test_fraction: the split.
        limit: at most the first this many pairs per split (quick runs).
        batch_size, num_workers, pin_memory: loader settings.
    """

    kind = "conversion"

    def __init__(
        self,
        root: str = "../shared/data/bytes/abc/nottingham",
        window_patches: int = 512,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        limit: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(window_patches, batch_size, num_workers, pin_memory)
        _check_fractions(val_fraction, test_fraction)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (pairs per split), got {limit}")
        self.root, self.val_fraction, self.test_fraction, self.limit = Path(root), val_fraction, test_fraction, limit
        self.split_names: dict[str, list[str]] = {}

    def split_of(self, name: str) -> str:
        u = hash_fraction(name)
        return "test" if u < self.test_fraction else "val" if u < self.test_fraction + self.val_fraction else "train"

    def build_splits(self) -> dict[str, Dataset]:
        parts: dict[str, list[Tune]] = {split: [] for split in SPLITS}
        excluded = dict.fromkeys(SPLITS, 0)
        for tune in read_tunes(self.root):
            split = self.split_of(tune.name)
            if conversion_patches(len(tune.abc), len(tune.midi)) > self.window_patches:
                excluded[split] += 1
            else:
                parts[split].append(tune)
        self._state(
            "excluded pairs longer than the window",
            excluded,
            f"window_patches={self.window_patches}; conversion needs the whole input and target",
        )
        if self.limit is not None:
            parts = {s: tunes[: self.limit] for s, tunes in parts.items()}
        self.summary["pairs"] = {s: len(parts[s]) for s in SPLITS}
        self.split_names = {s: [t.name for t in parts[s]] for s in SPLITS}
        return {split: ConversionDataset(tunes) for split, tunes in parts.items()}

    def data_facts(self) -> dict[str, Any]:
        return {"source_extension": "abc", "target_extension": "mid"}


class CPUSimDataset(Dataset):
    """CPU-simulation files as :func:`states_sequence` items."""

    def __init__(self, files: Sequence[bytes], extension: str, counted_from: int) -> None:
        self.files, self.extension, self.counted_from = list(files), extension, counted_from

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> ByteSequence:
        return states_sequence(self.files[i], self.extension, self.counted_from)


class CPUSimDataModule(SequenceDataModule):
    """bGPT CPU-state simulation (:mod:`formers.bytes.cpu_sim`).

    A file is the 1,024-byte program memory image, then state 0 (the random initial registers), then one 16-byte
    state per executed instruction. The masks cover states 1..n and the terminator only, i.e. the bytes from
    ``cpu_sim.PREDICT_OFFSET`` (1,040) on: the program and state 0 are random draws, nothing a model can predict, and
    the official evaluation also compares from there (:func:`formers.bytes.cpu_sim.check_file`). Files longer than
    ``window_patches`` (a program of ``n`` instructions gives ``67 + n`` patches: header, 64 memory patches,
    ``n + 1`` states, end patch) are excluded, counted per split in :attr:`summary` (the official 255-instruction
    maximum gives 322 patches, inside the default 512). Files are checked for the layout only (``1024 + 16 k``
    bytes, ``k >= 1``); simulating every file again is left to the evaluation.

    Args:
        path: the HDF5 file of ``python -m formers.bytes.cpu_sim`` (splits ``train`` / ``val`` / ``test``).
        window_patches: the model's patch window.
        limit: at most the first this many files per split (quick runs).
        batch_size, num_workers, pin_memory: loader settings.
    """

    kind = "cpu"

    def __init__(
        self,
        path: str = "data/bytes/cpu.h5",
        window_patches: int = 512,
        limit: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(window_patches, batch_size, num_workers, pin_memory)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (files per split), got {limit}")
        self.path, self.limit = Path(path), limit

    def build_splits(self) -> dict[str, Dataset]:
        from formers.bytes import cpu_sim  # imported here: the other data modules load without the generator

        parts: dict[str, list[bytes]] = {}
        excluded = {}
        for split in SPLITS:
            files = cpu_sim.read_split(self.path, split)
            if self.limit is not None:
                files = files[: self.limit]
            kept = []
            for row, data in enumerate(files):
                states = len(data) - cpu_sim.STATES_OFFSET
                if states < PATCH_SIZE or states % PATCH_SIZE:
                    raise ValueError(
                        f"{self.path}: {split} row {row} has {len(data)} bytes, not a CPU-simulation file "
                        f"({cpu_sim.STATES_OFFSET} memory bytes + 16 per state)"
                    )
                if file_patches(len(data)) <= self.window_patches:
                    kept.append(bytes(data))
            excluded[split] = len(files) - len(kept)
            parts[split] = kept
        self._state("excluded files longer than the window", excluded, f"window_patches={self.window_patches}")
        self.summary["files"] = {s: len(parts[s]) for s in SPLITS}
        return {
            split: CPUSimDataset(files, cpu_sim.EXTENSION, cpu_sim.PREDICT_OFFSET) for split, files in parts.items()
        }

    def data_facts(self) -> dict[str, Any]:
        from formers.bytes import cpu_sim

        return {
            "extension": cpu_sim.EXTENSION,
            "states_offset": cpu_sim.STATES_OFFSET,
            "counted_from": cpu_sim.PREDICT_OFFSET,
        }

"""Panoptic segmentation data: datasets, the kMaX transforms, ``PanopticBatch`` and ``PanopticDataModule``.

Sources (``PanopticDataModule(source=...)``):

* ``scenes`` (default): the generated scenes of :mod:`formers.vision.segmentation.scenes`, rendered on the fly from
  ``seed`` (no files), or read from a folder the scenes command wrote (``root``);
* ``coco_panoptic``: a COCO panoptic folder. For a split name ``N`` (``train_split`` etc., e.g. ``train2017``) the
  JSON is ``<root>/annotations/panoptic_N.json`` (or ``<root>/panoptic_N.json``), the PNGs ``<root>/panoptic_N/``
  (or ``<root>/annotations/panoptic_N/``) and the images ``<image_root>/N/`` (or ``<image_root>/images/N/``;
  ``image_root`` defaults to ``root``; ``image_dir`` overrides the image folder, ``{split}`` expanded);
* ``coco_instances``: COCO instances annotations (``<root>/annotations/instances_N.json``, images
  ``<image_root>/N/``), converted to things-only panoptic in memory
  (:func:`~formers.vision.segmentation.panoptic.instances_to_panoptic`).

A missing ``test`` split falls back to ``val``.

Transforms follow the official ``PanoptickMaXDeepLabDatasetMapper`` (large-scale jitter):

* training: ``ResizeScale`` (a factor ``s ~ U[min_scale, max_scale]``; the image is resized by
  ``min(s * crop_h / h, s * crop_w / w)``, bilinear for the image, nearest for the labels), an optional SSD-style
  colour distortion (``color_aug``), a random crop of ``crop_size`` (smaller images are kept whole), a horizontal flip
  (``hflip``), then bottom/right padding to ``crop_size`` (image 0 after normalisation, labels void) -- the official
  fixed training size;
* evaluation: the long side resized to ``eval_size`` (``None``: kept), optionally padded to ``eval_pad_size``.
  Ground truth follows the resize (nearest), so PQ is measured at the evaluated resolution (the official evaluation
  resizes predictions back to the original image instead; identical when ``eval_size`` is ``None``).

Images are normalised with ``mean`` / ``std`` on [0, 1] (default 0.5 / 0.5: [-1, 1], kMaX's 127.5 / 127.5).

:func:`collate_panoptic` pads a list of samples bottom/right to the largest height and width of the batch (rounded
up to a multiple of ``size_divisibility``, or to ``k * size_divisibility + 1`` with ``plus_one``: 32k+1 sizes such
as 641 reproduce the official align-corners arithmetic; the model accepts any size) and builds the kMaX targets from
the padded full-resolution map subsampled ``[::4, ::4]`` (the official target resolution): one boolean mask per
(category, instance) segment present in the subsampled map (a segment absent from it has no target, as officially),
crowd, void and padding in no mask; ``semantic`` has ``K`` for void and padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from formers.core.data import SplitDataModule
from formers.vision.segmentation.panoptic import (
    PanopticFormatError,
    PanopticMeta,
    instances_to_panoptic,
    load_panoptic,
    load_rgb,
    read_coco_instances,
    read_coco_panoptic,
    segments_to_panoptic,
)
from formers.vision.segmentation.scenes import SCENE_META, render_scene

__all__ = [
    "PanopticBatch",
    "PanopticDataset",
    "PanopticTransform",
    "PanopticDataModule",
    "SceneSource",
    "CocoPanopticSource",
    "CocoInstancesSource",
    "collate_panoptic",
    "make_targets",
    "eval_transform_from_state",
]

SOURCES = ("scenes", "coco_panoptic", "coco_instances")


# ------------------------------------------------------------------------------------------------ the batch


@dataclass
class PanopticBatch:
    """A padded batch of panoptic samples (see the module docstring).

    Attributes:
        images: ``(B, 3, H, W)`` float, normalised, 0 in the padding.
        pixel_mask: ``(B, H, W)`` bool, True on real pixels.
        targets: per image ``labels`` ``(M,)`` int64 in ``[0, K)``, ``masks`` ``(M, h, w)`` bool at stride 4,
            ``semantic`` ``(h, w)`` int64 (``K`` = void / padding); ``(h, w) = (ceil(H / 4), ceil(W / 4))``.
        panoptic: ``(B, H, W, 2)`` int64 full-resolution (category, instance), category -1 for void / padding.
        sizes: real ``(height, width)`` of each image (its top-left corner of the padded batch).
        names: image names (file stems / scene names).
    """

    images: Tensor
    pixel_mask: Tensor
    targets: list[dict[str, Tensor]]
    panoptic: Tensor
    sizes: list[tuple[int, int]]
    names: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> PanopticBatch:
        return replace(
            self,
            images=fn(self.images),
            pixel_mask=fn(self.pixel_mask),
            targets=[{k: fn(v) for k, v in t.items()} for t in self.targets],
            panoptic=fn(self.panoptic),
        )

    def to(self, device: torch.device | str, *args: Any, **kwargs: Any) -> PanopticBatch:
        """The batch with every tensor moved (``Tensor.to`` arguments; dtypes are kept)."""
        return self._apply(lambda t: t.to(device, *args, **kwargs))

    def pin_memory(self) -> PanopticBatch:
        return self._apply(lambda t: t.pin_memory())


def make_targets(panoptic: Tensor, num_classes: int, stride: int = 4) -> dict[str, Tensor]:
    """kMaX targets of one padded ``(H, W, 2)`` ground truth: its ``[::stride, ::stride]`` segments.

    Returns ``labels`` ``(M,)`` int64, ``masks`` ``(M, h, w)`` bool (segments sorted by (category, instance)),
    ``semantic`` ``(h, w)`` int64 with ``num_classes`` for void.
    """
    sub = panoptic[::stride, ::stride]
    category, instance = sub[..., 0], sub[..., 1]
    valid = category >= 0
    if valid.any() and int(category.max()) >= num_classes:
        raise ValueError(f"ground truth holds category {int(category.max())} but num_classes is {num_classes}")
    span = int(instance.max()) + 1 if instance.numel() else 1
    key = torch.where(valid, category * span + instance, torch.full_like(category, -1))
    keys = torch.unique(key)
    keys = keys[keys >= 0]
    masks = key[None] == keys[:, None, None]
    semantic = torch.where(valid, category, torch.full_like(category, num_classes))
    return {"labels": (keys // span).long(), "masks": masks, "semantic": semantic.long()}


def _padded_size(size: int, divisor: int, plus_one: bool) -> int:
    if divisor <= 0:
        return size
    if plus_one:
        return max(1, math.ceil(max(size - 1, 0) / divisor)) * divisor + 1
    return math.ceil(size / divisor) * divisor


def collate_panoptic(
    samples: Sequence[Mapping[str, Any]],
    num_classes: int,
    *,
    stride: int = 4,
    size_divisibility: int = 0,
    plus_one: bool = False,
) -> PanopticBatch:
    """Pad samples bottom/right into a :class:`PanopticBatch` (``samples``: :class:`PanopticDataset` items).

    Args:
        samples: dicts with ``image`` ``(3, H_i, W_i)`` float (normalised), ``panoptic`` ``(H_i, W_i, 2)`` int64,
            ``size`` the real ``(h_i, w_i)`` (<= the arrays' size when the transform padded already), ``name``.
        num_classes: K (``semantic`` uses K for void).
        stride: the target subsampling (kMaX: 4).
        size_divisibility, plus_one: round the padded size up to a multiple of ``size_divisibility`` (``plus_one``:
            to ``k * size_divisibility + 1``); 0 pads to the largest image only.
    """
    if not samples:
        raise ValueError("collate_panoptic: empty batch")
    height = _padded_size(max(int(s["image"].shape[-2]) for s in samples), size_divisibility, plus_one)
    width = _padded_size(max(int(s["image"].shape[-1]) for s in samples), size_divisibility, plus_one)
    batch = len(samples)
    images = torch.zeros(batch, 3, height, width, dtype=samples[0]["image"].dtype)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.bool)
    panoptic = torch.zeros(batch, height, width, 2, dtype=torch.int64)
    panoptic[..., 0] = -1
    sizes, names, targets = [], [], []
    for i, s in enumerate(samples):
        img, pan = s["image"], torch.as_tensor(s["panoptic"])
        h, w = (int(v) for v in s.get("size", img.shape[-2:]))
        if tuple(pan.shape[:2]) != tuple(img.shape[-2:]):
            raise ValueError(
                f"sample {s.get('name', i)}: image {tuple(img.shape)} and labels {tuple(pan.shape)} differ"
            )
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        panoptic[i, : pan.shape[0], : pan.shape[1]] = pan
        pixel_mask[i, :h, :w] = True
        sizes.append((h, w))
        names.append(str(s.get("name", i)))
    for i in range(batch):
        targets.append(make_targets(panoptic[i], num_classes, stride))
    return PanopticBatch(images, pixel_mask, targets, panoptic, sizes, names)


# ------------------------------------------------------------------------------------------------ transforms


def _resize_labels(panoptic: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of an ``(H, W, C)`` label map (pixel centres, PIL's NEAREST rule)."""
    h, w = panoptic.shape[:2]
    oh, ow = size
    if (oh, ow) == (h, w):
        return panoptic
    ys = ((torch.arange(oh, dtype=torch.float64) + 0.5) * (h / oh)).floor().long().clamp_(max=h - 1)
    xs = ((torch.arange(ow, dtype=torch.float64) + 0.5) * (w / ow)).floor().long().clamp_(max=w - 1)
    return panoptic[ys][:, xs]


def _resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a ``(3, H, W)`` float image (antialiased when shrinking, as PIL's bilinear)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _color_aug(image: Tensor, generator: torch.Generator | None) -> Tensor:
    """SSD-style photometric distortion of a ``(3, H, W)`` image in [0, 255] (detectron2's ColorAugSSDTransform:
    brightness +-32, contrast and saturation x[0.5, 1.5], hue +-18 degrees, each with probability 0.5)."""
    from torchvision.transforms.v2 import functional as TF

    def rand() -> float:
        return float(torch.rand((), generator=generator))

    img = image.clamp(0, 255)
    if rand() < 0.5:
        img = (img + (rand() * 64 - 32)).clamp(0, 255)
    contrast_first = rand() < 0.5
    if contrast_first and rand() < 0.5:
        img = (img * (0.5 + rand())).clamp(0, 255)
    img = img / 255.0
    if rand() < 0.5:
        img = TF.adjust_saturation(img, 0.5 + rand())
    if rand() < 0.5:
        img = TF.adjust_hue(img, (rand() * 36 - 18) / 360.0)
    img = img * 255.0
    if not contrast_first and rand() < 0.5:
        img = (img * (0.5 + rand())).clamp(0, 255)
    return img


class PanopticTransform:
    """The training (large-scale jitter) or evaluation transform of an ``(image, panoptic)`` pair.

    Call with ``image`` ``(H, W, 3)`` uint8 and ``panoptic`` ``(H, W, 2)`` int64 (numpy or torch; ``None``: no
    labels, all void, for prediction); returns a sample
    dict ``image`` ``(3, H', W')`` float normalised, ``panoptic`` ``(H', W', 2)`` int64 and ``size`` (the real size
    inside a padded result). Randomness comes from torch's global generator (seeded per DataLoader worker) or
    ``generator``.

    Args:
        train: training (scale jitter, crop, flip, padding to ``crop_size``) or evaluation (resize, optional pad).
        crop_size: training crop ``(h, w)`` or side.
        min_scale, max_scale: the scale-jitter range (official 0.2, 2.0).
        hflip: horizontal flip probability.
        color_aug: SSD-style colour distortion (the official mapper's ColorAugSSDTransform).
        eval_size: evaluation long side (``None``: keep the size).
        pad_size: pad evaluation results bottom/right to at least this ``(h, w)`` or side.
        mean, std: normalisation on [0, 1].
    """

    def __init__(
        self,
        *,
        train: bool,
        crop_size: int | Sequence[int] | None = None,
        min_scale: float = 0.2,
        max_scale: float = 2.0,
        hflip: float = 0.5,
        color_aug: bool = False,
        eval_size: int | None = None,
        pad_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        if train and crop_size is None:
            raise ValueError("the training transform needs a crop_size")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.train = train
        self.crop_size = _pair(crop_size)
        self.pad_size = _pair(pad_size)
        self.min_scale, self.max_scale, self.hflip, self.color_aug = min_scale, max_scale, hflip, color_aug
        self.eval_size = eval_size
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)

    def __call__(self, image: Any, panoptic: Any = None, generator: torch.Generator | None = None) -> dict[str, Any]:
        array = np.array(image, dtype=np.float32)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
        img = torch.from_numpy(array).permute(2, 0, 1)
        h, w = img.shape[-2:]
        if panoptic is None:  # prediction: no labels (all void)
            panoptic = np.stack([np.full((h, w), -1, np.int64), np.zeros((h, w), np.int64)], axis=-1)
        pan = torch.from_numpy(np.array(panoptic, dtype=np.int64))
        if tuple(pan.shape[:2]) != (h, w):
            raise ValueError(f"image {h}x{w} and panoptic labels {tuple(pan.shape[:2])} differ in size")
        pad_to = self.pad_size
        if self.train:
            crop_h, crop_w = self.crop_size  # type: ignore[misc]
            s = self.min_scale + float(torch.rand((), generator=generator)) * (self.max_scale - self.min_scale)
            scale = min(s * crop_h / h, s * crop_w / w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            img, pan = _resize_image(img, size), _resize_labels(pan, size)
            if self.color_aug:
                img = _color_aug(img, generator)
            h, w = size
            ch, cw = min(crop_h, h), min(crop_w, w)
            y0 = int(torch.randint(0, h - ch + 1, (), generator=generator))
            x0 = int(torch.randint(0, w - cw + 1, (), generator=generator))
            img, pan = img[:, y0 : y0 + ch, x0 : x0 + cw], pan[y0 : y0 + ch, x0 : x0 + cw]
            if float(torch.rand((), generator=generator)) < self.hflip:
                img, pan = img.flip(-1), pan.flip(1)
            pad_to = self.crop_size
        elif self.eval_size is not None:
            scale = self.eval_size / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            img, pan = _resize_image(img, size), _resize_labels(pan, size)
        img = ((img.clamp(0, 255) / 255.0 - self.mean) / self.std).contiguous()
        real = tuple(img.shape[-2:])
        if pad_to is not None and (real[0] < pad_to[0] or real[1] < pad_to[1]):
            ph, pw = max(pad_to[0], real[0]), max(pad_to[1], real[1])
            padded = torch.zeros(3, ph, pw)
            padded[:, : real[0], : real[1]] = img
            labels = torch.zeros(ph, pw, 2, dtype=torch.int64)
            labels[..., 0] = -1
            labels[: real[0], : real[1]] = pan
            img, pan = padded, labels
        return {"image": img, "panoptic": pan.contiguous(), "size": real}

    def config(self) -> dict[str, Any]:
        """The evaluation settings as plain values (saved in checkpoints for ``predict``)."""
        return {
            "eval_size": self.eval_size,
            "pad_size": list(self.pad_size) if self.pad_size else None,
            "mean": [float(m) for m in self.mean.flatten()],
            "std": [float(s) for s in self.std.flatten()],
        }


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    values = tuple(int(v) for v in size)
    if len(values) != 2:
        raise ValueError(f"expected a side or (height, width), got {size!r}")
    return values  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ sources / dataset


class SceneSource:
    """Generated scenes ``0 .. length-1`` of ``split`` (rendered on each access; no memory kept)."""

    def __init__(self, split: str, length: int, seed: int = 0, size: int | Sequence[int] = 96) -> None:
        self.split, self.length, self.seed = split, int(length), int(seed)
        self.size = size if isinstance(size, int) else tuple(int(v) for v in size)

    def __len__(self) -> int:
        return self.length

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        scene = render_scene(i, seed=self.seed, split=self.split, size=self.size)  # type: ignore[arg-type]
        return scene.image, scene.panoptic, scene.name


class CocoPanopticSource:
    """Records of a COCO panoptic split (:func:`~formers.vision.segmentation.panoptic.read_coco_panoptic`)."""

    def __init__(self, records: Sequence[Any], meta: PanopticMeta) -> None:
        self.records, self.meta = list(records), meta

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        rec = self.records[i]
        image = load_rgb(rec.image_path)
        panoptic = load_panoptic(rec, self.meta)
        if image.shape[:2] != panoptic.shape[:2]:
            raise PanopticFormatError(
                f"image {rec.image_path} is {image.shape[1]}x{image.shape[0]}, its panoptic PNG {rec.png_path} "
                f"{panoptic.shape[1]}x{panoptic.shape[0]}"
            )
        return image, panoptic, rec.name


class CocoInstancesSource(CocoPanopticSource):
    """Records of a COCO instances split, converted to things-only panoptic on access."""

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        rec = self.records[i]
        image = load_rgb(rec.image_path)
        if image.shape[:2] != (rec.height, rec.width):
            raise PanopticFormatError(
                f"image {rec.image_path} is {image.shape[1]}x{image.shape[0]}, its annotation says "
                f"{rec.width}x{rec.height}"
            )
        id_map, segments = instances_to_panoptic(rec)
        return image, segments_to_panoptic(id_map, segments, self.meta, str(rec.image_path)), rec.name


class PanopticDataset(Dataset):
    """A source (``__len__`` and ``load(i) -> (image, panoptic, name)``) with a :class:`PanopticTransform`."""

    def __init__(self, source: Any, transform: PanopticTransform, indices: Sequence[int] | None = None) -> None:
        self.source, self.transform = source, transform
        self.indices = list(range(len(source))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, panoptic, name = self.source.load(self.indices[i])
        sample = self.transform(image, panoptic)
        sample["name"] = name
        return sample


# ------------------------------------------------------------------------------------------------ data module


class PanopticDataModule(SplitDataModule):
    """Train / val / test panoptic loaders yielding :class:`PanopticBatch` (see the module docstring).

    Args:
        source: ``scenes`` (generated; from ``root`` when given), ``coco_panoptic`` or ``coco_instances``.
        root: dataset folder (COCO layouts above); ``None`` for in-memory scenes.
        image_root: folder holding the image folders (default ``root``).
        image_dir: explicit image folder (absolute or relative to ``image_root``; ``{split}`` expanded).
        categories: categories JSON (``panoptic_coco_categories.json``) when the panoptic JSON has none; for
            ``coco_instances`` it only supplies colours.
        train_split, val_split, test_split: split names in the folder (``train2017``, ``val2017`` ...).
        scene_size: generated scene side or (height, width).
        num_train, num_val, num_test: generated scenes per split.
        seed: scene seed.
        crop_size: training crop (default: ``scene_size`` for scenes, written ones included; 641 otherwise).
        min_scale, max_scale, hflip, color_aug: training augmentation (official: 0.2, 2.0, 0.5, colour on).
        eval_size, eval_pad_size: evaluation resize of the long side / padding (``None``: none).
        size_divisibility, plus_one: batch padding rounding (see :func:`collate_panoptic`).
        mean, std: normalisation on [0, 1].
        max_per_split: cap on each split's images (the first ``n``), for smoke runs.
        batch_size, num_workers, pin_memory: loader settings.
    """

    def __init__(
        self,
        source: str = "scenes",
        root: str | None = None,
        image_root: str | None = None,
        image_dir: str | None = None,
        categories: str | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        scene_size: int | list[int] = 96,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 200,
        seed: int = 0,
        crop_size: int | list[int] | None = None,
        min_scale: float = 0.2,
        max_scale: float = 2.0,
        hflip: float = 0.5,
        color_aug: bool = False,
        eval_size: int | None = None,
        eval_pad_size: int | list[int] | None = None,
        size_divisibility: int = 0,
        plus_one: bool = False,
        mean: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5),
        std: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5),
        max_per_split: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if source != "scenes" and root is None:
            raise ValueError(f"source {source!r} needs a root folder")
        for name, n in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if n < 0:
                raise ValueError(f"{name} must be >= 0, got {n}")
        self.save_hyperparameters()
        self.source = source
        self.root = Path(root) if root is not None else None
        self.image_root = Path(image_root) if image_root is not None else self.root
        if crop_size is None:
            crop_size = scene_size if source == "scenes" else 641
        self.crop_size = _pair(crop_size)
        self._meta: PanopticMeta | None = SCENE_META if source == "scenes" and root is None else None
        self.eval_transform = PanopticTransform(
            train=False, eval_size=eval_size, pad_size=eval_pad_size, mean=mean, std=std
        )

    # ------------------------------------------------------------------------------------------ metadata
    @property
    def meta(self) -> PanopticMeta:
        """The classes (names, things / stuff, COCO ids, colours): read from the data on first use."""
        if self._meta is None:
            self._meta = self._read_meta()
        return self._meta

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    def model_sizes(self) -> dict[str, int]:
        """``num_classes`` (K, void not counted); ``{}`` while a dataset root does not exist yet."""
        if self._meta is None and self.root is not None and not self.root.exists():
            return {}
        return {"num_classes": self.meta.num_classes}

    def _read_meta(self) -> PanopticMeta:
        hp = self.hparams
        for split in (hp.val_split, hp.train_split, hp.test_split):
            paths = self._split_paths(split, required=False)
            if paths is not None:
                if self.source == "coco_instances":
                    return read_coco_instances(paths["json"], paths["images"], hp.categories, check_files=False)[1]
                return read_coco_panoptic(
                    paths["json"], paths["pngs"], paths["images"], hp.categories, check_files=False
                )[1]
        self._split_paths(hp.val_split, required=True)  # raises naming the paths looked for
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------ paths
    def _split_paths(self, split: str, *, required: bool) -> dict[str, Path] | None:
        """JSON, PNG folder and image folder of a split (``None`` when its JSON is absent and not ``required``)."""
        assert self.root is not None
        root, image_root, hp = self.root, self.image_root or self.root, self.hparams
        if not root.exists():
            raise FileNotFoundError(f"panoptic data not found: {root}")
        prefix = "instances" if self.source == "coco_instances" else "panoptic"
        candidates = [root / "annotations" / f"{prefix}_{split}.json", root / f"{prefix}_{split}.json"]
        json_path = next((p for p in candidates if p.is_file()), None)
        if json_path is None:
            if required:
                raise FileNotFoundError(
                    f"no {prefix} JSON for split {split!r}: looked for {', '.join(str(p) for p in candidates)}"
                )
            return None
        if hp.image_dir is not None:
            images = Path(hp.image_dir.format(split=split))
            images = images if images.is_absolute() else image_root / images
        else:
            images = next(
                (p for p in (image_root / split, image_root / "images" / split) if p.is_dir()), image_root / split
            )
        if not images.is_dir():
            raise FileNotFoundError(f"image folder of split {split!r} not found: {images}")
        paths = {"json": json_path, "images": images}
        if prefix == "panoptic":
            pngs = next(
                (p for p in (root / f"panoptic_{split}", root / "annotations" / f"panoptic_{split}") if p.is_dir()),
                None,
            )
            if pngs is None:
                raise FileNotFoundError(
                    f"panoptic PNG folder of split {split!r} not found: {root / f'panoptic_{split}'} "
                    f"(or {root / 'annotations' / f'panoptic_{split}'})"
                )
            paths["pngs"] = pngs
        return paths

    # ------------------------------------------------------------------------------------------ splits
    def train_transform(self) -> PanopticTransform:
        hp = self.hparams
        return PanopticTransform(
            train=True,
            crop_size=self.crop_size,
            min_scale=hp.min_scale,
            max_scale=hp.max_scale,
            hflip=hp.hflip,
            color_aug=hp.color_aug,
            mean=hp.mean,
            std=hp.std,
        )

    def _sources(self) -> dict[str, Any]:
        hp = self.hparams
        if self.source == "scenes" and self.root is None:
            counts = {"train": hp.num_train, "val": hp.num_val, "test": hp.num_test}
            return {s: SceneSource(s, n, hp.seed, hp.scene_size) for s, n in counts.items()}
        sources: dict[str, Any] = {}
        for role, split in (("train", hp.train_split), ("val", hp.val_split), ("test", hp.test_split)):
            paths = self._split_paths(split, required=role != "test")
            if paths is None:  # no test split: evaluate on val
                sources["test"] = sources["val"]
                continue
            if self.source == "coco_instances":
                records, meta = read_coco_instances(paths["json"], paths["images"], hp.categories)
                sources[role] = CocoInstancesSource(records, meta)
            else:
                records, meta = read_coco_panoptic(paths["json"], paths["pngs"], paths["images"], hp.categories)
                sources[role] = CocoPanopticSource(records, meta)
            if self._meta is None:
                self._meta = meta
            elif meta != self._meta:
                raise PanopticFormatError(f"split {split!r} ({paths['json']}) has other categories than the others")
        return sources

    def build_splits(self) -> dict[str, Dataset]:
        sources = self._sources()
        cap = self.hparams.max_per_split
        train_tf = self.train_transform()
        splits = {}
        for role, src in sources.items():
            indices = list(range(len(src)))[:cap] if cap is not None else None
            splits[role] = PanopticDataset(src, train_tf if role == "train" else self.eval_transform, indices)
        return splits

    def collate(self) -> Callable[[list[Any]], PanopticBatch]:
        hp = self.hparams
        return partial(
            collate_panoptic,
            num_classes=self.meta.num_classes,
            size_divisibility=hp.size_divisibility,
            plus_one=hp.plus_one,
        )

    def drop_last(self, split: str, dataset: Dataset) -> bool:
        """Training drops a last partial batch (a batch of one upsets batch norm) unless it is the only one."""
        return split == "train" and len(dataset) > self.batch_size  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the classes and the evaluation transform (``predict`` rebuilds both from it)."""
        hp = self.hparams
        return {
            "meta": self.meta.to_dict(),
            "eval_cfg": {
                **self.eval_transform.config(),
                "size_divisibility": int(hp.size_divisibility),
                "plus_one": bool(hp.plus_one),
            },
            "source": self.source,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "meta" in state_dict:
            meta = PanopticMeta.from_dict(state_dict["meta"])
            if self._meta is not None and meta != self._meta:
                raise ValueError(
                    f"the checkpoint was trained on classes {list(meta.names)[:8]}..., this data has "
                    f"{list(self._meta.names)[:8]}..."
                )
            self._meta = meta


def eval_transform_from_state(state: Mapping[str, Any]) -> PanopticTransform:
    """The evaluation transform stored by :meth:`PanopticDataModule.state_dict` (for ``predict``)."""
    cfg = dict(state.get("eval_cfg") or {})
    return PanopticTransform(
        train=False,
        eval_size=cfg.get("eval_size"),
        pad_size=cfg.get("pad_size"),
        mean=cfg.get("mean", (0.5, 0.5, 0.5)),
        std=cfg.get("std", (0.5, 0.5, 0.5)),
    )

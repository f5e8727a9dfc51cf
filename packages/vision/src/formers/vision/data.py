"""Image-classification data: ImageFolder trees (or a tar of one) with timm's transforms and Mixup/CutMix.

:class:`ImageFolderDataModule` reads ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (or ``val/``), the
layout of the generated shapes (:mod:`formers.vision.synthetic`) and of CIFAR-10's ``cifar10-jpg.tar``. A ``.tar``
root is extracted once into ``extract_dir`` (``tarfile`` with ``filter="data"``: no absolute paths, no links out of
the folder). The validation split is a seeded ``val_fraction`` of ``train/``; ``test/`` (else ``val/``) is the test
split.

Transforms are timm's ``create_transform``: RandomResizedCrop + flip + RandAugment (``auto_augment``) + random
erasing (``re_prob``) for training, resize by ``crop_pct`` + center crop for evaluation. ``mean``, ``std``,
``interpolation`` and ``crop_pct`` default to the ``pretrained_cfg`` of the vision model named in ``model_cfg`` (else
ImageNet's), and explicit values override them. Mixup / CutMix / label smoothing use ``timm.data.Mixup`` on training
batches (after the transfer to the device), which turns targets into soft ``(B, num_classes)`` distributions; the
task's loss accepts both forms.

Corrupt image files raise :class:`CorruptImageError` naming the file (they are not skipped: a silently shrinking
dataset hides broken downloads).
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_transform
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes
from tqdm import tqdm

from formers.core.data import SplitDataModule

__all__ = ["ImageFolderDataModule", "CorruptImageError", "load_image", "extract_tar", "find_split_dirs"]

_MARKER = ".formers-extracted"


class CorruptImageError(ValueError):
    """An image file that cannot be decoded."""


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode an image file fully (truncated files fail here, not later) and convert it to ``mode``."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot decode image file {path}: {err}") from err


def extract_tar(archive: str | Path, dest: str | Path, progress: bool = True) -> Path:
    """Extract ``archive`` into ``dest`` once (a marker file records a finished extraction); returns ``dest``.

    ``progress``: a tqdm bar on stderr counting files (CIFAR-10's tar holds 60k), redrawn at most every 5 s so a
    log is not flooded.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / _MARKER
    if marker.is_file() and marker.read_text() == str(archive.resolve()):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tqdm(
                tar.getmembers(), desc=f"extract {archive.name}", unit="file", mininterval=5, disable=not progress
            )
            tar.extractall(dest, members=members, filter="data")  # refuses absolute paths, links out of dest, devices
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"cannot extract {archive}: {err}") from err
    marker.write_text(str(archive.resolve()))
    return dest


def find_split_dirs(root: str | Path) -> tuple[Path, Path]:
    """``(train_dir, test_dir)`` of an ImageFolder root: ``train/`` and ``test/`` (else ``val/``).

    A tar that wraps everything in one top-level folder (``cifar10/train/...``) is accepted too.
    """
    root = Path(root)
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [root]
    for base in candidates:
        test = next((base / name for name in ("test", "val") if (base / name).is_dir()), None)
        if (base / "train").is_dir() and test is not None:
            return base / "train", test
    raise ValueError(f"{root} is not an ImageFolder root: expected train/<class>/ and test/<class>/ (or val/) folders")


class _Transformed(Dataset):
    """A view of an ImageFolder with its own transform (train and val share the files, not the transform)."""

    def __init__(self, folder: ImageFolder, indices: Sequence[int] | None, transform: Any) -> None:
        self.folder, self.transform = folder, transform
        self.indices = list(range(len(folder))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, target = self.folder.samples[self.indices[i]]
        return self.transform(self.folder.loader(path)), target


class ImageFolderDataModule(SplitDataModule):
    """Train / val / test loaders over an ImageFolder tree or a tar of one.

    Args:
        root: folder with ``train/`` and ``test/`` (or ``val/``), or a ``.tar`` of one.
        extract_dir: where a tar root is extracted (default: next to the tar, ``<tar name>_extracted``).
        img_size: model input side (images are resized / cropped to it).
        in_chans: 3 (RGB) or 1 (grayscale).
        batch_size: per-device batch size (training drops the last partial batch: Mixup needs even batches).
        num_workers: DataLoader workers.
        val_fraction: share of ``train/`` held out for validation (seeded); 0 validates on the test split.
        max_per_split: cap on the images of each split (first ``n`` after a seeded shuffle), for smoke runs.
        seed: seed of the split and the subsampling.
        model_cfg: vision model whose ``pretrained_cfg`` gives the defaults of mean/std/interpolation/crop_pct.
        mean, std, interpolation, crop_pct: normalisation / resizing overrides.
        scale: RandomResizedCrop scale range for training.
        hflip: horizontal flip probability.
        color_jitter: colour jitter strength (timm ignores it when ``auto_augment`` is set).
        auto_augment: timm auto-augment policy, e.g. ``"rand-m9-mstd0.5-inc1"`` (RandAugment); ``None`` for none.
        re_prob: random erasing probability.
        mixup, cutmix: Mixup / CutMix alphas (0 disables each).
        mixup_prob, mixup_switch_prob, mixup_mode: ``timm.data.Mixup`` options.
        smoothing: label smoothing folded into the soft training targets (with or without Mixup); named apart from
            the task's ``label_smoothing`` (hard targets), which Lightning would otherwise refuse as a clash.
    """

    def __init__(
        self,
        root: str,
        extract_dir: str | None = None,
        img_size: int = 224,
        in_chans: int = 3,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        max_per_split: int | None = None,
        seed: int = 0,
        model_cfg: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        smoothing: float = 0.0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup} / {cutmix}")
        self.save_hyperparameters()
        self.root, self.extract_dir = Path(root), extract_dir
        self.img_size, self.in_chans = img_size, in_chans
        self.eval_cfg = self._eval_cfg(model_cfg, mean, std, interpolation, crop_pct)
        self.classes: list[str] = []
        self.mixup_fn: Mixup | None = None

    # ------------------------------------------------------------------------------------------------ config
    def _eval_cfg(self, model, mean, std, interpolation, crop_pct) -> dict[str, Any]:
        """The normalisation and resizing every split shares (and ``predict`` re-uses from the checkpoint)."""
        cfg: dict[str, Any] = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
        cfg.update(interpolation="bicubic", crop_pct=0.875)
        if model is not None:
            from formers.vision.api import resolve_pretrained_cfg

            pretrained = resolve_pretrained_cfg(model)
            cfg.update({k: pretrained[k] for k in ("mean", "std", "interpolation", "crop_pct") if k in pretrained})
        explicit = {"mean": mean, "std": std, "interpolation": interpolation, "crop_pct": crop_pct}
        cfg.update({k: v for k, v in explicit.items() if v is not None})
        cfg["mean"], cfg["std"] = tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"])
        if self.in_chans == 1 and len(cfg["mean"]) == 3:  # grayscale: the luminance-free average of the RGB stats
            cfg["mean"], cfg["std"] = (sum(cfg["mean"]) / 3,), (sum(cfg["std"]) / 3,)
        if len(cfg["mean"]) != self.in_chans or len(cfg["std"]) != self.in_chans:
            raise ValueError(
                f"mean {cfg['mean']} and std {cfg['std']} need one value per channel (in_chans={self.in_chans})"
            )
        cfg["input_size"] = (self.in_chans, self.img_size, self.img_size)
        return cfg

    def train_transform(self) -> Any:
        hp = self.hparams
        return create_transform(
            self.eval_cfg["input_size"],
            is_training=True,
            scale=tuple(hp.scale),
            hflip=hp.hflip,
            color_jitter=hp.color_jitter,
            auto_augment=hp.auto_augment,
            re_prob=hp.re_prob,
            interpolation=self.eval_cfg["interpolation"],
            mean=self.eval_cfg["mean"],
            std=self.eval_cfg["std"],
        )

    def eval_transform(self) -> Any:
        return eval_transform(self.eval_cfg)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) or None

    def model_sizes(self) -> dict[str, int]:
        """Classes (the class folders of ``train/``), input side and channels: the model's sizes.

        Before the data exists (a config checked without its dataset) only the input side and channels are known;
        reading the data then fails with its own clear error.
        """
        sizes = {"img_size": self.img_size, "in_chans": self.in_chans}
        if not self.classes and not self.root.exists():
            return sizes
        if not self.classes:
            train_dir, _ = find_split_dirs(self._image_root())
            self.classes = find_classes(str(train_dir))[0]  # ImageFolder's own class discovery and order
        return {"num_classes": len(self.classes), **sizes}

    # ------------------------------------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        self._image_root()  # extraction happens once, on one process

    def _image_root(self) -> Path:
        if self.root.is_file() and tarfile.is_tarfile(self.root):
            dest = self.extract_dir or self.root.with_name(self.root.name.split(".")[0] + "_extracted")
            return extract_tar(self.root, dest)
        if not self.root.exists():
            raise FileNotFoundError(f"image data not found: {self.root}")
        return self.root

    def build_splits(self) -> dict[str, Dataset]:
        train_dir, test_dir = find_split_dirs(self._image_root())
        mode = "RGB" if self.in_chans == 3 else "L"
        loader = partial(load_image, mode=mode)  # picklable, for DataLoader workers
        train, test = ImageFolder(train_dir, loader=loader), ImageFolder(test_dir, loader=loader)
        if train.classes != test.classes:
            raise ValueError(f"train/ and {test_dir.name}/ have different classes: {train.classes} vs {test.classes}")
        self.classes = list(train.classes)
        gen = torch.Generator().manual_seed(self.hparams.seed)
        order = torch.randperm(len(train), generator=gen).tolist()
        num_val = int(round(len(order) * self.hparams.val_fraction))
        val_idx, train_idx = order[:num_val], order[num_val:]
        test_idx = torch.randperm(len(test), generator=gen).tolist()
        cap = self.hparams.max_per_split
        if cap is not None:
            train_idx, val_idx, test_idx = train_idx[:cap], val_idx[:cap], test_idx[:cap]
        test_split = _Transformed(test, sorted(test_idx), self.eval_transform())
        self._make_mixup()
        return {
            "train": _Transformed(train, train_idx, self.train_transform()),
            # val_fraction 0: validate on the test split (ImageNet practice: val/ is the only held-out set)
            "val": _Transformed(train, val_idx, self.eval_transform()) if val_idx else test_split,
            "test": test_split,
        }

    def _make_mixup(self) -> None:
        hp = self.hparams
        if hp.mixup > 0 or hp.cutmix > 0 or hp.smoothing > 0:
            self.mixup_fn = Mixup(
                mixup_alpha=hp.mixup,
                cutmix_alpha=hp.cutmix,
                prob=hp.mixup_prob if hp.mixup > 0 or hp.cutmix > 0 else 0.0,  # prob 0: smoothing only
                switch_prob=hp.mixup_switch_prob,
                mode=hp.mixup_mode,
                label_smoothing=hp.smoothing,
                num_classes=len(self.classes),
            )

    def drop_last(self, split: str, dataset: Dataset) -> bool:
        """Training drops its last partial batch (Mixup pairs samples), unless the split is a single batch."""
        return split == "train" and len(dataset) > self.batch_size

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Mixup / CutMix / label smoothing on training batches: targets become ``(B, num_classes)`` soft labels."""
        if self.mixup_fn is not None and self.trainer is not None and self.trainer.training:
            images, target = batch
            if images.shape[0] % 2 == 0:  # timm's Mixup pairs samples by flipping the batch
                return self.mixup_fn(images, target)
        return batch

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning checkpoints: class names and the eval transform, which ``formers-vision predict`` uses."""
        return {"classes": list(self.classes), "eval_cfg": dict(self.eval_cfg)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.classes = list(state_dict.get("classes", self.classes))


def eval_transform(cfg: dict[str, Any]) -> Any:
    """timm's evaluation transform (resize by ``crop_pct``, center crop, normalise) for an ``eval_cfg`` dict."""
    return create_transform(
        tuple(cfg["input_size"]),
        is_training=False,
        interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        crop_pct=cfg["crop_pct"],
    )

"""Generated shapes, ImageFolderDataModule (splits, timm transforms, Mixup, tar extraction) and clear errors."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import torch

from formers.vision.data import CorruptImageError, ImageFolderDataModule, extract_tar, load_image
from formers.vision.synthetic import SHAPES, render_shape, write_shapes_dataset

CIFAR_TAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vision" / "cifar10" / "cifar10-jpg.tar"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_shapes_are_seeded_and_in_imagefolder_layout(tmp_path):
    a = write_shapes_dataset(tmp_path / "a", train_per_class=2, test_per_class=1, size=24, seed=3)
    b = write_shapes_dataset(tmp_path / "b", train_per_class=2, test_per_class=1, size=24, seed=3)
    c = write_shapes_dataset(tmp_path / "c", train_per_class=2, test_per_class=1, size=24, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)
    assert sorted(p.name for p in (a / "train").iterdir()) == sorted(SHAPES)
    assert len(list((a / "test").rglob("*.png"))) == len(SHAPES)
    img = load_image(next((a / "train" / "star").iterdir()))
    assert img.size == (24, 24) and img.mode == "RGB"


def test_render_shape_errors():
    import random

    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        render_shape("blob", 32, random.Random(0))
    with pytest.raises(ValueError, match="image size must be >= 8"):
        render_shape("circle", 4, random.Random(0))


def test_datamodule_splits_and_transforms(shapes_root, tiny_model):
    dm = ImageFolderDataModule(str(shapes_root), img_size=32, batch_size=8, val_fraction=0.25, model_cfg=tiny_model)
    dm.setup("fit")
    assert dm.classes == sorted(SHAPES) and dm.num_classes == 8
    assert len(dm.dataset("train")) == 72 and len(dm.dataset("val")) == 24 and len(dm.dataset("test")) == 24
    assert dm.eval_cfg["mean"] == (0.5,) * 3 and dm.eval_cfg["crop_pct"] == 0.875  # from the model's pretrained_cfg
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,)
    state = dm.state_dict()
    assert state["classes"] == sorted(SHAPES) and state["eval_cfg"]["input_size"] == (3, 32, 32)
    gray = ImageFolderDataModule(str(shapes_root), img_size=16, in_chans=1, batch_size=4, crop_pct=1.0)
    xg, _ = next(iter(gray.test_dataloader()))
    assert xg.shape == (4, 1, 16, 16)


def test_train_transform_uses_randaugment_and_erasing(shapes_root):
    dm = ImageFolderDataModule(str(shapes_root), img_size=32, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    names = repr(dm.train_transform())
    assert "RandAugment" in names and "RandomErasing" in names and "RandomResizedCrop" in names
    assert "CenterCrop" in repr(dm.eval_transform())


def test_mixup_gives_soft_targets(shapes_root):
    class _Trainer:
        training = True

    dm = ImageFolderDataModule(str(shapes_root), img_size=32, batch_size=8, mixup=0.8, cutmix=1.0, smoothing=0.1)
    dm.setup("fit")
    dm.trainer = _Trainer()
    x, y = next(iter(dm.train_dataloader()))
    mixed_x, soft = dm.on_after_batch_transfer((x.clone(), y), 0)
    assert soft.shape == (8, 8) and torch.allclose(soft.sum(-1), torch.ones(8))
    assert soft.min() >= 0.1 / 8 - 1e-6  # smoothing floor
    assert not torch.equal(mixed_x, x)
    _Trainer.training = False
    assert dm.on_after_batch_transfer((x, y), 0)[1] is y  # evaluation batches keep hard labels


def test_corrupt_image_names_the_file(shapes_root, tmp_path):
    root = tmp_path / "broken"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        (root / split / "b").mkdir(parents=True)
        for cls in ("a", "b"):
            src = next((shapes_root / split / "circle").iterdir())
            (root / split / cls / "ok.png").write_bytes(src.read_bytes())
    bad = root / "test" / "b" / "zz_bad.png"
    bad.write_bytes((root / "test" / "a" / "ok.png").read_bytes()[:60])  # truncated PNG
    dm = ImageFolderDataModule(str(root), img_size=32, batch_size=4)
    with pytest.raises(CorruptImageError, match="zz_bad.png"):
        list(dm.test_dataloader())
    with pytest.raises(CorruptImageError, match="garbage.jpg"):
        (tmp_path / "garbage.jpg").write_bytes(b"not an image")
        load_image(tmp_path / "garbage.jpg")


def test_bad_configs_are_clear(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="in_chans must be 1"):
        ImageFolderDataModule(str(shapes_root), in_chans=4)
    with pytest.raises(ValueError, match="one value per channel"):
        ImageFolderDataModule(str(shapes_root), mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="val_fraction"):
        ImageFolderDataModule(str(shapes_root), val_fraction=1.0)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="not an ImageFolder root"):
        ImageFolderDataModule(str(tmp_path / "flat")).setup()


def test_tar_root_is_extracted_safely(shapes_root, tmp_path):
    archive = tmp_path / "shapes.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(shapes_root / "train", arcname="train")
        tar.add(shapes_root / "test", arcname="test")
    dm = ImageFolderDataModule(str(archive), extract_dir=str(tmp_path / "out"), img_size=32, max_per_split=10)
    dm.prepare_data()
    dm.setup()
    assert dm.classes == sorted(SHAPES) and len(dm.dataset("train")) == 10
    assert extract_tar(archive, tmp_path / "out") == tmp_path / "out"  # second call: already extracted
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ValueError, match="evil.tar"):
        extract_tar(evil, tmp_path / "evil_out")
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_TAR.is_file(), reason="shared CIFAR-10 tar not present")
def test_cifar10_tar(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cifar10")
    dm = ImageFolderDataModule(str(CIFAR_TAR), extract_dir=str(dest), img_size=32, batch_size=16, crop_pct=1.0)
    dm.prepare_data()
    dm.setup()
    assert dm.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert len(dm.dataset("train")) + len(dm.dataset("val")) == 50_000 and len(dm.dataset("test")) == 10_000
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (16, 3, 32, 32) and 0 <= int(y.min()) and int(y.max()) <= 9


def test_val_fraction_zero_validates_on_the_test_split(shapes_root):
    dm = ImageFolderDataModule(str(shapes_root), img_size=32, val_fraction=0.0)
    dm.setup()
    assert dm.dataset("val") is dm.dataset("test") and len(dm.dataset("train")) == 96

"""``formers-vision``: the vision domain's declaration (tasks, data, predict).

Usage::

    formers-vision fit --config pipelines/vision/<config>.yaml [--run_dir DIR] [--ckpt_path last]
    formers-vision test --config pipelines/vision/<config>.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-vision predict --ckpt <run_dir>/checkpoints/best.ckpt IMAGE_OR_FOLDER [...] [--out top5.tsv] [--top_k 5]
    formers-vision predict --ckpt <kmax run>/checkpoints/best.ckpt IMAGE_OR_FOLDER [...] --out-dir DIR

``predict`` (:mod:`formers.core.predict`) rebuilds the model from the checkpoint, takes the class names and the
evaluation transform from the data module's state stored in it, and does what the checkpoint's task does:

* a classifier writes ``path<TAB>label=prob ...`` (the ``top_k`` labels) per image;
* a panoptic segmentation model (kMaX-DeepLab) writes, per image, the COCO panoptic PNG and an overlay image, and
  one COCO panoptic segments JSON, into ``--out-dir`` (:mod:`formers.vision.segmentation.predict`).

An image that cannot be decoded is reported and skipped; the others are predicted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from formers.core.domain import Domain, TrainedRun
from formers.core.predict import InputError, Predictor, check_finite, iter_files

__all__ = ["DOMAIN", "ImagePredictor", "IMAGE_SUFFIXES", "main"]

IMAGE_SUFFIXES: set[str]  # module __getattr__: torchvision's IMG_EXTENSIONS, imported on first use


def __getattr__(name: str) -> Any:
    if name == "IMAGE_SUFFIXES":  # torchvision loads when predict (or a caller) needs it, not for --help
        return _image_suffixes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _image_suffixes() -> set[str]:
    """The files ImageFolder reads in training, so predict accepts exactly what a training folder may hold."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return set(IMG_EXTENSIONS)


def _image_paths(inputs: list[Path]) -> list[Path]:
    """The image files among ``inputs`` (folders searched recursively); none at all is an input error."""
    suffixes = _image_suffixes()
    paths = list(iter_files(inputs, suffixes))
    if not paths:
        raise InputError(f"no image files ({', '.join(sorted(suffixes))}) in {', '.join(map(str, inputs))}")
    return paths


@dataclass
class ImagePredictor(Predictor):
    """Top-k labels of images (files, or folders searched recursively for image files)."""

    inputs_help: str = "image files or folders (searched recursively)"
    out_help: str = "output TSV: path<TAB>label=prob ... (default: standard output)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top_k", type=int, default=5, help="labels per image")
        parser.add_argument("--batch_size", type=int, default=32, help="images per forward pass")
        parser.add_argument(
            "--out-dir",
            "--out_dir",
            dest="out_dir",
            default=None,
            help="segmentation checkpoints: folder for panoptic PNGs, overlays and segments.json (never overwritten)",
        )

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        from formers.vision.data import CorruptImageError, eval_transform, load_image
        from formers.vision.segmentation.predict import predict_panoptic
        from formers.vision.segmentation.task import PanopticSegmentationTask

        if isinstance(run.task, PanopticSegmentationTask):
            return predict_panoptic(run, _image_paths(inputs), options, self.report)
        if options.top_k < 1 or options.batch_size < 1:
            raise ValueError(f"--top_k and --batch_size must be >= 1, got {options.top_k} and {options.batch_size}")
        if not {"classes", "eval_cfg"} <= set(run.data_state):
            raise InputError(f"{run.path}: no image data state (class names, transform) in the checkpoint")
        classes, cfg = list(run.data_state["classes"]), dict(run.data_state["eval_cfg"])
        paths = _image_paths(inputs)
        transform, mode = eval_transform(cfg), "RGB" if cfg["input_size"][0] == 3 else "L"
        rows: list[str] = []
        for start in range(0, len(paths), options.batch_size):
            images, names = [], []
            for path in paths[start : start + options.batch_size]:
                try:
                    images.append(transform(load_image(path, mode)))
                    names.append(path)
                except CorruptImageError as err:
                    self.report(str(err))
            if images:
                rows += self._top_k(run, torch.stack(images), names, classes, options.top_k)
        text = "\n".join(rows) + "\n" if rows else ""
        return self.emit(text, options, f"{len(rows)} images")

    @staticmethod
    def _top_k(run: TrainedRun, batch: torch.Tensor, paths: list[Path], classes: list[str], k: int) -> list[str]:
        probs = run.task(batch).softmax(dim=-1)
        check_finite(probs, "class probabilities", source=f"{paths[0]} (batch of {len(paths)})")
        values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
        rows = []
        for path, vals, idx in zip(paths, values.tolist(), indices.tolist(), strict=True):
            labels = (f"{classes[i] if i < len(classes) else i}={v:.4f}" for i, v in zip(idx, vals, strict=True))
            rows.append(f"{path}\t" + " ".join(labels))
        return rows


DOMAIN = Domain(
    name="vision",
    description="formers-vision: vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab).",
    # classification (formers.vision.task.ImageClassificationTask on formers.vision.data.ImageFolderDataModule) and
    # panoptic segmentation (PanopticSegmentationTask on segmentation.data.PanopticDataModule): configs choose
    task_class="formers.core.tasks.Task",
    data_class="formers.core.data.SplitDataModule",
    predictor=ImagePredictor(),
)
main = DOMAIN.main

if __name__ == "__main__":
    main()

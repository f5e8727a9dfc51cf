"""Command line of ``formers-vision``: the shared :class:`formers.core.cli.FormersCLI`, plus image prediction.

Usage::

    formers-vision fit --config pipelines/vision/<config>.yaml [--run_dir DIR] [--ckpt_path last]
    formers-vision test --config pipelines/vision/<config>.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-vision predict IMAGE_OR_FOLDER [...] --checkpoint <run_dir>/checkpoints/best.ckpt [--top-k 5]

``predict`` without ``--config`` is intercepted before LightningCLI: it rebuilds the model from the checkpoint's
hyperparameters, takes the class names and the evaluation transform from the DataModule state stored in the
checkpoint, and prints the ``top-k`` labels with their probabilities for every image (``path<TAB>label=prob ...``).
With ``--config`` it is Lightning's ``predict`` subcommand. See :mod:`formers.core.cli` for the run layout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = "formers-vision: vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab)."
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-vision``."""
    argv = sys.argv[1:] if args is None else list(args) if isinstance(args, (list, tuple)) else None  # dict/Namespace
    if argv and argv[0] == "predict" and not {"-c", "--config"} & {a.split("=")[0] for a in argv}:
        predict_main(argv[1:])
        return
    FormersCLI(description=DESCRIPTION, run_dir="runs/vision", args=args)


def predict_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="formers-vision predict", description="Top-k labels of images from a formers-vision checkpoint."
    )
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--checkpoint", "--ckpt_path", required=True, help="a formers-vision Lightning .ckpt")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    opts = parser.parse_args(argv)
    for path, labels in predict(opts.images, opts.checkpoint, top_k=opts.top_k, batch_size=opts.batch_size):
        print(path + "\t" + " ".join(f"{name}={prob:.4f}" for name, prob in labels))


def iter_images(inputs: Sequence[str | Path]) -> Iterator[Path]:
    """Image files named directly, then the image files found (recursively, sorted) in the folders named."""
    for item in map(Path, inputs):
        if item.is_dir():
            yield from sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif item.is_file():
            yield item
        else:
            raise FileNotFoundError(f"no such image file or folder: {item}")


def load_predictor(checkpoint: str | Path) -> tuple[torch.nn.Module, list[str], dict[str, Any]]:
    """``(model in eval mode, class names, eval transform cfg)`` from a formers-vision Lightning checkpoint."""
    from formers.vision.api import create_model
    from formers.vision.checkpoint import CheckpointError, load_checkpoint, load_into

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure here means an unreadable checkpoint
        raise CheckpointError(f"{checkpoint}: not a readable checkpoint: {err}") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if not hparams or "model" not in hparams:
        raise CheckpointError(f"{checkpoint}: no model hyperparameters; is it a formers-vision training checkpoint?")
    data_state = next(
        (v for v in ckpt.values() if isinstance(v, Mapping) and {"classes", "eval_cfg"} <= set(v)),
        None,
    )
    if data_state is None:
        raise CheckpointError(f"{checkpoint}: no DataModule state (class names, transform) in the checkpoint")
    model = create_model(hparams["model"], **(hparams.get("model_kwargs") or {}))
    load_into(model, load_checkpoint(checkpoint), source=str(checkpoint))
    return model.eval(), list(data_state["classes"]), dict(data_state["eval_cfg"])


@torch.no_grad()
def predict(
    inputs: Sequence[str | Path], checkpoint: str | Path, *, top_k: int = 5, batch_size: int = 32
) -> list[tuple[str, list[tuple[str, float]]]]:
    """``[(image path, [(label, probability), ...top_k]), ...]`` for the images / folders in ``inputs``.

    Raises:
        CorruptImageError: an image file cannot be decoded (the message names it).
    """
    from formers.vision.data import eval_transform, load_image

    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    model, classes, cfg = load_predictor(checkpoint)
    transform, mode = eval_transform(cfg), "RGB" if cfg["input_size"][0] == 3 else "L"
    paths = list(iter_images(inputs))
    if not paths:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        batch = torch.stack([transform(load_image(p, mode)) for p in chunk])
        probs = model(batch).softmax(dim=-1)
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for path, vals, idx in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            labels = [(classes[i] if i < len(classes) else str(i), v) for i, v in zip(idx, vals, strict=True)]
            results.append((str(path), labels))
    return results


if __name__ == "__main__":
    main()

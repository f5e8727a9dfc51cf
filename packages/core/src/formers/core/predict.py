"""``formers-<domain> predict``: one predict command for every domain.

Usage (the same flags in every domain; the domain's :class:`Predictor` adds its own options)::

    formers-<domain> predict --ckpt RUN/checkpoints/best.ckpt INPUT [INPUT ...] [--out OUT] [domain options]
    formers-<domain> predict --config pipelines/<domain>/<run>.yaml INPUT ...   # ckpt: <run_dir>/checkpoints/best.ckpt

* ``--ckpt``: a checkpoint of ``formers-<domain> fit``, loaded with ``weights_only=True``; the task is rebuilt from
  its hyper-parameters and the data module's state stored in it (:func:`formers.core.domain.load_trained`).
* ``--config``: a training config. Its ``model`` section (task class and arguments) is used instead of the
  checkpoint's hyper-parameters, and ``--ckpt`` defaults to ``<run_dir>/checkpoints/best.ckpt`` of that config.
* inputs: files or folders, as the domain reads them; ``--out``: where the predictions go (default: standard output).
  An output path that is one of the inputs is refused: predict never overwrites what it reads.

Every input is tried: a bad one is reported (file and reason) and the others are still predicted; the exit status is
1 when any input failed and 2 for a usage error. Non-finite predictions are an error, never written silently.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from formers.core.domain import TrainedRun, load_trained
from formers.core.runsafety import check_finite, refuse_overwrite

if TYPE_CHECKING:
    from formers.core.domain import Domain

__all__ = ["Predictor", "InputError", "predict_main", "check_finite", "refuse_overwrite", "iter_files"]


class InputError(ValueError):
    """One input that cannot be predicted (the message names it); the other inputs still are."""


@dataclass
class Predictor:
    """How a domain predicts. Subclasses set the help texts, add options and implement :meth:`predict`.

    :meth:`predict` gets the rebuilt run, the input paths and the parsed options, and returns the output text (or
    writes files itself and returns a one-line summary). It raises :class:`InputError` for a bad input it cannot
    skip; per-input failures it can skip are reported through :meth:`report`.
    """

    inputs_help: str = "input files or folders"
    out_help: str = "output file (default: standard output)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The domain's own predict options."""

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        raise NotImplementedError

    def __post_init__(self) -> None:
        self.failures: list[str] = []

    def emit(self, text: str, options: argparse.Namespace, summary: str) -> str:
        """``text`` for standard output, or written to ``--out`` (atomically) with a ``wrote OUT (summary)`` line."""
        if options.out is None:
            return text
        out = Path(options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        partial.write_text(text)
        os.replace(partial, out)  # a killed predict never leaves half a file under the output's name
        return f"wrote {out} ({summary})"

    def report(self, message: str) -> None:
        """A failed input: printed to stderr at once, counted for the exit status."""
        self.failures.append(message)
        print(f"error: {message}", file=sys.stderr)


def predict_parser(domain: Domain) -> argparse.ArgumentParser:
    predictor = domain.predictor
    assert predictor is not None
    parser = argparse.ArgumentParser(
        prog=f"{domain.script} predict",
        description=f"Predict with a trained {domain.script} checkpoint (loaded with weights_only=True).",
    )
    parser.add_argument("inputs", nargs="*", help=predictor.inputs_help)
    parser.add_argument("--ckpt", default=None, help="checkpoint of 'fit' (default with --config: its best.ckpt)")
    parser.add_argument("--config", default=None, help="training config: its model section and run_dir are used")
    parser.add_argument("--out", default=None, help=predictor.out_help)
    predictor.add_arguments(parser)
    return parser


def predict_main(domain: Domain, argv: Sequence[str]) -> int:
    """Run ``formers-<domain> predict`` with ``argv`` (without the word ``predict``); returns the exit status."""
    if domain.predictor is None:
        print(f"{domain.script} predict: this domain has no predict command", file=sys.stderr)
        return 2
    parser = predict_parser(domain)
    options = parser.parse_args(list(argv))
    predictor = domain.predictor
    predictor.failures = []
    try:
        ckpt, model_config = _checkpoint_and_model(options)
        inputs = [Path(p) for p in options.inputs]
        if options.out is not None:
            refuse_overwrite(options.out, inputs + [ckpt] + ([Path(options.config)] if options.config else []))
            if Path(options.out).is_dir():
                raise ValueError(f"--out {options.out} is a folder; give the path of the output file")
        run = load_trained(ckpt, task_class=domain.task_class, model_config=model_config)
        with torch.inference_mode():
            text = predictor.predict(run, inputs, options)
    except (ValueError, OSError) as err:  # formers' errors are ValueErrors; OSError: an output that cannot be written
        print(f"{domain.script} predict: error: {err}", file=sys.stderr)
        return 1 if not isinstance(err, FileNotFoundError) or options.inputs else 2
    if text:
        print(text, end="" if text.endswith("\n") else "\n")
    if predictor.failures:
        print(f"{domain.script} predict: {len(predictor.failures)} input(s) failed", file=sys.stderr)
        return 1
    return 0


def _checkpoint_and_model(options: argparse.Namespace) -> tuple[Path, dict[str, Any] | None]:
    if options.config is None:
        if options.ckpt is None:
            raise ValueError("give --ckpt CHECKPOINT (or --config CONFIG to use its run_dir's best.ckpt)")
        return Path(options.ckpt), None
    path = Path(options.config)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the config {path}: {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path}: no model section (class_path / init_args) to rebuild the task from")
    ckpt = options.ckpt or Path(str(config.get("run_dir", "runs"))) / "checkpoints" / "best.ckpt"
    return Path(ckpt), config["model"]


def iter_files(inputs: Sequence[Path], suffixes: set[str] | None = None) -> Iterator[Path]:
    """Files named directly, then the files (recursively, sorted) in the folders named; ``suffixes`` filters those.

    Raises:
        FileNotFoundError: an input that is neither a file nor a folder.
    """
    for item in inputs:
        if item.is_dir():
            found = (p for p in item.rglob("*") if p.is_file())
            yield from sorted(p for p in found if suffixes is None or p.suffix.lower() in suffixes)
        elif item.is_file():
            yield item
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")

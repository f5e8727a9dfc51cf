"""``formers-core``: the spine's own domain, the core models on the synthetic sequence tasks.

Usage::

    formers-core fit --config pipelines/core/tiny.yaml                     # train
    formers-core fit --config pipelines/core/tiny.yaml --ckpt_path last    # resume a killed run (or start fresh)
    formers-core test --config pipelines/core/tiny.yaml --ckpt_path runs/core/tiny/checkpoints/best.ckpt
    formers-core fit --config pipelines/core/tiny.yaml --trainer.strategy ddp --trainer.devices 2 \\
        --trainer.accelerator cpu                                         # 2 CPU processes (gloo)
    formers-core predict --ckpt runs/core/tiny/checkpoints/best.ckpt sequences.txt   # one sequence of ids per line

See :mod:`formers.core.cli` for the run layout and :mod:`formers.core.predict` for ``predict``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from formers.core.domain import Domain, TrainedRun
from formers.core.predict import InputError, Predictor, check_finite, iter_files
from formers.core.registry import get_model_entry

__all__ = ["DOMAIN", "TokenPredictor", "main"]


@dataclass
class TokenPredictor(Predictor):
    """Sequence classification from token ids: one sequence per line (whitespace-separated integers).

    Writes ``file:line<TAB>label<TAB>probability`` per sequence. Lines that are not integer token ids within the
    model's vocabulary are reported and skipped.
    """

    inputs_help: str = "text files with one sequence of token ids per line"
    out_help: str = "output TSV (default: standard output)"

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        if not inputs:
            raise ValueError("give at least one input file")
        model = run.hparams.get("model")
        domain = _model_domain(model)
        if domain not in (None, "core"):
            raise InputError(
                f"{run.path} holds a {domain} model ({model!r}), not a model of token ids; predict with "
                f"formers-{domain} predict"
            )
        sizes = {**(run.hparams.get("data_sizes") or {}), **(run.hparams.get("model_kwargs") or {})}
        vocab_size = sizes.get("vocab_size", math.inf)
        rows = ["source\tlabel\tprobability"]
        for path in iter_files(inputs):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    tokens = [int(t) for t in line.split()]
                except ValueError:
                    self.report(f"{path}:{number}: not a line of integer token ids")
                    continue
                if min(tokens) < 0 or max(tokens) >= vocab_size:
                    self.report(f"{path}:{number}: token ids must be in [0, {vocab_size})")
                    continue
                probs = run.task(torch.tensor([tokens])).softmax(-1)[0]
                check_finite(probs, "class probabilities", source=f"{path}:{number}")
                prob, label = probs.max(-1)
                rows.append(f"{path}:{number}\t{int(label)}\t{float(prob):.4f}")
        if len(rows) == 1 and not self.failures:
            raise InputError(f"no sequences of token ids in {', '.join(map(str, inputs))}")
        text = "\n".join(rows) + "\n"
        return self.emit(text, options, f"{len(rows) - 1} sequences")


def _model_domain(name: object) -> str | None:
    """The registry domain of a model name (``None`` when it is not registered)."""
    try:
        return get_model_entry(str(name)).domain
    except ValueError:
        return None


DOMAIN = Domain(
    name="core",
    description="formers-core: train, validate and test formers models (LightningCLI + DVC run layout).",
    task_class="formers.core.tasks.Task",  # a dotted path: imported when a subcommand runs, not for --help
    data_class=None,  # the spine accepts any LightningDataModule
    predictor=TokenPredictor(),
)
main = DOMAIN.main

if __name__ == "__main__":
    main()

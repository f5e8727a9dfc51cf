"""Algorithmic sequence-classification tasks, generated on the fly from a seed (nothing to download).

Two tasks from the efficient-attention literature, small enough for a tiny transformer to learn on a CPU in seconds:

* ``"majority"``: the label is the most frequent *class token* in the sequence. Token ids ``[0, num_classes)`` are
  class tokens, the remaining ids ``[num_classes, vocab_size)`` are distractors. Each sequence is uniform noise over
  the vocabulary with ``max(1, seq_len // (2 * num_classes))`` extra copies of one class token planted at random
  positions (a margin over the ``seq_len / vocab_size`` copies each token gets from the noise); the label is then
  computed from the final sequence (ties go to the smaller id), so it is an exact function of the input. It is solved
  by counting tokens; more classes and a larger vocabulary make it harder.
* ``"associative_recall"``: ``k1 v1 k2 v2 ... kP vP q`` with ``P = (seq_len - 1) // 2`` distinct keys drawn from
  ``[num_classes, vocab_size)``, values drawn from ``[0, num_classes)`` and a query ``q`` equal to one of the keys; the
  label is the value bound to ``q``. This is the single-query form of multi-query associative recall (MQAR) of
  Zoology (Arora et al., 2023, arXiv:2312.04927), after the associative recall task of H3 (Fu et al., 2023,
  arXiv:2212.14052). It needs attention (an induction head), not just token counts.

Samples are ``(tokens, label)`` with ``tokens`` an ``int64`` tensor of shape ``(seq_len,)`` and ``label`` an ``int64``
scalar in ``[0, num_classes)``.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from formers.core.data.base import SplitDataModule

__all__ = ["SyntheticTask", "SPLITS", "make_sequences", "check_task_config", "SyntheticSequenceDataModule"]

SyntheticTask = Literal["majority", "associative_recall"]
SPLITS = ("train", "val", "test")


def check_task_config(task: str, vocab_size: int, num_classes: int, seq_len: int) -> None:
    """Raise ``ValueError`` naming the problem when the task cannot be built from these sizes."""
    if task not in get_args(SyntheticTask):
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(get_args(SyntheticTask))}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_classes > vocab_size:
        raise ValueError(f"num_classes ({num_classes}) must not exceed vocab_size ({vocab_size}): labels are tokens")
    if task == "majority" and seq_len < 2:
        raise ValueError(f"majority needs seq_len >= 2, got {seq_len}")
    if task == "associative_recall":
        if seq_len < 3 or seq_len % 2 == 0:
            raise ValueError(f"associative_recall needs an odd seq_len = 2 * num_pairs + 1 >= 3, got {seq_len}")
        num_pairs, num_keys = (seq_len - 1) // 2, vocab_size - num_classes
        if num_keys < num_pairs:
            raise ValueError(
                f"associative_recall with seq_len={seq_len} needs {num_pairs} distinct keys, but vocab_size - "
                f"num_classes = {num_keys}; raise vocab_size to at least {num_classes + num_pairs}"
            )


def make_sequences(
    task: SyntheticTask, num_samples: int, vocab_size: int, num_classes: int, seq_len: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Generate ``num_samples`` sequences of one task, deterministically from ``seed``.

    Returns:
        ``tokens`` of shape ``(num_samples, seq_len)`` and ``labels`` of shape ``(num_samples,)``, both ``int64``.
    """
    check_task_config(task, vocab_size, num_classes, seq_len)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    gen = torch.Generator().manual_seed(seed)
    if task == "majority":
        return _majority(num_samples, vocab_size, num_classes, seq_len, gen)
    return _associative_recall(num_samples, vocab_size, num_classes, seq_len, gen)


def _majority(n: int, vocab_size: int, num_classes: int, seq_len: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    tokens = torch.randint(0, vocab_size, (n, seq_len), generator=gen)
    planted = torch.randint(0, num_classes, (n, 1), generator=gen)
    positions = torch.rand(n, seq_len, generator=gen).argsort(dim=1)[:, : max(1, seq_len // (2 * num_classes))]
    tokens.scatter_(1, positions, planted.expand_as(positions))
    counts = torch.zeros(n, vocab_size, dtype=torch.long).scatter_add_(1, tokens, torch.ones_like(tokens))
    labels = counts[:, :num_classes].argmax(dim=1)  # first maximum: ties go to the smaller id
    return tokens, labels


def _associative_recall(
    n: int, vocab_size: int, num_classes: int, seq_len: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    num_pairs = (seq_len - 1) // 2
    keys = torch.rand(n, vocab_size - num_classes, generator=gen).argsort(dim=1)[:, :num_pairs] + num_classes
    values = torch.randint(0, num_classes, (n, num_pairs), generator=gen)
    which = torch.randint(0, num_pairs, (n, 1), generator=gen)
    pairs = torch.stack([keys, values], dim=2).reshape(n, 2 * num_pairs)
    tokens = torch.cat([pairs, keys.gather(1, which)], dim=1)
    return tokens, values.gather(1, which).squeeze(1)


def _split_seeds(seed: int) -> dict[str, int]:
    """Independent seeds per split, so changing ``num_train`` never changes the validation or test data."""
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    return {
        split: int(child.generate_state(1, dtype=np.uint64)[0] >> 1)
        for split, child in zip(SPLITS, children, strict=True)
    }


class SyntheticSequenceDataModule(SplitDataModule):
    """Train/val/test splits of a generated sequence-classification task (see the module docstring for the tasks).

    Batches are ``(tokens, labels)``: ``tokens`` ``(batch, seq_len)`` and ``labels`` ``(batch,)``, both ``int64``.
    Every split is generated from its own child of ``seed`` (``numpy.random.SeedSequence``), so the data is
    identical across processes (DDP ranks) and independent of the global ``seed_everything``, which only drives the
    shuffling of the training set.

    Args:
        task: ``"majority"`` or ``"associative_recall"``.
        vocab_size: number of token ids; the model's embedding needs at least this many rows.
        num_classes: number of labels; the model's head needs exactly this many outputs.
        seq_len: sequence length (odd for ``"associative_recall"``).
        num_train: training samples.
        num_val: validation samples.
        num_test: test samples.
        batch_size: samples per batch (per process under DDP).
        num_workers: DataLoader worker processes; 0 loads in the main process, which is fastest for in-memory data.
        seed: data seed.

    Raises:
        ValueError: on sizes the task cannot be built from (e.g. ``num_classes > vocab_size``).
    """

    def __init__(
        self,
        task: SyntheticTask = "majority",
        vocab_size: int = 16,
        num_classes: int = 4,
        seq_len: int = 32,
        num_train: int = 2048,
        num_val: int = 512,
        num_test: int = 512,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 1234,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        check_task_config(task, vocab_size, num_classes, seq_len)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.save_hyperparameters()
        self.task = task
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.seq_len = seq_len
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed = seed

    def model_sizes(self) -> dict[str, int]:
        """The model's embedding rows and classes (``max_len`` only has to be at least ``seq_len``)."""
        return {"vocab_size": self.vocab_size, "num_classes": self.num_classes}

    def build_splits(self) -> dict[str, TensorDataset]:
        """Every split from its own seed (generation takes milliseconds)."""
        seeds = _split_seeds(self.seed)
        return {
            split: TensorDataset(
                *make_sequences(self.task, self.sizes[split], self.vocab_size, self.num_classes, self.seq_len, seed)
            )
            for split, seed in seeds.items()
        }

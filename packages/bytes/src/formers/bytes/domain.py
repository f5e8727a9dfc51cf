"""``formers-bytes``: the bytes domain's declaration (data, predict); its tasks are
:class:`formers.core.tasks.ClassificationTask` (ByteFormer) and :class:`formers.bytes.task.ByteLMTask` (bGPT).

Usage::

    python -m formers.bytes.cpu_sim --out data/bytes/cpu.h5 --train 2000 --val 100 --test 100   # once (or dvc repro)
    formers-bytes fit --config pipelines/bytes/fsdd_byteformer.yaml [--run_dir DIR] [--ckpt_path last]
    formers-bytes test --config pipelines/bytes/fsdd_byteformer.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-bytes predict --ckpt <run_dir>/checkpoints/best.ckpt FILES... [--out OUT] [options]

``predict`` takes any files (folders are walked) and does what the checkpoint's task does:

- a classifier (ByteFormer): one CSV row per file, ``source, class, probability``;
- a bGPT model, ``--mode score`` (default): one CSV row per file, ``source, bytes, bits_per_byte`` (the file is
  covered by the training data's sliding windows, every byte counted once, so any length works);
- ``--mode continue``: the file continued by up to ``--max-new-bytes`` bytes, written to ``--out-dir``: each input
  ``name`` gives ``name.continued``;
- ``--mode convert --to EXT``: the file converted (the official conversion prompt: input, then the target's header
  patch), written to ``<out-dir>/<stem>.<EXT>``.

Empty files and files over ``--max-input-bytes`` (default 16 MiB) are reported as errors naming the file; the
other inputs are still predicted. Generation stops at the model's end patch or at its byte budget. No output may
overwrite an existing file.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from formers.bytes.patches import PATCH_SIZE
from formers.core.domain import Domain, TrainedRun
from formers.core.predict import InputError, Predictor, check_finite, iter_files, refuse_overwrite

if TYPE_CHECKING:  # the data, tasks and generation load when predict runs: the script starts without Lightning
    from formers.bytes.task import ByteLMTask

__all__ = ["DOMAIN", "BytesPredictor", "main", "read_input"]

MAX_INPUT_BYTES = 16 * 2**20


def read_input(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing empty files and files over ``max_bytes`` with a message naming the file."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{path}: {size} bytes, over the limit of {max_bytes} (--max-input-bytes)")
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read it: {err}") from err
    if not data:
        raise InputError(f"{path}: the file is empty; there are no bytes to predict from")
    return data


@dataclass
class BytesPredictor(Predictor):
    """Classify, score, continue or convert files (see the module docstring)."""

    inputs_help: str = "files or folders of any kind (bytes are bytes)"
    out_help: str = "output CSV of classify / score (default: standard output)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--mode", choices=("score", "continue", "convert"), default="score", help="bGPT models")
        parser.add_argument("--out-dir", default=None, help="folder of the files --mode continue / convert write")
        parser.add_argument("--to", default=None, help="target extension of --mode convert (e.g. mid)")
        parser.add_argument("--max-new-bytes", type=int, default=4096, help="generation budget per file")
        parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
        parser.add_argument("--top-k", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--max-input-bytes", type=int, default=MAX_INPUT_BYTES)

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        from formers.bytes.task import ByteLMTask
        from formers.core.tasks import ClassificationTask

        files = list(iter_files(inputs))
        if not files:
            raise ValueError("give at least one input file or folder")
        if isinstance(run.task, ClassificationTask):
            return self._classify(run, files, options)
        if not isinstance(run.task, ByteLMTask):
            raise ValueError(f"formers-bytes predict cannot use a {type(run.task).__name__} checkpoint")
        if options.mode == "score":
            return self._score(run, files, options)
        return self._generate(run, files, options)

    # ------------------------------------------------------------------------------------------------ the modes
    def _readable(self, files: list[Path], options: argparse.Namespace) -> list[tuple[Path, bytes]]:
        good = []
        for path in files:
            try:
                good.append((path, read_input(path, options.max_input_bytes)))
            except InputError as err:
                self.report(str(err))
        return good

    def _classify(self, run: TrainedRun, files: list[Path], options: argparse.Namespace) -> str:
        classes = run.data_state.get("classes") or [str(i) for i in range(run.task.model.num_classes)]
        max_bytes = run.data_state.get("max_bytes")  # the training data's policy: the first max_bytes bytes
        rows = [["source", "class", "probability"]]
        good = self._readable(files, options)
        for start in range(0, len(good), options.batch_size):
            chunk = good[start : start + options.batch_size]
            for (path, _), p in zip(chunk, self._class_probabilities(run, chunk, max_bytes), strict=True):
                if p is not None:
                    best = int(p.argmax())
                    rows.append([str(path), classes[best], f"{float(p[best]):.6g}"])
        return self.emit(_csv(rows), options, f"{len(rows) - 1} files classified")

    def _class_probabilities(
        self, run: TrainedRun, chunk: list[tuple[Path, bytes]], max_bytes: int | None
    ) -> list[torch.Tensor | None]:
        """Per file, its class probabilities; a batch the model refuses is retried file by file, so only the
        offending file is reported (``None``)."""
        from formers.bytes.data import collate_bytes

        items = [(data[:max_bytes] if max_bytes else data, 0) for _, data in chunk]
        try:
            with torch.no_grad():
                probs = run.task(collate_bytes(items)[0]).float().softmax(dim=-1)
        except ValueError as err:
            if len(chunk) == 1:
                self.report(f"{chunk[0][0]}: {err}")
                return [None]
            return [p for one in chunk for p in self._class_probabilities(run, [one], max_bytes)]
        check_finite(probs, "class probabilities", chunk[0][0])
        return list(probs)

    def _score(self, run: TrainedRun, files: list[Path], options: argparse.Namespace) -> str:
        model = run.task.model
        rows = [["source", "bytes", "bits_per_byte"]]
        for path, data in self._readable(files, options):
            bits = _file_bits(run.task, data, _extension(path), model.patch_length, options.batch_size)
            check_finite(torch.tensor(bits), "bits per byte", path)
            rows.append([str(path), str(len(data)), f"{bits / len(data):.6g}"])
        return self.emit(_csv(rows), options, f"{len(rows) - 1} files scored")

    def _generate(self, run: TrainedRun, files: list[Path], options: argparse.Namespace) -> str:
        from formers.bytes.generation import conversion_prompt, file_prompt, generate

        if options.out_dir is None:
            raise ValueError(f"--mode {options.mode} writes files: give --out-dir FOLDER")
        if options.mode == "convert" and not options.to:
            raise ValueError("--mode convert needs --to EXT (the target file extension, e.g. mid)")
        out_dir = Path(options.out_dir)
        good, prompts, targets = [], [], []
        for path, data in self._readable(files, options):
            name = f"{path.stem}.{options.to.lstrip('.')}" if options.mode == "convert" else f"{path.name}.continued"
            target = out_dir / name
            try:
                refuse_overwrite(target, inputs=files)
                if target.exists():
                    raise FileExistsError(f"{target} exists; predict never overwrites a file")
                prompt = (
                    conversion_prompt(data, _extension(path), options.to)
                    if options.mode == "convert"
                    else file_prompt(data, _extension(path))
                )
            except (ValueError, FileExistsError) as err:
                self.report(f"{path}: {err}")
                continue
            good.append(path)
            prompts.append(prompt)
            targets.append(target)
        if not prompts:
            return "nothing generated"
        max_patches = max(1, math.ceil(options.max_new_bytes / PATCH_SIZE) + 1)
        outputs = []
        for start in range(0, len(prompts), options.batch_size):
            outputs += generate(
                run.task.model,
                prompts[start : start + options.batch_size],
                max_new_patches=max_patches,
                temperature=options.temperature,
                top_k=options.top_k,
                seed=options.seed,
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        for target, result in zip(targets, outputs, strict=True):
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(bytes(result.data[: options.max_new_bytes]))
            partial.replace(target)
        ended = sum(bool(result.ended) for result in outputs)
        return f"wrote {len(outputs)} files to {out_dir} ({ended} ended with the end patch, the rest at the budget)"


def _extension(path: Path) -> str:
    """The header extension of a file: its suffix without the dot (``""`` for none; at most 16 ASCII bytes)."""
    ext = path.suffix.lstrip(".")
    return ext if ext.isascii() and len(ext) <= PATCH_SIZE else ""


def _file_bits(task: ByteLMTask, data: bytes, extension: str, window: int, batch_size: int) -> float:
    """Total bits of the file's bytes under the model: the sliding windows of the evaluation data, each byte once."""
    from formers.bytes.data import collate_sequences, file_window, sliding_windows

    body = -(-len(data) // PATCH_SIZE) + 1
    windows = [file_window(data, extension, *w) for w in sliding_windows(body, window)]
    nats = 0.0
    for start in range(0, len(windows), batch_size):
        inputs, masks = collate_sequences(windows[start : start + batch_size])
        with torch.no_grad():
            logits = task(inputs).float()
        real = masks["real_mask"]
        nats += float(F.cross_entropy(logits[real], inputs["patches"][real], reduction="sum"))
    return nats / math.log(2.0)


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


DOMAIN = Domain(
    name="bytes",
    description="formers-bytes: byte-level transformers (bGPT, ByteFormer) on raw file bytes.",
    data_class="formers.core.data.base.SplitDataModule",
    predictor=BytesPredictor(),
)
main = DOMAIN.main

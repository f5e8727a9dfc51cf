"""Evaluations of a trained run on its held-out data that go beyond teacher-forced metrics (the DVC stages' last step).

Usage (``--config`` is the run's training config: its data section names the held-out split)::

    python -m formers.bytes.evaluate classify   --ckpt RUN/checkpoints/best.ckpt --config CFG --out RUN/samples
    python -m formers.bytes.evaluate samples    --ckpt ... --config ... --out ... [--prompt-bytes 256]
    python -m formers.bytes.evaluate conversion --ckpt ... --config ... --out ... [--limit 16]
    python -m formers.bytes.evaluate cpu        --ckpt ... --config ... --out ... [--limit 100]

- ``classify``: test-split predictions: ``confusion.json`` (matrix, per-class and overall accuracy) and
  ``confusion.png``.
- ``samples``: the first ``--prompt-bytes`` of the first ``--limit`` test documents, continued greedily by
  ``--max-new-bytes``: ``samples.md`` (prompt | continuation) and ``samples.json``.
- ``conversion``: the ABC of the first ``--limit`` test tunes converted to MIDI (greedy): the MIDI files, and
  ``conversion.json`` with :func:`formers.bytes.abc_midi.compare_midi` per tune and averaged (parse rate, note F1,
  exact files).
- ``cpu``: the first ``--limit`` test programs run by the model: from the program image and the initial state it
  generates every later state (greedy); ``cpu.json`` gives the fraction of programs whose whole trace is byte-exact
  (the paper's metric), of states and of bytes right (re-simulated by :mod:`formers.bytes.cpu_sim`).

Nothing is overwritten: ``--out`` must not exist or be an empty folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from formers.bytes import abc_midi, cpu_sim
from formers.bytes.generation import conversion_prompt, file_prompt, generate
from formers.bytes.patches import PATCH_SIZE
from formers.core.domain import TrainedRun, load_trained
from formers.core.tasks import Task

__all__ = ["main", "build_data"]


def build_data(config: Path) -> Any:
    """The data module of a training config (only ``formers.bytes.data`` classes), its splits built."""
    section = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    class_path = section.get("class_path", "")
    module, _, name = class_path.rpartition(".")
    if module != "formers.bytes.data":
        raise ValueError(f"{config}: data.class_path must be a formers.bytes.data class, got {class_path!r}")
    data = getattr(importlib.import_module(module), name)(**(section.get("init_args") or {}))
    data.setup("test")
    return data


def _prepare_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; evaluate never overwrites results")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------ classify
def evaluate_classify(run: TrainedRun, data: Any, out: Path, options: argparse.Namespace) -> dict[str, Any]:
    classes = list(run.data_state.get("classes") or range(run.task.model.num_classes))
    n = len(classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    with torch.no_grad():
        for inputs, target in data.test_dataloader():
            pred = run.task(inputs).argmax(dim=-1)
            confusion += torch.bincount(target * n + pred, minlength=n * n).view(n, n)
    per_class = (confusion.diag().float() / confusion.sum(dim=1).clamp(min=1)).tolist()
    result = {
        "accuracy": float(confusion.diag().sum() / confusion.sum()),
        "per_class_accuracy": dict(zip(map(str, classes), per_class, strict=True)),
        "confusion": confusion.tolist(),
        "classes": list(map(str, classes)),
    }
    _plot_confusion(confusion, [str(c) for c in classes], out / "confusion.png", result["accuracy"])
    return result


def _plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path, accuracy: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    for (i, j), value in zip(
        [(i, j) for i in range(len(classes)) for j in range(len(classes))], confusion.flatten().tolist(), strict=True
    ):
        if value:
            ax.text(j, i, str(value), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {accuracy:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------- samples
def evaluate_samples(run: TrainedRun, data: Any, out: Path, options: argparse.Namespace) -> dict[str, Any]:
    test = data.dataset("test")
    chosen = [
        (doc, ext) for doc, ext in zip(test.documents, test.extensions, strict=True) if len(doc) > options.prompt_bytes
    ]
    chosen = chosen[: options.limit]
    documents = [doc for doc, _ in chosen]
    prompts = [file_prompt(doc[: options.prompt_bytes], ext) for doc, ext in chosen]
    budget = -(-options.max_new_bytes // PATCH_SIZE) + 1
    results = generate(run.task.model, prompts, max_new_patches=budget, temperature=0.0)
    rows, lines = [], ["# Greedy continuations of held-out documents", ""]
    for i, (doc, result) in enumerate(zip(documents, results, strict=True)):
        prompt = doc[: options.prompt_bytes].decode("utf-8", "replace")
        text = bytes(result.data[: options.max_new_bytes]).decode("utf-8", "replace")
        rows.append({"prompt": prompt, "continuation": text, "ended": bool(result.ended)})
        lines += [
            f"## Sample {i}",
            "",
            "Prompt:",
            "",
            "```",
            prompt,
            "```",
            "",
            "Continuation:",
            "",
            "```",
            text,
            "```",
            "",
        ]
    (out / "samples.md").write_text("\n".join(lines))
    return {"samples": rows, "prompt_bytes": options.prompt_bytes, "max_new_bytes": options.max_new_bytes}


# ---------------------------------------------------------------------------------------------------- conversion
def evaluate_conversion(run: TrainedRun, data: Any, out: Path, options: argparse.Namespace) -> dict[str, Any]:
    tunes = list(data.dataset("test").tunes)[: options.limit]
    prompts = [conversion_prompt(tune.abc, "abc", "mid") for tune in tunes]
    budget = max(-(-len(tune.midi) // PATCH_SIZE) for tune in tunes) * 2 + 1
    results = generate(run.task.model, prompts, max_new_patches=budget, temperature=0.0)
    per_tune = []
    for tune, result in zip(tunes, results, strict=True):
        predicted = bytes(result.data)
        (out / f"{tune.name}.mid").write_bytes(predicted)
        per_tune.append({"tune": tune.name, "ended": bool(result.ended), **abc_midi.compare_midi(predicted, tune.midi)})
    keys = ("parses", "exact", "note_precision", "note_recall", "note_f1")
    mean = {key: sum(float(row[key]) for row in per_tune) / len(per_tune) for key in keys}
    return {"mean": mean, "tunes": per_tune}


# ----------------------------------------------------------------------------------------------------------- cpu
def evaluate_cpu(run: TrainedRun, data: Any, out: Path, options: argparse.Namespace) -> dict[str, Any]:
    files = list(data.dataset("test").files)[: options.limit]
    prompts = [file_prompt(f[: cpu_sim.PREDICT_OFFSET], cpu_sim.EXTENSION) for f in files]
    budget = max(len(f) for f in files) // PATCH_SIZE + 2
    results = generate(run.task.model, prompts, max_new_patches=budget, temperature=0.0)
    exact = states_right = states = bytes_right = total = 0
    for truth, result in zip(files, results, strict=True):
        predicted = truth[: cpu_sim.PREDICT_OFFSET] + bytes(result.data)
        ok, _ = cpu_sim.check_file(predicted)
        exact += bool(ok)
        want, got = truth[cpu_sim.PREDICT_OFFSET :], predicted[cpu_sim.PREDICT_OFFSET :]
        for k in range(0, len(want), cpu_sim.STATE_SIZE):
            states += 1
            states_right += want[k : k + cpu_sim.STATE_SIZE] == got[k : k + cpu_sim.STATE_SIZE]
        bytes_right += sum(a == b for a, b in zip(want, got, strict=False))
        total += len(want)
    return {
        "programs": len(files),
        "program_exact": exact / len(files),
        "state_accuracy": states_right / max(states, 1),
        "byte_accuracy": bytes_right / max(total, 1),
    }


EVALUATIONS = {
    "classify": evaluate_classify,
    "samples": evaluate_samples,
    "conversion": evaluate_conversion,
    "cpu": evaluate_cpu,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m formers.bytes.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(EVALUATIONS))
    parser.add_argument("--ckpt", type=Path, required=True, help="a formers-bytes fit checkpoint")
    parser.add_argument("--config", type=Path, required=True, help="the run's training config (its data section)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    parser.add_argument("--limit", type=int, default=8, help="held-out items to evaluate")
    parser.add_argument("--prompt-bytes", type=int, default=256)
    parser.add_argument("--max-new-bytes", type=int, default=512)
    options = parser.parse_args(argv)
    if options.limit < 1:
        parser.error(f"--limit must be >= 1, got {options.limit}")
    torch.manual_seed(0)
    run = load_trained(options.ckpt, task_class=Task)
    data = build_data(options.config)
    out = _prepare_out(options.out)
    result = EVALUATIONS[options.kind](run, data, out, options)
    _write_json(out / f"{options.kind}.json", result)
    print(f"wrote {out / f'{options.kind}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One test per case of issue 13 ("Nothing lost, nothing silent") that no domain test covers yet.

* checkpoints and the CLI: another model's checkpoint given to ``fit --ckpt_path`` is one sentence naming both
  models; the config's model settings win over a checkpoint's hyper-parameters; ``--weights_only false`` is
  honoured; a checkpoint's ``_class_path`` outside formers is refused and never imported; truncated and non-pickle
  checkpoints name the file in ``fit --ckpt_path`` and in ``predict --ckpt``;
* vision: training folders and ``predict`` read the same image suffixes;
* time series: an unscaled column near 1e30 stops training non-zero, naming the step, with no NaN ``best.ckpt``;
  ``predict --out`` equal to the input CSV exits non-zero and leaves the CSV untouched.

The CLI cases share one seconds-long ``formers-core fit`` of ``pipelines/core/tiny.yaml`` (module fixture).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import torch
import yaml

from _cli import run_script
from formers.core.checkpoint_io import CheckpointError

REPO = Path(__file__).resolve().parents[1]
CORE_TINY = REPO / "pipelines" / "core" / "tiny.yaml"
TS_TINY = REPO / "pipelines" / "timeseries" / "tiny.yaml"
QUICK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


def _core_fit(run_dir: Path, *args: str) -> None:
    from formers.core.main import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["formers-core"])
        main(["fit", "--config", str(CORE_TINY), "--run_dir", str(run_dir), *QUICK, *args])


@pytest.fixture(scope="module")
def core_run(tmp_path_factory) -> Path:
    """A tiny ``formers-core fit`` (transformer_classifier, dim 32, dropout 0.0); returns its run dir."""
    run_dir = tmp_path_factory.mktemp("core") / "run"
    _core_fit(run_dir)
    return run_dir


def _edited_checkpoint(source: Path, target: Path, edit) -> Path:
    ckpt = torch.load(source, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, target)
    return target


# ------------------------------------------------------------------------------------ fit --ckpt_path (case 1)


@pytest.mark.slow
def test_fit_with_another_models_checkpoint_is_one_sentence_naming_both(core_run, tmp_path):
    other = _edited_checkpoint(
        core_run / "checkpoints" / "last.ckpt",
        tmp_path / "pit.ckpt",
        lambda ckpt: ckpt["hyper_parameters"].update(model="pit_ti_224"),
    )
    with pytest.raises(ValueError) as info:
        _core_fit(tmp_path / "resumed", f"--ckpt_path={other}")
    message = str(info.value)
    assert message.startswith(
        f"checkpoint {other} was trained for model='pit_ti_224' but model='transformer_classifier' was requested"
    )
    assert message.count(". ") == 0 and "\n" not in message  # one sentence
    assert not (tmp_path / "resumed" / "checkpoints").exists()


@pytest.mark.slow
def test_the_configs_model_settings_win_over_the_checkpoints(core_run, tmp_path):
    """Lightning merged the checkpoint's hyper-parameters into the config: dropout 0.25 on the command line became
    the checkpoint's 0.0 without a word."""
    _core_fit(
        tmp_path / "resumed",
        f"--ckpt_path={core_run / 'checkpoints' / 'last.ckpt'}",
        "--model.init_args.model_kwargs.dropout=0.25",
        "--trainer.max_epochs=2",
    )
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["hyper_parameters"]["model_kwargs"]["dropout"] == 0.25
    assert resumed["epoch"] == 1  # it did resume: epoch 0 came from the checkpoint
    saved = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())
    assert saved["model"]["init_args"]["model_kwargs"]["dropout"] == 0.25


@pytest.mark.slow
def test_a_size_mismatch_with_the_checkpoint_is_a_clear_error_naming_the_file(core_run, tmp_path):
    """dim 16 in the config against a dim-32 checkpoint: one error naming the file and the tensors, before anything is
    trained or logged (Lightning's load_state_dict failed later with a bare RuntimeError, without the path)."""
    ckpt = core_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} does not fit the model built from the config \(") as info:
        _core_fit(tmp_path / "resumed", f"--ckpt_path={ckpt}", "--model.init_args.model_kwargs.dim=16")
    assert "in the checkpoint" in str(info.value)
    assert not (tmp_path / "resumed" / "metrics.csv").exists() and not (tmp_path / "resumed" / "checkpoints").exists()


# ------------------------------------------------------------------------------------- --weights_only (case 2)


@pytest.mark.slow
def test_weights_only_false_is_honoured(core_run, tmp_path):
    pickled = _edited_checkpoint(
        core_run / "checkpoints" / "last.ckpt",
        tmp_path / "pickled.ckpt",
        lambda ckpt: ckpt.update(note=PurePosixPath("a pickled object")),
    )
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        _core_fit(tmp_path / "safe", f"--ckpt_path={pickled}", "--trainer.max_epochs=2")
    assert str(pickled) in str(info.value)
    _core_fit(tmp_path / "trusted", f"--ckpt_path={pickled}", "--weights_only=false", "--trainer.max_epochs=2")
    assert torch.load(tmp_path / "trusted" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


# ----------------------------------------------------------------------------------- _class_path (case 3)


def test_a_checkpoint_naming_a_module_outside_formers_is_refused_and_never_imported(tmp_path, monkeypatch):
    from formers.core.domain import load_trained
    from formers.core.tasks import ClassificationTask

    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\ndef system(*a, **k):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    kwargs = {"vocab_size": 8, "num_classes": 2, "max_len": 8, "dim": 8, "depth": 1, "num_heads": 2}
    task = ClassificationTask("transformer_classifier", kwargs)
    for class_path in ("os.system", "evil_module.system", "formersx.tasks.Task"):
        path = tmp_path / "hostile.ckpt"
        hparams = {"_class_path": class_path, "model": "transformer_classifier", "model_kwargs": kwargs}
        torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams}, path)
        with pytest.raises(CheckpointError, match=f"task class '{class_path}' is not a formers class") as info:
            load_trained(path)
        assert str(path) in str(info.value)
    assert not marker.exists() and "evil_module" not in sys.modules


# ------------------------------------------------------------------ truncated / non-pickle checkpoints (case 4)


def _broken_checkpoints(good: Path, folder: Path) -> dict[str, Path]:
    data = good.read_bytes()
    truncated, text = folder / "truncated.ckpt", folder / "notes.ckpt"
    truncated.write_bytes(data[: len(data) // 3])
    text.write_text("epoch: 3\nthis is a YAML note, not a checkpoint\n")
    return {"truncated": truncated, "text": text}


@pytest.mark.slow
@pytest.mark.parametrize(("case", "match"), [("truncated", "is truncated"), ("text", "is not a PyTorch checkpoint")])
def test_fit_ckpt_path_with_a_broken_checkpoint_names_the_file(core_run, tmp_path, case, match):
    path = _broken_checkpoints(core_run / "checkpoints" / "last.ckpt", tmp_path)[case]
    with pytest.raises(CheckpointError, match=match) as info:
        _core_fit(tmp_path / "resumed", f"--ckpt_path={path}")
    assert str(path) in str(info.value)
    assert "pickled objects" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "match"), [("truncated", "is truncated"), ("text", "is not a PyTorch checkpoint")])
def test_predict_ckpt_with_a_broken_checkpoint_names_the_file(core_run, tmp_path, case, match, capsys):
    from formers.core.main import main

    path = _broken_checkpoints(core_run / "checkpoints" / "last.ckpt", tmp_path)[case]
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("1 2 3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt", str(path), str(tokens)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert str(path) in err and match in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ image suffixes (case 5)


def test_training_folders_and_predict_read_the_same_image_suffixes(tmp_path):
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from formers.core.predict import iter_files
    from formers.vision.domain import IMAGE_SUFFIXES

    assert IMAGE_SUFFIXES == {s.lower() for s in IMG_EXTENSIONS}
    assert ".gif" not in IMAGE_SUFFIXES
    folder = tmp_path / "train" / "cat"
    folder.mkdir(parents=True)
    for suffix in sorted(IMAGE_SUFFIXES | {".gif", ".txt", ".svg"}):
        (folder / f"x{suffix}").write_bytes(b"")
    trained_on = {Path(p).suffix for p, _ in ImageFolder(tmp_path / "train").samples}
    predicted = {p.suffix for p in iter_files([tmp_path / "train"], IMAGE_SUFFIXES)}
    assert trained_on == predicted == IMAGE_SUFFIXES


# ------------------------------------------------------------------------------- time series (cases 6 and 7)


def _timeseries(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``formers-timeseries args`` as its ``main`` in this process (:mod:`_cli`): exit status, stdout, stderr."""
    from formers.timeseries.domain import main

    return run_script("formers-timeseries", main, args, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sanity_steps", "expected"),
    [
        ("2", ["is inf in the sanity check before training", "unscaled or non-finite values in the validation data"]),
        ("0", ["training loss is", "at global step 0 (epoch 0, batch 0)", "e+30"]),
    ],
    ids=["sanity_check", "first_training_step"],
)
def test_an_unscaled_column_near_1e30_stops_training_naming_the_step(tmp_path, sanity_steps, expected):
    from formers.timeseries.synthetic import write_synthetic_csv

    csv = write_synthetic_csv(tmp_path / "series.csv", rows=300, channels=2, seed=0)
    text = csv.read_text().splitlines()
    rows = []
    for line in text[1:]:  # the first channel after the date, unscaled near 1e30
        cells = line.split(",")
        cells[1] = f"{float(cells[1]) * 1e30:.6e}"
        rows.append(",".join(cells))
    huge = tmp_path / "huge.csv"
    huge.write_text("\n".join([text[0], *rows]) + "\n")
    run_dir = tmp_path / "run"
    proc = _timeseries(
        "fit",
        "--config",
        str(TS_TINY),
        "--run_dir",
        str(run_dir),
        f"--data.init_args.path={huge}",
        "--data.init_args.scale=false",
        f"--trainer.num_sanity_val_steps={sanity_steps}",
        *QUICK,
        cwd=tmp_path,
    )
    assert proc.returncode != 0, "training on values near 1e30 finished with exit 0"
    assert "NonFiniteLossError" in proc.stderr, proc.stderr[-3000:]
    for phrase in expected:  # where it stopped, and the likely cause
        assert phrase in proc.stderr, proc.stderr[-3000:]
    assert not (run_dir / "checkpoints" / "best.ckpt").exists()  # never a NaN best.ckpt


@pytest.mark.slow
def test_timeseries_predict_out_equal_to_the_input_csv_leaves_it_untouched(tmp_path, monkeypatch, capsys):
    from formers.timeseries.domain import main
    from formers.timeseries.synthetic import write_synthetic_csv

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["formers-timeseries"])
    csv = write_synthetic_csv(tmp_path / "series.csv", rows=300, channels=2, seed=0)
    run_dir = tmp_path / "run"
    main(["fit", "--config", str(TS_TINY), "--run_dir", str(run_dir), f"--data.init_args.path={csv}", *QUICK])
    before = csv.read_bytes()
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    capsys.readouterr()
    for out in (str(csv), "series.csv", "./sub/../series.csv"):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "--ckpt", ckpt, "series.csv", "--out", out])
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and "is the input" in err and "Traceback" not in err, err
    assert csv.read_bytes() == before
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt", ckpt, "series.csv", "--out", "forecast.csv"])
    assert exit_info.value.code == 0 and (tmp_path / "forecast.csv").is_file(), capsys.readouterr().err
    assert csv.read_bytes() == before

"""formers-bytes' spine: the bGPT task's losses and metrics on hand-computed cases, the CLI's fit / test / predict
(score, continue, convert, classify) and evaluate end to end on tiny runs, and their errors."""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from formers.bytes import cpu_sim
from formers.bytes.data import collate_sequences
from formers.bytes.domain import DOMAIN
from formers.bytes.patches import conversion_sequence, file_sequence
from formers.bytes.task import ByteLMTask, predicted_patch_mask

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "pipelines" / "bytes" / "tiny.yaml"
FSDD = ROOT.parent / "shared" / "data" / "bytes" / "fsdd" / "recordings"
TINY_BGPT = {"dim": 16, "num_heads": 2, "patch_num_layers": 1, "byte_num_layers": 1, "patch_length": 16}


def _task(**kwargs) -> ByteLMTask:
    return ByteLMTask("bgpt_small", model_kwargs=TINY_BGPT, **kwargs)


def _batch() -> tuple[dict, dict]:
    return collate_sequences(
        [file_sequence(b"hello world, bytes!", "txt"), conversion_sequence(b"ab", "abc", b"xyz", "mid")]
    )


# ---------------------------------------------------------------------------------------------- the task
def test_predicted_patches_exclude_the_header_and_the_padding() -> None:
    mask = predicted_patch_mask(torch.tensor([3, 1]), 4, 2)
    assert mask[0, :, 0].tolist() == [False, True, True, False]
    assert not mask[1].any()  # a header alone predicts nothing


def test_losses_count_the_bytes_they_name() -> None:
    task = _task()
    inputs, masks = _batch()
    _, target = task.unpack((inputs, masks))
    logits = torch.randn(*inputs["patches"].shape, 257)
    labels = inputs["patches"]
    ce = F.cross_entropy(logits.flatten(0, 2), labels.flatten(), reduction="none").view(labels.shape)
    on_target = ce[masks["target_mask"]].mean()
    on_all = ce[target["all_mask"]].mean()
    torch.testing.assert_close(task.loss(logits, target), on_target)
    torch.testing.assert_close(_task(loss_on="all").loss(logits, target), on_all)
    # target bytes: the 19 text bytes + terminator, and the 3 MIDI bytes + terminator; "all" counts whole patches
    assert int(masks["target_mask"].sum()) == 20 + 4
    assert int(target["all_mask"].sum()) == 16 * ((4 - 1) + (5 - 1))


def test_metrics_are_exact_over_the_split() -> None:
    task = _task()
    metrics = task.make_metrics()
    inputs, masks = _batch()
    _, target = task.unpack((inputs, masks))
    logits = torch.randn(*inputs["patches"].shape, 257)
    task.update_metrics(metrics, logits, target)
    labels = inputs["patches"]
    ce = F.cross_entropy(logits.flatten(0, 2), labels.flatten(), reduction="none").view(labels.shape)
    real = masks["real_mask"]
    torch.testing.assert_close(metrics["bpb"].compute(), ce[real].mean() / math.log(2))
    right = logits.argmax(-1) == labels
    torch.testing.assert_close(metrics["byte_acc"].compute(), right[real].float().mean())


def test_perfect_logits_give_zero_bits_and_full_accuracy() -> None:
    task = _task()
    metrics = task.make_metrics()
    inputs, masks = _batch()
    _, target = task.unpack((inputs, masks))
    logits = F.one_hot(inputs["patches"], 257).float() * 100.0
    task.update_metrics(metrics, logits, target)
    assert metrics["bpb"].compute() < 1e-6
    assert metrics["byte_acc"].compute() == 1.0 and metrics["patch_acc"].compute() == 1.0


def test_training_decodes_only_the_target_patches_with_the_same_loss_and_gradients() -> None:
    task = _task().eval()  # no dropout: both passes see the same network
    batch = collate_sequences([conversion_sequence(b"abc" * 10, "abc", b"xy" * 9, "mid")])
    inputs, target = task.unpack(batch)
    decode = batch[1]["target_mask"].any(dim=-1)
    assert 0 < int(decode.sum()) < int(inputs["num_patches"][0]) - 1  # the ABC patches are skipped
    grads = []
    for kwargs in ({}, {"decode_mask": decode}):
        task.zero_grad()
        logits = task.model(**inputs, **kwargs)
        task.loss(logits, target).backward()
        grads.append([p.grad.clone() for p in task.parameters()])
        if kwargs:
            assert not logits[0][~decode[0]].any()  # rows left out are zeros
    for full, part in zip(*grads, strict=True):
        torch.testing.assert_close(part, full)


def test_the_task_refuses_other_batches() -> None:
    with pytest.raises(TypeError, match="formers.bytes.data"):
        _task().unpack((torch.zeros(2, 3), torch.zeros(2)))
    with pytest.raises(ValueError, match="loss_on"):
        _task(loss_on="input")


# ---------------------------------------------------------------------------------------------- CLI end to end
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``formers-bytes ARGS`` run in this process (a subprocess would pay the imports again, ~10 s per call)."""
    out, err, here, code = io.StringIO(), io.StringIO(), os.getcwd(), 0
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            DOMAIN.main(list(args))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bGPT fitted and tested on a generated CPU-simulation file (the pipeline's smoke config)."""
    work = tmp_path_factory.mktemp("bytes")
    cpu_sim.main(["--out", str(work / "data/bytes/default.h5"), "--train", "16", "--val", "4", "--test", "4",
                  "--min-program", "1", "--max-program", "8", "--seed", "0"])  # fmt: skip
    run = work / "run"
    for command in ("fit", "test"):
        extra = ["--ckpt_path", str(run / "checkpoints/best.ckpt")] if command == "test" else []
        proc = _cli(command, "--config", str(TINY), "--run_dir", str(run), *extra, cwd=work)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_fit_and_test_write_the_bits_per_byte(tiny_run: Path) -> None:
    import json

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert {"bpb", "bpb_all", "byte_acc", "patch_acc", "loss"} <= set(metrics["test"])
    assert math.isfinite(metrics["test"]["bpb"])


def test_predict_scores_continues_and_converts_any_bytes(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = str(tiny_run / "checkpoints/best.ckpt")
    rng = torch.Generator().manual_seed(0)
    files = []
    for i, size in enumerate((1, 15, 16, 17, 700)):  # around the patch size, and longer than the 80-patch window
        path = tmp_path / f"random{i}.bin"
        path.write_bytes(bytes(torch.randint(0, 256, (size,), generator=rng).tolist()))
        files.append(str(path))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    proc = _cli("predict", "--ckpt", ckpt, *files, str(empty), cwd=tmp_path)
    assert proc.returncode == 1  # the empty file failed, the others were scored
    assert "empty.txt: the file is empty" in proc.stderr
    rows = proc.stdout.strip().splitlines()
    assert rows[0] == "source,bytes,bits_per_byte" and len(rows) == 1 + len(files)
    assert all(math.isfinite(float(row.split(",")[-1])) for row in rows[1:])

    out = tmp_path / "generated"
    continued = ["--mode", "continue", "--max-new-bytes", "40", "--out-dir", str(out)]
    proc = _cli("predict", "--ckpt", ckpt, files[1], *continued, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((out / "random1.bin.continued").read_bytes()) <= 40
    again = _cli("predict", "--ckpt", ckpt, files[1], "--mode", "continue", "--out-dir", str(out), cwd=tmp_path)
    assert again.returncode == 1 and "never overwrites" in again.stderr

    proc = _cli("predict", "--ckpt", ckpt, files[0], "--mode", "convert", "--to", "mid", "--max-new-bytes", "32",
                "--out-dir", str(out), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "random0.mid").is_file()
    big = _cli("predict", "--ckpt", ckpt, files[4], "--max-input-bytes", "100", cwd=tmp_path)
    assert big.returncode == 1 and "over the limit of 100" in big.stderr


def test_evaluate_runs_the_model_as_the_cpu(tiny_run: Path, tmp_path: Path) -> None:
    import json

    from formers.bytes import evaluate

    work = tiny_run.parent
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.read_text().replace("data/bytes/default.h5", str(work / "data/bytes/default.h5")))
    out = tmp_path / "cpu"
    assert evaluate.main(["cpu", "--ckpt", str(tiny_run / "checkpoints/best.ckpt"), "--config", str(config),
                          "--out", str(out), "--limit", "2"]) == 0  # fmt: skip
    result = json.loads((out / "cpu.json").read_text())
    assert result["programs"] == 2 and 0.0 <= result["byte_accuracy"] <= 1.0
    with pytest.raises(FileExistsError, match="never overwrites"):
        evaluate.main(["cpu", "--ckpt", str(tiny_run / "checkpoints/best.ckpt"), "--config", str(config),
                       "--out", str(out)])  # fmt: skip


@pytest.mark.skipif(not FSDD.is_dir(), reason="needs ../shared/data/bytes/fsdd")
def test_classify_predicts_fsdd_wavs_and_survives_random_files(tmp_path: Path) -> None:
    run = tmp_path / "fsdd"
    proc = _cli(
        "fit", "--config", str(ROOT / "pipelines/bytes/fsdd_byteformer.yaml"), "--run_dir", str(run),
        "--data.init_args.root", str(FSDD), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "2",
        "--model.init_args.model_kwargs", '{"dim": 16, "depth": 2, "num_heads": 2, "max_num_tokens": 2304}',
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = tmp_path / "noise.wav"
    noise.write_bytes(bytes(torch.randint(0, 256, (5000,)).tolist()))
    huge = tmp_path / "huge.wav"
    huge.write_bytes(bytes(60_000))  # over the limit given below
    wav = sorted(FSDD.glob("3_*_0.wav"))[0]
    files = [str(wav), str(noise), str(huge)]
    proc = _cli("predict", "--ckpt", str(run / "checkpoints/best.ckpt"), *files, "--max-input-bytes", "50000",
                cwd=tmp_path)  # fmt: skip
    rows = proc.stdout.strip().splitlines()
    assert rows[0] == "source,class,probability"
    assert {row.split(",")[0] for row in rows[1:]} == {str(wav), str(noise)}
    assert proc.returncode == 1 and "huge.wav" in proc.stderr

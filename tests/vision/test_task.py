"""ImageClassificationTask: hard / soft-target losses, top-k accuracy, confusion CSV on test, fine-tuning init."""

from __future__ import annotations

import csv
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

import formers.vision as fv
from formers.vision.data import ImageFolderDataModule
from formers.vision.task import ImageClassificationTask, soft_target_cross_entropy


def test_losses_and_topk(tiny_model):
    task = ImageClassificationTask(tiny_model, {"num_classes": 6}, label_smoothing=0.1)
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5]])
    hard = torch.tensor([1, 5])
    torch.testing.assert_close(task.loss(logits, hard), F.cross_entropy(logits, hard, label_smoothing=0.1))
    batch = task.batch_metrics(logits, hard, task.loss(logits, hard))
    assert batch["acc"] == 0.5 and batch["acc_top5"] == 1.0
    metrics = task.eval_metrics["test"]
    task.update_metrics(metrics, logits[:1], hard[:1])  # exact over samples, whatever the batches
    task.update_metrics(metrics, logits[1:], hard[1:])
    assert metrics["acc"].compute() == 0.5 and metrics["acc_top5"].compute() == 1.0
    soft = torch.tensor([[0.0, 0.7, 0.3, 0, 0, 0], [0.0, 0, 0, 0, 0.4, 0.6]])
    expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(task.loss(logits, soft), expected)
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, F.one_hot(hard, 6).float()), F.cross_entropy(logits, hard)
    )
    # dominant class of the soft label: 1 (missed) and 5 (hit)
    assert task.batch_metrics(logits, soft, task.loss(logits, soft))["acc"] == 0.5
    with pytest.raises(ValueError, match="soft targets"):
        task.loss(logits, soft[:, :4])
    with pytest.raises(ValueError, match="top_k"):
        ImageClassificationTask(tiny_model, top_k=0)


def test_fit_with_mixup_then_test_writes_confusion(tiny_model, shapes_root, tmp_path):
    dm = ImageFolderDataModule(str(shapes_root), img_size=32, batch_size=8, mixup=0.8, cutmix=1.0, smoothing=0.1)
    task = ImageClassificationTask(tiny_model, {"num_classes": 8}, confusion_csv=str(tmp_path / "confusion.csv"))
    task.configure_optimizers = lambda: torch.optim.AdamW(task.parameters(), lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert math.isfinite(trainer.callback_metrics["train/loss"].item())
    (result,) = trainer.test(task, datamodule=dm, verbose=False)
    assert {"test/loss", "test/acc", "test/acc_top5"} <= set(result)
    rows = list(csv.DictReader((tmp_path / "confusion.csv").open()))
    assert len(rows) == len(dm.dataset("test")) == 24
    assert {r["actual"] for r in rows} == set(dm.classes) and {r["predicted"] for r in rows} <= set(dm.classes)
    acc = sum(r["actual"] == r["predicted"] for r in rows) / len(rows)
    assert acc == pytest.approx(result["test/acc"], abs=1e-6)


def test_task_initialises_from_a_checkpoint(tiny_model, tmp_path):
    ref = fv.create_model(tiny_model, num_classes=10)
    torch.save({"state_dict_ema": ref.state_dict()}, tmp_path / "w.pth.tar")
    task = ImageClassificationTask(tiny_model, {"num_classes": 4}, checkpoint_path=str(tmp_path / "w.pth.tar"))
    assert torch.equal(task.model.stage2.weight, ref.stage2.weight) and task.model.head.weight.shape == (4, 16)
    assert task.model.pretrained_cfg["num_classes"] == 4


def test_class_count_mismatch_is_caught(tiny_model, shapes_root, tmp_path):
    dm = ImageFolderDataModule(str(shapes_root), img_size=32, batch_size=8)
    task = ImageClassificationTask(tiny_model, {"num_classes": 5})
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    dm.setup()
    with pytest.raises(ValueError, match="model_kwargs.num_classes=5 but the data has num_classes=8"):
        trainer.test(task, datamodule=dm, verbose=False)


def test_warmup_cosine_schedule():
    from formers.vision.task import WarmupCosineLR

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, warmup_epochs=2, max_epochs=6, warmup_start=0.1, min_factor=0.0)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.1, 0.55, 1.0])
    assert lrs[3:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3, 4)])
    with pytest.raises(ValueError, match="warmup_epochs < max_epochs"):
        WarmupCosineLR(opt, warmup_epochs=5, max_epochs=5)

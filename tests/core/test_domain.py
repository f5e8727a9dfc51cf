"""The spine's extension path: a domain declaration, the base task and data module, links, parameter groups, predict.

``test_a_new_domain_from_its_declaration_alone`` builds a throwaway domain in a temporary package (model, data
module, task and predictor: the files docs/adding-a-model.md lists) and runs its generated CLI's ``fit`` and
``predict`` in a subprocess, so the extension path stays as cheap as that file shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from formers.core.checkpoint_io import CheckpointError
from formers.core.domain import data_state_of, load_trained, resolve_task_class
from formers.core.optim import optimizer_parameters, param_groups_weight_decay
from formers.core.tasks import ClassificationTask, Task, batch_size_of, merge_data_sizes

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "core" / "tiny.yaml"

# ------------------------------------------------------------------------------------------------- parameter groups


class _WithTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.table = nn.Parameter(torch.zeros(5, 2))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "table"}


def test_param_groups_exclude_biases_norms_and_no_weight_decay_names():
    outer = nn.Module()
    outer.model = _WithTokens()  # a task wraps the network: names are relative to the module that lists them
    outer.frozen = nn.Linear(2, 2)
    outer.frozen.requires_grad_(False)
    decay, no_decay = param_groups_weight_decay(outer, 0.05)
    names = {id(p): n for n, p in outer.named_parameters()}
    assert (decay["name"], decay["weight_decay"], no_decay["weight_decay"]) == ("decay", 0.05, 0.0)
    assert {names[id(p)] for p in decay["params"]} == {"model.proj.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "model.pos_embed",
        "model.table",
        "model.proj.bias",
        "model.norm.weight",
        "model.norm.bias",
    }


def test_optimizer_parameters_stay_ungrouped_without_weight_decay():
    model = _WithTokens()
    assert not isinstance(optimizer_parameters(model, torch.optim.Adam, {"lr": 1e-4}), list)  # Adam: wd 0
    assert not isinstance(optimizer_parameters(model, torch.optim.AdamW, {"weight_decay": 0.05}, False), list)
    assert len(optimizer_parameters(model, torch.optim.AdamW, {})) == 2  # AdamW's default decay is 0.01


class _WithBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = nn.Linear(3, 3), nn.Linear(3, 2)

    def lr_scales(self) -> dict[str, float]:
        return {"backbone": 0.1}


def test_lr_scales_give_their_parameters_groups_with_the_scaled_lr():
    outer = nn.Module()
    outer.model = _WithBackbone()  # names relative to the module that lists them, as no_weight_decay()
    names = {id(p): n for n, p in outer.named_parameters()}
    groups = optimizer_parameters(outer, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.05})
    seen = {g["name"]: ({names[id(p)] for p in g["params"]}, g.get("lr"), g["weight_decay"]) for g in groups}
    assert seen == {
        "decay": ({"model.head.weight"}, None, 0.05),
        "decay_lr0.1": ({"model.backbone.weight"}, pytest.approx(1e-4), 0.05),
        "no_decay": ({"model.head.bias"}, None, 0.0),
        "no_decay_lr0.1": ({"model.backbone.bias"}, pytest.approx(1e-4), 0.0),
    }
    flat = optimizer_parameters(outer, torch.optim.Adam, {"lr": 1e-3})  # no weight decay: still split by lr
    assert [(g["name"], len(g["params"]), g.get("lr")) for g in flat] == [("all", 2, None), ("all_lr0.1", 2, 1e-4)]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="explicit optimizer lr"):
        optimizer_parameters(outer, torch.optim.AdamW, {"weight_decay": 0.05})


@pytest.mark.parametrize(
    ("name", "listed"),
    [("pit_ti_224", ("pos_embed", "cls_token")), ("swin_tiny_patch4_window7_224", ("relative_position_bias_table",))],
)
def test_vision_no_weight_decay_reaches_the_optimizer(name, listed):
    """``no_weight_decay()`` was defined by the vision models and called by nothing: AdamW decayed these tables."""
    from formers.core.registry import get_model_entry

    task = nn.Module()
    task.model = get_model_entry(name).create(**get_model_entry(name).test_kwargs)
    decay, no_decay = param_groups_weight_decay(task, 0.05)
    undecayed = {id(p) for p in no_decay["params"]}
    tables = [n for n, p in task.named_parameters() if any(entry in n for entry in listed)]
    assert tables and all(id(dict(task.named_parameters())[n]) in undecayed for n in tables)
    assert all(p.ndim > 1 for p in decay["params"])


def test_cli_optimizer_uses_the_groups_and_yaml_can_switch_them_off(tmp_path, monkeypatch):
    from formers.core.cli import FormersCLI

    monkeypatch.setattr(sys, "argv", ["formers-core"])
    args = ["--config", str(TINY), "--run_dir", str(tmp_path)]
    grouped = FormersCLI(args=args, run=False).model.configure_optimizers()
    assert [g["name"] for g in grouped.param_groups] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in grouped.param_groups] == [0.01, 0.0]
    flat = FormersCLI(args=[*args, "--filter_bias_and_bn", "false"], run=False).model.configure_optimizers()
    assert len(flat.param_groups) == 1 and flat.param_groups[0]["weight_decay"] == 0.01


# -------------------------------------------------------------------------------------------- task and data sizes


def test_cli_links_the_data_sizes_to_the_task(tmp_path, monkeypatch):
    """num_classes / vocab_size come from the data section alone: the model section no longer repeats them."""
    from formers.core.cli import FormersCLI

    monkeypatch.setattr(sys, "argv", ["formers-core"])
    config = yaml.safe_load(TINY.read_text())
    for key in ("num_classes", "vocab_size"):
        config["model"]["init_args"]["model_kwargs"].pop(key, None)
    config["data"]["init_args"].update(num_classes=6, vocab_size=20)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    cli = FormersCLI(args=["--config", str(tmp_path / "c.yaml"), "--run_dir", str(tmp_path)], run=False)
    assert cli.model.hparams.data_sizes == {"vocab_size": 20, "num_classes": 6}
    assert cli.model.model.head.out_features == 6


def test_data_sizes_that_contradict_model_kwargs_are_one_clear_error():
    with pytest.raises(ValueError, match=r"model_kwargs.num_classes=5 but the data has num_classes=4"):
        merge_data_sizes("m", {"num_classes": 5}, {"num_classes": 4})
    assert merge_data_sizes("m", {"dim": 8, "num_classes": 4}, {"num_classes": 4}) == {"dim": 8, "num_classes": 4}


def test_batch_size_comes_from_the_batch():
    assert batch_size_of(torch.zeros(7, 3)) == 7
    assert batch_size_of(SimpleNamespace(num_graphs=5, x=torch.zeros(40, 3))) == 5  # a PyG Batch: graphs, not nodes
    assert batch_size_of({"bytes": torch.zeros(3, 100), "lengths": torch.ones(3)}) == 3
    assert batch_size_of([torch.zeros(2, 5), torch.zeros(2)]) == 2
    with pytest.raises(TypeError, match="override Task.batch_size"):
        batch_size_of(object())


def test_task_attention_backend_reaches_the_model():
    from formers.core.attention import attention_modules

    kwargs = {"vocab_size": 16, "num_classes": 4, "max_len": 32, "dim": 16, "depth": 1, "num_heads": 2}
    task = ClassificationTask("transformer_classifier", kwargs, attention_backend="reference")
    assert {module.backend for _, module in attention_modules(task.model)} == {"reference"}
    with pytest.raises(ValueError, match="no_such_backend"):
        ClassificationTask("transformer_classifier", kwargs, attention_backend="no_such_backend")


# ------------------------------------------------------------------------------------------ checkpoints and predict


def test_a_checkpoint_cannot_name_a_class_outside_formers(tmp_path):
    with pytest.raises(CheckpointError, match="not a formers class"):
        resolve_task_class("os.system", Task, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="is not a formers.core.tasks.Task"):
        resolve_task_class("formers.core.data.SyntheticSequenceDataModule", Task, "x.ckpt")
    assert resolve_task_class("formers.core.tasks.RegressionTask", Task, "x.ckpt").__name__ == "RegressionTask"


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "not found"), (b"junk bytes", "not a PyTorch checkpoint"), (b"PK\x03\x04trunc", "truncated")],
    ids=["missing", "not_a_checkpoint", "truncated_zip"],
)
def test_load_trained_names_the_file(tmp_path, content, match):
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        load_trained(path)
    assert str(path) in str(info.value)


def test_data_state_is_found_by_the_data_module_class():
    ckpt = {
        "state_dict": {},
        "datamodule_hyper_parameters": {"_class_path": "formers.x.data.SomeData"},
        "SomeData": {"classes": ["a"]},
        "Other": {"x": 1},
    }
    assert data_state_of(ckpt) == {"classes": ["a"]}
    assert data_state_of({"state_dict": {}, "Only": {"y": 2}}) == {"y": 2}


# ------------------------------------------------------------------------------------ the declaration's own CLI


def test_a_domain_that_registers_no_models_says_so_and_exits_non_zero(capsys):
    from formers.core.domain import Domain

    empty = Domain(name="nomodels", description="formers-nomodels: nothing yet.", predictor=None)
    for args in (["fit", "--config", str(TINY)], ["test"], ["predict", "--ckpt", "x.ckpt", "in.txt"]):
        with pytest.raises(SystemExit) as exit_info:
            empty.main(args)
        message = exit_info.value.code  # a message: printed to stderr, exit status 1
        assert isinstance(message, str) and "formers-nomodels: the nomodels domain registers no models" in message
    with pytest.raises(SystemExit) as exit_info:  # a subcommand's --help still works: it builds nothing
        empty.main(["fit", "--help"])
    assert exit_info.value.code == 0 and "--trainer.max_epochs" in capsys.readouterr().out


def test_top_level_help_comes_from_the_declaration(capsys):
    from formers.core.domain import Domain

    domain = Domain(name="toy", description="formers-toy: sums.", task_class="formers.core.tasks.RegressionTask")
    with pytest.raises(SystemExit) as exit_info:
        domain.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: formers-toy {fit,validate,test} ")
    assert "formers-toy: sums." in out and "formers-toy <subcommand> --help" in out
    with pytest.raises(SystemExit) as exit_info:  # no subcommand: usage on stderr, argparse's status
        domain.main([])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("usage: formers-toy")


def test_task_and_data_classes_may_be_dotted_paths(tmp_path, monkeypatch):
    from formers.core.data import SyntheticSequenceDataModule
    from formers.core.domain import Domain, resolve_class

    monkeypatch.setattr(sys, "argv", ["formers-core"])
    assert resolve_class("formers.core.tasks.ClassificationTask") is ClassificationTask
    assert resolve_class(Task) is Task and resolve_class(None) is None
    domain = Domain(
        name="core",
        description="d",
        task_class="formers.core.tasks.ClassificationTask",
        data_class="formers.core.data.SyntheticSequenceDataModule",
    )
    cli = domain.cli(["--config", str(TINY), "--run_dir", str(tmp_path)], run=False)
    assert isinstance(cli.model, ClassificationTask) and isinstance(cli.datamodule, SyntheticSequenceDataModule)


# ------------------------------------------------------------------------------------------ a throwaway domain

TOY_FILES = {
    "formers/toy/__init__.py": '"""A throwaway domain built from its declaration alone."""\n',
    # 1. the model: one file per family, registered in the core registry
    "formers/toy/models.py": """
        import torch
        from torch import nn
        from formers.core.registry import register_model

        class SumNet(nn.Module):
            def __init__(self, in_features: int, hidden: int = 16) -> None:
                super().__init__()
                self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 1))

            def forward(self, x):
                return self.net(x).squeeze(-1)

        @register_model(domain="toy")
        def toy_sumnet(**kwargs):
            return SumNet(**kwargs)
        """,
    # 2. the data: build_splits + model_sizes; batches are dicts (not (inputs, target) pairs)
    "formers/toy/data.py": """
        import torch
        from torch.utils.data import Dataset
        from formers.core.data import SplitDataModule

        class Points(Dataset):
            def __init__(self, x):
                self.x = x
            def __len__(self):
                return len(self.x)
            def __getitem__(self, i):
                return {"x": self.x[i], "y": self.x[i].sum()}

        class SumData(SplitDataModule):
            def __init__(self, features: int = 4, samples: int = 256, batch_size: int = 32, seed: int = 0):
                super().__init__(batch_size=batch_size)
                self.features, self.samples, self.seed = features, samples, seed

            def model_sizes(self):
                return {"in_features": self.features}

            def build_splits(self):
                gen = torch.Generator().manual_seed(self.seed)
                x = torch.randn(self.samples + 128, self.features, generator=gen)
                return {"train": Points(x[: self.samples]), "val": Points(x[self.samples : self.samples + 64]),
                        "test": Points(x[self.samples + 64 :])}

            def state_dict(self):
                return {"features": self.features}
        """,
    # 3. the task: only what differs from the base (the batch layout)
    "formers/toy/task.py": """
        from formers.core.tasks import RegressionTask

        class SumTask(RegressionTask):
            def unpack(self, batch):
                return batch["x"], batch["y"]
        """,
    # 4. the declaration, with its predictor
    "formers/toy/domain.py": """
        import torch
        from formers.core.domain import Domain
        from formers.core.predict import Predictor, check_finite
        from formers.toy import models  # noqa: F401  (registers the model)
        from formers.toy.data import SumData
        from formers.toy.task import SumTask

        class SumPredictor(Predictor):
            def predict(self, run, inputs, options):
                rows = []
                for path in inputs:
                    values = [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line]
                    out = run.task(torch.tensor(values))
                    check_finite(out, "sums", source=path)
                    rows += [f"{v:.3f}" for v in out.tolist()]
                return "\\n".join(rows)

        DOMAIN = Domain(name="toy", description="formers-toy: sums.", task_class=SumTask, data_class=SumData,
                        predictor=SumPredictor())
        main = DOMAIN.main
        """,
}

TOY_CONFIG = {
    "run_dir": "runs/toy",
    "seed_everything": 0,
    "trainer": {"max_epochs": 8, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False},
    "model": {"class_path": "formers.toy.task.SumTask", "init_args": {"model": "toy_sumnet"}},
    "data": {"class_path": "formers.toy.data.SumData", "init_args": {"features": 3}},
    "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
}


@pytest.mark.slow
def test_a_new_domain_from_its_declaration_alone(tmp_path):
    for name, text in TOY_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(TOY_CONFIG))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}

    def toy(*args: str) -> subprocess.CompletedProcess:
        code = "import sys; from formers.toy.domain import main; main(sys.argv[1:])"
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    fit = toy("fit", "--config", "toy.yaml")
    assert fit.returncode == 0, fit.stderr[-4000:]
    run = tmp_path / "runs" / "toy"
    metrics = yaml.safe_load((run / "metrics.json").read_text())
    assert metrics["val"]["loss"] == metrics["val"]["mse"] < 1.0  # the sum of 3 N(0, 1) has variance 3
    hparams = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["data_sizes"] == {"in_features": 3}  # linked from the data, never written in the YAML

    (tmp_path / "points.txt").write_text("1 2 3\n0.5 -0.5 0\n")
    pred = toy("predict", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "points.txt")
    assert pred.returncode == 0, pred.stderr[-4000:]
    values = [float(v) for v in pred.stdout.split()]
    assert abs(values[0] - 6) < 1.5 and abs(values[1]) < 1.0  # it learnt to sum
    same = toy("predict", "--config", "toy.yaml", "points.txt")  # --config: its run_dir's best.ckpt and model section
    assert same.returncode == 0 and same.stdout == pred.stdout, same.stderr[-4000:]
    clobber = toy("predict", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "points.txt", "--out", "points.txt")
    assert clobber.returncode == 1 and "is the input" in clobber.stderr
    assert (tmp_path / "points.txt").read_text() == "1 2 3\n0.5 -0.5 0\n"


def test_attention_backend_from_the_command_line_reaches_every_attention_module(tmp_path, monkeypatch):
    from formers.core.attention import attention_modules
    from formers.core.cli import FormersCLI

    monkeypatch.setattr(sys, "argv", ["formers-core"])
    args = ["--config", str(TINY), "--run_dir", str(tmp_path), "--model.attention_backend", "reference"]
    cli = FormersCLI(args=args, run=False)
    modules = attention_modules(cli.model.model)
    assert modules and {module.backend for _, module in modules} == {"reference"}
    with pytest.raises(ValueError, match="no_such_backend"):
        FormersCLI(args=[*args[:-1], "no_such_backend"], run=False)

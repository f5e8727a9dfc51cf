"""A domain declaration: what makes ``formers-<domain>`` a full command line, in one place.

A domain (vision, timeseries, graph, ...) states its name, description, the base classes its configs may choose
(task and data module), its default run folder and how it predicts; everything else is shared::

    # formers/<domain>/domain.py
    DOMAIN = Domain(
        name="graph",
        description="formers-graph: graph transformers (Graph Transformer, Graphormer).",
        task_class=GraphTask,
        data_class=GraphDataModule,
        predictor=GraphPredictor(),
    )

    # packages/<domain>/pyproject.toml
    [project.scripts]
    formers-graph = "formers.graph.domain:DOMAIN.main"

``DOMAIN.main`` runs ``fit`` / ``validate`` / ``test`` through :class:`formers.core.cli.FormersCLI` and ``predict``
through :func:`formers.core.predict.predict_main`, which has the same flags in every domain (``--ckpt``, inputs,
``--out``, ``--config``). :func:`load_trained` rebuilds the task and the data state from any formers checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# Nothing heavy at import: a script's ``--help`` and the no-models check start without torch or Lightning (and the
# torchmetrics, torchvision, scipy... Lightning imports); the CLI, tasks and checkpoint code load when a run needs them.
if TYPE_CHECKING:
    import torch
    from lightning.pytorch import LightningDataModule

    from formers.core.checkpoint_io import CheckpointError
    from formers.core.cli import ArgsType, FormersCLI
    from formers.core.predict import Predictor
    from formers.core.tasks import Task

__all__ = ["Domain", "TrainedRun", "load_trained", "resolve_task_class", "resolve_class", "CheckpointError"]

_SUBCOMMANDS = {
    "fit": "train (and validate every epoch); --ckpt_path last resumes a killed run",
    "validate": "one evaluation pass over the validation set",
    "test": "one evaluation pass over the test set",
    "predict": "predict with a trained checkpoint (--ckpt) on input files",
}


def __getattr__(name: str) -> Any:
    if name == "CheckpointError":  # re-exported lazily: formers.core.checkpoint_io imports torch
        from formers.core.checkpoint_io import CheckpointError

        return CheckpointError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_class(ref: type | str | None) -> Any:
    """A class given as itself or as its dotted path (``"formers.graph.data.GraphDataModule"``), imported on use."""
    if ref is None or isinstance(ref, type):
        return ref
    module, _, name = ref.replace(":", ".").rpartition(".")
    return getattr(import_module(module), name)


# Top-level keys Lightning writes into every checkpoint: anything else that is a mapping is a data module's state.
_LIGHTNING_KEYS = {
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "legacy_pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
    "hparams_name",
    "hyper_parameters",
    "datamodule_hparams_name",
    "datamodule_hyper_parameters",
}


@dataclass(frozen=True)
class Domain:
    """The declaration of a formers domain; ``main`` is its ``formers-<name>`` script.

    Args:
        name: the domain's name (``vision``): script ``formers-<name>``, default run folder ``runs/<name>``.
        description: the first line of ``--help``.
        task_class: base class of the tasks its configs may choose (``model.class_path``), or its dotted path: a
            path is imported only when a subcommand runs, so ``--help`` stays fast.
        data_class: base class of its data modules (``data.class_path``; a class or dotted path); ``None`` allows
            any LightningDataModule.
        predictor: how ``formers-<name> predict`` turns inputs into outputs (``None``: the domain has no predict).
        run_dir: default ``--run_dir`` (``runs/<name>``).
        monitor, monitor_mode: the metric that picks ``best.ckpt``.

    A domain that registers no models (:func:`formers.core.registry.list_models` with ``domain=name``) has nothing
    to train: its subcommands say so and exit with status 1 instead of training another domain's model.
    """

    name: str
    description: str
    task_class: type[Task] | str = "formers.core.tasks.Task"
    data_class: type[LightningDataModule] | str | None = None
    predictor: Predictor | None = None
    run_dir: str | None = None
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    cli_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def script(self) -> str:
        return f"formers-{self.name}"

    def cli(self, args: ArgsType = None, *, run: bool = True, **kwargs: Any) -> FormersCLI:
        """The domain's :class:`FormersCLI` (``run=False``: parse and instantiate only)."""
        from formers.core.cli import FormersCLI

        return FormersCLI(
            resolve_class(self.task_class),
            resolve_class(self.data_class),
            description=self.description,
            run_dir=self.run_dir or f"runs/{self.name}",
            monitor=self.monitor,
            monitor_mode=self.monitor_mode,
            args=args,
            run=run,
            **{**self.cli_kwargs, **kwargs},
        )

    def main(self, args: ArgsType = None) -> None:
        """Entry point of ``formers-<name>``: ``predict`` is the shared predict command, the rest LightningCLI.

        ``--help`` (or no arguments) before a subcommand is answered from this declaration, without building the
        Lightning parser (seconds of imports); ``<subcommand> --help`` shows that subcommand's full options.
        """
        argv = sys.argv[1:] if args is None else args
        words = list(argv) if isinstance(argv, (list, tuple)) else None  # None: arguments given as a dict/Namespace
        if words is not None and (not words or words[0] in ("-h", "--help")):
            print(self.help(), file=sys.stdout if words else sys.stderr)
            raise SystemExit(0 if words else 2)
        if words is None or not {"-h", "--help"} & set(words):
            self.require_models()  # a run builds a model anyway; a subcommand's --help needs none
        if words and words[0] == "predict":
            from formers.core.predict import predict_main  # the predict path needs no Lightning CLI machinery

            raise SystemExit(predict_main(self, words[1:]))
        self.cli(args)

    def help(self) -> str:
        """The script's top-level help: its subcommands and where their options are listed."""
        commands = [c for c in _SUBCOMMANDS if c != "predict" or self.predictor is not None]
        rows = "\n".join(f"  {c:<10} {_SUBCOMMANDS[c]}" for c in commands)
        return (
            f"usage: {self.script} {{{','.join(commands)}}} [--config CONFIG] [options]\n\n{self.description}\n\n"
            f"subcommands:\n{rows}\n\n"
            f"'{self.script} <subcommand> --help' lists a subcommand's options (Lightning's Trainer, the task, the "
            f"data module, optimizer, run_dir); '{self.script} fit --config CONFIG --print_config' shows a resolved "
            "config."
        )

    def require_models(self) -> None:
        """Exit with a one-line message (status 1) when no installed package registers a model for this domain."""
        from formers.core.registry import list_models

        if not list_models(domain=self.name):
            raise SystemExit(
                f"{self.script}: the {self.name} domain registers no models yet, so there is nothing to train, "
                "evaluate or predict with; see formers.core.registry.list_models() for the installed models"
            )


@dataclass
class TrainedRun:
    """A task rebuilt from a checkpoint (eval mode) with its data module's state and hyper-parameters."""

    task: Task
    data_state: dict[str, Any]
    hparams: dict[str, Any]
    path: Path

    @property
    def model(self) -> Any:
        """The trained network (``task.model``); ``formers.core.hub.save_pretrained(run.model, dir)`` shares it."""
        return self.task.model


def resolve_task_class(class_path: str | None, base: type[Task] | str, source: str | Path) -> type[Task]:
    """The task class a checkpoint or config names, allowed only from formers' own modules and below ``base``.

    A checkpoint is data: it may not make the CLI import an arbitrary module, so the module must be a formers one
    and the class a subclass of the domain's task class.
    """
    from formers.core.checkpoint_io import CheckpointError

    base = resolve_class(base)
    if not class_path:
        return base
    module, _, name = class_path.rpartition(".")
    if not module.startswith("formers."):
        raise CheckpointError(
            f"{source}: task class {class_path!r} is not a formers class; only formers tasks are loaded"
        )
    try:
        cls = getattr(import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{source}: task class {class_path!r} cannot be found: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise CheckpointError(f"{source}: {class_path!r} is not a {base.__module__}.{base.__qualname__}")
    return cls


def data_state_of(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The data module's ``state_dict()`` Lightning stored in a checkpoint (empty when it stored none)."""
    class_path = (ckpt.get("datamodule_hyper_parameters") or {}).get("_class_path")
    if class_path and isinstance(ckpt.get(class_path.rpartition(".")[2]), Mapping):
        return dict(ckpt[class_path.rpartition(".")[2]])
    states = [value for key, value in ckpt.items() if key not in _LIGHTNING_KEYS and isinstance(value, Mapping)]
    return dict(states[0]) if len(states) == 1 else {}


def load_trained(
    checkpoint: str | Path,
    *,
    task_class: type[Task] | str = "formers.core.tasks.Task",
    model_config: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> TrainedRun:
    """Rebuild the task (eval mode, weights loaded) and the data state from a formers checkpoint.

    Args:
        checkpoint: ``best.ckpt`` / ``last.ckpt`` of a ``formers-<domain> fit`` run.
        task_class: the domain's task base class (the checkpoint's task must be a formers subclass of it).
        model_config: a config's ``model`` section (``class_path`` + ``init_args``) that replaces the checkpoint's
            hyper-parameters (``predict --config``); the checkpoint then only supplies the weights.
        map_location: where the weights go.

    Raises:
        CheckpointError: unreadable file, a task class from outside formers, or weights that do not fit the task.
    """
    from formers.core.checkpoint_io import CheckpointError, checkpoint_model_mismatch, load_checkpoint_file

    path = Path(checkpoint)
    ckpt = load_checkpoint_file(path, map_location=map_location)
    if "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning training checkpoint (no state_dict)")
    stored = dict(ckpt.get("hyper_parameters") or {})
    if model_config is not None:
        class_path = model_config.get("class_path")
        hparams = dict(model_config.get("init_args") or {})
        source: str | Path = "the config's model section"
    else:
        class_path = stored.get("_class_path")
        hparams = {k: v for k, v in stored.items() if not k.startswith("_")}
        source = path
    if "model" not in hparams:
        raise CheckpointError(f"{source}: no model name in the task's hyper-parameters (is it a formers run?)")
    mismatch = checkpoint_model_mismatch(ckpt, hparams, path)
    if mismatch:  # before building: a model the weights were not trained for is never built
        raise CheckpointError(mismatch)
    cls = resolve_task_class(class_path, task_class, source)
    hparams.setdefault("data_sizes", stored.get("data_sizes"))
    task = cls(**hparams)
    missing, unexpected = task.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the weights do not fit the task built from {source} (missing keys: {list(missing)[:5]}, "
            f"unexpected keys: {list(unexpected)[:5]})"
        )
    return TrainedRun(task.eval(), data_state_of(ckpt), hparams, path)

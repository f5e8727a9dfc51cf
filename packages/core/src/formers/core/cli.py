"""The formers command line: one :class:`~lightning.pytorch.cli.LightningCLI` that every domain's script builds on.

Every domain's script (``formers-core``, ``formers-vision``, ``formers-timeseries``, ...) is this CLI, generated from
the domain's declaration (:class:`formers.core.domain.Domain`), plus the one ``predict`` subcommand of
:mod:`formers.core.predict`. Usage::

    formers-core fit --config pipelines/core/tiny.yaml                     # train
    formers-core fit --config pipelines/core/tiny.yaml --ckpt_path last    # resume a killed run (or start fresh)
    formers-core fit --config pipelines/core/tiny.yaml --run_dir runs/x --trainer.max_epochs 5 --optimizer SGD
    formers-core test --config pipelines/core/tiny.yaml --ckpt_path runs/core/tiny/checkpoints/best.ckpt
    formers-core fit --config pipelines/core/tiny.yaml --trainer.strategy ddp --trainer.devices 2 \\
        --trainer.accelerator cpu                                         # 2 CPU processes (gloo)
    formers-core fit --config pipelines/core/tiny.yaml --print_config     # the fully resolved config

What :class:`FormersCLI` adds to a plain ``LightningCLI`` (every default can be replaced from YAML or the command line):

* ``run_dir``: the one output folder of a run (a DVC stage declares it as its ``outs``). Strings in the config are
  resolved before instantiation: ``${run_dir}`` becomes the run dir and ``${log_dir}`` the folder of this
  subcommand's logs, which is the run dir for ``fit`` and ``<run_dir>/<subcommand>`` for ``validate``, ``test`` and
  ``predict`` (so evaluating a trained run never overwrites its training logs). With the defaults::

      <run_dir>/config.yaml                 resolved config (SaveConfigCallback, overwritten on re-runs)
      <run_dir>/metrics.csv, hparams.yaml   ResumableCSVLogger, first logger, so trainer.log_dir == ${log_dir}
      <run_dir>/dvclive/                    ResumableDVCLiveLogger (dvcyaml: null, save_dvc_exp: false: DVC-stage safe)
      <run_dir>/machine.json                MachineInfo: CPU kind, threads, versions, GPU, precision of the run
      <run_dir>/checkpoints/last.ckpt       ModelCheckpoint after every epoch: what ``--ckpt_path last`` resumes
      <run_dir>/checkpoints/best.ckpt       ModelCheckpoint, best by ``val/loss`` (min)
      <run_dir>/metrics.json                MetricsJSON: final metrics for ``dvc metrics`` (``fit`` writes it,
                                            ``validate``/``test`` merge theirs in; layout: callbacks.MetricsJSON)
      <run_dir>/test/{config.yaml,metrics.csv,dvclive/}   logs of ``formers-core test`` in the same run dir

  ``trainer.default_root_dir`` defaults to ``${run_dir}`` too. ``--print_config`` shows the placeholders,
  ``<run_dir>/config.yaml`` the resolved paths. A YAML that replaces ``trainer.logger`` or
  ``trainer.callbacks`` may use both placeholders in its own paths (in config files only: in a ``dvc.yaml`` command
  line DVC would try to fill ``${...}`` itself).
* ``trainer.precision: auto`` (:class:`FormersTrainer`, the default): ``bf16-mixed`` where bf16 is native (a GPU with
  bf16 arithmetic, a CPU with AVX512-BF16 / AMX in use), ``32-true`` elsewhere, e.g. on an AVX2-only CPU, where
  bf16 is emulated and a training step 12-30x slower (:mod:`formers.core.precision`). One info line says what auto
  chose and why; ``machine.json`` records it. An explicit ``bf16-mixed`` runs as asked, with a warning where it is
  emulated.
* ``seed_everything: 42``, ``LearningRateMonitor``; progress: Lightning's bar (rich or TQDM) when standard output is
  a terminal, otherwise :class:`~formers.core.callbacks.LineProgressBar`, one line per epoch (``epoch 3/20  step 150
  train/loss 0.41  val/loss 0.40 ... 12.3 s``) and one per ``validate``/``test`` run, so DVC stage and CI logs show
  progress. ``--trainer.enable_progress_bar false`` turns both off; a progress bar in ``trainer.callbacks`` replaces
  them.
* ``optimizer:`` defaults to ``AdamW(lr=1e-3, weight_decay=0.01)`` when a config names none; a config that names one
  gets exactly its own arguments and that class's defaults (nothing carried over from AdamW). ``lr_scheduler:`` is
  empty by default. Lightning turns them into the model's ``configure_optimizers``; formers tasks define none, so the
  YAML is never shadowed.
* ``filter_bias_and_bn: true``: the optimizer gets weight-decay parameter groups (:mod:`formers.core.optim`).
* ``model.init_args.data_sizes`` is linked from the data module's ``model_sizes()`` (sizes written once).
* Checkpoints are loaded with ``weights_only=True`` (no pickled code runs) unless ``--weights_only false`` is given,
  written atomically next to their target (``AtomicCheckpointIO``) once the steps they cover are logged
  (``CheckpointAfterLogs``), and carry the RNG states (``RNGStateCheckpoint``):
  ``--ckpt_path last`` continues exactly where the uninterrupted run would be, and both loggers keep their history
  without repeating the steps the killed run logged after its checkpoint (:mod:`formers.core.loggers`). A checkpoint's
  hyper-parameters never override the config; one trained for another model is refused in one sentence.
* Every run also gets :class:`~formers.core.callbacks.NonFiniteGuard` (a NaN/inf loss stops the run naming the step;
  a non-finite monitored metric never becomes ``best.ckpt``) and :class:`~formers.core.callbacks.RunDirTransaction`
  (a run that fails before training starts leaves the previous run's logs and ``config.yaml`` as they were).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import partial, update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, instantiate_class
from lightning.pytorch.utilities import rank_zero_info
from torch.optim import Optimizer

from formers.core.callbacks import (
    CheckpointAfterLogs,
    MachineInfo,
    NonFiniteGuard,
    RNGStateCheckpoint,
    RunDirTransaction,
    default_progress_bar,
)
from formers.core.checkpoint_io import checkpoint_model_mismatch, load_checkpoint_file
from formers.core.data.base import data_sizes_of
from formers.core.domain import resolve_class
from formers.core.optim import fused_by_default, optimizer_parameters
from formers.core.precision import explain_precision, resolve_precision
from formers.core.tasks import Task

__all__ = [
    "FormersCLI",
    "FormersTrainer",
    "ArgsType",
    "RUN_DIR",
    "LOG_DIR",
    "default_loggers",
    "default_callbacks",
    "DEFAULT_OPTIMIZER",
    "data_sizes_of",
]

RUN_DIR = "${run_dir}"
LOG_DIR = "${log_dir}"
# Filled in only when a config names no optimizer: as a parser default its init_args would be carried over by
# jsonargparse into whatever optimizer a config picks (Adam silently got AdamW's weight_decay=0.01).
DEFAULT_OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.01}}
_CSV = "formers.core.loggers.ResumableCSVLogger"
_DVCLIVE = "formers.core.loggers.ResumableDVCLiveLogger"
_ATOMIC_IO = "formers.core.checkpoint_io.AtomicCheckpointIO"


def default_loggers() -> list[dict[str, Any]]:
    """CSVLogger first (``trainer.log_dir`` comes from ``loggers[0]``), then DVCLive, both at fixed paths; DVCLive only
    where the training extra (``formers-core[train]``) is installed: a model-only install still trains, CSV-logged."""
    loggers = [{"class_path": _CSV, "init_args": {"save_dir": LOG_DIR, "name": "", "version": ""}}]
    if dvclive_installed():
        dvclive_args = {"dir": f"{LOG_DIR}/dvclive", "dvcyaml": None, "save_dvc_exp": False, "report": None}
        loggers.append({"class_path": _DVCLIVE, "init_args": dvclive_args})
    return loggers


def dvclive_installed() -> bool:
    return importlib.util.find_spec("dvclive") is not None


def default_callbacks(monitor: str = "val/loss", mode: Literal["min", "max"] = "min") -> list[dict[str, Any]]:
    """``best.ckpt`` by ``monitor``, ``last.ckpt`` after every epoch, LearningRateMonitor and MetricsJSON.

    ``last.ckpt`` has its own ModelCheckpoint (no monitor, one file): with Lightning 2.6 ``save_last=True`` rewrites
    ``last.ckpt`` only when a top-k checkpoint is saved in the same step, so next to ``save_top_k=1`` it would be a
    stale copy of the best model and ``--ckpt_path last`` would resume from the wrong epoch. Both use fixed names
    (``enable_version_counter: false``), so re-runs overwrite them instead of writing ``best-v1.ckpt``.
    """
    checkpoint = "lightning.pytorch.callbacks.ModelCheckpoint"
    fixed = {"dirpath": f"{RUN_DIR}/checkpoints", "save_top_k": 1, "enable_version_counter": False}
    return [
        {"class_path": checkpoint, "init_args": {**fixed, "filename": "best", "monitor": monitor, "mode": mode}},
        {"class_path": checkpoint, "init_args": {**fixed, "filename": "last"}},
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
        {"class_path": "formers.core.callbacks.MetricsJSON", "init_args": {"path": f"{RUN_DIR}/metrics.json"}},
    ]


class FormersTrainer(Trainer):
    """Lightning's Trainer whose ``precision`` also takes ``"auto"``, its default: ``"bf16-mixed"`` where bf16 is
    native (a CUDA GPU with bf16 arithmetic, a CPU with AVX512-BF16 / AMX in use), ``"32-true"`` elsewhere
    (:func:`formers.core.precision.resolve_precision`). Resolved before Lightning sees it, with one info line saying
    what auto chose and why; an explicit bf16 request on a CPU that emulates bf16 warns once. ``requested_precision``
    keeps what the config asked for, ``precision`` is what runs (both go to ``machine.json``).

    Args:
        precision: ``"auto"`` (``bf16-mixed`` where bf16 is native, else ``32-true``) or any Lightning precision.
        **kwargs: the other ``Trainer`` arguments.
    """

    def __init__(self, *, precision: _PRECISION_INPUT | Literal["auto"] | None = "auto", **kwargs: Any) -> None:
        accelerator = kwargs.get("accelerator", "auto")
        if precision == "auto":
            resolved, why = explain_precision(accelerator)
            rank_zero_info(f"precision auto -> {resolved}: {why}")
        else:
            resolved = resolve_precision(precision, accelerator)  # warns on emulated bf16
        super().__init__(precision=resolved, **kwargs)
        self.requested_precision = precision


class FormersCLI(LightningCLI):
    """LightningCLI with the formers run layout, loggers, callbacks and optimizer defaults (see the module docstring).

    Model and data are chosen in the config by ``class_path`` (subclass mode): any formers
    :class:`~formers.core.tasks.Task` and any ``LightningDataModule`` unless a domain narrows them with
    ``model_class`` / ``datamodule_class``. The data module's ``model_sizes()`` are linked to the task's
    ``data_sizes`` when both are instantiated, so sizes the data determines are never written twice.

    Args:
        model_class: base class of the selectable tasks (default: every formers Task).
        datamodule_class: base class of the selectable data modules; ``None`` allows any LightningDataModule.
        description: text at the top of ``--help``.
        default_config_files: config files read before ``--config`` for every subcommand (missing files are skipped).
        run_dir: default of the ``--run_dir`` option.
        monitor: metric for ``best.ckpt``.
        monitor_mode: ``"min"`` or ``"max"`` for ``monitor``.
        args: arguments to parse instead of ``sys.argv[1:]`` (list, dict or Namespace).
        run: run the subcommand (``False``: only parse and instantiate, for tests and notebooks).
        trainer_defaults: overrides of the trainer defaults; a ``callbacks`` entry here is appended to every run and
            not configurable (Lightning semantics), use the config's ``trainer.callbacks`` for configurable ones.
        **kwargs: other ``LightningCLI`` arguments (``parser_kwargs``, ``save_config_kwargs``, ...).
    """

    def __init__(
        self,
        model_class: Any = Task,
        datamodule_class: Any = None,
        *,
        description: str | None = None,
        default_config_files: Sequence[str] | None = None,
        run_dir: str = "runs",
        monitor: str = "val/loss",
        monitor_mode: Literal["min", "max"] = "min",
        args: ArgsType = None,
        run: bool = True,
        trainer_defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.default_run_dir = run_dir
        self.monitor, self.monitor_mode = monitor, monitor_mode
        kwargs["parser_kwargs"] = self._formers_parser_kwargs(
            description, default_config_files, kwargs.get("parser_kwargs")
        )
        kwargs["save_config_kwargs"] = {"overwrite": True, **(kwargs.get("save_config_kwargs") or {})}
        kwargs.setdefault("seed_everything_default", 42)
        kwargs.setdefault("trainer_class", FormersTrainer)  # trainer.precision: auto (bf16 only where native)
        super().__init__(
            model_class,
            datamodule_class,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults={
                "default_root_dir": RUN_DIR,
                "logger": default_loggers(),
                "plugins": [{"class_path": _ATOMIC_IO}],
                **(trainer_defaults or {}),
            },
            args=args,
            run=run,
            **kwargs,
        )

    def _formers_parser_kwargs(
        self, description: str | None, default_config_files: Sequence[str] | None, parser_kwargs: dict | None
    ) -> dict[str, Any]:
        parser_kwargs = dict(parser_kwargs or {})
        if description is not None:
            parser_kwargs.setdefault("description", description)
        if default_config_files:
            for subcommand in self.subcommands():
                sub_kwargs = parser_kwargs.setdefault(subcommand, {})
                sub_kwargs.setdefault("default_config_files", list(default_config_files))
        return parser_kwargs

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str,
            default=self.default_run_dir,
            help="Output folder of the run: logs, checkpoints, config.yaml and metrics.json. ${run_dir} in config "
            "strings becomes this folder, ${log_dir} the folder of this subcommand's logs (run_dir for fit, "
            "run_dir/<subcommand> otherwise).",
        )
        parser.add_argument(
            "--filter_bias_and_bn",
            type=bool,
            default=True,
            help="Exclude biases, norm weights and each model's no_weight_decay() names from weight decay "
            "(formers.core.optim.param_groups_weight_decay, as timm and the papers' recipes).",
        )
        parser.set_defaults({"trainer.callbacks": default_callbacks(self.monitor, self.monitor_mode)})
        # added here (not by LightningCLI after this hook); no parser default, see DEFAULT_OPTIMIZER
        parser.add_optimizer_args((Optimizer,))
        # sizes the data determines (num_classes, enc_in, ...) reach the task once the data module exists
        parser.link_arguments("data", "model.init_args.data_sizes", compute_fn=data_sizes_of, apply_on="instantiate")

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """LightningCLI's automatic ``configure_optimizers``, with the weight-decay parameter groups of
        :func:`formers.core.optim.optimizer_parameters` instead of the flat parameter list, and torch's fused
        kernel where the optimizer has one and the config chose no implementation (:func:`~formers.core.optim.
        fused_by_default`)."""
        optimizer_init = self._get(self.config_init, "optimizer")
        if not optimizer_init:
            return
        scheduler_init = self._get(self.config_init, "lr_scheduler")
        optimizer_class = resolve_class(optimizer_init["class_path"])
        init_args = dict(optimizer_init.get("init_args") or {})
        params = optimizer_parameters(
            self.model,
            optimizer_class,
            init_args,
            filter_bias_and_bn=self._get(self.config_init, "filter_bias_and_bn", True),
        )
        init_args = fused_by_default(optimizer_class, init_args, self.model.parameters())
        optimizer = instantiate_class(params, {"class_path": optimizer_init["class_path"], "init_args": init_args})
        lr_scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
        fn = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=lr_scheduler)
        update_wrapper(fn, self.configure_optimizers)  # Lightning's is_overridden() looks at the wrapped function
        self.model.configure_optimizers = MethodType(fn, self.model)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        log_dir = config.run_dir if self.subcommand in (None, "fit") else f"{config.run_dir}/{self.subcommand}"
        _resolve_placeholders(config, {LOG_DIR: log_dir, RUN_DIR: config.run_dir})
        if "optimizer" in config and config.optimizer is None:
            config.optimizer = Namespace(
                class_path=DEFAULT_OPTIMIZER["class_path"], init_args=Namespace(**DEFAULT_OPTIMIZER["init_args"])
            )
        if "weights_only" in config and config.weights_only is None:
            config.weights_only = True
        if self.subcommand == "fit" and config.get("ckpt_path"):
            _resume_loggers(config)
        self._log_dir = log_dir

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Every run gets the safety callbacks a config's callback list cannot drop by restating the defaults:
        exact resume (RNG states in checkpoints, published after their steps are logged), the non-finite guard and
        the run-dir transaction."""
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        present = {type(c) for c in configured}
        # MachineInfo after the transaction, which commits first: a run that fails to start keeps the old record
        safety = [
            RNGStateCheckpoint(),
            CheckpointAfterLogs(),
            NonFiniteGuard(),
            RunDirTransaction(self._log_dir),
            MachineInfo(),
        ]
        extra = [*callbacks, *(c for c in safety if type(c) not in present)]
        # one line per epoch when the output is a log, not a terminal; a bar the config names, or
        # trainer.enable_progress_bar: false, wins
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in [*configured, *extra]
        ):
            extra += [bar] if (bar := default_progress_bar()) is not None else []
        if not dvclive_installed():
            rank_zero_info("DVCLive logging off (CSV only): pip install 'formers-core[train]' for DVC tracking")
        return super()._instantiate_trainer(config, extra)

    def _before_run(self) -> None:
        """Before any subcommand touches the run dir: refuse a checkpoint that does not fit the model, then snapshot
        the previous run's logs (Lightning creates the loggers inside ``fit``, before any callback hook runs); the
        transaction restores them if the new run fails before it starts."""
        self._check_checkpoint_fits()
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunDirTransaction):
                callback.begin()

    before_fit = before_validate = before_test = before_predict = _before_run

    def _parse_ckpt_path(self) -> None:
        """Lightning merges a checkpoint's hyper-parameters into the config here, so they silently override the YAML
        and the command line, and its ``_class_path`` makes the CLI import any module. formers keeps the config as
        given and only checks, in one sentence, that the checkpoint was trained for the model the config asks for."""
        if not self.config.get("subcommand"):
            return
        config = self.config[self.config.subcommand]
        path = _resolve_ckpt_path(config.get("ckpt_path"), config.get("run_dir"))
        if path is None:
            return
        weights_only = config.get("weights_only")
        checkpoint = load_checkpoint_file(path, weights_only=True if weights_only is None else bool(weights_only))
        model = config.get("model")
        requested = (
            {"model": model.init_args.get("model")} if isinstance(model, Namespace) and model.get("init_args") else {}
        )
        mismatch = checkpoint_model_mismatch(checkpoint, requested, path)
        if mismatch:
            raise ValueError(f"{mismatch}; pass the checkpoint of a {requested['model']!r} run or change the config")
        shapes = {k: tuple(v.shape) for k, v in (checkpoint.get("state_dict") or {}).items() if hasattr(v, "shape")}
        self._checkpoint_shapes = (path, shapes)

    def _check_checkpoint_fits(self) -> None:
        """A checkpoint whose weights do not fit the model the config built is one error naming the file and the
        first differing tensors (Lightning's load_state_dict would fail later with a bare size-mismatch list)."""
        path, shapes = getattr(self, "_checkpoint_shapes", (None, {}))
        if path is None:
            return
        model = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        differing = [
            f"{k}: {shapes[k]} in the checkpoint, {model[k]} in the model"
            for k in model
            if k in shapes and shapes[k] != model[k]
        ]
        missing = sorted(set(model) - set(shapes))
        if differing or missing:
            detail = "; ".join(differing[:3]) or f"missing tensors {missing[:3]}"
            raise ValueError(
                f"checkpoint {path} does not fit the model built from the config ({detail}): give the model settings "
                "it was trained with"
            )


def _resolve_placeholders(node: Any, values: dict[str, str]) -> Any:
    """Replace placeholders in every string of a (nested) config, in place; returns the new value of ``node``."""
    if isinstance(node, str):
        for placeholder, value in values.items():
            node = node.replace(placeholder, value)
        return node
    if isinstance(node, Namespace):
        for key, value in vars(node).items():
            setattr(node, key, _resolve_placeholders(value, values))
    elif isinstance(node, dict):
        for key, value in node.items():
            node[key] = _resolve_placeholders(value, values)
    elif isinstance(node, list):
        node[:] = [_resolve_placeholders(value, values) for value in node]
    return node


def _resume_loggers(config: Namespace) -> None:
    """When ``fit`` resumes, the loggers keep their history and drop only the rows the killed run logged after its
    checkpoint (:mod:`formers.core.loggers`), instead of wiping it (CSVLogger) or repeating steps (DVCLive)."""
    loggers = config.trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and logger.get("class_path") in (_CSV, _DVCLIVE):
            logger.init_args.resume = True


def _resolve_ckpt_path(ckpt_path: str | None, run_dir: str | None) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names (``last`` / ``best``: the run dir's), or ``None`` when none exists."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path)
    if ckpt_path in ("last", "best") and run_dir is not None:
        path = Path(run_dir) / "checkpoints" / f"{ckpt_path}.ckpt"
    return path if path.is_file() or ckpt_path not in ("last", "best", "hpc", "registry") else None

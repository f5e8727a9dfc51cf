"""One save/load format for every formers model: a directory with ``config.json`` and ``model.safetensors``.

::

    from formers.core.hub import save_pretrained, from_pretrained
    save_pretrained(model, "shared/my_pit")          # any model built by create_model / build_model / a CLI run
    model = from_pretrained("shared/my_pit")         # or create_model("shared/my_pit"), any domain's create_model

A model trained with a CLI is shared in two lines: ``save_pretrained(load_trained("runs/x/best.ckpt"), "shared/x")``
(:func:`formers.core.domain.load_trained`), then ``create_model("shared/x")``.

``config.json`` follows timm's ``save_for_hf`` layout: ``architecture`` (the formers registry name), ``model_args``
(the keyword arguments the model was built with), ``num_classes`` / ``num_features`` where the model has them, the
vision models' ``pretrained_cfg``, and a ``formers`` block (format, domain, versions). The weights are a plain
``safetensors`` state dict (no pickle; tied weights are stored once per name). Directories written by timm's
``save_for_hf`` for a formers model (architecture ``formers_<name>``, ``model.safetensors`` or
``pytorch_model.bin``) load too.

formers never downloads: a name that is not a directory is a registered model (``from_pretrained(name)`` is
``build_model(name, pretrained=True)``, which needs a local ``pretrained_cfg["file"]``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formers.core.builder import FORMERS_CONFIG_ATTR, build_model, wrap_features
from formers.core.checkpoint_io import CheckpointError
from formers.core.registry import get_model_entry, resolve_model_name, unknown_model_message
from formers.core.weights import DIRECTORY_WEIGHTS, load_checkpoint, load_into, saved_weights_file

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "save_pretrained",
    "from_pretrained",
    "load_pretrained_dir",
    "pretrained_dir",
    "read_config",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = DIRECTORY_WEIGHTS[0]  # model.safetensors; timm's save_for_hf default pytorch_model.bin loads too
LOCAL_DIR_PREFIX = "local-dir:"
FORMAT_VERSION = 1
_TIMM_PREFIX = "formers_"  # the formers vision models in timm's registry (formers.vision.timm_compat)

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------------------ save


def save_pretrained(model: Any, directory: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` to ``directory`` as ``config.json`` + ``model.safetensors``; returns the directory.

    Args:
        model: a model built by :func:`formers.core.builder.build_model` (any ``create_model``, a CLI run's
            ``task.model``), or a formers task / :class:`~formers.core.domain.TrainedRun` (its model is saved).
        directory: a new or empty directory. A new one is written next to its final place and renamed into it, so
            a crash never leaves half a model under that name.
        overwrite: replace the ``config.json`` / ``model.safetensors`` of a non-empty ``directory`` (each file
            atomically; other files, e.g. a model card, are kept).

    Raises:
        FileExistsError: ``directory`` is a file, or a non-empty directory without ``overwrite=True``.
        ValueError: the model was not built by formers' builder (its registered name is unknown), or it is a
            ``features_only`` wrapper.
        TypeError: a model argument that JSON cannot hold (e.g. a class or a dtype), named.
    """
    model = _unwrap_model(model)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"save_pretrained: {directory} is a file, not a directory")
    non_empty = directory.is_dir() and any(directory.iterdir())
    if non_empty and not overwrite:
        raise FileExistsError(
            f"save_pretrained: {directory} exists and is not empty; pass overwrite=True to replace its "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}, or choose a new directory"
        )
    config = model_config(model)
    tensors = _tensors(model)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if non_empty:  # each of our two files replaced atomically, the user's other files kept
        _write_files(directory, config, tensors, staging=directory)
        return directory
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        _write_files(staging, config, tensors, staging=staging)
        os.chmod(staging, 0o755)  # mkdtemp creates 0700
        os.replace(staging, directory)  # an empty existing directory is replaced too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _unwrap_model(model: Any) -> nn.Module:
    """The network of a model, a task (``.model``) or a :class:`~formers.core.domain.TrainedRun` (``.task.model``)."""
    if hasattr(model, "task") and not isinstance(model, nn.Module):
        model = model.task
    inner = getattr(model, "model", None)
    if not hasattr(model, FORMERS_CONFIG_ATTR) and isinstance(inner, nn.Module):
        if not hasattr(model, "hparams"):  # not a task: a features_only wrapper (its head may be pruned)
            raise ValueError(
                f"save_pretrained: save the model, not its {type(model).__name__} wrapper (features_only); load it "
                "back with features_only=True"
            )
        model = inner
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_pretrained: expected a model, a task or a TrainedRun, got {type(model).__name__}")
    if not hasattr(model, FORMERS_CONFIG_ATTR):
        raise ValueError(
            f"save_pretrained: this {type(model).__name__} was not built by formers' builder, so its registered name "
            "and arguments are unknown; build it with create_model / formers.core.builder.build_model"
        )
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` content of a built model (timm's ``save_for_hf`` keys plus a ``formers`` block)."""
    recorded = getattr(model, FORMERS_CONFIG_ATTR)
    name = recorded["architecture"]
    entry = get_model_entry(name)
    config: dict[str, Any] = {"architecture": name}
    for attr in ("num_classes", "num_features"):
        value = getattr(model, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            config[attr] = value
    args = {k: v for k, v in recorded["model_args"].items() if k not in _PLACEMENT_ARGS}
    config["model_args"] = _json_safe(args, name, "model_args")
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping):  # the vision models' data config; the local file / source are not carried over
        config["pretrained_cfg"] = _json_safe({k: v for k, v in cfg.items() if k not in _MACHINE_KEYS}, name, "cfg")
    config["formers"] = {
        "format": FORMAT_VERSION,
        "domain": entry.domain,
        "version": _version("formers-core"),
        "domain_version": _version(f"formers-{entry.domain}"),
        "torch": torch.__version__,
    }
    return config


_MACHINE_KEYS = frozenset({"file", "source", "state_dict", "hf_hub_id", "url"})
# timm's factory keywords that say where / in which precision a model was built, not what it is (not saved)
_PLACEMENT_ARGS = frozenset({"device", "dtype"})


def _json_safe(value: Any, name: str, where: str) -> Any:
    """``value`` with tuples as lists, checked to be JSON (str / int / float / bool / None, lists, str-keyed dicts)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, name, where) for item in value]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _json_safe(item, name, f"{where}.{key}") for key, item in value.items()}
    raise TypeError(
        f"save_pretrained: {name}: {where} = {value!r:.80} is not JSON data (str, number, bool, None, list, dict); "
        "build the model with plain arguments (e.g. a name instead of a class) to share it"
    )


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as separate contiguous CPU tensors (safetensors refuses shared storage, e.g. tied weights)."""
    tensors = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"save_pretrained: state entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
    return tensors


def _write_files(folder: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], staging: Path) -> None:
    """Write the weights, then the config, each through a temporary file in ``staging`` renamed into ``folder``."""
    from safetensors.torch import save_file  # optional at import time: only saving and loading need it

    def write(target: Path, dump) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=staging)
        os.close(fd)
        try:
            dump(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))


# ------------------------------------------------------------------------------------------------ load


def pretrained_dir(name: Any) -> Path | None:
    """The saved-model directory ``name`` points to, or ``None`` when it is a registry name.

    ``local-dir:<path>`` always means a directory; otherwise a registered name wins over a directory of the same
    name in the working directory, and any other existing directory holding a ``config.json`` is one.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        return None
    if name.startswith(LOCAL_DIR_PREFIX):
        path = Path(name.removeprefix(LOCAL_DIR_PREFIX)).expanduser()
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{name}: no {CONFIG_NAME} in {path} (written by formers.core.hub.save_pretrained)")
        return path
    looks_like_path = os.sep in name or (os.altsep is not None and os.altsep in name) or name.startswith((".", "~"))
    if not looks_like_path and resolve_model_name(name) is not None:
        return None
    path = Path(name).expanduser()
    if (path / CONFIG_NAME).is_file():
        return path
    if looks_like_path and path.is_dir():
        raise FileNotFoundError(f"{path} is a directory without {CONFIG_NAME}: not a model saved by save_pretrained")
    return None


def read_config(directory: PathLike) -> dict[str, Any]:
    """``config.json`` of a saved model, checked to name an architecture."""
    path = Path(directory) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable JSON config ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CheckpointError(f"{path}: no 'architecture' (the registered model name) in the config")
    if not isinstance(config.get("model_args", {}), dict):
        raise CheckpointError(f"{path}: 'model_args' must be a JSON object")
    return config


def load_pretrained_dir(
    directory: PathLike,
    *,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    domain: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the model a saved directory describes and load its weights (what ``build_model(<dir>)`` does).

    ``overrides`` replace saved model arguments; a classifier of another size (``num_classes=``) stays freshly
    initialized, any other weight that no longer fits is an error that names the file.
    """
    directory = Path(directory)
    config = read_config(directory)
    name = _architecture(config["architecture"], directory)
    kwargs = {**_tuples(config.get("model_args", {})), **overrides}
    overlay = {k: _tuples(v) for k, v in (config.get("pretrained_cfg") or {}).items() if k not in _MACHINE_KEYS}
    overlay.update(pretrained_cfg_overlay or {})
    model = build_model(name, domain=domain, pretrained_cfg_overlay=overlay or None, **kwargs)
    weights = saved_weights_file(directory)
    state = load_checkpoint(weights, use_ema=False)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    load_into(model, state, classifier=cfg.get("classifier"), source=str(weights))
    return wrap_features(model, name, features_only, out_indices)  # the weights are the full model's: wrap after


def _architecture(name: str, directory: Path) -> str:
    """The registered name of a config's architecture (timm's ``formers_<name>`` too)."""
    resolved = resolve_model_name(name) or resolve_model_name(name.removeprefix(_TIMM_PREFIX))
    if resolved is None:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {unknown_model_message(name)}")
    return resolved


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (the factories' per-stage arguments are tuples); dicts recursively."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    return value


def from_pretrained(name_or_dir: PathLike, **overrides: Any) -> nn.Module:
    """A saved model (directory or ``local-dir:<path>``), or a registered name with its local pretrained weights.

    ``overrides`` are :func:`formers.core.builder.build_model` arguments: model arguments replacing the saved ones
    (``num_classes=5``: a fresh classifier), ``features_only``, ``out_indices``, ``domain``.
    """
    if pretrained_dir(name_or_dir) is not None:
        return build_model(os.fspath(name_or_dir), **overrides)
    return build_model(os.fspath(name_or_dir), pretrained=True, **overrides)

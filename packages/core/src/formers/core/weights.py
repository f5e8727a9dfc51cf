"""Safe checkpoint reading and strict loading of model weights, for every domain (timm's ``_helpers`` counterpart).

:func:`load_checkpoint` reads a state dict from ``.pth`` / ``.pth.tar`` / ``.pt`` / ``.ckpt`` (``torch.load`` with
``weights_only=True``: no pickled code ever runs) or ``.safetensors`` (``safetensors.torch.load_file``), and unwraps
the usual containers:

* training checkpoints: EMA weights first (``state_dict_ema``, ``model_ema``, as the official T2T-ViT / DeiT-style
  ``.pth.tar`` files hold them), then ``state_dict``, then ``model``;
* wrapper prefixes: ``module.`` (DDP) and ``_orig_mod.`` (torch.compile), and the ``model.`` prefix of a formers
  Lightning checkpoint (the task's ``model`` attribute).

:func:`load_into` applies a registry entry's ``filter_fn`` (foreign key formats, position-table resizing), drops a
classifier whose size differs from the model's (fine-tuning to another ``num_classes``) and loads the rest with
``strict=True``, turning mismatches into a :class:`CheckpointError` that names the file and the keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from formers.core.checkpoint_io import CheckpointError, load_checkpoint_file
from formers.core.registry import FilterFn

__all__ = ["CheckpointError", "load_checkpoint", "load_into", "clean_state_dict", "saved_weights_file"]

EMA_KEYS = ("state_dict_ema", "model_ema")
STATE_KEYS = ("state_dict", "model")
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP, wrapped in either order
DIRECTORY_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # in a saved-model directory, in this order
_LIST_LIMIT = 12  # keys listed in an error message before "... and N more"


def load_checkpoint(path: str | os.PathLike[str], *, use_ema: bool = True) -> dict[str, Tensor]:
    """Read a state dict (name -> tensor) from a checkpoint file, safely.

    Args:
        path: ``.safetensors`` or a ``torch.save`` file (``.pth``, ``.pth.tar``, ``.pt``, ``.ckpt``, ...), or a
            directory saved by :func:`formers.core.hub.save_pretrained` / timm's ``save_for_hf`` (its
            ``model.safetensors``, else ``pytorch_model.bin``).
        use_ema: prefer EMA weights (``state_dict_ema`` / ``model_ema``) when the checkpoint holds them.

    Raises:
        FileNotFoundError: no such file (or a directory without weights).
        CheckpointError: corrupt, truncated or not a state dict (the message names the file).
    """
    path = Path(path)
    if path.is_dir():
        path = saved_weights_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # optional dependency: only .safetensors files need it

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = load_checkpoint_file(path)  # weights_only; names the file for truncated / foreign / pickled files
    except CheckpointError:
        raise
    except ImportError as err:
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package ({err})") from err
    except Exception as err:  # torch / safetensors raise many types for damaged files; all mean the same here
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {err}") from err
    return _unwrap(raw, path, use_ema)


def saved_weights_file(folder: Path) -> Path:
    """The weights file of a saved-model directory (``save_pretrained`` / timm's ``save_for_hf`` names)."""
    for name in DIRECTORY_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"checkpoint directory {folder} holds none of {', '.join(DIRECTORY_WEIGHTS)}")


def _unwrap(raw: Any, path: Path, use_ema: bool) -> dict[str, Tensor]:
    if isinstance(raw, Mapping):
        for key in (EMA_KEYS if use_ema else ()) + STATE_KEYS:
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{path}: no state dict found (got {type(raw).__name__})")
    tensors = {k: v for k, v in raw.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the state dict holds no tensors (keys: {_short(raw)})")
    state = clean_state_dict(tensors)
    if all(k.startswith("model.") for k in state):  # a formers Lightning checkpoint: task.model.<key>
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes (timm's rule)."""
    cleaned = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = next(key.removeprefix(p) for p in WRAPPER_PREFIXES if key.startswith(p))
        cleaned[key] = value
    return cleaned


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    filter_fn: FilterFn | None = None,
    classifier: str | Iterable[str] | None = None,
    source: str = "state dict",
) -> list[str]:
    """Load ``state_dict`` into ``model`` strictly, after the entry's ``filter_fn``.

    Classifier weights (``<classifier>.weight`` / ``.bias`` for each name in ``classifier``, as a ``pretrained_cfg``
    names them) whose shape differs from the model's are dropped, so a checkpoint trained on 1000 classes initializes
    a 10-class model (the new head keeps its fresh initialization). Every other key must match exactly.

    Returns:
        The dropped classifier keys (empty when the checkpoint's head was loaded).

    Raises:
        CheckpointError: missing / unexpected keys or shape mismatches, listed, with ``source`` in the message.
    """
    state = dict(state_dict)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{source}: the checkpoint filter of {type(model).__name__} failed: {err}") from err
    own = model.state_dict()
    dropped = [key for key in _classifier_keys(classifier) if key in state and key in own]
    dropped = [key for key in dropped if state[key].shape != own[key].shape]
    for key in dropped:
        del state[key]
    missing = sorted(set(own) - set(state) - set(dropped))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(state) & set(own)
        if isinstance(state[k], Tensor) and state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not fit {type(model).__name__}:"]
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"{what} ({len(keys)}): {_short(keys)}")
        raise CheckpointError(" ".join(parts))
    model.load_state_dict(state, strict=not dropped)
    return dropped


def _classifier_keys(classifier: str | Iterable[str] | None) -> list[str]:
    names = [classifier] if isinstance(classifier, str) else list(classifier or ())
    return [f"{name}.{leaf}" for name in names for leaf in ("weight", "bias", "fc.weight", "fc.bias")]


def _short(keys: Iterable[str]) -> str:
    keys = list(keys)
    more = f", ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else ""
    return ", ".join(map(str, keys[:_LIST_LIMIT])) + more

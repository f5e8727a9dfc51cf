"""The Lightning plugin of :mod:`formers.core.checkpoint_io`, in its own module so that importing the loaders does not
import Lightning; ``formers.core.checkpoint_io.AtomicCheckpointIO`` is its public name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from formers.core.checkpoint_io import load_checkpoint_file, save_atomic

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes checkpoints atomically next to their target and names the file on load errors.

    Wire it as a Trainer plugin (``Trainer(plugins=[AtomicCheckpointIO()])``); remote paths (``s3://`` ...) keep
    Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only is not False)


AtomicCheckpointIO.__module__ = "formers.core.checkpoint_io"  # the public path that configs and pickles name

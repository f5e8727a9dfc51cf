"""The Lightning plugin of :mod:`formers.core.checkpoint_io`, in its own module so that importing the loaders does not
import Lightning; ``formers.core.checkpoint_io.AtomicCheckpointIO`` is its public name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from formers.core.checkpoint_io import _fsync_dir, load_checkpoint_file, save_atomic

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes checkpoints atomically next to their target and names the file on load errors.

    Wire it as a Trainer plugin (``Trainer(plugins=[AtomicCheckpointIO()])``); remote paths (``s3://`` ...) keep
    Lightning's own writer.

    While held (:meth:`hold`), a checkpoint is written complete to ``.<name>.pending`` beside its target and a removal
    is queued; :meth:`publish` moves them into place, :meth:`discard` drops them. The spine's
    :class:`~formers.core.callbacks.CheckpointAfterLogs` holds the writes during ``fit`` and publishes once the steps
    a checkpoint covers are logged: Lightning saves the epoch-end checkpoint before it logs the epoch's training
    metrics, so a kill in between used to leave a ``last.ckpt`` whose resume never logs them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._held = False
        self._pending: dict[Path, Path] = {}  # target -> its complete, unpublished file
        self._removals: list[Path] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if not self._held:
            save_atomic(checkpoint, path)
            return
        target = Path(path)
        pending = target.with_name(f".{target.name}.pending")
        save_atomic(checkpoint, pending)
        self._pending[target] = pending
        if target in self._removals:
            self._removals.remove(target)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only is not False)

    def remove_checkpoint(self, path: _PATH) -> None:
        target = Path(path)
        if not self._held or "://" in str(path):
            super().remove_checkpoint(path)
        elif target in self._pending:  # saved and dropped (top-k) before it was published
            self._pending.pop(target).unlink(missing_ok=True)
        else:  # an older checkpoint goes only once its replacement is in place
            self._removals.append(target)

    def hold(self) -> None:
        """From now on, keep new checkpoints and removals until :meth:`publish`."""
        self._held = True

    def publish(self) -> None:
        """Move the held checkpoints into place (each an ``os.replace``), then make the queued removals."""
        pending, self._pending = self._pending, {}
        for target, file in pending.items():
            os.replace(file, target)
        for folder in {target.parent for target in pending}:
            _fsync_dir(folder)
        removals, self._removals = self._removals, []
        for target in removals:
            super().remove_checkpoint(target)

    def discard(self) -> None:
        """Drop the held checkpoints and removals: the files in place stay as they were."""
        for file in self._pending.values():
            file.unlink(missing_ok=True)
        self._pending, self._removals = {}, []

    def release(self, publish: bool = True) -> None:
        """Publish (or discard) what is held and write straight to the target again."""
        if publish:
            self.publish()
        else:
            self.discard()
        self._held = False


AtomicCheckpointIO.__module__ = "formers.core.checkpoint_io"  # the public path that configs and pickles name

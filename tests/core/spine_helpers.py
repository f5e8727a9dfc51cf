"""Test helper of the Lightning spine, importable by CLI subprocesses (the tests put this folder on PYTHONPATH).

``--trainer.callbacks+=spine_helpers.StepRecorder --trainer.callbacks.path=FILE`` appends one JSON line
``{"epoch", "global_step"}`` per ``on_train_start``: where a (resumed) run started.
"""

from __future__ import annotations

import json

from lightning.pytorch import Callback, LightningModule, Trainer


class StepRecorder(Callback):
    """Append the loop position at ``on_train_start`` to a JSON-lines file (global rank zero only).

    Args:
        path: the JSON-lines file.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"epoch": trainer.current_epoch, "global_step": trainer.global_step}) + "\n")

"""The contract every registered formers model follows, so one test module can check them all."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from formers.core.layers._checks import check_input

__all__ = ["FormersModel", "check_input"]


class FormersModel(nn.Module):
    """Base class of registered models.

    Besides ``forward``, a model describes its own input and output so that the registry-driven tests
    (``tests/test_models.py``) can exercise any model of any domain without knowing it:

    * :meth:`example_inputs` builds a valid keyword-argument batch for ``forward`` (on the model's device);
    * :meth:`expected_output_shape` states the shape ``forward`` returns for that batch.

    ``forward`` must reject malformed input (wrong rank, wrong dtype) with a ``ValueError`` or ``TypeError`` that
    names the problem, instead of failing deep inside a matmul.
    """

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement example_inputs()")

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        raise NotImplementedError(f"{type(self).__name__} must implement expected_output_shape()")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

"""Checkpoint reading and strict loading: moved to :mod:`formers.core.weights`, which serves every domain.

Kept as a re-export for the callers of ``formers.vision.checkpoint``; the family key-format filters stay with their
models (``formers.vision.models.<family>.checkpoint_filter_fn``).
"""

from formers.core.weights import CheckpointError, load_checkpoint, load_into

__all__ = ["CheckpointError", "load_checkpoint", "load_into"]

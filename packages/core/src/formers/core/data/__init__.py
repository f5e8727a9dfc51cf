"""Data modules of the formers training spine.

:class:`SyntheticSequenceDataModule` generates algorithmic sequence-classification tasks (majority token,
associative recall) from a seed, so every pipeline and test has real data without a download.
"""

from formers.core.data.synthetic import (
    SPLITS,
    SyntheticSequenceDataModule,
    SyntheticTask,
    check_task_config,
    make_sequences,
)

__all__ = ["SPLITS", "SyntheticSequenceDataModule", "SyntheticTask", "check_task_config", "make_sequences"]

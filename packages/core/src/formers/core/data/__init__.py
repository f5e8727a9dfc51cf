"""Data modules of the formers training spine.

:class:`SplitDataModule` is the base of every data module (splits, loaders, model sizes).
:class:`SyntheticSequenceDataModule` generates algorithmic sequence-classification tasks (majority token,
associative recall) from a seed, so every pipeline and test has real data without a download.
"""

from formers.core.data.base import SPLIT_NAMES, SplitDataModule
from formers.core.data.synthetic import (
    SPLITS,
    SyntheticSequenceDataModule,
    SyntheticTask,
    check_task_config,
    make_sequences,
)

__all__ = [
    "SPLIT_NAMES",
    "SplitDataModule",
    "SPLITS",
    "SyntheticSequenceDataModule",
    "SyntheticTask",
    "check_task_config",
    "make_sequences",
]

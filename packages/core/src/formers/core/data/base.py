"""``SplitDataModule``: the one base of formers' data modules, with the loader methods written once.

A data module states how to build its splits (:meth:`SplitDataModule.build_splits`, called once) and, when the data
determines model sizes, which (:meth:`SplitDataModule.model_sizes`, e.g. ``{"num_classes": 10}``). The base class
writes ``setup``, the four ``*_dataloader`` methods and the DataLoader options (batch size, workers, pinned memory,
the collate function: a PyG ``Batch``, a padded or packed byte sequence or a point cloud plug in through
:meth:`SplitDataModule.collate`).

:class:`formers.core.cli.FormersCLI` links ``model_sizes()`` to the task's ``data_sizes`` (LightningCLI argument
link, applied when the data module is instantiated), so sizes like ``num_classes`` or ``enc_in`` are written once, in
the data section of a YAML, or not at all when the data tells them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

__all__ = ["SplitDataModule", "SPLIT_NAMES", "data_sizes_of"]

SPLIT_NAMES = ("train", "val", "test")


def data_sizes_of(datamodule: LightningDataModule | None) -> dict[str, Any] | None:
    """The model sizes a data module determines (its ``model_sizes()``; ``None`` for a module without one)."""
    sizes = getattr(datamodule, "model_sizes", None)
    return dict(sizes()) if callable(sizes) else None


class SplitDataModule(LightningDataModule):
    """Train / val / test splits with shared loader settings.

    Subclasses implement :meth:`build_splits` and may override :meth:`model_sizes`, :meth:`collate`,
    :meth:`drop_last` and :meth:`predict_split`.

    Args:
        batch_size: samples per batch (per process under DDP).
        num_workers: DataLoader worker processes; 0 loads in the main process.
        pin_memory: pin host memory for faster host-to-GPU copies.
    """

    def __init__(self, batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self._splits: dict[str, Dataset] = {}

    # ---------------------------------------------------------------------------------------------- to override
    def build_splits(self) -> dict[str, Dataset]:
        """The datasets of the splits, keyed ``train`` / ``val`` / ``test`` (called once, by :meth:`setup`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_splits()")

    def model_sizes(self) -> dict[str, Any]:
        """Model arguments the data determines (linked to the task's ``data_sizes`` by the CLI)."""
        return {}

    def collate(self) -> Callable[[list[Any]], Any] | None:
        """The DataLoader's ``collate_fn`` (``None``: PyTorch's default collation)."""
        return None

    def drop_last(self, split: str, dataset: Dataset) -> bool:
        """Whether the loader of ``split`` drops its last partial batch (default: never)."""
        return False

    def predict_split(self) -> str:
        """The split ``predict_dataloader`` serves."""
        return "test"

    # ---------------------------------------------------------------------------------------------- written once
    def setup(self, stage: str | None = None) -> None:
        if not self._splits:
            self._splits = dict(self.build_splits())

    @property
    def datasets(self) -> dict[str, Dataset]:
        """Every split's dataset, by name (built on first access)."""
        self.setup()
        return self._splits

    def dataset(self, name: str) -> Dataset:
        """The dataset of split ``name`` (after building the splits if needed)."""
        self.setup()
        if name not in self._splits:
            raise KeyError(f"{type(self).__name__} has no {name!r} split; it has {sorted(self._splits)}")
        return self._splits[name]

    def dataloader(self, name: str, shuffle: bool = False) -> DataLoader:
        """A DataLoader over split ``name`` with this module's settings."""
        dataset = self.dataset(name)
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"the {name} split of {type(self).__name__} is empty; check the data and split settings")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=self.drop_last(name, dataset),
            num_workers=self.num_workers,
            collate_fn=self.collate(),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.dataloader(self.predict_split())

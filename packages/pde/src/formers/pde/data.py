"""formers-pde data modules: the HDF5 files of :mod:`formers.pde.solvers` as training batches.

Three layouts, one module each, all on :class:`formers.core.data.SplitDataModule`:

- :class:`GridDataModule`: input field ``a`` -> output field ``u`` on a uniform grid (Burgers ``u(., 0) -> u(., 1)``,
  Darcy coefficient -> pressure), channels-last ``(B, *spatial, C)`` batches at the training resolution (the stored
  fine grid subsampled by ``subsample``), and **test sets at several resolutions** (``test_subsamples``): the
  zero-shot resolution transfer of a neural operator is evaluated by ``formers-pde test`` itself, every resolution
  logged as ``test/rel_l2@<n>``.
- :class:`TrajectoryDataModule`: frames of a time-dependent field (Kolmogorov vorticity). Training pairs are windows
  ``T_in`` frames -> the next ``T_out``; validation and test are autoregressive rollouts: the first ``T_in`` frames of
  each held-out trajectory -> the next ``rollout`` frames (the task feeds its predictions back).
- :class:`PointCloudDataModule`: ragged point sets on irregular meshes (the GNOT heat problem), batched padding-free
  by :func:`formers.pde.pointcloud.pack_point_clouds` (default) or padded with masks by
  :func:`formers.pde.pointcloud.collate_point_clouds`.

Normalisation: inputs are standardised per channel with the training split's mean and standard deviation; targets are
divided by the training split's root-mean-square per channel, **without a shift**, so the relative L2 error of a
prediction is the same in normalised and physical units (the metric never depends on the normalisation). Both are
scalars per channel, not per grid point, so they hold at every resolution. The statistics are part of the data
state stored in every checkpoint (:meth:`state_dict`), which ``predict`` uses to map new inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from formers.core.data import SplitDataModule
from formers.pde.pointcloud import collate_point_clouds, pack_point_clouds

__all__ = [
    "PDEDataModule",
    "GridDataModule",
    "TrajectoryDataModule",
    "PointCloudDataModule",
    "Normalizer",
    "read_split",
    "subsample_grid",
]

SPLITS = ("train", "val", "test")


def _generate_hint(path: Path) -> str:
    stem = {"burgers": "burgers", "darcy": "darcy", "kolmogorov": "kolmogorov", "heat": "heat_fem"}.get(path.stem)
    module = f"formers.pde.solvers.{stem}" if stem else "formers.pde.solvers.<burgers|darcy|kolmogorov|heat_fem>"
    return f"generate it with `python -m {module} --out {path}` (or `dvc repro`)"


def read_split(path: str | Path, split: str, keys: Sequence[str], limit: int | None = None) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of group ``split`` of an HDF5 dataset file (the first ``limit`` samples when given).

    Raises:
        ValueError: a missing file, group or key, or a file that is not HDF5, with the file named.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"PDE dataset {path} does not exist; {_generate_hint(path)}")
    try:
        with h5py.File(path, "r") as file:
            if split not in file:
                raise ValueError(f"{path} has no {split!r} split (groups: {sorted(file)})")
            group = file[split]
            missing = [k for k in keys if k not in group]
            if missing:
                raise ValueError(f"{path}: split {split!r} lacks {missing} (has {sorted(group)})")
            return {k: group[k][: limit if limit is not None else None] for k in keys}
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 dataset ({err}); {_generate_hint(path)}") from err


def read_file_attrs(path: str | Path) -> dict[str, Any]:
    """The file attributes (equation, solver, parameters, seed, timings) of a dataset file."""
    with h5py.File(path, "r") as file:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in file.attrs.items()}


def subsample_grid(field: Tensor, step: int, spatial_dims: int, first_axis: int = 1) -> Tensor:
    """Every ``step``-th point along each of ``spatial_dims`` axes starting at ``first_axis`` (endpoints kept when
    ``(n - 1)`` is divisible by ``step``, as the FNO/Galerkin subsampling of their 8192 / 421 grids)."""
    if step < 1:
        raise ValueError(f"subsample must be >= 1, got {step}")
    index = [slice(None)] * field.ndim
    for axis in range(first_axis, first_axis + spatial_dims):
        index[axis] = slice(None, None, step)
    return field[tuple(index)]


class Normalizer:
    """Per-channel affine maps fitted on the training split (see the module docstring).

    ``inputs``: ``(x - mean) / std``; ``targets``: ``u / rms``. Stored as plain lists (checkpoint-safe).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], rms: Sequence[float]) -> None:
        self.mean, self.std, self.rms = list(map(float, mean)), list(map(float, std)), list(map(float, rms))

    @classmethod
    def fit(cls, inputs: Tensor, targets: Tensor) -> Normalizer:
        """Statistics over every sample and point of channels-last ``inputs`` / ``targets``."""
        x = inputs.reshape(-1, inputs.shape[-1]).double()
        u = targets.reshape(-1, targets.shape[-1]).double()
        std = x.std(dim=0).clamp_min(1e-12)
        rms = u.square().mean(dim=0).sqrt().clamp_min(1e-12)
        return cls(x.mean(dim=0).tolist(), std.tolist(), rms.tolist())

    def inputs(self, x: Tensor) -> Tensor:
        return (x - x.new_tensor(self.mean)) / x.new_tensor(self.std)

    def targets(self, u: Tensor) -> Tensor:
        return u / u.new_tensor(self.rms)

    def outputs_to_physical(self, y: Tensor) -> Tensor:
        """A model output (normalised target units) in physical units."""
        return y * y.new_tensor(self.rms)

    def state(self) -> dict[str, list[float]]:
        return {"mean": self.mean, "std": self.std, "rms": self.rms}


def _channels_last(field: np.ndarray, spatial_dims: int) -> Tensor:
    """``(N, *spatial)`` or ``(N, *spatial, C)`` -> float32 ``(N, *spatial, C)``."""
    tensor = torch.from_numpy(np.asarray(field, dtype=np.float32))
    return tensor.unsqueeze(-1) if tensor.ndim == 1 + spatial_dims else tensor


class PDEDataModule(SplitDataModule):
    """Base of the formers-pde data modules: a dataset file, its normalisation, and both in every checkpoint."""

    kind = "grid"

    def __init__(self, path: str, batch_size: int, num_workers: int, limit: int | None) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (samples per split), got {limit}")
        self.path, self.limit = Path(path), limit
        self.normalizer: Normalizer | None = None
        self._restored: dict[str, Any] | None = None

    def data_facts(self) -> dict[str, Any]:
        """What a checkpoint keeps about the data (besides the normaliser)."""
        return {"kind": self.kind, "path": str(self.path)}

    def state_dict(self) -> dict[str, Any]:
        self.setup()
        assert self.normalizer is not None
        return {**self.data_facts(), "normalizer": self.normalizer.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = dict(state)

    def _fit_or_restore(self, inputs: Tensor, targets: Tensor) -> Normalizer:
        """The training split's statistics; on resume the stored ones (a resumed run must not renormalise)."""
        if self._restored is not None and "normalizer" in self._restored:
            return Normalizer(**self._restored["normalizer"])
        return Normalizer.fit(inputs, targets)


class GridDataModule(PDEDataModule):
    """Input field -> output field on a uniform grid (``a`` -> ``u`` of a solver's HDF5 file).

    Args:
        path: the HDF5 file (:mod:`formers.pde.solvers.burgers` / :mod:`formers.pde.solvers.darcy`).
        spatial_dims: 1 (Burgers) or 2 (Darcy).
        subsample: training / validation resolution = the stored grid taken every ``subsample`` points per axis
            (Burgers 8192 with 16 -> 512; Darcy 241 with 4 -> 61).
        test_subsamples: the test resolutions (default ``[subsample]``); the first is logged as ``test/rel_l2``, every
            one as ``test/rel_l2@<points per axis>``.
        batch_size, num_workers: loader settings.
        limit: at most this many samples per split (quick runs).
        inverse: swap input and output (inverse Darcy: pressure -> coefficient).
        input_noise: relative Gaussian noise added to the normalised inputs of every split (inverse problems; the
            Galerkin inverse-Darcy protocol uses 0.01), drawn once per split with a fixed seed.
    """

    def __init__(
        self,
        path: str,
        spatial_dims: int = 1,
        subsample: int = 1,
        test_subsamples: Sequence[int] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        limit: int | None = None,
        inverse: bool = False,
        input_noise: float = 0.0,
    ) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if input_noise < 0:
            raise ValueError(f"input_noise must be >= 0, got {input_noise}")
        self.spatial_dims, self.subsample, self.inverse, self.input_noise = (
            spatial_dims,
            subsample,
            inverse,
            input_noise,
        )
        self.test_subsamples = list(test_subsamples) if test_subsamples else [subsample]
        self._channels: tuple[int, int] | None = None
        self._test_names: list[str] = []

    # ------------------------------------------------------------------------------------------ reading
    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        arrays = read_split(self.path, split, ["a", "u"], self.limit)
        a, u = (_channels_last(arrays[k], self.spatial_dims) for k in ("a", "u"))
        return (u, a) if self.inverse else (a, u)

    def _pairs(self, a: Tensor, u: Tensor, step: int, seed: int) -> TensorDataset:
        assert self.normalizer is not None
        x = self.normalizer.inputs(subsample_grid(a, step, self.spatial_dims))
        if self.input_noise > 0:
            generator = torch.Generator().manual_seed(seed)
            x = x + self.input_noise * torch.randn(x.shape, generator=generator)
        y = self.normalizer.targets(subsample_grid(u, step, self.spatial_dims))
        return TensorDataset(x.contiguous(), y.contiguous())

    def build_splits(self) -> dict[str, Dataset]:
        fields = {split: self._load(split) for split in SPLITS}
        train_a, train_u = (subsample_grid(t, self.subsample, self.spatial_dims) for t in fields["train"])
        self.normalizer = self._fit_or_restore(train_a, train_u)
        self._channels = (int(train_a.shape[-1]), int(train_u.shape[-1]))
        splits: dict[str, Dataset] = {
            "train": self._pairs(*fields["train"], self.subsample, seed=1),
            "val": self._pairs(*fields["val"], self.subsample, seed=2),
        }
        self._test_sets = [self._pairs(*fields["test"], step, seed=3) for step in self.test_subsamples]
        self._test_names = [f"@{ds.tensors[0].shape[1]}" for ds in self._test_sets]
        splits["test"] = self._test_sets[0]
        return splits

    # ------------------------------------------------------------------------------------------ the spine's hooks
    def model_sizes(self) -> dict[str, Any]:
        self.setup()
        assert self._channels is not None
        return {"in_channels": self._channels[0], "out_channels": self._channels[1]}

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        self.setup()
        if len(self._test_sets) == 1:
            return self.dataloader("test")
        return [
            DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
            for ds in self._test_sets
        ]

    def test_names(self) -> list[str]:
        """Suffixes of the test sets' metric names (``@<points per axis>``), in loader order."""
        self.setup()
        return list(self._test_names)

    def data_facts(self) -> dict[str, Any]:
        return {
            **super().data_facts(),
            "spatial_dims": self.spatial_dims,
            "subsample": self.subsample,
            "inverse": self.inverse,
            "attrs": _plain(read_file_attrs(self.path)),
        }


class TrajectoryDataModule(PDEDataModule):
    """Windows of a time-dependent field for autoregressive operators (the Kolmogorov vorticity).

    Args:
        path: the HDF5 file (:mod:`formers.pde.solvers.kolmogorov`), dataset ``key`` of shape ``(N, T, *spatial)``.
        key: the dataset name in each split.
        subsample: training resolution = stored grid every ``subsample`` points per axis.
        test_subsamples: test resolutions (zero-shot transfer), as :class:`GridDataModule`.
        t_in: input frames (channels of the model's input).
        t_out: frames the model predicts per step (channels of its output).
        rollout: frames predicted autoregressively in validation and test (a multiple of ``t_out``).
        stride: step between the start frames of consecutive training windows.
        batch_size, num_workers, limit: as :class:`GridDataModule` (``limit``: trajectories per split).
    """

    kind = "trajectory"

    def __init__(
        self,
        path: str,
        key: str = "vorticity",
        subsample: int = 1,
        test_subsamples: Sequence[int] | None = None,
        t_in: int = 10,
        t_out: int = 1,
        rollout: int = 20,
        stride: int = 1,
        batch_size: int = 8,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if min(t_in, t_out, rollout, stride, subsample) < 1 or rollout % t_out:
            raise ValueError(
                f"t_in, t_out, rollout, stride, subsample must be >= 1, rollout a multiple of t_out; got t_in={t_in} "
                f"t_out={t_out} rollout={rollout} stride={stride} subsample={subsample}"
            )
        self.key, self.subsample, self.t_in, self.t_out, self.rollout, self.stride = (
            key, subsample, t_in, t_out, rollout, stride,
        )  # fmt: skip
        self.test_subsamples = list(test_subsamples) if test_subsamples else [subsample]
        self._test_sets: list[TensorDataset] = []
        self._test_names: list[str] = []

    def _frames(self, split: str) -> Tensor:
        field = torch.from_numpy(np.asarray(read_split(self.path, split, [self.key], self.limit)[self.key], np.float32))
        if field.ndim != 4:
            raise ValueError(f"{self.path}: {split}/{self.key} must be (N, T, H, W), got {tuple(field.shape)}")
        if field.shape[1] < self.t_in + max(self.t_out, self.rollout):
            raise ValueError(
                f"{self.path}: {split}/{self.key} has {field.shape[1]} frames, fewer than t_in + rollout = "
                f"{self.t_in + self.rollout}"
            )
        return field.permute(0, 2, 3, 1)  # (N, H, W, T): frames are channels

    def _windows(self, frames: Tensor) -> TensorDataset:
        assert self.normalizer is not None
        frames = self._normalise(subsample_grid(frames, self.subsample, 2))
        span = self.t_in + self.t_out
        starts = range(0, frames.shape[-1] - span + 1, self.stride)
        x = torch.cat([frames[..., s : s + self.t_in] for s in starts])
        y = torch.cat([frames[..., s + self.t_in : s + span] for s in starts])
        return TensorDataset(x.contiguous(), y.contiguous())

    def _rollouts(self, frames: Tensor, step: int) -> TensorDataset:
        frames = self._normalise(subsample_grid(frames, step, 2))
        x = frames[..., : self.t_in]
        y = frames[..., self.t_in : self.t_in + self.rollout]
        return TensorDataset(x.contiguous(), y.contiguous())

    def _normalise(self, frames: Tensor) -> Tensor:
        # one field, so one scalar scale for inputs and targets: predictions can be fed back as inputs
        assert self.normalizer is not None
        return frames / self.normalizer.rms[0]

    def build_splits(self) -> dict[str, Dataset]:
        fields = {split: self._frames(split) for split in SPLITS}
        train = subsample_grid(fields["train"], self.subsample, 2)
        if self._restored is not None and "normalizer" in self._restored:
            self.normalizer = Normalizer(**self._restored["normalizer"])
        else:
            rms = float(train.double().square().mean().sqrt())
            self.normalizer = Normalizer([0.0], [rms], [rms])
        self._test_sets = [self._rollouts(fields["test"], step) for step in self.test_subsamples]
        self._test_names = [f"@{ds.tensors[0].shape[1]}" for ds in self._test_sets]
        return {
            "train": self._windows(fields["train"]),
            "val": self._rollouts(fields["val"], self.subsample),
            "test": self._test_sets[0],
        }

    def model_sizes(self) -> dict[str, Any]:
        return {"in_channels": self.t_in, "out_channels": self.t_out}

    test_dataloader = GridDataModule.test_dataloader
    test_names = GridDataModule.test_names

    def data_facts(self) -> dict[str, Any]:
        return {
            **super().data_facts(),
            "key": self.key,
            "subsample": self.subsample,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "rollout": self.rollout,
            "attrs": _plain(read_file_attrs(self.path)),
        }


class PointCloudDataset(Dataset):
    """The samples of one split of a ragged point-cloud file (see :mod:`formers.pde.pointcloud` for a sample)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], functions: Sequence[str], normalizer: Normalizer) -> None:
        self.arrays, self.functions, self.normalizer = arrays, list(functions), normalizer
        self.offsets = arrays["offsets"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        coords = torch.from_numpy(np.asarray(self.arrays["coords"][lo:hi], np.float32))
        target = torch.from_numpy(np.asarray(self.arrays["target"][lo:hi], np.float32))
        functions = []
        for j, name in enumerate(self.functions):
            off = self.arrays[f"f_{name}_offsets"]
            rows = torch.from_numpy(np.asarray(self.arrays[f"f_{name}"][int(off[i]) : int(off[i + 1])], np.float32))
            functions.append(self._normalise_values(rows, j, coords.shape[-1]))
        params = self.arrays.get("params")
        params_t = torch.from_numpy(np.asarray(params[i], np.float32)) if params is not None else coords.new_zeros(0)
        return {
            "coords": coords,
            "functions": tuple(functions),
            "params": params_t,
            "target": self.normalizer.targets(target),
        }

    def _normalise_values(self, rows: Tensor, j: int, coord_dim: int) -> Tensor:
        # rows are (x, f(x)): the coordinates stay, the value columns are standardised with the training statistics
        values = (rows[:, coord_dim:] - self.normalizer.mean[j]) / self.normalizer.std[j]
        return torch.cat([rows[:, :coord_dim], values], dim=-1)


class PointCloudDataModule(PDEDataModule):
    """Ragged point sets (the GNOT heat problem of :mod:`formers.pde.solvers.heat_fem`), packed or padded.

    Args:
        path: the HDF5 file.
        functions: names of the input functions (datasets ``f_<name>`` with ``f_<name>_offsets``), in model order.
        batch_size, num_workers, limit: as :class:`GridDataModule`.
        packed: padding-free batches (:func:`~formers.pde.pointcloud.pack_point_clouds`: a batch costs what its
            samples cost alone); ``False``: padded with masks (:func:`~formers.pde.pointcloud.collate_point_clouds`).
    """

    kind = "pointcloud"

    def __init__(
        self,
        path: str,
        functions: Sequence[str] = ("boundary", "source"),
        batch_size: int = 4,
        num_workers: int = 0,
        limit: int | None = None,
        packed: bool = True,
    ) -> None:
        super().__init__(path, batch_size, num_workers, None)
        self.functions = list(functions)
        self.packed = packed
        self.sample_limit = limit
        self._sizes: dict[str, Any] = {}

    def _read(self, split: str) -> dict[str, np.ndarray]:
        keys = ["coords", "offsets", "target"]
        keys += [k for name in self.functions for k in (f"f_{name}", f"f_{name}_offsets")]
        arrays = read_split(self.path, split, keys)
        with h5py.File(self.path, "r") as file:
            if "params" in file[split]:
                arrays["params"] = file[split]["params"][:]
        if self.sample_limit is not None:
            arrays = _first_samples(arrays, self.functions, self.sample_limit)
        return arrays

    def build_splits(self) -> dict[str, Dataset]:
        raw = {split: self._read(split) for split in SPLITS}
        train = raw["train"]
        coord_dim = train["coords"].shape[-1]
        if self._restored is not None and "normalizer" in self._restored:
            self.normalizer = Normalizer(**self._restored["normalizer"])
        else:
            values = [torch.from_numpy(train[f"f_{n}"][:, coord_dim:].astype(np.float64)) for n in self.functions]
            target = torch.from_numpy(train["target"].astype(np.float64))
            rms = target.square().mean(dim=0).sqrt().clamp_min(1e-12)
            means = [float(v.mean()) for v in values]
            stds = [float(v.std().clamp_min(1e-12)) for v in values]
            self.normalizer = Normalizer(means, stds, rms.tolist())
        self._sizes = {
            "coord_dim": int(coord_dim),
            "function_channels": [int(train[f"f_{n}"].shape[-1]) for n in self.functions],
            "params_dim": int(train["params"].shape[-1]) if "params" in train else 0,
            "out_channels": int(train["target"].shape[-1]),
        }
        return {split: PointCloudDataset(raw[split], self.functions, self.normalizer) for split in SPLITS}

    def model_sizes(self) -> dict[str, Any]:
        self.setup()
        return dict(self._sizes)

    def collate(self) -> Callable[[list[Any]], Any]:
        return pack_point_clouds if self.packed else collate_point_clouds

    def data_facts(self) -> dict[str, Any]:
        return {**super().data_facts(), "functions": self.functions, "attrs": _plain(read_file_attrs(self.path))}


def _first_samples(arrays: dict[str, np.ndarray], functions: Sequence[str], count: int) -> dict[str, np.ndarray]:
    """The first ``count`` samples of a ragged split."""
    out = dict(arrays)
    offsets = arrays["offsets"][: count + 1]
    out["offsets"], out["coords"], out["target"] = (
        offsets,
        arrays["coords"][: offsets[-1]],
        arrays["target"][: offsets[-1]],
    )
    for name in functions:
        off = arrays[f"f_{name}_offsets"][: count + 1]
        out[f"f_{name}_offsets"], out[f"f_{name}"] = off, arrays[f"f_{name}"][: off[-1]]
    if "params" in arrays:
        out["params"] = arrays["params"][:count]
    return out


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5 attributes as checkpoint-safe Python values (numbers, strings, lists)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, bytes):
            value = value.decode()
        out[key] = value
    return out

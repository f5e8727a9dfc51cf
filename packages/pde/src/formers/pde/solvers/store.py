"""HDF5 storage of the generated formers-pde datasets: one file per dataset, one group per split.

Layout (read by the data modules; any HDF5 tool can open it)::

    /                       file attrs: the caller's ``attrs`` + ``formers_pde_version`` + ``created_utc``
    /train/<name>           one dataset per array (float arrays stored float32, integer arrays kept as they are)
    /val/<name>
    /test/<name>

Ragged point-cloud data is stored flat: :func:`pack_ragged` concatenates the per-sample arrays along axis 0 and
returns ``offsets`` (``int64``, length ``N + 1``); sample ``i`` is ``values[offsets[i]:offsets[i + 1]]``
(:func:`unpack_ragged`).

Writing is atomic: the file is written to ``<path>.tmp`` and renamed onto ``path`` with :func:`os.replace` only once
it is complete, so a crash (or Ctrl-C) never leaves a half-written file under the final name. An existing ``path`` is
refused unless ``overwrite=True``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["open_split", "pack_ragged", "read_attrs", "unpack_ragged", "write_dataset"]


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - python >= 3.8 always has it
        return "unknown"
    try:
        return version("formers-pde")
    except PackageNotFoundError:
        return "unknown"


def _attr_value(key: str, value: Any) -> Any:
    """HDF5 attributes accept numbers, strings and arrays of them; ``None`` and nested containers do not."""
    if value is None:
        return "None"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array
        if array.dtype.kind in "U":
            return np.asarray([str(v) for v in array.ravel()], dtype=h5py.string_dtype())
    raise ValueError(f"attrs[{key!r}]: cannot store a {type(value).__name__} as an HDF5 attribute ({value!r})")


def _stored_array(split: str, name: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iub":
        return array
    raise ValueError(f"splits[{split!r}][{name!r}]: expected a float, integer or bool array, got dtype {array.dtype}")


def write_dataset(
    path: str | os.PathLike[str],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = False,
    compress: Collection[str] = (),
) -> Path:
    """Write ``splits`` (``{split: {name: array}}``) and file ``attrs`` to the HDF5 file ``path``; return its path.

    Float arrays are stored as float32, integer/bool arrays unchanged; arrays whose name is in ``compress`` are
    gzip-compressed (worth it for few-valued data such as the Darcy coefficient). ``formers_pde_version`` and
    ``created_utc`` are added to the attrs. Parent directories are created. Raises ``FileExistsError`` if ``path``
    exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not splits:
        raise ValueError("splits: expected at least one split, got none")
    for split, arrays in splits.items():
        if not isinstance(split, str) or not split or "/" in split:
            raise ValueError(f"splits: split names must be non-empty strings without '/', got {split!r}")
        for name in arrays:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"splits[{split!r}]: array names must be non-empty strings without '/', got {name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = _attr_value(key, value)
            f.attrs["formers_pde_version"] = _package_version()
            f.attrs["created_utc"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for split, arrays in splits.items():
                group = f.create_group(split)
                for name, array in arrays.items():
                    data = _stored_array(split, name, array)
                    kwargs: dict[str, Any] = {}
                    if name in compress and data.size > 0:
                        kwargs = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
                    group.create_dataset(name, data=data, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def pack_ragged(items: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-sample arrays along axis 0; return ``(values, offsets)`` with ``offsets`` int64 of length N+1."""
    if len(items) == 0:
        raise ValueError("items: expected at least one array to pack, got none")
    arrays = [np.asarray(item) for item in items]
    trailing = {a.shape[1:] for a in arrays}
    if any(a.ndim == 0 for a in arrays) or len(trailing) != 1:
        raise ValueError(f"items: arrays must be >= 1-D with equal trailing shapes, got {sorted(trailing)}")
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
    return np.concatenate(arrays, axis=0), offsets


def unpack_ragged(values: np.ndarray, offsets: np.ndarray, i: int) -> np.ndarray:
    """Sample ``i`` of a packed ragged array: ``values[offsets[i]:offsets[i + 1]]``."""
    n = len(offsets) - 1
    if not -n <= i < n:
        raise IndexError(f"i: sample {i} out of range for {n} packed samples")
    i = i % n
    return values[int(offsets[i]) : int(offsets[i + 1])]


def _open(path: str | os.PathLike[str]) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file (generate it with `python -m formers.pde.solvers.<x>`)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 dataset file ({err})") from err


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file attributes of a dataset written by :func:`write_dataset` (numpy scalars as Python numbers)."""
    with _open(path) as f:
        attrs = {key: _decode(value) for key, value in f.attrs.items()}
    if "formers_pde_version" not in attrs:
        raise ValueError(f"{path}: not a formers-pde dataset (no 'formers_pde_version' attribute)")
    return attrs


def open_split(path: str | os.PathLike[str], split: str, keys: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Load every array of ``split`` (or only ``keys``) fully into memory as ``{name: array}``."""
    with _open(path) as f:
        if "formers_pde_version" not in f.attrs:
            raise ValueError(f"{path}: not a formers-pde dataset (no 'formers_pde_version' attribute)")
        if split not in f or not isinstance(f[split], h5py.Group):
            raise KeyError(f"{path}: no split {split!r} (splits in the file: {sorted(f.keys())})")
        group = f[split]
        names = list(group.keys()) if keys is None else list(keys)
        missing = [name for name in names if name not in group]
        if missing:
            raise KeyError(f"{path}: split {split!r} has no arrays {missing} (it has {sorted(group.keys())})")
        try:
            return {name: group[name][()] for name in names}
        except OSError as err:
            raise ValueError(f"{path}: split {split!r} could not be read, the file is corrupt ({err})") from err

"""Put an ETT benchmark CSV where the pipeline expects it, and check that it is the real file.

::

    python -m formers.timeseries.fetch ETTh1 --out data/timeseries/ETTh1.csv [--source PATH_OR_URL]

Source, in order: ``--source`` (a local path, or an ``http(s)://`` URL to download); else the local copy
``../shared/data/timeseries/<name>.csv`` when it exists; else the official file
``https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/<name>.csv`` (needs internet).
The result must parse (date column, 7 numeric channels, no NaN) and have the official row count; a file whose sha256
is known (ETTh1, ETTh2, ETTm1, ETTm2) must match it. The data is CC BY-ND 4.0: copied unmodified, never rewritten.
``--out`` is never the source, a folder, or an existing file other than the verified dataset: those are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from formers.core.runsafety import OutputOverwriteError, refuse_overwrite
from formers.timeseries.data import read_series

__all__ = ["OFFICIAL_URL", "DATASETS", "fetch", "verify", "main"]

OFFICIAL_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}.csv"
LOCAL_DIRS = ("../shared/data/timeseries",)
COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
# rows (header excluded) and sha256 of the official files (ETDataset @ 1d16c8f; ../shared/data/timeseries/SOURCES.md)
DATASETS: dict[str, tuple[int, str]] = {
    "ETTh1": (17420, "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"),
    "ETTh2": (17420, "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b"),
    "ETTm1": (69680, "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e"),
    "ETTm2": (69680, "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd"),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, name: str) -> None:
    """Check that ``path`` is the official ``name`` file: it parses, has its columns and rows, and its sha256.

    Raises:
        ValueError: naming what is wrong.
    """
    path = Path(path)
    rows, sha256 = DATASETS[name]
    frame = read_series(path, date_column="date", target="OT")
    columns = [c for c in frame.columns if c != "date"]
    if columns != COLUMNS:
        raise ValueError(f"{path}: columns {columns}, expected {COLUMNS} for {name}")
    if len(frame) != rows:
        raise ValueError(f"{path}: {len(frame)} rows, the official {name} has {rows} (truncated copy?)")
    actual = _sha256(path)
    if actual != sha256:
        raise ValueError(f"{path}: sha256 {actual} differs from the official {name} file ({sha256})")


def _resolve_source(name: str, source: str | None) -> str:
    if source is not None:
        return source
    for folder in LOCAL_DIRS:
        candidate = Path(folder) / f"{name}.csv"
        if candidate.is_file():
            return str(candidate)
    return OFFICIAL_URL.format(name=name)


def fetch(name: str, out: str | Path, source: str | None = None, timeout: float = 120.0) -> Path:
    """Copy or download ``name`` to ``out``, verify it (:func:`verify`) and return ``out``.

    The file is written next to ``out`` under a temporary name and renamed only after it verified, so a failed
    download never leaves a bad ``out``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    out = Path(out)
    src = _resolve_source(name, source)
    if not src.startswith(("http://", "https://")):
        refuse_overwrite(out, [src])
    _check_replaceable(out, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        if src.startswith(("http://", "https://")):
            print(f"downloading {src}")
            try:
                with urllib.request.urlopen(src, timeout=timeout) as response, tmp_path.open("wb") as f:
                    shutil.copyfileobj(response, f)
            except OSError as err:  # URLError, timeouts, resets
                raise ValueError(f"could not download {src} ({err}); pass --source with a local copy") from err
        else:
            if not Path(src).is_file():
                raise ValueError(f"source file not found: {src}")
            print(f"copying {src}")
            shutil.copyfile(src, tmp_path)
        verify(tmp_path, name)
        tmp_path.chmod(0o644)
        tmp_path.replace(out)
    finally:
        tmp_path.unlink(missing_ok=True)
    print(f"wrote {out} ({name}, verified)")
    return out


def _check_replaceable(out: Path, name: str) -> None:
    """``out`` may be missing or the verified dataset itself (replaced by an identical file); nothing else."""
    if out.is_dir():
        raise OutputOverwriteError(f"output {out} is a folder; give the CSV file path, e.g. {out / (name + '.csv')}")
    if not out.exists():
        return
    try:
        verify(out, name)
    except ValueError as err:
        raise OutputOverwriteError(
            f"output {out} exists and is not the official {name} file ({err}); refusing to replace it: choose "
            "another --out or remove it yourself"
        ) from err


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m formers.timeseries.fetch",
        description="Copy or download an ETT CSV and verify it (columns, rows, sha256).",
    )
    parser.add_argument("name", choices=sorted(DATASETS), help="dataset name")
    parser.add_argument("--out", required=True, help="output CSV path, e.g. data/timeseries/ETTh1.csv")
    parser.add_argument(
        "--source",
        default=None,
        help="local path or http(s) URL; default: ../shared/data/timeseries/<name>.csv if present, else the "
        "official ETDataset URL",
    )
    args = parser.parse_args(argv)
    try:
        fetch(args.name, args.out, args.source)
    except ValueError as err:
        parser.exit(1, f"error: {err}\n")


if __name__ == "__main__":
    main()

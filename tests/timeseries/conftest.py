"""Shared fixtures of the formers.timeseries tests: the ETTh1 path (skip when absent) and small synthetic CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

from formers.timeseries.synthetic import write_synthetic_csv

ETTH1 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "timeseries" / "ETTh1.csv"


@pytest.fixture(scope="session")
def etth1() -> Path:
    if not ETTH1.is_file():
        pytest.skip(f"ETTh1 not found at {ETTH1} (see ../shared/data/timeseries/SOURCES.md)")
    return ETTH1.resolve()


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 hourly rows, 6 load channels + OT."""
    return write_synthetic_csv(tmp_path_factory.mktemp("synthetic") / "synthetic.csv", rows=1000, seed=1)

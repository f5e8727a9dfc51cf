"""The results tables of ``docs/metrics_table.py`` say which CPU (and precision) each run's metrics came from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def metrics_table():
    spec = importlib.util.spec_from_file_location("metrics_table", REPO / "docs" / "metrics_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_name_the_machine_of_each_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # DVC reports paths relative to the repository root
    record = {
        "cpu": {"model": "AMD EPYC", "capability": "AVX2"},
        "precision": {"requested": "auto", "resolved": "32-true"},
    }
    for run, where in (("fit_only", "."), ("tested_elsewhere", "test"), ("unrecorded", None)):
        (tmp_path / "results" / run / "test").mkdir(parents=True)
        if where:
            (tmp_path / "results" / run / where / "machine.json").write_text(json.dumps(record))
    (tmp_path / "results" / "tested_elsewhere" / "machine.json").write_text(json.dumps({"cpu": {"model": "other"}}))
    metrics = {
        f"results/{run}/metrics.json": {"test.mse": 0.5} for run in ("fit_only", "tested_elsewhere", "unrecorded")
    }
    lines = metrics_table().tables(metrics, "test", 3).splitlines()
    assert lines[2] == "| run | mse | machine |"
    assert lines[4:7] == [
        "| fit_only | 0.5 | AMD EPYC, AVX2, 32-true |",
        "| tested_elsewhere | 0.5 | AMD EPYC, AVX2, 32-true |",  # the test's own record, not the fit's
        "| unrecorded | 0.5 | - |",
    ]

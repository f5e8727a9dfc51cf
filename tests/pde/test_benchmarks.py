"""benchmarks/pde.py runs end to end at tiny sizes and records ratios measured in one run (the numbers themselves come
from the DVC stage ``pipelines/pde/dvc.yaml:bench``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["--repeats", "1", "--warmup", "0", "--burgers-n", "64", "--darcy-size", "24", "--gnot-samples", "3",
        "--gnot-max-points", "400", "--lengths", "64", "128", "--softmax-max-length", "128"]  # fmt: skip


@pytest.mark.slow
def test_pde_benchmark_runs_and_records_ratios(tmp_path: Path) -> None:
    out = tmp_path / "pde.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "pde.py"), "--threads", "1", "--json", str(out), *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"cpu", "torch"} <= set(result["machine"])
    for family in ("galerkin", "factformer", "gnot"):
        assert result["official"][family]["official_vs_formers"] > 0
    for family in ("galerkin", "factformer"):
        fno = result["fno"][family]
        assert fno["fno_vs_formers"] > 0 and abs(fno["fno_params"] / fno["params"] - 1) < 0.1  # equal budgets
    assert result["gnot_batching"]["padded_vs_packed"] > 0
    assert [row["n"] for row in result["attention_memory"]] == [64, 128]
    assert all(row["galerkin_saved_mb"] > 0 and "softmax_vs_galerkin" in row for row in result["attention_memory"])

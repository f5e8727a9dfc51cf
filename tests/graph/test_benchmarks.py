"""The graph benchmarks run end to end at tiny sizes and record ratios measured in one run (the numbers themselves
come from the DVC stages ``pipelines/graph/dvc.yaml:bench@*``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMILES = REPO.parent / "shared" / "data" / "graph" / "zinc_jtvae" / "test.txt"
CASES = {
    "graphormer": ["--molecules", "8", "--sbm-graphs", "2", "--sbm-min", "20", "--sbm-max", "30", "--layers", "1",
                   "--repeats", "1", "--warmup", "0"],
    "graph_transformer": ["--tiny", "--molecules", "8", "--rounds", "1", "--warmup", "0"],
}  # fmt: skip


@pytest.mark.skipif(not SMILES.is_file(), reason="../shared/data/graph is not available")
@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs_and_records_ratios(name, tmp_path):
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--threads", "1", "--json", str(out), *CASES[name]]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"cpu", "torch"} <= set(result["machine"])
    if name == "graphormer":  # padding-free vs padded: a ratio and equal outputs, per workload
        for workload in result["workloads"].values():
            assert workload["speedup_padded_over_padding_free"] > 0 and workload["max_abs_output_diff"] < 1e-5
    else:  # GT vs TransformerConv / GPS
        assert all(result[name]["gt_over_this"] > 0 for name in ("transformerconv", "gps"))

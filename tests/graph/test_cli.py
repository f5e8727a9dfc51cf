"""``formers-graph`` end to end: prepare -> fit -> test -> predict through the CLI (tiny sizes; the script's ``main``
in this process, :mod:`_cli`, and the console script itself once).

Each model family trains on real ESOL molecules (the first rows of the shared CSV, skipped without it) and on
generated SBM CLUSTER graphs; ``predict`` writes one CSV row per good SMILES and names each bad row.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import run_script
from formers.graph.domain import main
from formers.graph.prepare import prepare

REPO = Path(__file__).resolve().parents[2]
RAW = REPO.parent / "shared" / "data" / "graph"
TINY = REPO / "pipelines" / "graph" / "tiny.yaml"
TINY_MODELS = {  # tiny sizes of each family on molecules
    "graph_transformer_molecules": "{hidden_dim: 16, num_layers: 2, num_heads: 2, pe_dim: 4}",
    "graphormer_molecules": "{dim: 16, ffn_dim: 16, num_layers: 2, num_heads: 2, multi_hop_max_dist: 3}",
    "gps_molecules": "{channels: 16, rwse_dim: 4, num_layers: 2, heads: 2}",
}
needs_raw = pytest.mark.skipif(not (RAW / "esol").is_dir(), reason="../shared/data/graph is not available")


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("formers-graph")
    return [str(script)] if script.exists() else [sys.executable, "-m", "formers.graph.domain"]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_script("formers-graph", main, args, cwd=REPO)
    if check:
        assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def esol(tmp_path_factory) -> Path:
    if not (RAW / "esol").is_dir():
        pytest.skip("../shared/data/graph is not available")
    out = tmp_path_factory.mktemp("graph") / "esol"
    prepare("esol", out, RAW, limit=120)
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "cluster"
    prepare("cluster", out, sizes=(24, 8, 8), seed=1)
    return out


@needs_raw
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TINY_MODELS))
def test_fit_test_predict_molecules(model, esol, tmp_path):
    run = tmp_path / "run"
    common = ["--config", str(TINY), "--run_dir", str(run), "--data.init_args.root", str(esol)]
    model_args = [
        "--model.class_path", "formers.graph.task.GraphRegressionTask",
        "--model.init_args.model", model,
        "--model.init_args.model_kwargs", TINY_MODELS[model],
    ]  # fmt: skip
    _run("fit", *common, *model_args, "--trainer.max_epochs", "2")
    _run("test", *common, *model_args, "--ckpt_path", str(run / "checkpoints" / "best.ckpt"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["rmse"] > 0 and metrics["epoch"] == 2

    smiles = tmp_path / "molecules.txt"
    smiles.write_text("CCO\nnot a molecule\nc1ccccc1O\nC\n[Na+].[Cl-]\n")  # + no edges, disconnected
    out = tmp_path / "predictions.csv"
    proc = _run(
        "predict", "--ckpt", str(run / "checkpoints" / "best.ckpt"), str(smiles), "--out", str(out), check=False
    )
    assert proc.returncode == 1, proc.stderr  # one bad row: reported, the others predicted
    assert "row 1" in proc.stderr and "molecules.txt" in proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["row"], r["smiles"]) for r in rows] == [
        ("0", "CCO"),
        ("2", "c1ccccc1O"),
        ("3", "C"),
        ("4", "[Na+].[Cl-]"),
    ]
    assert all(float(r["prediction"]) == float(r["prediction"]) for r in rows)


@pytest.mark.slow
def test_fit_and_predict_node_classifier_on_prepared_graphs(cluster, tmp_path):
    run = tmp_path / "run"
    common = ["--config", str(TINY), "--run_dir", str(run), "--data.init_args.root", str(cluster)]
    _run("fit", *common)
    out = tmp_path / "nodes.csv"
    _run("predict", "--ckpt", str(run / "checkpoints" / "best.ckpt"), str(cluster / "test.pt"), "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    meta = json.loads((cluster / "meta.json").read_text())
    assert len({r["graph"] for r in rows}) == meta["split_sizes"]["test"]
    assert {r["prediction"] for r in rows} <= {str(c) for c in range(6)}
    smiles = tmp_path / "x.txt"
    smiles.write_text("CCO\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    args = ["predict", "--ckpt", str(run / "checkpoints" / "best.ckpt"), str(smiles)]
    proc = subprocess.run([*_cli(), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "takes prepared graph files" in proc.stderr  # the console script itself

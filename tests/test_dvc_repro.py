"""``dvc repro`` works in a fresh clone with no remote, and produces the declared metrics and plots.

The working tree is copied (tracked + untracked, minus git-ignored files: uncommitted work included) into a temporary
git repository with one commit, ``params.yaml`` is shrunk to tiny benchmark sizes, and the pipeline runs with the
workspace venv's ``python`` and ``dvc`` first on PATH. ``PYTHONPATH`` puts the copy's member sources ahead of the
editable installs, so the copy's code is what runs (and what DVC hashes as dependencies).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY_BENCH = {
    "threads": 1,
    "batch": 1,
    "heads": 2,
    "length": 32,
    "head_dim": 8,
    "repeats": 2,
    "warmup": 0,
    "matmul_size": 64,
}
TINY_TRAIN_CONFIG = "pipelines/core/tiny.yaml"
METRICS = "results/bench/attention.json"
PLOTS = "results/bench/attention.tsv"
TRAIN_METRICS = "results/core/train/metrics.json"


def copy_worktree(dest: Path) -> None:
    """Copy every tracked or untracked-but-not-ignored file of the repo to ``dest``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        src = ROOT / rel
        if src.is_file():  # tracked files deleted in the worktree are listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def git(repo: Path, *args: str) -> None:
    ident = ["-c", "user.name=formers-test", "-c", "user.email=test@formers.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *ident, *args], cwd=repo, check=True, capture_output=True)


def shrink_params(repo: Path) -> None:
    """Tiny benchmark sizes and the smoke training configs (whatever else ``params.yaml`` holds stays as is)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["bench"].update(TINY_BENCH)
    if "core_train" in params:
        params["core_train"]["config"] = TINY_TRAIN_CONFIG
    if "timeseries" in params:
        params["timeseries"].update(config="pipelines/timeseries/tiny.yaml", rows=1000)
    if "vision" in params:
        params["vision"]["data"].update(train_per_class=16, test_per_class=8)
        params["vision"]["train"]["config"] = "pipelines/vision/tiny.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def pipeline_env(repo: Path) -> dict[str, str]:
    """Workspace venv first on PATH, the copy's sources first on PYTHONPATH, no analytics, no activated venv."""
    # PYTHONDONTWRITEBYTECODE dropped on purpose: the run must write __pycache__ into dependency folders.
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in sorted(repo.glob("**/src")) if (p / "formers").is_dir())
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    """Run a dvc command in ``repo``; fail the test with its output if it fails."""
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the repo in which ``dvc repro`` has run; returns (repo, env)."""
    if not Path(sys.executable).with_name("dvc").is_file():
        pytest.skip("dvc is not installed in the test environment")
    repo = tmp_path_factory.mktemp("clone")
    copy_worktree(repo)
    for stale in (METRICS, PLOTS):
        (repo / stale).unlink(missing_ok=True)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-verify", "-m", "snapshot")
    shrink_params(repo)
    env = pipeline_env(repo)
    assert dvc(repo, env, "remote", "list").strip() == "", "the pipeline must not need a remote"
    dvc(repo, env, "repro")
    return repo, env


def test_repro_writes_metrics(reproduced: tuple[Path, dict[str, str]]) -> None:
    repo, _ = reproduced
    metrics = json.loads((repo / METRICS).read_text())
    assert metrics["env"]["threads"] == TINY_BENCH["threads"]
    assert metrics["env"]["length"] == TINY_BENCH["length"]
    assert set(metrics["matmul"]) == {"fp32_gflops", "bf16_gflops"}
    ratios = [key for key in metrics["dense"]["fwd"]["fp32"] if key.endswith("_vs_naive")]
    assert ratios, "no backend ratio in the metrics"
    header = (repo / PLOTS).read_text().splitlines()[0].split("\t")
    assert {"name", "gflops", "vs_naive"} <= set(header)


def test_metrics_show_lists_benchmark(reproduced: tuple[Path, dict[str, str]]) -> None:
    repo, env = reproduced
    shown = json.loads(dvc(repo, env, "metrics", "show", "--json"))
    (workspace,) = (rev["data"] for rev in shown.values())  # one revision: the workspace ("" or "workspace")
    assert METRICS in workspace, shown
    assert "dense" in workspace[METRICS]["data"]
    if "core_train" in yaml.safe_load((repo / "params.yaml").read_text()):
        assert TRAIN_METRICS in workspace, shown
        assert 0.0 <= workspace[TRAIN_METRICS]["data"]["val"]["acc"] <= 1.0


def test_plots_show_json(reproduced: tuple[Path, dict[str, str]]) -> None:
    repo, env = reproduced
    shown = json.loads(dvc(repo, env, "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    (plot,) = shown["data"][PLOTS]
    assert plot["type"] == "vega"
    rows = plot["content"]["data"]["values"]
    assert {row["impl"] for row in rows} >= {"naive", "matmul"}


def test_pipeline_up_to_date_after_repro(reproduced: tuple[Path, dict[str, str]]) -> None:
    """A second look finds nothing changed (``__pycache__`` written by the run is ignored via ``.dvcignore``)."""
    repo, env = reproduced
    assert list(repo.glob("**/src/formers/core/attention/__pycache__")), "the copy's sources were not the ones run"
    # `dvc.yaml` only: a bare `dvc status` also scans the separate, never-run paper pipelines under pipelines/
    status = dvc(repo, env, "status", "--json", "dvc.yaml")
    assert json.loads(status or "{}") == {}, status

"""``dvc repro`` works in a fresh clone with no remote, and produces the declared metrics and plots; the DVC wiring
(one params layout for every domain, stages depending on the sources they run) holds in every ``dvc.yaml``.

The working tree is copied (tracked + untracked, minus git-ignored files: uncommitted work included) into a temporary
git repository with one commit, ``params.yaml`` is shrunk to tiny benchmark sizes, and the pipeline runs with the
workspace venv's ``python`` and ``dvc`` first on PATH. ``PYTHONPATH`` puts the copy's member sources ahead of the
editable installs, so the copy's code is what runs (and what DVC hashes as dependencies).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = [ROOT / "dvc.yaml", *sorted((ROOT / "pipelines").glob("**/dvc.yaml"))]
KERNELS_SRC, CORE_SRC = "kernels/src/formers/kernels", "packages/core/src/formers/core"

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
TINY_DATA = {
    "timeseries": {"rows": 1000},
    "vision": {"train_per_class": 16, "test_per_class": 8},
    "graph": {"train": 40, "val": 10, "test": 10},
    "pde": {"train": 16, "val": 4, "test": 4, "grid": 256},
    "bytes": {"train": 16, "val": 4, "test": 4},
}
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


def domain_params(params: dict) -> dict[str, dict]:
    """The ``<domain>: {data: {...}, train: {config: ...}}`` blocks of ``params.yaml`` (everything but ``bench``)."""
    return {name: block for name, block in params.items() if name != "bench"}


def shrink_params(repo: Path) -> None:
    """Tiny benchmark sizes, each domain's smoke config (pipelines/<domain>/tiny.yaml) and small generated data."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["bench"].update(TINY_BENCH)
    for domain, block in domain_params(params).items():
        block["train"]["config"] = f"pipelines/{domain}/tiny.yaml"
        assert (repo / block["train"]["config"]).is_file(), f"{domain}: no smoke config"
        block.get("data", {}).update(TINY_DATA.get(domain, {}))
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


@pytest.mark.slow
def test_repro_writes_metrics(reproduced: tuple[Path, dict[str, str]]) -> None:
    repo, _ = reproduced
    metrics = json.loads((repo / METRICS).read_text())
    assert metrics["env"]["threads"] == TINY_BENCH["threads"]
    assert metrics["env"]["length"] == TINY_BENCH["length"]
    dtypes = yaml.safe_load((ROOT / "params.yaml").read_text())["bench"]["dtypes"].split(",")
    assert set(metrics["matmul"]) == {f"{dtype}_gflops" for dtype in dtypes}  # the dtypes params.yaml asks for
    ratios = [key for key in metrics["dense"]["fwd"]["fp32"] if key.endswith("_vs_naive")]
    assert ratios, "no backend ratio in the metrics"
    header = (repo / PLOTS).read_text().splitlines()[0].split("\t")
    assert {"name", "gflops", "vs_naive"} <= set(header)


@pytest.mark.slow
def test_metrics_show_lists_benchmark(reproduced: tuple[Path, dict[str, str]]) -> None:
    repo, env = reproduced
    shown = json.loads(dvc(repo, env, "metrics", "show", "--json"))
    (workspace,) = (rev["data"] for rev in shown.values())  # one revision: the workspace ("" or "workspace")
    assert METRICS in workspace, shown
    assert "dense" in workspace[METRICS]["data"]
    if "core" in yaml.safe_load((repo / "params.yaml").read_text()):
        assert TRAIN_METRICS in workspace, shown
        assert 0.0 <= workspace[TRAIN_METRICS]["data"]["val"]["acc"] <= 1.0


@pytest.mark.slow
def test_plots_show_json(reproduced: tuple[Path, dict[str, str]]) -> None:
    repo, env = reproduced
    shown = json.loads(dvc(repo, env, "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    (plot,) = shown["data"][PLOTS]
    assert plot["type"] == "vega"
    rows = plot["content"]["data"]["values"]
    assert {row["impl"] for row in rows} >= {"naive", "matmul"}


@pytest.mark.slow
def test_pipeline_up_to_date_after_repro(reproduced: tuple[Path, dict[str, str]]) -> None:
    """A second look finds nothing changed (``__pycache__`` written by the run is ignored via ``.dvcignore``)."""
    repo, env = reproduced
    assert list(repo.glob("**/src/formers/core/attention/__pycache__")), "the copy's sources were not the ones run"
    # `dvc.yaml` only: a bare `dvc status` also scans the separate, never-run paper pipelines under pipelines/
    status = dvc(repo, env, "status", "--json", "dvc.yaml")
    assert json.loads(status or "{}") == {}, status


# The wiring of every dvc.yaml, read statically (quick: no stage runs).


def _expand(template: object, key: str, item: object) -> object:
    """A ``foreach`` template with ``${key}``, ``${item}`` and ``${item.<field>}`` filled in for one item."""
    if isinstance(template, dict):
        return {k: _expand(v, key, item) for k, v in template.items()}
    if isinstance(template, list):
        return [_expand(v, key, item) for v in template]
    if not isinstance(template, str):
        return template
    text = template.replace("${key}", key)
    if isinstance(item, dict):
        return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m[1]]), text)
    return text.replace("${item}", str(item))


def stages() -> dict[str, tuple[dict, str]]:
    """``file:stage`` -> (stage, its working directory relative to the repository root); a ``foreach`` stage gives one
    entry per item (``file:stage@key``, its ``do`` template filled in); a ``matrix`` stage is its template."""
    found = {}
    for path in PIPELINES:
        for name, stage in yaml.safe_load(path.read_text())["stages"].items():
            items = stage.get("foreach")
            expanded = (
                {f"{name}@{key}": _expand(stage["do"], key, item) for key, item in items.items()}
                if isinstance(items, dict) and "do" in stage
                else {name: stage.get("do", stage)}
            )
            for full_name, body in expanded.items():
                wdir = (path.parent / body.get("wdir", ".")).resolve().relative_to(ROOT).as_posix()
                found[f"{path.relative_to(ROOT)}:{full_name}"] = (body, wdir)
    return found


def command(stage: dict) -> str:
    cmd = stage["cmd"]
    return " && ".join(cmd) if isinstance(cmd, list) else cmd


def deps(stage: dict, wdir: str) -> set[str]:
    """The stage's dependencies as paths relative to the repository root."""
    return {os.path.normpath(os.path.join(wdir, dep)) for dep in stage.get("deps", [])}


def test_params_one_layout_for_every_domain() -> None:
    """``<domain>: {data: {...}, train: {config: <existing file>}}``: no domain-specific shapes."""
    blocks = domain_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert {"core", "timeseries", "vision"} <= set(blocks)
    for domain, block in blocks.items():
        assert set(block) <= {"data", "train"} and "train" in block, f"{domain}: {sorted(block)}"
        assert isinstance(block.get("data", {}), dict), domain
        assert set(block["train"]) == {"config"}, domain
        assert (ROOT / block["train"]["config"]).is_file(), domain
        assert block["train"]["config"].startswith(f"pipelines/{domain}/"), domain


def test_root_pipeline_reads_params_by_the_layout() -> None:
    """Every ``${...}`` and ``params:`` entry of the root dvc.yaml names an existing key, and a domain's stages read
    only ``<domain>.data`` / ``<domain>.train``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = (ROOT / "dvc.yaml").read_text()
    used = set(re.findall(r"\$\{([\w.]+)\}", text))
    for stage in yaml.safe_load(text)["stages"].values():
        used |= {key for key in stage.get("params", []) if isinstance(key, str)}
    for key in used:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml reads {key!r}, not in params.yaml"
            node = node[part]
    for key in used:
        top, *rest = key.split(".")
        if top in domain_params(params):
            assert rest and rest[0] in ("data", "train"), f"{key!r} does not follow <domain>.data/.train"


def test_training_stages_depend_on_the_sources_they_run() -> None:
    """A stage that runs ``formers-<domain>`` depends on the kernels, core and that domain's package, so a change to
    any of them marks it changed (in the root pipeline and in the separate paper / CIFAR-10 pipelines)."""
    checked = 0
    for name, (stage, wdir) in stages().items():
        for domain in set(re.findall(r"\bformers-(\w+) (?:fit|test|predict)\b", command(stage))):
            package = CORE_SRC if domain == "core" else f"packages/{domain}/src/formers/{domain}"
            missing = {KERNELS_SRC, CORE_SRC, package} - deps(stage, wdir)
            assert not missing, f"{name} runs formers-{domain} but does not depend on {sorted(missing)}"
            checked += 1
    assert checked >= 5, "expected the core, timeseries, vision, ETTh1 and CIFAR-10 training stages"


def test_data_stages_depend_on_the_code_that_writes_the_data() -> None:
    """``python -m formers.<domain>.<module>`` stages depend on that module's file (or a folder holding it)."""
    checked = 0
    for name, (stage, wdir) in stages().items():
        for module in re.findall(r"python -m (formers(?:\.\w+){2,})", command(stage)):
            domain = module.split(".")[1]  # formers.<domain>.<module>[.<submodule>...]
            source = f"packages/{domain}/src/{module.replace('.', '/')}.py"
            assert (ROOT / source).is_file(), f"{name}: {module} has no {source}"
            covered = any(source == dep or source.startswith(dep.rstrip("/") + "/") for dep in deps(stage, wdir))
            assert covered, f"{name} runs {module} but does not depend on {source}"
            checked += 1
    assert checked >= 3, "expected ts_data, vision_data and ts_fetch_etth1"

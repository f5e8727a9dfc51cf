"""Every workspace member installs on its own, and its wheel is a PEP 420 portion of the ``formers`` namespace.

Install test: a fresh virtual environment per member, then ``uv pip install <member dir>`` constrained to the
workspace lock's pins (``uv export``), so torch & co. are the locked versions and come hard-linked from uv's cache
instead of being downloaded. Members a member depends on (formers-core -> formers-kernels) resolve through the
workspace sources of the root pyproject. uv is tried with ``--offline`` first (cache only, fastest) and online
(PyPI) if the cache lacks something.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from _workspace import ROOT, member_pyprojects

pytestmark = pytest.mark.slow


def workspace_members() -> dict[str, Path]:
    """Distribution name (``formers-core``) -> member directory."""
    return {project["project"]["name"]: path for path, project in member_pyprojects().items()}


MEMBERS = workspace_members()


def module_name(dist: str) -> str:
    """``formers-core`` -> ``formers.core`` (from the member's ``[tool.uv.build-backend]``)."""
    project = tomllib.loads((MEMBERS[dist] / "pyproject.toml").read_text())
    return project["tool"]["uv"]["build-backend"]["module-name"]


def internal_deps(dist: str) -> set[str]:
    """Workspace members that ``dist`` needs, transitively."""
    project = tomllib.loads((MEMBERS[dist] / "pyproject.toml").read_text())["project"]
    direct = {req.split(";")[0].split("[")[0].strip() for req in project.get("dependencies", [])} & set(MEMBERS)
    return direct.union(*(internal_deps(dep) for dep in direct))


def uv_exe() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.skip("uv is not on PATH")
    return found


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run uv outside any activated environment (``VIRTUAL_ENV`` would redirect ``uv pip``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    return subprocess.run([uv_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lock's pins of every third-party package, as a constraints file."""
    path = tmp_path_factory.mktemp("constraints") / "constraints.txt"
    proc = uv(
        "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-packages", "--no-header", "--no-annotate",
        "-o", str(path), "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("torch==") for line in path.read_text().splitlines())
    return path


def install_alone(dist: str, venv: Path, constraints: Path) -> float:
    """Fresh venv + ``uv pip install <member dir>``; returns seconds taken (venv creation included)."""
    start = time.perf_counter()
    proc = uv("venv", "-q", "--python", sys.executable, str(venv))
    assert proc.returncode == 0, proc.stderr
    cmd = ("pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c", str(constraints), str(MEMBERS[dist]))
    proc = uv(*cmd, "--offline")
    if proc.returncode != 0:  # something is not in uv's cache yet: allow PyPI
        proc = uv(*cmd)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - start


CHECK_INSTALLED = """
import importlib, importlib.metadata as md, json, sys
import formers
mod = importlib.import_module(sys.argv[1])
dists = {d.metadata["Name"]: d for d in md.distributions()}
print(json.dumps({
    "namespace_file": getattr(formers, "__file__", None),
    "module_file": mod.__file__,
    "formers_dists": {n: json.loads(d.read_text("direct_url.json") or "{}") for n, d in dists.items()
                      if n.startswith("formers-")},
    "torch": dists["torch"].version if "torch" in dists else None,
}))
"""


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_member_installs_alone(dist: str, constraints: Path, tmp_path: Path) -> None:
    """The member resolves and imports in a fresh venv, with exactly its workspace deps and the locked torch."""
    seconds = install_alone(dist, tmp_path / "venv", constraints)
    python = tmp_path / "venv" / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-c", CHECK_INSTALLED, module_name(dist)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{dist}: fresh venv + install {seconds:.1f} s")
    assert info["namespace_file"] is None, "formers must be a namespace package (no formers/__init__.py)"
    assert info["module_file"].startswith(str(tmp_path / "venv")), "the member itself is a regular (copied) install"
    assert set(info["formers_dists"]) == {dist} | internal_deps(dist)
    for dep in internal_deps(dist):  # workspace members come from the workspace folders, not from an index
        assert info["formers_dists"][dep].get("url") == MEMBERS[dep].as_uri(), info["formers_dists"][dep]
    pinned = next(line for line in constraints.read_text().splitlines() if line.startswith("torch=="))
    assert info["torch"] == pinned.split("==")[1].split(";")[0].strip(), "torch must be the locked version"


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_wheel_is_namespace_portion(dist: str, tmp_path: Path) -> None:
    """The built wheel ships ``formers/<x>/__init__.py``, no ``formers/__init__.py`` and no byte-code."""
    proc = uv("build", "-q", "--package", dist, "--wheel", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package_dir = module_name(dist).replace(".", "/")
    assert f"{package_dir}/__init__.py" in names
    assert "formers/__init__.py" not in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    assert all(n.startswith((f"{package_dir}/", "formers/", wheel.name.split("-")[0])) for n in names), names

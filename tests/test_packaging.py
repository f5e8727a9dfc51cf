"""Every workspace member installs alone from its wheel, without the training stack, as a portion of ``formers``.

The wheels (and sdists) of every member are built once, as ``make dist`` does (``uv build --all-packages``). Each
member is installed into a fresh virtual environment from those wheels alone (``uv pip install --find-links <wheels>
<member>``: a user's own project, outside the clone), constrained to the workspace lock's pins (``uv export``) so
torch & co. are the locked versions and come hard-linked from uv's cache instead of being downloaded. uv is tried
with ``--offline`` first (cache only, fastest) and online (PyPI) if the cache lacks something.

A folder install inside the clone (``uv pip install ./packages/x``) follows the workspace's sources, which install
the other members as editable links into the clone (uv's development set-up); the wheels, and ``--no-sources`` with
every member folder named, give self-contained copies. These tests check the copies.

uv is the dev group's (``.venv/bin/uv`` next to this interpreter), else the one on PATH, else ``python -m uv``; when
none exists the tests fail (set ``FORMERS_SKIP_UV_TESTS=1`` to skip them knowingly).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from _workspace import ROOT, member_pyprojects

pytestmark = pytest.mark.slow

# installed with one domain and nothing heavier: the training stack is the `train` extra
TRAINING_STACK = {"dvclive", "dvc"}
# the Must-show domain: installed from the wheels, a registered model built and run, its install measured
SHOWN_DOMAIN = "formers-vision"


def workspace_members() -> dict[str, Path]:
    """Distribution name (``formers-core``) -> member directory."""
    return {project["project"]["name"]: path for path, project in member_pyprojects().items()}


MEMBERS = workspace_members()


def module_name(dist: str) -> str:
    """``formers-core`` -> ``formers.core`` (from the member's ``[tool.uv.build-backend]``)."""
    project = tomllib.loads((MEMBERS[dist] / "pyproject.toml").read_text())
    return project["tool"]["uv"]["build-backend"]["module-name"]


def requirements(dist: str) -> list[str]:
    """The member's run-time requirements (extras not included)."""
    return tomllib.loads((MEMBERS[dist] / "pyproject.toml").read_text())["project"].get("dependencies", [])


def requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()


def internal_deps(dist: str) -> set[str]:
    """Workspace members that ``dist`` needs, transitively."""
    direct = {requirement_name(req) for req in requirements(dist)} & set(MEMBERS)
    return direct.union(*(internal_deps(dep) for dep in direct))


@functools.cache
def uv_command() -> tuple[str, ...]:
    """uv: next to this interpreter (the dev group's, the lock's version), else on PATH, else ``python -m uv``."""
    here = shutil.which("uv", path=str(Path(sys.executable).parent))  # the venv's bin/ (not resolved: a symlink)
    found = here or shutil.which("uv")
    if found:
        return (found,)
    try:
        from uv import find_uv_bin  # the `uv` wheel, when installed without its script on PATH

        return (find_uv_bin(),)
    except (ImportError, FileNotFoundError):
        pass
    if os.environ.get("FORMERS_SKIP_UV_TESTS") == "1":
        pytest.skip("uv not found and FORMERS_SKIP_UV_TESTS=1")
    pytest.fail(
        f"uv not found: not beside {sys.executable}, not on PATH, not importable. `make sync` installs it (the dev "
        "group); set FORMERS_SKIP_UV_TESTS=1 to skip the packaging tests knowingly.",
        pytrace=False,
    )


def test_missing_uv_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uv the packaging tests fail, naming the fix; they skip only when FORMERS_SKIP_UV_TESTS=1 says so."""
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setitem(sys.modules, "uv", None)  # `import uv` raises ImportError
    monkeypatch.delenv("FORMERS_SKIP_UV_TESTS", raising=False)
    uv_command.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="uv not found"):
            uv_command()
        monkeypatch.setenv("FORMERS_SKIP_UV_TESTS", "1")
        with pytest.raises(pytest.skip.Exception):
            uv_command()
    finally:
        uv_command.cache_clear()


def uv(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run uv outside any activated environment (``VIRTUAL_ENV`` would redirect ``uv pip``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    cmd = [*uv_command(), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def uv_pip_install(python: Path, constraints: Path, *args: str | Path, cwd: Path) -> None:
    """``uv pip install`` from uv's cache (``--offline``), or from PyPI for what the cache lacks."""
    cmd = ("pip", "install", "-q", "--python", python, "-c", constraints, *args)
    proc = uv(*cmd, "--offline", cwd=cwd)
    if proc.returncode != 0:
        proc = uv(*cmd, cwd=cwd)
    assert proc.returncode == 0, proc.stderr


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (each hard link once, as ``du`` counts a fresh install)."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lock's pins of every third-party package, as a constraints file."""
    path = tmp_path_factory.mktemp("constraints") / "constraints.txt"
    proc = uv(
        "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-packages", "--all-extras", "--no-header",
        "--no-annotate", "-o", path, "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("torch==") for line in path.read_text().splitlines())
    return path


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every member's wheel and sdist, built as ``make dist`` builds them."""
    out = tmp_path_factory.mktemp("dist")
    proc = uv("build", "-q", "--all-packages", "--out-dir", out)
    assert proc.returncode == 0, proc.stderr
    return out


@dataclass
class Installed:
    venv: Path
    seconds: float  # fresh venv + install
    size: int  # bytes of the venv right after the install

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def distributions(self) -> int:
        return len(list(self.venv.glob("lib/python*/site-packages/*.dist-info")))

    def run(self, code: str, *args: str) -> str:
        """Run ``code`` in the venv from a folder outside the clone; its standard output."""
        proc = subprocess.run(
            [str(self.python), "-c", code, *args], capture_output=True, text=True, check=False, cwd=self.venv.parent
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, constraints: Path
) -> Callable[[str], Installed]:
    """``installed(dist)``: a fresh venv holding ``dist`` installed from the wheels (made once per module)."""
    venvs: dict[str, Installed] = {}

    def install(dist: str) -> Installed:
        if dist not in venvs:
            venv = tmp_path_factory.mktemp(dist) / "venv"
            start = time.perf_counter()
            proc = uv("venv", "-q", "--python", sys.executable, venv)
            assert proc.returncode == 0, proc.stderr
            uv_pip_install(venv / "bin" / "python", constraints, "--find-links", wheelhouse, dist, cwd=venv.parent)
            venvs[dist] = Installed(venv, time.perf_counter() - start, dir_bytes(venv))
        return venvs[dist]

    return install


CHECK_INSTALLED = """
import importlib, importlib.metadata as md, json, sys
import formers
dists = {d.metadata["Name"].lower(): d for d in md.distributions()}
print(json.dumps({
    "namespace_file": getattr(formers, "__file__", None),
    "module_files": {name: importlib.import_module(name).__file__ for name in sys.argv[1:]},
    "formers_dists": {n: json.loads(d.read_text("direct_url.json") or "{}") for n, d in dists.items()
                      if n.startswith("formers-")},
    "dists": sorted(dists),
    "torch": dists["torch"].version if "torch" in dists else None,
}))
"""


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_member_installs_alone(dist: str, installed: Callable[[str], Installed], constraints: Path) -> None:
    """The member resolves from the wheels alone, as copies, with exactly its workspace deps, the locked torch and no
    training stack, and imports."""
    env = installed(dist)
    ours = sorted({dist} | internal_deps(dist))
    info = json.loads(env.run(CHECK_INSTALLED, *map(module_name, ours)).strip().splitlines()[-1])
    print(f"\n{dist}: fresh venv + install from wheels {env.seconds:.1f} s, {env.size / 2**30:.2f} GiB")
    assert info["namespace_file"] is None, "formers must be a namespace package (no formers/__init__.py)"
    assert set(info["formers_dists"]) == set(ours)
    for name, direct_url in info["formers_dists"].items():  # from the wheelhouse: no file:// link into the clone
        assert not direct_url, f"{name} installed from {direct_url}, not from its wheel"
    for module, path in info["module_files"].items():
        assert path.startswith(str(env.venv)), f"{module} imports from {path}, outside the venv"
    assert not TRAINING_STACK & set(info["dists"]), "the training stack belongs to the `train` extra"
    pinned = next(line for line in constraints.read_text().splitlines() if line.startswith("torch=="))
    assert info["torch"] == pinned.split("==")[1].split(";")[0].strip(), "torch must be the locked version"


BUILD_MODEL = """
import time, torch
import formers.vision
start = time.perf_counter()
model = formers.vision.create_model("pit_ti_224").eval()
with torch.no_grad():
    logits = model(torch.randn(1, 3, 224, 224))
assert logits.shape == (1, 1000), logits.shape
seconds = time.perf_counter() - start
import formers.core.loggers  # the CLI's loggers import without the train extra; the DVCLive one names it
try:
    formers.core.loggers.ResumableDVCLiveLogger
except ImportError as err:
    assert "formers-core[train]" in str(err), err
else:
    raise AssertionError("dvclive is installed without the train extra")
print(sum(p.numel() for p in model.parameters()), f"{seconds:.1f}")
"""


def test_one_domain_from_wheels_builds_a_model(
    installed: Callable[[str], Installed], record_property: Callable[[str, object], None]
) -> None:
    """The Must-show: one domain from the wheels into a fresh venv, then a registered model built and run; the
    CLI's DVCLive logger, without the train extra, says which extra it needs."""
    env = installed(SHOWN_DOMAIN)
    params, seconds = env.run(BUILD_MODEL).split()
    assert int(params) > 1_000_000  # PiT-Ti: about 4.9 M
    packages = env.distributions()
    print(
        f"\n{SHOWN_DOMAIN} from wheels: {env.seconds:.1f} s (fresh venv + install, uv cache), "
        f"{env.size / 2**30:.2f} GiB, {packages} distributions; pit_ti_224 built and run in {seconds} s"
    )
    record_property("install_seconds", round(env.seconds, 1))
    record_property("install_bytes", env.size)
    record_property("distributions", packages)


def test_train_extra_adds_the_training_stack(
    installed: Callable[[str], Installed], wheelhouse: Path, constraints: Path
) -> None:
    """``formers-<domain>[train]`` brings dvclive (and dvc) and the CLI's DVCLive logger resolves."""
    env = installed(SHOWN_DOMAIN)  # the venv of the test above, which needs it without the extra: this test runs last
    before, count, start = dir_bytes(env.venv), env.distributions(), time.perf_counter()
    uv_pip_install(env.python, constraints, "--find-links", wheelhouse, f"{SHOWN_DOMAIN}[train]", cwd=env.venv.parent)
    seconds, added = time.perf_counter() - start, dir_bytes(env.venv) - before
    out = env.run(
        "import importlib.metadata as md\n"
        "from formers.core.loggers import ResumableDVCLiveLogger\n"
        "print(ResumableDVCLiveLogger.__mro__[1].__module__, md.version('dvc'))"
    )
    assert out.split()[0] == "dvclive.lightning", out
    more = env.distributions() - count
    print(f"\n{SHOWN_DOMAIN}[train] on top: {seconds:.1f} s, +{added / 2**30:.2f} GiB, +{more} distributions")


DIRECT_URLS = """
import importlib.metadata as md, json
print(json.dumps({d.metadata["Name"].lower(): json.loads(d.read_text("direct_url.json") or "{}")
                  for d in md.distributions() if d.metadata["Name"].lower().startswith("formers-")}))
"""


def test_folder_install_with_no_sources_gives_copies(constraints: Path, tmp_path: Path) -> None:
    """The README's folder install, ``uv pip install --no-sources`` with every member folder named, copies each member
    (no editable link into the clone, which the workspace sources would make)."""
    dist = "formers-timeseries"
    venv = tmp_path / "venv"
    proc = uv("venv", "-q", "--python", sys.executable, venv)
    assert proc.returncode == 0, proc.stderr
    folders = [MEMBERS[name] for name in sorted({dist} | internal_deps(dist))]
    uv_pip_install(venv / "bin" / "python", constraints, "--no-sources", *folders, cwd=ROOT)
    proc = subprocess.run([venv / "bin" / "python", "-c", DIRECT_URLS], capture_output=True, text=True, check=True)
    urls = json.loads(proc.stdout)
    assert set(urls) == {dist} | internal_deps(dist)
    for name, direct_url in urls.items():
        assert direct_url["url"] == MEMBERS[name].as_uri() and not direct_url["dir_info"].get("editable"), direct_url


UPPER_BOUND = re.compile(r"<|==|~=")


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_member_requirements_are_lower_bounds(dist: str) -> None:
    """Members declare compatible ranges (lower bounds); the workspace root alone pins the exact tested stack, so a
    project on a newer torch can install a member."""
    project = tomllib.loads((MEMBERS[dist] / "pyproject.toml").read_text())["project"]
    reqs = [*project.get("dependencies", []), *sum(project.get("optional-dependencies", {}).values(), [])]
    bounded = [req for req in reqs if UPPER_BOUND.search(req.split(";")[0])]
    assert not bounded, f"{dist}: upper bounds {bounded}"


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_wheel_is_namespace_portion(dist: str, wheelhouse: Path) -> None:
    """The built wheel ships ``formers/<x>/__init__.py`` and ``py.typed``, no ``formers/__init__.py`` and no
    byte-code; the sdist ships ``py.typed`` too."""
    stem = dist.replace("-", "_")
    (wheel,) = wheelhouse.glob(f"{stem}-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package_dir = module_name(dist).replace(".", "/")
    assert f"{package_dir}/__init__.py" in names
    assert f"{package_dir}/py.typed" in names, "PEP 561: the portion is typed"
    assert "formers/__init__.py" not in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    assert all(n.startswith((f"{package_dir}/", "formers/", wheel.name.split("-")[0])) for n in names), names
    (sdist,) = wheelhouse.glob(f"{stem}-*.tar.gz")
    with tarfile.open(sdist) as tar:
        assert any(n.endswith(f"src/{package_dir}/py.typed") for n in tar.getnames())

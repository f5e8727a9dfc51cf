"""Layering between workspace members: one import-linter contract set in the root ``pyproject.toml``.

Allowed direction: ``formers.kernels`` <- ``formers.core`` <- ``formers.<domain>``. Kernels import no other formers
package, core imports no domain, a domain imports neither the kernels (it goes through core) nor another domain.
``[tool.importlinter]`` states this once for all members (a ``layers`` contract with the domains as independent
siblings, plus a ``forbidden`` contract for domain -> kernels); ``lint-imports`` checks it. import-linter reads every
import statement, lazy and ``TYPE_CHECKING`` ones included, and counts submodule imports as imports of the package.
Not covered by any linter: ``importlib.import_module`` with a string, which layering code must not use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from _workspace import ROOT, member_pyprojects


def workspace_members() -> dict[str, Path]:
    """Import name (``formers.core``) -> member directory."""
    return {
        project["tool"]["uv"]["build-backend"]["module-name"]: path for path, project in member_pyprojects().items()
    }


MEMBERS = workspace_members()
KERNELS, CORE = "formers.kernels", "formers.core"
DOMAINS = sorted(set(MEMBERS) - {KERNELS, CORE})
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def banned_for(module: str) -> set[str]:
    """The formers packages ``module`` must not import."""
    if module == KERNELS:
        return set(MEMBERS) - {KERNELS}
    if module == CORE:
        return set(DOMAINS)
    return set(MEMBERS) - {CORE, module}


def allowed_for(module: str) -> set[str]:
    """The formers packages ``module`` may import (itself included)."""
    return set(MEMBERS) - banned_for(module)


def import_forms(target: str) -> list[str]:
    """Every spelling of importing ``target`` that must count as importing it."""
    parent, leaf = target.rsplit(".", 1)
    return [
        f"import {target}",
        f"import {target}.sub",
        f"import {target}.sub.deeper as alias",
        f"from {target} import name",
        f"from {target}.sub import name",
        f"from {target}.sub.deeper import name as other",
        f"from {parent} import {leaf}",
        f"def lazy():\n    import {target}.sub",
        f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from {target}.sub import Name",
    ]


def tool(name: str) -> str:
    """An executable of the workspace venv (skip when it is not installed)."""
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed in this environment")
    return found


def lint_imports(cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the root contract; ``pythonpath`` (first on sys.path) decides which sources it reads."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    cmd = [tool("lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, check=False)


def contract(contract_type: str) -> dict:
    (found,) = [c for c in CONFIG["contracts"] if c["type"] == contract_type]
    return found


def test_members_discovered() -> None:
    assert {KERNELS, CORE} <= set(MEMBERS)
    assert DOMAINS, "no domain members found"


def test_contract_names_every_member() -> None:
    """The contract's layers are exactly kernels < core < all domains as independent siblings (a new member must be
    added here, or its imports go unchecked)."""
    assert set(CONFIG["root_packages"]) == set(MEMBERS)
    top, middle, bottom = contract("layers")["layers"]
    assert (middle, bottom) == (CORE, KERNELS)
    assert ":" not in top, "domains must be independent siblings ('|'), not mutually importable (':')"
    assert sorted(name.strip() for name in top.split("|")) == DOMAINS
    forbidden = contract("forbidden")
    assert sorted(forbidden["source_modules"]) == DOMAINS and forbidden["forbidden_modules"] == [KERNELS]
    assert forbidden["allow_indirect_imports"] is True  # domain -> core -> kernels is the intended path


def test_no_member_keeps_its_own_layering_list() -> None:
    """The root contract is the only statement of the layering: no per-member ruff banned-api lists beside it."""
    for path, project in member_pyprojects().items():
        tidy = project.get("tool", {}).get("ruff", {}).get("lint", {}).get("flake8-tidy-imports", {})
        assert "banned-api" not in tidy, path / "pyproject.toml"


def test_real_tree_keeps_the_contract() -> None:
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def stub_tree(root: Path, probes: dict[str, str]) -> str:
    """One stub package per member under ``root`` (each in its own sys.path entry, like the editable installs, with
    ``sub`` and ``sub.deeper`` submodules), plus probe modules ``{dotted name: source}``; returns the PYTHONPATH."""
    entries = []
    for module in MEMBERS:
        entry = root / module.split(".")[1]
        package = entry / Path(*module.split("."))
        (package / "sub").mkdir(parents=True)
        for init in (package / "__init__.py", package / "sub" / "__init__.py", package / "sub" / "deeper.py"):
            init.write_text("name = Name = None\n")
        entries.append(str(entry))
    for dotted, source in probes.items():
        owner = ".".join(dotted.split(".")[:2])
        (root / owner.split(".")[1] / Path(*dotted.split("."))).with_suffix(".py").write_text(source + "\n")
    return os.pathsep.join(entries)


def probe_name(module: str, target: str, index: int) -> str:
    return f"{module}.probe_{target.split('.')[1]}_{index}"


@pytest.mark.parametrize("module", sorted(MEMBERS))
def test_forbidden_imports_break_the_contract(module: str, tmp_path: Path) -> None:
    """Every spelling of every forbidden import, one probe module each, is reported by ``lint-imports``."""
    probes = {
        probe_name(module, target, i): form
        for target in sorted(banned_for(module))
        for i, form in enumerate(import_forms(target))
    }
    proc = lint_imports(tmp_path, stub_tree(tmp_path / "src", probes))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    missed = [form for name, form in probes.items() if f"{name} ->" not in proc.stdout]
    assert not missed, f"lint-imports did not report, in {module}: {missed}\n{proc.stdout}"


@pytest.mark.parametrize("module", sorted(MEMBERS))
def test_allowed_imports_pass(module: str, tmp_path: Path) -> None:
    """Imports along the allowed direction (and of the member itself) keep the contract."""
    probes = {
        probe_name(module, target, i): form
        for target in sorted(allowed_for(module))
        for i, form in enumerate(import_forms(target))
    }
    proc = lint_imports(tmp_path, stub_tree(tmp_path / "src", probes))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_real_tree_has_no_parent_relative_imports() -> None:
    """TID252: ``from ..x import y`` would hide a cross-package import from a reader."""
    proc = subprocess.run(
        [tool("ruff"), "check", "--no-cache", "--select", "TID252", "--output-format", "concise", "."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_real_tree_passes_ruff() -> None:
    """The whole tree passes the project's full ruff configuration."""
    proc = subprocess.run(
        [tool("ruff"), "check", "--no-cache", "--output-format", "concise", "."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""Layering between workspace members, enforced by ruff's banned-api rule (TID251) in each member's pyproject.

Allowed direction: ``formers.kernels`` <- ``formers.core`` <- ``formers.<domain>``. Kernels import no other formers
package, core imports no domain, a domain imports neither the kernels (it goes through core) nor another domain.
Ruff bans a module *and its submodules* (``import formers.vision.models``, ``from formers.vision.x import y``), so
banning the top-level package of each member is enough. Not covered by any linter: ``importlib.import_module`` with
a string, which layering code must not use.
"""

from __future__ import annotations

import json
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
    """Every spelling of importing ``target`` that must count as importing it (one statement per line)."""
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
        f"if TYPE_CHECKING:\n    from {target}.sub import Name",
    ]


def ruff() -> str:
    """The workspace's ruff executable (skip when it is not installed)."""
    exe = Path(sys.executable).with_name("ruff")
    found = str(exe) if exe.is_file() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed in this environment")
    return found


def lint_source(source: str, filename: Path) -> list[dict]:
    """Ruff diagnostics for ``source`` as if it were ``filename`` (so that file's member config applies)."""
    cmd = [ruff(), "check", "--no-cache", "--stdin-filename", str(filename), "--output-format", "json", "-"]
    cmd += ["--select", "TID251"]
    proc = subprocess.run(cmd, input=source, capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def probe_path(module: str) -> Path:
    """A not-existing file inside ``module``'s source tree."""
    return MEMBERS[module] / "src" / Path(*module.split(".")) / "_layering_probe.py"


def lines_flagged(source: str, module: str) -> set[int]:
    """1-based line numbers of ``source`` (linted as a file of ``module``) where TID251 fires."""
    return {d["location"]["row"] for d in lint_source(source, probe_path(module)) if d["code"] == "TID251"}


def test_members_discovered() -> None:
    assert {KERNELS, CORE} <= set(MEMBERS)
    assert DOMAINS, "no domain members found"


@pytest.mark.parametrize("module", sorted(MEMBERS))
def test_banned_api_config_matches_layering(module: str) -> None:
    """Each member's pyproject bans exactly the packages the layering forbids (a new domain must be added)."""
    config = tomllib.loads((MEMBERS[module] / "pyproject.toml").read_text())
    banned = config["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-api"]
    assert set(banned) == banned_for(module)


def numbered_source(forms: list[str]) -> tuple[str, list[int]]:
    """Join import forms into one file; also return the line of each form's import (always its last line)."""
    source, rows = "", []
    for form in forms:
        rows.append(source.count("\n") + form.count("\n") + 1)
        source += form + "\n"
    return source, rows


@pytest.mark.parametrize("module", sorted(MEMBERS))
def test_banned_imports_are_flagged(module: str) -> None:
    """Every spelling of a forbidden import, submodules included, triggers TID251 in that member's tree."""
    forms = [form for target in sorted(banned_for(module)) for form in import_forms(target)]
    source, rows = numbered_source(forms)
    flagged = lines_flagged(source, module)
    missed = [form for form, row in zip(forms, rows, strict=True) if row not in flagged]
    assert not missed, f"TID251 did not fire in {module} for: {missed}"


@pytest.mark.parametrize("module", sorted(MEMBERS))
def test_allowed_imports_pass(module: str) -> None:
    """Imports along the allowed direction (and of the member itself) are not flagged."""
    source, _ = numbered_source([form for target in sorted(allowed_for(module)) for form in import_forms(target)])
    assert lines_flagged(source, module) == set()


def test_real_tree_respects_layering() -> None:
    """No layering violation (TID251 banned import, TID252 parent-relative import) anywhere in the tree."""
    proc = subprocess.run(
        [ruff(), "check", "--no-cache", "--select", "TID251,TID252", "--output-format", "concise", "."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_real_tree_passes_ruff() -> None:
    """The whole tree passes the project's full ruff configuration."""
    proc = subprocess.run(
        [ruff(), "check", "--no-cache", "--output-format", "concise", "."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

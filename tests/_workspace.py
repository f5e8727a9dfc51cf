"""The workspace members as the root ``pyproject.toml`` declares them (shared by the packaging and layering tests)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def member_pyprojects() -> dict[Path, dict]:
    """Member directory -> its parsed ``pyproject.toml``, from the root ``[tool.uv.workspace]`` globs."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = {}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for path in sorted(ROOT.glob(pattern)):
            if (path / "pyproject.toml").is_file():
                members[path] = tomllib.loads((path / "pyproject.toml").read_text())
    return members

"""MkDocs hook of the docs site: include repository files in pages and keep their links working.

The per-package READMEs are the domain pages (one source: the README a user sees on the index is the page of the
site). A page includes a file with one line ``<!-- include: packages/vision/README.md -->``; ``README.md#intro`` is
the root README's text before its first ``##`` heading (without its title), ``README.md#Install`` its ``## Install``
section (up to the next ``##`` heading), so the README stays the one source of that text. The relative links of
the included file are rebased from the file's folder to the page; a link to a repository file outside ``docs/``
becomes the page that includes that file when there is one (a package README -> its domain page, the root README ->
the home page), and otherwise plain text naming the path (the site has no repository browser), so
``mkdocs build --strict`` only fails on links that are really broken.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INCLUDE = re.compile(r"^<!-- include: (\S+?)(?:#(.+?))? -->$", flags=re.M)
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def _included_files() -> dict[str, str]:
    """Repository path of each included file -> the docs page (relative to docs/) that includes it."""
    pages = {"README.md": "index.md"}  # the home page shows the README's overview
    for page in sorted(DOCS.rglob("*.md")):
        for match in INCLUDE.finditer(page.read_text()):
            pages.setdefault(match.group(1), page.relative_to(DOCS).as_posix())
    return pages


def _rebase(text: str, source_dir: str, page: str, included: dict[str, str]) -> str:
    """Rewrite the relative links of ``text`` (written in repository folder ``source_dir``) for docs page ``page``."""
    page_dir = posixpath.dirname(f"docs/{page}")

    def link(match: re.Match[str]) -> str:
        label, target = match.groups()
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(source_dir, path))
        if repo_path in included and repo_path.endswith(".md"):
            repo_path, anchor = f"docs/{included[repo_path]}", anchor
        if repo_path.startswith("docs/") and (ROOT / repo_path).exists():
            new = posixpath.relpath(repo_path, page_dir) + (f"#{anchor}" if anchor else "")
            return f"[{label}]({new})"
        return label if repo_path in label else f"{label} (`{repo_path}`)"

    # fenced code is left alone (``table[i](x)`` is Python, not a link)
    parts = re.split(r"(^```.*?^```)", text, flags=re.M | re.S)
    return "".join(part if part.startswith("```") else LINK.sub(link, part) for part in parts)


def _part(text: str, part: str | None, path: str) -> str:
    """The whole file, its overview (``intro``: after the title, before the first ``##``) or one ``## part``."""
    if part is None:
        return text
    sections = re.split(r"^(?=## )", text, flags=re.M)
    if part == "intro":
        return sections[0].split("\n", 1)[1] if sections[0].startswith("# ") else sections[0]
    for section in sections[1:]:
        if section.splitlines()[0] == f"## {part}":
            return section
    raise ValueError(f"{path} has no section '## {part}' (included by a docs page)")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs hook signature)
    included = _included_files()
    src = page.file.src_uri

    def include(match: re.Match[str]) -> str:
        path, part = match.groups()
        text = _part((ROOT / path).read_text(), part, path)
        return _rebase(text, posixpath.dirname(path), src, included)

    markdown = INCLUDE.sub(include, markdown)
    return _rebase(markdown, posixpath.dirname(f"docs/{src}"), src, included)

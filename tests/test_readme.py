"""The READMEs and docs/: Python examples and shell commands run as written, links resolve, commands named exist.

Marker convention (README.md and the package READMEs): the HTML comment line ``<!-- readme-test: skip (reason) -->``
right before a code block keeps the tests from running that block; a shell line ending with
``  # readme-test: skip (reason)`` keeps that one line from running. Everything else runs.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE_READMES = sorted([*ROOT.glob("packages/*/README.md"), ROOT / "kernels" / "README.md"])
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, *PACKAGE_READMES, *DOCS]
SKIP_BLOCK = "<!-- readme-test: skip"
SKIP_LINE = re.compile(r"\s+# readme-test: skip(?: \((?P<reason>[^)]*)\))?\s*$")


def code_blocks(text: str, language: str) -> list[tuple[str, str | None]]:
    """``(code, skip reason or None)`` of each fenced block of ``language``, in order."""
    blocks = []
    for match in re.finditer(rf"^(?:([^\n]*)\n)?```{language}\n(.*?)^```", text, flags=re.S | re.M):
        before, code = match.groups()
        skip = None
        if before and before.startswith(SKIP_BLOCK):
            skip = re.search(r"\((.*)\)", before).group(1) if "(" in before else "marked"
        blocks.append((code, skip))
    return blocks


BLOCKS = [(page, code, skip) for page in PAGES for code, skip in code_blocks(page.read_text(), "python")]


def block_id(block: tuple[Path, str, str | None]) -> str:
    page, code, _ = block
    same_page = [c for p, c, _ in BLOCKS if p == page]
    return f"{page.relative_to(ROOT)}:block{same_page.index(code)}"


def test_readme_has_python_examples():
    assert any(page == README for page, _, _ in BLOCKS), "README.md lost its Python examples"
    for readme in PACKAGE_READMES:  # every package README stands alone: a quick start that runs
        assert any(p == readme and skip is None for p, _, skip in BLOCKS), f"{readme}: no runnable Python example"


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_python_block_runs(block, capsys, tmp_path, monkeypatch):
    page, code, skip = block
    if skip:
        pytest.skip(f"marked in {page.relative_to(ROOT)}: {skip}")
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    exec(compile(code, str(page), "exec"), {})
    if "print(list_models())" in code:  # entry-point discovery reaches the core models and every installed domain
        listed = capsys.readouterr().out
        expected = ("transformer_classifier", "itransformer", "swin_tiny_patch4_window7_224")
        assert all(name in listed for name in expected), listed


def test_readme_keeps_the_essentials():
    """The README stays the entry point: the two commands, install, train, predict, scale-out, and links to docs/."""
    text = README.read_text()
    for needed in ("make repro", "make test", "## Install", "## Train", "## Predict", "--trainer.strategy ddp"):
        assert needed in text, needed
    for page in ("docs/adding-a-model.md", "docs/design.md", "docs/results.md", "docs/benchmarks.md"):
        assert f"]({page})" in text, f"README does not link {page}"
        assert (ROOT / page).is_file(), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Every relative Markdown link points at an existing file (pages moved into docs/ keep working links)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    broken = [t for t in local if not (page.parent / t).exists()]
    assert not broken, f"{page.name}: {broken}"


def test_param_overrides_name_existing_keys():
    """``dvc exp run -S key=value`` examples use the params.yaml layout (``<domain>.data/.train``)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = [k for page in PAGES for k in re.findall(r"-S ([\w.]+)=", page.read_text())]
    assert keys, "no `-S key=value` example left"
    for key in keys:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"-S {key}: not a params.yaml key"
            node = node[part]


# ---------------------------------------------------------------------------------------------------------------------
# The README's shell commands. Set-up: `make sync` and `source .venv/bin/activate`, so the lines call `formers-*`,
# `dvc`, `ruff`, ... without `uv run`: the test puts this interpreter's bin folder first on PATH.
#
# Where they run: a `formers-*` line (it trains and writes `runs/`) runs in a temporary folder holding a copy of
# `pipelines/` in which each domain's `default.yaml` is its `tiny.yaml` (seconds instead of minutes; the run_dir of
# the default config kept, so the lines that read `runs/<domain>/default/checkpoints/...` find what the fit before
# them wrote); every other line only reads the repository (metrics, lint, the attention report) and runs in its root.
# Commands that train for long, install or run the test suite never run here: they must carry the skip marker.
NEVER_RUN = ("make ", "dvc repro", "dvc exp run", "pytest", "pip install", "uv pip", "uv sync", "uv build", "srun ")


def shell_lines(text: str) -> list[tuple[str, str | None]]:
    """``(command, skip reason or None)`` for each command line of the ```bash blocks (comments and blanks dropped)."""
    lines = []
    for code, block_skip in code_blocks(text, "bash"):
        for raw in code.replace("\\\n", " ").splitlines():
            command = raw.strip()
            if not command or command.startswith("#"):
                continue
            marked = SKIP_LINE.search(command)
            skip = block_skip or (marked and (marked.group("reason") or "marked"))
            lines.append((command, skip or None))
    return lines


README_LINES = shell_lines(README.read_text())


def test_readme_shell_lines_found():
    assert len(README_LINES) >= 10, README_LINES
    assert any(skip is None for _, skip in README_LINES), "every README command is marked skip"


def test_long_or_installing_readme_commands_are_marked():
    """Commands that train for long, install, or run the suite carry the skip marker (the command test never runs
    them; an unmarked one would run `make repro` or reinstall the environment)."""
    unmarked = [c for c, skip in README_LINES if skip is None and c.startswith(NEVER_RUN)]
    assert not unmarked, f"mark these README lines with `  # readme-test: skip (reason)`: {unmarked}"


def _workdir(tmp: Path) -> Path:
    """A folder with ``pipelines/`` whose ``<domain>/default.yaml`` are the tiny configs (default run_dir kept)."""
    shutil.copytree(ROOT / "pipelines", tmp / "pipelines")
    for tiny in (tmp / "pipelines").glob("*/tiny.yaml"):
        default = tiny.with_name("default.yaml")
        if default.is_file():
            run_dir = re.search(r"^run_dir: .*$", default.read_text(), flags=re.M)
            text = tiny.read_text()
            if run_dir:
                text = re.sub(r"^run_dir: .*$", run_dir.group(0), text, flags=re.M)
            default.write_text(text)
    return tmp


@pytest.mark.slow
def test_readme_shell_lines_run(tmp_path):
    """Every README shell line that is not marked runs and exits 0; the lines run and skipped are listed."""
    workdir = _workdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("OMP_NUM_THREADS", "1")
    report, failures = [], []
    for command, skip in README_LINES:
        if skip:
            report.append(f"skipped ({skip}): {command}")
            continue
        if command.startswith(NEVER_RUN):  # never run: it would train for long, install or recurse into the suite
            report.append(f"NOT RUN, must be marked: {command}")
            failures.append(f"{command}\n--- not run: long, installing or the suite itself; mark it skip")
            continue
        cwd = workdir if command.startswith("formers-") else ROOT
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - start
        report.append(f"ran, exit {done.returncode}, {seconds:.0f} s, in {cwd.name or cwd}: {command}")
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            failures.append(f"{command}\n--- exit {done.returncode}; output tail:\n{tail}")
    print("\n".join(report))
    assert not failures, "README commands failed:\n\n" + "\n\n".join(failures) + "\n\nall lines:\n" + "\n".join(report)

"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, capsys):
    exec(compile(code, str(README), "exec"), {})
    if "print(list_models())" in code:  # entry-point discovery reaches the core models and every installed domain
        listed = capsys.readouterr().out
        expected = ("transformer_classifier", "itransformer", "swin_tiny_patch4_window7_224")
        assert all(name in listed for name in expected), listed

"""The docs site: ``mkdocs build --strict`` passes, and the model cards' parameter counts are the registry's.

Each card under ``docs/models/`` has a table whose header starts ``| registry name |`` and has a ``parameters``
column; a row's first cell is a registry name (```pit_ti_224```) or a call with keyword overrides
(```itransformer(d_model=512, pred_len=336)```). The counts are checked by building every row's model on PyTorch's
``meta`` device (no memory, no init arithmetic), so a card cannot drift from the code.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from formers.core.registry import create_model, get_model_entry, list_models

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(p for p in (ROOT / "docs" / "models").glob("*.md") if p.name != "index.md")
# models without a card of their own: the baselines trained beside the papers' models, and core's generic classifier
NO_CARD = ("gps_*", "fno_*", "transformer_classifier")


def card_rows(card: Path) -> list[tuple[str, dict, int]]:
    """``(name, kwargs, parameters)`` of each row of the card's registry tables."""
    rows, columns = [], None
    for line in card.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            columns = None
        elif cells[0] == "registry name":
            columns = cells
        elif columns and not set(cells[0]) <= set("-: "):
            call = ast.parse(cells[0].strip("`"), mode="eval").body
            name = call.func.id if isinstance(call, ast.Call) else call.id
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in getattr(call, "keywords", [])}
            count = int(re.sub(r"[^\d]", "", cells[columns.index("parameters")]))
            rows.append((name, kwargs, count))
    return rows


ROWS = [(card, *row) for card in CARDS for row in card_rows(card)]


def test_every_family_has_a_card_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert len(CARDS) == 15, [c.name for c in CARDS]
    for card in CARDS:
        assert f"models/{card.name}" in nav, f"{card.name} is not in mkdocs.yml's nav"
        assert card_rows(card), f"{card.name}: no `| registry name | ... | parameters |` table"


def test_cards_cover_the_registry():
    """Every configuration a formers package registers is on its family's card (a new configuration needs its row;
    models registered by examples run in the same session, e.g. docs/adding-a-model.md's, are not packaged)."""
    on_cards = {name for _, name, _, _ in ROWS}
    packaged = [n for n in list_models() if (get_model_entry(n).factory.__module__ or "").startswith("formers.")]
    registered = {n for n in packaged if not any(re.fullmatch(p.replace("*", ".*"), n) for p in NO_CARD)}
    assert registered <= on_cards, f"registered but on no model card: {sorted(registered - on_cards)}"


def row_id(row: tuple[Path, str, dict, int]) -> str:
    card, name, kwargs, _ = row
    return f"{card.stem}:{name}" + (f"({','.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")


@pytest.mark.parametrize("card, name, kwargs, count", ROWS, ids=[row_id(r) for r in ROWS])
def test_card_parameter_counts(card, name, kwargs, count):
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    built = sum(p.numel() for p in model.parameters())
    assert built == count, f"{card.name}: {name}({kwargs}) has {built:,} parameters, the card says {count:,}"


def test_mkdocs_config_names_existing_pages():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for value in node:
                yield from pages(value)

    listed = list(pages(config["nav"]))
    missing = [p for p in listed if not (ROOT / "docs" / p).is_file()]
    assert not missing, missing
    for domain in ("core", "kernels", "vision", "timeseries", "graph", "pde", "bytes"):
        assert f"domains/{domain}.md" in listed and f"api/{domain}.md" in listed, domain


def test_mkdocs_build_strict(tmp_path):
    """The whole site builds with warnings as errors (broken links, unknown pages, docstrings mkdocstrings rejects)."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    site = tmp_path / "site"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    for page in ("index.html", "getting-started/index.html", "models/pit/index.html", "api/core/index.html"):
        assert (site / page).is_file(), page
    for domain in ("core", "kernels", "vision", "timeseries", "graph", "pde", "bytes"):
        html = (site / "domains" / domain / "index.html").read_text()
        assert f"formers-{domain}" in html, f"the {domain} page does not show its README"
    api = (site / "api" / "core" / "index.html").read_text()
    assert "create_model" in api and "doc-function" in api, "the API page has no rendered docstrings"

"""benchmarks/bytes.py runs end to end at tiny sizes and records finite, positive ratios measured in one run (the
numbers themselves come from the DVC stage ``pipelines/bytes/dvc.yaml:bench``); without data it skips the sections
that need it, with notes. Run in this process (importing lightning again in a subprocess would cost more than the
benchmark itself)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "bytes"
TINY = ["--threads", "1", "--sizes", "tiny", "--repeats", "1", "--warmup", "0"]


def benchmark() -> ModuleType:
    """benchmarks/bytes.py as a module (its folder on sys.path for ``_timing``)."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("_bytes_benchmark", REPO / "benchmarks" / "bytes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv: list[str]) -> dict:
    """``main(argv)`` with this process's thread count and RNG state restored afterwards."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            return benchmark().main(argv)
    finally:
        torch.set_num_threads(threads)


def ratios(row: dict) -> list[float]:
    return [value for key, value in row.items() if "_vs_" in key]


def check_ratios(row: dict, expected: int) -> None:
    found = ratios(row)
    assert len(found) == expected, row
    assert all(math.isfinite(r) and r > 0 for r in found), row


@pytest.mark.timeout(120)
@pytest.mark.skipif(not (DATA / "fsdd").is_dir() or not (DATA / "code").is_dir(), reason=f"no shared data at {DATA}")
def test_bytes_benchmark_runs_and_records_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bytes.json"
    run([*TINY, "--json", str(out)])
    result = json.loads(out.read_text())
    assert {"cpu", "torch"} <= set(result["machine"])
    assert result["env"]["threads"] == 1 and result["env"]["sizes"] == "tiny"
    padding = result["padding"]
    for case in ("sample", "with_longest"):
        row = padding["byteformer"][case]
        check_ratios(row, 1)
        assert len(row["files"]) == 8 and 0 < row["token_fill"] <= 1
    assert padding["byteformer"]["with_longest"]["bytes"][-1] == 36_568  # FSDD's longest recording
    check_ratios(padding["bgpt"]["cpython"], 2)  # padded and naive padded over packed
    if "cpython_whole" in padding["bgpt"]:
        check_ratios(padding["bgpt"]["cpython_whole"], 2)
    if (DATA / "abc").is_dir():
        conversion = padding["bgpt"]["conversion"]
        check_ratios(conversion, 1)
        assert 0 < conversion["decoded_fraction"] < 1
    generation = result["generation"]
    assert generation["prompt_source"] == "cpython"
    row = generation["tiny"]
    check_ratios(row, 1)
    assert row["identical"] is True and row["generated_bytes"] > 0
    assert row["cached"]["bytes_per_s"] > 0 and row["recompute"]["bytes_per_s"] > 0
    official = result["official"]
    check_ratios(official["byteformer"], 2)
    assert official["byteformer"]["official_compat_logits_max_abs_diff"] < 1e-4  # the oracle and our compat path
    if "bgpt" in official:
        check_ratios(official["bgpt"], 1)
        assert official["bgpt"]["loss_abs_diff"] < 1e-4
    else:
        assert any("transformers" in note for note in result["notes"])


@pytest.mark.timeout(60)
def test_bytes_benchmark_without_data_skips_with_notes(tmp_path: Path) -> None:
    result = run([*TINY, "--data", str(tmp_path / "nowhere"), "--json", str(tmp_path / "bytes.json")])
    assert result["padding"] == {} and result["official"] == {}
    assert result["generation"]["prompt_source"] == "random" and result["generation"]["tiny"]["identical"] is True
    notes = " ".join(result["notes"])
    assert "FSDD" in notes and "CPython" in notes and "Nottingham" in notes
    assert json.loads((tmp_path / "bytes.json").read_text())["notes"] == result["notes"]

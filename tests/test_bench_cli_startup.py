"""benchmarks/cli_startup.py: times a script's ``--help`` against its ``fit --help`` in one run and records both."""

import json
from pathlib import Path

from _bench import benchmark_module


def test_startup_benchmark_reports_both_paths_and_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    with benchmark_module("cli_startup") as bench:
        metrics = bench.main(["--domains", "core", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    core = metrics["startup"]["core"]
    assert core["help_s"] > 0 and core["fit_help_s"] > 0
    assert abs(core["ratio"] - core["fit_help_s"] / core["help_s"]) < 0.05  # medians rounded to ms in the JSON
    written = json.loads(out.read_text())
    assert written["startup"] == metrics["startup"] and "machine" in written

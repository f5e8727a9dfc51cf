"""The committed metrics as readable tables: one table per group of runs, one row per run, its test metrics.

``dvc metrics show`` puts every metric of every stage in one row per file (192 columns for the whole repository);
this prints what DVC reads (``dvc metrics show --json``), one table per folder of runs (``results/graph/zinc/`` holds
the three ZINC runs) with one row per run, keeping the metrics under one prefix (``test`` by default)::

    python docs/metrics_table.py                                         # every training run, test metrics
    python docs/metrics_table.py results/timeseries/etth1/*/metrics.json  # the ETTh1 runs only
    python docs/metrics_table.py --prefix val                            # validation metrics instead

Each row says which CPU the metrics came from (``machine``: model, torch CPU capability and, where recorded, the
precision that ran), read from the ``machine.json`` a run writes next to its ``metrics.json``
(``<run_dir>/test/machine.json`` for test metrics when the test ran on its own); ``-`` where a run has none.

Benchmark files (``results/bench/*.json``) have no test metrics; ``dvc metrics show results/bench/attention.json``
shows them.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import subprocess
import sys
from collections import defaultdict


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """``{"test": {"mse": 0.38}}`` -> ``{"test.mse": 0.38}`` (numbers only)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = value
    return flat


def dvc_metrics(targets: list[str]) -> dict[str, dict[str, float]]:
    """Metrics file -> flat metrics of the workspace, as ``dvc metrics show --json`` reports them."""
    out = subprocess.run(["dvc", "metrics", "show", "--json", *targets], capture_output=True, text=True, check=True)
    files = json.loads(out.stdout or "{}").get("", {}).get("data", {})
    return {path: flatten(entry.get("data", {})) for path, entry in sorted(files.items())}


def machine_of(run_dir: str, prefix: str) -> str:
    """``"AMD EPYC, AVX2, 32-true"``: the CPU model, torch capability and precision a run's metrics came from, from
    its ``machine.json`` (the test subfolder's for test metrics, where the test ran on its own); ``-`` without one."""
    candidates = [posixpath.join(run_dir, prefix, "machine.json"), posixpath.join(run_dir, "machine.json")]
    for path in candidates:
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        cpu = record.get("cpu") or {}
        resolved = (record.get("precision") or {}).get("resolved")
        return ", ".join(str(part) for part in (cpu.get("model"), cpu.get("capability"), resolved) if part) or "-"
    return "-"


def tables(metrics: dict[str, dict[str, float]], prefix: str, digits: int) -> str:
    """Markdown tables: one per folder of run folders, a row per run (and the machine it ran on), columns = the
    metrics under ``prefix``."""
    groups: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for path, values in metrics.items():
        kept = {k.removeprefix(f"{prefix}."): v for k, v in values.items() if k.startswith(f"{prefix}.")}
        if kept:
            run_dir = posixpath.dirname(path)
            groups[posixpath.dirname(run_dir)][posixpath.basename(run_dir)] = kept
    lines = []
    for group, runs in groups.items():
        columns = sorted({name for values in runs.values() for name in values})
        header = "| run | " + " | ".join(columns) + " | machine |"
        lines += [f"{group}/", "", header, "|---" * (len(columns) + 2) + "|"]
        for run, values in runs.items():
            cells = [f"{values[c]:.{digits}g}" if c in values else "-" for c in columns]
            machine = machine_of(posixpath.join(group, run), prefix)
            lines.append(f"| {run} | " + " | ".join(cells) + f" | {machine} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="metrics files (default: every metrics file of the DVC pipelines)")
    parser.add_argument("--prefix", default="test", help="metric group to show (default: test)")
    parser.add_argument("--digits", type=int, default=4, help="significant digits (default: 4)")
    args = parser.parse_args(argv)
    text = tables(dvc_metrics(args.targets), args.prefix, args.digits)
    if not text:
        print(f"no '{args.prefix}.*' metrics in {args.targets or 'the DVC pipelines'}", file=sys.stderr)
        return 1
    try:
        print(text)
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Start-up of the ``formers-<domain>`` scripts: ``--help`` against ``fit --help``, in one run.

``formers-<d> --help`` is answered from the domain's declaration (torch, no Lightning); ``formers-<d> fit --help``
builds the full Lightning parser, which is what every ``--help`` cost before the lazy start-up (Lightning and,
through torchmetrics, torchvision / scipy / matplotlib; the domain's data and model modules). Each call runs the
installed console script (next to this interpreter) in a fresh process, one thread; candidates interleaved in every
round, medians of ``--repeats`` rounds after ``--warmup`` (the file cache warm). ``ratio`` = ``fit --help`` median /
``--help`` median.

Usage::

    python benchmarks/cli_startup.py                     # results/bench/cli_startup.json
    python benchmarks/cli_startup.py --domains core vision --repeats 3 --json /tmp/startup.json

Nothing here asserts absolute times: they depend on the disk cache and on whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from _timing import interleaved_timings, load_average, write_json

DOMAINS = ("core", "timeseries", "vision", "graph", "pde", "bytes")
ROOT = Path(__file__).resolve().parents[1]


def script(domain: str) -> str:
    """The installed console script (next to this interpreter, as in an activated venv)."""
    path = Path(sys.executable).parent / f"formers-{domain}"
    if not path.is_file():
        raise SystemExit(f"{path} not found: install the workspace (make sync) before running this benchmark")
    return str(path)


def call(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "bench" / "cli_startup.json")
    args = parser.parse_args(argv)

    candidates = {}
    for domain in args.domains:
        exe = script(domain)
        candidates[f"{domain}:help"] = lambda exe=exe: call([exe, "--help"])
        candidates[f"{domain}:fit_help"] = lambda exe=exe: call([exe, "fit", "--help"])
    load_before = load_average()
    timings = interleaved_timings(candidates, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
    results = {}
    for domain in args.domains:
        help_, fit_help = timings[f"{domain}:help"], timings[f"{domain}:fit_help"]
        results[domain] = {
            "help_s": round(help_.median, 3),
            "fit_help_s": round(fit_help.median, 3),
            "ratio": round(fit_help.median / help_.median, 2),
        }
        print(
            f"formers-{domain:<11} --help {help_.median:6.2f} s   fit --help {fit_help.median:6.2f} s   "
            f"ratio {fit_help.median / help_.median:5.2f}x"
        )
    metrics = {
        "startup": results,
        "repeats": args.repeats,
        "load_average": {"before": load_before, "after": load_average()},
    }
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

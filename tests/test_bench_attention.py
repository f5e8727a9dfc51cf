"""The attention benchmark runs end to end at a tiny size and writes well-formed reports (no timing assertions)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from _bench import benchmark_module
from formers.core import machine

TINY = ["--threads", "1", "--batch", "1", "--heads", "2", "--length", "16", "--head-dim", "8"]
TINY += ["--repeats", "1", "--warmup", "0", "--matmul-size", "32"]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with benchmark_module("attention") as module:
        yield module


@pytest.mark.parametrize("native", [True, False], ids=["native_bf16", "emulated_bf16"])
def test_reports(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    # cpu_bf16 is available only where bf16 is native; faked both ways, so each rule is checked on every machine
    monkeypatch.setattr(machine, "native_bf16", lambda *args, **kwargs: native)
    metrics = bench.main([*TINY, "--metrics-json", str(tmp_path / "m.json"), "--plot-tsv", str(tmp_path / "p.tsv")])
    written = json.loads((tmp_path / "m.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == metrics
    backends = bench.available_backends()
    assert "sdpa" in backends and ("cpu_bf16" in backends) == native
    for case in bench.CASES:
        for mode in bench.MODES:
            for dtype in bench.DTYPES:
                group = metrics[case][mode][dtype]
                assert group["naive_gflops"] > 0
                assert group["matmul_gflops"] > 0
                assert group["sdpa_vs_naive"] > 0
                tolerance = 1e-5 if dtype == "fp32" else 5e-2
                assert group["sdpa_max_abs_err"] < tolerance
    rows = list(csv.DictReader((tmp_path / "p.tsv").open(), delimiter="\t"))
    groups: dict[tuple[str, str, str], set[str]] = {}
    for row in rows:
        groups.setdefault((row["dtype"], row["case"], row["mode"]), set()).add(row["impl"])
    assert len(groups) == len(bench.DTYPES) * len(bench.CASES) * len(bench.MODES)
    for (dtype, _, mode), impls in groups.items():
        # naive, the matmul ceiling and every backend that serves the call (a refusing backend is skipped, not fatal)
        assert {"naive", "matmul", "sdpa"} <= impls <= {"naive", "matmul", *backends}
        assert ("cpu_bf16" in impls) == ("cpu_bf16" in backends and dtype == "bf16" and mode == "fwd_bwd")
    assert "x naive" in capsys.readouterr().out


def test_subset_and_flops(bench: ModuleType) -> None:
    metrics = bench.main([*TINY, "--dtypes", "fp32", "--cases", "causal", "--modes", "fwd", "--backends", "sdpa"])
    assert set(metrics) == {"env", "matmul", "causal"}
    assert set(metrics["causal"]["fwd"]["fp32"]) >= {"sdpa_vs_naive", "naive_gflops", "matmul_gflops"}
    shape = bench.Shape(2, 3, 4, 5)
    full = bench.attention_flops(shape, "fwd", causal=False)
    assert full == 4 * 2 * 3 * 4**2 * 5
    assert bench.attention_flops(shape, "fwd_bwd", causal=True) == 1.5 * full


def test_rejects_unknown_choice(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtypes", "fp16"])

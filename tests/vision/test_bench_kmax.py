"""The kMaX benchmark (formers vs the official-arithmetic oracle) runs end to end at a tiny size and writes a
well-formed report (no timing assertions: only that both implementations ran, agree, and the ratios are quotients)."""

from __future__ import annotations

import json
import types

import pytest

from _bench import benchmark_module

pytest.importorskip("formers.vision.models.kmax")

TINY = ["--model", "r18_narrow", "--threads", "1", "--size", "33", "--bf16-size", "33", "--mem-size", "33"]
TINY += ["--repeats", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("kmax") as module:
        yield module


def _in_process(bench):
    """``subprocess.run`` of a memory child, run in this process (importing formers in a fresh interpreter takes
    longer than the tiny measurement itself)."""

    def run(cmd, **kwargs):
        assert cmd[-2] == "--memory-child" and kwargs["env"]["MALLOC_MMAP_THRESHOLD_"]
        result = bench.main(cmd[-2:])
        return types.SimpleNamespace(returncode=0, stdout="log line\n" + json.dumps(result) + "\n", stderr="")

    return run


def test_fp32_timings_and_memory(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", _in_process(bench))
    out = tmp_path / "kmax.json"
    metrics = bench.main([*TINY, "--dtypes", "fp32", "--mem-modes", "infer", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == json.loads(json.dumps(metrics))
    assert metrics["params"]["formers"] == metrics["params"]["official"] > 0
    assert metrics["max_rel_diff"] < 1e-4
    for mode in bench.MODES:
        g = metrics["fp32"][mode]
        assert g["formers"]["median_ms"] > 0 and g["official"]["median_ms"] > 0
        assert g["formers_speedup"] == pytest.approx(g["official"]["median_ms"] / g["formers"]["median_ms"], rel=2e-2)
    mem = metrics["memory"]
    assert mem["size"] == [33, 33] and "train" not in mem and mem["method"]
    assert all(mem["infer"][impl]["peak_mib"] > 0 for impl in bench.IMPLS)
    assert "official" in capsys.readouterr().out


def test_bf16_infer_only(bench):
    metrics = bench.main([*TINY, "--dtypes", "bf16", "--modes", "infer", "--mem-modes", "", "--no-json"])
    assert set(metrics["bf16"]) == {"size", "infer"} and "memory" not in metrics
    assert metrics["bf16"]["infer"]["formers"]["median_ms"] > 0


@pytest.mark.parametrize(
    "bad",
    [
        ["--dtypes", "fp16"],
        ["--size", "32"],
        ["--modes", "eval"],
        ["--train-batch", "1"],
        ["--model", "r101"],
        ["--dtypes", "", "--mem-modes", ""],
    ],
)
def test_rejects_bad_arguments(bench, bad):
    with pytest.raises(SystemExit):
        bench.parse_args(bad)


def test_quick_mode_and_sizes(bench):
    args = bench.parse_args(["--quick", "--size", "97x129"])
    assert args.size == (65, 65) and args.mem_size == (129, 129) and args.repeats == 2  # --quick wins
    assert bench.parse_args(["--size", "97x129"]).size == (97, 129)
    assert bench.parse_args([]).mem_size == (641, 641)
    images, targets, semantic = bench.make_batch(2, (33, 41), num_classes=5)
    assert images.shape == (2, 3, 33, 41) and semantic.shape == (2, 9, 11)
    assert all(t["masks"].shape == (8, 9, 11) and t["labels"].max() < 5 for t in targets)
    assert ((semantic == 5).sum((1, 2)) > 0).all()  # a void region in every image

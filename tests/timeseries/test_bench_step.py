"""The training-step benchmark runs end to end on the tiny registry configs and reports every number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _bench import benchmark_module


def test_bench_step_tiny(tmp_path: Path, capsys) -> None:
    with benchmark_module("timeseries_step") as bench:
        metrics = bench.main(
            ["--tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--metrics-json", str(tmp_path / "m.json")]
        )
        models = bench.MODELS
    out = capsys.readouterr().out
    assert all(name in out for name in models)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == metrics
    assert metrics["config"]["threads"] == 1
    for name in models:
        result = metrics[name]
        assert result["params"] > 0
        assert result["fp32_s_per_step"] > 0 and result["bf16_s_per_step"] > 0
        assert result["bf16_over_fp32"] > 0


def test_bench_step_selection(tmp_path: Path, capsys) -> None:
    with benchmark_module("timeseries_step") as bench:
        metrics = bench.main(["--tiny", "--models", "itransformer", "--dtypes", "fp32", "--steps", "1"])
    out = capsys.readouterr().out
    assert "itransformer" in out and "informer" not in out.replace("itransformer", "")
    assert set(metrics) == {"config", "load_average", "load_average_after", "itransformer"}
    assert "bf16_over_fp32" not in metrics["itransformer"]


def test_bench_step_reference(tmp_path: Path, capsys) -> None:
    """--reference times the reference transcription in the same rounds, at the same parameter count."""
    with benchmark_module("timeseries_step") as bench:
        metrics = bench.main(
            ["--tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--dtypes", "fp32", "--reference", "--profile"]
        )
    out = capsys.readouterr().out
    assert "fp32/ref" in out and "in GEMM/conv/FFT" in out
    for name in bench.MODELS:
        result = metrics[name]
        assert result["reference_params"] == result["params"]
        assert result["reference_s_per_step"] > 0
        assert result["fp32_over_reference"] == result["fp32_s_per_step"] / result["reference_s_per_step"]
        for profile in result["profile"].values():  # where the step's time goes, and the bound it sets
            assert 0 < profile["gemm_s"] <= profile["total_s"] and 0 < profile["gemm_share"] <= 1
            assert profile["bound"] == pytest.approx(1 / profile["gemm_share"])


def test_bench_step_reference_is_cpu_only() -> None:
    with benchmark_module("timeseries_step") as bench, pytest.raises(SystemExit):
        bench.main(["--tiny", "--reference", "--device", "cuda"])


def test_bench_step_times_both_cpu_kernel_sets(tmp_path: Path, capsys) -> None:
    """--isa native avx2: one fresh run per kernel set; the AVX2 one runs under the torch/oneDNN overrides (or is the
    native run, on a CPU whose own kernels are AVX2)."""
    argv = ["--tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--dtypes", "fp32", "--reference"]
    with benchmark_module("timeseries_step") as bench:
        metrics = bench.main([*argv, "--models", "itransformer", "--isa", "native", "avx2"])
        forced = bench.main([*argv, "--models", "itransformer", "--isa", "avx2", "--metrics-json", str(tmp_path / "a")])
    runs = metrics["isa_runs"]
    assert set(runs) == {"native", "avx2"}
    assert runs["native"]["itransformer"]["fp32_over_reference"] > 0
    native_capability = runs["native"]["machine"]["cpu"]["capability"]
    if native_capability == "AVX2":  # this CPU's own kernels are the AVX2 ones: not timed twice
        assert runs["avx2"] == {"same_as": "native", "capability": "AVX2"}
    else:
        assert runs["avx2"]["machine"]["cpu"]["capability"] == "AVX2"
    avx2 = forced["isa_runs"]["avx2"]
    assert avx2["machine"]["cpu"]["capability"] == "AVX2"
    assert avx2["machine"]["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and avx2["machine"]["env"]["ONEDNN_MAX_CPU_ISA"]
    assert json.loads((tmp_path / "a").read_text())["isa_runs"] == forced["isa_runs"]
    assert "fp32_over_reference per CPU kernel set" in capsys.readouterr().out

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
            ["--tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--dtypes", "fp32", "--reference"]
        )
    assert "fp32/ref" in capsys.readouterr().out
    for name in bench.MODELS:
        result = metrics[name]
        assert result["reference_params"] == result["params"]
        assert result["reference_s_per_step"] > 0
        assert result["fp32_over_reference"] == result["fp32_s_per_step"] / result["reference_s_per_step"]


def test_bench_step_reference_is_cpu_only() -> None:
    with benchmark_module("timeseries_step") as bench, pytest.raises(SystemExit):
        bench.main(["--tiny", "--reference", "--device", "cuda"])

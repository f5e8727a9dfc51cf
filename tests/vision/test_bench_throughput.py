"""The vision throughput benchmark runs end to end at tiny sizes and writes a well-formed report (no timing
assertions: only that both implementations ran, agree on the logits and the ratio is their quotient)."""

from __future__ import annotations

import json

import pytest

from _bench import benchmark_module

TINY = ["--tiny", "--threads", "1", "--repeats", "1", "--warmup", "0", "--batch", "2", "--train-batch", "2"]


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("vision_throughput") as module:
        yield module


def test_reports_both_implementations(bench, tmp_path, capsys):
    models = [m for m in bench.DEFAULT_MODELS if m in bench.fv.list_models()]
    if not models:
        pytest.skip("no PiT / CrossViT / Swin model registered yet")
    metrics = bench.main([*TINY, "--models", ",".join(models), "--metrics-json", str(tmp_path / "m.json")])
    written = json.loads((tmp_path / "m.json").read_text())
    assert written.pop("machine")["cpu"]["capability"]  # every benchmark JSON records the machine it ran on
    assert written == json.loads(json.dumps(metrics))
    for name in models:
        group = metrics[name]
        assert group["params"]["formers"] == group["params"]["timm"] > 0
        assert group["max_abs_diff"] < 1e-4, f"{name}: formers and timm logits differ with the same weights"
        for mode in bench.MODES:
            g = group[mode]
            assert g["formers_img_s"] > 0 and g["timm_img_s"] > 0 and g["batch"] == 2
            assert g["formers_vs_timm"] == pytest.approx(g["formers_img_s"] / g["timm_img_s"])
    out = capsys.readouterr().out
    assert all(name in out for name in models) and "formers" in out


def test_bf16_and_bad_names(bench):
    model = next((m for m in bench.DEFAULT_MODELS if m in bench.fv.list_models()), None)
    if model is None:
        pytest.skip("no PiT / CrossViT / Swin model registered yet")
    metrics = bench.main([*TINY, "--models", model, "--bf16"])
    assert metrics["env"]["bf16"] is True and metrics[model]["infer"]["formers_img_s"] > 0
    with pytest.raises(SystemExit):
        bench.main([*TINY, "--models", "t2t_vit_14"])  # formers only: timm has no T2T-ViT


def test_times_both_cpu_kernel_sets(bench, tmp_path, capsys):
    models = [m for m in bench.DEFAULT_MODELS if m in bench.fv.list_models()][:1]
    argv = [*TINY, "--models", models[0], "--isa", "avx2", "--profile", "--metrics-json", str(tmp_path / "m.json")]
    run = bench.main(argv)["isa_runs"]["avx2"]
    assert 0 < run[models[0]]["train"]["profile"]["timm"]["gemm_share"] <= 1
    assert run["machine"]["cpu"]["capability"] == "AVX2" and run["machine"]["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert run[models[0]]["train"]["formers_vs_timm"] > 0
    assert "formers / timm throughput per CPU kernel set" in capsys.readouterr().out

"""Know the machine, and the cross-CPU promise of ``make repro``.

* :func:`formers.core.machine.machine_report` reads the CPU kind (torch capability, AVX-512/bf16/AMX flags), threads,
  versions and the environment overrides; ``python -m formers.core.attention`` prints it; every CLI run writes it to
  ``<run_dir>/machine.json`` (never into ``metrics.json``) and every benchmark JSON holds it.
* The cross-CPU promise (docs/results.md): on one CPU kind with the pinned thread count a run is byte-identical; across
  kinds (AVX-512 vs AVX2 kernels, emulated with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) the tiny core
  run agrees within ``CROSS_CPU_LOSS_TOL`` on val loss and ``CROSS_CPU_ACC_TOL`` on val accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _bench import benchmark_module
from formers.core.attention.__main__ import main as attention_main
from formers.core.machine import format_machine_report, machine_report, onednn_allows_bf16

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "pipelines" / "core" / "tiny.yaml"
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# The documented cross-CPU tolerance of the tiny core run (4 epochs, 256 val samples). Measured on an AMD EPYC
# (AVX-512 + bf16): |val loss AVX-512 - AVX2| = 2e-7 (float32 rounding of different kernels); accuracy identical.
CROSS_CPU_LOSS_TOL = 1e-4
CROSS_CPU_ACC_TOL = 1 / 256  # one validation sample may flip

AVX2_ONLY = "processor\t: 0\nmodel name\t: Test CPU AVX2\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nmodel name\t: Test CPU AMX\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


# ------------------------------------------------------------------------------------------------- machine report


AVX2_CPU = {"model": "Test CPU AVX2", "avx2": True, "avx512": False, "amx": False, "bf16_instructions": False}
AMX_CPU = {"model": "Test CPU AMX", "avx512": True, "avx512_bf16": True, "amx": True, "bf16_instructions": True}


@pytest.mark.parametrize(("cpuinfo", "expected"), [(AVX2_ONLY, AVX2_CPU), (SAPPHIRE, AMX_CPU)])
def test_machine_report_reads_the_cpu_flags(tmp_path: Path, cpuinfo: str, expected: dict) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    cpu = machine_report(path)["cpu"]
    assert {key: cpu[key] for key in expected} == expected
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    # native in this process: the instructions, and torch's AVX-512 kernels and oneDNN's bf16 ones in use
    in_use = cpu["capability"].startswith("AVX512") and onednn_allows_bf16()
    assert cpu["native_bf16"] == (expected["bf16_instructions"] and in_use)
    assert (cpu["bf16_emulated_because"] is None) == cpu["native_bf16"]


def test_machine_report_without_cpuinfo_still_reports(tmp_path: Path) -> None:
    report = machine_report(tmp_path / "absent")  # not Linux: no flags, but never an error
    assert report["cpu"]["native_bf16"] is False and report["cpu"]["model"]
    assert report["torch"] == {"version": torch.__version__, "threads": torch.get_num_threads()}


def test_machine_report_names_the_overrides_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    report = machine_report()
    assert report["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and "ATEN_CPU_CAPABILITY" not in report["env"]
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in format_machine_report(report)
    json.dumps(report, allow_nan=False)  # what MachineInfo writes must be plain JSON


def test_attention_main_prints_the_machine_report(capsys: pytest.CaptureFixture[str]) -> None:
    attention_main()
    out = capsys.readouterr().out
    assert f"torch capability {torch.backends.cpu.get_cpu_capability()}" in out
    assert f"threads {torch.get_num_threads()}" in out and "native bf16:" in out


def test_benchmark_json_records_the_machine(tmp_path: Path) -> None:
    with benchmark_module("attention") as bench:
        bench.main(
            ["--threads", "1", "--batch", "1", "--heads", "1", "--length", "16", "--head-dim", "8", "--repeats", "1",
             "--warmup", "0", "--matmul-size", "32", "--dtypes", "fp32", "--cases", "dense", "--modes", "fwd",
             "--metrics-json", str(tmp_path / "bench.json")]
        )  # fmt: skip
    machine = json.loads((tmp_path / "bench.json").read_text())["machine"]
    assert machine["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["torch"]["threads"] == 1


# ----------------------------------------------------------------------------------------- cross-CPU reproducibility


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("formers-core")
    return [str(script)] if script.exists() else [sys.executable, "-m", "formers.core.main"]


def _start(run_dir: Path, isa_env: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in AVX2}
    env.update(isa_env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = [*_cli(), "fit", "--config", str(TINY), "--run_dir", str(run_dir)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, run_dir: Path) -> tuple[bytes, dict]:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-4000:]
    return (run_dir / "metrics.json").read_bytes(), json.loads((run_dir / "machine.json").read_text())


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[bytes, dict]]]:
    """The tiny core fit twice with the native kernels and twice with the AVX2 ones (two children at a time)."""
    root = tmp_path_factory.mktemp("cross_cpu")
    runs: dict[str, list[tuple[bytes, dict]]] = {"native": [], "avx2": []}
    for rep in range(2):
        procs = {kind: (_start(root / f"{kind}{rep}", env), root / f"{kind}{rep}") for kind, env in
                 (("native", {}), ("avx2", AVX2))}  # fmt: skip
        for kind, (proc, run_dir) in procs.items():
            runs[kind].append(_finish(proc, run_dir))
    return runs


@pytest.mark.slow
def test_same_cpu_kind_is_byte_identical(kinds: dict[str, list[tuple[bytes, dict]]]) -> None:
    for kind, ((first, _), (second, _)) in kinds.items():
        assert first == second, f"{kind}: two runs with the same kernels and 1 thread differ"


@pytest.mark.slow
def test_every_run_records_its_cpu_kind_beside_not_inside_the_metrics(kinds) -> None:
    (native_metrics, native), (_, avx2) = kinds["native"][0], kinds["avx2"][0]
    assert avx2["cpu"]["capability"] == "AVX2" and avx2["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert native["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert native["torch"]["threads"] == avx2["torch"]["threads"] == 1
    assert "machine" not in json.loads(native_metrics) and "cpu" not in json.loads(native_metrics)


@pytest.mark.slow
def test_cross_cpu_kinds_agree_within_the_documented_tolerance(kinds) -> None:
    native, avx2 = (json.loads(kinds[kind][0][0])["val"] for kind in ("native", "avx2"))
    assert abs(native["loss"] - avx2["loss"]) <= CROSS_CPU_LOSS_TOL, (native, avx2)
    assert abs(native["acc"] - avx2["acc"]) <= CROSS_CPU_ACC_TOL, (native, avx2)

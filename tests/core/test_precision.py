"""Precision that cannot backfire (issue 15): bf16 only where the hardware runs it natively.

* ``native_bf16()`` needs bf16 instructions (AVX512-BF16 / AMX), torch's AVX-512 kernels and oneDNN not capped below
  bf16; each override is checked with a fake cpuinfo, and the real AVX2 override in a fresh interpreter (torch and
  oneDNN read ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` at import).
* ``resolve_precision("auto")``: ``bf16-mixed`` where native, ``32-true`` elsewhere; an explicit bf16 request on a CPU
  that emulates bf16 warns once per process.
* attention ``auto`` never picks a bf16 kernel where bf16 is emulated.
* the CLI: ``trainer.precision`` takes ``auto`` (the default), resolves it before the Trainer is built and records it
  in ``machine.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from formers.core import machine, precision
from formers.core.attention import attention
from formers.core.attention import backends as backends_mod
from formers.core.cli import FormersCLI
from formers.core.precision import BF16EmulationWarning, autocast, autocast_dtype, explain_precision, resolve_precision

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "core" / "tiny.yaml"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SAPPHIRE = "processor\t: 0\nmodel name\t: Test CPU AMX\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
AVX2_ONLY = "processor\t: 0\nmodel name\t: Test CPU AVX2\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
BF16_FLAGS = {"avx2", "avx512f", "avx512_bf16"}


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the first bf16 warning of its 'process'."""
    monkeypatch.setattr(precision, "_WARNED", [])


def fake_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpuinfo: str, capability: str, isa: str | None) -> None:
    """This process runs on the CPU ``cpuinfo`` describes, torch dispatching ``capability`` kernels, oneDNN capped at
    ``isa`` (``None``: not capped): the real native_bf16() logic, on faked inputs."""
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    real = machine._cpuinfo
    monkeypatch.setattr(machine, "_cpuinfo", lambda _path="/proc/cpuinfo": real(path))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(machine, "_HERE", [])  # the per-process cache
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)


def spy_picks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, torch.dtype]]:
    """``(backend, q dtype)`` of every dense attention call, whatever the backend."""
    seen: list[tuple[str, torch.dtype]] = []
    for backend in backends_mod.all_backends():
        if backend.kernel is None:
            continue

        def spy(*args, _kernel=backend.kernel, _name=backend.name, **kwargs):
            seen.append((_name, args[0].dtype))
            return _kernel(*args, **kwargs)

        monkeypatch.setitem(backends_mod._BACKENDS, backend.name, backends_mod.replace(backend, kernel=spy))
    return seen


def bf16_training_attention() -> torch.Tensor:
    q = torch.randn(2, 2, 8, 16).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return attention(q, q, q)


# ---------------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("flags", "capability", "isa", "native"),
    [
        (BF16_FLAGS, "AVX512", None, True),
        ({"avx512f", "amx_tile", "amx_bf16"}, "AVX512", None, True),
        (BF16_FLAGS, "AVX512", "", True),
        (BF16_FLAGS, "AVX512", "ALL", True),
        (BF16_FLAGS, "AVX512", "DEFAULT", True),
        (BF16_FLAGS, "AVX512", "AVX512_CORE_BF16", True),
        (BF16_FLAGS, "AVX512", "avx512_core_amx", True),
        (BF16_FLAGS, "AVX2", None, False),  # ATEN_CPU_CAPABILITY=avx2
        (BF16_FLAGS, "DEFAULT", None, False),  # ATEN_CPU_CAPABILITY=default
        (BF16_FLAGS, "AVX512", "AVX2", False),
        (BF16_FLAGS, "AVX512", "AVX512_CORE", False),
        (BF16_FLAGS, "AVX512", "AVX512_CORE_VNNI", False),
        (BF16_FLAGS, "AVX512", "AVX2_VNNI", False),
        (BF16_FLAGS, "AVX512", "SSE41", False),
        (BF16_FLAGS, "AVX512", "AVX", False),
        ({"avx2", "avx512f"}, "AVX512", None, False),  # AVX-512 without bf16 (Skylake-X)
        ({"avx2", "fma"}, "AVX2", None, False),  # this kind of machine
        (set(), "DEFAULT", None, False),  # no cpuinfo: not Linux
    ],
)
def test_native_bf16_needs_instructions_avx512_kernels_and_onednn_bf16(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], capability: str, isa: str | None, native: bool
) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert machine.native_bf16(flags, capability=capability, onednn_isa=isa) is native
    reason = machine.bf16_emulation_reason(flags, capability=capability, onednn_isa=isa)
    assert (reason is None) is native
    if isa and not native and machine.bf16_instructions(flags) and capability == "AVX512":
        assert f"ONEDNN_MAX_CPU_ISA={isa}" in reason


def test_report_tells_instructions_from_native_in_this_process(monkeypatch, tmp_path: Path) -> None:
    fake_cpu(monkeypatch, tmp_path, SAPPHIRE, "AVX2", None)  # an AMX CPU forced down to AVX2 kernels
    cpu = machine.machine_report(tmp_path / "cpuinfo")["cpu"]
    assert cpu["bf16_instructions"] is True and cpu["native_bf16"] is False
    assert "torch dispatches AVX2 kernels" in cpu["bf16_emulated_because"]
    assert "bf16 instructions: yes | native bf16: no, torch dispatches AVX2" in machine.format_machine_report(
        machine.machine_report(tmp_path / "cpuinfo")
    )


def test_cpuinfo_is_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(SAPPHIRE)
    assert machine.bf16_instructions(machine.cpu_flags(path))
    path.write_text(AVX2_ONLY)  # a CPU does not change under a process: the first read stands
    assert machine.bf16_instructions(machine.cpu_flags(path)) and machine.cpu_model(path) == "Test CPU AMX"


# -------------------------------------------------------------------------------------------- native bf16 CPU


def test_a_native_bf16_cpu_gets_bf16_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_cpu(monkeypatch, tmp_path, SAPPHIRE, "AVX512", None)
    assert machine.native_bf16()
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    assert explain_precision("cpu") == ("bf16-mixed", "Test CPU AMX has native bf16 (torch CPU capability AVX512)")
    assert autocast_dtype("cpu") == torch.bfloat16 and isinstance(autocast("cpu"), torch.autocast)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BF16EmulationWarning)
        assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # no warning where native
    picks = spy_picks(monkeypatch)
    assert bf16_training_attention().dtype == torch.bfloat16
    assert picks == [("cpu_bf16", torch.bfloat16)]


@pytest.mark.parametrize(
    ("cpuinfo", "capability", "isa", "why"),
    [
        (AVX2_ONLY, "AVX2", None, "Test CPU AVX2 has no AVX512-BF16 or AMX instructions"),
        (SAPPHIRE, "AVX2", None, "torch dispatches AVX2 kernels"),
        (SAPPHIRE, "AVX512", "AVX512_CORE_VNNI", "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI caps oneDNN"),
    ],
    ids=["avx2_cpu", "capability_forced_down", "onednn_capped"],
)
def test_an_emulating_cpu_stays_in_fp32(monkeypatch, tmp_path: Path, cpuinfo, capability, isa, why) -> None:
    fake_cpu(monkeypatch, tmp_path, cpuinfo, capability, isa)
    assert not machine.native_bf16()
    resolved, reason = explain_precision("cpu")
    assert resolved == resolve_precision("auto", "cpu") == "32-true" and why in reason
    assert autocast_dtype("cpu") is None and not isinstance(autocast("cpu"), torch.autocast)
    picks = spy_picks(monkeypatch)
    assert bf16_training_attention().dtype == torch.bfloat16
    assert picks == [("sdpa", torch.float32)]


# ----------------------------------------------------------------------------------------------- explicit requests


def test_explicit_bf16_on_an_emulating_cpu_warns_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_cpu(monkeypatch, tmp_path, AVX2_ONLY, "AVX2", None)
    with pytest.warns(BF16EmulationWarning) as record:
        assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # runs as asked
        assert resolve_precision("bf16-true", "auto") == "bf16-true"
        assert resolve_precision("bf16", "cpu") == "bf16"
    assert len(record) == 1
    message = str(record[0].message)
    for words in ("Test CPU AVX2", "capability AVX2", "~60x", "12x", "~30x", "'auto'", "'32-true'"):
        assert words in message


@pytest.mark.parametrize("value", ["32-true", "16-mixed", "64-true", 32, None])
def test_other_precisions_pass_through_silently(monkeypatch, tmp_path: Path, value) -> None:
    fake_cpu(monkeypatch, tmp_path, AVX2_ONLY, "AVX2", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BF16EmulationWarning)
        assert resolve_precision(value, "cpu") == value


@pytest.mark.parametrize(("bf16_gpu", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cuda_follows_the_gpu(monkeypatch: pytest.MonkeyPatch, bf16_gpu: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Test GPU")
    monkeypatch.setattr(machine, "native_bf16", lambda *a, **k: False)
    for accelerator in ("auto", "gpu", "cuda"):
        assert resolve_precision("auto", accelerator) == expected
    assert resolve_precision("auto", "cpu") == "32-true"
    with warnings.catch_warnings():
        warnings.simplefilter("error", BF16EmulationWarning)
        resolve_precision("bf16-mixed", "gpu")  # the CPU's bf16 is not the question on a GPU


# --------------------------------------------------------------------------- the real AVX2 override (must-show)

AVX2_PROBE = textwrap.dedent(
    """
    import json, warnings
    import torch
    from formers.core import machine
    from formers.core.attention import attention
    from formers.core.attention import backends as b
    from formers.core.precision import BF16EmulationWarning, explain_precision, resolve_precision

    picks = []
    for backend in b.all_backends():
        if backend.kernel is not None:
            def spy(*args, _k=backend.kernel, _n=backend.name, **kwargs):
                picks.append([_n, str(args[0].dtype)])
                return _k(*args, **kwargs)
            b._BACKENDS[backend.name] = b.replace(backend, kernel=spy)
    q = torch.randn(2, 2, 8, 16).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, q, q)
    out.float().sum().backward()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explicit = [resolve_precision(p, "cpu") for p in ("bf16-mixed", "bf16-mixed", "bf16-true")]
    print(json.dumps({
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native": machine.native_bf16(),
        "auto": resolve_precision("auto", "cpu"),
        "why": explain_precision("cpu")[1],
        "picks": picks,
        "out": str(out.dtype),
        "explicit": explicit,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, BF16EmulationWarning)],
    }))
    """
)


def test_forced_avx2_capability_gives_fp32_everywhere() -> None:
    """An AVX-512(-BF16) CPU forced down to AVX2 kernels through the environment, the way ``make repro`` emulates an
    AVX2-only machine: precision auto is 32-true, auto attention on bf16 training inputs runs an fp32 kernel, and an
    explicit bf16 request warns once."""
    env = {**os.environ, **AVX2_ENV, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", AVX2_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["capability"] == "AVX2" and seen["native"] is False
    assert seen["auto"] == "32-true" and "AVX2" in seen["why"]
    assert seen["picks"] == [["sdpa", "torch.float32"]] and seen["out"] == "torch.bfloat16"
    assert seen["explicit"] == ["bf16-mixed", "bf16-mixed", "bf16-true"]
    assert len(seen["warnings"]) == 1 and "capability AVX2" in seen["warnings"][0] and "~60x" in seen["warnings"][0]


# ----------------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["formers-core"])


def tiny_fit(run_dir: Path, *extra: str) -> None:
    args = ["fit", "--config", str(TINY), "--run_dir", str(run_dir), "--trainer.max_epochs", "1"]
    FormersCLI(args=[*args, "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", *extra])


def test_cli_precision_auto_is_resolved_and_recorded(tmp_path: Path, cli_argv, caplog) -> None:
    expected = "bf16-mixed" if machine.native_bf16() else "32-true"  # 32-true on an AVX2-only machine
    with caplog.at_level("INFO"):
        tiny_fit(tmp_path / "run", "--trainer.precision", "auto")
    record = json.loads((tmp_path / "run" / "machine.json").read_text())
    assert record["precision"] == {"requested": "auto", "resolved": expected}
    assert f"precision auto -> {expected}: " in caplog.text
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["trainer"]["precision"] == "auto"

    # resume: the saved config still says auto, and is resolved again
    tiny_fit(tmp_path / "run", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == 2
    assert json.loads((tmp_path / "run" / "machine.json").read_text())["precision"]["resolved"] == expected


def test_cli_explicit_bf16_on_an_emulating_cpu_warns(monkeypatch, tmp_path: Path, cli_argv) -> None:
    monkeypatch.setattr(machine, "native_bf16", lambda *a, **k: False)
    with pytest.warns(BF16EmulationWarning, match="Use precision 'auto'"):
        tiny_fit(tmp_path / "run", "--trainer.precision", "bf16-mixed")
    record = json.loads((tmp_path / "run" / "machine.json").read_text())
    assert record["precision"] == {"requested": "bf16-mixed", "resolved": "bf16-mixed"}


@pytest.mark.parametrize(("given", "parsed"), [([], "auto"), (["--trainer.precision", "32-true"], "32-true")])
def test_cli_parses_precision(tmp_path: Path, cli_argv, given: list[str], parsed: str) -> None:
    cli = FormersCLI(args=["--config", str(TINY), "--run_dir", str(tmp_path), *given], run=False)
    assert cli.config.trainer.precision == parsed
    assert cli.trainer.precision == (resolve_precision("auto", "cpu") if parsed == "auto" else parsed)


def test_cli_yaml_precision_auto_and_print_config(tmp_path: Path, cli_argv, capsys) -> None:
    override = tmp_path / "auto.yaml"
    override.write_text("trainer:\n  precision: auto\n")
    with pytest.raises(SystemExit) as stop:
        FormersCLI(args=["fit", "--config", str(TINY), "--config", str(override), "--print_config"])
    assert stop.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["precision"] == "auto"


def test_vision_configs_ask_for_auto() -> None:
    for config in sorted((REPO / "pipelines" / "vision").glob("*.yaml")):
        trainer = yaml.safe_load(config.read_text()).get("trainer") or {}
        assert trainer.get("precision", "auto") == "auto", config.name

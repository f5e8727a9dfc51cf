"""Start-up of the ``formers-<domain>`` scripts: ``--help`` is answered without importing what it does not need.

Checked by the modules a fresh interpreter holds after the call (deterministic), not by wall-clock time: Lightning's
own import (torchmetrics, and through it torchvision, scipy, matplotlib) takes 5-30 s on a loaded 2-core runner, so a
time bound would be either loose or flaky. The measured times are in the issue's closing note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What each domain brings that another domain's script must not pay for (PyG / RDKit: graph; timm: vision; h5py:
# pde; pandas: timeseries data), and the training stack a --help never needs.
DOMAIN_LIBRARIES = {"timm": "vision", "torch_geometric": "graph", "rdkit": "graph", "h5py": "pde", "pandas": None}


def _modules_after(code: str) -> set[str]:
    """Top-level modules imported by ``code`` in a fresh interpreter (its output must be the help text)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _help_of(module: str) -> str:
    return f"from {module} import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"


def test_a_declarations_help_imports_neither_torch_nor_lightning():
    code = (
        "from formers.core.domain import Domain\n"
        "domain = Domain(name='startup', description='formers-startup: t.', task_class='formers.core.tasks.Task',\n"
        "                data_class='formers.core.data.SplitDataModule')\n"
        "main = domain.main\n" + _help_of("__main__")
    )
    modules = _modules_after(code)
    assert "formers" in modules
    assert not modules & {"torch", "lightning", "torchmetrics", "jsonargparse", "numpy", *DOMAIN_LIBRARIES}


DOMAINS = ["core", "timeseries", "graph", "vision", "pde", "bytes"]
# The training stack: Lightning and what it imports (torchmetrics -> torchvision, matplotlib, transformers); a
# script's --help is answered from its domain declaration, whose tasks and data modules load only when a run starts.
TRAINING_STACK = {"lightning", "torchmetrics", "torchvision", "matplotlib", "transformers", "jsonargparse"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_scripts_help_leaves_other_domains_libraries_and_lightning_alone(domain):
    module = "formers.core.main" if domain == "core" else f"formers.{domain}.domain"
    modules = _modules_after(_help_of(module))
    unexpected = {lib for lib, owner in DOMAIN_LIBRARIES.items() if owner != domain} & modules
    assert not unexpected, f"formers-{domain} --help imports {sorted(unexpected)}"
    assert not modules & TRAINING_STACK, f"formers-{domain} --help imports {sorted(modules & TRAINING_STACK)}"
    assert "dvclive" not in modules  # the training logger loads with a run, not for --help


@pytest.mark.slow
@pytest.mark.parametrize(
    "first",
    ["import timm", "import formers.vision.models", "formers.vision.TIMM_PREFIX", "import formers.vision.data"],
)
def test_importing_formers_vision_is_light_and_timm_still_gets_the_models(first):
    # formers-vision's script imports formers.vision, so the package defers timm; the contract stays: once timm is
    # in the process (imported by the user, by our models or by our API), ``formers_*`` names are in its registry
    code = (
        "import sys\nimport formers.vision\nassert 'timm' not in sys.modules and 'torch' not in sys.modules\n"
        f"{first}\nimport timm\n"
        "assert timm.is_model('formers_pit_ti_224') and 'formers_swin_tiny_patch4_window7_224' in "
        "timm.list_models('formers_*')\n"
        "assert type(timm.create_model('formers_pit_ti_224', num_classes=3)).__name__ == 'PoolingVisionTransformer'\n"
    )
    assert "timm" in _modules_after(code)

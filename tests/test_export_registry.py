"""``torch.export`` (and ONNX, where ``onnx`` + ``onnxscript`` are installed) of every registered model, all domains.

Each model of :func:`formers.core.registry.list_models` is built with its registry ``test_kwargs`` (tiny sizes,
eval mode) and exported on its own ``example_inputs`` (the helpers of ``tests/test_models.py``); the exported program
must reproduce eager outputs on those inputs and on fresh ones (the inputs are not baked in as constants).

Registered names whose tiny builds are the same network (same module tree, same plain attributes at every level, same
example-input shapes: e.g. ``kmax_convnext_tiny`` and ``kmax_convnext_base`` at their test sizes; dropout rates and
name labels do not count, they change nothing in eval mode) are exported once;
the others check that they are that network and reuse its result, which keeps the file fast on a CPU. Run one name
alone (``-k``) and it is exported itself.

Models that cannot export are listed in :data:`CANNOT_EXPORT` (and :data:`CANNOT_ONNX` for ONNX alone) with the
reason (``xfail(strict=True)``: when one starts to export, the test fails until it leaves the list). With onnx,
onnxscript and onnxruntime installed (they are not dependencies), the ONNX half took about 7 minutes on 2 loaded
cores (torch 2.10, onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from formers.core.registry import get_model_entry, list_models
from test_models import BATCH, build, tensors

_DATA_DEPENDENT_CHECKS = (
    "input validation reads tensor values (min/max of the byte ids and lengths via .item()), which torch.export "
    "cannot specialise; torch._check-style checks in _check_inputs would make it exportable"
)
_PYG_BATCH = (
    "takes a PyG Batch (not a pytree torch.export accepts); fed as its tensors, the graph and node counts per graph "
    "are data-dependent sizes (to_dense_batch), so the graph cannot be captured at a static shape"
)
CANNOT_EXPORT = {
    **{name: _DATA_DEPENDENT_CHECKS for name in list_models(domain="bytes")},
    **{name: _PYG_BATCH for name in list_models(domain="graph")},
}
_COMPLEX_SPECTRAL = (
    "spectral layers compute in complex numbers (rfft, complex einsum / slice_scatter), which torch 2.10's ONNX "
    "exporter cannot translate (no decomposition for complex-valued inputs); torch.export itself works"
)
CANNOT_ONNX = {
    name: _COMPLEX_SPECTRAL
    for name in ("fno_burgers", "fno_darcy", "fno_kolmogorov", "fourier_burgers", "fourier_darcy", "galerkin_burgers",
                 "galerkin_darcy")
}  # fmt: skip
HAS_ONNX = all(importlib.util.find_spec(module) is not None for module in ("onnx", "onnxscript"))
HAS_ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None

_EXPORTED: dict[Any, tuple[str, torch.export.ExportedProgram]] = {}  # network signature -> (name, program)


def _params(names: list[str], cannot: dict[str, str]) -> list:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=cannot[name])) if name in cannot else name
        for name in names
    ]


def _plain(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (bool, int, float, str))
        or (isinstance(value, tuple) and all(_plain(v) for v in value))
    )


def _shapes_graph(module: nn.Module, key: str, value: Any) -> bool:
    """Whether a module attribute can change the eval-mode graph: plain values do, except labels (``*_name``) and
    dropout / drop-path probabilities (identity in eval)."""
    if key.startswith("_") or key == "training" or key.endswith("_name") or "drop" in key or not _plain(value):
        return False
    return not (key == "p" and isinstance(module, nn.modules.dropout._DropoutNd))


def signature(model: nn.Module, inputs: dict[str, Any]) -> tuple:
    """What determines the traced graph: classes and attributes of every module, parameter shapes, inputs."""
    modules = tuple(
        (path, type(m).__module__, type(m).__qualname__,
         tuple(sorted((k, v) for k, v in vars(m).items() if _shapes_graph(m, k, v))))
        for path, m in model.named_modules()
    )  # fmt: skip
    params = tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items())
    shapes = tuple((k, tuple(v.shape), v.dtype) if isinstance(v, Tensor) else (k, repr(v)) for k, v in inputs.items())
    return modules, params, shapes


def exported_program(name: str) -> tuple[nn.Module, torch.export.ExportedProgram]:
    """The eval-mode tiny model and an exported program of its network (exported once per distinct network)."""
    torch.manual_seed(0)
    model = build(name).eval()
    inputs = model.example_inputs(BATCH)
    key = signature(model, inputs)
    if key not in _EXPORTED:
        _EXPORTED[key] = (name, torch.export.export(model, (), kwargs=inputs))
    return model, _EXPORTED[key][1]


def runnable(model: nn.Module, program: torch.export.ExportedProgram) -> nn.Module:
    """The program as a module holding ``model``'s weights (a twin's program was traced with the twin's)."""
    module = program.module()
    module.load_state_dict(model.state_dict())
    return module


def _check_close(program_module: nn.Module, model: nn.Module, inputs: dict[str, Any]) -> None:
    with torch.no_grad():
        expected, actual = tensors(model(**inputs)), tensors(program_module(**inputs))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", _params(list_models(), CANNOT_EXPORT))
def test_torch_export(name):
    model, program = exported_program(name)
    module = runnable(model, program)
    _check_close(module, model, model.example_inputs(BATCH))
    torch.manual_seed(1)  # fresh inputs: nothing of the example was baked into the graph
    _check_close(module, model, model.example_inputs(BATCH))


@pytest.mark.skipif(not HAS_ONNX, reason="ONNX export needs the onnx and onnxscript packages (not installed)")
@pytest.mark.parametrize("name", _params(list_models(), {**CANNOT_EXPORT, **CANNOT_ONNX}))
def test_onnx_export(name):
    import onnx

    model, program = exported_program(name)
    onnx_program = torch.onnx.export(program, (), kwargs=model.example_inputs(BATCH), dynamo=True)
    onnx.checker.check_model(onnx_program.model_proto)
    if HAS_ONNXRUNTIME:  # the ONNX graph computes what the exported program (checked against eager above) does
        inputs = model.example_inputs(BATCH)
        with torch.no_grad():
            expected = tensors(program.module()(**inputs))
        actual = onnx_program(**{k: v for k, v in inputs.items() if v is not None})
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(torch.as_tensor(a), e, atol=1e-4, rtol=1e-4)


def test_every_registered_model_is_covered():
    """Each name is exported or listed with a reason; the list names only registered models."""
    assert set(CANNOT_EXPORT) | set(CANNOT_ONNX) <= set(list_models())
    assert all(get_model_entry(name).domain in ("bytes", "graph") for name in CANNOT_EXPORT)
    assert all(get_model_entry(name).domain == "pde" for name in CANNOT_ONNX)


def test_informer_exports_with_its_seeded_eval_sample():
    """Informer's eval key sample is drawn once per length, outside forward (what made it exportable), and is
    exactly the draw of a generator seeded with ``eval_sample_seed`` that eval forwards always used."""
    from formers.timeseries.models.prob_attention import InformerAttention, prob_sparse_sizes, sample_keys

    model = build("informer").eval()
    layers = [m for m in model.modules() if isinstance(m, InformerAttention) and m.attn == "prob"]
    assert layers and all(len(layer._eval_samples) == 1 for layer in layers)  # prepared when the model was built
    for layer in layers:
        (seed, factor, len_q, len_k), cached = next(iter(layer._eval_samples.items()))
        drawn = sample_keys(len_q, len_k, prob_sparse_sizes(factor, len_q, len_k)[1],
                            torch.Generator().manual_seed(seed))  # fmt: skip
        assert seed == 0 and torch.equal(cached, drawn)
    layers[0].eval_sample_seed = 5  # another seed: eager draws it, export asks for it to be prepared first
    inputs = model.example_inputs(BATCH)
    with pytest.raises(RuntimeError, match="no eval key sample prepared .*prepare_eval_sample"):
        torch.export.export(model, (), kwargs=inputs)
    model.prepare_eval_samples()
    _check_close(torch.export.export(model, (), kwargs=inputs).module(), model, inputs)

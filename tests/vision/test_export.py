"""torch.compile of one tiny model per registered vision family (torch.export of every model of every domain:
``tests/test_export_registry.py``).

Compilation on a CPU is slow with the real inductor backend, so ``torch.compile`` runs with ``backend="eager"``
(TorchDynamo graph capture only) and ``aot_eager`` (adds AOTAutograd: the backward graph is traced too), both with
``fullgraph=True`` (one graph, no break); inductor itself is not run here (minutes of C++ compilation on CPU).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import formers.vision as fv
from formers.core.registry import get_model_entry


def _family_models() -> list[str]:
    out: dict[str, str] = {}
    for name in fv.list_models():
        module = get_model_entry(name).factory.__module__
        if module.startswith("formers.vision.models."):
            out.setdefault(module.rsplit(".", 1)[-1], name)
    return sorted(out.values())


FAMILY_MODELS = _family_models()


def _tiny(name: str) -> torch.nn.Module:
    return fv.create_model(name, **get_model_entry(name).test_kwargs).eval()


def _inputs(model: torch.nn.Module, shift: float = 0.0) -> dict:
    """The model's example inputs (``x``, or kMaX's ``images`` + ``pixel_mask``), the image shifted by ``shift``."""
    inputs = model.example_inputs(2)
    key = "x" if "x" in inputs else "images"
    return {**inputs, key: inputs[key] + shift}


def _square_mean(out) -> torch.Tensor:
    """``mean(out ** 2)`` summed over every tensor of a tensor or (nested) dict / list output."""
    if isinstance(out, torch.Tensor):
        return out.square().mean()
    values = out.values() if isinstance(out, dict) else out
    return sum(_square_mean(value) for value in values)


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_torch_compile_matches_eager(name):
    torch._dynamo.reset()
    model = _tiny(name)
    x, x1 = _inputs(model), _inputs(model, 1.0)
    with torch.no_grad():
        expected = model(**x)
        compiled = torch.compile(model, backend="eager", fullgraph=True)  # no graph break anywhere
        torch.testing.assert_close(compiled(**x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(compiled(**x1), model(**x1), atol=1e-5, rtol=1e-5)  # re-uses the graph


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_torch_compile_aot_eager_gradients(name):
    """AOTAutograd traces the backward too: the compiled gradients equal eager ones (eval mode: no dropout)."""
    torch._dynamo.reset()
    model = _tiny(name)
    eager = _tiny(name)
    eager.load_state_dict(model.state_dict())
    x = _inputs(model)
    _square_mean(torch.compile(model, backend="aot_eager", fullgraph=True)(**x)).backward()
    _square_mean(eager(**x)).backward()
    compiled_grads = dict(model.named_parameters())
    checked = 0
    for n, p in eager.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(compiled_grads[n].grad, p.grad, atol=1e-5, rtol=1e-4)
            checked += 1
    assert checked, f"{name}: no gradient"

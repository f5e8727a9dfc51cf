"""Registry-driven checks for every registered model of every installed domain (in the spirit of timm's
``tests/test_models.py``).

Models are discovered through the ``formers.models`` entry points and built with their registry ``test_kwargs``
(tiny configurations). Each one must honour the :class:`formers.core.models.FormersModel` contract: build its own
``example_inputs``, return ``expected_output_shape``, train every parameter, and reject malformed input with a
``ValueError`` / ``TypeError`` rather than a bare ``RuntimeError`` from deep inside.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from formers.core.attention import use_backend
from formers.core.models import FormersModel
from formers.core.registry import _REGISTRY, create_model, get_model_entry, list_models, register_model

MODEL_NAMES = list_models()
BATCH = 2


def build(name: str) -> FormersModel:
    model = get_model_entry(name).create(**get_model_entry(name).test_kwargs)
    assert isinstance(model, FormersModel), f"{name} must subclass formers.core.models.FormersModel"
    return model


def tensor_inputs(inputs: dict) -> list[str]:
    return [key for key, value in inputs.items() if isinstance(value, Tensor)]


def tensors(out) -> list[Tensor]:
    """Every tensor of an output: a tensor, or a (nested) dict / list of them (e.g. kMaX-DeepLab's dict)."""
    if isinstance(out, Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for value in values for t in tensors(value)]


def check_shape(out, expected) -> None:
    """``expected_output_shape`` is a shape, or for dict outputs a ``{key: shape}`` of (some of) its tensors."""
    if isinstance(expected, dict):
        assert isinstance(out, dict)
        assert {key: tuple(out[key].shape) for key in expected} == {k: tuple(v) for k, v in expected.items()}
    else:
        assert isinstance(out, Tensor)
        assert out.shape == expected


def batch_slice(out, i: int):
    """Sample ``i`` of a batched output (tensors sliced along dim 0, dicts / lists recursively)."""
    if isinstance(out, Tensor):
        return out[i : i + 1]
    if isinstance(out, dict):
        return {key: batch_slice(value, i) for key, value in out.items()}
    return type(out)(batch_slice(value, i) for value in out)


def test_registry_discovers_models():
    assert "transformer_classifier" in MODEL_NAMES
    assert get_model_entry("transformer_classifier").domain == "core"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_forward(name):
    model = build(name).eval()
    with torch.no_grad():
        out = model(**model.example_inputs(BATCH))
    check_shape(out, model.expected_output_shape(BATCH))
    assert all(torch.isfinite(t).all() for t in tensors(out))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_backward(name):
    model = build(name).train()
    out = model(**model.example_inputs(BATCH))
    sum((t.float() * torch.randn_like(t.float())).sum() for t in tensors(out)).backward()
    params = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    assert params, f"{name} has no trainable parameters"
    assert with_grad == params, f"parameters without gradient: {sorted(params - with_grad)}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_eval_is_deterministic(name):
    model = build(name).eval()
    inputs = model.example_inputs(BATCH)
    with torch.no_grad():
        first, second = tensors(model(**inputs)), tensors(model(**inputs))
        assert len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_batch_consistency(name):
    """Sample ``i`` of a batch gives the same output as that sample alone."""
    model = build(name).eval()
    inputs = model.example_inputs(BATCH)
    graph_keys = [key for key, value in inputs.items() if hasattr(value, "to_data_list")]
    if graph_keys:  # a PyG Batch: graph i alone vs its row (graph-level) or its nodes' rows (node-level)
        _check_graph_batch_consistency(model, inputs, graph_keys)
        return
    keys = tensor_inputs(inputs)
    if not keys or any(inputs[key].shape[0] != BATCH for key in keys):
        pytest.skip(f"{name}: inputs are not batch-major, samples cannot be sliced out")
    with torch.no_grad():
        batched = model(**inputs)
        for i in range(BATCH):
            single = model(**{k: v[i : i + 1] if k in keys else v for k, v in inputs.items()})
            torch.testing.assert_close(single, batch_slice(batched, i), atol=1e-5, rtol=1e-4)


def _check_graph_batch_consistency(model: FormersModel, inputs: dict, graph_keys: list[str]) -> None:
    (key,) = graph_keys
    batch = inputs[key]
    with torch.no_grad():
        batched = model(**inputs)
        ptr = batch.ptr.tolist()
        node_level = batched.shape[0] == ptr[-1] != batch.num_graphs
        for i, graph in enumerate(batch.to_data_list()):
            single = model(**{**inputs, key: type(batch).from_data_list([graph])})
            rows = batched[ptr[i] : ptr[i + 1]] if node_level else batched[i : i + 1]
            torch.testing.assert_close(single, rows, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_reference_backend_matches_auto(name):
    model = build(name).eval()
    inputs = model.example_inputs(BATCH)
    with torch.no_grad():
        auto = model(**inputs)
        with use_backend("reference"):
            reference = model(**inputs)
    torch.testing.assert_close(reference, auto, atol=1e-4, rtol=1e-4)


def _corruptions(inputs: dict) -> list[tuple[str, str, Tensor]]:
    """(input name, what was done, corrupted tensor): an extra leading dim, and the wrong dtype kind."""
    cases = []
    for key in tensor_inputs(inputs):
        value = inputs[key]
        cases.append((key, "extra leading dim", value.unsqueeze(0)))
        if value.is_floating_point():
            cases.append((key, "integer instead of float", value.long()))
        else:  # integer ids and boolean masks alike
            cases.append((key, "float instead of integer/bool", value.float()))
    return cases


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_rejects_bad_input(name):
    model = build(name).eval()
    inputs = model.example_inputs(BATCH)
    failures = []
    for key, what, bad in _corruptions(inputs):
        try:
            with torch.no_grad():
                model(**{**inputs, key: bad})
        except (ValueError, TypeError):
            continue
        except Exception as err:  # noqa: BLE001 - reported below with the input that caused it
            failures.append(f"{key} ({what}): {type(err).__name__}: {str(err).splitlines()[0][:200]}")
        else:
            failures.append(f"{key} ({what}): accepted without error")
    assert not failures, f"{name} must raise ValueError/TypeError on malformed input:\n" + "\n".join(failures)


# ---------------------------------------------------------------------------------------------------- registry


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed again afterwards so the registry stays as the suite found it."""
    names: list[str] = []
    yield names
    for name in names:
        _REGISTRY.pop(name, None)


def test_registry_refuses_duplicate_names(scratch_names):
    def first(**kwargs):
        return torch.nn.Linear(1, 1)

    def second(**kwargs):
        return torch.nn.Linear(1, 1)

    scratch_names.append("_test_duplicate_model")
    register_model(first, name="_test_duplicate_model", domain="test")
    register_model(first, name="_test_duplicate_model", domain="test")  # re-registering the same factory is fine
    with pytest.raises(ValueError, match="already registered"):
        register_model(second, name="_test_duplicate_model", domain="test")
    with pytest.raises(ValueError, match="already registered"):
        register_model(second, name="transformer_classifier")
    assert get_model_entry("transformer_classifier").factory.__name__ == "transformer_classifier"


def test_unknown_model_names_give_a_helpful_error():
    with pytest.raises(ValueError, match="unknown model 'no_such_model'.*list_models"):
        create_model("no_such_model")
    with pytest.raises(ValueError, match="similar names: .*transformer_classifier"):
        create_model("transformer_clasifier")


def test_list_models_filters():
    assert list_models("transformer_*") == [n for n in MODEL_NAMES if n.startswith("transformer_")]
    assert "transformer_classifier" in list_models(domain="core")
    assert list_models(domain="no_such_domain") == []
    assert MODEL_NAMES == sorted(MODEL_NAMES)

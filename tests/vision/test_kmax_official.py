"""kMaX-DeepLab: the official-arithmetic oracle (``kmax_official.py``, written here from bytedance/kmax-deeplab @
f8e1d04) against the reference note's parameter counts, and formers' model against the oracle with the official
weights copied through ``checkpoint_filter_fn`` (eval and training mode, every output, square and non-square inputs).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from vision import kmax_official as official

# shared/reference/vision.md section 1.5: (total, without the train-only aux semantic head)
PARAMS = {
    "r50": (72_436_862, 56_580_120),
    "convnext_tiny": (67.27, 60.94),  # millions, to 0.01M
    "convnext_small": (88.90, 82.57),
    "convnext_base": (129.75, 121.51),
    "convnext_large": (243.88, 231.84),
}
AUX = "_auxiliary_semantic_predictor"
REL_TOL = 1e-4  # max |formers - official| / max |official|, per output


def _build_oracle(name: str, **kwargs) -> official.OfficialKMaXDeepLab:
    if name == "r50":
        return official.build_official_kmax_r50(**kwargs)
    return official.build_official_kmax_convnext(name.removeprefix("convnext_"), **kwargs)


# the official model with detectron2's R18 trunk and a 4x narrower pixel decoder (fast); the widths the official code
# hard-codes (256-d queries, 2048-d FFN, 128-d pixel embedding, ASPP 256) stay
NARROW = {"pixel_dec_channels": (128, 64, 32, 16), "num_queries": 32}


def _narrow_r18(**kwargs) -> official.OfficialKMaXDeepLab:
    return official.build_official_kmax_r18(**NARROW, **kwargs)


def _counts(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for n, p in model.named_parameters() if AUX in n)
    return total, total - aux


# ------------------------------------------------------------------------------------------------ the oracle itself


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_oracle_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        model = _build_oracle(name, image_size=(1281, 1281))
    total, inference = _counts(model)
    want_total, want_inference = PARAMS[name]
    if isinstance(want_total, int):
        assert (total, inference) == (want_total, want_inference)
    else:
        assert round(total / 1e6, 2) == want_total and round(inference / 1e6, 2) == want_inference


def test_oracle_state_dict_is_the_official_layout() -> None:
    with torch.device("meta"):
        keys = set(official.build_official_kmax_r50(image_size=(1281, 1281)).state_dict())
    axial = "sem_seg_head.pixel_decoder._stages.0._blocks.0._attention._height_axis."
    layer0 = "sem_seg_head.predictor._kmax_transformer_layers.0."
    expected = {
        "backbone.stem.conv1.weight",
        "backbone.stem.conv1.norm.weight",
        "backbone.stem.conv1.norm.running_var",
        "backbone.res2.0.conv1.weight",
        "backbone.res2.0.shortcut.norm.running_mean",
        "backbone.res5.2.conv3.norm.num_batches_tracked",
        "sem_seg_head.pixel_decoder._in_norms.0.weight",
        axial + "qkv_transform.conv.weight",
        axial + "_query_rpe._embeddings.weight",
        axial + "_batch_norm_similarity.running_mean",
        "sem_seg_head.pixel_decoder._resized_fuses.0._conv_bn_low.conv.weight",
        "sem_seg_head.pixel_decoder._stages.3._blocks.0._conv2_bn_act.norm.weight",
        layer0 + "_predcitor._pixel_space_mask_batch_norm.weight",
        layer0 + "_kmeans_query_conv3_bn.norm.running_var",
        layer0 + "_query_self_attention._batch_norm_similarity.weight",
        "sem_seg_head.predictor._cluster_centers.weight",
        "sem_seg_head.predictor._predcitor._transformer_class_head.conv.bias",
        "sem_seg_head.predictor._auxiliary_semantic_predictor._aspp._aspp_conv1.conv.weight",
        "sem_seg_head.predictor._auxiliary_semantic_predictor.final_conv.conv.bias",
    }
    assert expected <= keys
    assert len(keys) == 1417
    assert not any("_relative_distance_matrix" in k or "pixel_mean" in k or "pixel_std" in k for k in keys)
    assert sum("_kmax_transformer_layers." in k and "._query_conv1_bn_act.conv.weight" in k for k in keys) == 6


@torch.no_grad()
def test_oracle_shapes_and_padding() -> None:
    """Output shapes at 65x65 (the 257 shapes of the note, scaled), and smaller inputs zero-padded to IMAGE_SIZE."""
    torch.manual_seed(0)
    model = official.randomize_(_narrow_r18(num_classes=5, image_size=(65, 65))).eval()
    x = torch.randn(2, 3, 65, 65)
    out = model(x)
    assert out["pred_logits"].shape == (2, 32, 6)  # 32 queries, 5 classes + void
    assert out["pred_masks"].shape == (2, 32, 17, 17)
    assert out["pixel_feature"].shape == (2, 128, 17, 17)
    assert len(out["aux_outputs"]) == 6 and "aux_semantic_pred" not in out
    assert all(a["pred_masks"].shape == (2, 32, 17, 17) for a in out["aux_outputs"])
    torch.testing.assert_close(out["pixel_feature"].norm(dim=1), torch.ones(2, 17, 17))
    small = x[:, :, :50, :61]
    real = torch.zeros(2, 50, 61, dtype=torch.bool)
    real[1, :40] = True
    real[0] = True
    padded = torch.zeros_like(x)
    padded[:, :, :50, :61] = small * real[:, None]
    a, b = model(small, is_real_pixels=real), model(padded)
    for key in ("pred_logits", "pred_masks", "pixel_feature"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_oracle_training_outputs() -> None:
    torch.manual_seed(0)
    model = _narrow_r18(num_classes=5, image_size=(33, 33)).train()
    out = model(torch.randn(2, 3, 33, 33))
    assert out["aux_semantic_pred"].shape == (2, 6, 9, 9)
    assert all(v.dtype == torch.float32 for v in (out["pred_masks"], out["pred_logits"], out["aux_semantic_pred"]))
    loss = out["pred_masks"].square().mean() + out["aux_semantic_pred"].square().mean()
    loss.backward()
    # the k-means assignment carries no gradient, but the cluster centres still get one (through the updates)
    assert model.sem_seg_head.predictor._cluster_centers.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ formers against the oracle


def _kmax_module():
    try:
        return importlib.import_module("formers.vision.models.kmax")
    except ImportError as err:  # written in parallel; the equality tests wait for it
        pytest.skip(f"formers.vision.models.kmax not importable yet: {err}")


def _formers_model(name: str, **kwargs) -> nn.Module:
    from formers.core.registry import create_model

    return create_model(name, **kwargs)


def _zero_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _pair(
    oracle_name: str, formers_name: str, size: tuple[int, int], num_classes: int = 133, seed: int = 0, **formers_kwargs
):
    """(oracle, formers model with the oracle's weights): random official init, randomised norms, strict load of the
    filtered official state dict, drop path off in both, dropout off in both.

    ``oracle_name``: "r50", "convnext_tiny" or "r18_narrow"; ``formers_name``: a registered name or a
    ``KMaXDeepLab`` backbone name (then built with ``formers_kwargs``)."""
    kmax = _kmax_module()
    torch.manual_seed(seed)
    common = {"num_classes": num_classes, "image_size": size, "trans_drop_path": 0.0}
    if oracle_name == "r18_narrow":
        oracle = _narrow_r18(**common)
    elif oracle_name.startswith("convnext"):
        oracle = _build_oracle(oracle_name, backbone_drop_path=0.0, **common)
    else:
        oracle = _build_oracle(oracle_name, **common)
    official.randomize_(oracle, torch.Generator().manual_seed(seed + 1))
    kwargs = {"num_classes": num_classes, "drop_path_rate": 0.0, **formers_kwargs}
    if formers_name.startswith("kmax_"):
        ours = _formers_model(formers_name, backbone_drop_path_rate=0.0, **kwargs)
    else:
        ours = kmax.KMaXDeepLab(backbone=formers_name, **kwargs)
    ours.load_state_dict(kmax.checkpoint_filter_fn(official_checkpoint(oracle), ours), strict=True)
    _zero_dropout(oracle), _zero_dropout(ours)
    return oracle, ours


def official_checkpoint(oracle: nn.Module) -> dict[str, Tensor]:
    """The oracle's state dict as an official training checkpoint holds it (with the keys the filter must drop)."""
    state = dict(oracle.state_dict())
    state["pixel_mean"] = torch.full((3, 1, 1), 127.5)
    state["pixel_std"] = torch.full((3, 1, 1), 127.5)
    return state


def _leaves(out: dict) -> dict[str, Tensor]:
    flat = {k: out[k] for k in ("pred_logits", "pred_masks", "pixel_feature", "aux_semantic_pred") if k in out}
    for i, aux in enumerate(out["aux_outputs"]):
        flat.update({f"aux_outputs.{i}.{k}": aux[k] for k in ("pred_logits", "pred_masks", "pixel_feature")})
    return flat


def diff_report(reference: dict, candidate: dict) -> dict[str, tuple[float, float]]:
    """Per output: (max abs diff, max abs diff / max |reference|); the key sets must agree."""
    ref, got = _leaves(reference), _leaves(candidate)
    assert set(ref) == set(got), (sorted(ref), sorted(got))
    report = {}
    for key, r in ref.items():
        g = got[key]
        assert g.shape == r.shape, (key, g.shape, r.shape)
        abs_diff = (g.double() - r.double()).abs().max().item()
        report[key] = (abs_diff, abs_diff / max(r.double().abs().max().item(), 1e-300))
    return report


def _assert_close(report: dict[str, tuple[float, float]], tol: float = REL_TOL) -> None:
    bad = {k: v for k, v in report.items() if not v[1] <= tol}
    assert not bad, f"outputs differ from the official arithmetic (max abs, rel): {bad}"


SIZES = [(65, 65), (65, 97), (97, 65)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@torch.no_grad()
def test_r50_equals_official_eval(size: tuple[int, int]) -> None:
    oracle, ours = _pair("r50", "kmax_r50", size)
    oracle.eval(), ours.eval()
    x = torch.randn(2 if size[0] == size[1] else 1, 3, *size, generator=torch.Generator().manual_seed(2))
    ref, got = oracle(x), ours(x)
    assert "aux_semantic_pred" not in got
    _assert_close(diff_report(ref, got))


@torch.no_grad()
def test_r18_narrow_equals_official_eval_without_aux_head() -> None:
    """detectron2's BasicBlock trunk mapped onto timm's resnet18, a narrower pixel decoder and fewer queries; the
    model has no aux semantic head, so the filter drops the official one (strict load still)."""
    size = (65, 97)
    oracle, ours = _pair(
        "r18_narrow",
        "resnet18",
        size,
        num_classes=7,
        dec_channels=NARROW["pixel_dec_channels"],
        num_queries=NARROW["num_queries"],
        aux_semantic_head=False,
    )
    oracle.eval(), ours.eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(5))
    _assert_close(diff_report(oracle(x), ours(x)))


def _train_step(model: nn.Module, x: Tensor, weights: Callable[[str, Tensor], Tensor]) -> dict:
    out = model(x)
    loss = sum((v.float() * weights(k, v)).sum() for k, v in _leaves(out).items())
    loss.backward()
    return out


def test_r50_equals_official_training() -> None:
    """Training mode: batch statistics, the aux semantic head, the running-statistics update (momentum 0.01) and
    the gradients of every official parameter agree."""
    kmax = _kmax_module()
    size = (65, 65)
    oracle, ours = _pair("r50", "kmax_r50", size)
    oracle.train(), ours.train()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    cache: dict[str, Tensor] = {}

    def weights(key: str, value: Tensor) -> Tensor:  # the same random loss weights for both models
        if key not in cache:
            cache[key] = torch.randn(value.shape, generator=torch.Generator().manual_seed(len(cache))) / value.numel()
        return cache[key]

    ref, got = _train_step(oracle, x, weights), _train_step(ours, x, weights)
    assert ref["aux_semantic_pred"].shape == got["aux_semantic_pred"].shape == (2, 134, 17, 17)
    _assert_close(diff_report(ref, got))

    # updated running statistics, mapped through the filter, equal formers' own
    mapped = kmax.checkpoint_filter_fn(official_checkpoint(oracle), ours)
    own = ours.state_dict()
    for key, value in mapped.items():
        if value.is_floating_point():
            torch.testing.assert_close(own[key], value, rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
        else:
            assert torch.equal(own[key], value), key

    # gradients: the filter is a relabelling (and reshaping) of official tensors, so it maps gradients alike
    grads = official_checkpoint(oracle)
    for name, p in oracle.named_parameters():
        grads[name] = p.grad if p.grad is not None else torch.zeros_like(p)
    mapped = kmax.checkpoint_filter_fn(grads, ours)
    for name, p in ours.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        scale = max(mapped[name].abs().max().item(), 1e-12)
        assert (g - mapped[name]).abs().max().item() <= 1e-3 * scale + 1e-7, name


@contextlib.contextmanager
def _float64_islands() -> Iterator[None]:
    """Run float64 models through the official fp32 islands (``x.float()`` before softmax / LayerNorm / the k-means
    sum) without dropping to fp32: ``Tensor.float`` leaves float64 tensors as they are, inside the block only."""
    original = torch.Tensor.float

    def keep_float64(self: Tensor, *args, **kwargs) -> Tensor:
        return self if self.dtype == torch.float64 else original(self, *args, **kwargs)

    torch.Tensor.float = keep_float64
    try:
        yield
    finally:
        torch.Tensor.float = original


@pytest.mark.parametrize("size", [(65, 65), (65, 97)], ids=lambda s: f"{s[0]}x{s[1]}")
@torch.no_grad()
def test_convnext_tiny_equals_official_eval_float64(size: tuple[int, int]) -> None:
    """ConvNeXt-T in float64. In float32 the two ConvNeXt trunks differ by rounding only (timm's LayerNorm vs the
    official explicit channels-first formula: ~1e-6 relative on res2..res5), but a randomly initialised kMaX decoder
    amplifies input perturbations ~1e3-fold (measured: the oracle against itself on a 1e-15-perturbed input), so
    float32 outputs agree to ~1e-3 only; float64 shows the arithmetic is the same (~1e-12)."""
    oracle, ours = _pair("convnext_tiny", "kmax_convnext_tiny", size)
    oracle.eval().double(), ours.eval().double()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with _float64_islands():
        ref, got = oracle(x), ours(x)
    assert got["pred_masks"].dtype == torch.float64
    _assert_close(diff_report(ref, got), tol=1e-9)


@torch.no_grad()
def test_r18_narrow_equals_official_eval_bf16_autocast() -> None:
    """Under CPU bf16 autocast: the same fp32 islands (axial / query softmax, LayerNorm, k-means sum) and the same
    bf16 ops. (formers matches bit for bit today; the tolerance is bf16's, so that a future reordering of the same
    arithmetic passes while a lost fp32 island or a missing cast does not.)"""
    size = (65, 65)
    oracle, ours = _pair(
        "r18_narrow",
        "resnet18",
        size,
        num_classes=7,
        dec_channels=NARROW["pixel_dec_channels"],
        num_queries=NARROW["num_queries"],
    )
    oracle.eval(), ours.eval()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, got = oracle(x), ours(x)
    assert got["pred_masks"].dtype == ref["pred_masks"].dtype == torch.bfloat16
    _assert_close(diff_report(ref, got), tol=2e-2)

"""kMaX-DeepLab (``formers.vision.models.kmax``): exact parameter counts of the official configurations, the output
contract, any input size, ``pixel_mask`` semantics, gradients, the detached k-means argmax, the official initial
values, the optimizer groups and the official checkpoint key mapping (equality with the official arithmetic is in
``test_kmax_official.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import formers.vision as fv
from formers.core.layers import AxialAttention2d
from formers.core.optim import optimizer_parameters
from formers.core.registry import get_model_entry
from formers.vision.models import kmax
from formers.vision.models.kmax import KMaXDeepLab, KMaXTransformerLayer, checkpoint_filter_fn, void_prior_bias


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _meta(name: str, **kwargs) -> KMaXDeepLab:
    with torch.device("meta"):  # no memory, no initialisation cost
        return fv.create_model(name, **kwargs)


# The reference table (shared/reference/vision.md, section 3): inference (without the auxiliary semantic head) / with.
# Exact values measured here; each rounds to the table's millions.
COUNTS = {
    "kmax_r50": (56_580_120, 72_436_862),
    "kmax_convnext_tiny": (60_937_080, 67_265_502),
    "kmax_convnext_small": (82_571_640, 88_900_062),
    "kmax_convnext_base": (121_513_304, 129_747_390),
    "kmax_convnext_large": (231_836_952, 243_882_366),
}
TABLE = {
    "kmax_convnext_tiny": (60.94, 67.27),
    "kmax_convnext_small": (82.57, 88.90),
    "kmax_convnext_base": (121.51, 129.75),
    "kmax_convnext_large": (231.84, 243.88),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_exact_parameter_counts(name):
    """With the aux head (training) and without it: ``aux_semantic_head=False`` builds exactly the inference model,
    whose count equals the full count minus the aux head's parameters."""
    inference, training = COUNTS[name]
    full = _meta(name)
    assert _count(full) == training
    assert _count(full) - _count(full.aux_semantic_head) == inference
    assert _count(_meta(name, aux_semantic_head=False)) == inference
    if name in TABLE:
        assert (round(inference / 1e6, 2), round(training / 1e6, 2)) == TABLE[name]


def test_r50_is_detectron2_r50_v1_5_with_the_custom_bn():
    model = _meta("kmax_r50")
    backbone = model.backbone
    assert _count(backbone) == 23_508_032  # R-50 without fc, as detectron2's
    assert backbone.layer2[0].conv1.stride == (1, 1) and backbone.layer2[0].conv2.stride == (2, 2)  # stride in 3x3
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)


# ---------------------------------------------------------------------------------------------------- contract


def _small_r50(**kwargs) -> KMaXDeepLab:
    """The R-50 head at full width (128 queries, 133 classes, 128-d pixel embeddings) on a one-block-per-stage
    trunk with one block per decoder stage: the official output contract at a fraction of the cost."""
    torch.manual_seed(0)
    return fv.create_model("kmax_r50", backbone_kwargs={"layers": (1, 1, 1, 1)}, dec_layers=(1, 1, 1, 1), **kwargs)


def test_output_contract_at_257():
    model = _small_r50()
    images = torch.randn(2, 3, 257, 257).clamp(-1, 1)
    model.train()
    with torch.no_grad():  # training-mode outputs (BatchNorm batch statistics, the aux head), no autograd graph
        out = model(images)
    assert out["pred_logits"].shape == (2, 128, 134)
    assert out["pred_masks"].shape == (2, 128, 65, 65)
    assert out["pixel_feature"].shape == (2, 128, 65, 65)
    assert out["aux_semantic_pred"].shape == (2, 134, 65, 65)
    assert len(out["aux_outputs"]) == 6
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 128, 134)
        assert aux["pred_masks"].shape == (2, 128, 65, 65) and aux["pixel_feature"].shape == (2, 128, 65, 65)
    torch.testing.assert_close(out["pixel_feature"].norm(dim=1), torch.ones(2, 65, 65))
    model.eval()
    with torch.no_grad():
        out = model(images[:1])
    assert "aux_semantic_pred" not in out and out["pred_masks"].shape == (1, 128, 65, 65)
    assert all(torch.isfinite(t).all() for t in (out["pred_logits"], out["pred_masks"], out["pixel_feature"]))


def test_full_r50_small_forward_in_training_mode():
    torch.manual_seed(0)
    model = fv.create_model("kmax_r50").train()
    out = model(torch.randn(2, 3, 65, 65).clamp(-1, 1))
    assert out["pred_masks"].shape == (2, 128, 17, 17) and len(out["aux_outputs"]) == 6
    assert out["aux_semantic_pred"].shape == (2, 134, 17, 17)
    assert model.num_classes == 133 and model.num_queries == 128
    assert model.pretrained_cfg["mean"] == model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
    assert model.pretrained_cfg["input_size"] == (3, 641, 641) and model.pretrained_cfg["fixed_input_size"] is False


def _r18_small(**kwargs) -> KMaXDeepLab:
    torch.manual_seed(0)
    return fv.create_model("kmax_r18_small", **kwargs)


@pytest.mark.parametrize("size", [(97, 129), (100, 75), (33, 33)])
def test_any_size_inference_small_config(size):
    model = _r18_small().eval()
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size).clamp(-1, 1))
    assert out["pred_logits"].shape == (1, 32, 134)
    assert out["pred_masks"].shape == (1, 32, h, w) and out["pixel_feature"].shape == (1, 64, h, w)
    assert all(a["pred_masks"].shape == (1, 32, h, w) for a in out["aux_outputs"])


@pytest.mark.parametrize("name", ["kmax_convnext_tiny", "kmax_swin_tiny", "kmax_r50"])
def test_backbone_maps_have_ceil_sizes(name):
    """The DeepLab2 ConvNeXt padding, the Swin crop and the ResNet's own padding all give ``ceil(H / stride)``."""
    model = fv.create_model(name, **get_model_entry(name).test_kwargs).eval()
    with torch.no_grad():
        maps = model.backbone(torch.randn(1, 3, 37, 50))
    assert [tuple(m.shape[-2:]) for m in maps] == [(10, 13), (5, 7), (3, 4), (2, 2)]


def test_convnext_pads_before_the_downsample_layernorm(monkeypatch):
    model = fv.create_model("kmax_convnext_tiny", **get_model_entry("kmax_convnext_tiny").test_kwargs).eval()
    seen = []
    stem = model.backbone.stem[0]
    norm = model.backbone.stages[1].downsample[0]
    stem.register_forward_pre_hook(lambda m, args: seen.append(("stem", tuple(args[0].shape[-2:]))))
    norm.register_forward_pre_hook(lambda m, args: seen.append(("downsample_norm", tuple(args[0].shape[-2:]))))
    with torch.no_grad():
        model.backbone(torch.randn(1, 3, 33, 34))
    assert seen == [("stem", (36, 37)), ("downsample_norm", (10, 10))]  # +3 before the stem, +1 before the LN


def test_bad_inputs_are_clear_errors():
    model = _r18_small().eval()
    with pytest.raises(ValueError, match="at least 33"):
        model(torch.randn(1, 3, 32, 40))
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        model(torch.randn(1, 1, 40, 40))
    with pytest.raises(TypeError, match="torch.bool"):
        model(torch.randn(1, 3, 40, 40), torch.ones(1, 40, 40))
    with pytest.raises(ValueError, match="pixel_mask shape"):
        model(torch.randn(1, 3, 40, 40), torch.ones(1, 40, 41, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_span"):  # an axis beyond 255 at stride 16
        model.pixel_decoder.stages[1].blocks[0].attention(torch.randn(1, 128, 2, 256))
    with pytest.raises(ValueError, match="unknown backbone"):
        KMaXDeepLab(backbone="vgg16")


# ---------------------------------------------------------------------------------------------------- padding


def _padded_batch(h: int = 61, w: int = 70, real: tuple[int, int] = (45, 37)):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, h, w, generator=gen).clamp(-1, 1)
    mask = torch.ones(2, h, w, dtype=torch.bool)
    mask[1, real[0] :] = False
    mask[1, :, real[1] :] = False
    return images, mask


def test_padded_pixels_never_receive_cluster_mass(monkeypatch):
    assignments = []
    original = KMaXTransformerLayer.kmeans_assignment

    def record(mask_logits, padding=None):
        out = original(mask_logits, padding)
        assignments.append((out, padding))
        return out

    monkeypatch.setattr(KMaXTransformerLayer, "kmeans_assignment", staticmethod(record))
    model = _r18_small().train()
    images, mask = _padded_batch()
    model(images, mask)
    assert len(assignments) == 6
    for assignment, padding in assignments:
        assert not assignment.requires_grad
        assert padding is not None and padding.shape == (2, assignment.shape[-1])
        column_mass = assignment.sum(1)  # (B, HW): one cluster per real pixel, none for padded ones
        assert torch.equal(column_mass, (~padding).float())
    sizes = sorted({a.shape[-1] for a, _ in assignments})
    assert sizes == [2 * 3, 4 * 5, 8 * 9]  # strides 32, 16, 8 of 61 x 70


def test_axial_attention_gets_the_strided_padding_mask(monkeypatch):
    masks = []
    original = AxialAttention2d.forward

    def record(self, x, key_padding_mask=None):
        masks.append(key_padding_mask)
        return original(self, x, key_padding_mask)

    monkeypatch.setattr(AxialAttention2d, "forward", record)
    model = _r18_small().eval()
    images, mask = _padded_batch()
    with torch.no_grad():
        model(images, mask)
    assert len(masks) == 1 + 5  # stride 32 (1 block), stride 16 (5 blocks)
    assert torch.equal(masks[0], ~mask[:, ::32, ::32])
    assert all(torch.equal(m, ~mask[:, ::16, ::16]) for m in masks[1:])
    # the real region at stride s is ceil(real / s): 45 x 37 -> 3 x 2 at 16, 2 x 2 at 32
    assert (~masks[1][1]).sum() == 3 * 3 and (~masks[0][1]).sum() == 2 * 2


def test_padding_content_is_ignored_and_an_all_true_mask_is_no_mask():
    model = _r18_small().eval()
    images, mask = _padded_batch()
    junk = images.clone()
    junk[~mask[:, None].expand_as(junk)] = 5.0
    with torch.no_grad():
        a, b = model(images, mask), model(junk, mask)
        torch.testing.assert_close(a["pred_masks"], b["pred_masks"], atol=0, rtol=0)
        full = torch.ones_like(mask)
        torch.testing.assert_close(model(images, full), model(images), atol=0, rtol=0)


def test_padding_changes_only_the_padded_sample():
    model = _r18_small().eval()
    images, mask = _padded_batch()
    with torch.no_grad():
        masked = model(images, mask)
        plain = model(images)
    torch.testing.assert_close(masked["pred_masks"][0], plain["pred_masks"][0], atol=0, rtol=0)
    assert not torch.allclose(masked["pred_masks"][1], plain["pred_masks"][1])


# ---------------------------------------------------------------------------------------------------- training


def _all_tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out
    return [t for v in values for t in _all_tensors(v)]


def test_one_step_reaches_every_parameter():
    model = _r18_small(drop_path_rate=0.0).train()
    images, mask = _padded_batch(41, 47, (33, 40))
    out = model(images, mask)
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in _all_tensors(out))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer = torch.optim.AdamW(optimizer_parameters(model, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.05}))
    before = model.transformer_decoder.cluster_centers.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.transformer_decoder.cluster_centers.weight)


def test_no_gradient_through_the_kmeans_argmax():
    """The query update depends on the mask logits only through the detached one-hot: a loss on the updated queries
    alone gives no gradient to any parameter of the layer's predictor."""
    torch.manual_seed(0)
    layer = KMaXTransformerLayer(
        num_outputs=5, pixel_channels=16, query_dim=16, base_filters=8, ffn_dim=32, predictor_hidden=8, embed_dim=8
    ).train()
    query, prediction = layer(torch.randn(2, 16, 5, 6), torch.randn(2, 16, 7))
    query.square().sum().backward()
    predictor = {n for n, p in layer.named_parameters() if n.startswith("predictor.")}
    assert predictor and all(dict(layer.named_parameters())[n].grad is None for n in predictor)
    assert layer.pixel_v_conv_bn.conv.weight.grad is not None  # the k-means value path does train
    assignment = KMaXTransformerLayer.kmeans_assignment(prediction["mask_logits"].detach().requires_grad_())
    assert not assignment.requires_grad and torch.equal(assignment.sum(1), torch.ones(2, 30))


def test_optimizer_groups_follow_the_official_recipe():
    """Through the core optimizer grouping (what FormersCLI builds): backbone lr x 0.1, no decay on biases, norms,
    relative-position tables and cluster centres."""
    model = _r18_small()
    groups = optimizer_parameters(model, torch.optim.AdamW, {"lr": 5e-4, "weight_decay": 0.05})
    groups = {g["name"]: g for g in groups}
    assert groups["decay_lr0.1"]["lr"] == pytest.approx(5e-5) and "lr" not in groups["decay"]
    no_decay = {id(p) for g in groups.values() if g["weight_decay"] == 0.0 for p in g["params"]}
    named = dict(model.named_parameters())
    backbone = {id(p) for n, p in named.items() if n.startswith("backbone.")}
    assert backbone == {id(p) for g in groups.values() if g.get("lr") == pytest.approx(5e-5) for p in g["params"]}
    for name in (
        "transformer_decoder.cluster_centers.weight",
        "pixel_decoder.stages.0.blocks.0.attention.height_axis.query_rpe.weight",
        "transformer_decoder.predictor.transformer_class_head.conv.bias",
        "pixel_decoder.in_norms.0.weight",
    ):
        assert id(named[name]) in no_decay, name
    assert id(named["pixel_decoder.stages.0.blocks.0.attention.height_axis.qkv.weight"]) not in no_decay
    assert sum(len(g["params"]) for g in groups.values()) == len(named)
    scratch = optimizer_parameters(
        _r18_small(backbone_lr_scale=1.0), torch.optim.AdamW, {"lr": 5e-4, "weight_decay": 0.05}
    )
    assert all("lr" not in g for g in scratch)


# ---------------------------------------------------------------------------------------------------- init


def test_official_initial_values():
    torch.manual_seed(0)
    model = _r18_small()
    decoder = model.transformer_decoder
    block = model.pixel_decoder.stages[2].blocks[0]
    assert torch.all(block.conv3_bn.norm.weight == 0)  # gamma 0 at the end of residual branches
    layer = decoder.layers[0]
    for conv_bn in (layer.query_conv3_bn, layer.query_ffn_conv2_bn, layer.kmeans_query_conv3_bn):
        assert torch.all(conv_bn.norm.weight == 0)
    assert torch.all(decoder.predictor.pixel_space_mask_batch_norm.weight == 0.1)
    head = decoder.predictor.transformer_class_head.conv
    assert torch.all(head.bias == 0) and head.weight.abs().max() <= 0.02 + 1e-7
    assert decoder.cluster_centers.weight.shape == (128, 32) and decoder.cluster_centers.weight.abs().max() <= 2.0
    conv = block.conv1_bn_act.conv  # he_normal: truncated normal with std sqrt(2 / in_channels)
    assert conv.weight.abs().max() <= 2 * math.sqrt(2.0 / conv.in_channels) + 1e-6


def test_void_prior():
    logits = torch.zeros(2, 3, 134)
    out = void_prior_bias(logits)
    assert torch.all(out[..., :-1] == 0)
    torch.testing.assert_close(out[..., -1], torch.full((2, 3), math.log(133 * 0.9 / 0.1)))


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_filter_maps_official_names_and_unwraps_model():
    model = fv.create_model("kmax_r18_small", **get_model_entry("kmax_r50").test_kwargs)
    state = model.state_dict()
    t = torch.zeros(1)
    official = {
        "backbone.stem.conv1.weight": t,
        "backbone.stem.conv1.norm.running_var": t,
        "backbone.res3.0.shortcut.weight": t,
        "backbone.res3.0.shortcut.norm.bias": t,
        "backbone.res4.0.conv2.norm.weight": t,
        "sem_seg_head.pixel_decoder._in_norms.0.weight": t,
        "sem_seg_head.pixel_decoder._stages.0._blocks.0._attention._height_axis.qkv_transform.conv.weight": t,
        "sem_seg_head.pixel_decoder._stages.0._blocks.0._attention._width_axis._value_rpe._embeddings.weight": t,
        "sem_seg_head.pixel_decoder._stages.0._blocks.0._attention._width_axis._batch_norm_retrieved_output.bias": t,
        "sem_seg_head.pixel_decoder._resized_fuses.0._conv_bn_low.norm.weight": t,
        "sem_seg_head.predictor._kmax_transformer_layers.0._predcitor._transformer_class_head.conv.weight": t,
        "sem_seg_head.predictor._kmax_transformer_layers.0._query_self_attention._batch_norm_similarity.weight": t,
        "sem_seg_head.predictor._cluster_centers.weight": t,
        "sem_seg_head.predictor._predcitor._pixel_space_mask_batch_norm.num_batches_tracked": t,
        "sem_seg_head.predictor._auxiliary_semantic_predictor._aspp._aspp_conv1.conv.weight": t,
        "criterion.empty_weight": t,
        "pixel_mean": t,
        "pixel_std": t,
    }
    mapped = checkpoint_filter_fn({"model": official, "iteration": 3}, model)
    assert len(mapped) == len(official) - 3
    assert set(mapped) <= set(state), sorted(set(mapped) - set(state))
    assert "backbone.layer2.0.downsample.1.bias" in mapped and "backbone.layer3.0.bn2.weight" in mapped
    no_aux = fv.create_model(
        "kmax_r18_small", **{**get_model_entry("kmax_r50").test_kwargs, "aux_semantic_head": False}
    )
    assert not any(k.startswith("aux_semantic_head") for k in checkpoint_filter_fn(official, no_aux))
    assert checkpoint_filter_fn(state, model).keys() == state.keys()  # the formers layout passes through


def test_checkpoint_filter_maps_official_convnext_names():
    kwargs = get_model_entry("kmax_convnext_tiny").test_kwargs
    model = fv.create_model("kmax_convnext_tiny", **kwargs)
    t = torch.zeros(1)
    official = {
        "backbone.downsample_layers.0.0.weight": t,
        "backbone.downsample_layers.0.1.bias": t,
        "backbone.downsample_layers.2.0.weight": t,
        "backbone.downsample_layers.2.1.weight": t,
        "backbone.stages.3.0.dwconv.weight": t,
        "backbone.stages.3.0.pwconv2.bias": t,
        "backbone.stages.0.0.gamma": t,
        "sem_seg_head.predictor._cluster_centers.weight": t,
    }
    mapped = checkpoint_filter_fn(official, model)
    assert set(mapped) <= set(model.state_dict()), sorted(set(mapped) - set(model.state_dict()))
    assert "backbone.stages.3.blocks.0.mlp.fc2.bias" in mapped and "backbone.stem.1.bias" in mapped


def test_module_exports():
    assert {"KMaXDeepLab", "checkpoint_filter_fn"} <= set(kmax.__all__)
    assert {"kmax_r50", "kmax_r18_small", "kmax_swin_tiny"} <= set(fv.list_models("kmax_*"))

"""Test oracle: kMaX-DeepLab exactly as the official PyTorch code computes it, in plain torch (no detectron2).

Written step by step from bytedance/kmax-deeplab @ f8e1d04 (`kmax_deeplab/kmax_model.py`,
`modeling/meta_arch/kmax_deeplab_head.py`, `modeling/pixel_decoder/kmax_pixel_decoder.py`,
`modeling/transformer_decoder/kmax_transformer_decoder.py`, `modeling/backbone/{resnet,convnext}.py`) and the
detectron2 pieces they rely on (`layers.Conv2d` with a `norm` child, `fvcore.nn.weight_init.c2_msra_fill`,
`structures.ImageList`). It is the reference that `formers.vision.models.kmax` is checked against, so it stays as
literal as the official code: the same einsums, permutes and reshapes, the same fp32 islands, the same
``align_corners`` rules, the same module tree. Every attribute name reproduces the official checkpoint's state-dict
keys (``backbone.stem.conv1.norm.running_mean``, ``sem_seg_head.pixel_decoder._stages.0._blocks.0._attention.
_height_axis.qkv_transform.conv.weight``, ``sem_seg_head.predictor._kmax_transformer_layers.0._predcitor...`` [sic],
``sem_seg_head.predictor._cluster_centers.weight`` ...).

What replaces detectron2 / CUDA-only pieces (same parameters, same arithmetic):

- SyncBN: ``nn.SyncBatchNorm(C, eps=1e-3, momentum=0.01)`` itself. Without a process group it falls back to
  ``F.batch_norm`` (eval: running statistics; train: per-batch statistics), on CPU too, and it accepts the 3-d and
  5-d inputs the official code feeds it (``nn.BatchNorm2d`` would refuse those).
- ``torch.cuda.amp.autocast(enabled=False)``: ``torch.autocast(<input's device type>, enabled=False)``. On CUDA this is
  the same thing; on CPU the official context manager would leave CPU autocast on (it only touches CUDA autocast), so
  the official fp32 islands exist on GPU only. The oracle keeps them on every device: it models the official GPU
  arithmetic, which is what the official models were trained with.
- detectron2 ``ShapeSpec`` / config: plain constructor arguments; the builders below carry the yaml values.
- ``ImageList.from_tensors(images, -1)``: a stack (every image is first zero-padded to ``IMAGE_SIZE``, as the
  official forward does).

The model is tied to its input size, as the official one is: the axial-attention relative-position tables are built
from ``INPUT.IMAGE_SIZE`` and the forward zero-pads every image (bottom/right) to that size.

Official defects are kept and marked ``# OFFICIAL DEFECT`` (the ``align_corners`` ones change nothing at a 32k+1
input with k even, e.g. 65, 129, 641, 1281, where every feature map is odd-sized). The model accepts the sizes the
official one does: odd sizes, and multiples of 32 (elsewhere the axial tables do not fit the feature maps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_tf_
from torch import Tensor, nn

__all__ = [
    "OfficialKMaXDeepLab",
    "build_official_kmax",
    "build_official_kmax_r50",
    "build_official_kmax_r18",
    "build_official_kmax_convnext",
    "official_resnet",
    "official_convnext",
    "CONVNEXT_CONFIGS",
    "randomize_",
]

trunc_normal_ = trunc_normal_tf_  # the official files import timm's `trunc_normal_tf_ as trunc_normal_`


def _fp32_region(x: Tensor) -> torch.autocast:
    """The official ``torch.cuda.amp.autocast(enabled=False)`` block, on the device the tensor lives on."""
    return torch.autocast(device_type=x.device.type, enabled=False)


# ============================================================================ kmax_pixel_decoder.py: building blocks


def get_activation(name: str | None) -> nn.Module:
    if name is None or name.lower() == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()  # exact (erf) GELU, as F.gelu everywhere below
    raise ValueError(name)


def get_norm(name: str | None, channels: int) -> nn.Module:
    if name is None or name.lower() == "none":
        return nn.Identity()
    if name.lower() == "syncbn":
        return nn.SyncBatchNorm(channels, eps=1e-3, momentum=0.01)
    raise ValueError(name)


class ConvBN(nn.Module):
    """conv (2-d or 1-d) -> norm -> activation; keys ``conv.weight`` (``conv.bias``), ``norm.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        norm: str | None = None,
        act: str | None = None,
        conv_type: str = "2d",
        conv_init: str = "he_normal",
        norm_init: float = 1.0,
    ) -> None:
        super().__init__()
        conv_cls = nn.Conv2d if conv_type == "2d" else nn.Conv1d
        self.conv = conv_cls(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias)
        self.norm = get_norm(norm, out_channels)
        self.act = get_activation(act)
        if conv_init == "normal":
            nn.init.normal_(self.conv.weight, std=0.02)
        elif conv_init == "trunc_normal":
            trunc_normal_(self.conv.weight, std=0.02)
        elif conv_init == "he_normal":
            # fan-in counts input channels only (no kernel area), as the official code does
            trunc_normal_(self.conv.weight, std=math.sqrt(2.0 / in_channels))
        elif conv_init == "xavier_uniform":
            nn.init.xavier_uniform_(self.conv.weight)
        if bias:
            nn.init.zeros_(self.conv.bias)
        if norm is not None:
            nn.init.constant_(self.norm.weight, norm_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


MAX_SPAN = 255


def _compute_relative_distance_matrix(query_length: int, key_length: int) -> Tensor:
    if (key_length - query_length) % 2:
        raise ValueError("Key_length should be query_length + 2 * memory_flange.")
    key_index = torch.arange(key_length)
    query_index = torch.arange(query_length) + (key_length - query_length) // 2
    distance_matrix = key_index[None, :] - query_index[:, None]
    return distance_matrix + MAX_SPAN - 1  # shifted to >= 0: each entry indexes one embedding row


class RelativePositionalEncoding(nn.Module):
    def __init__(self, query_length: int, key_length: int, depth: int) -> None:
        super().__init__()
        self._embeddings = nn.Embedding(MAX_SPAN * 2 - 1, depth)
        trunc_normal_(self._embeddings.weight, std=1.0)
        # A plain attribute, not a buffer (so not in the official state dict, and not moved by .to(device)).
        self._relative_distance_matrix = _compute_relative_distance_matrix(query_length, key_length)
        self.query_length, self.key_length, self.depth = query_length, key_length, depth

    def forward(self) -> Tensor:
        index = self._relative_distance_matrix.reshape(-1).to(self._embeddings.weight.device)
        return self._embeddings.weight[index].reshape(self.query_length, self.key_length, self.depth)


class AxialAttention(nn.Module):
    """1-d global attention along the last axis of (N, C, L), L fixed at construction (deeplab2 axial_layers.py)."""

    def __init__(
        self,
        in_planes: int,
        query_shape: int = 56,
        total_key_depth: int = 512,
        total_value_depth: int = 1024,
        num_heads: int = 8,
    ) -> None:
        assert total_key_depth % num_heads == 0 and total_value_depth % num_heads == 0
        super().__init__()
        self._in_planes = in_planes
        self._query_shape = query_shape
        self._total_key_depth = total_key_depth
        self._total_value_depth = total_value_depth
        self._num_heads = num_heads
        self._key_depth_per_head = total_key_depth // num_heads
        qkv_channels = total_key_depth * 2 + total_value_depth
        self.qkv_transform = ConvBN(
            in_planes,
            qkv_channels,
            kernel_size=1,
            stride=1,
            padding=0,
            bias=False,
            norm=None,
            act=None,
            conv_type="1d",
        )
        trunc_normal_(self.qkv_transform.conv.weight, std=in_planes**-0.5)
        self._query_rpe = RelativePositionalEncoding(query_shape, query_shape, self._key_depth_per_head)
        self._key_rpe = RelativePositionalEncoding(query_shape, query_shape, self._key_depth_per_head)
        self._value_rpe = RelativePositionalEncoding(query_shape, query_shape, total_value_depth // num_heads)
        self._batch_norm_qkv = get_norm("syncbn", qkv_channels)
        self._batch_norm_similarity = get_norm("syncbn", num_heads * 3)
        self._batch_norm_retrieved_output = get_norm("syncbn", total_value_depth * 2)

    def forward(self, x: Tensor) -> Tensor:
        N, C, L = x.shape
        qkv = self._batch_norm_qkv(self.qkv_transform(x))
        q, k, v = torch.split(qkv, [self._total_key_depth, self._total_key_depth, self._total_value_depth], dim=1)
        q = q.reshape(N, self._num_heads, self._total_key_depth // self._num_heads, L)
        k = k.reshape(N, self._num_heads, self._total_key_depth // self._num_heads, L)
        v = v.reshape(N, self._num_heads, self._total_value_depth // self._num_heads, L)

        # three similarity terms (content, query-RPE, key-RPE), each batch-normalised per head, then summed
        content_similarity = torch.einsum("bhdl,bhdm->bhlm", q, k)
        query_rpe_similarity = torch.einsum("bhdl,lmd->bhlm", q, self._query_rpe())
        key_rpe_similarity = torch.einsum("bhdm,lmd->bhlm", k, self._key_rpe())
        similarity_logits = torch.cat([content_similarity, query_rpe_similarity, key_rpe_similarity], dim=1)
        similarity_logits = self._batch_norm_similarity(similarity_logits)
        similarity_logits = similarity_logits.reshape(N, 3, self._num_heads, L, L).sum(dim=1)

        with _fp32_region(similarity_logits):
            weights = F.softmax(similarity_logits.float(), dim=-1)

        # two retrieved terms (content, value-RPE), batch-normalised per channel, then summed
        retrieved_content = torch.einsum("bhlm,bhdm->bhdl", weights, v)
        retrieved_rpe = torch.einsum("bhlm,lmd->bhdl", weights, self._value_rpe())
        retrieved_output = torch.cat([retrieved_content, retrieved_rpe], dim=1).reshape(
            N, 2 * self._total_value_depth, L
        )
        retrieved_output = self._batch_norm_retrieved_output(retrieved_output)
        return retrieved_output.reshape(N, 2, self._total_value_depth, L).sum(1)


class AxialAttention2D(nn.Module):
    """Height axis then width axis (deeplab2 axial_layers.py AxialAttention2D)."""

    def __init__(
        self,
        in_planes: int,
        query_shape: Sequence[int] = (56, 56),
        filters: int = 512,
        key_expansion: float = 1,
        value_expansion: float = 2,
        num_heads: int = 8,
    ) -> None:
        super().__init__()
        total_key_depth = int(round(filters * key_expansion))
        total_value_depth = int(round(filters * value_expansion))
        self._total_key_depth = total_key_depth
        self._total_value_depth = total_value_depth
        self._height_axis = AxialAttention(in_planes, query_shape[0], total_key_depth, total_value_depth, num_heads)
        self._width_axis = AxialAttention(
            total_value_depth, query_shape[1], total_key_depth, total_value_depth, num_heads
        )

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        x = x.permute(0, 3, 1, 2).contiguous()  # N C H W -> N W C H
        x = x.reshape(N * W, C, H)
        x = self._height_axis(x)
        x = x.reshape(N, W, self._total_value_depth, H).permute(0, 3, 2, 1).contiguous()  # N W C H -> N H C W
        x = x.reshape(N * H, self._total_value_depth, W)
        x = self._width_axis(x)
        x = x.reshape(N, H, self._total_value_depth, W).permute(0, 2, 1, 3).contiguous()
        return x.reshape(N, self._total_value_depth, H, W)


class SingleBlock(nn.Module):
    """Axial or bottleneck residual block (deeplab2 axial_blocks.py): GELU first, GELU-free residual sum."""

    def __init__(
        self,
        inplanes: int,
        filter_list: Sequence[int],
        block_type: str,
        query_shape: Sequence[int] = (56, 56),
        key_expansion: float = 1,
        value_expansion: float = 2,
        num_heads: int = 8,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self._block_type = block_type.lower()
        self._filter_list = filter_list
        self._conv1_bn_act = ConvBN(inplanes, filter_list[0], kernel_size=1, bias=False, norm="syncbn", act="gelu")
        if self._block_type == "axial":
            self._attention = AxialAttention2D(
                filter_list[0], query_shape, filter_list[1], key_expansion, value_expansion, num_heads
            )
            output_channel = filter_list[1] * value_expansion
        elif self._block_type == "bottleneck":
            self._conv2_bn_act = ConvBN(
                filter_list[0], filter_list[1], kernel_size=3, padding=1, bias=False, norm="syncbn", act="gelu"
            )
            output_channel = filter_list[1]
        self._conv3_bn = ConvBN(
            output_channel, filter_list[2], kernel_size=1, bias=False, norm="syncbn", act=None, norm_init=0.0
        )
        self._shortcut = None
        if inplanes != filter_list[-1]:
            self._shortcut = ConvBN(inplanes, filter_list[-1], kernel_size=1, bias=False, norm="syncbn", act=None)
        self.drop_path = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(x)
        shortcut = x
        if self._shortcut is not None:
            shortcut = self._shortcut(shortcut)
        x = self._conv1_bn_act(x)
        if self._block_type == "axial":
            x = self._attention(x)
            x = F.gelu(x)
        elif self._block_type == "bottleneck":
            x = self._conv2_bn_act(x)
        x = self._conv3_bn(x)
        return self.drop_path(x) + shortcut


class BlockGroup(nn.Module):
    def __init__(self, inplanes: int, base_filter: int, num_blocks: int, block_type: str, **kwargs) -> None:
        super().__init__()
        self._num_blocks = num_blocks
        block_type = block_type.lower()
        if block_type == "axial":
            filter_list = [base_filter * 2, base_filter, base_filter * 4]
        elif block_type == "bottleneck":
            filter_list = [base_filter, base_filter, base_filter * 4]
        self._blocks = nn.ModuleList()
        for _ in range(num_blocks):
            self._blocks.append(SingleBlock(inplanes, filter_list, block_type, **kwargs))
            inplanes = filter_list[-1]

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self._num_blocks):
            x = self._blocks[i](x)
        return x


class ResizedFuse(nn.Module):
    """Upsample the low-res branch to the high-res size and add (deeplab2 resized_fuse.py)."""

    def __init__(self, low_in_channels: int, high_in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.low_in_channels = low_in_channels
        self.high_in_channels = high_in_channels
        self.out_channels = out_channels
        if low_in_channels != out_channels:
            self._conv_bn_low = ConvBN(low_in_channels, out_channels, kernel_size=1, bias=False, norm="syncbn")
        if high_in_channels != out_channels:
            self._conv_bn_high = ConvBN(high_in_channels, out_channels, kernel_size=1, bias=False, norm="syncbn")

    def forward(self, lowres_x: Tensor, highres_x: Tensor) -> Tensor:
        # OFFICIAL DEFECT: one align_corners flag for both axes, decided by the parity of the low-res *width* only
        # (e.g. a 97-wide input has a 4-wide stride-32 map, so this 4 -> 7 resize does not align corners although
        # (7 - 1) / (4 - 1) is whole). At 32k+1 sizes with k even every map is odd-sized and the flag is True.
        align_corners = lowres_x.shape[-1] % 2 == 1
        if self.low_in_channels != self.out_channels:
            lowres_x = F.gelu(lowres_x)
            lowres_x = self._conv_bn_low(lowres_x)
        lowres_x = F.interpolate(lowres_x, size=highres_x.shape[2:], mode="bilinear", align_corners=align_corners)
        if self.high_in_channels != self.out_channels:
            highres_x = F.gelu(highres_x)
            highres_x = self._conv_bn_high(highres_x)
        return lowres_x + highres_x


# ================================================================================== backbone/convnext.py LayerNorm


class LayerNorm(nn.Module):
    """ConvNeXt LayerNorm, channels_last (F.layer_norm) or channels_first (explicit mean / biased variance), fp32."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        if data_format not in ("channels_last", "channels_first"):
            raise NotImplementedError
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: Tensor) -> Tensor:
        with _fp32_region(x):
            x = x.float()
            if self.data_format == "channels_last":
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / torch.sqrt(s + self.eps)
            return self.weight[:, None, None] * x + self.bias[:, None, None]


# ================================================================================== kmax_pixel_decoder.py: decoder


class kMaXPixelDecoder(nn.Module):  # noqa: N801 (official name)
    """Axial / bottleneck stages from stride 32 down to stride 4 with resized fuses (deeplab2 pixel_decoder/kmax.py).

    ``input_shape``: backbone feature name -> (channels, stride), e.g. ``{"res2": (256, 4), ..., "res5": (2048, 32)}``.
    ``spatial_shape``: ``INPUT.IMAGE_SIZE`` (H, W); the axial query lengths come from it.
    """

    def __init__(
        self,
        input_shape: dict[str, tuple[int, int]],
        *,
        dec_layers: Sequence[int],
        dec_channels: Sequence[int],
        layer_types: Sequence[str],
        drop_path_prob: float,
        spatial_shape: Sequence[int],
    ) -> None:
        super().__init__()
        self.num_stages = len(input_shape)
        assert self.num_stages == len(dec_layers) == len(dec_channels) == len(layer_types)
        ordered = sorted(input_shape.items(), key=lambda kv: -kv[1][1])
        self.in_features = [k for k, _ in ordered]  # "res5" ... "res2"
        in_channels = [v[0] for _, v in ordered]
        add_one = (spatial_shape[0] % 2, spatial_shape[1] % 2)
        query_shape = [
            (spatial_shape[0] // s + add_one[0], spatial_shape[1] // s + add_one[1]) for s in (32, 16, 8, 4, 2)
        ]
        self._in_norms = nn.ModuleList()
        self._stages = nn.ModuleList()
        self._resized_fuses = nn.ModuleList()
        for i in range(self.num_stages):
            self._in_norms.append(LayerNorm(in_channels[i], data_format="channels_first"))
            inplanes = in_channels[i] if i == 0 else dec_channels[i]
            self._stages.append(
                BlockGroup(
                    inplanes=inplanes,
                    base_filter=dec_channels[i],
                    num_blocks=dec_layers[i],
                    block_type=layer_types[i],
                    query_shape=query_shape[i],
                    key_expansion=1,
                    value_expansion=2,
                    num_heads=8,
                    drop_path_prob=drop_path_prob,
                )
            )
            if i > 0:
                self._resized_fuses.append(
                    ResizedFuse(
                        low_in_channels=dec_channels[i - 1] * 4,
                        high_in_channels=in_channels[i],
                        out_channels=dec_channels[i],
                    )
                )

    def forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        out = []
        x = self._in_norms[0](features[self.in_features[0]])
        for idx in range(self.num_stages - 1):
            x = self._stages[idx](x)
            out.append(x)
            x = self._resized_fuses[idx](
                lowres_x=x, highres_x=self._in_norms[idx + 1](features[self.in_features[idx + 1]])
            )
        x = self._stages[-1](x)
        out.append(x)
        multi_scale_features = out[:3]  # strides 32, 16, 8: the kMaX layers' pixel features
        panoptic_features = out[-1]  # stride 4: the final mask prediction
        # the aux semantic head reads the raw (un-normalised) backbone features at strides 32, 8, 4
        semantic_features = [
            features[self.in_features[0]],
            features[self.in_features[2]],
            features[self.in_features[3]],
        ]
        return panoptic_features, semantic_features, multi_scale_features


# =========================================================================== kmax_transformer_decoder.py


def add_bias_towards_void(query_class_logits: Tensor, void_prior_prob: float = 0.9) -> Tensor:
    class_logits_shape = query_class_logits.shape
    init_bias = [0.0] * class_logits_shape[-1]
    init_bias[-1] = math.log((class_logits_shape[-1] - 1) * void_prior_prob / (1 - void_prior_prob))
    return query_class_logits + torch.tensor(init_bias, dtype=query_class_logits.dtype).to(query_class_logits)


class AttentionOperation(nn.Module):
    """Query self-attention core (deeplab2 dual_path_transformer.py): BN on logits, fp32 softmax, BN, GELU."""

    def __init__(self, channels_v: int, num_heads: int) -> None:
        super().__init__()
        self._batch_norm_similarity = get_norm("syncbn", num_heads)
        self._batch_norm_retrieved_value = get_norm("syncbn", channels_v)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        N, _, _, L = query.shape
        _, num_heads, C, _ = value.shape
        similarity_logits = torch.einsum("bhdl,bhdm->bhlm", query, key)
        similarity_logits = self._batch_norm_similarity(similarity_logits)
        with _fp32_region(similarity_logits):
            attention_weights = F.softmax(similarity_logits.float(), dim=-1)
        retrieved_value = torch.einsum("bhlm,bhdm->bhdl", attention_weights, value)
        retrieved_value = retrieved_value.reshape(N, num_heads * C, L)
        retrieved_value = self._batch_norm_retrieved_value(retrieved_value)
        return F.gelu(retrieved_value)


class kMaXPredictor(nn.Module):  # noqa: N801
    """Class logits (+ void prior) and mask logits = <L2-normalised pixel embedding, query kernel>, then a 1-ch BN."""

    def __init__(self, in_channel_pixel: int, in_channel_query: int, num_classes: int = 133 + 1) -> None:
        super().__init__()
        self._pixel_space_head_conv0bnact = ConvBN(
            in_channel_pixel,
            in_channel_pixel,
            kernel_size=5,
            groups=in_channel_pixel,
            padding=2,
            bias=False,
            norm="syncbn",
            act="gelu",
            conv_init="xavier_uniform",
        )
        self._pixel_space_head_conv1bnact = ConvBN(
            in_channel_pixel, 256, kernel_size=1, bias=False, norm="syncbn", act="gelu"
        )
        self._pixel_space_head_last_convbn = ConvBN(256, 128, kernel_size=1, bias=True, norm="syncbn", act=None)
        trunc_normal_(self._pixel_space_head_last_convbn.conv.weight, std=0.01)
        # in_channel_query is unused by the official code: both heads read 256 channels
        self._transformer_mask_head = ConvBN(
            256, 128, kernel_size=1, bias=False, norm="syncbn", act=None, conv_type="1d"
        )
        self._transformer_class_head = ConvBN(256, num_classes, kernel_size=1, norm=None, act=None, conv_type="1d")
        trunc_normal_(self._transformer_class_head.conv.weight, std=0.01)
        self._pixel_space_mask_batch_norm = get_norm("syncbn", channels=1)
        nn.init.constant_(self._pixel_space_mask_batch_norm.weight, 0.1)

    def forward(self, mask_embeddings: Tensor, class_embeddings: Tensor, pixel_feature: Tensor) -> dict[str, Tensor]:
        # mask_embeddings / class_embeddings: B x C x N; pixel_feature: B x C x H x W
        pixel_space_feature = self._pixel_space_head_conv0bnact(pixel_feature)
        pixel_space_feature = self._pixel_space_head_conv1bnact(pixel_space_feature)
        pixel_space_feature = self._pixel_space_head_last_convbn(pixel_space_feature)
        pixel_space_normalized_feature = F.normalize(pixel_space_feature, p=2, dim=1)

        cluster_class_logits = self._transformer_class_head(class_embeddings).permute(0, 2, 1).contiguous()
        cluster_class_logits = add_bias_towards_void(cluster_class_logits)
        cluster_mask_kernel = self._transformer_mask_head(mask_embeddings)
        mask_logits = torch.einsum("bchw,bcn->bnhw", pixel_space_normalized_feature, cluster_mask_kernel)
        # a 1-channel BN over the (B, 1, N, H, W) logits: one scale / shift shared by every query and pixel
        mask_logits = self._pixel_space_mask_batch_norm(mask_logits.unsqueeze(dim=1)).squeeze(dim=1)
        return {
            "class_logits": cluster_class_logits,
            "mask_logits": mask_logits,
            "pixel_feature": pixel_space_normalized_feature,
        }


class kMaXTransformerLayer(nn.Module):  # noqa: N801
    """k-means cross-attention (hard argmax assignment, fp32 sum update) -> query self-attention -> FFN."""

    def __init__(
        self,
        num_classes: int = 133,
        in_channel_pixel: int = 2048,
        in_channel_query: int = 256,
        base_filters: int = 128,
        num_heads: int = 8,
        bottleneck_expansion: float = 2,
        key_expansion: float = 1,
        value_expansion: float = 2,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self._num_classes = num_classes
        self._num_heads = num_heads
        self._bottleneck_channels = int(round(base_filters * bottleneck_expansion))
        self._total_key_depth = int(round(base_filters * key_expansion))
        self._total_value_depth = int(round(base_filters * value_expansion))
        # the same drop-path rate on the k-means update, the self-attention update and the FFN update
        self.drop_path_kmeans = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()
        self.drop_path_attn = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()
        self.drop_path_ffn = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()

        initialization_std = self._bottleneck_channels**-0.5
        bc, kd, vd = self._bottleneck_channels, self._total_key_depth, self._total_value_depth
        self._query_conv1_bn_act = ConvBN(
            in_channel_query, bc, 1, bias=False, norm="syncbn", act="gelu", conv_type="1d"
        )
        self._pixel_conv1_bn_act = ConvBN(in_channel_pixel, bc, 1, bias=False, norm="syncbn", act="gelu")
        self._query_qkv_conv_bn = ConvBN(bc, kd * 2 + vd, 1, bias=False, norm="syncbn", act=None, conv_type="1d")
        trunc_normal_(self._query_qkv_conv_bn.conv.weight, std=initialization_std)
        self._pixel_v_conv_bn = ConvBN(bc, vd, 1, bias=False, norm="syncbn", act=None)
        trunc_normal_(self._pixel_v_conv_bn.conv.weight, std=initialization_std)
        self._query_self_attention = AttentionOperation(channels_v=vd, num_heads=num_heads)
        self._query_conv3_bn = ConvBN(
            vd, in_channel_query, 1, bias=False, norm="syncbn", act=None, conv_type="1d", norm_init=0.0
        )
        self._query_ffn_conv1_bn_act = ConvBN(
            in_channel_query, 2048, 1, bias=False, norm="syncbn", act="gelu", conv_type="1d"
        )
        self._query_ffn_conv2_bn = ConvBN(
            2048, in_channel_query, 1, bias=False, norm="syncbn", act=None, conv_type="1d", norm_init=0.0
        )
        self._predcitor = kMaXPredictor(in_channel_pixel=bc, in_channel_query=bc, num_classes=num_classes)  # [sic]
        self._kmeans_query_batch_norm_retrieved_value = get_norm("syncbn", vd)
        self._kmeans_query_conv3_bn = ConvBN(
            vd, in_channel_query, 1, bias=False, norm="syncbn", act=None, conv_type="1d", norm_init=0.0
        )

    def forward(self, pixel_feature: Tensor, query_feature: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        N, C, H, W = pixel_feature.shape
        _, D, L = query_feature.shape
        pixel_space = self._pixel_conv1_bn_act(F.gelu(pixel_feature))  # N C H W
        query_space = self._query_conv1_bn_act(query_feature)  # N C L

        # k-means cross-attention
        pixel_value = self._pixel_v_conv_bn(pixel_space)
        pixel_value = pixel_value.reshape(N, self._total_value_depth, H * W)
        # k-means assignment: the layer's own mask prediction, argmax over the L queries per pixel, no gradient
        prediction_result = self._predcitor(
            mask_embeddings=query_space, class_embeddings=query_space, pixel_feature=pixel_space
        )
        with torch.no_grad():
            clustering_result = prediction_result["mask_logits"].flatten(2).detach()  # N L HW
            index = clustering_result.max(1, keepdim=True)[1]
            clustering_result = torch.zeros_like(
                clustering_result, memory_format=torch.legacy_contiguous_format
            ).scatter_(1, index, 1.0)
        # k-means update: the per-cluster SUM of pixel values (not a mean), in fp32
        with _fp32_region(pixel_value):
            kmeans_update = torch.einsum("blm,bdm->bdl", clustering_result.float(), pixel_value.float())  # N C L
        kmeans_update = self._kmeans_query_batch_norm_retrieved_value(kmeans_update)
        kmeans_update = self._kmeans_query_conv3_bn(kmeans_update)
        query_feature = query_feature + self.drop_path_kmeans(kmeans_update)

        # query self-attention: q, k, v from query_space, i.e. from the queries *before* the k-means update
        query_qkv = self._query_qkv_conv_bn(query_space)
        query_q, query_k, query_v = torch.split(
            query_qkv, [self._total_key_depth, self._total_key_depth, self._total_value_depth], dim=1
        )
        query_q = query_q.reshape(N, self._num_heads, self._total_key_depth // self._num_heads, L)
        query_k = query_k.reshape(N, self._num_heads, self._total_key_depth // self._num_heads, L)
        query_v = query_v.reshape(N, self._num_heads, self._total_value_depth // self._num_heads, L)
        self_attn_update = self._query_self_attention(query_q, query_k, query_v)
        self_attn_update = self._query_conv3_bn(self_attn_update)
        query_feature = query_feature + self.drop_path_attn(self_attn_update)
        query_feature = F.gelu(query_feature)

        # FFN
        ffn_update = self._query_ffn_conv1_bn_act(query_feature)
        ffn_update = self._query_ffn_conv2_bn(ffn_update)
        query_feature = query_feature + self.drop_path_ffn(ffn_update)
        query_feature = F.gelu(query_feature)
        return query_feature, prediction_result


class ASPP(nn.Module):
    def __init__(self, in_channels: int, output_channels: int, atrous_rates: Sequence[int]) -> None:
        super().__init__()
        self._aspp_conv0 = ConvBN(in_channels, output_channels, 1, bias=False, norm="syncbn", act="gelu")
        rate1, rate2, rate3 = atrous_rates
        self._aspp_conv1 = ConvBN(
            in_channels, output_channels, 3, dilation=rate1, padding=rate1, bias=False, norm="syncbn", act="gelu"
        )
        self._aspp_conv2 = ConvBN(
            in_channels, output_channels, 3, dilation=rate2, padding=rate2, bias=False, norm="syncbn", act="gelu"
        )
        self._aspp_conv3 = ConvBN(
            in_channels, output_channels, 3, dilation=rate3, padding=rate3, bias=False, norm="syncbn", act="gelu"
        )
        self._avg_pool = nn.AdaptiveAvgPool2d(1)
        self._aspp_pool = ConvBN(in_channels, output_channels, 1, bias=False, norm="syncbn", act="gelu")
        self._proj_conv_bn_act = ConvBN(output_channels * 5, output_channels, 1, bias=False, norm="syncbn", act="gelu")
        self._proj_drop = nn.Dropout(p=0.1)

    def forward(self, x: Tensor) -> Tensor:
        results = [self._aspp_conv0(x), self._aspp_conv1(x), self._aspp_conv2(x), self._aspp_conv3(x)]
        # (upsampling a 1x1 map: align_corners makes no difference, the broadcast is exact either way)
        align_corners = x.shape[-1] % 2 == 1
        pooled = self._aspp_pool(self._avg_pool(x))
        results.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=align_corners))
        x = torch.cat(results, dim=1)
        x = self._proj_conv_bn_act(x)
        return self._proj_drop(x)


class SemanticPredictor(nn.Module):
    """Aux semantic head (training only): ASPP on res5 + two low-level fusions (res3, res2) + a DeepLab head."""

    def __init__(self, in_channels: int, os8_channels: int, os4_channels: int, num_classes: int) -> None:
        super().__init__()
        self._aspp = ASPP(in_channels=in_channels, output_channels=256, atrous_rates=[6, 12, 18])
        self._low_level_projection_os8 = ConvBN(os8_channels, 64, 1, bias=False, norm="syncbn", act="gelu")
        self._low_level_fusion_os8_conv0_bn_act = ConvBN(
            256 + 64,
            256 + 64,
            groups=256 + 64,
            kernel_size=5,
            padding=2,
            bias=False,
            norm="syncbn",
            act="gelu",
            conv_init="xavier_uniform",
        )
        self._low_level_fusion_os8_conv1_bn_act = ConvBN(256 + 64, 256, 1, bias=False, norm="syncbn", act="gelu")
        self._low_level_projection_os4 = ConvBN(os4_channels, 32, 1, bias=False, norm="syncbn", act="gelu")
        self._low_level_fusion_os4_conv0_bn_act = ConvBN(
            256 + 32,
            256 + 32,
            groups=256 + 32,
            kernel_size=5,
            padding=2,
            bias=False,
            norm="syncbn",
            act="gelu",
            conv_init="xavier_uniform",
        )
        self._low_level_fusion_os4_conv1_bn_act = ConvBN(256 + 32, 256, 1, bias=False, norm="syncbn", act="gelu")
        self.conv_block_0 = ConvBN(
            256,
            256,
            groups=256,
            kernel_size=5,
            padding=2,
            bias=False,
            norm="syncbn",
            act="gelu",
            conv_init="xavier_uniform",
        )
        self.conv_block_1 = ConvBN(256, 256, 1, bias=False, norm="syncbn", act="gelu")
        self.final_conv = ConvBN(256, num_classes, 1, norm=None, act=None)
        trunc_normal_(self.final_conv.conv.weight, std=0.01)

    def forward(self, x: Tensor, low_features_os8: Tensor, low_features_os4: Tensor) -> Tensor:
        x = self._aspp(x)
        # OFFICIAL DEFECT: one flag from the stride-32 map's width, reused for the stride-8 -> stride-4 upsampling too
        align_corners = x.shape[-1] % 2 == 1
        low_features_os8 = self._low_level_projection_os8(low_features_os8)
        x = F.interpolate(x, size=low_features_os8.shape[-2:], mode="bilinear", align_corners=align_corners)
        x = torch.concat([x, low_features_os8], dim=1)
        x = self._low_level_fusion_os8_conv0_bn_act(x)
        x = self._low_level_fusion_os8_conv1_bn_act(x)
        low_features_os4 = self._low_level_projection_os4(low_features_os4)
        x = F.interpolate(x, size=low_features_os4.shape[-2:], mode="bilinear", align_corners=align_corners)
        x = torch.concat([x, low_features_os4], dim=1)
        x = self._low_level_fusion_os4_conv0_bn_act(x)
        x = self._low_level_fusion_os4_conv1_bn_act(x)
        x = self.conv_block_0(x)
        x = self.conv_block_1(x)
        return self.final_conv(x)


class kMaXTransformerDecoder(nn.Module):  # noqa: N801
    """6 kMaX layers (2 per stride 32/16/8), final predictor on the stride-4 feature, aux semantic head (training).

    ``in_channels``: TRANS_DEC.IN_CHANNELS (the pixel-decoder output channels at strides 32, 16, 8, 4);
    ``input_shape_from_backbone``: backbone feature name -> channels (res2, res3, res5 read by the aux head).
    """

    def __init__(
        self,
        *,
        dec_layers: Sequence[int],
        in_channels: Sequence[int],
        num_classes: int,
        num_queries: int,
        drop_path_prob: float,
        add_aux_semantic_pred: bool,
        use_aux_semantic_decoder: bool,
        input_shape_from_backbone: dict[str, int],
    ) -> None:
        super().__init__()
        self._kmax_transformer_layers = nn.ModuleList()
        self._num_blocks = dec_layers
        os2channels = {32: in_channels[0], 16: in_channels[1], 8: in_channels[2]}
        for index, output_stride in enumerate([32, 16, 8]):
            for _ in range(self._num_blocks[index]):
                self._kmax_transformer_layers.append(
                    kMaXTransformerLayer(
                        num_classes=num_classes + 1,
                        in_channel_pixel=os2channels[output_stride],
                        in_channel_query=256,
                        base_filters=128,
                        num_heads=8,
                        bottleneck_expansion=2,
                        key_expansion=1,
                        value_expansion=2,
                        drop_path_prob=drop_path_prob,
                    )
                )
        self._num_queries = num_queries
        # the learnable cluster centres: an Embedding used as a (C=256, L=num_queries) matrix
        self._cluster_centers = nn.Embedding(256, num_queries)
        trunc_normal_(self._cluster_centers.weight, std=1.0)
        self._class_embedding_projection = ConvBN(256, 256, 1, bias=False, norm="syncbn", act="gelu", conv_type="1d")
        self._mask_embedding_projection = ConvBN(256, 256, 1, bias=False, norm="syncbn", act="gelu", conv_type="1d")
        self._predcitor = kMaXPredictor(
            in_channel_pixel=in_channels[-1], in_channel_query=256, num_classes=num_classes + 1
        )

        self._add_aux_semantic_pred = add_aux_semantic_pred
        self._use_aux_semantic_decoder = use_aux_semantic_decoder
        if add_aux_semantic_pred:
            res5 = input_shape_from_backbone["res5"]
            if use_aux_semantic_decoder:
                self._auxiliary_semantic_predictor = SemanticPredictor(
                    in_channels=res5,
                    os8_channels=input_shape_from_backbone["res3"],
                    os4_channels=input_shape_from_backbone["res2"],
                    num_classes=num_classes + 1,  # +1: void
                )
            else:
                # OFFICIAL DEFECT (this branch is off in every official config): num_classes outputs, no void
                self._auxiliary_semantic_predictor = nn.Sequential(
                    ConvBN(
                        res5,
                        res5,
                        groups=res5,
                        kernel_size=5,
                        padding=2,
                        bias=False,
                        norm="syncbn",
                        act="gelu",
                        conv_init="xavier_uniform",
                    ),
                    ConvBN(res5, 256, kernel_size=1, bias=False, norm="syncbn", act="gelu"),
                    ConvBN(256, num_classes, kernel_size=1, norm=None, act=None),
                )
                trunc_normal_(self._auxiliary_semantic_predictor[2].conv.weight, std=0.01)

    def forward(self, x: list[Tensor], panoptic_features: Tensor, semantic_features: list[Tensor]) -> dict:
        B = x[0].shape[0]
        cluster_centers = self._cluster_centers.weight.unsqueeze(0).repeat(B, 1, 1)  # B x C x L
        current_transformer_idx = 0
        predictions_class, predictions_mask, predictions_pixel_feature = [], [], []
        for i, feat in enumerate(x):
            for _ in range(self._num_blocks[i]):
                cluster_centers, prediction_result = self._kmax_transformer_layers[current_transformer_idx](
                    pixel_feature=feat, query_feature=cluster_centers
                )
                predictions_class.append(prediction_result["class_logits"])
                predictions_mask.append(prediction_result["mask_logits"])
                predictions_pixel_feature.append(prediction_result["pixel_feature"])
                current_transformer_idx += 1

        class_embeddings = self._class_embedding_projection(cluster_centers)
        mask_embeddings = self._mask_embedding_projection(cluster_centers)
        prediction_result = self._predcitor(
            class_embeddings=class_embeddings, mask_embeddings=mask_embeddings, pixel_feature=panoptic_features
        )
        predictions_class.append(prediction_result["class_logits"])
        predictions_mask.append(prediction_result["mask_logits"])
        predictions_pixel_feature.append(prediction_result["pixel_feature"])

        out = {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "pixel_feature": predictions_pixel_feature[-1],
            "aux_outputs": self._set_aux_loss(predictions_class, predictions_mask, predictions_pixel_feature),
        }
        if self._add_aux_semantic_pred and self.training:
            semantic_features, low_features_os8, low_features_os4 = semantic_features
            if self._use_aux_semantic_decoder:
                aux_semantic_prediction = self._auxiliary_semantic_predictor(
                    x=semantic_features, low_features_os8=low_features_os8, low_features_os4=low_features_os4
                )
            else:
                aux_semantic_prediction = self._auxiliary_semantic_predictor(semantic_features)
            out["aux_semantic_pred"] = aux_semantic_prediction
        return out

    def _set_aux_loss(self, outputs_class: list, outputs_seg_masks: list, outputs_pixel_feature: list) -> list[dict]:
        target_size = outputs_seg_masks[-1].shape[-2:]
        # OFFICIAL DEFECT: parity of the stride-4 *height* here (every other flag of the model reads a width)
        align_corners = target_size[0] % 2 == 1
        return [
            {
                "pred_logits": a,
                "pred_masks": F.interpolate(b, size=target_size, mode="bilinear", align_corners=align_corners),
                "pixel_feature": F.interpolate(c, size=target_size, mode="bilinear", align_corners=align_corners),
            }
            for a, b, c in zip(outputs_class[:-1], outputs_seg_masks[:-1], outputs_pixel_feature[:-1], strict=True)
        ]


# ============================================================================================ kmax_deeplab_head.py


class kMaXDeepLabHead(nn.Module):  # noqa: N801
    def __init__(
        self, pixel_decoder: kMaXPixelDecoder, transformer_predictor: kMaXTransformerDecoder, num_classes: int
    ) -> None:
        super().__init__()
        self.common_stride = 4
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.num_classes = num_classes

    def forward(self, features: dict[str, Tensor]) -> dict:
        panoptic_features, semantic_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, panoptic_features, semantic_features)


# ================================================================== detectron2 ResNet (modeling/backbone/resnet.py)


def c2_msra_fill(module: nn.Module) -> None:
    """fvcore.nn.weight_init.c2_msra_fill."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class D2Conv2d(nn.Conv2d):
    """detectron2.layers.Conv2d: a conv whose ``norm`` child is applied right after it (keys ``weight``, ``norm.*``)."""

    def __init__(self, *args, norm: nn.Module | None = None, activation: nn.Module | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class CNNBlockBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride


class BasicBlock(CNNBlockBase):
    """ResNet-18/34 block: two 3x3 convs (stride in the first), projection shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "syncbn") -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = D2Conv2d(
                in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
            )
        self.conv1 = D2Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        self.conv2 = D2Conv2d(
            out_channels, out_channels, 3, stride=1, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = F.relu_(out)
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out += shortcut
        return F.relu_(out)


class BottleneckBlock(CNNBlockBase):
    """ResNet-50 block: 1x1, 3x3 (stride here: STRIDE_IN_1X1 False in every kMaX config), 1x1; projection shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "syncbn",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = D2Conv2d(
                in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
            )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = D2Conv2d(
            in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False, norm=get_norm(norm, bottleneck_channels)
        )
        self.conv2 = D2Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride_3x3,
            padding=1 * dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = D2Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out += shortcut
        return F.relu_(out)


class BasicStem(CNNBlockBase):
    """7x7 stride-2 conv + norm + ReLU, 3x3 stride-2 max-pool (padding 1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "syncbn") -> None:
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = D2Conv2d(
            in_channels, out_channels, 7, stride=2, padding=3, bias=False, norm=get_norm(norm, out_channels)
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """detectron2 ResNet with ``out_features`` res2..res5 (no classifier, FREEZE_AT 0)."""

    def __init__(self, stem: BasicStem, stages: list[list[CNNBlockBase]], out_features: Sequence[str]) -> None:
        super().__init__()
        self.stem = stem
        self._out_features = list(out_features)
        self.stage_names, self.stages = [], []
        self._out_feature_channels = {}
        self._out_feature_strides = {}
        stride = stem.stride
        for i, blocks in enumerate(stages):
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            stride = int(stride * math.prod(b.stride for b in blocks))
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = blocks[-1].out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = {}
        x = self.stem(x)
        for name, stage in zip(self.stage_names, self.stages, strict=True):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, tuple[int, int]]:
        return {n: (self._out_feature_channels[n], self._out_feature_strides[n]) for n in self._out_features}


def official_resnet(depth: int = 50, norm: str = "syncbn") -> ResNet:
    """``custom_bn_build_resnet_backbone`` with the kMaX yaml: STEM_OUT 64, RES2_OUT 256 (64 for R18/R34),
    NUM_GROUPS 1, WIDTH_PER_GROUP 64, STRIDE_IN_1X1 False, RES5_DILATION 1, no deformable conv."""
    num_blocks_per_stage = {
        18: [2, 2, 2, 2],
        34: [3, 4, 6, 3],
        50: [3, 4, 6, 3],
        101: [3, 4, 23, 3],
        152: [3, 8, 36, 3],
    }[depth]
    stem = BasicStem(3, 64, norm)
    in_channels, out_channels, bottleneck_channels = 64, (64 if depth in (18, 34) else 256), 64
    stages = []
    for idx in range(4):
        first_stride = 1 if idx == 0 else 2
        blocks = []
        for b in range(num_blocks_per_stage[idx]):
            stride = first_stride if b == 0 else 1
            if depth in (18, 34):
                blocks.append(BasicBlock(in_channels, out_channels, stride=stride, norm=norm))
            else:
                blocks.append(
                    BottleneckBlock(
                        in_channels,
                        out_channels,
                        bottleneck_channels=bottleneck_channels,
                        stride=stride,
                        num_groups=1,
                        norm=norm,
                        stride_in_1x1=False,
                        dilation=1,
                    )
                )
            in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
        stages.append(blocks)
    return ResNet(stem, stages, out_features=["res2", "res3", "res4", "res5"])


# ======================================================================================== backbone/convnext.py


class Block(nn.Module):
    """ConvNeXt block: dw 7x7 -> LN (channels_last, fp32) -> Linear 4x -> GELU -> Linear -> layer scale -> residual."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)  # N C H W -> N H W C
        x = self.norm(x)
        x = self.pwconv1(x)
        x = self.act(x)
        x = self.pwconv2(x)
        if self.gamma is not None:
            x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class ConvNeXt(nn.Module):
    """``D2ConvNeXt``: ConvNeXt with DeepLab2's zero padding before every downsampling (outputs res2..res5)."""

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        out_indices: Sequence[int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        self.num_features = list(dims)
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm(dims[0], 1e-6, "channels_first"))
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(dims[i], 1e-6, "channels_first"), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        self.stages = nn.ModuleList()
        dp_rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]  # cpu: meta-safe
        cur = 0
        for i in range(4):
            self.stages.append(
                nn.Sequential(*[Block(dims[i], dp_rates[cur + j], layer_scale_init_value) for j in range(depths[i])])
            )
            cur += depths[i]
        self.out_indices = list(out_indices)
        self._out_features = ["res2", "res3", "res4", "res5"]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outs = {}
        for i in range(4):
            # deeplab2 pixel_encoder/convnext.py: pad (1, 2) before the 4x4 stem, (0, 1) before each 2x2 downsampling
            if i == 0:
                x = F.pad(x, (1, 2, 1, 2, 0, 0, 0, 0), "constant", 0)
            else:
                x = F.pad(x, (0, 1, 0, 1, 0, 0, 0, 0), "constant", 0)
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
            if i in self.out_indices:
                outs[f"res{i + 2}"] = x
        return {k: v for k, v in outs.items() if k in self._out_features}

    def output_shape(self) -> dict[str, tuple[int, int]]:
        strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        return {f"res{i + 2}": (self.num_features[i], strides[f"res{i + 2}"]) for i in range(4)}


CONVNEXT_CONFIGS = {  # configs/coco/panoptic_segmentation/kmax_convnext_*.yaml
    "tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), "drop_path_rate": 0.3},
    "small": {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768), "drop_path_rate": 0.4},
    "base": {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024), "drop_path_rate": 0.5},
    "large": {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536), "drop_path_rate": 0.6},
}


def official_convnext(size: str = "tiny", drop_path_rate: float | None = None) -> ConvNeXt:
    cfg = dict(CONVNEXT_CONFIGS[size])
    if drop_path_rate is not None:
        cfg["drop_path_rate"] = drop_path_rate
    return ConvNeXt(3, cfg["depths"], cfg["dims"], cfg["drop_path_rate"], 1e-6, (0, 1, 2, 3))


# ============================================================================================== kmax_model.py


class OfficialKMaXDeepLab(nn.Module):
    """``kMaXDeepLab`` (meta-arch) up to the raw head outputs: the official forward before the loss / post-processing.

    ``forward(images, is_real_pixels=None)`` takes images already normalised as the official forward does
    (``(x - 127.5) / 127.5``, see :meth:`normalize`), (B, 3, H, W) with H, W <= ``input_shape``; padded pixels are
    zeroed, every image is zero-padded bottom/right to ``input_shape`` (INPUT.IMAGE_SIZE), and the head's output dict
    is returned (``pred_logits`` (B, Q, K+1), ``pred_masks`` / ``pixel_feature`` at stride 4 of the padded size,
    ``aux_outputs``, and in training ``aux_semantic_pred``; in training the outputs are cast to fp32 as the official
    forward does right before the criterion).
    """

    def __init__(
        self, backbone: nn.Module, sem_seg_head: kMaXDeepLabHead, input_shape: Sequence[int], num_queries: int
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.num_queries = num_queries
        self.input_shape = list(input_shape)
        # non-persistent, as in the official model: not part of its state dict
        self.register_buffer("pixel_mean", torch.tensor([127.5, 127.5, 127.5]).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([127.5, 127.5, 127.5]).view(-1, 1, 1), False)

    def normalize(self, images: Tensor) -> Tensor:
        """0..255 RGB images -> the model's input range [-1, 1]."""
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor, is_real_pixels: Tensor | None = None) -> dict:
        if is_real_pixels is not None:
            images = images * is_real_pixels[:, None].to(images)  # padded pixels set to 0
        cur_height, cur_width = images.shape[-2:]
        padding = (0, max(0, self.input_shape[1] - cur_width), 0, max(0, self.input_shape[0] - cur_height), 0, 0)
        images = F.pad(images, padding, value=0)
        features = self.backbone(images)
        outputs = self.sem_seg_head(features)
        if self.training:
            with _fp32_region(images):
                for key in ("pixel_feature", "pred_masks", "pred_logits", "aux_semantic_pred"):
                    if key in outputs:
                        outputs[key] = outputs[key].float()
                for aux in outputs["aux_outputs"]:
                    for key in ("pixel_feature", "pred_masks", "pred_logits"):
                        aux[key] = aux[key].float()
        return outputs


# ================================================================================================== builders


def build_official_kmax(
    backbone: nn.Module,
    *,
    num_classes: int = 133,
    num_queries: int = 128,
    image_size: Sequence[int] = (1281, 1281),
    pixel_dec_layers: Sequence[int] = (1, 5, 1, 1),
    pixel_layer_types: Sequence[str] = ("axial", "axial", "bottleneck", "bottleneck"),
    pixel_dec_channels: Sequence[int] = (512, 256, 128, 64),
    pixel_drop_path: float = 0.0,
    trans_dec_layers: Sequence[int] = (2, 2, 2),
    trans_drop_path: float = 0.2,
    aux_semantic: bool = True,
    use_aux_semantic_decoder: bool = True,
) -> OfficialKMaXDeepLab:
    """The official model from its config values (defaults: configs/coco/panoptic_segmentation/kmax_r50.yaml).

    ``backbone`` must return res2..res5 and have ``output_shape()`` (name -> (channels, stride)).
    TRANS_DEC.IN_CHANNELS is derived as the pixel decoder's output widths (4 x DEC_CHANNELS), which is what the yaml
    spells out ([2048, 1024, 512, 256] for DEC_CHANNELS [512, 256, 128, 64]).
    """
    shapes = backbone.output_shape()
    pixel_decoder = kMaXPixelDecoder(
        shapes,
        dec_layers=pixel_dec_layers,
        dec_channels=pixel_dec_channels,
        layer_types=pixel_layer_types,
        drop_path_prob=pixel_drop_path,
        spatial_shape=image_size,
    )
    predictor = kMaXTransformerDecoder(
        dec_layers=trans_dec_layers,
        in_channels=[c * 4 for c in pixel_dec_channels],
        num_classes=num_classes,
        num_queries=num_queries,
        drop_path_prob=trans_drop_path,
        add_aux_semantic_pred=aux_semantic,
        use_aux_semantic_decoder=use_aux_semantic_decoder,
        input_shape_from_backbone={name: ch for name, (ch, _) in shapes.items()},
    )
    head = kMaXDeepLabHead(pixel_decoder, predictor, num_classes)
    return OfficialKMaXDeepLab(backbone, head, image_size, num_queries)


def build_official_kmax_r50(
    num_classes: int = 133, image_size: Sequence[int] = (65, 65), **kwargs
) -> OfficialKMaXDeepLab:
    """kMaX-DeepLab R50 (configs/coco/panoptic_segmentation/kmax_r50.yaml) for a fixed input size."""
    return build_official_kmax(official_resnet(50), num_classes=num_classes, image_size=image_size, **kwargs)


def build_official_kmax_r18(
    num_classes: int = 133, image_size: Sequence[int] = (65, 65), **kwargs
) -> OfficialKMaXDeepLab:
    """The official model with detectron2's depth-18 ResNet (BasicBlock, RES2_OUT_CHANNELS 64): res2..res5 have
    64/128/256/512 channels. Any pixel-decoder / transformer-decoder config value may be overridden (e.g. a narrower
    ``pixel_dec_channels`` for fast tests); the widths the official code hard-codes (256-d queries, 128-d pixel
    embedding, 2048-d FFN, ASPP 256) are kept."""
    return build_official_kmax(official_resnet(18), num_classes=num_classes, image_size=image_size, **kwargs)


def build_official_kmax_convnext(
    size: str = "tiny",
    num_classes: int = 133,
    image_size: Sequence[int] = (65, 65),
    backbone_drop_path: float | None = None,
    **kwargs,
) -> OfficialKMaXDeepLab:
    """kMaX-DeepLab ConvNeXt-T/S/B/L (configs/coco/panoptic_segmentation/kmax_convnext_*.yaml)."""
    return build_official_kmax(
        official_convnext(size, backbone_drop_path), num_classes=num_classes, image_size=image_size, **kwargs
    )


# ============================================================================================= test helpers


@torch.no_grad()
def randomize_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Make every norm non-trivial, in place (returns the model): random affine parameters for every BN / LN
    (weight ~ U(0.5, 1.5), bias ~ N(0, 0.1)), random BN running statistics (mean ~ N(0, 0.1), var ~ U(0.5, 2)) and
    non-negligible ConvNeXt layer scales (U(0.1, 0.3)), so that no norm is the identity and zero-initialised
    branches contribute. Conv / linear / embedding weights keep their (random) official initialisation."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def uniform(t: Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype) * (hi - lo) + lo)

    def normal(t: Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) * std)

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            uniform(module.weight, 0.5, 1.5)
            normal(module.bias, 0.1)
            normal(module.running_mean, 0.1)
            uniform(module.running_var, 0.5, 2.0)
        elif isinstance(module, LayerNorm):
            uniform(module.weight, 0.5, 1.5)
            normal(module.bias, 0.1)
        elif isinstance(module, Block) and module.gamma is not None:
            uniform(module.gamma, 0.1, 0.3)
    return model

"""kMaX-DeepLab (Yu et al. 2022, "k-means Mask Transformer", ECCV 2022, arXiv 2207.04044), after the official PyTorch
port ``bytedance/kmax-deeplab`` (``kmax_deeplab/modeling``) of DeepLab2 (``google-research/deeplab2``).

Architecture (official names in brackets; every BatchNorm has eps 1e-3 and momentum 0.01, TensorFlow's 0.99 decay):

- **backbone**: a timm ResNet (``resnet50`` = detectron2's R-50 with ``STRIDE_IN_1X1=False``, i.e. ResNet v1.5; every
  BatchNorm set to eps 1e-3 / momentum 0.01 as the official ``custom_bn_build_resnet_backbone``), a timm ConvNeXt
  (with DeepLab2's zero padding: ``(1, 2, 1, 2)`` before the stem and ``(0, 1, 0, 1)`` before each downsample, i.e.
  *before* its LayerNorm, as the official code), or formers' own Swin (``kmax_swin_tiny``, not an official config);
  features at strides 4 / 8 / 16 / 32 of size ``ceil(H / s)``;
- **pixel decoder** [``kMaXPixelDecoder``]: a channels-first LayerNorm (eps 1e-6) on each backbone map, then from
  stride 32 to 4 block groups of types axial / axial / bottleneck / bottleneck with ``[1, 5, 1, 1]`` blocks and base
  widths ``[512, 256, 128, 64]`` (outputs ``4 x`` those), joined by ``ResizedFuse`` (bilinear, ``align_corners`` =
  the low-resolution width is odd). The axial blocks use :class:`formers.core.layers.AxialAttention2d`;
- **transformer decoder** [``kMaXTransformerDecoder``]: 256 x 128 learned cluster centres (queries), 6 layers (2 per
  stride 32 / 16 / 8), each: k-means cross-attention (the layer's own predictor gives mask logits; their argmax over
  queries, a detached one-hot, sums the pixel values per cluster in float32 with autocast off), query self-attention
  with BatchNorm'd logits (no ``1/sqrt(d)`` scale), FFN 256 -> 2048 -> 256, GELU after each residual sum, DropPath on
  the three updates; then class / mask embedding projections and the final predictor on the stride-4 feature;
- **predictor** [``kMaXPredictor``]: 5x5 depthwise conv, 1x1 -> 256, 1x1 -> 128 (with bias), L2-normalised pixel
  embeddings; class head (``K + 1`` logits, the void prior ``log((K + 1 - 1) * 0.9 / 0.1)`` added to the last one);
  mask head 1x1 -> 128; mask logits = pixel . kernel, then a 1-channel BatchNorm whose gamma starts at 0.1;
- **auxiliary semantic head** [``SemanticPredictor``], training only: ASPP (rates 6 / 12 / 18, image pooling) on the
  stride-32 backbone map, two low-level fusions (stride 8 -> 64 channels, stride 4 -> 32), head -> ``K + 1``.

Initialisations are the official ones (TensorFlow truncated normal ``he_normal`` = std ``sqrt(2 / in_channels)`` for
convolutions, xavier-uniform for depthwise ones, std 0.01 for the class / last pixel / semantic convolutions, std
``in ** -0.5`` for qkv and value projections, std 1 for the relative position tables and cluster centres, BatchNorm
gamma 0 at the end of every residual branch).

**Inputs** are images normalised to ``[-1, 1]`` (official ``PIXEL_MEAN = PIXEL_STD = 127.5``; ``mean = std = 0.5``
on ``[0, 1]`` here), of any size. ``32k + 1`` sizes (641, 1281) reproduce the official ``align_corners`` behaviour
exactly; the official code pads every image to one fixed size, this one runs at the batch's size.

**Padding** (``pixel_mask``, bool ``(B, H, W)``, ``True`` = real pixel): padded pixels are zeroed, masked out of the
axial attention keys (exactly zero weight) and excluded from the k-means update (their one-hot column is zero, so they
never move a cluster centre). The mask at stride ``s`` is ``pixel_mask[:, ::s, ::s]``. What is *not* masked, as in the
official code (which pads with zeros to a fixed size): convolutions see the padded zeros, and in training the
BatchNorm batch statistics include the padded positions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_tf_
from torch import Tensor, nn

from formers.core.layers import AxialAttention2d, DropPath
from formers.core.models.base import FormersModel, check_input
from formers.core.registry import register_model

__all__ = [
    "KMaXDeepLab",
    "KMaXPixelDecoder",
    "KMaXTransformerDecoder",
    "KMaXTransformerLayer",
    "KMaXPredictor",
    "SemanticPredictor",
    "checkpoint_filter_fn",
    "void_prior_bias",
]

PAPER = "Yu et al. 2022, k-means Mask Transformer (kMaX-DeepLab), ECCV 2022, arXiv:2207.04044"

BN_EPS, BN_MOMENTUM = 1e-3, 0.01
STRIDES = (4, 8, 16, 32)


# ---------------------------------------------------------------------------------------------------- building blocks


def _bn(channels: int, dim: int) -> nn.Module:
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dim]
    return cls(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBN(nn.Module):
    """Convolution, optional BatchNorm, optional GELU (the official ``ConvBN``; keys ``conv.*``, ``norm.*``).

    ``init``: ``"he_normal"`` (truncated normal, std ``sqrt(2 / in_channels)``), ``"xavier_uniform"`` or
    ``("trunc_normal", std)``. ``norm_init`` is the BatchNorm's initial gamma (0 at the end of residual branches).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
        conv1d: bool = False,
        init: str | tuple[str, float] = "he_normal",
        norm_init: float = 1.0,
    ) -> None:
        super().__init__()
        conv = nn.Conv1d if conv1d else nn.Conv2d
        self.conv = conv(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, groups=groups, bias=bias
        )
        self.norm = _bn(out_channels, 1 if conv1d else 2) if norm else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()
        if init == "he_normal":
            trunc_normal_tf_(self.conv.weight, std=math.sqrt(2.0 / in_channels))
        elif init == "xavier_uniform":
            nn.init.xavier_uniform_(self.conv.weight)
        else:
            trunc_normal_tf_(self.conv.weight, std=init[1])
        if bias:
            nn.init.zeros_(self.conv.bias)
        if norm:
            nn.init.constant_(self.norm.weight, norm_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm computed in float32 with autocast off (the official ConvNeXt ``LayerNorm``)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            mean = x.mean(1, keepdim=True)
            var = (x - mean).pow(2).mean(1, keepdim=True)
            x = (x - mean) / torch.sqrt(var + self.eps)
            return self.weight[:, None, None] * x + self.bias[:, None, None]


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _align_corners(size: int) -> bool:
    return size % 2 == 1


# ---------------------------------------------------------------------------------------------------- pixel decoder


class AxialBlock(nn.Module):
    """The official ``SingleBlock``: GELU on the input, 1x1 conv-BN-GELU, axial attention + GELU (``axial``) or
    3x3 conv-BN-GELU (``bottleneck``), 1x1 conv-BN (gamma 0), DropPath, plus the (projected) input.

    Shapes:
        - x: ``(B, in_channels, H, W)``; key_padding_mask: optional bool ``(B, H, W)`` (``True`` = padding)
        - output: ``(B, filters[2], H, W)``
    """

    def __init__(
        self, in_channels: int, filters: Sequence[int], block_type: str, num_heads: int, drop_path: float
    ) -> None:
        super().__init__()
        self.block_type = block_type
        self.conv1_bn_act = ConvBN(in_channels, filters[0], act=True)
        if block_type == "axial":
            self.attention = AxialAttention2d(
                filters[0], filters[1], key_expansion=1, value_expansion=2, num_heads=num_heads
            )
            mid = self.attention.value_depth
        else:
            self.conv2_bn_act = ConvBN(filters[0], filters[1], 3, padding=1, act=True)
            mid = filters[1]
        self.conv3_bn = ConvBN(mid, filters[2], norm_init=0.0)
        self.shortcut = ConvBN(in_channels, filters[2]) if in_channels != filters[2] else None
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = F.gelu(x)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        x = self.conv1_bn_act(x)
        if self.block_type == "axial":
            x = F.gelu(self.attention(x, key_padding_mask))
        else:
            x = self.conv2_bn_act(x)
        x = self.conv3_bn(x)
        return self.drop_path(x) + shortcut


class BlockGroup(nn.Module):
    """``num_blocks`` :class:`AxialBlock` s; axial filters ``[2b, b, 4b]``, bottleneck ``[b, b, 4b]``."""

    def __init__(
        self, in_channels: int, base: int, num_blocks: int, block_type: str, num_heads: int, drop_path: float
    ) -> None:
        super().__init__()
        filters = [2 * base, base, 4 * base] if block_type == "axial" else [base, base, 4 * base]
        self.blocks = nn.ModuleList()
        for _ in range(num_blocks):
            self.blocks.append(AxialBlock(in_channels, filters, block_type, num_heads, drop_path))
            in_channels = filters[-1]

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x


class ResizedFuse(nn.Module):
    """Bilinear upsampling of the low-resolution map (GELU + 1x1 conv-BN first when its width differs) added to the
    high-resolution one (GELU + 1x1 conv-BN when its width differs); ``align_corners`` = low-res width is odd."""

    def __init__(self, low_channels: int, high_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_bn_low = ConvBN(low_channels, out_channels) if low_channels != out_channels else None
        self.conv_bn_high = ConvBN(high_channels, out_channels) if high_channels != out_channels else None

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        align_corners = _align_corners(low.shape[-1])
        if self.conv_bn_low is not None:
            low = self.conv_bn_low(F.gelu(low))
        low = F.interpolate(low, size=high.shape[2:], mode="bilinear", align_corners=align_corners)
        if self.conv_bn_high is not None:
            high = self.conv_bn_high(F.gelu(high))
        return low + high


class KMaXPixelDecoder(nn.Module):
    """The official ``kMaXPixelDecoder`` (4 stages, stride 32 -> 4).

    Args:
        in_channels: backbone channels from stride 32 to stride 4.
        dec_layers, dec_channels, layer_types: per stage (stride 32 first); stage ``i`` outputs ``4 *
            dec_channels[i]`` channels.

    Shapes:
        - features: 4 maps ``(B, in_channels[i], h_i, w_i)``, stride 32 first
        - padding: optional 4 bool masks ``(B, h_i, w_i)`` (``True`` = padding), used by the axial stages
        - output: ``(stride-4 panoptic feature, [stride 32, 16, 8 features])``
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        dec_layers: Sequence[int],
        dec_channels: Sequence[int],
        layer_types: Sequence[str],
        num_heads: int = 8,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_norms = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.resized_fuses = nn.ModuleList()
        self.layer_types = tuple(layer_types)
        for i in range(len(in_channels)):
            self.in_norms.append(LayerNorm2d(in_channels[i]))
            inplanes = in_channels[i] if i == 0 else dec_channels[i]
            self.stages.append(
                BlockGroup(inplanes, dec_channels[i], dec_layers[i], layer_types[i], num_heads, drop_path)
            )
            if i > 0:
                self.resized_fuses.append(ResizedFuse(4 * dec_channels[i - 1], in_channels[i], dec_channels[i]))
        self.out_channels = [4 * c for c in dec_channels]

    def forward(self, features: Sequence[Tensor], padding: Sequence[Tensor | None] | None = None) -> tuple:
        padding = padding if padding is not None else [None] * len(features)
        out = []
        x = self.in_norms[0](features[0])
        for i in range(len(self.stages) - 1):
            x = self.stages[i](x, padding[i] if self.layer_types[i] == "axial" else None)
            out.append(x)
            x = self.resized_fuses[i](x, self.in_norms[i + 1](features[i + 1]))
        x = self.stages[-1](x, padding[-1] if self.layer_types[-1] == "axial" else None)
        out.append(x)
        return out[-1], out[:3]


# ---------------------------------------------------------------------------------------------------- transformer


def void_prior_bias(class_logits: Tensor, void_prior_prob: float = 0.9) -> Tensor:
    """DeepLab2's ``add_bias_towards_void``: ``log((C - 1) p / (1 - p))`` added to the last (void) of ``C`` logits."""
    num = class_logits.shape[-1]
    bias = torch.zeros(num, dtype=class_logits.dtype, device=class_logits.device)
    bias[-1] = math.log((num - 1) * void_prior_prob / (1 - void_prior_prob))
    return class_logits + bias


class KMaXPredictor(nn.Module):
    """The official ``kMaXPredictor``: class logits, mask logits and L2-normalised pixel embeddings.

    Shapes:
        - mask_embeddings, class_embeddings: ``(B, query_channels, Q)``; pixel_feature: ``(B, pixel_channels, H, W)``
        - output: dict ``class_logits (B, Q, num_outputs)``, ``mask_logits (B, Q, H, W)``,
          ``pixel_feature (B, embed_dim, H, W)``
    """

    def __init__(
        self, pixel_channels: int, query_channels: int, num_outputs: int, hidden_dim: int = 256, embed_dim: int = 128
    ) -> None:
        super().__init__()
        self.pixel_space_head_conv0bnact = ConvBN(
            pixel_channels, pixel_channels, 5, padding=2, groups=pixel_channels, act=True, init="xavier_uniform"
        )
        self.pixel_space_head_conv1bnact = ConvBN(pixel_channels, hidden_dim, act=True)
        self.pixel_space_head_last_convbn = ConvBN(hidden_dim, embed_dim, bias=True, init=("trunc_normal", 0.01))
        self.transformer_mask_head = ConvBN(query_channels, embed_dim, conv1d=True)
        self.transformer_class_head = ConvBN(
            query_channels, num_outputs, bias=True, norm=False, conv1d=True, init=("trunc_normal", 0.01)
        )
        self.pixel_space_mask_batch_norm = nn.BatchNorm2d(1, eps=BN_EPS, momentum=BN_MOMENTUM)
        nn.init.constant_(self.pixel_space_mask_batch_norm.weight, 0.1)

    def forward(self, mask_embeddings: Tensor, class_embeddings: Tensor, pixel_feature: Tensor) -> dict[str, Tensor]:
        pixel = self.pixel_space_head_conv0bnact(pixel_feature)
        pixel = self.pixel_space_head_conv1bnact(pixel)
        pixel = F.normalize(self.pixel_space_head_last_convbn(pixel), p=2, dim=1)
        class_logits = void_prior_bias(self.transformer_class_head(class_embeddings).permute(0, 2, 1))
        kernels = self.transformer_mask_head(mask_embeddings)
        mask_logits = torch.einsum("bchw,bcn->bnhw", pixel, kernels)
        b, q, h, w = mask_logits.shape
        # the official 1-channel BatchNorm over (B, 1, Q, H, W): one mean / variance over everything
        mask_logits = self.pixel_space_mask_batch_norm(mask_logits.reshape(b, 1, q, h * w)).reshape(b, q, h, w)
        return {"class_logits": class_logits, "mask_logits": mask_logits, "pixel_feature": pixel}


class QuerySelfAttention(nn.Module):
    """The official ``AttentionOperation``: BatchNorm over the heads' logits (no scale), softmax in float32,
    weighted values, BatchNorm and GELU."""

    def __init__(self, value_channels: int, num_heads: int) -> None:
        super().__init__()
        self.batch_norm_similarity = _bn(num_heads, 2)
        self.batch_norm_retrieved_value = _bn(value_channels, 1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n, heads, c, length = v.shape
        logits = self.batch_norm_similarity(torch.einsum("bhdl,bhdm->bhlm", q, k))
        with torch.autocast(device_type=logits.device.type, enabled=False):
            weights = F.softmax(logits.float(), dim=-1)
        out = torch.einsum("bhlm,bhdm->bhdl", weights, v).reshape(n, heads * c, length)
        return F.gelu(self.batch_norm_retrieved_value(out))


class KMaXTransformerLayer(nn.Module):
    """One kMaX decoder layer: k-means cross-attention, query self-attention and FFN (official
    ``kMaXTransformerLayer``; bottleneck ``2 * base``, key ``base``, value ``2 * base`` channels).

    Shapes:
        - pixel_feature: ``(B, pixel_channels, H, W)``; query: ``(B, query_dim, Q)``
        - padding: optional bool ``(B, H * W)``, ``True`` = padded pixel (excluded from the k-means update)
        - output: ``(updated query (B, query_dim, Q), predictor dict at this stride)``
    """

    def __init__(
        self,
        num_outputs: int,
        pixel_channels: int,
        query_dim: int = 256,
        base_filters: int = 128,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        predictor_hidden: int = 256,
        embed_dim: int = 128,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        bottleneck = 2 * base_filters
        self.key_depth, self.value_depth = base_filters, 2 * base_filters
        self.drop_path_kmeans = _drop_path(drop_path)
        self.drop_path_attn = _drop_path(drop_path)
        self.drop_path_ffn = _drop_path(drop_path)
        std = bottleneck**-0.5
        self.query_conv1_bn_act = ConvBN(query_dim, bottleneck, act=True, conv1d=True)
        self.pixel_conv1_bn_act = ConvBN(pixel_channels, bottleneck, act=True)
        self.query_qkv_conv_bn = ConvBN(
            bottleneck, 2 * self.key_depth + self.value_depth, conv1d=True, init=("trunc_normal", std)
        )
        self.pixel_v_conv_bn = ConvBN(bottleneck, self.value_depth, init=("trunc_normal", std))
        self.query_self_attention = QuerySelfAttention(self.value_depth, num_heads)
        self.query_conv3_bn = ConvBN(self.value_depth, query_dim, conv1d=True, norm_init=0.0)
        self.query_ffn_conv1_bn_act = ConvBN(query_dim, ffn_dim, act=True, conv1d=True)
        self.query_ffn_conv2_bn = ConvBN(ffn_dim, query_dim, conv1d=True, norm_init=0.0)
        self.predictor = KMaXPredictor(bottleneck, bottleneck, num_outputs, predictor_hidden, embed_dim)
        self.kmeans_query_batch_norm_retrieved_value = _bn(self.value_depth, 1)
        self.kmeans_query_conv3_bn = ConvBN(self.value_depth, query_dim, conv1d=True, norm_init=0.0)

    @staticmethod
    def kmeans_assignment(mask_logits: Tensor, padding: Tensor | None = None) -> Tensor:
        """The k-means assignment ``(B, Q, H * W)``: a one-hot of the argmax over clusters per pixel, detached (no
        gradient through the argmax); a padded pixel's column is all zero (it belongs to no cluster)."""
        with torch.no_grad():
            logits = mask_logits.flatten(2).detach()  # (B, Q, HW)
            index = logits.max(1, keepdim=True)[1]
            assignment = torch.zeros_like(logits).scatter_(1, index, 1.0)
            if padding is not None:
                assignment = assignment.masked_fill(padding[:, None, :], 0.0)
        return assignment

    def forward(
        self, pixel_feature: Tensor, query: Tensor, padding: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        n, _, h, w = pixel_feature.shape
        length = query.shape[-1]
        pixel_space = self.pixel_conv1_bn_act(F.gelu(pixel_feature))
        query_space = self.query_conv1_bn_act(query)

        # k-means cross-attention: assignment by the argmax over clusters, update by the assigned pixels' sum
        pixel_value = self.pixel_v_conv_bn(pixel_space).reshape(n, self.value_depth, h * w)
        prediction = self.predictor(
            mask_embeddings=query_space, class_embeddings=query_space, pixel_feature=pixel_space
        )
        assignment = self.kmeans_assignment(prediction["mask_logits"], padding)
        with torch.autocast(device_type=pixel_value.device.type, enabled=False):
            update = torch.einsum("blm,bdm->bdl", assignment.float(), pixel_value.float())
        update = self.kmeans_query_conv3_bn(self.kmeans_query_batch_norm_retrieved_value(update))
        query = query + self.drop_path_kmeans(update)

        # query self-attention
        qkv = self.query_qkv_conv_bn(query_space)
        q, k, v = torch.split(qkv, [self.key_depth, self.key_depth, self.value_depth], dim=1)
        heads = self.num_heads
        q = q.reshape(n, heads, self.key_depth // heads, length)
        k = k.reshape(n, heads, self.key_depth // heads, length)
        v = v.reshape(n, heads, self.value_depth // heads, length)
        update = self.query_conv3_bn(self.query_self_attention(q, k, v))
        query = F.gelu(query + self.drop_path_attn(update))

        # FFN
        update = self.query_ffn_conv2_bn(self.query_ffn_conv1_bn_act(query))
        query = F.gelu(query + self.drop_path_ffn(update))
        return query, prediction


class KMaXTransformerDecoder(nn.Module):
    """Cluster centres refined by ``sum(dec_layers)`` :class:`KMaXTransformerLayer` s over strides 32 / 16 / 8, then
    the final prediction on the stride-4 panoptic feature (official ``kMaXTransformerDecoder`` without the
    auxiliary semantic head, which :class:`KMaXDeepLab` holds as ``aux_semantic_head``)."""

    def __init__(
        self,
        num_outputs: int,
        pixel_channels: Sequence[int],
        panoptic_channels: int,
        num_queries: int = 128,
        dec_layers: Sequence[int] = (2, 2, 2),
        query_dim: int = 256,
        base_filters: int = 128,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        predictor_hidden: int = 256,
        embed_dim: int = 128,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.dec_layers = tuple(dec_layers)
        self.num_queries = num_queries
        self.layers = nn.ModuleList(
            KMaXTransformerLayer(
                num_outputs,
                pixel_channels[i],
                query_dim,
                base_filters,
                num_heads,
                ffn_dim,
                predictor_hidden,
                embed_dim,
                drop_path,
            )
            for i, count in enumerate(self.dec_layers)
            for _ in range(count)
        )
        self.cluster_centers = nn.Embedding(query_dim, num_queries)  # (C, Q), the official layout
        trunc_normal_tf_(self.cluster_centers.weight, std=1.0)
        self.class_embedding_projection = ConvBN(query_dim, query_dim, act=True, conv1d=True)
        self.mask_embedding_projection = ConvBN(query_dim, query_dim, act=True, conv1d=True)
        self.predictor = KMaXPredictor(panoptic_channels, query_dim, num_outputs, predictor_hidden, embed_dim)

    def forward(
        self, features: Sequence[Tensor], panoptic_feature: Tensor, padding: Sequence[Tensor | None] | None = None
    ) -> dict[str, Any]:
        b = panoptic_feature.shape[0]
        query = self.cluster_centers.weight.unsqueeze(0).expand(b, -1, -1)
        predictions = []
        index = 0
        for i, feature in enumerate(features):
            pad = None if padding is None or padding[i] is None else padding[i].flatten(1)
            for _ in range(self.dec_layers[i]):
                query, prediction = self.layers[index](feature, query, pad)
                predictions.append(prediction)
                index += 1
        final = self.predictor(
            mask_embeddings=self.mask_embedding_projection(query),
            class_embeddings=self.class_embedding_projection(query),
            pixel_feature=panoptic_feature,
        )
        size = final["mask_logits"].shape[-2:]
        align_corners = _align_corners(size[0])  # the official _set_aux_loss: the target *height*

        def up(x: Tensor) -> Tensor:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)

        return {
            "pred_logits": final["class_logits"],
            "pred_masks": final["mask_logits"],
            "pixel_feature": final["pixel_feature"],
            "aux_outputs": [
                {
                    "pred_logits": p["class_logits"],
                    "pred_masks": up(p["mask_logits"]),
                    "pixel_feature": up(p["pixel_feature"]),
                }
                for p in predictions
            ],
        }


# ---------------------------------------------------------------------------------------------------- aux semantic


class ASPP(nn.Module):
    """DeepLab ASPP: 1x1, three dilated 3x3 and image pooling branches -> 1x1 projection, dropout 0.1."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.aspp_conv0 = ConvBN(in_channels, out_channels, act=True)
        self.aspp_conv1 = ConvBN(in_channels, out_channels, 3, padding=rates[0], dilation=rates[0], act=True)
        self.aspp_conv2 = ConvBN(in_channels, out_channels, 3, padding=rates[1], dilation=rates[1], act=True)
        self.aspp_conv3 = ConvBN(in_channels, out_channels, 3, padding=rates[2], dilation=rates[2], act=True)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.aspp_pool = ConvBN(in_channels, out_channels, act=True)
        self.proj_conv_bn_act = ConvBN(5 * out_channels, out_channels, act=True)
        self.proj_drop = nn.Dropout(p=0.1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(
            self.aspp_pool(self.avg_pool(x)),
            size=x.shape[-2:],
            mode="bilinear",
            align_corners=_align_corners(x.shape[-1]),
        )
        branches = [self.aspp_conv0(x), self.aspp_conv1(x), self.aspp_conv2(x), self.aspp_conv3(x), pooled]
        return self.proj_drop(self.proj_conv_bn_act(torch.cat(branches, dim=1)))


class SemanticPredictor(nn.Module):
    """The official auxiliary semantic head (Panoptic-DeepLab single decoder + head), used in training only.

    Shapes:
        - x: stride-32 backbone map; low8 / low4: stride-8 / stride-4 backbone maps
        - output: ``(B, num_outputs, h_4, w_4)``
    """

    def __init__(
        self,
        in_channels: int,
        os8_channels: int,
        os4_channels: int,
        num_outputs: int,
        channels: Sequence[int] = (256, 64, 32),
    ) -> None:
        super().__init__()
        c, c8, c4 = channels
        self.aspp = ASPP(in_channels, c)
        self.low_level_projection_os8 = ConvBN(os8_channels, c8, act=True)
        self.low_level_fusion_os8_conv0_bn_act = ConvBN(
            c + c8, c + c8, 5, padding=2, groups=c + c8, act=True, init="xavier_uniform"
        )
        self.low_level_fusion_os8_conv1_bn_act = ConvBN(c + c8, c, act=True)
        self.low_level_projection_os4 = ConvBN(os4_channels, c4, act=True)
        self.low_level_fusion_os4_conv0_bn_act = ConvBN(
            c + c4, c + c4, 5, padding=2, groups=c + c4, act=True, init="xavier_uniform"
        )
        self.low_level_fusion_os4_conv1_bn_act = ConvBN(c + c4, c, act=True)
        self.conv_block_0 = ConvBN(c, c, 5, padding=2, groups=c, act=True, init="xavier_uniform")
        self.conv_block_1 = ConvBN(c, c, act=True)
        self.final_conv = ConvBN(c, num_outputs, bias=True, norm=False, init=("trunc_normal", 0.01))

    def forward(self, x: Tensor, low8: Tensor, low4: Tensor) -> Tensor:
        x = self.aspp(x)
        align_corners = _align_corners(x.shape[-1])
        low8 = self.low_level_projection_os8(low8)
        x = F.interpolate(x, size=low8.shape[-2:], mode="bilinear", align_corners=align_corners)
        x = self.low_level_fusion_os8_conv0_bn_act(torch.cat([x, low8], dim=1))
        x = self.low_level_fusion_os8_conv1_bn_act(x)
        low4 = self.low_level_projection_os4(low4)
        x = F.interpolate(x, size=low4.shape[-2:], mode="bilinear", align_corners=align_corners)
        x = self.low_level_fusion_os4_conv0_bn_act(torch.cat([x, low4], dim=1))
        x = self.low_level_fusion_os4_conv1_bn_act(x)
        return self.final_conv(self.conv_block_1(self.conv_block_0(x)))


# ---------------------------------------------------------------------------------------------------- backbones


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class ResNetBackbone(nn.Module):
    """A timm ResNet trunk (timm's keys: ``conv1``, ``bn1``, ``layer1..4``) -> stride 4 / 8 / 16 / 32 maps; every
    BatchNorm set to eps 1e-3 / momentum 0.01 (the official ``custom_bn`` backbone)."""

    def __init__(self, name: str, pretrained: bool | str = False, **kwargs: Any) -> None:
        super().__init__()
        full = name if isinstance(pretrained, bool) else f"{name}.{pretrained}"
        model = timm.create_model(
            full, pretrained=bool(pretrained), num_classes=0, global_pool="", **{"zero_init_last": False, **kwargs}
        )
        self.conv1, self.bn1, self.act1, self.maxpool = model.conv1, model.bn1, model.act1, model.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = model.layer1, model.layer2, model.layer3, model.layer4
        self.out_channels = [info["num_chs"] for info in model.feature_info[-4:]]
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = BN_EPS, BN_MOMENTUM

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out


class ConvNeXtBackbone(nn.Module):
    """A timm ConvNeXt trunk (timm's keys: ``stem``, ``stages``) with DeepLab2's zero padding: ``(1, 2, 1, 2)`` before
    the stem convolution and ``(0, 1, 0, 1)`` before each downsample (before its LayerNorm), so every map has size
    ``ceil(H / stride)``."""

    def __init__(self, name: str, pretrained: bool | str = False, **kwargs: Any) -> None:
        super().__init__()
        full = name if isinstance(pretrained, bool) else f"{name}.{pretrained}"
        model = timm.create_model(full, pretrained=bool(pretrained), num_classes=0, **kwargs)
        self.stem, self.stages = model.stem, model.stages
        self.out_channels = [info["num_chs"] for info in model.feature_info[-4:]]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(F.pad(x, (1, 2, 1, 2)))
        out = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = stage.downsample(F.pad(x, (0, 1, 0, 1)))
            x = stage.blocks(x)
            out.append(x)
        return out


class SwinBackbone(nn.Module):
    """formers' Swin (``formers.vision.models.swin``) at a fixed ``img_size``: the input is zero-padded (bottom /
    right) to it and each stage map is cropped to ``ceil(H / stride)``. The final norm and head are not built."""

    def __init__(self, img_size: int = 672, pretrained: bool | str = False, **kwargs: Any) -> None:
        super().__init__()
        if pretrained:
            raise ValueError("kMaX Swin backbone: load Swin weights with load_state_dict (formers never downloads)")
        from formers.vision.models.swin import SwinTransformer

        cfg = {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "window_size": 7, **kwargs}
        swin = SwinTransformer(img_size=img_size, num_classes=0, **cfg)
        self.img_size = swin.img_size
        self.patch_embed, self.layers = swin.patch_embed, swin.layers
        self.out_channels = [info["num_chs"] for info in swin.feature_info]

    def forward(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        if h > self.img_size[0] or w > self.img_size[1]:
            raise ValueError(
                f"kMaX Swin backbone: input {h}x{w} is larger than the Swin's img_size {self.img_size}; build the "
                "model with a larger swin_img_size"
            )
        x = F.pad(x, (0, self.img_size[1] - w, 0, self.img_size[0] - h))
        tokens, (gh, gw) = self.patch_embed(x)
        x = tokens.view(x.shape[0], gh, gw, -1)
        out = []
        for stride, stage in zip(STRIDES, self.layers, strict=True):
            x = stage(x)
            out.append(x[:, : _ceil_div(h, stride), : _ceil_div(w, stride)].permute(0, 3, 1, 2).contiguous())
        return out


def _build_backbone(backbone: str, pretrained: bool | str, drop_path_rate: float, kwargs: dict, swin_img_size: int):
    if backbone.startswith("resnet"):
        return ResNetBackbone(backbone, pretrained, drop_path_rate=drop_path_rate, **kwargs)
    if backbone.startswith("convnext"):
        return ConvNeXtBackbone(backbone, pretrained, drop_path_rate=drop_path_rate, **kwargs)
    if backbone == "swin_tiny":
        return SwinBackbone(swin_img_size, pretrained, drop_path_rate=drop_path_rate, **kwargs)
    raise ValueError(f"kMaX-DeepLab: unknown backbone {backbone!r}; use a timm resnet*, convnext* or 'swin_tiny'")


# ---------------------------------------------------------------------------------------------------- the model


def _check_ints(owner: str, minimum: int, **values: Any) -> None:
    for name, value in values.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise TypeError(f"{owner}: {name} must be an integer (or a tuple of them), got {value!r}")
            if item < minimum:
                raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")


class KMaXDeepLab(FormersModel):
    """kMaX-DeepLab panoptic segmentation model (backbone, pixel decoder, k-means transformer decoder, auxiliary
    semantic head).

    Args:
        backbone: ``"resnet50"`` / ``"resnet18"`` (any timm ResNet), ``"convnext_tiny|small|base|large"`` (timm
            ConvNeXt) or ``"swin_tiny"`` (formers' Swin).
        num_classes: ``K`` thing + stuff classes (void not counted); the class head has ``K + 1`` outputs.
        num_queries: cluster centres (128).
        dec_layers, dec_channels, layer_types: pixel decoder per stage, stride 32 first (``[1, 5, 1, 1]``,
            ``[512, 256, 128, 64]``, axial / axial / bottleneck / bottleneck).
        trans_dec_layers: transformer decoder layers at strides 32 / 16 / 8 (``[2, 2, 2]``).
        query_dim: cluster centre channels (256).
        kmeans_base_filters: transformer layer base width (128: bottleneck 256, key 128, value 256).
        ffn_dim: query FFN width (2048).
        num_heads: heads of the axial and query self-attention (8).
        predictor_hidden, embed_dim: predictor widths (256, 128); ``embed_dim`` is ``pixel_feature``'s channels.
        aux_semantic_head: build the auxiliary semantic head (its output only exists in training mode).
        aux_channels: ASPP / stride-8 / stride-4 projection widths of that head (256, 64, 32).
        drop_path_rate: DropPath of the transformer decoder's three updates (official training value 0.2).
        pixel_decoder_drop_path_rate: DropPath of the pixel decoder blocks (0.0).
        backbone_drop_path_rate: stochastic depth of the backbone, linear over its blocks (ConvNeXt / Swin).
        pretrained_backbone: timm ImageNet weights for the backbone (``True`` or a timm tag such as
            ``"fb_in22k_ft_in1k_384"``); downloads through timm, so never in tests.
        backbone_kwargs: extra arguments of the backbone constructor (e.g. ``depths`` / ``dims`` for small tests).
        swin_img_size: the fixed input size of the Swin backbone (inputs are padded to it).
        example_size: side of :meth:`example_inputs`' images.
        backbone_lr_scale: the backbone's learning-rate factor (:meth:`lr_scales`; official 0.1 for a pretrained
            backbone; 1.0 when training from scratch).

    Shapes:
        - images: ``(B, 3, H, W)`` float, normalised to ``[-1, 1]``, ``H, W >= 33``
        - pixel_mask: optional bool ``(B, H, W)``, ``True`` = real pixel
        - output: dict ``pred_logits (B, Q, K + 1)``, ``pred_masks (B, Q, h, w)``, ``pixel_feature (B, embed_dim, h,
          w)``, ``aux_outputs`` (one dict per decoder layer, upsampled to ``(h, w)``) and, in training with the
          auxiliary head, ``aux_semantic_pred (B, K + 1, h, w)``; ``(h, w) = (ceil(H / 4), ceil(W / 4))``.
    """

    min_input_size = 33

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 133,
        num_queries: int = 128,
        in_chans: int = 3,
        dec_layers: Sequence[int] = (1, 5, 1, 1),
        dec_channels: Sequence[int] = (512, 256, 128, 64),
        layer_types: Sequence[str] = ("axial", "axial", "bottleneck", "bottleneck"),
        trans_dec_layers: Sequence[int] = (2, 2, 2),
        query_dim: int = 256,
        kmeans_base_filters: int = 128,
        ffn_dim: int = 2048,
        num_heads: int = 8,
        predictor_hidden: int = 256,
        embed_dim: int = 128,
        aux_semantic_head: bool = True,
        aux_channels: Sequence[int] = (256, 64, 32),
        drop_path_rate: float = 0.2,
        pixel_decoder_drop_path_rate: float = 0.0,
        backbone_drop_path_rate: float = 0.0,
        pretrained_backbone: bool | str = False,
        backbone_kwargs: dict[str, Any] | None = None,
        swin_img_size: int = 672,
        example_size: int = 65,
        backbone_lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        owner = "kMaX-DeepLab"
        if not backbone_lr_scale > 0:
            raise ValueError(f"{owner}: backbone_lr_scale must be > 0, got {backbone_lr_scale}")
        self.backbone_lr_scale = float(backbone_lr_scale)
        _check_ints(owner, 1, num_classes=num_classes, num_queries=num_queries, in_chans=in_chans)
        _check_ints(owner, 1, dec_layers=tuple(dec_layers), dec_channels=tuple(dec_channels))
        _check_ints(owner, 0, trans_dec_layers=tuple(trans_dec_layers))
        _check_ints(
            owner,
            1,
            query_dim=query_dim,
            kmeans_base_filters=kmeans_base_filters,
            ffn_dim=ffn_dim,
            num_heads=num_heads,
            predictor_hidden=predictor_hidden,
            embed_dim=embed_dim,
            aux_channels=tuple(aux_channels),
            swin_img_size=swin_img_size,
        )
        _check_ints(owner, self.min_input_size, example_size=example_size)
        if len(dec_layers) != 4 or len(dec_channels) != 4 or len(layer_types) != 4:
            raise ValueError(f"{owner}: dec_layers, dec_channels and layer_types need 4 entries (stride 32 to 4)")
        if len(trans_dec_layers) != 3:
            raise ValueError(f"{owner}: trans_dec_layers needs 3 entries (strides 32, 16, 8), got {trans_dec_layers}")
        if any(t not in ("axial", "bottleneck") for t in layer_types):
            raise ValueError(f"{owner}: layer_types must be 'axial' or 'bottleneck', got {tuple(layer_types)}")
        if len(aux_channels) != 3:
            raise ValueError(f"{owner}: aux_channels needs 3 entries (ASPP, stride 8, stride 4), got {aux_channels}")
        for name, width in (
            ("kmeans_base_filters", kmeans_base_filters),
            *(
                (f"dec_channels[{i}]", c)
                for i, (c, t) in enumerate(zip(dec_channels, layer_types, strict=True))
                if t == "axial"
            ),
        ):
            if width % num_heads:
                raise ValueError(f"{owner}: {name}={width} must be divisible by num_heads={num_heads}")
        for name, rate in (
            ("drop_path_rate", drop_path_rate),
            ("pixel_decoder_drop_path_rate", pixel_decoder_drop_path_rate),
            ("backbone_drop_path_rate", backbone_drop_path_rate),
        ):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{owner}: {name} must be in [0, 1), got {rate!r}")
        if in_chans != 3:
            backbone_kwargs = {**(backbone_kwargs or {}), "in_chans": in_chans}
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.embed_dim = embed_dim
        self.example_size = example_size

        self.backbone = _build_backbone(
            backbone, pretrained_backbone, backbone_drop_path_rate, dict(backbone_kwargs or {}), swin_img_size
        )
        channels = self.backbone.out_channels  # stride 4 -> 32
        self.pixel_decoder = KMaXPixelDecoder(
            channels[::-1], dec_layers, dec_channels, layer_types, num_heads, pixel_decoder_drop_path_rate
        )
        out = self.pixel_decoder.out_channels
        self.transformer_decoder = KMaXTransformerDecoder(
            num_classes + 1,
            out[:3],
            out[3],
            num_queries,
            trans_dec_layers,
            query_dim,
            kmeans_base_filters,
            num_heads,
            ffn_dim,
            predictor_hidden,
            embed_dim,
            drop_path_rate,
        )
        self.aux_semantic_head = (
            SemanticPredictor(channels[3], channels[1], channels[0], num_classes + 1, aux_channels)
            if aux_semantic_head
            else None
        )

    # ------------------------------------------------------------------------------------------------ contract

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        """Images of side ``example_size``; the last sample of a batch of two or more is padded (bottom 4 rows,
        right 9 columns) in ``pixel_mask``."""
        device = self.pixel_decoder.in_norms[0].weight.device
        s = self.example_size
        images = torch.randn(batch_size, self.in_chans, s, s, device=device).clamp_(-1, 1)
        mask = torch.ones(batch_size, s, s, dtype=torch.bool, device=device)
        if batch_size > 1:
            mask[-1, s - 4 :] = False
            mask[-1, :, s - 9 :] = False
        return {"images": images, "pixel_mask": mask}

    def expected_output_shape(self, batch_size: int = 2) -> dict[str, tuple[int, ...]]:
        """The shapes of the tensor outputs (``aux_outputs`` repeat them) for :meth:`example_inputs`."""
        h = _ceil_div(self.example_size, 4)
        return {
            "pred_logits": (batch_size, self.num_queries, self.num_classes + 1),
            "pred_masks": (batch_size, self.num_queries, h, h),
            "pixel_feature": (batch_size, self.embed_dim, h, h),
        }

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The relative position tables and the cluster centres (the official optimizer's kMaX rules; biases and
        norm weights are excluded by the core rule for 1-d parameters, ConvNeXt's ``gamma`` too)."""
        return {n for n, _ in self.named_parameters() if n.endswith("_rpe.weight") or "cluster_centers" in n}

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors for :mod:`formers.core.optim`: the official recipe trains the (ImageNet-pretrained)
        backbone at ``backbone_lr_scale`` (0.1) times the learning rate of the rest."""
        return {} if self.backbone_lr_scale == 1.0 else {"backbone": self.backbone_lr_scale}

    # ------------------------------------------------------------------------------------------------ forward

    def _check(self, images: Tensor, pixel_mask: Tensor | None) -> None:
        check_input("kMaX-DeepLab: images", images, ndim=4, floating=True, dims="(batch, channels, height, width)")
        b, c, h, w = images.shape
        if c != self.in_chans:
            raise ValueError(
                f"kMaX-DeepLab: expected {self.in_chans} input channels, got {c} (shape {tuple(images.shape)})"
            )
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(
                f"kMaX-DeepLab: images must be at least {self.min_input_size} x {self.min_input_size}, got {h} x {w}"
            )
        if pixel_mask is not None:
            if not isinstance(pixel_mask, Tensor) or pixel_mask.dtype != torch.bool:
                got = pixel_mask.dtype if isinstance(pixel_mask, Tensor) else type(pixel_mask).__name__
                raise TypeError(
                    f"kMaX-DeepLab: pixel_mask must be a torch.bool (B, H, W) tensor (True = real), got {got}"
                )
            if tuple(pixel_mask.shape) != (b, h, w):
                raise ValueError(
                    f"kMaX-DeepLab: pixel_mask shape {tuple(pixel_mask.shape)} does not match the images' (B, H, W) "
                    f"= {(b, h, w)}"
                )

    def forward_features(self, images: Tensor, pixel_mask: Tensor | None = None) -> dict[str, Any]:
        """Backbone maps (stride 4 -> 32), padding masks per stride (``True`` = padding, or ``None``), the pixel
        decoder's stride-4 panoptic feature and its stride 32 / 16 / 8 features."""
        self._check(images, pixel_mask)
        h, w = images.shape[-2:]
        if pixel_mask is not None:
            images = images * pixel_mask[:, None].to(images.dtype)
        features = self.backbone(images)
        for stride, feature in zip(STRIDES, features, strict=True):
            expected = (_ceil_div(h, stride), _ceil_div(w, stride))
            if tuple(feature.shape[-2:]) != expected:  # pragma: no cover - a backbone contract violation
                raise ValueError(f"kMaX-DeepLab: stride-{stride} feature {tuple(feature.shape)}, expected {expected}")
        padding = [None] * 4 if pixel_mask is None else [~pixel_mask[:, ::s, ::s] for s in STRIDES]
        panoptic, multi_scale = self.pixel_decoder(features[::-1], padding[::-1])
        return {
            "backbone": features,
            "padding": padding,
            "panoptic_feature": panoptic,
            "multi_scale_features": multi_scale,
        }

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> dict[str, Any]:
        feats = self.forward_features(images, pixel_mask)
        padding = feats["padding"]
        out = self.transformer_decoder(
            feats["multi_scale_features"], feats["panoptic_feature"], [padding[3], padding[2], padding[1]]
        )
        if self.training and self.aux_semantic_head is not None:
            res2, res3, _, res5 = feats["backbone"]
            out["aux_semantic_pred"] = self.aux_semantic_head(res5, res3, res2)
        return out


# ---------------------------------------------------------------------------------------------------- checkpoints

_DROP = ("criterion.", "pixel_mean", "pixel_std")
_AXIAL_RENAMES = (
    (r"(height_axis|width_axis)\.qkv_transform\.conv\.", r"\1.qkv."),
    (r"(height_axis|width_axis)\.batch_norm_qkv\.", r"\1.norm_qkv."),
    (r"(height_axis|width_axis)\.(query|key|value)_rpe\.embeddings\.", r"\1.\2_rpe."),
    (r"(height_axis|width_axis)\.batch_norm_similarity\.", r"\1.norm_similarity."),
    (r"(height_axis|width_axis)\.batch_norm_retrieved_output\.", r"\1.norm_output."),
)


def _strip_underscores(key: str) -> str:
    key = ".".join(part.lstrip("_") for part in key.split("."))
    key = key.replace("predcitor", "predictor").replace("kmax_transformer_layers.", "layers.")
    for pattern, repl in _AXIAL_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _resnet_key(key: str) -> str:
    """detectron2 ResNet names -> timm's."""
    if key.startswith("stem.conv1.norm."):
        return "bn1." + key.removeprefix("stem.conv1.norm.")
    if key.startswith("stem.conv1."):
        return "conv1." + key.removeprefix("stem.conv1.")
    m = re.match(r"res(\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?(.*)$", key)
    if m is None:
        raise ValueError(f"kMaX checkpoint: unexpected ResNet key backbone.{key}")
    stage, block, conv, norm, rest = m.groups()
    prefix = f"layer{int(stage) - 1}.{block}."
    if conv == "shortcut":
        return prefix + ("downsample.1." if norm else "downsample.0.") + rest
    return prefix + (f"bn{conv[-1]}." if norm else f"{conv}.") + rest


def _convnext_key(key: str) -> str:
    """Official (facebookresearch) ConvNeXt names -> timm's."""
    m = re.match(r"downsample_layers\.(\d)\.(\d)\.(.*)$", key)
    if m is not None:
        stage, index, rest = m.groups()
        return f"stem.{index}.{rest}" if stage == "0" else f"stages.{stage}.downsample.{index}.{rest}"
    m = re.match(r"stages\.(\d)\.(\d+)\.(.*)$", key)
    if m is None:
        raise ValueError(f"kMaX checkpoint: unexpected ConvNeXt key backbone.{key}")
    stage, block, rest = m.groups()
    for old, new in (("dwconv.", "conv_dw."), ("pwconv1.", "mlp.fc1."), ("pwconv2.", "mlp.fc2.")):
        if rest.startswith(old):
            rest = new + rest.removeprefix(old)
    return f"stages.{stage}.blocks.{block}.{rest}"


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: KMaXDeepLab) -> dict[str, Tensor]:
    """Map an official ``bytedance/kmax-deeplab`` state dict (detectron2 layout, optionally under ``"model"`` as
    detectron2 checkpoints store it) onto ``model``'s keys; a formers state dict passes through unchanged.

    ``backbone.*`` detectron2 ResNet / official ConvNeXt names become timm's; ``sem_seg_head.pixel_decoder.*`` ->
    ``pixel_decoder.*``, ``sem_seg_head.predictor._auxiliary_semantic_predictor.*`` -> ``aux_semantic_head.*`` (dropped
    when the model has none), ``sem_seg_head.predictor.*`` -> ``transformer_decoder.*``, with leading underscores
    stripped, ``_predcitor`` -> ``predictor``, ``_kmax_transformer_layers`` -> ``layers`` and the axial attention's
    ``qkv_transform.conv`` / ``_batch_norm_qkv`` / ``_*_rpe._embeddings`` / ``_batch_norm_similarity`` /
    ``_batch_norm_retrieved_output`` -> ``qkv`` / ``norm_qkv`` / ``*_rpe`` / ``norm_similarity`` / ``norm_output``.
    ``criterion.*``, ``pixel_mean``, ``pixel_std`` (and any ``_relative_distance_matrix``) are dropped.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"kMaX checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]
    official = any(k.startswith("sem_seg_head.") for k in state_dict)
    if not official:
        return dict(state_dict)
    convnext = any(k.startswith("backbone.downsample_layers.") for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_DROP) or key.endswith("_relative_distance_matrix"):
            continue
        if key.startswith("backbone."):
            rest = key.removeprefix("backbone.")
            new = "backbone." + (_convnext_key(rest) if convnext else _resnet_key(rest))
        elif key.startswith("sem_seg_head.pixel_decoder."):
            new = "pixel_decoder." + _strip_underscores(key.removeprefix("sem_seg_head.pixel_decoder."))
        elif key.startswith("sem_seg_head.predictor._auxiliary_semantic_predictor."):
            if model.aux_semantic_head is None:
                continue
            rest = key.removeprefix("sem_seg_head.predictor._auxiliary_semantic_predictor.")
            new = "aux_semantic_head." + _strip_underscores(rest)
        elif key.startswith("sem_seg_head.predictor."):
            new = "transformer_decoder." + _strip_underscores(key.removeprefix("sem_seg_head.predictor."))
        else:
            raise ValueError(f"kMaX checkpoint: unexpected key {key!r}")
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------------------- configs


def _cfg(**overrides: Any) -> dict[str, Any]:
    """The data config of the official recipes: images in [-1, 1] (mean = std = 0.5), 641 x 641 evaluation
    (1281 in the COCO configs; any size works)."""
    cfg = {
        "num_classes": 133,
        "input_size": (3, 641, 641),
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "backbone.conv1",
        "classifier": "transformer_decoder.predictor.transformer_class_head.conv",
    }
    cfg.update(overrides)
    return cfg


_CONVNEXT_CFG = _cfg(first_conv="backbone.stem.0")
_SWIN_CFG = _cfg(first_conv="backbone.patch_embed.proj")

# tiny configurations for the registry-driven tests (the paper configurations are tested in test_kmax_model.py)
_TINY_HEAD = {
    "num_classes": 3,
    "num_queries": 4,
    "dec_layers": (1, 1, 1, 1),
    "dec_channels": (8, 8, 8, 8),
    "trans_dec_layers": (1, 1, 1),
    "query_dim": 8,
    "kmeans_base_filters": 8,
    "ffn_dim": 16,
    "predictor_hidden": 8,
    "embed_dim": 8,
    "aux_channels": (8, 8, 8),
    "example_size": 33,
}
_TINY_RESNET = {**_TINY_HEAD, "backbone_kwargs": {"layers": (1, 1, 1, 1), "channels": (8, 8, 16, 16), "stem_width": 8}}
_TINY_CONVNEXT = {**_TINY_HEAD, "backbone_kwargs": {"depths": (1, 1, 1, 1), "dims": (8, 8, 16, 16)}}
_TINY_SWIN = {
    **_TINY_HEAD,
    "swin_img_size": 64,
    "backbone_kwargs": {"embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "window_size": 2},
}


def _create(backbone: str, kwargs: dict[str, Any], **defaults: Any) -> KMaXDeepLab:
    return KMaXDeepLab(**{"backbone": backbone, **defaults, **kwargs})


@register_model(paper=PAPER, pretrained_cfg=_cfg(), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_RESNET)
def kmax_r50(**kwargs: Any) -> KMaXDeepLab:
    """kMaX-DeepLab R-50 (COCO: 53.0 PQ); 56,580,120 parameters for inference, 72,436,862 with the aux head."""
    return _create("resnet50", kwargs)


@register_model(paper=PAPER, pretrained_cfg=_CONVNEXT_CFG, filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_CONVNEXT)
def kmax_convnext_tiny(**kwargs: Any) -> KMaXDeepLab:
    """kMaX-DeepLab ConvNeXt-T (backbone stochastic depth 0.3 in training)."""
    return _create("convnext_tiny", kwargs, backbone_drop_path_rate=0.3)


@register_model(paper=PAPER, pretrained_cfg=_CONVNEXT_CFG, filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_CONVNEXT)
def kmax_convnext_small(**kwargs: Any) -> KMaXDeepLab:
    """kMaX-DeepLab ConvNeXt-S (backbone stochastic depth 0.4 in training)."""
    return _create("convnext_small", kwargs, backbone_drop_path_rate=0.4)


@register_model(paper=PAPER, pretrained_cfg=_CONVNEXT_CFG, filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_CONVNEXT)
def kmax_convnext_base(**kwargs: Any) -> KMaXDeepLab:
    """kMaX-DeepLab ConvNeXt-B (backbone stochastic depth 0.5 in training)."""
    return _create("convnext_base", kwargs, backbone_drop_path_rate=0.5)


@register_model(paper=PAPER, pretrained_cfg=_CONVNEXT_CFG, filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_CONVNEXT)
def kmax_convnext_large(**kwargs: Any) -> KMaXDeepLab:
    """kMaX-DeepLab ConvNeXt-L (backbone stochastic depth 0.6 in training)."""
    return _create("convnext_large", kwargs, backbone_drop_path_rate=0.6)


@register_model(paper=PAPER, pretrained_cfg=_SWIN_CFG, filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_SWIN)
def kmax_swin_tiny(**kwargs: Any) -> KMaXDeepLab:
    """kMaX-DeepLab with formers' Swin-T (not an official configuration; the Swin runs at ``swin_img_size``, 672 by
    default: inputs up to 672 x 672, zero-padded to it; stochastic depth 0.2)."""
    return _create("swin_tiny", kwargs, backbone_drop_path_rate=0.2)


# The small CPU configuration (same structure, narrower): ResNet-18 trunk, decoder widths / 4, 32 queries.
_R18_SMALL = {
    "dec_channels": (128, 64, 32, 16),
    "num_queries": 32,
    "query_dim": 128,
    "kmeans_base_filters": 64,
    "ffn_dim": 512,
    "predictor_hidden": 128,
    "embed_dim": 64,
    "aux_channels": (128, 32, 16),
    "drop_path_rate": 0.1,
}


@register_model(
    paper=PAPER, pretrained_cfg=_cfg(input_size=(3, 97, 97)), filter_fn=checkpoint_filter_fn, test_kwargs=_TINY_RESNET
)
def kmax_r18_small(**kwargs: Any) -> KMaXDeepLab:
    """A small kMaX-DeepLab for CPU training on generated scenes (~96 px): timm ResNet-18 trunk, pixel decoder
    widths [128, 64, 32, 16] (x4 out), 128-d cluster centres, 32 queries, FFN 512, 64-d pixel embeddings."""
    return _create("resnet18", kwargs, **_R18_SMALL)

"""bGPT (Wu et al., "Beyond Language Models: Byte Models are Digital World Simulators", arXiv 2402.19155): a
hierarchical byte language model over 16-byte patches.

Follows the official code, sanderwood/bgpt @ 56b98d6 (``utils.py``: ``PatchLevelDecoder``, ``ByteLevelDecoder``,
``bGPTLMHeadModel``; ``config.py``; the ``GPT2Config`` of ``train-gen.py``), on formers.core layers (no HF GPT-2):

- **patch embedding**: each byte of a patch (ids 0..256, 256 = padding / end marker) one-hot over 257 classes, the
  16 x 257 = 4112 values flattened, then ``Linear(4112, d)``. A one-hot matmul only adds 16 columns of the weight, so
  :class:`PatchEmbedding` adds those columns (``embedding_bag``) plus the bias: the same sum, without the one-hot;
- **patch-level decoder**: GPT-2 (HF ``GPT2Model`` with ``inputs_embeds``): learned absolute positions
  (``patch_length`` of them) added, dropout, pre-LN blocks (LayerNorm eps 1e-5, GELU with the tanh approximation =
  HF ``gelu_new``, MLP 4d), final LayerNorm; causal over patches;
- **byte-level decoder**: GPT-2 with 3 layers, 17 positions, byte embedding ``wte`` (257 ids) tied to the output
  head. For target patch ``p`` its input is ``[h_{p-1}, wte(b_0), ..., wte(b_14)]`` - the patch state *replaces*
  the first input embedding (the official code embeds ``[256, b_0..b_15]`` and overwrites position 0) - plus the
  positions 0..15, as HF's ``GPT2Model`` adds them to ``inputs_embeds``. The output at position ``j`` predicts byte
  ``j`` (HF's label shift); the official 17th position (``b_15``) predicts nothing and is not run.

The hidden state at patch ``p - 1`` predicts patch ``p`` (the official target mask drops the last valid patch as a
source and the header patch as a target). :meth:`BGPT.forward` returns ``(B, P, 16, 257)`` logits with
``logits[b, p]`` the prediction of patch ``p`` (``1 <= p < num_patches[b]``); the header row ``p = 0`` and the
padding rows are zeros and must not be counted by a loss.

Padding-free: the patch decoder runs on the valid patches packed sequence after sequence (varlen causal attention
over ``cu_seqlens``; ``packed=False`` runs the padded batch with a key padding mask instead: same result), and the
byte decoder only on the valid target patches (gathered, run, scattered back). A row's logits do not depend on what
it is batched with.

Sequences longer than ``patch_length`` patches are refused: the data crops training windows (a patch-aligned body
window with the header patch kept first) and evaluates long files with sliding windows; generation
(:mod:`formers.bytes.generation`) re-encodes the header patch plus the last half window when its context is full.

Parameter counts: the official ``bGPTLMHeadModel`` has 110,084,352 parameters at ``PATCH_LENGTH = 512`` (the README
and paper setting, 8 KB) and 110,477,568 at 1024 (the shipped ``config.py``); 768 of them are the patch GPT-2's token
embedding (``vocab_size = 1``), which ``inputs_embeds`` never reads. This model leaves it out: 110,083,584 and
110,476,800 (tests check both numbers).

Dropout: the official ``GPT2Config`` keeps HF's defaults, 0.1 on the embeddings, the attention probabilities and the
two residual branches (GPT-2 drops out after the MLP's output projection only); ``drop_rate`` and ``attn_drop_rate``
set them.
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.core.layers import KVCache, Mlp, TransformerBlock
from formers.core.layers._checks import check_positive, check_probability, resolve_head_dim
from formers.core.models import FormersModel
from formers.core.registry import register_model
from formers.core.varlen import cu_seqlens_from_lengths

__all__ = [
    "VOCAB_SIZE",
    "PatchEmbedding",
    "GPT2Stack",
    "BGPT",
    "target_rows",
    "scatter_rows",
    "checkpoint_filter_fn",
    "bgpt_512",
    "bgpt_1024",
    "bgpt_small",
]

VOCAB_SIZE = 257  # 256 byte values + the padding / end id 256


class PatchEmbedding(nn.Module):
    """``Linear(patch_size * vocab_size, dim)`` of the one-hot encoded bytes of a patch, without the one-hot.

    ``weight`` has the layout of that ``nn.Linear`` (``(dim, patch_size * vocab_size)``, column ``j * vocab + id``
    for byte ``j``), so the official weights load as they are.

    Shapes:
        - patches: long ``(*, patch_size)`` in ``0..vocab_size - 1``
        - output: ``(*, dim)``
    """

    def __init__(self, patch_size: int, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size, self.vocab_size, self.dim = patch_size, vocab_size, dim
        self.weight = nn.Parameter(torch.empty(dim, patch_size * vocab_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.weight, std=0.02)  # official: torch.nn.init.normal_(patch_embedding.weight, std=0.02)
        self.register_buffer("offsets", torch.arange(patch_size) * vocab_size, persistent=False)

    def forward(self, patches: Tensor) -> Tensor:
        lead = patches.shape[:-1]
        columns = (patches + self.offsets).reshape(-1, self.patch_size)
        # the sum of the 16 selected columns = one_hot(patches).flatten() @ weight.T. Few patches (generation
        # steps): gather the columns; many (training): embedding_bag, which reads rows of a transposed copy - the
        # copy (dim x 4112 floats) costs more than a few gathers and less than thousands
        if columns.numel() < self.weight.shape[1]:
            out = self.weight.index_select(1, columns.flatten()).view(self.dim, -1, self.patch_size).sum(-1).t()
        else:
            out = F.embedding_bag(columns, self.weight.t().contiguous(), mode="sum")
        return (out + self.bias).reshape(*lead, self.dim)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, vocab_size={self.vocab_size}, dim={self.dim}"


def _gpt2_mlp(
    in_features: int, hidden_features: int, drop: float = 0.0, act_layer: Any = "gelu_tanh", **kwargs: Any
) -> Mlp:
    """GPT-2's MLP: ``c_proj(gelu_new(c_fc(x)))`` then dropout - no dropout after the activation (unlike ``Mlp``)."""
    mlp = Mlp(in_features, hidden_features, act_layer=act_layer, drop=drop, **kwargs)
    mlp.drop1 = nn.Identity()
    return mlp


class GPT2Stack(nn.Module):
    """HF ``GPT2Model`` run on ``inputs_embeds``: add learned positions, dropout, causal pre-LN blocks, final norm.

    Args:
        dim, depth, num_heads: width, blocks, heads.
        num_positions: size of the position table.
        drop_rate: dropout on the embeddings and after both residual branches; attn_drop_rate: on the attention
            probabilities.
        backend: attention backend.

    Shapes:
        - x: ``(batch, length, dim)``, positions: long broadcastable to ``(batch, length)``; or, packed
          (``cu_seqlens``), x ``(total, dim)`` and positions ``(total,)``
        - key_padding_mask: bool ``(batch, cached + length)``, ``True`` = padding (padded batches, cached steps)
        - kv_caches: one :class:`~formers.core.layers.KVCache` per block (incremental decoding)
        - output: same as x
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        num_positions: int,
        *,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.depth = depth
        self.pos_embed = nn.Embedding(num_positions, dim)
        self.drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                mlp_layer=_gpt2_mlp,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                norm_layer=partial(nn.LayerNorm, eps=1e-5),  # GPT2Config.layer_norm_epsilon
                act_layer="gelu_tanh",  # HF gelu_new
                backend=backend,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        kv_caches: list[KVCache] | None = None,
    ) -> Tensor:
        x = self.drop(x + self.pos_embed(positions))
        # one new token per row with a cache sees every cached key anyway: skip building the causal mask
        one_step = kv_caches is not None and x.dim() == 3 and x.shape[1] == 1
        kwargs: dict[str, Any] = {"causal": not one_step}
        if cu_seqlens is not None:
            kwargs.update(cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        if key_padding_mask is not None:
            kwargs["key_padding_mask"] = key_padding_mask
        if kv_caches is not None and len(kv_caches) != self.depth:
            raise ValueError(f"GPT2Stack: kv_caches needs one KVCache per block ({self.depth}), got {len(kv_caches)}")
        for i, block in enumerate(self.blocks):
            if kv_caches is not None:
                kwargs["kv_cache"] = kv_caches[i]
            x = block(x, **kwargs)
        return self.norm(x)

    def new_caches(self) -> list[KVCache]:
        """One empty :class:`~formers.core.layers.KVCache` per block."""
        return [KVCache() for _ in self.blocks]


# ---------------------------------------------------------------------------------------- gather / scatter helpers


def target_rows(num_patches: Tensor, seq_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """The (b, p) pairs the byte decoder predicts: ``1 <= p < num_patches[b]``, row after row.

    Returns ``(batch_index, patch_index, packed_source)``: the rows' ``b`` and ``p`` (long ``(N,)``) and, for each,
    the index of its source state ``h[b, p - 1]`` among the valid patches packed row after row (the layout of the
    packed patch decoder). ``seq_len`` is ``P``, only used to check the counts.
    """
    if bool((num_patches > seq_len).any()):
        raise ValueError(f"target_rows: num_patches {num_patches.tolist()} exceed the {seq_len} patches of the batch")
    counts = (num_patches - 1).clamp_min(0)
    batch_index = torch.repeat_interleave(torch.arange(num_patches.numel(), device=num_patches.device), counts)
    starts = torch.cumsum(counts, 0) - counts  # first target row of each sequence
    patch_index = torch.arange(batch_index.numel(), device=num_patches.device) - starts[batch_index] + 1
    offsets = torch.cumsum(num_patches, 0) - num_patches  # first packed patch of each sequence
    return batch_index, patch_index, offsets[batch_index] + patch_index - 1


def scatter_rows(rows: Tensor, batch_index: Tensor, patch_index: Tensor, batch: int, seq_len: int) -> Tensor:
    """Place ``rows`` ``(N, *rest)`` at ``[batch_index, patch_index]`` of a zero ``(batch, seq_len, *rest)``
    tensor (differentiable)."""
    out = rows.new_zeros(batch * seq_len, *rows.shape[1:])
    out = out.index_copy(0, batch_index * seq_len + patch_index, rows)
    return out.unflatten(0, (batch, seq_len))


# --------------------------------------------------------------------------------------------------------- model


class BGPT(FormersModel):
    """bGPT: patch-level GPT-2 over 16-byte patches, byte-level GPT-2 inside each patch (module docstring).

    Args:
        dim: width of both decoders (official ``HIDDEN_SIZE`` 768).
        num_heads: heads of both decoders (official ``HIDDEN_SIZE // 64``).
        patch_num_layers: blocks of the patch-level decoder (official 12).
        byte_num_layers: blocks of the byte-level decoder (official 3).
        patch_length: the most patches a sequence may have (learned positions; official 512 in the paper, 1024 in
            the shipped ``config.py``), header and end patch included.
        patch_size: bytes per patch (official 16).
        mlp_ratio: MLP width over ``dim`` (official ``n_inner = 4 * HIDDEN_SIZE``).
        drop_rate: dropout on the embeddings and the residual branches; attn_drop_rate: on attention probabilities
            (both 0.1 officially: HF defaults).
        packed: run the patch decoder on packed valid patches (varlen); ``False``: padded batch + key padding mask.
        backend: attention backend of every attention call.

    Shapes:
        - patches: long ``(batch, P, patch_size)`` in ``0..256``, rows right-padded with 256-patches
        - num_patches: long ``(batch,)`` in ``1..P`` (``None``: every row has ``P`` patches)
        - output: logits ``(batch, P, patch_size, 257)``; ``[b, p, j]`` predicts byte ``j`` of patch ``p`` from the
          patches ``< p`` and the bytes ``< j`` of patch ``p``; zeros at ``p = 0`` and ``p >= num_patches[b]``
    """

    def __init__(
        self,
        dim: int = 768,
        num_heads: int = 12,
        patch_num_layers: int = 12,
        byte_num_layers: int = 3,
        patch_length: int = 512,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.1,
        attn_drop_rate: float = 0.1,
        packed: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(
            owner,
            patch_num_layers=patch_num_layers,
            byte_num_layers=byte_num_layers,
            patch_length=patch_length,
            patch_size=patch_size,
        )
        resolve_head_dim(owner, dim, num_heads)
        check_probability(owner, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate)
        self.dim, self.num_heads = dim, num_heads
        self.patch_length, self.patch_size, self.vocab_size = patch_length, patch_size, VOCAB_SIZE
        self.packed = packed
        stack = partial(GPT2Stack, mlp_ratio=mlp_ratio, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate)
        self.patch_embed = PatchEmbedding(patch_size, VOCAB_SIZE, dim)
        self.patch_decoder = stack(dim, patch_num_layers, num_heads, patch_length, backend=backend)
        self.byte_embed = nn.Embedding(VOCAB_SIZE, dim)
        self.byte_decoder = stack(dim, byte_num_layers, num_heads, patch_size + 1, backend=backend)
        self.lm_head = nn.Linear(dim, VOCAB_SIZE, bias=False)
        self._init_gpt2()
        self.lm_head.weight = self.byte_embed.weight  # tied, as GPT2LMHeadModel

    def _init_gpt2(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit norms, and the residual output projections
        (``c_proj``) at N(0, 0.02 / sqrt(2 * n_layer)) of their own decoder."""
        for stack in (self.patch_decoder, self.byte_decoder):
            for module in stack.modules():
                if isinstance(module, nn.Linear | nn.Embedding):
                    nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            for block in stack.blocks:
                for proj in (block.attn.proj, block.mlp.fc2):
                    nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * stack.depth))
        nn.init.normal_(self.byte_embed.weight, std=0.02)

    # ------------------------------------------------------------------------------------------------------ forward

    def forward(self, patches: Tensor, num_patches: Tensor | None = None, decode_mask: Tensor | None = None) -> Tensor:
        """Logits ``(batch, P, patch_size, 257)`` (class docstring). ``decode_mask`` (bool ``(batch, P)``, optional)
        limits the byte decoder to the patches a loss counts — the states of a CPU trace, the target file of a
        conversion — and leaves the other rows' logits zero; the patch decoder still sees every patch. It is the
        bGPT decoder's main cost (17 positions per patch), so a loss on a third of the patches costs about a third."""
        patches, num_patches = self._check_inputs(patches, num_patches)
        batch, seq_len = patches.shape[:2]
        batch_index, patch_index, source = target_rows(num_patches, seq_len)
        if decode_mask is not None:
            keep = self._check_decode_mask(decode_mask, batch, seq_len)[batch_index, patch_index]
            batch_index, patch_index, source = batch_index[keep], patch_index[keep], source[keep]
        if self.packed:
            hidden = self._encode_packed(patches, num_patches)  # (total valid patches, dim)
        else:
            hidden = self._encode_padded(patches, num_patches).flatten(0, 1)
            source = batch_index * seq_len + patch_index - 1
        logits = self.decode_bytes(hidden[source], patches[batch_index, patch_index])
        return scatter_rows(logits, batch_index, patch_index, batch, seq_len)

    def encode_patches(self, patches: Tensor, num_patches: Tensor | None = None, packed: bool | None = None) -> Tensor:
        """The patch decoder's states ``(batch, P, dim)`` (after the final norm), zeros at padding patches;
        ``packed`` overrides the model's choice of layout."""
        patches, num_patches = self._check_inputs(patches, num_patches)
        if not (self.packed if packed is None else packed):
            return self._encode_padded(patches, num_patches)
        hidden = self._encode_packed(patches, num_patches)
        valid = self._valid_mask(num_patches, patches.shape[1])
        out = hidden.new_zeros(*valid.shape, self.dim)
        out[valid] = hidden
        return out

    def decode_bytes(self, context: Tensor, targets: Tensor) -> Tensor:
        """Byte logits of target patches: ``context`` ``(N, dim)`` the state of each one's previous patch,
        ``targets`` long ``(N, patch_size)`` -> ``(N, patch_size, 257)`` (teacher forcing)."""
        if targets.shape[0] == 0:  # no target patch in the batch (every row is a lone header)
            return context.new_zeros(0, self.patch_size, self.vocab_size)
        x = torch.cat((context[:, None], self.byte_embed(targets[:, :-1])), dim=1)
        positions = torch.arange(self.patch_size, device=targets.device)
        return self.lm_head(self.byte_decoder(x, positions))

    @staticmethod
    def _valid_mask(num_patches: Tensor, seq_len: int) -> Tensor:
        return torch.arange(seq_len, device=num_patches.device) < num_patches[:, None]

    def _encode_packed(self, patches: Tensor, num_patches: Tensor) -> Tensor:
        """Valid patches packed row after row -> their states ``(total, dim)`` (varlen causal attention)."""
        valid = self._valid_mask(num_patches, patches.shape[1])
        cu_seqlens = cu_seqlens_from_lengths(num_patches)
        positions = torch.arange(int(cu_seqlens[-1]), device=patches.device)
        positions = positions - torch.repeat_interleave(cu_seqlens[:-1].long(), num_patches)
        x = self.patch_embed(patches[valid])
        return self.patch_decoder(x, positions, cu_seqlens=cu_seqlens, max_seqlen=int(num_patches.max()))

    def _encode_padded(self, patches: Tensor, num_patches: Tensor) -> Tensor:
        """The padded batch with a key padding mask -> ``(batch, P, dim)``, zeros at padding patches."""
        valid = self._valid_mask(num_patches, patches.shape[1])
        positions = torch.arange(patches.shape[1], device=patches.device)
        padding = None if bool(valid.all()) else ~valid
        hidden = self.patch_decoder(self.patch_embed(patches), positions, key_padding_mask=padding)
        return hidden * valid[..., None]

    # --------------------------------------------------------------------------------------------------- checks

    def _check_decode_mask(self, decode_mask: Tensor, batch: int, seq_len: int) -> Tensor:
        owner = type(self).__name__
        if not isinstance(decode_mask, Tensor) or decode_mask.dtype != torch.bool:
            raise TypeError(f"{owner}: decode_mask must be a bool tensor (batch, num_patches) or None")
        if decode_mask.shape != (batch, seq_len):
            raise ValueError(
                f"{owner}: decode_mask must have shape ({batch}, {seq_len}), got {tuple(decode_mask.shape)}"
            )
        return decode_mask.to(self.device)

    def _check_inputs(self, patches: Tensor, num_patches: Tensor | None) -> tuple[Tensor, Tensor]:
        """Check ``patches`` / ``num_patches``; return both as long (``num_patches`` on the patches' device)."""
        owner = type(self).__name__
        if not isinstance(patches, Tensor):
            raise TypeError(f"{owner}: patches must be a torch.Tensor, got {type(patches).__name__}")
        if patches.dim() != 3 or patches.shape[-1] != self.patch_size:
            raise ValueError(
                f"{owner}: patches must be (batch, num_patches, {self.patch_size}), got shape {tuple(patches.shape)}"
            )
        if patches.is_floating_point() or patches.is_complex() or patches.dtype == torch.bool:
            raise TypeError(f"{owner}: patches must be an integer tensor of byte ids 0..256, got {patches.dtype}")
        batch, seq_len = patches.shape[:2]
        if batch == 0 or seq_len == 0:
            raise ValueError(f"{owner}: patches is empty, got shape {tuple(patches.shape)}")
        if seq_len > self.patch_length:
            raise ValueError(
                f"{owner}: patches holds {seq_len} patches but the model has patch_length={self.patch_length} "
                "positions; crop longer files to patch-aligned windows of at most patch_length patches with the "
                "header patch first (training), evaluate them with sliding windows, or let generation slide (it "
                "re-encodes the header patch plus the last half window)"
            )
        low, high = int(patches.min()), int(patches.max())
        if low < 0 or high > VOCAB_SIZE - 1:
            raise ValueError(f"{owner}: patches must hold byte ids in 0..256 (256 = padding), got {low}..{high}")
        if num_patches is None:
            return patches.long(), torch.full((batch,), seq_len, dtype=torch.long, device=patches.device)
        if not isinstance(num_patches, Tensor):
            raise TypeError(f"{owner}: num_patches must be a torch.Tensor or None, got {type(num_patches).__name__}")
        if num_patches.shape != (batch,):
            raise ValueError(f"{owner}: num_patches must have shape ({batch},), got {tuple(num_patches.shape)}")
        if num_patches.is_floating_point() or num_patches.is_complex() or num_patches.dtype == torch.bool:
            raise TypeError(f"{owner}: num_patches must be an integer tensor, got {num_patches.dtype}")
        if bool((num_patches < 1).any()) or bool((num_patches > seq_len).any()):
            raise ValueError(
                f"{owner}: num_patches must be in 1..{seq_len} (the patches of each row), got {num_patches.tolist()}"
            )
        return patches.long(), num_patches.to(device=patches.device, dtype=torch.long)

    # ----------------------------------------------------------------------------------------------- FormersModel

    def _example_num_patches(self, batch_size: int) -> list[int]:
        seq_len = min(5, self.patch_length)
        return [max(1, seq_len - (2 * i) % 4) for i in range(batch_size)]  # 5, 3, 5, 3, ... (mixed, padded)

    def example_inputs(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Random bytes in right-padded rows of mixed lengths (some 256 ids inside, as pads of a last patch)."""
        num_patches = torch.tensor(self._example_num_patches(batch_size), device=self.device)
        seq_len = min(5, self.patch_length)
        patches = torch.randint(0, VOCAB_SIZE, (batch_size, seq_len, self.patch_size), device=self.device)
        patches[~self._valid_mask(num_patches, seq_len)] = VOCAB_SIZE - 1
        return {"patches": patches, "num_patches": num_patches}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, min(5, self.patch_length), self.patch_size, self.vocab_size)


# ------------------------------------------------------------------------------------------- official checkpoints

_CONV1D = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")  # HF Conv1D: (in, out)
_BLOCK_KEYS = [
    (r"\.ln_1\.", ".norm1."),
    (r"\.attn\.c_attn\.", ".attn.qkv."),
    (r"\.attn\.c_proj\.", ".attn.proj."),
    (r"\.ln_2\.", ".norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]
_STACKS = [  # official GPT-2 prefix -> ours
    ("patch_level_decoder.base.", "patch_decoder."),
    ("byte_level_decoder.base.transformer.", "byte_decoder."),
]
_DROPPED = re.compile(r"(^patch_level_decoder\.base\.wte\.weight$|\.attn\.(bias|masked_bias)$)")


def _map_stack_key(rest: str) -> str | None:
    """A GPT2Model key without its prefix (``h.3.attn.c_attn.weight``, ``wpe.weight``, ``ln_f.bias``) -> ours."""
    if rest == "wpe.weight":
        return "pos_embed.weight"
    if rest.startswith("ln_f."):
        return "norm." + rest.removeprefix("ln_f.")
    match = re.match(r"h\.(\d+)(\..*)$", rest)
    if match is None:
        return None
    tail = match.group(2)
    for pattern, replacement in _BLOCK_KEYS:
        tail = re.sub(pattern, replacement, tail)
    return f"blocks.{match.group(1)}{tail}"


def checkpoint_filter_fn(state_dict: dict[str, Any], model: BGPT) -> dict[str, Tensor]:
    """An official ``bGPTLMHeadModel`` state dict (or its saved checkpoint ``{"model": ..., "epoch": ...}``, or a
    DDP-prefixed one) -> ``model``'s keys.

    HF ``Conv1D`` weights (``c_attn``, ``c_proj``, ``c_fc``) are stored ``(in, out)`` and are transposed to
    ``nn.Linear``'s ``(out, in)``; the fused ``c_attn`` columns are ``[q | k | v]`` with heads contiguous, the layout of
    our ``qkv``. The patch GPT-2's unused token embedding (vocabulary 1) and the causal-mask buffers of older
    transformers versions are dropped; the byte ``wte`` feeds both the byte embedding and the tied output head. Keys
    already in this model's layout pass through.

    Raises:
        ValueError: keys of neither layout.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"checkpoint_filter_fn: expected a state dict, got {type(state_dict).__name__}")
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]
    own = set(model.state_dict())
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key in own:
            out[key] = value
            continue
        if _DROPPED.search(key):
            continue
        new = _map_official_key(key)
        if new is None:
            unknown.append(key)
            continue
        out[new] = value.t() if _CONV1D.search(key) else value
    if unknown:
        raise ValueError(f"keys of neither the official bGPTLMHeadModel nor this model: {unknown[:8]}")
    if "byte_embed.weight" in out:
        out.setdefault("lm_head.weight", out["byte_embed.weight"])  # tied: either key fills both
    elif "lm_head.weight" in out:
        out["byte_embed.weight"] = out["lm_head.weight"]
    return out


def _map_official_key(key: str) -> str | None:
    if key.startswith("patch_level_decoder.patch_embedding."):
        return "patch_embed." + key.removeprefix("patch_level_decoder.patch_embedding.")
    if key == "byte_level_decoder.base.transformer.wte.weight":
        return "byte_embed.weight"
    if key == "byte_level_decoder.base.lm_head.weight":
        return "lm_head.weight"
    for prefix, ours in _STACKS:
        if key.startswith(prefix):
            rest = _map_stack_key(key.removeprefix(prefix))
            return None if rest is None else ours + rest
    return None


# ----------------------------------------------------------------------------------------- official configurations

_PAPER = "Beyond Language Models: Byte Models are Digital World Simulators (Wu et al. 2024, arXiv 2402.19155)"
_TEST_KWARGS = {"dim": 32, "num_heads": 2, "patch_num_layers": 2, "byte_num_layers": 1, "patch_length": 8}
_OFFICIAL = {"dim": 768, "num_heads": 12, "patch_num_layers": 12, "byte_num_layers": 3, "patch_size": 16}


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def bgpt_512(**kwargs: Any) -> BGPT:
    """The paper / README setting: ``PATCH_LENGTH = 512`` (8 KB), d 768, 12 + 3 layers, 12 heads; 110,084,352
    official parameters (110,083,584 here: the unused patch ``wte`` dropped)."""
    return BGPT(**{**_OFFICIAL, "patch_length": 512, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def bgpt_1024(**kwargs: Any) -> BGPT:
    """The shipped ``config.py``: ``PATCH_LENGTH = 1024`` (16 KB), otherwise as :func:`bgpt_512`; 110,477,568
    official parameters (110,476,800 here)."""
    return BGPT(**{**_OFFICIAL, "patch_length": 1024, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_KWARGS, filter_fn=checkpoint_filter_fn)
def bgpt_small(**kwargs: Any) -> BGPT:
    """A CPU-trainable bGPT (not an official size): d 256, 4 heads, 6 patch + 2 byte layers, 256 patches (4 KB)."""
    return BGPT(
        **{"dim": 256, "num_heads": 4, "patch_num_layers": 6, "byte_num_layers": 2, "patch_length": 256, **kwargs}
    )

"""bGPT (formers.bytes.models.bgpt): the official parameter counts, equality with the official arithmetic (an oracle
written here from sanderwood/bgpt @ 56b98d6 ``utils.py`` ``bGPTLMHeadModel.forward`` step by step, on randomly
initialised HF GPT-2s built from the official configs at tiny sizes, loaded into our model through the registered
``checkpoint_filter_fn``), the alignment (patch ``p`` from patches ``< p``, byte ``j`` from bytes ``< j``), padding
invariance, packed == padded patch decoder, gradients and input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formers.bytes.models.bgpt import (
    BGPT,
    PatchEmbedding,
    bgpt_512,
    bgpt_1024,
    checkpoint_filter_fn,
    target_rows,
)
from formers.bytes.patches import PAD, conversion_sequence, file_sequence
from formers.core.registry import get_model_entry

transformers = pytest.importorskip("transformers")  # test-only dev dependency: the layout of the official weights

TINY = {"dim": 32, "num_heads": 2, "patch_num_layers": 2, "byte_num_layers": 2, "patch_length": 8}
PATCH_SIZE = 16


def tiny_model(**kwargs) -> BGPT:
    torch.manual_seed(0)
    return BGPT(**{**TINY, "drop_rate": 0.0, "attn_drop_rate": 0.0, **kwargs}).eval()


def batch_of(sequences: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad ``(P_i, 16)`` patch tensors with 256-patches: ``(B, P, 16)`` and ``num_patches``."""
    num = torch.tensor([len(s) for s in sequences])
    out = torch.full((len(sequences), int(num.max()), PATCH_SIZE), PAD, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return out, num


def random_patches(num_patches: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, PAD + 1, (num_patches, PATCH_SIZE), generator=generator)


# ------------------------------------------------------------------------------------------------ parameter counts


def test_parameter_counts_of_the_official_configurations():
    """110,084,352 (PATCH_LENGTH 512) and 110,477,568 (1024) for the official class, counted on HF GPT-2s built on
    the meta device from the official configs; ours is 768 fewer: the patch GPT-2's unused token embedding."""
    with torch.device("meta"):
        ours = {512: bgpt_512().num_parameters(), 1024: bgpt_1024().num_parameters()}
        official = {n: sum(p.numel() for p in OfficialBGPT(n, 768, 12, 12, 3).parameters()) for n in (512, 1024)}
    assert official == {512: 110_084_352, 1024: 110_477_568}
    assert ours == {512: 110_084_352 - 768, 1024: 110_477_568 - 768}


# ---------------------------------------------------------------------------------------------- the test oracle


def gpt2_config(vocab_size: int, positions: int, dim: int, heads: int, layers: int):
    """The official ``GPT2Config`` of ``train-gen.py`` (HF defaults otherwise: gelu_new, LN eps 1e-5)."""
    return transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=positions,
        n_embd=dim,
        n_layer=layers,
        n_head=heads,
        n_inner=4 * dim,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )


class OfficialBGPT(nn.Module):
    """``bGPTLMHeadModel``'s modules under their official names (so the state dict has the official keys)."""

    def __init__(self, patch_length: int, dim: int, heads: int, patch_layers: int, byte_layers: int) -> None:
        super().__init__()
        self.patch_level_decoder = nn.Module()
        self.patch_level_decoder.patch_embedding = nn.Linear(PATCH_SIZE * 257, dim)
        self.patch_level_decoder.base = transformers.GPT2Model(gpt2_config(1, patch_length, dim, heads, patch_layers))
        self.byte_level_decoder = nn.Module()
        self.byte_level_decoder.base = transformers.GPT2LMHeadModel(
            gpt2_config(257, PATCH_SIZE + 1, dim, heads, byte_layers)
        )

    def forward(self, patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``bGPTLMHeadModel.forward`` step by step: ``patches`` ``(B, P * 16)``, ``masks`` long ``(B, P)``; returns
        the byte decoder's logits ``(N, 17, 257)`` of the selected patches and the official loss."""
        masks = masks.clone()  # the official code writes masks[:, 0] = 0 into the caller's tensor
        patches = patches.reshape(len(patches), -1, PATCH_SIZE)
        # PatchLevelDecoder.forward: one-hot over 257 classes, flattened to 16 * 257, Linear, GPT2Model
        one_hot = F.one_hot(patches, num_classes=257).to(torch.float32).reshape(len(patches), -1, PATCH_SIZE * 257)
        embedded = self.patch_level_decoder.patch_embedding(one_hot)
        encoded = self.patch_level_decoder.base(inputs_embeds=embedded, attention_mask=masks)["last_hidden_state"]
        # the alignment: drop the last valid patch as a source, the header patch as a target
        left_shift_masks = masks * (masks.flip(1).cumsum(1).flip(1) > 1)
        masks[:, 0] = 0
        encoded = encoded[left_shift_masks == 1]
        targets = patches[masks == 1]
        # ByteLevelDecoder.forward: labels [256, b0..b15]; inputs wte(labels) with position 0 replaced by the patch
        targets = torch.cat((torch.ones_like(targets[:, 0:1]) * 256, targets), dim=1)
        base = self.byte_level_decoder.base
        inputs_embeds = F.embedding(targets, base.transformer.wte.weight)
        inputs_embeds = torch.cat((encoded.unsqueeze(1), inputs_embeds[:, 1:, :]), dim=1)
        out = base(inputs_embeds=inputs_embeds, labels=targets)
        return out.logits, out.loss


def randomised_official(patch_length: int = 8) -> OfficialBGPT:
    """Tiny official model with weights far from the 0.02 init, so that equal logits mean something."""
    torch.manual_seed(1)
    official = OfficialBGPT(patch_length, TINY["dim"], TINY["num_heads"], TINY["patch_num_layers"], 2).eval()
    with torch.no_grad():
        for name, p in official.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.3)
    return official


def load_official(official: OfficialBGPT, **kwargs) -> BGPT:
    model = tiny_model(patch_length=official.patch_level_decoder.base.wpe.weight.shape[0], **kwargs)
    checkpoint = {"model": official.state_dict(), "epoch": 3, "min_eval_loss": 1.0}  # as train-gen.py saves
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    return model


def official_batch() -> tuple[Tensor, Tensor]:
    """Three files of different lengths (6, 3 and 8 patches), one a conversion pair, right-padded."""
    seqs = [
        file_sequence(b"print('hello, bytes')\n" * 3, "py").patches,
        file_sequence(b"X:1\nK:G\n", "abc").patches,
        conversion_sequence(b"ABCD" * 9, "abc", b"MThd\x00\x00" * 4, "mid").patches[:8],
    ]
    return batch_of(seqs)


@pytest.mark.parametrize("num_patches", [3, 300])  # few: column gather; many: embedding_bag
def test_patch_embedding_is_the_one_hot_linear(num_patches):
    torch.manual_seed(0)
    embed = PatchEmbedding(PATCH_SIZE, 257, 24)
    nn.init.normal_(embed.bias)
    patches = torch.randint(0, 257, (num_patches, PATCH_SIZE))
    one_hot = F.one_hot(patches, 257).float().reshape(num_patches, -1)
    torch.testing.assert_close(embed(patches), one_hot @ embed.weight.t() + embed.bias, atol=1e-5, rtol=1e-5)
    embed(patches[None]).sum().backward()
    assert torch.equal(embed.weight.grad != 0, one_hot.sum(0).expand_as(embed.weight) != 0)


def test_filter_fn_is_registered_and_drops_the_unused_keys():
    assert get_model_entry("bgpt_512").filter_fn is checkpoint_filter_fn
    official = randomised_official()
    mapped = checkpoint_filter_fn(official.state_dict(), tiny_model())
    assert not any("wte" in key for key in mapped)
    assert set(mapped) == set(tiny_model().state_dict())
    with pytest.raises(ValueError, match="neither the official"):
        checkpoint_filter_fn({"some.other.weight": torch.zeros(1)}, tiny_model())


def test_logits_and_official_loss_equal_the_official_arithmetic():
    official = randomised_official()
    patches, num = official_batch()
    masks = (torch.arange(patches.shape[1]) < num[:, None]).long()
    with torch.no_grad():
        official_logits, official_loss = official(patches.reshape(len(patches), -1), masks)
        for packed in (True, False):
            model = load_official(official, packed=packed)
            logits = model(patches, num)
            batch_index, patch_index, _ = target_rows(num, patches.shape[1])
            torch.testing.assert_close(logits[batch_index, patch_index], official_logits[:, :16], atol=1e-5, rtol=1e-5)
            # the official loss ("all"): every byte of patches 1..num_patches-1, pads and end patch included
            rows = logits[batch_index, patch_index]
            ours = F.cross_entropy(rows.reshape(-1, 257), patches[batch_index, patch_index].reshape(-1))
            torch.testing.assert_close(ours, official_loss, atol=1e-5, rtol=1e-5)
            # the header row and the padding rows are zeros
            valid_targets = torch.zeros(patches.shape[:2], dtype=torch.bool)
            valid_targets[batch_index, patch_index] = True
            assert torch.all(logits[~valid_targets] == 0)
    assert official_logits.abs().max() > 1.0  # the weights are far from uniform predictions


# ------------------------------------------------------------------------------------------------- the alignment


def test_patch_p_depends_on_earlier_patches_only_and_byte_j_on_earlier_bytes():
    model = tiny_model()
    patches = file_sequence(bytes(range(40, 120)), "txt").patches[None]  # header + 5 data patches + end = 7
    base = model(patches)
    for p in range(1, patches.shape[1]):
        changed = patches.clone()
        changed[0, p:] = (changed[0, p:] + 7) % 256  # every patch >= p
        out = model(changed)
        torch.testing.assert_close(out[0, : p + 1, 0], base[0, : p + 1, 0], atol=0, rtol=0)  # byte 0 of patch p too
        assert not torch.allclose(out[0, p + 1 :], base[0, p + 1 :]) or p + 1 == patches.shape[1]
    for j in range(PATCH_SIZE):
        changed = patches.clone()
        changed[0, 3, j:] = (changed[0, 3, j:] + 11) % 256  # bytes >= j of patch 3
        out = model(changed)
        torch.testing.assert_close(out[0, :3], base[0, :3], atol=0, rtol=0)
        torch.testing.assert_close(out[0, 3, : j + 1], base[0, 3, : j + 1], atol=0, rtol=0)
        if j + 1 < PATCH_SIZE:
            assert not torch.allclose(out[0, 3, j + 1 :], base[0, 3, j + 1 :])


def test_padding_invariance_and_packed_equals_padded():
    model = tiny_model()
    generator = torch.Generator().manual_seed(3)
    short, long_ = random_patches(3, generator), random_patches(8, generator)
    patches, num = batch_of([short, long_])
    with torch.no_grad():
        alone = model(short[None])
        batched = model(patches, num)
        torch.testing.assert_close(batched[0, :3], alone[0], atol=1e-5, rtol=1e-5)
        assert torch.all(batched[0, 3:] == 0)
        # the same padding changed to other values: nothing moves
        other = patches.clone()
        other[0, 3:] = 17
        torch.testing.assert_close(model(other, num), batched, atol=1e-6, rtol=1e-6)
        # packed (varlen) and padded (mask) patch decoders
        packed, padded = (model.encode_patches(patches, num, packed=flag) for flag in (True, False))
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
        assert torch.all(packed[0, 3:] == 0)
        model.packed = False
        torch.testing.assert_close(model(patches, num), batched, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    model = tiny_model(drop_rate=0.1, attn_drop_rate=0.1).train()
    patches, num = official_batch()
    logits = model(patches, num)
    batch_index, patch_index, _ = target_rows(num, patches.shape[1])
    loss = F.cross_entropy(logits[batch_index, patch_index].flatten(0, 1), patches[batch_index, patch_index].flatten())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert model.lm_head.weight is model.byte_embed.weight  # tied, as GPT2LMHeadModel
    # a lone header patch has no target: zeros, no failure
    assert torch.all(model(patches[:1, :1]) == 0)


# -------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("patches", "num_patches", "error", "match"),
    [
        (torch.full((2, 3, 16), 257), None, ValueError, r"byte ids in 0\.\.256"),
        (torch.full((2, 3, 16), -1), None, ValueError, r"byte ids in 0\.\.256"),
        (torch.zeros(2, 3, 16), None, TypeError, "patches must be an integer tensor"),
        (torch.zeros(2, 3, 16, dtype=torch.bool), None, TypeError, "patches must be an integer"),
        (torch.zeros(2, 48, dtype=torch.long), None, ValueError, r"patches must be \(batch, num_patches, 16\)"),
        (torch.zeros(2, 3, 8, dtype=torch.long), None, ValueError, r"patches must be \(batch, num_patches, 16\)"),
        (torch.zeros(2, 9, 16, dtype=torch.long), None, ValueError, "patch_length=8.*sliding windows"),
        (torch.zeros(2, 3, 16, dtype=torch.long), torch.tensor([3, 4]), ValueError, r"num_patches must be in 1\.\.3"),
        (torch.zeros(2, 3, 16, dtype=torch.long), torch.tensor([0, 2]), ValueError, r"num_patches must be in 1\.\.3"),
        (torch.zeros(2, 3, 16, dtype=torch.long), torch.tensor([3.0, 2.0]), TypeError, "num_patches must be an int"),
        (torch.zeros(2, 3, 16, dtype=torch.long), torch.tensor([[3, 2]]), ValueError, r"num_patches must have shape"),
        (torch.zeros(2, 3, 16, dtype=torch.long), [3, 2], TypeError, "num_patches must be a torch.Tensor"),
    ],
)
def test_clear_errors(patches, num_patches, error, match):
    with pytest.raises(error, match=match):
        tiny_model()(patches, num_patches)

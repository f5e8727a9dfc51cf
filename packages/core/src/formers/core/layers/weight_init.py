"""Weight initialisation shared by formers models (timm's ViT scheme)."""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights"]


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Initialise one module like timm's ViT (``init_weights_vit_timm``); use as ``model.apply(init_weights)``.

    * :class:`~torch.nn.Linear`: truncated normal weights (``std``, cut at ±2 like timm), zero bias;
    * :class:`~torch.nn.Embedding`: truncated normal weights (``std``, as BERT), zero ``padding_idx`` row;
    * :class:`~torch.nn.LayerNorm` / :class:`~torch.nn.RMSNorm`: ones weight, zero bias.

    Other modules (convolutions, the patch embedding) keep torch's default initialisation, as in timm.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight.data[module.padding_idx])
    elif isinstance(module, nn.LayerNorm | nn.RMSNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)

"""Key/value cache for incremental causal decoding: each step feeds only the new tokens and attends to every earlier
key and value of the same layer, instead of re-running the whole prefix.

One :class:`KVCache` belongs to one self-attention layer (a decoder keeps one per block). It is passed as
``kv_cache=`` to :meth:`MultiHeadAttention.forward <formers.core.layers.MultiHeadAttention.forward>` or
:meth:`TransformerBlock.forward <formers.core.layers.TransformerBlock.forward>`, which append the step's keys and values
and attend to the whole cache. Causal attention in formers.core is bottom-right aligned, so ``causal=True`` with
``len_q`` new queries and ``len_k = cached + len_q`` keys is exactly the mask of the full sequence's last rows.

Positions are the caller's business (the cache does not know them): add the embedding of positions
``length .. length + len_q - 1`` to the new tokens. With rows of different lengths (batched prompts), left-pad the
prompts, pass a ``key_padding_mask`` that covers the cached keys *and* the new ones ``(batch, length + len_q)``, and
keep it growing by the new columns at each step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """The keys and values one attention layer has seen so far.

    Shapes:
        - keys, values: ``(batch, num_heads, length, head_dim)`` (``None`` while empty)
        - :meth:`append`: ``k``, ``v`` ``(batch, num_heads, new, head_dim)`` -> the whole cache after appending
    """

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    @property
    def length(self) -> int:
        """Cached positions (0 while empty)."""
        return 0 if self.keys is None else self.keys.shape[2]

    def __len__(self) -> int:
        return self.length

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new keys and values along the length and return the whole cache ``(keys, values)``."""
        if k.dim() != 4 or v.shape[:3] != k.shape[:3]:
            raise ValueError(
                f"KVCache.append: k and v must be (batch, heads, new, head_dim) with equal leading sizes, got "
                f"{tuple(k.shape)} and {tuple(v.shape)}"
            )
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            fits = k.shape[:2] == self.keys.shape[:2] and k.shape[3] == self.keys.shape[3]
            if not fits or v.shape[3] != self.values.shape[3]:
                raise ValueError(
                    f"KVCache.append: new keys {tuple(k.shape)} do not fit the cache {tuple(self.keys.shape)} "
                    "(batch, heads and head_dim must agree)"
                )
            # torch.cat allocates the whole cache again: O(length) per step, negligible next to the attention itself
            # for the lengths formers decodes (a few thousand); a preallocated buffer would save it
            self.keys = torch.cat((self.keys, k), dim=2)
            self.values = torch.cat((self.values, v), dim=2)
        return self.keys, self.values

    def select(self, index: Tensor | list[int]) -> None:
        """Keep only the batch rows ``index`` (in that order): drop finished samples, reorder beams."""
        if self.keys is None:
            return
        index = torch.as_tensor(index, dtype=torch.long, device=self.keys.device)
        self.keys, self.values = self.keys.index_select(0, index), self.values.index_select(0, index)

    def crop(self, length: int) -> None:
        """Keep the first ``length`` positions (roll back a speculative step)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"KVCache.crop: length must be in [0, {self.length}], got {length}")
        if self.keys is not None:
            self.keys, self.values = self.keys[:, :, :length], self.values[:, :, :length]

    def reset(self) -> None:
        """Forget everything (a new sequence)."""
        self.keys = self.values = None

    def __repr__(self) -> str:
        shape = None if self.keys is None else tuple(self.keys.shape)
        return f"KVCache(length={self.length}, keys={shape})"

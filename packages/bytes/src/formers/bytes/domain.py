"""``formers-bytes``: the bytes domain's declaration.

The domain's models, data module, task and predictor are not built yet: until they are, ``formers-bytes`` is the
shared CLI on the core tasks (see docs/adding-a-model.md for the files a domain adds).
"""

from __future__ import annotations

from formers.core.domain import Domain

__all__ = ["DOMAIN", "main"]

DOMAIN = Domain(
    name="bytes", description="formers-bytes: byte-level transformers (bGPT, ByteFormer) on raw file bytes."
)
main = DOMAIN.main

if __name__ == "__main__":
    main()

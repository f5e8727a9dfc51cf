"""``formers-pde``: the pde domain's declaration.

The domain's models, data module, task and predictor are not built yet: until they are, ``formers-pde`` is the
shared CLI on the core tasks (see docs/adding-a-model.md for the files a domain adds).
"""

from __future__ import annotations

from formers.core.domain import Domain

__all__ = ["DOMAIN", "main"]

DOMAIN = Domain(
    name="pde",
    description="formers-pde: neural-operator transformers for PDEs (FactFormer, Galerkin/Fourier transformer, GNOT).",
)
main = DOMAIN.main

if __name__ == "__main__":
    main()

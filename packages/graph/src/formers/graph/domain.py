"""``formers-graph``: the graph domain's declaration.

The domain's models, data module, task and predictor are not built yet: until they are, ``formers-graph`` is the
shared CLI on the core tasks (see docs/adding-a-model.md for the files a domain adds).
"""

from __future__ import annotations

from formers.core.domain import Domain

__all__ = ["DOMAIN", "main"]

DOMAIN = Domain(
    name="graph", description="formers-graph: graph transformers (Dwivedi & Bresson Graph Transformer, Graphormer)."
)
main = DOMAIN.main

if __name__ == "__main__":
    main()

"""``formers-graph``: the graph domain's declaration; its models, data, task and predictor come next (the files to add:
docs/adding-a-model.md). Until then the script is the shared CLI on the core tasks."""

from formers.core.domain import Domain

DOMAIN = Domain(
    name="graph", description="formers-graph: graph transformers (Dwivedi & Bresson Graph Transformer, Graphormer)."
)
main = DOMAIN.main

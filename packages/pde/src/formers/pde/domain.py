"""``formers-pde``: the pde domain's declaration; its models, data, task and predictor come next (the files to add:
docs/adding-a-model.md). Until then the script is the shared CLI on the core tasks."""

from formers.core.domain import Domain

DOMAIN = Domain(
    name="pde",
    description="formers-pde: neural-operator transformers for PDEs (FactFormer, Galerkin/Fourier transformer, GNOT).",
)
main = DOMAIN.main

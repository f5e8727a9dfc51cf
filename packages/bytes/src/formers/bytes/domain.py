"""``formers-bytes``: the bytes domain's declaration; its models, data, task and predictor come next (the files to add:
docs/adding-a-model.md). Until then the script is the shared CLI on the core tasks."""

from formers.core.domain import Domain

DOMAIN = Domain(
    name="bytes", description="formers-bytes: byte-level transformers (bGPT, ByteFormer) on raw file bytes."
)
main = DOMAIN.main

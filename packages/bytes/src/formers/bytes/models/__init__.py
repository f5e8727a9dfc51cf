"""formers-bytes model families; importing this package registers them (the ``formers.models`` entry point)."""

from formers.bytes.models import bgpt, byteformer  # noqa: F401

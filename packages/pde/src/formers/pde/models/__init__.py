"""formers-pde model families; importing this package registers them (the ``formers.models`` entry point)."""

from formers.pde.models import factformer, fno, galerkin, gnot  # noqa: F401

"""Command line of ``formers-pde``: the shared :class:`formers.core.cli.FormersCLI` with the pde defaults.

Usage::

    formers-pde fit --config pipelines/pde/<config>.yaml [--run_dir DIR] [--ckpt_path last]

See :mod:`formers.core.cli` for the run layout and the defaults.
"""

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = "formers-pde: neural-operator transformers for PDEs (FactFormer, Galerkin/Fourier transformer, GNOT)."


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-pde``."""
    FormersCLI(description=DESCRIPTION, run_dir="runs/pde", args=args)


if __name__ == "__main__":
    main()

"""Command line of ``formers-graph``: the shared :class:`formers.core.cli.FormersCLI` with the graph defaults.

Usage::

    formers-graph fit --config pipelines/graph/<config>.yaml [--run_dir DIR] [--ckpt_path last]

See :mod:`formers.core.cli` for the run layout and the defaults.
"""

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = "formers-graph: graph transformers (Dwivedi & Bresson Graph Transformer, Graphormer)."


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-graph``."""
    FormersCLI(description=DESCRIPTION, run_dir="runs/graph", args=args)


if __name__ == "__main__":
    main()

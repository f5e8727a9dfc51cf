"""Command line of ``formers-bytes``: the shared :class:`formers.core.cli.FormersCLI` with the bytes defaults.

Usage::

    formers-bytes fit --config pipelines/bytes/<config>.yaml [--run_dir DIR] [--ckpt_path last]

See :mod:`formers.core.cli` for the run layout and the defaults.
"""

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = "formers-bytes: byte-level transformers (bGPT, ByteFormer) on raw file bytes."


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-bytes``."""
    FormersCLI(description=DESCRIPTION, run_dir="runs/bytes", args=args)


if __name__ == "__main__":
    main()

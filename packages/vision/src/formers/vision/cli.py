"""Command line of ``formers-vision``: the shared :class:`formers.core.cli.FormersCLI` with the vision defaults.

Usage::

    formers-vision fit --config pipelines/vision/<config>.yaml [--run_dir DIR] [--ckpt_path last]

See :mod:`formers.core.cli` for the run layout and the defaults.
"""

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = "formers-vision: vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab)."


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-vision``."""
    FormersCLI(description=DESCRIPTION, run_dir="runs/vision", args=args)


if __name__ == "__main__":
    main()

"""Command line of ``formers-timeseries``: the shared :class:`formers.core.cli.FormersCLI` with the timeseries defaults.

Usage::

    formers-timeseries fit --config pipelines/timeseries/<config>.yaml [--run_dir DIR] [--ckpt_path last]

See :mod:`formers.core.cli` for the run layout and the defaults.
"""

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = "formers-timeseries: time-series forecasting transformers (Informer, Autoformer, iTransformer)."


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-timeseries``."""
    FormersCLI(description=DESCRIPTION, run_dir="runs/timeseries", args=args)


if __name__ == "__main__":
    main()

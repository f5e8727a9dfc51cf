"""Command line of ``formers-timeseries``: the shared :class:`formers.core.cli.FormersCLI` with the timeseries defaults,
plus a ``predict`` subcommand that forecasts a CSV from a checkpoint.

Usage::

    formers-timeseries fit --config pipelines/timeseries/<config>.yaml [--run_dir DIR] [--ckpt_path last]
    formers-timeseries test --config pipelines/timeseries/<config>.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-timeseries predict --ckpt <run_dir>/checkpoints/best.ckpt --csv my.csv --out forecast.csv --plot f.png

``fit`` / ``validate`` / ``test`` are LightningCLI (see :mod:`formers.core.cli` for the run layout). ``predict`` is
not LightningCLI's: it is intercepted here and runs :func:`formers.timeseries.forecasting.forecast` (future values in
the CSV's units, with timestamps) or, with ``--split test``, writes the forecast-vs-truth TSV of the test split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from formers.core.cli import ArgsType, FormersCLI

DESCRIPTION = (
    "formers-timeseries: time-series forecasting transformers (Informer, Autoformer, iTransformer). "
    "Subcommands fit/validate/test are LightningCLI (--config pipelines/timeseries/<name>.yaml). "
    "'formers-timeseries predict --ckpt CKPT --csv CSV [--out OUT.csv] [--plot OUT.png] [--end ROW|DATE] "
    "[--truth CSV] [--split test --tsv OUT.tsv]' forecasts the next pred_len steps of a CSV in its own units "
    "(see 'formers-timeseries predict --help'); it replaces LightningCLI's predict."
)


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="formers-timeseries predict",
        description="Forecast the pred_len steps after the last seq_len rows of a CSV with a trained checkpoint "
        "(loaded with weights_only=True); values in the CSV's original units, timestamps continue the CSV's step.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of 'formers-timeseries fit' (best.ckpt/last.ckpt)")
    parser.add_argument("--csv", required=True, help="CSV with the training columns and date column")
    parser.add_argument("--out", default=None, help="output CSV: date + forecast columns (+ <col>_true)")
    parser.add_argument("--plot", default=None, help="output PNG: history, forecast and truth (when known)")
    parser.add_argument(
        "--end",
        default=None,
        help="where the history ends: a row count (negative: from the end) or a date (included); later rows of "
        "the CSV are drawn and written as the truth. Default: the end of the CSV",
    )
    parser.add_argument("--truth", default=None, help="CSV with the actual future rows (for the plot and *_true)")
    parser.add_argument("--columns", nargs="+", default=None, help="columns to plot (default: the target)")
    parser.add_argument(
        "--split",
        choices=["test"],
        default=None,
        help="instead of one future forecast: forecast the whole test split in non-overlapping pred_len blocks and "
        "write --tsv (step, date, truth, forecast of the target) for a DVC plot",
    )
    parser.add_argument("--tsv", default=None, help="output TSV of --split test")
    return parser


def predict(argv: Sequence[str]) -> None:
    """The ``predict`` subcommand (``argv`` without the word ``predict``)."""
    parser = predict_parser()
    args = parser.parse_args(argv)
    from formers.timeseries.forecasting import forecast, forecast_test_split  # lightning import only when used

    try:
        if args.split == "test":
            if args.tsv is None:
                parser.error("--split test needs --tsv")
            table = forecast_test_split(args.ckpt, args.csv, args.tsv)
            print(f"wrote {args.tsv} ({len(table)} test steps)")
            return
        result = forecast(
            args.ckpt,
            args.csv,
            end=args.end,
            truth=args.truth,
            out_csv=args.out,
            plot=args.plot,
            plot_columns=args.columns,
        )
    except ValueError as err:
        parser.exit(2, f"formers-timeseries predict: error: {err}\n")
    if args.out is None:
        print(result.to_csv(index=False), end="")
    else:
        print(f"wrote {args.out} ({len(result)} steps from {result.iloc[0, 0]} to {result.iloc[-1, 0]})")
    if args.plot:
        print(f"wrote {args.plot}")


def main(args: ArgsType = None) -> None:
    """Entry point of ``formers-timeseries``."""
    argv = sys.argv[1:] if args is None else args  # args may also be a dict / Namespace (LightningCLI's ArgsType)
    if isinstance(argv, (list, tuple)) and argv and argv[0] == "predict":
        predict(list(argv[1:]))
        return
    FormersCLI(description=DESCRIPTION, run_dir="runs/timeseries", args=args)


if __name__ == "__main__":
    main()

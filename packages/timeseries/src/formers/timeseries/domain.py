"""``formers-timeseries``: the time-series domain's declaration (tasks, data, predict).

Usage::

    formers-timeseries fit --config pipelines/timeseries/<config>.yaml [--run_dir DIR] [--ckpt_path last]
    formers-timeseries test --config pipelines/timeseries/<config>.yaml --ckpt_path <run_dir>/checkpoints/best.ckpt
    formers-timeseries predict --ckpt <run_dir>/checkpoints/best.ckpt my.csv --out forecast.csv --plot f.png
    formers-timeseries predict --ckpt ... my.csv --split test --out test_forecast.tsv

``predict`` (:mod:`formers.core.predict`) runs :func:`formers.timeseries.forecasting.forecast`: the ``pred_len``
steps after the history in the CSV's own units, with timestamps continuing its step, or with ``--split test`` the
forecast-vs-truth TSV of the whole test split (a DVC plot).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from formers.core.domain import Domain, TrainedRun
from formers.core.predict import InputError, Predictor
from formers.core.runsafety import refuse_overwrite

__all__ = ["DOMAIN", "ForecastPredictor", "main"]


@dataclass
class ForecastPredictor(Predictor):
    """Forecast the ``pred_len`` steps after the history of one CSV (or its whole test split)."""

    inputs_help: str = "one CSV with the training columns and date column"
    out_help: str = (
        "output CSV (date + forecast columns, + <col>_true when the truth is known); with --split test a TSV"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--plot", default=None, help="output PNG: history, forecast and truth (when known)")
        parser.add_argument(
            "--end",
            default=None,
            help="where the history ends: a row count (negative: from the end) or a date (included); later rows of "
            "the CSV are the truth. Default: the end of the CSV",
        )
        parser.add_argument("--truth", default=None, help="CSV with the actual future rows (for the plot and *_true)")
        parser.add_argument("--columns", nargs="+", default=None, help="columns to plot (default: the target)")
        parser.add_argument(
            "--split",
            choices=["test"],
            default=None,
            help="forecast the whole test split in non-overlapping pred_len blocks and write --out as a TSV (step, "
            "date, truth, forecast of the target) for a DVC plot",
        )

    def predict(self, run: TrainedRun, inputs: list[Path], options: argparse.Namespace) -> str:
        from formers.timeseries.forecasting import forecast, forecast_test_split

        if len(inputs) != 1:
            raise InputError(f"give exactly one CSV to forecast, got {len(inputs)}")
        csv = inputs[0]
        if options.split == "test":
            if options.out is None:
                raise InputError("--split test writes a TSV: give --out FILE.tsv")
            table = forecast_test_split(run, csv, options.out)
            return f"wrote {options.out} ({len(table)} test steps)"
        if options.plot is not None:
            refuse_overwrite(options.plot, [csv, run.path, options.truth])
        result = forecast(  # the run predict rebuilt (with --config: from the config's model section)
            run,
            csv,
            end=options.end,
            truth=options.truth,
            out_csv=options.out,
            plot=options.plot,
            plot_columns=options.columns,
        )
        if options.out is None:
            text = result.to_csv(index=False)  # ends with a newline
        else:
            text = f"wrote {options.out} ({len(result)} steps from {result.iloc[0, 0]} to {result.iloc[-1, 0]})\n"
        return text + (f"wrote {options.plot}" if options.plot else "")


DOMAIN = Domain(
    name="timeseries",
    description="formers-timeseries: time-series forecasting transformers (Informer, Autoformer, iTransformer).",
    # dotted paths: pandas and the task load when a subcommand runs, not for --help
    task_class="formers.timeseries.task.ForecastTask",
    data_class="formers.timeseries.data.ForecastDataModule",
    predictor=ForecastPredictor(),
)
main = DOMAIN.main

if __name__ == "__main__":
    main()

"""The DVCLive logger of :mod:`formers.core.loggers`, in its own module so that importing the loggers does not import
dvclive (the training extra); ``formers.core.loggers.ResumableDVCLiveLogger`` is its public name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.utilities import rank_zero_only

from formers.core.loggers import truncate_history

__all__ = ["ResumableDVCLiveLogger"]


class ResumableDVCLiveLogger(DVCLiveLogger):
    """``DVCLiveLogger`` that, with ``resume=True``, drops the history rows the resumed run is about to log again.

    Every ``plots/metrics/**/*.tsv`` loses its rows with a step ``>=`` the first step the resumed run logs, just
    before that step is written.
    """

    _history_truncated = False

    @rank_zero_only
    def log_metrics(
        self, metrics: Mapping[str, int | float | str], step: int | None = None, sync: bool | None = False
    ) -> None:
        if not self._history_truncated:
            self._history_truncated = True
            live = self.experiment
            if live._resume:  # noqa: SLF001  (dvclive has no public accessor)
                first = step if step else live.step + 1  # dvclive's own rule for a missing or zero step
                for history in Path(live.plots_dir, "metrics").rglob("*.tsv"):
                    truncate_history(history, first, delimiter="\t")
        super().log_metrics(metrics, step, sync)


ResumableDVCLiveLogger.__module__ = "formers.core.loggers"  # the public path that configs and pickles name

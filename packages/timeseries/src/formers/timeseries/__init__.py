"""formers.timeseries: Time-series forecasting transformers (Informer, Autoformer, iTransformer) on the formers core.

* :func:`create_model` / :func:`list_models`: the registered forecasters (Time-Series-Library hyper-parameter names),
  built by the core builder.
* :class:`ForecastDataModule`: windows of any CSV with a date column (TSLib / Informer splits and scaling).
* :class:`ForecastTask`: the LightningModule that trains them (MSE, standardized-scale metrics).
* :func:`forecast`: the next ``pred_len`` steps of a CSV from a trained checkpoint, in the CSV's units.

The Lightning-based names (and the builder) are imported lazily, so ``import formers.timeseries.models`` (the
registry's entry point) and the ``formers-timeseries`` script's start stay light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from formers.core import registry

if TYPE_CHECKING:
    from torch import nn

    from formers.timeseries.data import ForecastDataModule
    from formers.timeseries.forecasting import forecast
    from formers.timeseries.task import ForecastTask

__all__ = ["create_model", "list_models", "ForecastDataModule", "ForecastTask", "forecast"]

_DOMAIN = "timeseries"  # the registry domain name (the CLI declaration is formers.timeseries.domain.DOMAIN)
_LAZY = {
    "ForecastDataModule": "formers.timeseries.data",
    "ForecastTask": "formers.timeseries.task",
    "forecast": "formers.timeseries.forecasting",
}


def list_models(pattern: str | None = None) -> list[str]:
    """Registered time-series model names (optionally filtered by a glob ``pattern``)."""
    return registry.list_models(pattern, domain=_DOMAIN)


def create_model(name: str, **hparams: Any) -> nn.Module:
    """Build a registered time-series model, e.g. ``create_model("itransformer", seq_len=96, pred_len=96, enc_in=7)``.

    This is :func:`formers.core.builder.build_model` restricted to the time-series models, so ``checkpoint_path=``
    loads a local checkpoint (formers Lightning ``.ckpt`` included) into the model built.

    Raises:
        ValueError: when ``name`` is not a time-series model (an unknown name, or one of another domain: the message
            says which).
    """
    from formers.core.builder import build_model  # imported on use: the formers-timeseries script starts without it

    return build_model(name, domain=_DOMAIN, **hparams)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Forecasting models (a file per family); importing this module registers ``informer``, ``autoformer`` and
``itransformer`` in the formers registry."""

from formers.timeseries.models import autoformer, informer, itransformer  # noqa: F401  (registration side effects)

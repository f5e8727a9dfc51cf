"""formers.timeseries: Time-series forecasting transformers (Informer, Autoformer, iTransformer) on the formers core."""

"""Shared layers, attention dispatch, model registry and training spine of formers."""

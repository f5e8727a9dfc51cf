"""formers-graph model families; importing this package registers them (the ``formers.models`` entry point)."""

from formers.graph.models import gps, graph_transformer, graphormer  # noqa: F401

"""formers.graph: Graph transformers (Dwivedi & Bresson Graph Transformer, Graphormer) on the formers core."""

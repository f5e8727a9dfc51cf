"""Structural encodings of graphs (PyG transforms computed once by the data-preparation stage)."""

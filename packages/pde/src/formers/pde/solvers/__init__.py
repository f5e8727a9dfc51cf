"""Numerical solvers that generate the formers-pde datasets (each module runs as ``python -m``)."""

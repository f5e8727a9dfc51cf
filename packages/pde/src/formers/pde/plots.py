"""Prediction / truth / error figures of formers-pde (``predict`` writes them; DVC shows them as image plots)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.tri import Triangulation  # noqa: E402

__all__ = ["plot_fields", "plot_point_cloud"]


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    fig.savefig(partial, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(partial, path)
    return path


def plot_fields(prediction: np.ndarray, truth: np.ndarray | None, path: Path, title: str, samples: int = 3) -> Path:
    """Rows of prediction | truth | error for the first ``samples`` samples of channels-last fields.

    1-D fields ``(N, n, C)`` are line plots (truth and prediction overlaid, error below); 2-D fields ``(N, H, W, C)``
    images (the first channel; for trajectories the last frame)."""
    count = min(samples, prediction.shape[0])
    spatial = prediction.ndim - 2
    if spatial == 1:
        fig, axes = plt.subplots(2, count, figsize=(4 * count, 5), squeeze=False)
        grid = np.linspace(0, 1, prediction.shape[1])
        for i in range(count):
            axes[0, i].plot(grid, prediction[i, :, 0], label="prediction")
            if truth is not None:
                axes[0, i].plot(grid, truth[i, :, 0], "--", label="truth")
                axes[1, i].plot(grid, prediction[i, :, 0] - truth[i, :, 0], color="tab:red")
            axes[0, i].set_title(f"sample {i}")
            axes[1, i].set_xlabel("x")
        axes[0, 0].legend()
        axes[1, 0].set_ylabel("prediction - truth")
    else:
        cols = 3 if truth is not None else 1
        fig, axes = plt.subplots(count, cols, figsize=(3.6 * cols, 3.2 * count), squeeze=False)
        for i in range(count):
            pred = prediction[i, ..., -1]
            panels = [("prediction", pred)]
            if truth is not None:
                panels += [("truth", truth[i, ..., -1]), ("error", pred - truth[i, ..., -1])]
            vmin = min(p.min() for _, p in panels[:2])
            vmax = max(p.max() for _, p in panels[:2])
            for j, (name, field) in enumerate(panels):
                if name == "error":  # diverging colours centred on zero: blue under-, red over-prediction
                    bound = float(abs(field).max()) or 1.0
                    cmap, limits = "RdBu_r", {"vmin": -bound, "vmax": bound}
                else:
                    cmap, limits = "viridis", {"vmin": vmin, "vmax": vmax}
                image = axes[i, j].imshow(field.T, origin="lower", cmap=cmap, **limits)
                axes[i, j].set_title(f"{name} {i}")
                axes[i, j].set_xticks([])
                axes[i, j].set_yticks([])
                fig.colorbar(image, ax=axes[i, j], fraction=0.046)
    fig.suptitle(title)
    return _save(fig, path)


def plot_point_cloud(
    coords: list[np.ndarray],
    prediction: list[np.ndarray],
    truth: list[np.ndarray | None],
    path: Path,
    title: str,
    cells: list[np.ndarray | None] | None = None,
    samples: int = 3,
) -> Path:
    """Prediction | truth | error on the mesh nodes (triangulated with the stored cells when given)."""
    count = min(samples, len(coords))
    cols = 3 if truth[0] is not None else 1
    fig, axes = plt.subplots(count, cols, figsize=(3.6 * cols, 3.2 * count), squeeze=False)
    for i in range(count):
        xy = coords[i]
        triangles = cells[i] if cells is not None and cells[i] is not None else None
        tri = Triangulation(xy[:, 0], xy[:, 1], triangles)
        panels = [("prediction", prediction[i][:, 0])]
        if truth[i] is not None:
            panels += [("truth", truth[i][:, 0]), ("error", prediction[i][:, 0] - truth[i][:, 0])]
        for j, (name, values) in enumerate(panels):
            limits = {}
            if name == "error":  # diverging colours centred on zero, as in plot_fields
                bound = float(abs(values).max()) or 1.0
                limits = {"vmin": -bound, "vmax": bound}
            cmap = "RdBu_r" if name == "error" else "viridis"
            image = axes[i, j].tripcolor(tri, values, shading="gouraud", cmap=cmap, **limits)
            axes[i, j].set_aspect("equal")
            axes[i, j].set_title(f"{name} {i}")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            fig.colorbar(image, ax=axes[i, j], fraction=0.046)
    fig.suptitle(title)
    return _save(fig, path)

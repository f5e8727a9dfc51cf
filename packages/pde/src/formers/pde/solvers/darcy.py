"""2-D Darcy flow on the unit square: the FNO / Galerkin-transformer Darcy benchmark data.

    -∇·(a(x) ∇u(x)) = f(x)  in (0, 1)^2,    u = 0 on the boundary,    f = 1,

mapping the coefficient ``a = psi(g)`` (``psi = 12`` where ``g >= 0``, ``3`` where ``g < 0``) of a Gaussian random
field ``g`` (:func:`formers.pde.solvers.grf.grf_neumann_2d`: covariance ``9 (-Δ + 9 I)^(-2)``, zero-Neumann
Laplacian, alpha = 2, tau = 3) to the solution ``u``, both on the ``s x s`` nodes ``(i/(s-1), j/(s-1))`` including
the boundary (``u`` is 0 there). Default ``s = 241``: subsampling ``[::2]``, ``[::4]``, ``[::8]`` gives 121, 61, 31.

Solver (:func:`solve_darcy`): second-order 5-point finite differences on the nodes, flux through each cell face with
the arithmetic mean of the two adjacent nodal coefficients, ``(a_P + a_E)/2 (u_P - u_E) / h^2`` (as
``solve_gwf.m``), the ``(s-2)^2`` interior unknowns solved by one sparse LU factorisation per sample
(``scipy.sparse.linalg.splu`` with the minimum-degree ordering on ``A^T + A``, measured faster than ``spsolve``
and than splu's default COLAMD ordering: 0.17 s vs 0.23 s at 241 x 241; a geometric nested-dissection ordering was
no faster). Validation (:func:`manufactured_errors`): with the smooth coefficient ``a = 2 + sin(2πx) cos(3πy) + xy/2``
and ``u = sin(πx) sin(2πy) e^x`` the max-norm nodal error is 2.03e-2, 5.02e-3, 1.26e-3, 3.16e-4 on 17, 33, 65, 129
points per side (ratios 4.04, 3.97, 4.00: second order).

Official scripts (zongyi-li/fourier_neural_operator @ 2421c8f, ``data_generation/darcy/``): ``demo.m`` (thresholds
12 / 4; the paper's files use 12 / 3), ``GRF.m`` (the field), ``solve_gwf.m`` (the solver). Departures: GRF.m samples
the field at cell centres and ``solve_gwf.m`` spline-interpolates the coefficient onto the nodes (which over- and
undershoots at the jumps of the two-valued field) and the solution back to the cell centres (transposed); here the
field is evaluated at the nodes themselves, thresholded there, and the nodal solution stored as is, so the stored
``a`` is exactly two-valued and ``a``, ``u`` live on the same grid. The paper's files are 421 x 421 with 1024 samples
each; the defaults here are 241 x 241, 1024 / 100 / 100 samples.

Run time (one core, measured on 8 and 32 samples): ~0.18 s CPU per 241 x 241 sample (field + assembly +
factorisation; ~0.4 s wall on the shared, loaded 2-core development machine), i.e. ~3.7 minutes CPU for the default
1224 samples; 421 x 421 costs ~0.75 s per sample. Typical solution maximum ~0.014.

CLI::

    python -m formers.pde.solvers.darcy --out data/pde/darcy.h5 [--train 1024 --val 100 --test 100 --seed 0 \
        --grid 241 --overwrite]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from tqdm import tqdm

from formers.pde.solvers.grf import grf_neumann_2d
from formers.pde.solvers.store import write_dataset

__all__ = [
    "GRF_PARAMS",
    "THRESHOLD_VALUES",
    "assemble_darcy",
    "generate",
    "main",
    "manufactured_errors",
    "solve_darcy",
    "threshold_coefficient",
]

GRF_PARAMS = {"alpha": 2.0, "tau": 3.0}
# psi(g): value where g >= 0, value where g < 0 (the paper's files; demo.m uses 12 / 4).
THRESHOLD_VALUES = (12.0, 3.0)


def threshold_coefficient(
    g: np.ndarray, high: float = THRESHOLD_VALUES[0], low: float = THRESHOLD_VALUES[1]
) -> np.ndarray:
    """``psi(g)``: ``high`` where ``g >= 0``, ``low`` elsewhere."""
    return np.where(np.asarray(g) >= 0, high, low)


def _check_grid_field(name: str, value: np.ndarray, grid: int | None = None) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != 2 or value.shape[0] != value.shape[1] or value.shape[0] < 3:
        raise ValueError(f"{name}: expected a square (s, s) nodal array with s >= 3, got shape {value.shape}")
    if grid is not None and value.shape[0] != grid:
        raise ValueError(f"{name}: expected shape ({grid}, {grid}) like the coefficient, got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name}: contains NaN or inf")
    return value


def assemble_darcy(coef: np.ndarray) -> scipy.sparse.csc_matrix:
    """The ``(s-2)^2 x (s-2)^2`` finite-difference matrix of ``-∇·(coef ∇ .)`` with zero Dirichlet data.

    ``coef``: nodal values ``(s, s)`` indexed ``[i, j]`` at ``(i h, j h)``, ``h = 1/(s-1)``; unknown ``(i, j)``
    (``1 <= i, j <= s-2``) is row ``(i-1)(s-2) + (j-1)``. Face coefficients are arithmetic means of the two nodes.
    """
    coef = _check_grid_field("coef", coef)
    if np.any(coef <= 0):
        raise ValueError("coef: expected a positive coefficient everywhere (the problem is otherwise not elliptic)")
    s = coef.shape[0]
    m = s - 2
    inv_h2 = float((s - 1) ** 2)
    face_x = 0.5 * (coef[:-1, :] + coef[1:, :])  # face_x[i, j] between nodes (i, j) and (i+1, j)
    face_y = 0.5 * (coef[:, :-1] + coef[:, 1:])  # face_y[i, j] between nodes (i, j) and (i, j+1)
    diag = face_x[:-1, 1:-1] + face_x[1:, 1:-1] + face_y[1:-1, :-1] + face_y[1:-1, 1:]  # (m, m)
    # Couplings between interior neighbours only; boundary neighbours (u = 0) add nothing to the right-hand side.
    east = face_x[1:-1, 1:-1]  # (m-1, m): (i, j) <-> (i+1, j), i = 1..m-1
    north = face_y[1:-1, 1:-1]  # (m, m-1): (i, j) <-> (i, j+1), j = 1..m-1
    index = np.arange(m * m).reshape(m, m)
    rows = np.concatenate(
        [index.ravel(), index[:-1, :].ravel(), index[1:, :].ravel(), index[:, :-1].ravel(), index[:, 1:].ravel()]
    )
    cols = np.concatenate(
        [index.ravel(), index[1:, :].ravel(), index[:-1, :].ravel(), index[:, 1:].ravel(), index[:, :-1].ravel()]
    )
    vals = np.concatenate([diag.ravel(), -east.ravel(), -east.ravel(), -north.ravel(), -north.ravel()]) * inv_h2
    return scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(m * m, m * m))


def solve_darcy(coef: np.ndarray, rhs: float | np.ndarray = 1.0) -> np.ndarray:
    """Solve ``-∇·(coef ∇u) = rhs`` on the unit square with ``u = 0`` on the boundary; return nodal ``u`` ``(s, s)``.

    ``coef``: positive nodal coefficient ``(s, s)`` (any positive field, not only the two-valued one); ``rhs``: a
    number or nodal values ``(s, s)`` (only the interior ones are used).
    """
    coef = _check_grid_field("coef", coef)
    s = coef.shape[0]
    if np.ndim(rhs) == 0:
        rhs_interior = np.full((s - 2) * (s - 2), float(rhs))
    else:
        rhs_interior = _check_grid_field("rhs", rhs, s)[1:-1, 1:-1].ravel()
    matrix = assemble_darcy(coef)
    lu = scipy.sparse.linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = lu.solve(rhs_interior).reshape(s - 2, s - 2)
    return u


def _manufactured(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``u = sin(πx) sin(2πy) e^{x}``-type smooth solution vanishing on the boundary, a smooth positive coefficient,
    and ``f = -∇·(a∇u)`` computed by hand."""
    pi = np.pi
    a = 2.0 + np.sin(2 * pi * x) * np.cos(3 * pi * y) + 0.5 * x * y
    a_x = 2 * pi * np.cos(2 * pi * x) * np.cos(3 * pi * y) + 0.5 * y
    a_y = -3 * pi * np.sin(2 * pi * x) * np.sin(3 * pi * y) + 0.5 * x
    sx, cx, sy, cy = np.sin(pi * x), np.cos(pi * x), np.sin(2 * pi * y), np.cos(2 * pi * y)
    ex = np.exp(x)
    u = sx * sy * ex
    u_x = (pi * cx + sx) * sy * ex
    u_xx = (-(pi**2) * sx + 2 * pi * cx + sx) * sy * ex
    u_y = 2 * pi * sx * cy * ex
    u_yy = -4 * pi**2 * u
    f = -(a_x * u_x + a * u_xx + a_y * u_y + a * u_yy)
    return u, a, f


def manufactured_errors(grids: Sequence[int] = (17, 33, 65, 129)) -> dict[int, float]:
    """Max-norm nodal errors of :func:`solve_darcy` on a manufactured smooth problem, per grid size ``s``."""
    errors = {}
    for s in grids:
        x, y = np.meshgrid(np.linspace(0, 1, s), np.linspace(0, 1, s), indexing="ij")
        u, a, f = _manufactured(x, y)
        errors[int(s)] = float(np.abs(solve_darcy(a, f) - u).max())
    return errors


def _split_seeds(seed: int, splits: Sequence[str]) -> dict[str, np.random.SeedSequence]:
    """Independent streams per split, derived from ``seed`` (a split's data does not depend on the others' sizes)."""
    return dict(zip(splits, np.random.SeedSequence(seed).spawn(len(splits)), strict=True))


def generate(
    out: str | Path,
    sizes: dict[str, int],
    *,
    seed: int = 0,
    grid: int = 241,
    chunk: int = 16,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate the Darcy dataset into the HDF5 file ``out`` (splits ``sizes``, e.g. ``{"train": 1024, ...}``).

    Each split draws from its own stream (:func:`_split_seeds`); fields are drawn ``chunk`` at a time, which does not
    change them (the normal variates are consumed in the same order).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if chunk < 1:
        raise ValueError(f"chunk: expected a positive number of samples per batch, got {chunk}")
    for name, size in sizes.items():
        if size < 1:
            raise ValueError(f"sizes[{name!r}]: expected a positive number of samples, got {size}")
    seeds = _split_seeds(seed, list(sizes))
    start = time.perf_counter()
    splits: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(total=sum(sizes.values()), desc=f"darcy {out.name}", unit="sample", disable=not progress) as bar:
        for name, size in sizes.items():
            rng = np.random.default_rng(seeds[name])
            a = np.empty((size, grid, grid), dtype=np.float32)
            u = np.empty((size, grid, grid), dtype=np.float32)
            for lo in range(0, size, chunk):
                coef = threshold_coefficient(grf_neumann_2d(rng, min(chunk, size - lo), grid, **GRF_PARAMS))
                for k, c in enumerate(coef):
                    a[lo + k] = c
                    u[lo + k] = solve_darcy(c)
                    bar.update(1)
            splits[name] = {"a": a, "u": u}
    attrs = {
        "equation": "darcy: -div(a grad u) = 1 on (0,1)^2, u = 0 on the boundary, a = psi(g) -> u",
        "solver": "formers.pde.solvers.darcy: 5-point finite differences, arithmetic-mean face coefficients, "
        "sparse LU (scipy splu), float64",
        "forcing": 1.0,
        "fine_grid": grid,
        "grid": "nodes (i/(fine_grid-1), j/(fine_grid-1)), i, j = 0..fine_grid-1, boundary included; arrays [n, i, j]",
        "grf": "N(0, tau^(2 alpha - 2) (-Laplacian + tau^2 I)^(-alpha)), zero Neumann, constant mode 0 (GRF.m)",
        "grf_alpha": GRF_PARAMS["alpha"],
        "grf_tau": GRF_PARAMS["tau"],
        "coefficient_high": THRESHOLD_VALUES[0],
        "coefficient_low": THRESHOLD_VALUES[1],
        "seed": seed,
        "seed_derivation": "numpy SeedSequence(seed).spawn(number of splits), in the order of split_names",
        "split_names": list(sizes),
        "generated_seconds": time.perf_counter() - start,
    }
    return write_dataset(out, splits, attrs, overwrite=overwrite, compress=("a",))


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m formers.pde.solvers.darcy", description="Generate the 2-D Darcy (12 / 3 coefficient) dataset."
    )
    parser.add_argument("--out", required=True, type=Path, help="output HDF5 file")
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=int, default=241, help="fine grid: nodes per side, boundary included")
    parser.add_argument("--chunk", type=int, default=16, help="random fields drawn together")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    path = generate(
        args.out,
        {"train": args.train, "val": args.val, "test": args.test},
        seed=args.seed,
        grid=args.grid,
        chunk=args.chunk,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()

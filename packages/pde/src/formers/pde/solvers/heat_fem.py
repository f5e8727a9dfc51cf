"""Steady heat conduction on random 2-D domains (a multi-input point-cloud problem for GNOT), P1 finite elements.

Equation, on a random domain Ω (star-shaped, optionally with a circular hole)::

    −∇·(k ∇u) = f  in Ω,        u = g  on ∂Ω (outer boundary and hole)

with a scalar conductivity k (the global parameter θ), a smooth random source f (a few Gaussian bumps) and smooth
random Dirichlet values g (a random low-frequency function of (x, y) restricted to ∂Ω).

GNOT's "Heat" benchmark (thu-ml/GNOT @ 5ee2e69: several input functions on irregular, ragged meshes; the repository
only loads it as the ``heat2d`` MIODataset pickle and ships no generator) is the model; this module makes data of the
same kind with scikit-fem, on its own geometry and input laws (nothing of the official data is reproduced):

- **Geometry**: outer boundary ``r = R(φ) = 1 + Σ_{m=2..5} (a_m cos mφ + b_m sin mφ)`` (``|a_m|, |b_m| <= 0.12/m``,
  so 0.78 < R < 1.22); with probability ``hole_probability`` a circular hole of radius ``r_h ∈ [0.15, 0.3]`` centred at
  a random ``c`` (``|c| <= 0.2``). Without a hole, skfem's ``MeshTri.init_circle`` mesh is warped radially, ``p ↦
  R(φ) p``; with a hole, a reference annulus mesh (``r_h <= |p| <= 1``) is mapped by the transfinite blend ``(1 − s)
  (c + r_h e_φ) + s R(φ) e_φ`` (``s = (ρ − r_h)/(1 − r_h)``), which puts the hole's nodes exactly on its circle.
  The reference annulus has log-polar rings (near-equilateral triangles, graded towards the hole). Before the map
  the reference mesh is refined adaptively (skfem's ``refined(marked)``, boundary nodes put back on their circles
  after every round) around random focus points until it has a random target number of nodes drawn from U[300,
  2000], so meshes are ragged (measured: 313..2091 nodes, 35..155 boundary nodes) and graded. Every element's
  orientation and minimum angle (>= 10°; measured >= 18°) are checked after the map.
- **Inputs**: ``g(x, y) = Σ_{j<3} a_j sin(ω_j·(x, y) + ϕ_j)`` with ``|ω_j| ∈ [0.5, 2.5]``, ``a_j ~ N(0, 1/3)``;
  ``f(x) = Σ_j A_j exp(−|x − x_j|²/(2 s_j²))`` with 1..4 bumps, ``A_j ~ ±U[5, 30]``, ``s_j ∈ [0.08, 0.25]``, centres
  inside Ω; ``k`` log-uniform in [0.5, 2].
- **Discretisation**: P1 Lagrange elements, f integrated at the quadrature points (not interpolated), g imposed at
  the boundary nodes, sparse direct solve (:func:`skfem.solve` after :func:`skfem.condense`).

Stored (:func:`formers.pde.solvers.store.write_dataset`, ragged layout of the formers-pde data format), per split:
``coords (Σn, 2)`` node coordinates with ``offsets (N+1,)``; ``f_boundary (Σm, 3)`` rows ``(x, y, g)`` on the
boundary nodes with ``f_boundary_offsets``; ``f_source (Σn, 3)`` rows ``(x, y, f)`` on every node with
``f_source_offsets``; ``target (Σn, 1)`` = u at the nodes; ``params (N, 1)`` = k; ``cells (Σt, 3)`` int32 triangles
(counter-clockwise, node indices local to the sample) with ``cells_offsets``; ``boundary_nodes (Σm,)`` int32 (the
local indices of the boundary rows) with ``boundary_nodes_offsets``. File attrs: ``equation, solver, seed,
element, params, inputs, conductivity_range, nodes_range, nodes_min, nodes_max, hole_probability, fine_grid
("mesh"), generated_seconds``.

Validation (:func:`convergence_study`, tested in ``tests/pde/test_solvers_ns_heat.py``): with the manufactured
solution ``u = sin(2x) e^y + x²`` (f, g to match) on a fixed star domain with an off-centre hole, five uniform
refinements give L2 errors 7.4e-3 -> 2.9e-5 at rates 2.08, 2.04, 2.02, 2.01 and H1-seminorm errors 0.25 -> 0.016
at rates 1.04, 1.02, 1.01, 1.00 (without the hole: 2.05 .. 2.01 and 1.02 .. 1.00).

Measured (``OMP_NUM_THREADS=1``): about 60 ms per sample with the 2-core development machine shared by ~5 other
jobs (200 samples in 12.0 s), i.e. about 75 s for the default 1000 / 100 / 100 samples; the file is about 71 MB
(11.8 MB per 200 samples; on average 1220 nodes and 2350 triangles per sample). Values: u has standard deviation
0.7 (max |u| about 4), g 0.7, f 4.8.

Run: ``python -m formers.pde.solvers.heat_fem --out data/pde/heat.h5 [--train 1000 --val 100 --test 100 --seed 0
--overwrite]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skfem import Basis, ElementTriP1, Functional, LinearForm, MeshTri, condense, solve
from skfem.models.poisson import laplace
from tqdm.auto import tqdm

__all__ = [
    "Geometry",
    "HeatSample",
    "convergence_study",
    "generate_dataset",
    "main",
    "make_mesh",
    "pack_samples",
    "random_geometry",
    "random_sample",
    "reference_mesh",
    "sample_rng",
    "solve_heat",
]

SPLITS = ("train", "val", "test")
FIELD = Callable[[np.ndarray], np.ndarray]  # (2, ...) coordinates -> (...) values


@dataclass(frozen=True)
class Geometry:
    """A random domain: outer radius ``R(φ) = 1 + Σ_m cos_m[m-2] cos mφ + sin_m[m-2] sin mφ`` (m = 2, 3, ...),
    optionally a hole of radius ``hole_radius`` centred at ``hole_center`` (``hole_radius = 0``: no hole)."""

    cos_m: np.ndarray
    sin_m: np.ndarray
    hole_center: tuple[float, float] = (0.0, 0.0)
    hole_radius: float = 0.0

    def radius(self, phi: np.ndarray) -> np.ndarray:
        m = np.arange(2, 2 + len(self.cos_m))[:, None]
        phi = np.asarray(phi)[None]
        return 1.0 + (self.cos_m[:, None] * np.cos(m * phi) + self.sin_m[:, None] * np.sin(m * phi)).sum(0)


def random_geometry(rng: np.random.Generator, *, hole_probability: float = 0.5, modes: int = 4) -> Geometry:
    """Draw the outer boundary's Fourier modes and (with ``hole_probability``) a hole, as in the module docstring."""
    m = np.arange(2, 2 + modes)
    cos_m, sin_m = (rng.uniform(-0.12, 0.12, modes) / m for _ in range(2))
    if rng.random() >= hole_probability:
        return Geometry(cos_m, sin_m)
    angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.2)
    return Geometry(cos_m, sin_m, (dist * math.cos(angle), dist * math.sin(angle)), float(rng.uniform(0.15, 0.3)))


# ---- meshes


def _annulus_mesh(inner: float, per_ring: int = 24) -> MeshTri:
    """Reference annulus ``inner <= |p| <= 1`` on log-polar rings: ``per_ring`` nodes per circle, radii in geometric
    progression with ratio about ``exp(√3/2 · 2π/per_ring)`` and alternate rings shifted by half a step, so every
    triangle is close to equilateral and the mesh is graded towards the hole."""
    if not 0 < inner < 1:
        raise ValueError(f"inner: expected a radius in (0, 1), got {inner}")
    rings = max(1, math.ceil(-math.log(inner) / (math.sqrt(3) / 2 * 2 * math.pi / per_ring)))
    rho = inner ** (1.0 - np.arange(rings + 1) / rings)
    phi = 2 * math.pi * (np.arange(per_ring)[None, :] + 0.5 * (np.arange(rings + 1)[:, None] % 2)) / per_ring
    points = np.stack([rho[:, None] * np.cos(phi), rho[:, None] * np.sin(phi)]).reshape(2, -1)
    node = np.arange((rings + 1) * per_ring).reshape(rings + 1, per_ring)
    tris = []
    for i in range(rings):
        a, b = node[i], node[i + 1]
        a1, b1 = np.roll(a, -1), np.roll(b, -1)
        if i % 2 == 0:  # ring i+1 is shifted forward: b[j] sits between a[j] and a1[j]
            tris += [np.stack([a, a1, b]), np.stack([a1, b1, b])]
        else:  # ring i is the shifted one: a[j] sits between b[j] and b1[j]
            tris += [np.stack([a, b1, b]), np.stack([a, a1, b1])]
    t = np.concatenate(tris, axis=1)
    area, _ = _min_angles(points, t)
    t[[1, 2]] = np.where(area < 0, t[[2, 1]], t[[1, 2]])  # counter-clockwise
    return MeshTri(points, t, sort_t=False)


def reference_mesh(rng: np.random.Generator, target_nodes: int, *, inner: float | None, max_rounds: int = 8) -> MeshTri:
    """Unit disc (skfem ``init_circle(3)``, ``inner=None``) or annulus ``inner <= |p| <= 1``, refined around random
    focus points until it has at least ``target_nodes`` nodes (each round marks half as many elements as nodes are
    still missing, nearest to the focus first: a refined element and its closure add about two nodes)."""
    mesh = MeshTri.init_circle(3) if inner is None else _annulus_mesh(inner)
    for _ in range(max_rounds):
        missing = target_nodes - mesh.p.shape[1]
        if missing <= 0:
            break
        focus = rng.uniform(-0.8, 0.8, size=(2, 1))
        centroids = mesh.p[:, mesh.t].mean(axis=1)
        order = np.argsort(np.linalg.norm(centroids - focus, axis=0) + rng.uniform(0, 0.3, mesh.t.shape[1]))
        mesh = _refine(mesh, order[: max(1, math.ceil(missing / 2))], inner)
    return mesh


def _refine(mesh: MeshTri, marked: int | np.ndarray, inner: float | None) -> MeshTri:
    """``mesh.refined(marked)`` with the new boundary nodes moved onto the reference circles: projecting only at the
    end would leave boundary elements distorted by the coarse mesh's sagitta, which fine meshes do not shrink (and
    the L2 rate drops below 2)."""
    if isinstance(marked, int):
        for _ in range(marked):
            mesh = _refine(mesh, np.arange(mesh.t.shape[1]), inner)
        return mesh
    fine = mesh.refined(marked)
    return MeshTri(_project_reference_boundary(fine, inner), fine.t, sort_t=False)


def _project_reference_boundary(mesh: MeshTri, inner: float | None) -> np.ndarray:
    """Reference points with the boundary nodes put back on their circles (refinement adds chord midpoints)."""
    p = mesh.p.copy()
    b = mesh.boundary_nodes()
    rho = np.linalg.norm(p[:, b], axis=0)
    target = np.ones_like(rho) if inner is None else np.where(rho > 0.5 * (1 + inner), 1.0, inner)
    p[:, b] *= target / rho
    return p


def _min_angles(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed areas (positive = counter-clockwise) and minimum angles (degrees) of triangles ``t`` on points ``p``."""
    a, b, c = (p[:, t[i]] for i in range(3))
    area = 0.5 * ((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    angles = []
    for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
        e1, e2 = v - u, w - u
        cos = (e1 * e2).sum(0) / (np.linalg.norm(e1, axis=0) * np.linalg.norm(e2, axis=0))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return area, np.min(angles, axis=0)


def _map_to_domain(geometry: Geometry, p: np.ndarray) -> np.ndarray:
    """Reference points (unit disc, or the annulus ``r_h <= ρ <= 1`` when the geometry has a hole of radius ``r_h``)
    -> points of Ω: ``ρ R(φ) e_φ``, or the blend ``(1 − s)(c + r_h e_φ) + s R(φ) e_φ`` with ``s = (ρ − r_h)/(1 −
    r_h)`` (the identity plus a smooth shift when R ≈ 1 and c ≈ 0)."""
    rho, phi = np.linalg.norm(p, axis=0), np.arctan2(p[1], p[0])
    e_phi = np.stack([np.cos(phi), np.sin(phi)])
    outer = geometry.radius(phi) * e_phi
    r_h = geometry.hole_radius
    if r_h <= 0:
        return rho * outer
    s = (rho - r_h) / (1.0 - r_h)
    return (1 - s) * (np.asarray(geometry.hole_center)[:, None] + r_h * e_phi) + s * outer


def make_mesh(geometry: Geometry, rng: np.random.Generator, target_nodes: int, *, min_angle: float = 10.0) -> MeshTri:
    """The physical mesh of ``geometry``: a refined reference mesh (:func:`reference_mesh`) mapped onto Ω.

    Raises ``ValueError`` if the map folds an element or leaves an angle below ``min_angle`` degrees.
    """
    inner = geometry.hole_radius if geometry.hole_radius > 0 else None
    ref = reference_mesh(rng, target_nodes, inner=inner)
    x = _map_to_domain(geometry, ref.p)
    t = ref.t.copy()
    area, angle = _min_angles(x, t)
    ref_area, _ = _min_angles(ref.p, t)
    if np.any(np.sign(area) != np.sign(ref_area)) or np.any(area == 0):
        raise ValueError("geometry: the map onto the domain folds an element (hole too large or too off-centre)")
    if angle.min() < min_angle:
        raise ValueError(f"geometry: a mapped element has an angle of {angle.min():.1f} deg < min_angle = {min_angle}")
    t[[1, 2]] = np.where(area < 0, t[[2, 1]], t[[1, 2]])  # counter-clockwise
    return MeshTri(x, t, sort_t=False)


# ---- the solve


def solve_heat(mesh: MeshTri, conductivity: float, source: FIELD, boundary: FIELD, *, intorder: int = 4) -> np.ndarray:
    """P1 solution of ``−∇·(k∇u) = f`` with ``u = g`` on the boundary nodes; returns u at the mesh nodes.

    ``source``/``boundary`` map ``(2, ...)`` coordinates to values; f is integrated at ``intorder`` quadrature points.
    """
    if not conductivity > 0:
        raise ValueError(f"conductivity: expected > 0, got {conductivity}")
    basis = Basis(mesh, ElementTriP1(), intorder=intorder)

    @LinearForm
    def load(v, w):
        return source(w.x) * v

    stiffness = conductivity * laplace.assemble(basis)
    rhs = load.assemble(basis)
    dofs = mesh.boundary_nodes()
    u = np.zeros(mesh.p.shape[1])
    u[dofs] = boundary(mesh.p[:, dofs])
    return solve(*condense(stiffness, rhs, x=u, D=dofs))


@dataclass
class HeatSample:
    """One solved sample (arrays as stored, before packing)."""

    coords: np.ndarray  # (n, 2)
    cells: np.ndarray  # (t, 3) int32, counter-clockwise
    boundary_nodes: np.ndarray  # (m,) int32
    f_boundary: np.ndarray  # (m, 3) rows (x, y, g)
    f_source: np.ndarray  # (n, 3) rows (x, y, f)
    target: np.ndarray  # (n, 1)
    params: np.ndarray  # (1,) conductivity


def _random_boundary_values(rng: np.random.Generator, terms: int = 3) -> FIELD:
    freq = rng.normal(size=(terms, 2))
    freq *= rng.uniform(0.5, 2.5, (terms, 1)) / np.linalg.norm(freq, axis=1, keepdims=True)
    phase, amp = rng.uniform(0, 2 * math.pi, terms), rng.normal(0, 1 / math.sqrt(terms), terms)

    def g(x: np.ndarray) -> np.ndarray:
        return sum(amp[j] * np.sin(freq[j, 0] * x[0] + freq[j, 1] * x[1] + phase[j]) for j in range(terms))

    return g


def _random_source(rng: np.random.Generator, mesh: MeshTri) -> FIELD:
    bumps = int(rng.integers(1, 5))
    area, _ = _min_angles(mesh.p, mesh.t)
    cells = rng.choice(mesh.t.shape[1], size=bumps, p=np.abs(area) / np.abs(area).sum())
    centres = mesh.p[:, mesh.t[:, cells]].mean(axis=1)  # (2, bumps), inside the domain
    amp = rng.choice([-1.0, 1.0], bumps) * rng.uniform(5, 30, bumps)
    width = rng.uniform(0.08, 0.25, bumps)

    def f(x: np.ndarray) -> np.ndarray:
        out = np.zeros(x.shape[1:])
        for j in range(bumps):
            d2 = (x[0] - centres[0, j]) ** 2 + (x[1] - centres[1, j]) ** 2
            out += amp[j] * np.exp(-d2 / (2 * width[j] ** 2))
        return out

    return f


def random_sample(
    rng: np.random.Generator,
    *,
    nodes: tuple[int, int] = (300, 2000),
    hole_probability: float = 0.5,
    conductivity: tuple[float, float] = (0.5, 2.0),
    max_tries: int = 20,
) -> HeatSample:
    """Draw a geometry, mesh, k, f and g from ``rng`` and solve (see the module docstring for the laws)."""
    for _ in range(max_tries):
        geometry = random_geometry(rng, hole_probability=hole_probability)
        target_nodes = int(rng.integers(nodes[0], nodes[1] + 1))
        try:
            mesh = make_mesh(geometry, rng, target_nodes)
        except ValueError:
            continue  # a rare fold or sliver: draw another domain
        break
    else:
        raise RuntimeError(f"random_sample: no valid mesh in {max_tries} tries")
    k = float(math.exp(rng.uniform(math.log(conductivity[0]), math.log(conductivity[1]))))
    g, f = _random_boundary_values(rng), _random_source(rng, mesh)
    u = solve_heat(mesh, k, f, g)
    xy = mesh.p.T
    bnd = mesh.boundary_nodes()
    return HeatSample(
        coords=xy,
        cells=mesh.t.T.astype(np.int32),
        boundary_nodes=bnd.astype(np.int32),
        f_boundary=np.column_stack([xy[bnd], g(mesh.p[:, bnd])]),
        f_source=np.column_stack([xy, f(mesh.p)]),
        target=u[:, None],
        params=np.array([k]),
    )


# ---- validation


def convergence_study(
    levels: Sequence[int] = (2, 3, 4, 5), *, conductivity: float = 1.3, hole: bool = True
) -> dict[str, np.ndarray]:
    """Manufactured solution ``u = sin(2x) e^y + x²`` (``f = k (3 sin(2x) e^y − 2)``, ``g = u``) on a fixed star
    domain (with a hole if ``hole``), meshed by uniformly refining the reference mesh ``levels`` times.

    Returns ``h`` (max edge length), ``l2`` and ``h1`` (seminorm) errors per level, and the observed ``l2_rate`` and
    ``h1_rate`` between consecutive levels (expected 2 and 1 for P1).
    """
    geometry = Geometry(np.array([0.08, -0.03, 0.02]), np.array([0.0, 0.05, -0.02]), (0.1, -0.05), 0.25 if hole else 0)

    def exact(x):
        return np.sin(2 * x[0]) * np.exp(x[1]) + x[0] ** 2

    def source(x):
        return conductivity * (3 * np.sin(2 * x[0]) * np.exp(x[1]) - 2)

    h, l2, h1 = [], [], []
    for level in levels:
        inner = geometry.hole_radius if hole else None
        ref = _refine(MeshTri.init_circle(3) if inner is None else _annulus_mesh(inner), level, inner)
        x = _map_to_domain(geometry, ref.p)
        mesh = MeshTri(x, ref.t)
        uh = solve_heat(mesh, conductivity, source, exact)
        basis = Basis(mesh, ElementTriP1(), intorder=6)
        uh_q = basis.interpolate(uh)

        @Functional
        def l2_err(w):
            return (w["uh"] - exact(w.x)) ** 2

        @Functional
        def h1_err(w):
            du = (2 * np.cos(2 * w.x[0]) * np.exp(w.x[1]) + 2 * w.x[0], np.sin(2 * w.x[0]) * np.exp(w.x[1]))
            return (w["uh"].grad[0] - du[0]) ** 2 + (w["uh"].grad[1] - du[1]) ** 2

        l2.append(math.sqrt(l2_err.assemble(basis, uh=uh_q)))
        h1.append(math.sqrt(h1_err.assemble(basis, uh=uh_q)))
        edges = mesh.p[:, mesh.facets]
        h.append(float(np.linalg.norm(edges[:, 0] - edges[:, 1], axis=0).max()))
    h_, l2_, h1_ = np.asarray(h), np.asarray(l2), np.asarray(h1)
    return {
        "h": h_,
        "l2": l2_,
        "h1": h1_,
        "l2_rate": np.log(l2_[:-1] / l2_[1:]) / np.log(h_[:-1] / h_[1:]),
        "h1_rate": np.log(h1_[:-1] / h1_[1:]) / np.log(h_[:-1] / h_[1:]),
    }


# ---- dataset


def sample_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of split number ``split`` (0 train, 1 val, 2 test): samples do not depend
    on each other, so any subset can be regenerated alone."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(split), int(index)]))


def pack_samples(samples: Sequence[HeatSample]) -> dict[str, np.ndarray]:
    """The ragged arrays of one split (see the module docstring)."""
    from formers.pde.solvers.store import pack_ragged

    out: dict[str, np.ndarray] = {}
    out["coords"], out["offsets"] = pack_ragged([s.coords for s in samples])
    for name in ("f_boundary", "f_source", "cells", "boundary_nodes"):
        out[name], out[f"{name}_offsets"] = pack_ragged([getattr(s, name) for s in samples])
    out["target"], target_offsets = pack_ragged([s.target for s in samples])
    if not np.array_equal(target_offsets, out["offsets"]):
        raise AssertionError("target and coords must have the same rows per sample")
    out["params"] = np.stack([s.params for s in samples])
    return out


def generate_dataset(
    out: str | Path,
    *,
    n_train: int = 1000,
    n_val: int = 100,
    n_test: int = 100,
    seed: int = 0,
    nodes: tuple[int, int] = (300, 2000),
    hole_probability: float = 0.5,
    conductivity: tuple[float, float] = (0.5, 2.0),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Solve ``n_train + n_val + n_test`` random samples and write them with ``store.write_dataset``."""
    from formers.pde.solvers.store import write_dataset

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in counts.items():
        if n < 0:
            raise ValueError(f"n_{name}: expected >= 0 samples, got {n}")
    if not any(counts.values()):
        raise ValueError("n_train, n_val, n_test: expected at least one sample in total")
    if not 3 <= nodes[0] <= nodes[1]:
        raise ValueError(f"nodes: expected a range (lo, hi) with 3 <= lo <= hi, got {nodes}")
    if not 0 < conductivity[0] <= conductivity[1]:
        raise ValueError(f"conductivity: expected a range (lo, hi) with 0 < lo <= hi, got {conductivity}")
    if not 0 <= hole_probability <= 1:
        raise ValueError(f"hole_probability: expected a probability, got {hole_probability}")
    start = time.perf_counter()
    splits: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(total=sum(counts.values()), unit="sample", disable=not progress, desc="heat_fem") as bar:
        for split_index, (name, n) in enumerate(counts.items()):
            if n == 0:
                continue
            samples = []
            for i in range(n):
                rng = sample_rng(seed, split_index, i)
                samples.append(
                    random_sample(rng, nodes=nodes, hole_probability=hole_probability, conductivity=conductivity)
                )
                bar.update(1)
            splits[name] = pack_samples(samples)
    seconds = time.perf_counter() - start
    node_counts = np.concatenate([np.diff(s["offsets"]) for s in splits.values()])
    attrs: dict[str, Any] = {
        "equation": "-div(k grad u) = f in Omega, u = g on the boundary (outer and hole)",
        "solver": "scikit-fem P1 finite elements, sparse direct solve (formers.pde.solvers.heat_fem)",
        "element": "P1 (ElementTriP1)",
        "seed": int(seed),
        "params": "k (scalar conductivity)",
        "conductivity_range": np.asarray(conductivity, dtype=np.float64),
        "nodes_range": np.asarray(nodes, dtype=np.int64),
        "nodes_min": int(node_counts.min()),
        "nodes_max": int(node_counts.max()),
        "hole_probability": float(hole_probability),
        "inputs": ["f_boundary: (x, y, g) on boundary nodes", "f_source: (x, y, f) on all nodes"],
        "fine_grid": "mesh",
        "generated_seconds": float(seconds),
    }
    write_dataset(out, splits, attrs, overwrite=overwrite)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m formers.pde.solvers.heat_fem", description="Generate the irregular-domain steady heat dataset."
    )
    parser.add_argument("--out", type=Path, required=True, help="HDF5 file to write (e.g. data/pde/heat.h5)")
    parser.add_argument("--train", type=int, default=1000, help="training samples")
    parser.add_argument("--val", type=int, default=100, help="validation samples")
    parser.add_argument("--test", type=int, default=100, help="test samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-nodes", type=int, default=300, help="smallest target node count of a mesh")
    parser.add_argument("--max-nodes", type=int, default=2000, help="largest target node count of a mesh")
    parser.add_argument("--hole-probability", type=float, default=0.5)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = parser.parse_args(argv)
    out = generate_dataset(
        args.out,
        n_train=args.train,
        n_val=args.val,
        n_test=args.test,
        seed=args.seed,
        nodes=(args.min_nodes, args.max_nodes),
        hole_probability=args.hole_probability,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()

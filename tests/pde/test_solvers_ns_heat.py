"""The Kolmogorov-flow and irregular-domain heat generators: solver accuracy against exact solutions and the official
arithmetic, conservation laws, determinism, the ragged HDF5 layout and the CLIs (tiny sizes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from formers.pde.solvers import heat_fem, kolmogorov, store
from formers.pde.solvers.kolmogorov import KolmogorovSolver

# --------------------------------------------------------------------------------------------------- Kolmogorov flow


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    return torch.meshgrid(x, x, indexing="ij")


def test_taylor_green_decays_exactly():
    """A single-shell vortex has u·∇w = 0: the full stepper must decay it as exp(−ν|k|² t); what is left is
    Crank–Nicolson's own error t (ν|k|²)³ dt² / 12 (so it also scales as dt²)."""
    assert kolmogorov.taylor_green_decay_error() < 1e-10
    nu_k2 = (2**2 + 1**2) / 100.0
    for dt in (2e-2, 1e-2):
        predicted = (nu_k2**3) * dt**2 / 12.0
        assert kolmogorov.taylor_green_decay_error(dt=dt) == pytest.approx(predicted, rel=0.02)


def test_unforced_decay_is_monotone_and_inviscid_limit_conserves():
    viscous = kolmogorov.unforced_decay_check(size=32, re=200.0, steps=100, dt=5e-3)
    for name in ("energy", "enstrophy"):
        values = viscous[name]
        assert np.all(np.diff(values) <= 1e-14 * values[0]), name
    assert viscous["enstrophy"][-1] < 0.95 * viscous["enstrophy"][0]
    # without viscosity the dealiased nonlinear term conserves both invariants; Heun's error is O(dt^3) per step
    inviscid = kolmogorov.unforced_decay_check(size=32, re=1e12, steps=100, dt=5e-3)
    for name in ("energy", "enstrophy"):
        values = inviscid[name]
        assert abs(values[-1] / values[0] - 1) < 1e-5, name


def test_velocity_is_divergence_free_and_curl_is_vorticity():
    solver = KolmogorovSolver(32, 100.0)
    w = kolmogorov.gaussian_random_field(32, [kolmogorov.trajectory_generator(1, 0, i) for i in range(2)])
    check = kolmogorov.velocity_check(solver, w)
    assert check["divergence"] < 1e-14 and check["curl_error"] < 1e-13


def test_explicit_term_is_minus_advection_plus_forcing():
    """w = cos x + cos 2y: ψ = cos x + cos(2y)/4, u = ψ_y = −sin(2y)/2, v = −ψ_x = sin x, so
    −u·∇w = −1.5 sin x sin 2y; the forcing adds −n cos(n y) (y = the last axis)."""
    size, n = 32, 3
    X, Y = _grid(size)
    solver = KolmogorovSolver(size, 100.0, forcing_wavenumber=n)
    term = solver.to_physical(solver.explicit_term(solver.to_spectral((torch.cos(X) + torch.cos(2 * Y))[None])))[0]
    expected = 1.5 * torch.sin(X) * torch.sin(2 * Y) - n * torch.cos(n * Y)
    assert (term - expected).abs().max() < 1e-12


def _official_step(w: np.ndarray, re: float, n: int, dt: float) -> np.ndarray:
    """One step of FactFormer's ``KolmogorovFlow2d.advance`` (dataset/kolmogorov.py @ c9801d1), step by step in
    numpy: full fft2 state, k_y along the last axis, drag 0.1, forcing at [0, ±n], Heun inner step, CN solves,
    dealiasing of the state after the step, ``vorticity()`` by irfft2 of the half spectrum."""
    s = w.shape[-1]
    k = np.concatenate([np.arange(0, s // 2), np.arange(-s // 2, 0)]).astype(np.float64)
    k_y = np.tile(k, (s, 1))
    k_x = k_y.T.copy()
    lap = k_x**2 + k_y**2
    lap[0, 0] = 1.0
    inv_lap = 1.0 / lap
    linear = (1.0 / re) * (k_x**2 + k_y**2) + 0.1
    dealias = (k_x**2 + k_y**2 <= (s / 3.0) ** 2).astype(np.float64)
    dealias[0, 0] = 0.0

    def irfft2(x):
        return np.fft.irfft2(x[:, : s // 2 + 1], s=(s, s))

    def explicit(w_h):
        w_phys = np.fft.ifft2(w_h)
        psi = inv_lap * w_h
        q, v = irfft2(psi * 1j * k_y), irfft2(psi * -1j * k_x)
        nonlin = -1j * (k_x * np.fft.fft2(q * w_phys) + k_y * np.fft.fft2(v * w_phys))
        nonlin[0, n] -= n / 2.0 * s**2
        nonlin[0, -n] -= n / 2.0 * s**2
        return nonlin

    w_h = np.fft.fft2(w)
    g = w_h - 0.5 * dt * linear * w_h
    h1 = explicit(w_h)
    w_tilde = (g + dt * h1) / (1 + 0.5 * dt * linear)
    h2 = 0.5 * (explicit(w_tilde) + h1)
    w_h = (g + dt * h2) / (1 + 0.5 * dt * linear) * dealias
    return irfft2(w_h)


def test_one_step_equals_official_arithmetic():
    """On a field band-limited to |k| <= s/6 (so that where the 2/3 mask is applied cannot matter for one step: this
    module masks each explicit term, the official code only the state) one step equals the official one."""
    size, re, n, dt = 48, 250.0, 4, 1e-2
    w0 = kolmogorov.gaussian_random_field(size, [kolmogorov.trajectory_generator(5, 0, 0)])[0]
    w_hat = torch.fft.rfft2(w0)
    k2 = torch.fft.fftfreq(size, 1 / size)[:, None] ** 2 + torch.fft.rfftfreq(size, 1 / size)[None, :] ** 2
    w0 = torch.fft.irfft2(w_hat * (k2 <= (size / 6) ** 2), s=(size, size))
    solver = KolmogorovSolver(size, re, forcing_wavenumber=n, dt=dt)
    ours = solver.to_physical(solver.step(solver.to_spectral(w0[None])))[0].numpy()
    official = _official_step(w0.numpy(), re, n, dt)
    assert np.abs(official - w0.numpy()).max() > 1e-3  # the step does something
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-12 * np.abs(official).max())


def test_grf_spectrum_matches_factformer_law():
    """E|ŵ_k|² = (s² √2 σ)² (|k|² + τ²)^{−α} on the interior rfft columns (σ = τ^{α−1}, α 2.5, τ 7)."""
    size, samples = 16, 400
    w = kolmogorov.gaussian_random_field(size, [kolmogorov.trajectory_generator(0, 9, i) for i in range(samples)])
    power = (torch.fft.rfft2(w).abs() ** 2).mean(0)[:, 1 : size // 2]
    k2 = torch.fft.fftfreq(size, 1 / size, dtype=torch.float64)[:, None] ** 2 + torch.arange(1, size // 2)[None] ** 2
    expected = (size**2 * math.sqrt(2.0) * 7.0**1.5) ** 2 * (k2 + 49.0) ** -2.5
    ratio = (power / expected).mean()  # 2 · 400 · 112 real degrees of freedom: relative error ~ 0.3 %
    assert abs(float(ratio) - 1) < 0.02


def test_spectral_report_on_single_modes():
    X, Y = _grid(128)
    low = kolmogorov.spectral_report(torch.cos(3 * X + 4 * Y)[None])
    assert low["enstrophy_fraction_k16"] == pytest.approx(1.0) and low["aliased_enstrophy_fraction_32"] < 1e-20
    high = kolmogorov.spectral_report(torch.sin(17 * Y)[None])  # |k| >= 16 and not representable on 32²
    assert high["enstrophy_fraction_k16"] < 1e-20 and high["aliased_enstrophy_fraction_32"] == pytest.approx(1.0)


TINY_NS = dict(grid=32, dt=1e-2, frame_interval=0.05, warmup_time=0.1, n_frames=3, progress=False)


def test_kolmogorov_dataset_deterministic_and_batch_independent(tmp_path):
    a = kolmogorov.generate_dataset(tmp_path / "a.h5", n_train=3, n_val=1, n_test=1, seed=7, batch_size=2, **TINY_NS)
    b = kolmogorov.generate_dataset(tmp_path / "b.h5", n_train=3, n_val=1, n_test=1, seed=7, batch_size=1, **TINY_NS)
    c = kolmogorov.generate_dataset(tmp_path / "c.h5", n_train=3, n_val=1, n_test=1, seed=8, batch_size=2, **TINY_NS)
    va, vb, vc = (store.open_split(p, "train")["vorticity"] for p in (a, b, c))
    assert va.shape == (3, 3, 32, 32) and va.dtype == np.float32
    np.testing.assert_allclose(va, vb, atol=1e-5 * np.abs(va).max())  # a trajectory does not depend on its batch
    assert np.abs(va - vc).max() > 0.1
    again = kolmogorov.generate_dataset(tmp_path / "a2.h5", n_train=3, n_val=1, n_test=1, seed=7, batch_size=2,
                                        **TINY_NS)  # fmt: skip
    np.testing.assert_array_equal(store.open_split(again, "train")["vorticity"], va)
    # trajectory i of a split is the trajectory of its own generator
    solver = KolmogorovSolver(32, 100.0, dt=1e-2, dtype=torch.float32)
    w0 = kolmogorov.gaussian_random_field(32, [kolmogorov.trajectory_generator(7, 1, 0)], dtype=torch.float32)
    frames = kolmogorov.simulate(solver, w0, warmup_steps=10, steps_per_frame=5, n_frames=3)
    np.testing.assert_allclose(store.open_split(a, "val")["vorticity"], frames, atol=1e-5 * np.abs(frames).max())


def test_kolmogorov_cli_end_to_end(tmp_path):
    out = tmp_path / "km.h5"
    args = ["--out", str(out), "--train", "2", "--val", "1", "--test", "1", "--grid", "32", "--dt", "0.01",
            "--frame-interval", "0.05", "--warmup", "0.1", "--frames", "4", "--no-progress"]  # fmt: skip
    kolmogorov.main(args)
    attrs = store.read_attrs(out)
    assert attrs["Re"] == 100.0 and attrs["nu"] == pytest.approx(0.01) and attrs["drag"] == pytest.approx(0.1)
    assert attrs["forcing_wavenumber"] == 4 and attrs["grid"] == 32 and attrs["seed"] == 0
    assert attrs["generated_seconds"] > 0 and 0 < attrs["enstrophy_fraction_k16"] <= 1
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        w = store.open_split(out, split)["vorticity"]
        assert w.shape == (n, 4, 32, 32) and np.isfinite(w).all()
    with pytest.raises(FileExistsError):
        kolmogorov.main(args)
    kolmogorov.main([*args, "--overwrite", "--seed", "1"])
    assert store.read_attrs(out)["seed"] == 1


def test_kolmogorov_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        KolmogorovSolver(16, 100.0, forcing_wavenumber=8)
    with pytest.raises(ValueError, match="frame_interval"):
        kolmogorov.generate_dataset(tmp_path / "x.h5", **{**TINY_NS, "frame_interval": 0.055})
    with pytest.raises(ValueError, match="w0"):
        kolmogorov.simulate(KolmogorovSolver(16, 100.0), torch.zeros(1, 8, 8), warmup_steps=0, steps_per_frame=1,
                            n_frames=1)  # fmt: skip


# ------------------------------------------------------------------------------------------------ heat, scikit-fem


@pytest.mark.parametrize("hole", [True, False])
def test_heat_p1_converges_at_second_order_in_l2(hole):
    """Manufactured u = sin(2x) e^y + x²: L2 error O(h²), H1-seminorm error O(h) under uniform refinement."""
    study = heat_fem.convergence_study((1, 2, 3), hole=hole)
    assert np.all(study["l2_rate"] > 1.9) and np.all(study["l2_rate"] < 2.3)
    assert np.all(study["h1_rate"] > 0.95) and np.all(study["h1_rate"] < 1.2)
    assert study["l2"][-1] < 1e-3


def test_heat_random_meshes_are_valid_and_accurate():
    """Random (graded, ragged) meshes: counter-clockwise cells, no slivers, and a manufactured solution solved on them
    is accurate; Dirichlet rows equal the solution on the boundary nodes."""
    counts = set()
    for i in range(4):
        rng = heat_fem.sample_rng(3, 0, i)
        geometry = heat_fem.random_geometry(rng, hole_probability=0.5 if i < 2 else 1.0)
        mesh = heat_fem.make_mesh(geometry, rng, int(rng.integers(300, 900)))
        area, angle = heat_fem._min_angles(mesh.p, mesh.t)
        assert area.min() > 0 and angle.min() > 10
        counts.add(mesh.p.shape[1])
        u = heat_fem.solve_heat(mesh, 0.7, _manufactured_source, _manufactured)
        assert np.abs(u - _manufactured(mesh.p)).max() < 3e-2  # about h² |D²u| at 300..900 nodes
        if geometry.hole_radius > 0:  # the hole's nodes lie exactly on its circle
            b = mesh.boundary_nodes()
            d = np.linalg.norm(mesh.p[:, b] - np.asarray(geometry.hole_center)[:, None], axis=0)
            inner = d < geometry.hole_radius + 0.05
            assert inner.sum() >= 12 and np.abs(d[inner] - geometry.hole_radius).max() < 1e-12
    assert len(counts) == 4
    sample = heat_fem.random_sample(heat_fem.sample_rng(0, 0, 0))
    np.testing.assert_allclose(sample.target[sample.boundary_nodes, 0], sample.f_boundary[:, 2], atol=1e-12)
    np.testing.assert_array_equal(sample.f_boundary[:, :2], sample.coords[sample.boundary_nodes])
    np.testing.assert_array_equal(sample.f_source[:, :2], sample.coords)


def _manufactured(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * x[0]) * np.exp(x[1]) + x[0] ** 2


def _manufactured_source(x: np.ndarray) -> np.ndarray:  # −∇·(0.7 ∇u)
    return 0.7 * (3 * np.sin(2 * x[0]) * np.exp(x[1]) - 2)


def test_heat_conductivity_scales_the_source_part():
    """u(k, f, g) − u_g = (f-part)/k: doubling k halves u − u(f=0)."""
    rng = heat_fem.sample_rng(1, 0, 0)
    mesh = heat_fem.make_mesh(heat_fem.random_geometry(rng), rng, 400)

    def f(x):
        return 10 * np.exp(-((x[0] - 0.1) ** 2 + x[1] ** 2) / 0.05)

    def g(x):
        return np.sin(x[0] + 2 * x[1])

    base = heat_fem.solve_heat(mesh, 1.0, lambda x: 0 * x[0], g)
    u1, u2 = heat_fem.solve_heat(mesh, 1.0, f, g), heat_fem.solve_heat(mesh, 2.0, f, g)
    np.testing.assert_allclose(u2 - base, 0.5 * (u1 - base), atol=1e-12)
    assert (u1 - base).max() > 0.1  # a positive source heats the interior


TINY_HEAT = dict(n_train=3, n_val=2, n_test=2, nodes=(150, 400), progress=False)


def test_heat_ragged_layout_round_trip_and_determinism(tmp_path):
    path = heat_fem.generate_dataset(tmp_path / "heat.h5", seed=4, **TINY_HEAT)
    for split_index, (split, n) in enumerate((("train", 3), ("val", 2), ("test", 2))):
        arrays = store.open_split(path, split)
        assert arrays["offsets"].dtype == np.int64 and len(arrays["offsets"]) == n + 1
        assert arrays["params"].shape == (n, 1) and arrays["cells"].dtype == np.int32
        for i in range(n):
            expected = heat_fem.random_sample(heat_fem.sample_rng(4, split_index, i), nodes=(150, 400))
            coords = store.unpack_ragged(arrays["coords"], arrays["offsets"], i)
            np.testing.assert_array_equal(coords, expected.coords.astype(np.float32))
            np.testing.assert_array_equal(
                store.unpack_ragged(arrays["target"], arrays["offsets"], i), expected.target.astype(np.float32)
            )
            for name in ("f_boundary", "f_source", "cells", "boundary_nodes"):
                got = store.unpack_ragged(arrays[name], arrays[f"{name}_offsets"], i)
                np.testing.assert_array_equal(got, getattr(expected, name).astype(got.dtype), err_msg=name)
            np.testing.assert_array_equal(arrays["params"][i], expected.params.astype(np.float32))
    nodes = np.diff(store.open_split(path, "train")["offsets"])
    assert len(set(nodes.tolist())) == 3  # ragged
    again = heat_fem.generate_dataset(tmp_path / "again.h5", seed=4, **TINY_HEAT)
    other = heat_fem.generate_dataset(tmp_path / "other.h5", seed=5, **TINY_HEAT)
    first, second = store.open_split(path, "test"), store.open_split(again, "test")
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not np.array_equal(first["offsets"], store.open_split(other, "test")["offsets"])


def test_heat_cli_end_to_end(tmp_path):
    out = tmp_path / "heat.h5"
    args = ["--out", str(out), "--train", "2", "--val", "1", "--test", "1", "--min-nodes", "150", "--max-nodes",
            "300", "--no-progress"]  # fmt: skip
    heat_fem.main(args)
    attrs = store.read_attrs(out)
    assert attrs["seed"] == 0 and attrs["generated_seconds"] > 0 and "div(k grad u)" in attrs["equation"]
    train = store.open_split(out, "train")
    assert {"coords", "offsets", "f_boundary", "f_boundary_offsets", "f_source", "f_source_offsets", "target",
            "params", "cells", "cells_offsets", "boundary_nodes", "boundary_nodes_offsets"} <= set(train)  # fmt: skip
    assert train["coords"].shape[1] == 2 and train["f_boundary"].shape[1] == 3 and train["target"].shape[1] == 1
    with pytest.raises(FileExistsError):
        heat_fem.main(args)
    heat_fem.main([*args, "--overwrite"])

"""The Burgers and Darcy data generators: random fields, solver accuracy, the HDF5 store and the CLIs (tiny sizes)."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.fft

from formers.pde.solvers import burgers, darcy, grf, store

# ---------------------------------------------------------------------------------------------- Gaussian random fields


def test_grf_periodic_1d_spectrum_matches_covariance():
    """Fourier coefficients of the samples have variance 4 λ_k (α_k - iβ_k with Var α_k = Var β_k = 2 λ_k)."""
    n, samples = 64, 4000
    gamma, tau, sigma = 2.0, 5.0, 25.0
    u = grf.grf_periodic_1d(np.random.default_rng(0), samples, n, gamma=gamma, tau=tau, sigma=sigma, mean=0.25)
    assert u.shape == (samples, n)
    coeffs = 2.0 * scipy.fft.rfft(u, axis=-1) / n  # = α_k - i β_k for 0 < k < n/2
    np.testing.assert_allclose(coeffs[:, 0].real / 2, 0.25, atol=1e-12)  # constant mode = mean, not drawn
    lam = grf.periodic_1d_sqrt_eigenvalues(n // 2, gamma, tau, sigma) ** 2
    k = np.arange(1, 9)
    empirical = np.mean(np.abs(coeffs[:, k]) ** 2, axis=0)
    # 2 * samples real degrees of freedom per mode: relative standard error sqrt(1 / samples) ~ 1.6 %.
    np.testing.assert_allclose(empirical / (4 * lam[k - 1]), 1.0, atol=5 / np.sqrt(samples))
    # The pointwise variance of the field is Σ 2 λ_k (Nyquist: cosine only, λ_{n/2}).
    expected_var = 2 * lam[:-1].sum() + lam[-1]
    assert abs(u.var(axis=0).mean() / expected_var - 1) < 0.05


def test_grf_periodic_1d_seeded_and_even_grid():
    a = grf.grf_periodic_1d(np.random.default_rng(3), 2, 16)
    b = grf.grf_periodic_1d(np.random.default_rng(3), 2, 16)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="grid"):
        grf.grf_periodic_1d(np.random.default_rng(0), 1, 15)
    with pytest.raises(ValueError, match="tau"):
        grf.grf_periodic_1d(np.random.default_rng(0), 1, 16, tau=0.0)


def test_grf_neumann_2d_equals_direct_cosine_sum():
    """The DCT-I evaluation equals GRF.m's KL sum Σ coef_k ξ_k φ_k, evaluated directly at the nodes."""
    s = 9
    g = grf.grf_neumann_2d(np.random.default_rng(1), 3, s, alpha=2.0, tau=3.0)
    xi = np.random.default_rng(1).standard_normal((3, s, s))
    coef = grf.neumann_2d_sqrt_eigenvalues(s, 2.0, 3.0)
    assert coef[0, 0] == 0.0 and coef[0, 1] == pytest.approx(3.0 / (np.pi**2 + 9.0))
    norm = np.where(np.arange(s) == 0, 1.0, np.sqrt(2.0))
    phi = norm[:, None] * np.cos(np.pi * np.arange(s)[:, None] * np.linspace(0, 1, s)[None, :])  # [k, i]
    direct = np.einsum("ki,bkl,lj->bij", phi, coef * xi, phi)
    np.testing.assert_allclose(g, direct, atol=1e-13)


def test_grf_neumann_2d_pointwise_variance():
    s, samples = 17, 3000
    g = grf.grf_neumann_2d(np.random.default_rng(2), samples, s, alpha=2.0, tau=3.0)
    coef = grf.neumann_2d_sqrt_eigenvalues(s, 2.0, 3.0)
    norm = np.where(np.arange(s) == 0, 1.0, np.sqrt(2.0))
    phi = norm[:, None] * np.cos(np.pi * np.arange(s)[:, None] * np.linspace(0, 1, s)[None, :])
    expected = np.einsum("ki,kl,lj->ij", phi**2, coef**2, phi**2)
    ratio = g.var(axis=0) / expected
    assert np.all(np.abs(ratio - 1) < 0.12), ratio  # 3000 samples: ~2.6 % standard error per node
    assert abs(ratio.mean() - 1) < 0.03


# ------------------------------------------------------------------------------------------------------------- Burgers


@pytest.mark.parametrize("grid", [1024, 8192])
def test_burgers_matches_cole_hopf(grid):
    errors = burgers.validate(grid=grid)  # t = 1, default dt
    assert max(errors["c=2.0"], errors["c=1.6"]) < 1e-8, errors
    assert max(errors["c=2.0 relative"], errors["c=1.6 relative"]) < 1e-7, errors


def test_burgers_cole_hopf_early_phase_fourth_order():
    """At t = 0.1 the exact solution is still O(1) and steep (c = 1.6): relative error < 1e-6, fourth order in dt."""
    coarse = burgers.validate(grid=1024, cs=(1.6,), t_final=0.1)
    fine = burgers.validate(grid=1024, cs=(1.6,), t_final=0.1, dt=burgers.DEFAULT_DT / 2)
    assert coarse["c=1.6 relative"] < 1e-6, coarse
    assert coarse["c=1.6"] / fine["c=1.6"] > 8, (coarse, fine)
    x = np.arange(1024) / 1024
    assert np.abs(burgers.cole_hopf_solution(x, 0.1, 0.1, 1.6)).max() > 0.5  # not a decayed, near-linear state


def test_burgers_dt_halving_and_conservation():
    grid = 8192
    u0 = grf.grf_periodic_1d(np.random.default_rng(5), 2, grid, **burgers.GRF_PARAMS)
    dt = burgers.DEFAULT_DT
    u_dt = burgers.solve_burgers(u0, dt=dt)
    u_half = burgers.solve_burgers(u0, dt=dt / 2)
    u_double = burgers.solve_burgers(u0, dt=2 * dt)
    scale = np.abs(u_half).max()
    change = np.abs(u_dt - u_half).max() / scale
    assert change < 1e-7, change
    assert np.abs(u_double - u_dt).max() / scale > 3 * change  # converging
    np.testing.assert_allclose(u_dt.mean(axis=-1), u0.mean(axis=-1), atol=1e-12)  # mean (zero mode) conserved
    assert np.all((u_dt**2).sum(-1) < (u0**2).sum(-1))  # viscous: energy decays
    # The nonlinearity matters: the heat-equation solution from u0 differs by far more than the dt error.
    k = 2 * np.pi * np.arange(grid // 2 + 1)
    heat = scipy.fft.irfft(scipy.fft.rfft(u0, axis=-1) * np.exp(-0.1 * k**2), n=grid, axis=-1)
    assert np.abs(u_dt - heat).max() / scale > 0.05
    assert burgers.time_steps(1.0, dt).sum() == pytest.approx(1.0, abs=1e-12)
    assert burgers.time_steps(1.0, dt).max() <= dt * (1 + 1e-12)


def test_burgers_rejects_bad_input():
    with pytest.raises(ValueError, match="u0"):
        burgers.solve_burgers(np.zeros((2, 2, 8)))
    with pytest.raises(ValueError, match="nu"):
        burgers.solve_burgers(np.zeros(8), nu=0.0)


# --------------------------------------------------------------------------------------------------------------- Darcy


def test_darcy_second_order_convergence():
    errors = darcy.manufactured_errors((17, 33, 65))
    ratios = [errors[17] / errors[33], errors[33] / errors[65]]
    assert all(3.6 < r < 4.4 for r in ratios), (errors, ratios)


def _solve_gwf_oracle(coef: np.ndarray, f: float) -> np.ndarray:
    """solve_gwf.m's system built entry by entry (MATLAB's column-major unknown order), solved densely."""
    k = coef.shape[0]
    m = k - 2

    def idx(r, c):  # interior node (r, c), 1 <= r, c <= k-2, in F(:) order
        return (c - 1) * m + (r - 1)

    a = np.zeros((m * m, m * m))
    for c in range(1, k - 1):
        for r in range(1, k - 1):
            p = idx(r, c)
            a[p, p] = (
                (coef[r - 1, c] + coef[r, c]) / 2
                + (coef[r + 1, c] + coef[r, c]) / 2
                + (coef[r, c - 1] + coef[r, c]) / 2
                + (coef[r, c + 1] + coef[r, c]) / 2
            )
            if r < k - 2:
                a[p, idx(r + 1, c)] = a[idx(r + 1, c), p] = -(coef[r, c] + coef[r + 1, c]) / 2
            if c < k - 2:
                a[p, idx(r, c + 1)] = a[idx(r, c + 1), p] = -(coef[r, c] + coef[r, c + 1]) / 2
    a *= (k - 1) ** 2
    sol = np.linalg.solve(a, np.full(m * m, f))
    out = np.zeros((k, k))
    for c in range(1, k - 1):
        for r in range(1, k - 1):
            out[r, c] = sol[idx(r, c)]
    return out


def test_darcy_matches_solve_gwf_arithmetic():
    coef = np.random.default_rng(7).uniform(0.5, 4.0, size=(9, 9))
    np.testing.assert_allclose(darcy.solve_darcy(coef, 1.0), _solve_gwf_oracle(coef, 1.0), rtol=1e-12, atol=1e-15)


def test_darcy_positivity_and_energy_bounds_on_random_coefficient():
    s = 33
    g = grf.grf_neumann_2d(np.random.default_rng(4), 1, s, **darcy.GRF_PARAMS)[0]
    a = darcy.threshold_coefficient(g)
    assert set(np.unique(a)) == {3.0, 12.0}
    u = darcy.solve_darcy(a)
    assert np.all(u[1:-1, 1:-1] > 0)  # discrete minimum principle, f = 1 > 0
    assert np.all(u[[0, -1], :] == 0) and np.all(u[:, [0, -1]] == 0)
    # Compliance Σu (= max over v of 2Σv - energy_a(v)) is monotone in the coefficient: bounded by a ≡ 12, a ≡ 3.
    u_high, u_low = darcy.solve_darcy(np.full((s, s), 12.0)), darcy.solve_darcy(np.full((s, s), 3.0))
    np.testing.assert_allclose(u_high * 12, u_low * 3, rtol=1e-12)  # constant coefficient: u scales as 1/a
    assert u_high.sum() < u.sum() < u_low.sum()
    assert u_low.max() == pytest.approx(0.0737 / 3, rel=0.02)  # -Δw = 1 on the unit square: max w = 0.0737


def test_darcy_rejects_bad_coefficient():
    with pytest.raises(ValueError, match="coef"):
        darcy.solve_darcy(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="coef"):
        darcy.solve_darcy(np.ones((5, 4)))
    with pytest.raises(ValueError, match="rhs"):
        darcy.solve_darcy(np.ones((5, 5)), np.ones((4, 4)))


# --------------------------------------------------------------------------------------------------------------- store


def test_store_round_trip(tmp_path):
    values, offsets = store.pack_ragged([np.ones((3, 2)), np.zeros((0, 2)), np.full((2, 2), 2.0)])
    assert offsets.dtype == np.int64 and offsets.tolist() == [0, 3, 3, 5]
    np.testing.assert_array_equal(store.unpack_ragged(values, offsets, 2), np.full((2, 2), 2.0))
    assert store.unpack_ragged(values, offsets, 1).shape == (0, 2)
    a = np.random.default_rng(0).random((4, 5))
    path = store.write_dataset(
        tmp_path / "sub" / "x.h5",
        {"train": {"a": a, "coords": values, "offsets": offsets}, "test": {"a": a[:1]}},
        {"equation": "test", "nu": 0.1, "grid": 5, "names": ["p", "q"]},
        compress=("a",),
    )
    assert path == tmp_path / "sub" / "x.h5"
    attrs = store.read_attrs(path)
    assert attrs["equation"] == "test" and attrs["nu"] == 0.1 and attrs["grid"] == 5 and attrs["names"] == ["p", "q"]
    assert attrs["formers_pde_version"] and attrs["created_utc"].endswith("Z")
    train = store.open_split(path, "train")
    assert train["a"].dtype == np.float32 and train["offsets"].dtype == np.int64
    np.testing.assert_array_equal(train["a"], a.astype(np.float32))
    np.testing.assert_array_equal(train["offsets"], offsets)
    with h5py.File(path) as f:
        assert f["train/a"].compression == "gzip" and f["train/coords"].compression is None
    assert set(store.open_split(path, "test")) == {"a"}
    with pytest.raises(KeyError, match=r"x\.h5.*'val'"):
        store.open_split(path, "val")
    with pytest.raises(KeyError, match=r"x\.h5.*\['u'\]"):
        store.open_split(path, "train", keys=["a", "u"])


def test_store_refuses_overwrite_and_never_leaves_half_files(tmp_path):
    path = tmp_path / "d.h5"
    store.write_dataset(path, {"train": {"a": np.zeros(3)}}, {"equation": "first"})
    with pytest.raises(FileExistsError, match=r"d\.h5.*overwrite=True"):
        store.write_dataset(path, {"train": {"a": np.ones(3)}}, {"equation": "second"})
    # A crash in the middle of writing (an unstorable array after a stored one) keeps the old file intact, no tmp file.
    bad = {"train": {"a": np.ones(3)}, "test": {"b": np.array(["not", "numbers"], dtype=object)}}
    with pytest.raises(ValueError, match="'test'.*'b'"):
        store.write_dataset(path, bad, {"equation": "second"}, overwrite=True)
    assert store.read_attrs(path)["equation"] == "first"
    with pytest.raises(ValueError):
        store.write_dataset(tmp_path / "new.h5", bad, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]
    store.write_dataset(path, {"train": {"a": np.ones(3)}}, {"equation": "second"}, overwrite=True)
    assert store.read_attrs(path)["equation"] == "second"
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match=r"junk\.h5"):
        store.read_attrs(tmp_path / "junk.h5")
    with pytest.raises(ValueError, match=r"junk\.h5"):
        store.open_split(tmp_path / "junk.h5", "train")
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        store.read_attrs(tmp_path / "missing.h5")


# ----------------------------------------------------------------------------------------------------------------- CLI


def test_burgers_cli_end_to_end(tmp_path):
    out = tmp_path / "burgers.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "formers.pde.solvers.burgers",
        "--out",
        str(out),
        "--train",
        "3",
        "--val",
        "2",
        "--test",
        "2",
        "--grid",
        "256",
        "--seed",
        "1",
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    attrs = store.read_attrs(out)
    assert attrs["nu"] == 0.1 and attrs["fine_grid"] == 256 and attrs["seed"] == 1 and attrs["generated_seconds"] > 0
    assert (attrs["grf_gamma"], attrs["grf_tau"], attrs["grf_sigma"]) == (2.0, 5.0, 25.0)
    shapes = {
        split: {k: v.shape for k, v in store.open_split(out, split).items()} for split in ("train", "val", "test")
    }
    assert shapes == {
        "train": {"a": (3, 256), "u": (3, 256)},
        "val": {"a": (2, 256), "u": (2, 256)},
        "test": {"a": (2, 256), "u": (2, 256)},
    }
    train = store.open_split(out, "train")
    np.testing.assert_allclose(train["u"], burgers.solve_burgers(train["a"].astype(np.float64)), atol=1e-5)
    with pytest.raises(FileExistsError, match="overwrite"):
        burgers.main(["--out", str(out), "--train", "1", "--val", "1", "--test", "1", "--grid", "64"])
    # Splits use independent streams: the val set does not depend on the train size.
    val_before = store.open_split(out, "val")["a"]
    burgers.main(
        ["--out", str(out), "--train", "1", "--val", "2", "--test", "1", "--grid", "256", "--seed", "1", "--overwrite"]
    )
    assert store.open_split(out, "train")["a"].shape == (1, 256)
    np.testing.assert_array_equal(store.open_split(out, "val")["a"], val_before)


def test_darcy_cli_end_to_end(tmp_path):
    out = tmp_path / "darcy.h5"
    darcy.main(["--out", str(out), "--train", "3", "--val", "1", "--test", "2", "--grid", "17", "--chunk", "2"])
    attrs = store.read_attrs(out)
    assert attrs["fine_grid"] == 17 and attrs["coefficient_high"] == 12.0 and attrs["coefficient_low"] == 3.0
    train = store.open_split(out, "train")
    assert train["a"].shape == train["u"].shape == (3, 17, 17)
    assert set(np.unique(train["a"])) <= {3.0, 12.0}
    np.testing.assert_allclose(train["u"][1], darcy.solve_darcy(train["a"][1]), rtol=1e-5, atol=1e-9)
    assert store.open_split(out, "test")["u"].shape == (2, 17, 17)
    with h5py.File(out) as f:
        assert f["train/a"].compression == "gzip"
    # Chunking does not change the draws.
    out2 = tmp_path / "darcy2.h5"
    darcy.main(["--out", str(out2), "--train", "3", "--val", "1", "--test", "2", "--grid", "17", "--chunk", "16"])
    np.testing.assert_array_equal(store.open_split(out2, "train")["a"], train["a"])

"""Gaussian random fields (GRFs) for the Burgers and Darcy datasets, sampled through their Karhunen–Loève expansions.

**Periodic 1-D** (:func:`grf_periodic_1d`), the Burgers initial condition: a zero-mean field on the periodic unit
interval with covariance ``C = sigma^2 (-Δ + tau^2 I)^(-gamma)``. ``C`` is diagonal in the Fourier basis
``{√2 cos(2πkx), √2 sin(2πkx)}`` with eigenvalues ``λ_k = sigma^2 ((2πk)^2 + tau^2)^(-gamma)``, so

    u(x) = m + Σ_{k=1..K} α_k cos(2πkx) + β_k sin(2πkx),     α_k, β_k ~ N(0, 2 λ_k) independent.

Follows ``data_generation/burgers/GRF1.m`` (zongyi-li/fourier_neural_operator @ 2421c8f, ``type = "periodic"``):
the same ``√2 sigma ((2πk)^2 + tau^2)^(-gamma/2)`` amplitudes, modes ``k = 1..K`` with ``K`` = grid / 2 (as
``gen_burgers1.m`` calls it), and the constant mode set to the mean ``m`` (0) rather than drawn. GRF1 builds a chebfun
and the caller evaluates it on ``linspace(0, 1, s+1)[:-1]``; here the same trigonometric sum is evaluated on that grid
directly with one inverse real FFT (exact: every mode ``k <= s/2`` is resolved; the sine of the Nyquist mode ``k = s/2``
vanishes on the grid, as it does when GRF1's chebfun is sampled there). The Burgers benchmark uses gamma = 2, tau = 5,
sigma = 25, i.e. ``N(0, 625 (-Δ + 25 I)^(-2))``.

**2-D, zero-Neumann** (:func:`grf_neumann_2d`), the Darcy coefficient's underlying field: covariance
``tau^(2 alpha - 2) (-Δ + tau^2 I)^(-alpha)`` on the unit square with the zero-Neumann Laplacian, whose eigenfunctions
are ``cos(πk1 x) cos(πk2 y)`` (normalised ``1, √2, 2``) with eigenvalues ``π^2 (k1^2 + k2^2)``:

    g(x, y) = Σ_{(k1, k2) != (0, 0), k1, k2 < s} tau^(alpha-1) (π^2 (k1^2 + k2^2) + tau^2)^(-alpha/2) ξ_k φ_k(x, y).

Follows ``data_generation/darcy/GRF.m`` (same repository and commit): the same ``tau^(alpha-1)`` prefactor (it does not
change the sign of ``g``, which is all Darcy uses), ``s x s`` modes for an ``s``-point grid, the constant mode zeroed
(``L(1,1) = 0``). Departure: GRF.m evaluates the expansion with MATLAB's ``idct2``, i.e. at the *cell centres*
``(2i - 1) / (2s)``, and ``solve_gwf.m`` then spline-interpolates the (thresholded) field onto the nodes
``linspace(0, 1, s)``; here the expansion is evaluated at those nodes directly (a type-I DCT, exact), so the Darcy
solver needs no interpolation. The Darcy benchmark uses alpha = 2, tau = 3.

Both samplers take a ``numpy.random.Generator`` (reproducible) and draw a batch at once. Cost (one core, measured):
~0.25 ms per 8192-point 1-D sample, ~2 ms per 241 x 241 2-D sample.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = ["grf_neumann_2d", "grf_periodic_1d", "neumann_2d_sqrt_eigenvalues", "periodic_1d_sqrt_eigenvalues"]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value}")


def _check_batch(num_samples: int, grid: int, min_grid: int) -> None:
    if int(num_samples) != num_samples or num_samples < 0:
        raise ValueError(f"num_samples: expected a non-negative integer, got {num_samples}")
    if int(grid) != grid or grid < min_grid:
        raise ValueError(f"grid: expected an integer >= {min_grid}, got {grid}")


def periodic_1d_sqrt_eigenvalues(num_modes: int, gamma: float, tau: float, sigma: float) -> np.ndarray:
    """``sqrt(λ_k)`` for ``k = 1..num_modes``: ``|sigma| ((2πk)^2 + tau^2)^(-gamma/2)`` (GRF1.m's ``my_eigs / √2``)."""
    k = np.arange(1, num_modes + 1, dtype=np.float64)
    return abs(sigma) * ((2.0 * np.pi * k) ** 2 + tau**2) ** (-gamma / 2.0)


def grf_periodic_1d(
    rng: np.random.Generator,
    num_samples: int,
    grid: int,
    *,
    gamma: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
    mean: float = 0.0,
) -> np.ndarray:
    """Sample ``num_samples`` periodic fields ``N(mean, sigma^2 (-Δ + tau^2 I)^(-gamma))`` on ``x_j = j / grid``.

    Returns a float64 array ``(num_samples, grid)``; ``grid`` must be even. Modes ``1..grid/2`` are drawn (GRF1.m's
    ``N = s/2``); the constant mode is ``mean``.
    """
    _check_batch(num_samples, grid, 2)
    if grid % 2:
        raise ValueError(f"grid: expected an even number of points, got {grid}")
    for name, value in (("gamma", gamma), ("tau", tau), ("sigma", sigma)):
        _check_positive(name, value)
    num_modes = grid // 2
    amp = np.sqrt(2.0) * periodic_1d_sqrt_eigenvalues(num_modes, gamma, tau, sigma)
    alpha = amp * rng.standard_normal((num_samples, num_modes))  # cosine coefficients
    beta = amp * rng.standard_normal((num_samples, num_modes))  # sine coefficients
    # u_j = m + Σ α_k cos(2πkj/n) + β_k sin(2πkj/n) = irfft(U) with U_k = n (α_k - i β_k) / 2 for 0 < k < n/2;
    # irfft counts the Nyquist bin once and keeps its real part only, so U_{n/2} = n α_{n/2}.
    spectrum = np.zeros((num_samples, num_modes + 1), dtype=np.complex128)
    spectrum[:, 0] = grid * mean
    spectrum[:, 1:] = 0.5 * grid * (alpha - 1j * beta)
    spectrum[:, -1] = grid * alpha[:, -1]
    return scipy.fft.irfft(spectrum, n=grid, axis=-1, workers=1)


def neumann_2d_sqrt_eigenvalues(num_modes: int, alpha: float, tau: float) -> np.ndarray:
    """GRF.m's ``coef``: ``tau^(alpha-1) (π^2 (k1^2 + k2^2) + tau^2)^(-alpha/2)``, ``(num_modes, num_modes)``,
    with the constant mode ``(0, 0)`` set to 0."""
    k = np.arange(num_modes, dtype=np.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    coef = tau ** (alpha - 1.0) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    coef[0, 0] = 0.0
    return coef


def grf_neumann_2d(
    rng: np.random.Generator,
    num_samples: int,
    grid: int,
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Sample ``num_samples`` zero-Neumann fields with covariance ``tau^(2alpha-2) (-Δ + tau^2 I)^(-alpha)``.

    Evaluated on the nodes ``(i / (grid-1), j / (grid-1))``, endpoints included; returns float64
    ``(num_samples, grid, grid)`` indexed ``[sample, i (x), j (y)]``. ``grid x grid`` modes, as GRF.m.
    """
    _check_batch(num_samples, grid, 2)
    _check_positive("alpha", alpha)
    _check_positive("tau", tau)
    coef = neumann_2d_sqrt_eigenvalues(grid, alpha, tau)
    # Orthonormal eigenfunctions: φ_k(x) = c_k cos(πkx), c_0 = 1, c_k = √2.
    norm = np.full(grid, np.sqrt(2.0))
    norm[0] = 1.0
    coeffs = coef * norm[:, None] * norm[None, :] * rng.standard_normal((num_samples, grid, grid))
    # Σ_k c_k cos(πk i/(s-1)) is a type-I DCT once the interior coefficients are halved (scipy's DCT-I doubles them).
    halve = np.full(grid, 0.5)
    halve[[0, -1]] = 1.0
    coeffs *= halve[:, None] * halve[None, :]
    return scipy.fft.dctn(coeffs, type=1, axes=(-2, -1), workers=1)

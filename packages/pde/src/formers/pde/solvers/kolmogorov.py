"""2-D Kolmogorov flow (FactFormer's KM2d problem): forced incompressible Navier–Stokes in vorticity form.

Equation, on the periodic square ``[0, 2π)²`` with the field indexed ``w[i, j] = w(x_i, y_j)``, ``x_i = 2π i / s``
along axis -2 and ``y_j = 2π j / s`` along axis -1::

    ∂w/∂t + u·∇w = ν Δw − λ w + f,      f(x, y) = −n cos(n y),      ν = 1/Re,  λ = 0.1 (linear drag)
    u = (∂ψ/∂y, −∂ψ/∂x),                −Δψ = w

Numerics follow the official generator, BaratiLab/FactFormer @ c9801d1 ``dataset/kolmogorov.py`` (itself adapted
from neuraloperator/physics_informed ``solver/kolmogorov_flow.py``), re-written here: pseudo-spectral on an ``s × s``
grid, the linear part ``L = ν|k|² + λ`` by Crank–Nicolson, the nonlinear term ``−∇·(u w)`` (plus the forcing) by
Heun's method (explicit RK2, two evaluations per step), 2/3-rule dealiasing (``|k|² <= (s/3)²``, mean mode zeroed),
the same Gaussian random field for the initial vorticity (``N(0, σ² (−Δ + τ² I)^{−α})`` with α = 2.5, τ = 7,
σ = τ^{(2α−2)/2}), a warm-up, then frames every fixed interval. Per step::

    g  = (1 − dt/2 L) ŵ;   h₁ = N(ŵ);   w̃ = (g + dt h₁) / (1 + dt/2 L)
    ŵ ← (g + dt (h₁ + N(w̃)) / 2) / (1 + dt/2 L),  then dealiased.

Where it departs from the official generator (FactFormer: Re = 1000, n = 8, solved on 2048² with dt = 1e-4, stored
on 256², 320 frames of 1/32 time unit after a 2-unit warm-up: about 10⁵ steps of 2048² FFTs per trajectory, a GPU
job that one CPU core cannot afford):

- **Re = 100, n = 4, solved on 128² and stored on that same grid** (no subsampling: the stored field is the solver's
  field), float32 FFTs, dt = 5e-3 (CFL number ``dt·max|u|·s/2π`` ≈ 0.3 on the stored frames, max|u| ≈ 3). The flow
  is chaotic (bands of the forced shear roll up into vortices and filaments that keep moving; a frame's correlation
  with the frame 16 time units later is 0.0–0.4) and statistically steady in the stored window (the vorticity's
  standard deviation stays 3.7–3.9). Resolution: the enstrophy spectrum falls by six decades from its peak (|k| = 4)
  to the dealiasing cut-off (|k| = 42), 2e-5 of the enstrophy lies at |k| >= 32, and from the same state a 256²
  solve differs from the 128² solve by 1.0e-3 (relative L2) after one time unit (dt = 5e-3 vs 1.25e-3: 1.8e-4).
  Training views: the datasets are trained at 32² (``[::4]``) and evaluated zero-shot at 64² and 128²; 99.7 % of
  the enstrophy sits in |k| < 16 and 0.18 % lies in modes that a 32² grid cannot represent (``max(|kx|, |ky|) >=
  16``; :func:`spectral_report`, stored in the attrs), so the 32² view is faithful rather than aliased: its Fourier
  interpolation back to 128² reproduces the field to 5.4 % relative L2 (64² view: 0.35 %). Re = 200 already puts
  1.1 % of the enstrophy above |k| = 16 (0.8 % outside the 32² band), Re = 400 2.6 %.
- Frame interval 0.25 time units (≈ half an eddy turnover L/U with L = 2π/n, U ≈ 3; consecutive frames differ by
  31 % relative L2), 64 frames (16 time units) after a 5-unit warm-up (FactFormer: 2 units; the drag's relaxation
  time is 1/λ = 10 units, so a longer warm-up starts the stored window closer to the statistically steady state).
- The 2/3 mask is applied to each evaluation of the explicit term as well as to the state (the official code masks
  only the state after each step, so its intermediate Heun state carries unmasked modes whose products alias back):
  a pure Galerkin truncation, whose nonlinear term conserves energy and enstrophy. On a field band-limited to |k| <=
  s/6 one step equals the official arithmetic to round-off (test).
- The initial field is drawn from the same GRF law, per trajectory from ``np.random.SeedSequence([seed, split,
  i])``, so a trajectory does not depend on the batch it was solved in (up to float32 round-off, which the chaos
  amplifies over long times: only the same ``--batch-size`` reproduces a file bit for bit).
- The forcing term follows the official arithmetic (``−n cos(n y)``: the README's "n cos(n y)" is the same forcing
  shifted by π/n in y).

Stored (through :mod:`formers.pde.solvers.store`): per split ``vorticity`` ``(N, T, 128, 128)`` float32 (frame k at
``t = warmup + k·interval``), file attrs ``equation, solver, Re, nu, drag, forcing_wavenumber, forcing, domain,
fine_grid, grid, dt, frame_interval, warmup_time, n_frames, fft_dtype, initial_condition, seed, generated_seconds``
and the :func:`spectral_report` of the first split (``enstrophy_fraction_k16, aliased_enstrophy_fraction_32,
tail_enstrophy_fraction_k32``).

Measured (``OMP_NUM_THREADS=1``): one step costs about 0.6 ms per trajectory on an idle core (batches of 4–8), so
the default 48 / 8 / 8 trajectories × (1000 warm-up + 63 × 50) steps take about 2.7 minutes; with the 2-core
development machine shared by ~5 other jobs, one batch of 8 full trajectories took 60 s (≈ 8 minutes for the
default). The default file is 268 MB (33.5 MB per 8 trajectories), peak memory about 1.3 GB.

Validation (:func:`taylor_green_decay_error`, :func:`unforced_decay_check`, :func:`velocity_check`, tested in
``tests/pde/test_solvers_ns_heat.py``): an unforced, drag-free single-shell vortex decays as exp(−ν|k|² t) to
6.5e-11 relative at dt = 2.5e-3 (float64), all of it Crank–Nicolson's own t (ν|k|²)³ dt²/12; a random field
without forcing or drag loses energy and enstrophy monotonically (and conserves both to < 1e-5 when ν → 0); the
velocity recovered from the stream function is divergence-free to 1e-16 and its curl is the vorticity to 1e-16.

Run: ``python -m formers.pde.solvers.kolmogorov --out data/pde/kolmogorov.h5 [--train 48 --val 8 --test 8 --seed 0
--overwrite]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "KolmogorovSolver",
    "energy",
    "enstrophy",
    "gaussian_random_field",
    "generate_dataset",
    "main",
    "simulate",
    "spectral_report",
    "taylor_green_decay_error",
    "trajectory_generator",
    "unforced_decay_check",
    "velocity_check",
]


def _wavenumbers(size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Integer wavenumbers of an ``rfft2`` on ``size × size``: ``kx`` along axis -2 (full), ``ky`` along -1 (half)."""
    kx = torch.fft.fftfreq(size, d=1.0 / size, dtype=dtype)[:, None].expand(size, size // 2 + 1)
    ky = torch.fft.rfftfreq(size, d=1.0 / size, dtype=dtype)[None, :].expand(size, size // 2 + 1)
    return kx, ky


class KolmogorovSolver:
    """Crank–Nicolson / Heun pseudo-spectral stepper for the module's equation on an ``size × size`` periodic grid.

    The state is the vorticity's ``rfft2`` (``norm="backward"``), shape ``(B, size, size // 2 + 1)``. ``re``: the
    Reynolds number (ν = 1/re); ``drag``: λ; ``forcing_wavenumber``: n (0 = unforced); ``dt``: the time step;
    ``dtype``: the real dtype of the FFTs (float64 for the validations, float32 for the datasets).
    """

    def __init__(
        self,
        size: int,
        re: float,
        *,
        drag: float = 0.1,
        forcing_wavenumber: int = 4,
        dt: float = 5e-3,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if size < 8 or size % 2:
            raise ValueError(f"size: expected an even grid size >= 8, got {size}")
        if not re > 0:
            raise ValueError(f"re: the Reynolds number must be positive, got {re}")
        if drag < 0:
            raise ValueError(f"drag: expected >= 0, got {drag}")
        if not 0 <= forcing_wavenumber <= size / 3:
            raise ValueError(
                f"forcing_wavenumber: expected 0 <= n <= size/3 = {size / 3:.1f} (dealiased), got {forcing_wavenumber}"
            )
        if not dt > 0:
            raise ValueError(f"dt: expected > 0, got {dt}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.size, self.re, self.nu, self.drag = size, float(re), 1.0 / float(re), float(drag)
        self.forcing_wavenumber, self.dt, self.dtype = int(forcing_wavenumber), float(dt), dtype
        kx, ky = _wavenumbers(size, dtype)
        k2 = kx**2 + ky**2
        self.kx, self.ky, self.k2 = kx, ky, k2
        self.inv_lap = torch.where(k2 > 0, 1.0 / k2.clamp(min=1.0), torch.zeros_like(k2))  # ψ̂ = ŵ / |k|², mean 0
        mask = (k2 <= (size / 3.0) ** 2).to(dtype)
        mask[0, 0] = 0.0  # the mean vorticity is zero on a torus
        self.dealias = mask
        # ŵ -> (û, v̂): u = ∂ψ/∂y, v = −∂ψ/∂x; nonlinear term −i kx F(u w) − i ky F(v w), dealiased once here
        self._to_u = 1j * ky * self.inv_lap
        self._to_v = -1j * kx * self.inv_lap
        self._div_x = -1j * kx * mask
        self._div_y = -1j * ky * mask
        linear = self.nu * k2 + self.drag
        self._explicit_half = 1.0 - 0.5 * self.dt * linear
        self._implicit_half = 1.0 / (1.0 + 0.5 * self.dt * linear)

    # ---- transforms
    def to_spectral(self, w: Tensor) -> Tensor:
        """Physical ``(..., s, s)`` vorticity -> dealiased spectral state."""
        return torch.fft.rfft2(w.to(self.dtype)) * self.dealias

    def to_physical(self, w_hat: Tensor) -> Tensor:
        return torch.fft.irfft2(w_hat, s=(self.size, self.size))

    def velocity_hat(self, w_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Spectral velocity ``(û, v̂)`` from the stream function of ``w_hat``."""
        return w_hat * self._to_u, w_hat * self._to_v

    # ---- time stepping
    def explicit_term(self, w_hat: Tensor) -> Tensor:
        """``−∇·(u w) + f`` in spectral space (dealiased)."""
        fields = torch.fft.irfft2(
            torch.stack((w_hat, w_hat * self._to_u, w_hat * self._to_v), dim=-3), s=(self.size,) * 2
        )
        w = fields[..., 0, :, :]
        fluxes = torch.fft.rfft2(fields[..., 1:, :, :] * w.unsqueeze(-3))
        out = fluxes[..., 0, :, :] * self._div_x + fluxes[..., 1, :, :] * self._div_y
        n = self.forcing_wavenumber
        if n:
            # f = −n cos(n y): rfft2 coefficient −n/2 · s² at (kx, ky) = (0, n) (official arithmetic)
            out[..., 0, n] -= 0.5 * n * self.size**2
        return out

    def step(self, w_hat: Tensor) -> Tensor:
        g = self._explicit_half * w_hat
        h1 = self.explicit_term(w_hat)
        w_tilde = self._implicit_half * (g + self.dt * h1)
        h2 = 0.5 * (h1 + self.explicit_term(w_tilde))
        return self._implicit_half * (g + self.dt * h2) * self.dealias

    def advance(self, w_hat: Tensor, steps: int) -> Tensor:
        for _ in range(steps):
            w_hat = self.step(w_hat)
        return w_hat


# ---- initial condition


def trajectory_generator(seed: int, split: int, index: int) -> torch.Generator:
    """The torch generator of trajectory ``index`` of split number ``split`` (0 train, 1 val, 2 test)."""
    state = np.random.SeedSequence([int(seed), int(split), int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def gaussian_random_field(
    size: int,
    generators: Sequence[torch.Generator],
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Periodic GRF ``N(0, σ² (−Δ + τ² I)^{−α})`` on ``[0, 2π)²``, one ``(size, size)`` sample per generator.

    The law of FactFormer's / FNO's ``GaussianRF`` (``σ = τ^{(2α − 2)/2}`` by default, zero mean): the rfft
    coefficients are ``s² √2 σ (|k|² + τ²)^{−α/2}`` times standard complex normals, then ``irfft2``.
    """
    if sigma is None:
        sigma = tau ** (0.5 * (2 * alpha - 2))
    kx, ky = _wavenumbers(size, torch.float64)
    amplitude = size**2 * math.sqrt(2.0) * sigma * (kx**2 + ky**2 + tau**2) ** (-alpha / 2.0)
    amplitude[0, 0] = 0.0
    samples = []
    for gen in generators:
        noise = torch.randn(2, size, size // 2 + 1, generator=gen, dtype=torch.float64) / math.sqrt(2.0)
        samples.append(torch.fft.irfft2(amplitude * torch.complex(noise[0], noise[1]), s=(size, size)))
    return torch.stack(samples).to(dtype)


# ---- diagnostics


def energy(solver: KolmogorovSolver, w_hat: Tensor) -> Tensor:
    """Mean kinetic energy ``<|u|²>/2`` per sample (Parseval on the rfft half plane)."""
    return 0.5 * _mean_square(solver, w_hat * solver.inv_lap.sqrt())


def enstrophy(solver: KolmogorovSolver, w_hat: Tensor) -> Tensor:
    """Mean enstrophy ``<w²>/2`` per sample."""
    return 0.5 * _mean_square(solver, w_hat)


def _mean_square(solver: KolmogorovSolver, f_hat: Tensor) -> Tensor:
    """Spatial mean of ``f²`` from its rfft2 (columns 1..s/2-1 stand for two conjugate modes)."""
    weight = torch.full((solver.size // 2 + 1,), 2.0, dtype=solver.dtype)
    weight[0] = 1.0
    weight[-1] = 1.0
    return (f_hat.abs() ** 2 * weight).sum(dim=(-2, -1)) / solver.size**4


def spectral_report(vorticity: np.ndarray | Tensor, *, cutoff: float = 16.0, coarse: int = 32) -> dict[str, float]:
    """How well a coarse ``[::s/coarse]`` view represents stored frames ``(..., s, s)``, measured on the enstrophy.

    Returns ``enstrophy_fraction_k{cutoff}`` (share of the enstrophy in ``|k| < cutoff``),
    ``aliased_enstrophy_fraction_{coarse}`` (share in modes a ``coarse²`` grid cannot represent, ``max(|kx|, |ky|) >=
    coarse/2``: it folds onto other modes when subsampled) and ``tail_enstrophy_fraction_k32`` (share in ``|k| >=
    32``, near the solver's dealiasing cut-off: a resolution check).
    """
    frames = torch.as_tensor(np.asarray(vorticity)).reshape(-1, *np.shape(vorticity)[-2:])
    size = frames.shape[-1]
    power = torch.zeros(size, size, dtype=torch.float64)
    for lo in range(0, frames.shape[0], 256):  # in chunks: a whole dataset's complex128 spectrum is GBs
        power += torch.fft.fft2(frames[lo : lo + 256].to(torch.float64)).abs().pow(2).sum(0)
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)
    kx, ky = k[:, None], k[None, :]
    kmag, kinf = (kx**2 + ky**2).sqrt(), torch.maximum(kx.abs(), ky.abs())
    total = power.sum()
    return {
        f"enstrophy_fraction_k{int(cutoff)}": float(power[kmag < cutoff].sum() / total),
        f"aliased_enstrophy_fraction_{coarse}": float(power[kinf >= coarse // 2].sum() / total),
        "tail_enstrophy_fraction_k32": float(power[kmag >= 32].sum() / total),
    }


# ---- trajectories


def simulate(
    solver: KolmogorovSolver,
    w0: Tensor,
    *,
    warmup_steps: int,
    steps_per_frame: int,
    n_frames: int,
    on_steps: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run ``warmup_steps``, then store ``n_frames`` frames ``steps_per_frame`` steps apart (the first right after
    the warm-up). ``w0``: ``(B, s, s)`` initial vorticity; ``on_steps(k)`` is called after every ``k`` steps (a
    progress bar). Returns ``(B, n_frames, s, s)`` float32; raises
    ``FloatingPointError`` if the run blows up (time step too large for the flow)."""
    if w0.ndim != 3 or w0.shape[-2:] != (solver.size, solver.size):
        raise ValueError(f"w0: expected (B, {solver.size}, {solver.size}), got {tuple(w0.shape)}")
    if warmup_steps < 0 or steps_per_frame < 1 or n_frames < 1:
        raise ValueError(
            f"warmup_steps, steps_per_frame, n_frames: expected >= 0, >= 1, >= 1, got {warmup_steps}, "
            f"{steps_per_frame}, {n_frames}"
        )
    w_hat = solver.to_spectral(w0)
    frames = np.empty((w0.shape[0], n_frames, solver.size, solver.size), dtype=np.float32)
    for frame in range(n_frames):
        steps = warmup_steps if frame == 0 else steps_per_frame
        for _ in range(steps):
            w_hat = solver.step(w_hat)
        if on_steps is not None:
            on_steps(steps)
        w = solver.to_physical(w_hat)
        if not torch.isfinite(w).all():
            raise FloatingPointError(f"the vorticity blew up before frame {frame} (dt = {solver.dt} too large?)")
        frames[:, frame] = w.to(torch.float32).numpy()
    return frames


def _steps(duration: float, dt: float, name: str) -> int:
    steps = round(duration / dt)
    if abs(steps * dt - duration) > 1e-9 * max(1.0, duration):
        raise ValueError(f"{name}: {duration} is not a whole number of time steps dt = {dt}")
    return steps


def generate_dataset(
    out: str | Path,
    *,
    n_train: int = 48,
    n_val: int = 8,
    n_test: int = 8,
    seed: int = 0,
    re: float = 100.0,
    forcing_wavenumber: int = 4,
    drag: float = 0.1,
    grid: int = 128,
    dt: float = 5e-3,
    frame_interval: float = 0.25,
    warmup_time: float = 5.0,
    n_frames: int = 64,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Solve ``n_train + n_val + n_test`` trajectories; write them with :func:`formers.pde.solvers.store.write_dataset`.

    Each split's ``vorticity`` is ``(N, n_frames, grid, grid)``; see the module docstring for the attrs.
    """
    from formers.pde.solvers.store import write_dataset

    out = Path(out)
    if out.exists() and not overwrite:  # fail before minutes of solving, not after
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in counts.items():
        if n < 0:
            raise ValueError(f"n_{name}: expected >= 0 trajectories, got {n}")
    if not any(counts.values()):
        raise ValueError("n_train, n_val, n_test: expected at least one trajectory in total")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    warmup_steps = _steps(warmup_time, dt, "warmup_time")
    steps_per_frame = _steps(frame_interval, dt, "frame_interval")
    solver = KolmogorovSolver(grid, re, drag=drag, forcing_wavenumber=forcing_wavenumber, dt=dt, dtype=dtype)
    steps_per_trajectory = warmup_steps + (n_frames - 1) * steps_per_frame
    start = time.perf_counter()
    splits: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(
        total=steps_per_trajectory * sum(counts.values()),
        unit="traj-step",
        unit_scale=True,
        disable=not progress,
        desc="kolmogorov",
    ) as bar:
        for split_index, (name, n) in enumerate(counts.items()):
            if n == 0:
                continue
            chunks = []
            for lo in range(0, n, batch_size):
                gens = [trajectory_generator(seed, split_index, i) for i in range(lo, min(n, lo + batch_size))]
                w0 = gaussian_random_field(grid, gens, dtype=dtype)
                chunks.append(
                    simulate(
                        solver,
                        w0,
                        warmup_steps=warmup_steps,
                        steps_per_frame=steps_per_frame,
                        n_frames=n_frames,
                        on_steps=partial(_advance_bar, bar, len(gens)),
                    )
                )
            splits[name] = {"vorticity": np.concatenate(chunks)}
    seconds = time.perf_counter() - start
    report = spectral_report(next(iter(splits.values()))["vorticity"])
    attrs: dict[str, Any] = {
        "equation": "dw/dt + u.grad(w) = nu*lap(w) - drag*w - n*cos(n*y), u = (dpsi/dy, -dpsi/dx), -lap(psi) = w, "
        "periodic [0, 2pi)^2, w[i, j] = w(x_i, y_j)",
        "solver": "pseudo-spectral, Crank-Nicolson (viscosity + drag) / Heun (advection + forcing), 2/3 dealiasing "
        "(formers.pde.solvers.kolmogorov, after FactFormer dataset/kolmogorov.py)",
        "Re": float(re),
        "nu": 1.0 / float(re),
        "drag": float(drag),
        "forcing_wavenumber": int(forcing_wavenumber),
        "forcing": f"-{forcing_wavenumber}*cos({forcing_wavenumber}*y)",
        "domain": "[0, 2pi)^2 periodic",
        "fine_grid": int(grid),
        "grid": int(grid),
        "dt": float(dt),
        "frame_interval": float(frame_interval),
        "warmup_time": float(warmup_time),
        "n_frames": int(n_frames),
        "fft_dtype": str(dtype).removeprefix("torch."),
        "initial_condition": "GRF N(0, sigma^2 (-lap + tau^2 I)^(-alpha)), alpha 2.5, tau 7, sigma tau^(alpha-1)",
        "seed": int(seed),
        "generated_seconds": float(seconds),
        **report,
    }
    write_dataset(out, splits, attrs, overwrite=overwrite)
    return out


def _advance_bar(bar: tqdm, batch: int, steps: int) -> None:
    bar.update(steps * batch)  # the bar counts trajectory-steps


# ---- validation


def taylor_green_decay_error(
    *, size: int = 32, re: float = 100.0, mode: tuple[int, int] = (2, 1), t_end: float = 1.0, dt: float = 2.5e-3
) -> float:
    """Unforced, drag-free decay of a Taylor–Green-type vortex on one wavenumber shell ``|k|² = a² + b²``.

    ``w0 = cos(a x) cos(b y) + sin(b x) sin(a y)``: ψ = w/|k|², so u·∇w vanishes exactly and ``w(t) = w0
    exp(−ν|k|² t)`` (the energy decays as exp(−2ν|k|² t)). The full stepper runs (nonlinear term included, float64)
    and the return value is the largest relative max-norm error over the run: Crank–Nicolson's own error ``t
    (ν|k|²)³ dt² / 12`` (6.5e-11 at the defaults) plus round-off.
    """
    a, b = mode
    solver = KolmogorovSolver(size, re, drag=0.0, forcing_wavenumber=0, dt=dt, dtype=torch.float64)
    x = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    w0 = torch.cos(a * X) * torch.cos(b * Y) + torch.sin(b * X) * torch.sin(a * Y)
    w_hat = solver.to_spectral(w0[None])
    worst = 0.0
    for step in range(1, _steps(t_end, dt, "t_end") + 1):
        w_hat = solver.step(w_hat)
        if step % 10 == 0 or step * dt >= t_end - 1e-12:
            exact = w0 * math.exp(-solver.nu * (a * a + b * b) * step * dt)
            err = (solver.to_physical(w_hat)[0] - exact).abs().max() / exact.abs().max()
            worst = max(worst, float(err))
    return worst


def unforced_decay_check(
    *, size: int = 64, re: float = 500.0, steps: int = 200, dt: float = 5e-3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Unforced, drag-free evolution of a GRF vorticity: energy and enstrophy per step (float64).

    Viscosity is the only sink and the dealiased nonlinear term conserves both quadratic invariants, so both
    must decrease monotonically. Returns ``{"energy": (steps + 1,), "enstrophy": (steps + 1,)}``.
    """
    solver = KolmogorovSolver(size, re, drag=0.0, forcing_wavenumber=0, dt=dt, dtype=torch.float64)
    w_hat = solver.to_spectral(gaussian_random_field(size, [trajectory_generator(seed, 0, 0)]))
    e, z = [float(energy(solver, w_hat)[0])], [float(enstrophy(solver, w_hat)[0])]
    for _ in range(steps):
        w_hat = solver.step(w_hat)
        e.append(float(energy(solver, w_hat)[0]))
        z.append(float(enstrophy(solver, w_hat)[0]))
    return {"energy": np.asarray(e), "enstrophy": np.asarray(z)}


def velocity_check(solver: KolmogorovSolver, w: Tensor) -> dict[str, float]:
    """Velocity from the stream function of ``w`` ``(B, s, s)``: relative max divergence (``|∇·u| / max|∇u|``)
    and relative max error of its curl ``∂v/∂x − ∂u/∂y`` against the (dealiased) vorticity, both spectral."""
    w_hat = solver.to_spectral(w)
    u_hat, v_hat = solver.velocity_hat(w_hat)
    ikx, iky = 1j * solver.kx, 1j * solver.ky
    div = solver.to_physical(ikx * u_hat + iky * v_hat)
    grad_scale = torch.stack([solver.to_physical(d * f) for d in (ikx, iky) for f in (u_hat, v_hat)]).abs().max()
    curl = solver.to_physical(ikx * v_hat - iky * u_hat)
    w_dealiased = solver.to_physical(w_hat)
    return {
        "divergence": float(div.abs().max() / grad_scale),
        "curl_error": float((curl - w_dealiased).abs().max() / w_dealiased.abs().max()),
    }


# ---- CLI


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m formers.pde.solvers.kolmogorov", description="Generate the 2-D Kolmogorov-flow dataset."
    )
    parser.add_argument("--out", type=Path, required=True, help="HDF5 file to write (e.g. data/pde/kolmogorov.h5)")
    parser.add_argument("--train", type=int, default=48, help="training trajectories")
    parser.add_argument("--val", type=int, default=8, help="validation trajectories")
    parser.add_argument("--test", type=int, default=8, help="test trajectories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--re", type=float, default=100.0, help="Reynolds number (nu = 1/Re)")
    parser.add_argument("--forcing-wavenumber", type=int, default=4, help="n of the forcing -n cos(n y)")
    parser.add_argument("--drag", type=float, default=0.1, help="linear drag coefficient")
    parser.add_argument("--grid", type=int, default=128, help="solver = stored grid size")
    parser.add_argument("--dt", type=float, default=5e-3, help="solver time step")
    parser.add_argument("--frame-interval", type=float, default=0.25, help="time between stored frames")
    parser.add_argument("--warmup", type=float, default=5.0, help="time before the first stored frame")
    parser.add_argument("--frames", type=int, default=64, help="frames per trajectory")
    parser.add_argument("--batch-size", type=int, default=8, help="trajectories solved together")
    parser.add_argument("--float64", action="store_true", help="float64 FFTs (about 2.5x slower)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = parser.parse_args(argv)
    out = generate_dataset(
        args.out,
        n_train=args.train,
        n_val=args.val,
        n_test=args.test,
        seed=args.seed,
        re=args.re,
        forcing_wavenumber=args.forcing_wavenumber,
        drag=args.drag,
        grid=args.grid,
        dt=args.dt,
        frame_interval=args.frame_interval,
        warmup_time=args.warmup,
        n_frames=args.frames,
        batch_size=args.batch_size,
        dtype=torch.float64 if args.float64 else torch.float32,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()

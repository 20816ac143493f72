"""Batched incompressible buoyant-smoke solver in PyTorch (CPU or GPU, float32).

Grid and units
--------------
Cell-centred fields on an ``H x W`` grid of unit cells: cell ``(i, j)`` sits at ``x = j + 0.5``,
``y = i + 0.5`` in a closed box ``[0, W] x [0, H]``; y grows with the row index, as everywhere in
this project (see :mod:`core.groups`). Time step ``dt`` (default 1) in the same units, so velocity
is in cells per time unit. The batch dimension holds independent simulations.

One step
--------
1. Inflow: each inflow adds smoke at ``rate * dt`` per step inside a round, anti-aliased disc.
2. Smoke is advected by MacCormack (semi-Lagrangian forward and backward passes plus the error
   correction), with the usual limiter clamping to the range of the cells it came from, so smoke
   stays non-negative and creates no new extrema.
3. Buoyancy: ``velocity += dt * sum_inflows smoke_i * strength_i * direction_i * buoyancy_map``.
   Each inflow carries its own smoke field, so inflows with different directions push
   differently.
4. Velocity is advected semi-Lagrangian.
5. Pressure projection, exact: velocity is expanded in the eigenfunctions of a free-slip box
   (u: sine in x, cosine in y; v: cosine in x, sine in y; orthonormal DST-II/DCT-II matrices on
   cell centres), the component along the wave vector is removed mode by mode, and the field is
   transformed back. The spectral divergence of the result is zero to float rounding (the tests
   hold it below ``DIV_TOLERANCE`` relative to the largest speed), and the normal velocity
   vanishes on the walls. The highest (Nyquist) mode of each component is dropped.

Exact symmetry
--------------
Each simulation is solved in its *canonical frame*: the quarter turn that makes its first inflow's
buoyancy point most nearly along +y. Positions, directions and the buoyancy map are turned into
that frame, the solver runs, and the velocity is turned back by exact index permutations
(:func:`core.groups.transform_field`). Two set-ups that are quarter-turn rotations of each other
about the box centre therefore give flows that are exact rotations of each other, whatever tiny
orientation bias floating point leaves in the discretisation; the data's symmetry is exactly what
the scenario says. (Non-square grids are always solved in the grid frame.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .groups import transform_field, transform_scalar

DIV_TOLERANCE = 1e-5  # max |spectral divergence| / max |velocity| after projection, float32
DEFAULT_RATE = 0.2  # smoke added per unit time inside an inflow


@dataclass(frozen=True)
class Inflow:
    """A round smoke source at ``(x, y)`` (cells, from the lower-left corner) whose smoke is
    pushed along ``direction`` (a unit vector is not required; it is normalised) with
    ``strength`` (the buoyancy factor)."""

    x: float
    y: float
    radius: float = 5.0
    direction: tuple[float, float] = (0.0, 1.0)
    strength: float = 0.1
    rate: float = DEFAULT_RATE

    def unit_direction(self) -> tuple[float, float]:
        dx, dy = self.direction
        norm = math.hypot(dx, dy)
        if norm == 0:
            raise ValueError(f"inflow direction must be non-zero, got {self.direction}")
        return dx / norm, dy / norm


@dataclass
class SimulationConfig:
    """Settings of one batched run."""

    grid: tuple[int, int] = (64, 64)
    steps: int = 310
    dt: float = 1.0
    canonical_frames: bool = True
    solver: dict = field(default_factory=lambda: dict(
        smoke_advection="maccormack", velocity_advection="semi-lagrangian",
        projection="spectral (DST/DCT free-slip box), exact", div_tolerance=DIV_TOLERANCE))


def _sine_cosine_bases(n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal DCT-II (modes 0..n-1) and DST-II (modes 1..n) matrices on n cell centres."""
    j = torch.arange(n, dtype=torch.float64) + 0.5
    k = torch.arange(n, dtype=torch.float64)
    cos = torch.cos(math.pi * k[:, None] * j[None] / n) * math.sqrt(2.0 / n)
    cos[0] /= math.sqrt(2.0)
    sin = torch.sin(math.pi * (k[:, None] + 1) * j[None] / n) * math.sqrt(2.0 / n)
    sin[-1] /= math.sqrt(2.0)
    return cos.to(device, dtype), sin.to(device, dtype)


class Projector:
    """Exact divergence-free projection for a free-slip box (see the module docstring)."""

    def __init__(self, grid: tuple[int, int], device, dtype=torch.float32):
        h, w = grid
        self.cx, self.sx = _sine_cosine_bases(w, device, dtype)
        self.cy, self.sy = _sine_cosine_bases(h, device, dtype)
        kx = math.pi * torch.arange(1, w, dtype=torch.float64) / w
        ky = math.pi * torch.arange(1, h, dtype=torch.float64) / h
        k2 = ky[:, None] ** 2 + kx[None] ** 2
        self.kx = (kx[None] / k2.sqrt()).to(device, dtype)  # unit wave vector, x part
        self.ky = (ky[:, None] / k2.sqrt()).to(device, dtype)
        self.kx_raw, self.ky_raw = kx.to(device, dtype), ky.to(device, dtype)

    def _spectra(self, vel: torch.Tensor):
        u, v = vel[:, 0], vel[:, 1]
        a = self.cy @ u @ self.sx.T  # [ky = 0..H-1, kx = 1..W]
        b = self.sy @ v @ self.cx.T  # [ky = 1..H, kx = 0..W-1]
        return a[:, 1:, :-1], b[:, :-1, 1:]  # the common block kx, ky = 1..n-1

    def __call__(self, vel: torch.Tensor) -> torch.Tensor:
        a, b = self._spectra(vel)
        along = a * self.kx + b * self.ky
        a, b = a - along * self.kx, b - along * self.ky
        a_full = F.pad(a, (0, 1, 1, 0))  # back to [ky 0..H-1, kx 1..W], edge modes zero
        b_full = F.pad(b, (1, 0, 0, 1))
        u = self.cy.T @ a_full @ self.sx
        v = self.sy.T @ b_full @ self.cx
        return torch.stack([u, v], 1)

    def divergence(self, vel: torch.Tensor) -> torch.Tensor:
        """Spectral divergence on cell centres (the operator the projection zeroes)."""
        u_hat = self.cy @ vel[:, 0] @ self.sx.T
        v_hat = self.sy @ vel[:, 1] @ self.cx.T
        d = torch.zeros_like(u_hat)
        kx, ky = self.kx_raw, self.ky_raw
        # d/dx of sine mode kx -> cosine mode kx; d/dy of sine mode ky -> cosine mode ky
        d[:, :, 1:] += u_hat[:, :, :-1] * kx[None]
        d[:, 1:, :] += v_hat[:, :-1, :] * ky[:, None]
        return self.cy.T @ d @ self.cx


def max_divergence(velocity: torch.Tensor) -> float:
    """max |spectral divergence| of velocity fields ``[..., 2, H, W]`` (any leading dims)."""
    flat = velocity.reshape(-1, 2, *velocity.shape[-2:]).float()
    proj = Projector(tuple(flat.shape[-2:]), flat.device, torch.float32)
    return float(max((proj.divergence(chunk).abs().max() for chunk in flat.split(256)),
                     default=torch.tensor(0.0)))


def _advect(fields: torch.Tensor, vel: torch.Tensor, dt: float) -> torch.Tensor:
    """Semi-Lagrangian: sample ``fields [B, C, H, W]`` at ``p - dt * vel(p)`` (bilinear, clamped to
    the box)."""
    b, _, h, w = fields.shape
    ys = torch.arange(h, device=vel.device, dtype=vel.dtype) + 0.5
    xs = torch.arange(w, device=vel.device, dtype=vel.dtype) + 0.5
    x = xs[None, None, :] - dt * vel[:, 0]
    y = ys[None, :, None] - dt * vel[:, 1]
    grid = torch.stack([2 * x / w - 1, 2 * y / h - 1], -1)  # align_corners=False convention
    return F.grid_sample(fields, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _maccormack(smoke: torch.Tensor, vel: torch.Tensor, dt: float) -> torch.Tensor:
    lo = -F.max_pool2d(-smoke, 3, 1, 1)
    hi = F.max_pool2d(smoke, 3, 1, 1)
    n = smoke.shape[1]
    forward_, lo, hi = _advect(torch.cat([smoke, lo, hi], 1), vel, dt).split(n, 1)
    backward_ = _advect(forward_, vel, -dt)
    corrected = forward_ + 0.5 * (smoke - backward_)
    # limiter: each sampled bound is at least the range of the cells the value came from
    return torch.maximum(torch.minimum(corrected, hi), lo)


def _quarter_turn_of(direction: tuple[float, float]) -> int:
    """k such that turning ``direction`` by -k*90 degrees points it most nearly along +y."""
    angle = math.atan2(direction[1], direction[0])  # +y is pi/2
    return round((angle - math.pi / 2) / (math.pi / 2)) % 4


def _turn_point(x: float, y: float, k: int, grid: tuple[int, int]) -> tuple[float, float]:
    """Rotate a position by k quarter turns (counter-clockwise) about the box centre."""
    cx, cy = grid[1] / 2, grid[0] / 2
    dx, dy = x - cx, y - cy
    for _ in range(k % 4):
        dx, dy = -dy, dx
    return cx + dx, cy + dy


def _turn_vector(v: tuple[float, float], k: int) -> tuple[float, float]:
    dx, dy = v
    for _ in range(k % 4):
        dx, dy = -dy, dx
    return dx, dy


def simulate(inflows: Sequence[Sequence[Inflow]], config: SimulationConfig | None = None, *,
             buoyancy_map: torch.Tensor | None = None, device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None,
             cancel: Callable[[], bool] | None = None, return_smoke: bool = False,
             counterfactual_map: torch.Tensor | None = None):
    """Run one batch of simulations; return velocity ``[sims, steps, 2, H, W]`` (float32, CPU),
    and with ``return_smoke`` also the final smoke ``[sims, inflows, H, W]`` (grid frame).

    With ``counterfactual_map`` (shaped like ``buoyancy_map``) it returns ``(velocity,
    counterfactual[, smoke])``: ``counterfactual[:, t]`` is the velocity one step would give from
    the simulation's own state before step ``t`` (its smoke and velocity) with that map in place
    of the buoyancy map. Same inputs, another rule: the difference is what the map change does in
    one step, nothing that a diverging trajectory adds.

    Args:
        inflows: per simulation, a non-empty list of :class:`Inflow`.
        config: grid, steps, dt, canonical frames.
        buoyancy_map: ``[H, W]`` or ``[sims, H, W]`` factor on the buoyancy force (default 1).
        device: torch device to run on.
        progress: called as ``progress(step, steps)`` after every step.
        cancel: polled every step; returning True raises ``InterruptedError``.
    """
    config = config or SimulationConfig()
    h, w = config.grid
    n = len(inflows)
    if n == 0 or any(len(s) == 0 for s in inflows):
        raise ValueError("every simulation needs at least one inflow")
    if config.steps < 1 or h < 4 or w < 4:
        raise ValueError(f"need steps >= 1 and a grid of at least 4x4, got steps={config.steps}, "
                         f"grid={config.grid}")
    device = torch.device(device)
    dtype = torch.float32
    if buoyancy_map is None:
        buoyancy_map = torch.ones(h, w)
    if tuple(buoyancy_map.shape[-2:]) != (h, w):
        raise ValueError(f"buoyancy_map must be [H, W] = {config.grid}, got {tuple(buoyancy_map.shape)}")
    buoyancy_map = buoyancy_map.to(dtype).expand(n, h, w).clone()
    maps = [buoyancy_map]
    if counterfactual_map is not None:
        if tuple(counterfactual_map.shape[-2:]) != (h, w):
            raise ValueError(f"counterfactual_map must be [H, W] = {config.grid}, got "
                             f"{tuple(counterfactual_map.shape)}")
        maps.append(counterfactual_map.to(dtype).expand(n, h, w).clone())

    turns = [(_quarter_turn_of(sim[0].unit_direction()) if config.canonical_frames and h == w else 0)
             for sim in inflows]
    most = max(len(s) for s in inflows)
    pos = torch.zeros(n, most, 2, dtype=torch.float64)
    radius = torch.zeros(n, most, dtype=torch.float64)
    push = torch.zeros(n, most, 2, dtype=torch.float64)  # strength * direction
    rate = torch.zeros(n, most, dtype=torch.float64)
    for s, (sim, k) in enumerate(zip(inflows, turns)):
        for i, inflow in enumerate(sim):
            pos[s, i] = torch.tensor(_turn_point(inflow.x, inflow.y, -k, config.grid))
            d = _turn_vector(inflow.unit_direction(), -k)
            push[s, i] = torch.tensor(d) * inflow.strength
            radius[s, i], rate[s, i] = inflow.radius, inflow.rate
        if k:
            for m in maps:
                m[s] = transform_scalar(m[s], "C4", (4 - k) % 4)

    ys = torch.arange(h, dtype=torch.float64) + 0.5
    xs = torch.arange(w, dtype=torch.float64) + 0.5
    dist = torch.sqrt((xs[None, None, None, :] - pos[..., 0, None, None]) ** 2
                      + (ys[None, None, :, None] - pos[..., 1, None, None]) ** 2)
    disc = (radius[..., None, None] - dist + 0.5).clamp(0, 1)  # anti-aliased disc
    source = (disc * rate[..., None, None] * config.dt).to(device, dtype)  # [sims, inflows, H, W]
    force, *other = [(push[..., None, None] * m[:, None, None].double()).to(device, dtype)
                     for m in maps]

    projector = Projector(config.grid, device, dtype)
    smoke = torch.zeros(n, most, h, w, device=device, dtype=dtype)
    vel = torch.zeros(n, 2, h, w, device=device, dtype=dtype)
    out = torch.empty(n, config.steps, 2, h, w, device=device, dtype=dtype)
    counterfactual = torch.empty_like(out) if other else None
    dt = config.dt
    for step in range(config.steps):
        if cancel is not None and cancel():
            raise InterruptedError(f"simulation cancelled at step {step}")
        smoke = _maccormack(smoke + source, vel, dt)
        if other:
            pushed = vel + dt * (smoke[:, :, None] * other[0]).sum(1)
            counterfactual[:, step] = projector(_advect(pushed, pushed, dt))
        vel = vel + dt * (smoke[:, :, None] * force).sum(1)
        vel = projector(_advect(vel, vel, dt))
        out[:, step] = vel
        if progress is not None:
            progress(step + 1, config.steps)
    for s, k in enumerate(turns):
        if k:
            out[s] = transform_field(out[s], "C4", k)
            smoke[s] = transform_scalar(smoke[s], "C4", k)
            if other:
                counterfactual[s] = transform_field(counterfactual[s], "C4", k)
    results = [out.cpu()] + ([counterfactual.cpu()] if other else []) + (
        [smoke.cpu()] if return_smoke else [])
    return results[0] if len(results) == 1 else tuple(results)

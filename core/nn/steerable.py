"""Steerable convolutions for rotations (C_n and band-limited SO(2)), strict and relaxed.

Field types are irreducible representations of the rotation group: frequency 0 (scalars,
invariant) and frequency 1 (vectors, turning with the grid as in velocity stacks). Channels list
all scalar fields first, then the vector fields as interleaved (u, v) pairs.

Steerable basis (our construction). A kernel from type m to type n must satisfy
``K(g z) = rho_n(g) K(z) rho_m(g)^-1``. We take smooth candidate functions, Gaussian rings times
angular harmonics times every matrix unit, and project them onto the solution space with the
group average (Reynolds operator) ``K_bar(z) = mean_g rho_n(g)^-1 K(g z) rho_m(g)``, evaluated
analytically at the rotated points ``g z`` (no interpolation). For SO(2) the average runs over
``4 (band_limit + 3)`` equally spaced angles, which is exact for candidates of angular frequency
at most ``band_limit``. An SVD of the sampled results gives an orthonormal basis ``K_b``. Every
group containing the 90 degree rotation maps the kernel grid onto itself under it, so layers built
from this basis are exactly equivariant to 90 degree rotations; other angles are equivariant in the
continuum and approximately so on the grid.

Relaxed steerable conv: ``K(z) = sum_b w_b(z) K_b(z)``: the coefficients may vary with the kernel
offset ``z``. They start constant over offsets (an exactly equivariant layer), and the penalty
R = mean |w_b(z) - w_b(z')| over neighbouring offsets pulls them back. The bias sits on scalar
fields only.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import RotationGroup, SO2Group, get_group
from .cache import CachedKernel, neighbour_abs_difference

FREQS = (0, 1)  # scalar, vector


def _irrep(freq: int, angles: torch.Tensor) -> torch.Tensor:
    """``[len(angles), d, d]`` matrices of the frequency-``freq`` irrep of SO(2)."""
    if freq == 0:
        return torch.ones(len(angles), 1, 1, dtype=torch.float64)
    c, s = torch.cos(freq * angles), torch.sin(freq * angles)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _averaging_angles(group) -> torch.Tensor:
    if isinstance(group, RotationGroup):
        n = group.n
    else:
        n = 4 * (group.band_limit + 3)
    return 2 * math.pi * torch.arange(n, dtype=torch.float64) / n


def _snap(m: torch.Tensor) -> torch.Tensor:
    """Round entries within 1e-12 of 0 or +-1 so quarter turns are exact sign permutations."""
    r = torch.round(m)
    return torch.where((m - r).abs() < 1e-12, r, m)


@lru_cache(maxsize=64)
def steerable_basis(group_key: str, band_limit: int, in_freq: int, out_freq: int,
                    kernel_size: int) -> torch.Tensor:
    """Orthonormal basis ``[nb, d_out, d_in, k, k]`` (float64) of kernels from ``in_freq`` fields
    to ``out_freq`` fields equivariant under ``group_key`` ("C<n>" or "SO2")."""
    group = get_group(group_key, band_limit=band_limit) if group_key == "SO2" else get_group(group_key)
    p = kernel_size // 2
    coords = torch.arange(-p, p + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(coords, coords, indexing="ij")  # row index = y, column = x
    pts = torch.stack([dx.flatten(), dy.flatten()], -1)  # [kk, 2] as (x, y)
    angles = _averaging_angles(group)
    rot = _snap(_irrep(1, angles))  # [t, 2, 2]
    moved = torch.einsum("tab,zb->tza", rot, pts)  # g z for every averaging element
    r = moved.norm(dim=-1)
    phi = torch.atan2(moved[..., 1], moved[..., 0])
    radii = sorted({*range(p + 1), p * math.sqrt(2)})
    max_harmonic = group.band_limit if isinstance(group, SO2Group) else kernel_size
    rings = torch.stack([torch.exp(-((r - rj) ** 2) / (2 * 0.6 ** 2)) for rj in radii], 1)  # [t, R, kk]
    harm = [torch.ones_like(phi)]
    for a in range(1, max_harmonic + 1):
        harm += [torch.cos(a * phi), torch.sin(a * phi)]
    harm = torch.stack(harm, 1)  # [t, A, kk]
    cand = (rings[:, :, None] * harm[:, None]).flatten(1, 2)  # [t, f, kk]: candidates at g z
    rho_out, rho_in = _snap(_irrep(out_freq, angles)), _snap(_irrep(in_freq, angles))
    # K_bar[f,p,q] = mean_g rho_out(g)^T E_pq rho_in(g) * cand_f(g z)
    avg = torch.einsum("tfz,tpa,tqb->fpqabz", cand, rho_out, rho_in) / len(angles)
    mat = avg.flatten(3).flatten(0, 2)  # [candidates, d_out*d_in*kk]
    _, s, vh = torch.linalg.svd(mat, full_matrices=False)
    keep = s > 1e-8 * s[0]
    d_out, d_in = rho_out.shape[-1], rho_in.shape[-1]
    return vh[keep].reshape(-1, d_out, d_in, kernel_size, kernel_size).contiguous()


def _group_key(group) -> tuple[str, int]:
    group = get_group(group)
    if isinstance(group, RotationGroup):
        return group.name, 0
    if isinstance(group, SO2Group):
        return "SO2", group.band_limit
    raise ValueError(f"steerable convolutions support C<n> and SO2, got {group.name}")


class RelaxedSteerableConv(CachedKernel):
    """Steerable conv between ``in_fields = (scalars, vectors)`` and ``out_fields`` of the same form.

    ``relaxed=False`` gives the strict layer (one coefficient per basis kernel), computed by the
    same code as the relaxed one with coefficients shared across offsets.
    """

    def __init__(self, group, in_fields: tuple[int, int], out_fields: tuple[int, int],
                 kernel_size: int = 3, relaxed: bool = True, bias: bool = True):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        key, band = _group_key(group)
        self.group = get_group(group)
        self.in_fields, self.out_fields = tuple(in_fields), tuple(out_fields)
        self.kernel_size, self.relaxed = kernel_size, relaxed
        kk = kernel_size ** 2
        self._blocks = []  # (out freq, in freq, start, n_out, n_in, n_basis)
        start = 0
        dtype = torch.get_default_dtype()
        for n, n_out in zip(FREQS, self.out_fields):
            for m, n_in in zip(FREQS, self.in_fields):
                if not (n_out and n_in):
                    continue
                basis = steerable_basis(key, band, m, n, kernel_size)
                if len(basis) == 0:
                    continue
                self.register_buffer(f"basis_{n}_{m}", basis.flatten(3).to(dtype), persistent=False)
                self._blocks.append((n, m, start, n_out, n_in, len(basis)))
                start += n_out * n_in * len(basis)
        self.coeff = nn.Parameter(torch.empty(start, kk if relaxed else 1))
        n_scalar_out = self.out_fields[0]
        self.bias = nn.Parameter(torch.zeros(n_scalar_out)) if bias and n_scalar_out else None
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        return self.in_fields[0] + 2 * self.in_fields[1]

    @property
    def out_channels(self) -> int:
        return self.out_fields[0] + 2 * self.out_fields[1]

    def reset_parameters(self) -> None:
        kk = self.kernel_size ** 2
        fan_in = self.in_channels * kk
        with torch.no_grad():
            for n, m, start, n_out, n_in, nb in self._blocks:
                d = (1 + n) * (1 + m)  # d_out * d_in
                std = math.sqrt(2.0 / fan_in * d * kk / nb)
                values = torch.randn(n_out * n_in * nb, 1) * std
                self.coeff[start:start + len(values)] = values.expand(-1, self.coeff.shape[1])
            if self.bias is not None:
                self.bias.zero_()

    @property
    def relaxed_weight(self) -> torch.Tensor | None:
        """Coefficients ``[n_coefficients, k*k]`` per kernel offset (None when strict)."""
        return self.coeff if self.relaxed else None

    def symmetry_penalty(self) -> torch.Tensor:
        """R = mean |w_b(z) - w_b(z')| over neighbouring kernel offsets z, z'."""
        k = self.kernel_size
        return neighbour_abs_difference(self.coeff.view(-1, k, k))

    def build_kernel(self) -> torch.Tensor:
        k = self.kernel_size
        rows = {}
        for n, m, start, n_out, n_in, nb in self._blocks:  # at most 4 type pairs
            basis = getattr(self, f"basis_{n}_{m}")  # [nb, d_out, d_in, kk]
            c = self.coeff[start:start + n_out * n_in * nb].view(n_out, n_in, nb, -1)
            K = torch.einsum("oibz,bdez->odiez", c.expand(-1, -1, -1, k * k), basis)
            rows.setdefault(n, {})[m] = K.reshape(n_out * (1 + n), n_in * (1 + m), k, k)
        blocks = []
        for n, n_out in zip(FREQS, self.out_fields):
            if not n_out:
                continue
            cols = []
            for m, n_in in zip(FREQS, self.in_fields):
                if not n_in:
                    continue
                block = rows.get(n, {}).get(m)
                if block is None:
                    block = self.coeff.new_zeros(n_out * (1 + n), n_in * (1 + m), k, k)
                cols.append(block)
            blocks.append(torch.cat(cols, 1))
        return torch.cat(blocks, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None
        if self.bias is not None:
            bias = torch.cat([self.bias, self.bias.new_zeros(2 * self.out_fields[1])])
        return F.conv2d(x, self.kernel(), bias, padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return (f"{self.group.name}, {self.in_fields} -> {self.out_fields} (scalars, vectors), "
                f"kernel_size={self.kernel_size}, relaxed={self.relaxed}")


class GatedNonlinearity(nn.Module):
    """Equivariant non-linearity for ``[scalars | gates | vectors]`` channels: ReLU on the scalars,
    each vector scaled by the sigmoid of its (invariant) gate. Output ``[scalars | vectors]``."""

    def __init__(self, scalars: int, vectors: int):
        super().__init__()
        self.scalars, self.vectors = scalars, vectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, g, v = torch.split(x, [self.scalars, self.vectors, 2 * self.vectors], dim=1)
        gate = torch.sigmoid(g).repeat_interleave(2, dim=1)
        return torch.cat([F.relu(s), v * gate], 1)

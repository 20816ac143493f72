"""Scale-equivariant convolutions (strict and relaxed) on a steerable Hermite-Gaussian basis.

Our own construction in the spirit of Sosnovik, Szmaja & Smeulders, "Scale-Equivariant Steerable
Networks" (ICLR 2020). No code of theirs is used.

Features
--------
* ``"scalar"``: plain channels ``[C]`` (the velocity components u and v of the input stack are
  treated as two scalar channels each: see "vectors" below).
* ``"scale"``: functions on (position, scale), channels ``[S * C]`` **scale-major** (channel
  ``s * C + c`` is field ``c`` at scale ``sigma_s``), ``S`` the number of scales. Scale-major
  makes a layer that keeps scales apart a grouped convolution (``groups = S``).
* ``"pooled"`` (output only): the mean over scales of a per-scale conv, ``[C]`` channels.

Basis
-----
Hermite-Gaussian functions of total order ``n + m <= 2`` (6 functions: the Gaussian, its two
first and three second "derivatives"), ``h_nm(t) = He_n(t_x) He_m(t_y) exp(-|t|^2 / 2) / c_nm``
with probabilists' Hermite polynomials and ``c_nm`` making ``h_nm`` unit-norm in the continuum.
At scale ``s`` they are dilated, ``psi_{b,s}(z) = h_b(z / sigma_s) / sigma_s^2`` with
``sigma_s = sigma0 * s``, and sampled at the integer offsets of a ``K x K`` grid. The ``1 /
sigma^2`` factor keeps the integral of every dilated function, which is what makes the lifting
conv commute with zooming in the continuum: for ``f'(y) = f(y / a)``,
``(f' * psi_{b,s})(x) = (f * psi_{b,s/a})(x / a)``.

Sizes: ``kernel_size = k`` (odd) is the support at scale 1, ``sigma0 = 0.5 * (k // 2)``
(0.5 cell for k = 3, so ``h`` is resolved by the 3 x 3 neighbourhood as a 3 x 3 CNN kernel is),
and the sampled grid grows with the largest scale: ``K = 2 * ceil((k // 2) * max(scales)) + 1``
(7 x 7 for k = 3 and scales up to 2.5; the Gaussian is then cut at 2.4 sigma at the largest
scale, a truncation that is part of why equivariance on the grid is approximate).

Layers
------
``out(x, s) = sum_i sum_t sum_b w[o, i, t, b] (f_i(., s + t) * psi_{b,s})(x)`` for ``t`` in
``0 .. scale_size - 1`` (scale-to-scale), ``out(x, s) = sum_i sum_b w[o, i, b] (f_i *
psi_{b,s})(x)`` (lift), and ``out(x) = mean_s`` of the scale-to-scale formula (pooled projection).
Scale indices past the largest scale are zeros (the window of scales is truncated, as in SESN).
With ``scale_size = 1`` (the default, and what the models use) every scale is processed apart by
the *same* filters dilated to its scale, for any set of scales. ``scale_size > 1`` mixes
neighbouring scales, which is equivariant only when the scales form a geometric ladder (each
one a fixed factor times the previous); the default 1, 1.5, 2, 2.5 does not.

Vectors and magnitudes. Zooming a velocity field by ``a`` also multiplies the vectors by ``a``
(:mod:`core.groups`). The lift treats u and v as scalar channels (it needs no rotation
behaviour), and the scale networks have **no biases**: linear convs, ReLU and the mean over
scales are positively homogeneous, so multiplying the input by ``a > 0`` multiplies every feature
and the output by ``a`` exactly. The zoom part is then the only approximate part.

Relaxation
----------
Coefficients ``w[o, i, t, b](s, z)`` may vary with the scale ``s`` and with the kernel offset
``z``: ``K_s(z) = sum_b w_b(s, z) psi_{b,s}(z)``. They start constant over both (the strict
layer, to the last bit), and ``symmetry_penalty()`` is
``R = mean |w(s+1, z) - w(s, z)| + mean |w(s, z') - w(s, z)|`` over neighbouring scales and
neighbouring offsets (each term a mean over its neighbour pairs), zero exactly when the
coefficients are constant over scales and offsets. ``relaxed_weight`` is that parameter,
``[n_coefficients, S, K, K]``. The strict layer stores ``[n_coefficients, 1, 1, 1]``.

The expansion (basis x coefficients, and the placement of scale taps) is one einsum and every
forward is one conv2d; the kernel is cached in eval mode (:class:`CachedKernel`).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cache import CachedKernel, neighbour_abs_difference

IN_REPS = ("scalar", "scale")
OUT_REPS = ("scale", "pooled")
MAX_ORDER = 2
SIGMA_PER_RADIUS = 0.5


def _hermite(n: int, t: np.ndarray) -> np.ndarray:
    """Probabilists' Hermite polynomial He_n(t)."""
    return np.polynomial.hermite_e.hermeval(t, [0] * n + [1])


def basis_orders(max_order: int = MAX_ORDER) -> list[tuple[int, int]]:
    """``(n, m)`` of the Hermite-Gaussian functions, by total order then n descending."""
    return [(n, total - n) for total in range(max_order + 1) for n in range(total, -1, -1)]


def sigma0_for(kernel_size: int) -> float:
    """The Gaussian width at scale 1 for a ``kernel_size`` layer (module docstring)."""
    return SIGMA_PER_RADIUS * max(kernel_size // 2, 1)


def grid_size(kernel_size: int, scales: Sequence[float]) -> int:
    """Side ``K`` of the sampled kernel grid, large enough for the largest scale."""
    return 2 * math.ceil(kernel_size // 2 * max(scales) - 1e-9) + 1


@lru_cache(maxsize=32)
def scale_basis(scales: tuple[float, ...], kernel_size: int,
                sigma0: float | None = None) -> torch.Tensor:
    """Hermite-Gaussian basis ``[B, S, K, K]`` (float64): ``psi_{b,s}(z) = h_b(z / sigma_s) /
    sigma_s^2`` sampled at integer offsets ``z = (x, y)`` (row index = y, column = x), scales
    in the given order. ``B = 6`` (orders up to 2), or 1 for ``kernel_size = 1``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    sigma0 = sigma0_for(kernel_size) if sigma0 is None else float(sigma0)
    K = grid_size(kernel_size, scales)
    r = K // 2
    coords = np.arange(-r, r + 1, dtype=np.float64)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    # continuum norms: int He_n(t)^2 exp(-t^2) dt by Gauss-Hermite quadrature (exact)
    nodes, weights = np.polynomial.hermite.hermgauss(16)
    norm1 = [float((weights * _hermite(n, nodes) ** 2).sum()) for n in range(MAX_ORDER + 1)]
    orders = basis_orders(MAX_ORDER if kernel_size > 1 else 0)
    out = np.empty((len(orders), len(scales), K, K))
    for j, s in enumerate(scales):
        sigma = sigma0 * float(s)
        tx, ty = xx / sigma, yy / sigma
        gauss = np.exp(-(tx ** 2 + ty ** 2) / 2)
        for b, (n, m) in enumerate(orders):
            h = _hermite(n, tx) * _hermite(m, ty) * gauss / math.sqrt(norm1[n] * norm1[m])
            out[b, j] = h / sigma ** 2
    return torch.from_numpy(out)


class RelaxedScaleConv(CachedKernel):
    """Scale conv from ``in_fields`` of type ``in_rep`` to ``out_fields`` of type ``out_rep``.

    ``scales``: the scale factors (ascending order is used for the scale axis), e.g. a
    :class:`core.groups.ScaleGroup`'s ``sorted_scales()``. ``relaxed=False`` gives the strict
    layer (one coefficient per basis function, shared by all scales and offsets), computed by the
    same code as the relaxed one. No bias (module docstring). See the module docstring for the
    formulas, the basis and the channel layout.
    """

    def __init__(self, scales: Sequence[float], in_fields: int, out_fields: int,
                 in_rep: str = "scale", out_rep: str = "scale", kernel_size: int = 3,
                 scale_size: int = 1, relaxed: bool = True, sigma0: float | None = None):
        super().__init__()
        if in_rep not in IN_REPS:
            raise ValueError(f"in_rep must be one of {IN_REPS}, got {in_rep!r}")
        if out_rep not in OUT_REPS:
            raise ValueError(f"out_rep must be one of {OUT_REPS}, got {out_rep!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        scales = tuple(sorted(float(s) for s in scales))
        if not scales or len(set(scales)) != len(scales) or scales[0] <= 0:
            raise ValueError(f"scales must be distinct positive numbers, got {scales}")
        if int(scale_size) != scale_size or scale_size < 1 or scale_size > len(scales):
            raise ValueError(f"scale_size must be an integer in 1..{len(scales)}, got {scale_size}")
        if in_rep == "scalar" and scale_size != 1:
            raise ValueError("a lifting layer (in_rep='scalar') has no scale axis to mix: "
                             "scale_size must be 1")
        self.scales = scales
        self.in_fields, self.out_fields = int(in_fields), int(out_fields)
        self.in_rep, self.out_rep = in_rep, out_rep
        self.kernel_size, self.scale_size, self.relaxed = kernel_size, int(scale_size), relaxed
        self.sigma0 = sigma0_for(kernel_size) if sigma0 is None else float(sigma0)
        basis = scale_basis(scales, kernel_size, self.sigma0)
        self.n_basis, S, self.grid = basis.shape[0], len(scales), basis.shape[-1]
        dtype = torch.get_default_dtype()
        self.register_buffer("basis", basis.to(dtype), persistent=False)  # [B, S, K, K]
        # taps[t, s, r] = 1 when output scale s reads input scale r = s + t
        taps = torch.zeros(self.scale_size, S, S, dtype=dtype)
        for t in range(self.scale_size):
            taps[t, torch.arange(S - t), torch.arange(t, S)] = 1.0
        self.register_buffer("taps", taps, persistent=False)
        n = self.out_fields * self.in_fields * self.scale_size * self.n_basis
        shape = (n, S, self.grid, self.grid) if relaxed else (n, 1, 1, 1)
        self.coeff = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def in_channels(self) -> int:
        return self.in_fields * (self.num_scales if self.in_rep == "scale" else 1)

    @property
    def out_channels(self) -> int:
        return self.out_fields * (self.num_scales if self.out_rep == "scale" else 1)

    @property
    def _grouped(self) -> bool:
        """Scales kept apart, scale in and out: a grouped conv with ``groups = S``."""
        return self.in_rep == "scale" and self.out_rep == "scale" and self.scale_size == 1

    def reset_parameters(self) -> None:
        """He-style init, the same draw for every scale and offset (an exactly strict layer):
        ``std^2 = 2 / (fan_in * mean_{b,s} |psi_{b,s}|^2)``, fan_in = input fields x taps x
        basis functions, so white-noise inputs keep their variance through conv + ReLU."""
        energy = float(self.basis.double().pow(2).sum((-2, -1)).mean())
        fan_in = self.in_fields * self.scale_size * self.n_basis
        std = math.sqrt(2.0 / (fan_in * energy))
        with torch.no_grad():
            values = torch.randn(self.coeff.shape[0], 1, 1, 1) * std
            self.coeff.copy_(values.expand_as(self.coeff))

    @property
    def relaxed_weight(self) -> torch.Tensor | None:
        """Coefficients ``[n_coefficients, S, K, K]`` per scale and kernel offset (None when
        strict); ``n_coefficients`` runs over (out field, in field, scale tap, basis function)."""
        return self.coeff if self.relaxed else None

    def symmetry_penalty(self) -> torch.Tensor:
        """R = mean |w(s+1) - w(s)| over neighbouring scales + mean |w(z') - w(z)| over
        neighbouring kernel offsets (module docstring); 0 exactly when w is constant."""
        return neighbour_abs_difference(self.coeff, dims=(-3, -2, -1))

    def build_kernel(self) -> torch.Tensor:
        O, I, T, B, S, K = (self.out_fields, self.in_fields, self.scale_size, self.n_basis,
                            self.num_scales, self.grid)
        c = self.coeff.expand(-1, S, K, K).view(O, I, T, B, S, K, K)
        if self.in_rep == "scalar":  # [S * O, I, K, K], output channel s * O + o
            w = torch.einsum("oibsyx,bsyx->soiyx", c[:, :, 0], self.basis)
            return w.reshape(S * O, I, K, K)
        if self._grouped:  # [S * O, I, K, K] for conv2d(groups=S)
            w = torch.einsum("oibsyx,bsyx->soiyx", c[:, :, 0], self.basis)
            return w.reshape(S * O, I, K, K)
        if self.out_rep == "scale":  # dense [S * O, S * I, K, K], input channel r * I + i
            w = torch.einsum("oitbsyx,bsyx,tsr->soriyx", c, self.basis, self.taps)
            return w.reshape(S * O, S * I, K, K)
        # pooled: mean over output scales, [O, S * I, K, K]
        w = torch.einsum("oitbsyx,bsyx,tsr->oriyx", c, self.basis, self.taps) / S
        return w.reshape(O, S * I, K, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels "
                             f"({self.in_fields} fields, {self.in_rep}), got {x.shape[-3]}")
        groups = self.num_scales if self._grouped else 1
        return F.conv2d(x, self.kernel(), padding=self.grid // 2, groups=groups)

    def extra_repr(self) -> str:
        scales = ", ".join(f"{s:g}" for s in self.scales)
        return (f"scales=({scales}), {self.in_fields} {self.in_rep} -> {self.out_fields} "
                f"{self.out_rep}, kernel_size={self.kernel_size} (grid {self.grid}), "
                f"sigma0={self.sigma0:g}, scale_size={self.scale_size}, relaxed={self.relaxed}")


def pool_scales(x: torch.Tensor, num_scales: int) -> torch.Tensor:
    """Mean over the scale axis of scale-major features ``[B, S * C, H, W]`` -> ``[B, C, H, W]``."""
    return x.unflatten(-3, (num_scales, -1)).mean(-4)

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
``sigma_s = sigma0 s / min(scales)``, cut to the disc ``|z| <= 3 sigma_s`` and sampled at the
integer offsets of a ``K x K`` grid. The ``1 / sigma^2`` factor keeps the integral of every
dilated function, which is what makes the lifting conv commute with zooming in the continuum:
for ``f'(y) = f(y / a)``, ``(f' * psi_{b,s})(x) = (f * psi_{b,s/a})(x / a)``. Sampling a narrow
Gaussian changes its moments (the sampled second-order functions at sigma = 0.5 cell are far
from zero-sum), so each scale's sampled functions are re-mixed within their own span until
their moments up to order 2 equal the continuum ones (:func:`scale_basis`): on inputs that are
smooth over the kernel, every scale then responds as the continuum filter does.

Sizes: ``kernel_size = k`` (odd) is the support at the smallest scale: ``sigma0 = k / 6``, so
the disc ``|z| <= 3 sigma`` has radius ``k / 2`` there (0.5 cell and the 3 x 3 neighbourhood of
a 3 x 3 CNN kernel for k = 3 and the default scales). The disc grows with the scale, which keeps
the cut itself scale-consistent, and the sampled grid holds the largest disc:
``K = 2 floor(3 sigma_max) + 1`` (7 x 7 for k = 3 and scales up to 2.5). Offsets outside a
scale's disc are exactly zero at that scale (:func:`scale_support`).

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

What is equivariant. A zoom by ``a`` that maps a scale ``s`` of the window onto a scale ``a s``
of the window (with the defaults, only 1 -> 2 for a = 2) maps the features at scale ``s`` of
the original onto the features at scale ``a s`` of the zoomed input, layer after layer, up to
the grid (sampling, bilinear resampling of the zoom, borders). The pooled output averages over
a *truncated* window of scales, which a zoom shifts: it is not equivariant even in the
continuum, and a 2x zoom of a 1 .. 2.5 window leaves little overlap. Tests measure both
(``tests/core/test_scale.py``); ``core.models.ScaleNet.per_scale`` exposes the per-scale
predictions.

Relaxation
----------
Coefficients ``w[o, i, t, b](s, z)`` may vary with the scale ``s`` and with the kernel offset
``z``: ``K_s(z) = sum_b w_b(s, z) psi_{b,s}(z)``. They start constant over both (the strict
layer, to the last bit), and ``symmetry_penalty()`` is
``R = mean |w(s+1, z) - w(s, z)| + mean |w(s, z + e_y) - w(s, z)|
+ mean |w(s, z + e_x) - w(s, z)|``, each a mean over the neighbour pairs (and coefficients)
inside the support, zero exactly when the coefficients are constant over scales and offsets.
Entries outside a scale's support multiply a zero basis value: they get no gradient from the
loss or the penalty and take no part in the breaking analysis, so optimisers that normalise
gradients (Adam) cannot turn tiny, meaningless gradients there into spurious breaking (weight
decay may shrink them, which changes no kernel and no score).
``relaxed_weight`` is the parameter, ``[n_coefficients, S, K, K]``; the strict layer stores
``[n_coefficients, 1, 1, 1]``.

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

from .cache import CachedKernel

IN_REPS = ("scalar", "scale")
OUT_REPS = ("scale", "pooled")
MAX_ORDER = 2
CUT = 3.0  # every basis function is cut at |z| = CUT sigma_s


def _hermite(n: int, t: np.ndarray) -> np.ndarray:
    """Probabilists' Hermite polynomial He_n(t)."""
    return np.polynomial.hermite_e.hermeval(t, [0] * n + [1])


def basis_orders(max_order: int = MAX_ORDER) -> list[tuple[int, int]]:
    """``(n, m)`` of the Hermite-Gaussian functions, by total order then n descending."""
    return [(n, total - n) for total in range(max_order + 1) for n in range(total, -1, -1)]


def sigma0_for(kernel_size: int) -> float:
    """The Gaussian width at the smallest scale for a ``kernel_size`` layer: ``kernel_size / 6``,
    so the support disc ``|z| <= 3 sigma`` has radius ``kernel_size / 2`` (module docstring)."""
    return kernel_size / (2 * CUT)


def sigmas(scales: Sequence[float], kernel_size: int, sigma0: float | None = None) -> list[float]:
    """``sigma_s = sigma0 * s / min(scales)`` in cells, one per scale (in the given order)."""
    sigma0 = sigma0_for(kernel_size) if sigma0 is None else float(sigma0)
    smallest = min(float(s) for s in scales)
    return [sigma0 * float(s) / smallest for s in scales]


def grid_size(kernel_size: int, scales: Sequence[float], sigma0: float | None = None) -> int:
    """Side ``K`` of the sampled kernel grid: it holds the support disc of the largest scale."""
    return 2 * math.floor(CUT * max(sigmas(scales, kernel_size, sigma0)) + 1e-9) + 1


def scale_support(scales: tuple[float, ...], kernel_size: int,
                  sigma0: float | None = None) -> torch.Tensor:
    """``[S, K, K]`` bool: offsets ``z`` with ``|z| <= 3 sigma_s`` at each scale."""
    K = grid_size(kernel_size, scales, sigma0)
    r = torch.arange(K, dtype=torch.float64) - K // 2
    dist = (r[:, None] ** 2 + r[None, :] ** 2).sqrt()
    widths = sigmas(scales, kernel_size, sigma0)
    return torch.stack([dist <= CUT * sigma + 1e-9 for sigma in widths])


def _moments_1d(max_order: int) -> np.ndarray:
    """``I[n, a] = int t^a He_n(t) exp(-t^2 / 2) dt`` (Gauss-Hermite quadrature, exact)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(16)
    return np.array([[float((weights * nodes ** a * _hermite(n, nodes)).sum())
                      for a in range(max_order + 1)] for n in range(max_order + 1)])


@lru_cache(maxsize=32)
def scale_basis(scales: tuple[float, ...], kernel_size: int, sigma0: float | None = None,
                match_moments: bool = True) -> torch.Tensor:
    """Hermite-Gaussian basis ``[B, S, K, K]`` (float64): ``psi_{b,s}(z) = h_b(z / sigma_s) /
    sigma_s^2`` (``sigma_s = sigma0 s / min(scales)``, :func:`sigmas`) sampled at the integer
    offsets ``z = (x, y)`` (row index = y, column = x) inside the support disc
    ``|z| <= 3 sigma_s`` and zero outside, scales in the given order. ``B = 6`` (orders up to
    2), or 1 for ``kernel_size = 1``. Cached: treat the result as read-only.

    Sampling a narrow Gaussian on the integer grid (and cutting it at 3 sigma) changes its
    moments: e.g. the sampled second-order functions at sigma = 0.5 are far from zero-sum. With
    ``match_moments`` each scale's sampled functions are re-mixed by a 6 x 6 change of basis
    ``T_s`` (within their own span) so that their moments up to order 2 equal the continuum ones,
    ``sum_z z^alpha psi_{b,s}(z) = sigma_s^|alpha| int t^alpha h_b(t) dt``. On inputs that are
    smooth over the kernel (second-order Taylor expansion accurate) every scale then responds as
    the continuum filter does, which is what the scale equivariance of the continuum
    construction needs. ``match_moments=False`` keeps the plainly sampled functions.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    K = grid_size(kernel_size, scales, sigma0)
    support = scale_support(scales, kernel_size, sigma0).numpy()
    widths = sigmas(scales, kernel_size, sigma0)
    r = K // 2
    coords = np.arange(-r, r + 1, dtype=np.float64)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    # continuum norms: int He_n(t)^2 exp(-t^2) dt by Gauss-Hermite quadrature (exact)
    nodes, weights = np.polynomial.hermite.hermgauss(16)
    norm1 = [float((weights * _hermite(n, nodes) ** 2).sum()) for n in range(MAX_ORDER + 1)]
    orders = basis_orders(MAX_ORDER if kernel_size > 1 else 0)
    moments_1d = _moments_1d(MAX_ORDER)
    norms = np.array([math.sqrt(norm1[n] * norm1[m]) for n, m in orders])
    # mu[b, alpha] = int t^alpha h_b(t) dt, alpha over the same (a, c) exponent pairs
    mu = np.array([[moments_1d[n, a] * moments_1d[m, c] for a, c in orders]
                   for n, m in orders]) / norms[:, None]
    total = np.array([a + c for a, c in orders])
    monomials = np.stack([xx ** a * yy ** c for a, c in orders])  # [alpha, K, K]
    out = np.empty((len(orders), len(scales), K, K))
    for j, (s, sigma) in enumerate(zip(scales, widths)):
        tx, ty = xx / sigma, yy / sigma
        gauss = np.exp(-(tx ** 2 + ty ** 2) / 2)
        sampled = np.stack([_hermite(n, tx) * _hermite(m, ty) * gauss
                            for n, m in orders]) / norms[:, None, None] / sigma ** 2
        sampled = sampled * support[j]
        if match_moments:
            have = np.einsum("byx,ayx->ba", sampled, monomials)  # sampled moments [b, alpha]
            want = mu * sigma ** total[None, :]
            if np.linalg.cond(have) > 1e8:
                raise ValueError(f"scale {s:g} (sigma {sigma:g} cells) is too small to sample "
                                 f"the basis on a {K}x{K} grid; use larger scales or kernel_size")
            sampled = np.einsum("bc,cyx->byx", want @ np.linalg.inv(have), sampled)
        out[:, j] = sampled
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
                 scale_size: int = 1, relaxed: bool = True, sigma0: float | None = None,
                 match_moments: bool = True):
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
        basis = scale_basis(scales, kernel_size, self.sigma0, match_moments)
        self.n_basis, S, self.grid = basis.shape[0], len(scales), basis.shape[-1]
        dtype = torch.get_default_dtype()
        self.register_buffer("basis", basis.to(dtype=dtype, copy=True),  # [B, S, K, K]
                             persistent=False)
        support = scale_support(scales, kernel_size, self.sigma0)
        self.register_buffer("support", support, persistent=False)  # [S, K, K] bool
        for name, pairs in _neighbour_pairs(support).items():
            self.register_buffer(f"pairs_{name}", pairs, persistent=False)
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
        neighbouring kernel offsets along y and along x, inside the support (module docstring);
        0 exactly when w is constant there. 0 for a strict layer."""
        if not self.relaxed:
            return self.coeff.new_zeros(())
        flat = self.coeff.flatten(1)  # [n, S*K*K]
        terms = [(flat[:, pairs[0]] - flat[:, pairs[1]]).abs().mean()
                 for pairs in (self.pairs_scale, self.pairs_y, self.pairs_x) if pairs.shape[1]]
        return torch.stack(terms).sum() if terms else flat.new_zeros(())

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

    def per_scale(self, x: torch.Tensor) -> torch.Tensor:
        """A pooled layer's output before the mean over scales, ``[B, S * O, H, W]`` (scale-major:
        what each scale path predicts); for other layers the same as ``forward``. Not cached."""
        if self.out_rep != "pooled":
            return self(x)
        O, I, T, B, S, K = (self.out_fields, self.in_fields, self.scale_size, self.n_basis,
                            self.num_scales, self.grid)
        c = self.coeff.expand(-1, S, K, K).view(O, I, T, B, S, K, K)
        w = torch.einsum("oitbsyx,bsyx,tsr->soriyx", c, self.basis, self.taps)
        return F.conv2d(x, w.reshape(S * O, S * I, K, K), padding=K // 2)

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


def _neighbour_pairs(support: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flat index pairs ``[2, n_pairs]`` into ``[S * K * K]`` of neighbours that are both inside
    the support: along the scale axis, along y and along x."""
    S, K, _ = support.shape
    idx = torch.arange(S * K * K).view(S, K, K)
    out = {}
    for name, dim in (("scale", 0), ("y", 1), ("x", 2)):
        a = idx.narrow(dim, 0, support.shape[dim] - 1)
        b = idx.narrow(dim, 1, support.shape[dim] - 1)
        ok = support.narrow(dim, 0, support.shape[dim] - 1) & support.narrow(dim, 1,
                                                                            support.shape[dim] - 1)
        out[name] = torch.stack([a[ok], b[ok]])
    return out

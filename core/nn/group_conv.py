"""Relaxed (and strict) group convolutions for C_n and D_n.

Feature types
-------------
* ``"vector"``: fields of (u, v) pairs, channels ``[2 * fields]`` interleaved as in velocity stacks;
  the group acts by turning the grid and the components (:func:`core.groups.transform_field`).
* ``"scalar"``: plain channels; the group only moves the grid.
* ``"regular"``: functions on the group, channels ``[fields * |G|]`` (field-major: channel
  ``o * |G| + g``); ``h`` moves the grid and shifts the group axis, ``f'(x, g) = f(h^-1 x, h^-1 g)``.

A layer from type ``in`` to type ``out`` uses L filter banks ``psi_l`` and relaxed weights
``w[l, g]``:

* lift (vector/scalar -> regular): ``K(z)[g, :] = sum_l w[l, g] psi_l(g^-1 z) rho_in(g)^-1``
* group conv (regular -> regular): ``K(z)[g, h] = sum_l w[l, g] psi_l(g^-1 z)[g^-1 h]``
* projection (regular -> vector/scalar): ``K(z)[:, h] = sum_l w[l, h] rho_out(h) psi_l(h^-1 z)``

With ``w[l, g]`` independent of ``g`` these are exactly the G-equivariant kernels (each formula is
the general solution of ``K(hz) = rho_out(h) K(z) rho_in(h)^-1``). The weights start equal, so a fresh
layer is exactly equivariant wherever the group acts on the grid by permutations (C1, C2, C4, D1,
D2, D4); for C8 and the like the kernel rotation interpolates and equivariance is approximate.

The bank expansion is one einsum over precomputed buffers: ``T[g]`` (the kernel-grid transform of
``g``, a permutation matrix for exact elements), ``rho[g]`` (2x2) and ``perm[g, h]`` (index of
``g^-1 h``). No Python loop runs over banks or group elements; the convolution is one conv2d.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import get_group, transform_scalar, _PlanarGroup
from .cache import CachedKernel, pairwise_abs_difference

REPS = ("scalar", "vector", "regular")


def _rep_dim(rep: str, order: int) -> int:
    return {"scalar": 1, "vector": 2, "regular": order}[rep]


def kernel_transforms(group: _PlanarGroup, kernel_size: int) -> torch.Tensor:
    """``T[g]`` of shape ``[|G|, k*k, k*k]`` with ``(T[g] @ psi)(z) = psi(g^-1 z)`` on the kernel
    grid: exact permutation matrices for multiples of 90 degrees and mirrors, bilinear weights
    otherwise (computed by acting on one-hot kernels with the field action itself, so layers and
    fields can never disagree about orientation)."""
    kk = kernel_size * kernel_size
    deltas = torch.eye(kk, dtype=torch.float64).view(kk, kernel_size, kernel_size)
    moved = torch.stack([transform_scalar(deltas, group, g).reshape(kk, kk)
                         for g in range(group.order)])  # [g, y, z]: delta at y moved by g
    return moved.transpose(1, 2).contiguous()  # [g, z, y]


class KernelAction(nn.Module):
    """The precomputed action of a finite planar group on a k x k kernel: ``T``, ``rho``, ``perm``."""

    def __init__(self, group, kernel_size: int):
        super().__init__()
        group = get_group(group)
        if not isinstance(group, _PlanarGroup):
            raise ValueError(f"group convolution needs a finite group C<n> or D<n>, got {group.name}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.group = group
        self.order = group.order
        self.kernel_size = kernel_size
        dtype = torch.get_default_dtype()
        self.register_buffer("T", kernel_transforms(group, kernel_size).to(dtype), persistent=False)
        self.register_buffer("rho", group.matrices().to(dtype), persistent=False)
        self.register_buffer("perm", group.inverse_product(), persistent=False)

    def orbit(self, weight: torch.Tensor, in_rep: str, out_rep: str) -> torch.Tensor:
        """All ``h * W = rho_out(h) W(h^-1 z) rho_in(h)^-1`` for a conv weight between the given
        types, stacked ``[|G|, *weight.shape]``. W is equivariant exactly when every entry equals
        W; for exact groups the entries are pure permutations/sign flips of W's numbers."""
        G, k = self.order, self.kernel_size
        out_ch, in_ch = weight.shape[:2]
        d_out, d_in = _rep_dim(out_rep, G), _rep_dim(in_rep, G)
        w = weight.reshape(out_ch // d_out, d_out, in_ch // d_in, d_in, k * k)
        P = self.perm
        if out_rep == "regular" and in_rep == "regular":
            # w[o, h^-1 g, i, h^-1 j, .]: advanced indices on dims 1 and 3 -> [h, g, j, o, i, kk]
            moved = w[:, P[:, :, None], :, P[:, None, :]]
            res = torch.einsum("hzy,hgjoiy->hogijz", self.T, moved)
        elif out_rep == "regular":
            moved = w[:, P]  # [o, h, g, i, d_in, kk]
            if in_rep == "vector":
                res = torch.einsum("hcd,hzy,ohgidy->hogicz", self.rho, self.T, moved)
            else:
                res = torch.einsum("hzy,ohgidy->hogidz", self.T, moved)
        elif in_rep == "regular":
            moved = w[:, :, :, P]  # [o, d_out, i, h, g, kk]
            if out_rep == "vector":
                res = torch.einsum("hab,hzy,obihgy->hoaigz", self.rho, self.T, moved)
            else:
                res = torch.einsum("hzy,oaihgy->hoaigz", self.T, moved)
        else:
            raise ValueError(f"no group layer from {in_rep} to {out_rep}; one side must be regular")
        return res.reshape(G, *weight.shape)

    def symmetry_defect(self, weight: torch.Tensor, in_rep: str, out_rep: str) -> torch.Tensor:
        """Mean |h * W - W| over the group: 0 exactly when the conv weight is G-equivariant."""
        return (self.orbit(weight, in_rep, out_rep) - weight).abs().mean()


class RelaxedGroupConv(CachedKernel):
    """Relaxed lifting / group / projection convolution (see the module docstring).

    Args:
        group: a finite group C<n>/D<n> (name or object).
        in_fields, out_fields: number of fields of the input and output types.
        in_rep, out_rep: "scalar", "vector" or "regular"; at least one side is "regular".
        kernel_size: odd spatial kernel size.
        num_banks: L, the number of filter banks.
        relaxed: if False the bank weights are a fixed buffer of ones (L must be 1): the strict,
            exactly equivariant layer, computed by the same code.
        bias: a bias per field, shared over the group axis; only on regular/scalar outputs, since a
            constant vector is not invariant.
    """

    def __init__(self, group, in_fields: int, out_fields: int, in_rep: str = "regular",
                 out_rep: str = "regular", kernel_size: int = 3, num_banks: int = 1,
                 relaxed: bool = True, bias: bool = True):
        super().__init__()
        if in_rep not in REPS or out_rep not in REPS or "regular" not in (in_rep, out_rep):
            raise ValueError(f"in_rep/out_rep must be in {REPS} with at least one 'regular', "
                             f"got {in_rep!r} -> {out_rep!r}")
        if num_banks < 1 or (not relaxed and num_banks != 1):
            raise ValueError(f"num_banks must be >= 1 (exactly 1 for a strict layer), got {num_banks}")
        self.action = KernelAction(group, kernel_size)
        self.group = self.action.group
        G = self.group.order
        self.in_fields, self.out_fields = in_fields, out_fields
        self.in_rep, self.out_rep = in_rep, out_rep
        self.kernel_size, self.num_banks, self.relaxed = kernel_size, num_banks, relaxed
        d_in = _rep_dim(in_rep, G)
        d_out_bank = 1 if out_rep == "scalar" else (2 if out_rep == "vector" else 1)
        # psi_l: [L, out, in, d_in, k*k] for lifting/group conv; [L, d_out, in, k*k] for projection
        if out_rep == "regular":
            shape = (num_banks, out_fields, in_fields, d_in, kernel_size ** 2)
        else:
            shape = (num_banks, out_fields * d_out_bank, in_fields, kernel_size ** 2)
        self.banks = nn.Parameter(torch.empty(shape))
        if relaxed:
            self.weights = nn.Parameter(torch.ones(num_banks, G))
        else:
            self.register_buffer("weights", torch.ones(1, G))
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias and out_rep != "vector" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_fields * _rep_dim(self.in_rep, self.group.order) * self.kernel_size ** 2
        # Kaiming-normal for the summed bank sum_l w_l psi_l with w = 1
        std = math.sqrt(2.0 / fan_in) / math.sqrt(self.num_banks)
        with torch.no_grad():
            self.banks.normal_(0.0, std)
            if self.relaxed:
                self.weights.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    @property
    def relaxed_weight(self) -> torch.Tensor | None:
        """The live relaxed weights ``[L, |G|]`` (None for a strict layer)."""
        return self.weights if self.relaxed else None

    def symmetry_penalty(self) -> torch.Tensor:
        """R = mean over banks and pairs of group elements of |w[l, g] - w[l, g']|."""
        return pairwise_abs_difference(self.weights, dim=1)

    def build_kernel(self) -> torch.Tensor:
        b = self.action
        w, psi, G, k = self.weights, self.banks, self.group.order, self.kernel_size
        if self.out_rep == "regular":
            if self.in_rep == "regular":
                moved = psi[:, :, :, b.perm]  # [l, o, i, g, h, kk] = psi[.., g^-1 h, ..]
                K = torch.einsum("lg,gzy,loighy->ogihz", w, b.T, moved)
            elif self.in_rep == "vector":
                K = torch.einsum("lg,gcd,gzy,loidy->ogicz", w, b.rho, b.T, psi)
            else:
                K = torch.einsum("lg,gzy,loidy->ogidz", w, b.T, psi)
        elif self.out_rep == "vector":
            psi = psi.unflatten(1, (self.out_fields, 2))  # [l, o, a, i, kk]
            K = torch.einsum("lh,hab,hzy,lobiy->oaihz", w, b.rho, b.T, psi)
        else:
            K = torch.einsum("lh,hzy,loiy->oihz", w, b.T, psi)
        out_ch = self.out_fields * _rep_dim(self.out_rep, G)
        return K.reshape(out_ch, -1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None
        if self.bias is not None:
            bias = self.bias.repeat_interleave(_rep_dim(self.out_rep, self.group.order))
        return F.conv2d(x, self.kernel(), bias, padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return (f"{self.group.name}, {self.in_fields} {self.in_rep} -> {self.out_fields} "
                f"{self.out_rep}, kernel_size={self.kernel_size}, num_banks={self.num_banks}, "
                f"relaxed={self.relaxed}")

"""Symmetry groups and their exact actions on scalar and vector fields.

Orientation convention (used by the layers, the simulator, the plots and the tests alike)
-----------------------------------------------------------------------------------------
A field is a tensor ``[..., H, W]``. Column index ``j`` runs along x (to the right), row index
``i`` runs along y, and **y grows with the row index** (row 0 is the bottom of the domain, as in a
plot drawn with ``origin="lower"``). Positions are measured from the grid centre:
``x = j - (W - 1) / 2``, ``y = i - (H - 1) / 2``.

Velocity stacks are ``[B, 2T, H, W]``: T frames of ``(u, v)`` pairs, ``u`` along x (W) and ``v``
along y (H).

A rotation by ``+theta`` turns counter-clockwise in the (x, y) plane: ``(x, y) -> (x cos - y sin,
x sin + y cos)``; +90 degrees sends the x axis onto the y axis. The reflection of D_n mirrors x:
``(x, y) -> (-x, y)``. An element ``g = r^k s^m`` of D_n first reflects (m = 1), then rotates.

Action of ``g`` on a scalar field ``f``: ``(g.f)(p) = f(g^-1 p)``.  On a vector field ``F`` the grid
moves AND the components turn: ``(g.F)(p) = R_g F(g^-1 p)``.

Multiples of 90 degrees and reflections are exact index permutations (``torch.rot90`` /
``torch.flip``). Any other angle (C8, C3, SO(2)) resamples the grid bilinearly about the centre with
zeros outside: that action is approximate, and :func:`interpolation_error` measures how much.

Scale (:class:`ScaleGroup`, name "scale")
-----------------------------------------
An element is a scale factor ``s > 0``. On a scalar field it zooms about the grid centre,
``(s.f)(p) = f(p / s)`` (bilinear, zeros outside: ``s > 1`` enlarges the pattern and pushes its
outer part off the grid, ``s < 1`` shrinks it and fills the rim with zeros). On a velocity stack
the grid moves the same way and every vector is multiplied by ``s``: ``(s.F)(p) = s F(p / s)``.
That is the similarity of the plume equations the "scale" scenario uses (a plume on a domain
``s`` times larger has velocities ``s`` times larger; the scenario divides by ``f`` when it
downsamples, i.e. it applies ``1/f``). The action of the positive reals is a group action in the
continuum; on the grid it resamples (and loses what leaves the grid), so it is approximate by
nature and never assumed exact.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Element", "Group", "TranslationGroup", "RotationGroup", "DihedralGroup", "SO2Group",
    "ScaleGroup", "get_group", "valid_group_names", "transform_field", "transform_scalar",
    "interpolation_error", "exact_rotation_matrix", "DEFAULT_SCALES",
]

_QUARTER = math.pi / 2


def _quarter_turns(angle: float) -> int | None:
    """Number of +90 degree turns equal to ``angle``, or None when it is no multiple of 90."""
    k = angle / _QUARTER
    r = round(k)
    return r % 4 if abs(k - r) < 1e-9 else None


def exact_rotation_matrix(angle: float, reflect: bool = False) -> torch.Tensor:
    """2x2 float64 matrix of ``rotate(angle) @ mirror_x^reflect``, with exact 0/+-1 entries for
    multiples of 90 degrees (so the layers built from it stay exactly equivariant)."""
    k = _quarter_turns(angle)
    if k is not None:
        c, s = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k]
    else:
        c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    if reflect:
        rot = rot @ torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    return rot


@dataclass(frozen=True)
class Element:
    """A rotation by ``angle`` radians (counter-clockwise), preceded by the x-mirror if ``reflect``."""

    angle: float = 0.0
    reflect: bool = False

    @property
    def matrix(self) -> torch.Tensor:
        return exact_rotation_matrix(self.angle, self.reflect)

    @property
    def is_exact(self) -> bool:
        """True when this element maps the square grid onto itself (an index permutation)."""
        return _quarter_turns(self.angle) is not None

    def __str__(self) -> str:
        deg = math.degrees(self.angle) % 360
        return f"rot{deg:g}" + ("+flip" if self.reflect else "")


class Group:
    """Base class. ``name``; ``order`` (None if infinite); ``elements()`` for finite groups."""

    name: str = ""
    order: int | None = None

    def elements(self) -> list:
        raise TypeError(f"group {self.name} is infinite and has no element list")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Group) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class TranslationGroup(Group):
    """Grid translations. An element is a shift ``(dy, dx)`` in cells; acts periodically (roll)."""

    name = "translation"
    order = None


class _PlanarGroup(Group):
    """A finite subgroup of O(2) acting on the plane: C_n or D_n."""

    n: int
    reflections: bool

    def __init__(self, n: int):
        if int(n) != n or n < 1:
            raise ValueError(f"group order n must be a positive integer, got {n!r}")
        self.n = int(n)
        self.order = self.n * (2 if self.reflections else 1)
        self._elements = [Element(2 * math.pi * k / self.n, bool(m))
                          for m in range(2 if self.reflections else 1) for k in range(self.n)]

    def elements(self) -> list[Element]:
        """Group elements, identity first: rotations r^k, then (for D_n) r^k s."""
        return list(self._elements)

    @property
    def is_exact(self) -> bool:
        """True when every element acts on a square grid by an exact index permutation."""
        return all(e.is_exact for e in self._elements)

    def matrices(self) -> torch.Tensor:
        """``[order, 2, 2]`` float64 matrices of the elements (the vector representation)."""
        return torch.stack([e.matrix for e in self._elements])

    def index(self, element: Element) -> int:
        """Index of ``element`` in :meth:`elements` (compared through its matrix)."""
        mats = self.matrices()
        dist = (mats - element.matrix).abs().flatten(1).amax(1)
        i = int(dist.argmin())
        if dist[i] > 1e-9:
            raise ValueError(f"{element} is not an element of {self.name}")
        return i

    def cayley(self) -> torch.Tensor:
        """``table[a, b]`` = index of ``elements[a] * elements[b]`` (long tensor)."""
        mats = self.matrices()
        prod = torch.einsum("aij,bjk->abik", mats, mats)
        dist = (prod[:, :, None] - mats[None, None]).abs().flatten(3).amax(3)
        return dist.argmin(2)

    def inverse_product(self) -> torch.Tensor:
        """``table[g, h]`` = index of ``g^-1 h``; the regular representation's permutation."""
        mats = self.matrices()
        prod = torch.einsum("aji,bjk->abik", mats, mats)  # g^T h = g^-1 h (orthogonal)
        dist = (prod[:, :, None] - mats[None, None]).abs().flatten(3).amax(3)
        return dist.argmin(2)


class RotationGroup(_PlanarGroup):
    """Cyclic group C_n of rotations by multiples of 360/n degrees."""

    reflections = False

    def __init__(self, n: int):
        super().__init__(n)
        self.name = f"C{self.n}"


class DihedralGroup(_PlanarGroup):
    """Dihedral group D_n: the rotations of C_n and their compositions with the x-mirror."""

    reflections = True

    def __init__(self, n: int):
        super().__init__(n)
        self.name = f"D{self.n}"


class SO2Group(Group):
    """Continuous rotations, band-limited: steerable kernels use angular frequencies up to
    ``band_limit`` (default 2, the least that lets vector fields map to vector fields through both
    the isotropic and the quadrupolar kernel). An element is an :class:`Element` or an angle."""

    order = None

    def __init__(self, band_limit: int = 2):
        if int(band_limit) != band_limit or band_limit < 1:
            raise ValueError(f"SO2 band_limit must be a positive integer, got {band_limit!r}")
        self.band_limit = int(band_limit)
        self.name = "SO2"

    def __repr__(self) -> str:
        return f"SO2Group(band_limit={self.band_limit})"


DEFAULT_SCALES = (1.0, 1.5, 2.0, 2.5)


class ScaleGroup(Group):
    """Isotropic scalings by a discrete set of factors (default 1, 1.5, 2, 2.5).

    The factors are the elements a scale-equivariant network is built for (and tested on): the
    scale layers (:mod:`core.nn.scale`) sample their filters at these scales. The set is a
    discretisation of the multiplicative group of positive reals and is *not* closed under
    composition (1.5 x 2 = 3 is not in it): like the scale-equivariant steerable networks of
    Sosnovik et al. (2020) it behaves as a truncated, semigroup-like window of scales, and
    equivariance holds only where the scales involved stay inside the window. ``order`` is the
    number of factors; :meth:`elements` returns them as floats, identity (1) first, then
    ascending. The action (:func:`transform_scalar`, :func:`transform_field`) is defined for any
    factor ``s > 0``, in the set or not (see the module docstring).

    Spec name: "scale" for the default factors, ``"scale:1,1.41,2"`` for others
    (:attr:`spec_name`); :func:`get_group` reads both.
    """

    name = "scale"

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES):
        try:
            values = [float(v) for v in scales]
        except (TypeError, ValueError):
            raise ValueError(
                f"scales must be a sequence of positive numbers, got {scales!r}") from None
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"scales must be positive finite numbers, got {scales!r}")
        if 1.0 not in values:
            raise ValueError(f"scales must contain the identity 1, got {scales!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"scales must be distinct, got {scales!r}")
        rest = sorted(v for v in values if v != 1.0)
        self.scales = (1.0, *rest)
        self.order = len(self.scales)

    def elements(self) -> list[float]:
        """The scale factors, identity first."""
        return list(self.scales)

    def sorted_scales(self) -> tuple[float, ...]:
        """The factors in ascending order (the order of the scale axis of the scale layers)."""
        return tuple(sorted(self.scales))

    @property
    def spec_name(self) -> str:
        """The name that rebuilds this group with :func:`get_group` (JSON-friendly)."""
        if self.scales == DEFAULT_SCALES:
            return "scale"
        return "scale:" + ",".join(f"{v:g}" for v in self.sorted_scales())

    def __repr__(self) -> str:
        return f"ScaleGroup(scales={self.sorted_scales()})"


def _scale_factor(g) -> float:
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g <= 0:
        raise ValueError(f"a scale element is a positive scale factor (e.g. 2.0), got {g!r}")
    return float(g)


_NAME_RE = re.compile(r"^([CD])(\d+)$")


def valid_group_names() -> list[str]:
    """The names :func:`get_group` understands (C_n and D_n accept any n >= 1)."""
    return ["translation", *(f"C{n}" for n in range(1, 9)), *(f"D{n}" for n in range(1, 9)),
            "SO2", "scale"]


def get_group(name: str | Group, **kwargs) -> Group:
    """Group by name: "translation", "C<n>", "D<n>" (any n >= 1), "SO2" (``band_limit=``) or
    "scale" (``scales=``, default 1, 1.5, 2, 2.5; also ``"scale:1,1.5,2"``)."""
    if isinstance(name, Group):
        return name
    if not isinstance(name, str):
        raise ValueError(f"group name must be a string, got {name!r}; valid: "
                         + ", ".join(valid_group_names()))
    if name == "translation":
        return TranslationGroup()
    if name == "SO2":
        return SO2Group(**kwargs)
    if name == "scale":
        return ScaleGroup(**kwargs)
    if name.startswith("scale:") and not kwargs:
        try:
            values = [float(v) for v in name[len("scale:"):].split(",")]
        except ValueError:
            raise ValueError(f"cannot read scale factors from {name!r}: write e.g. "
                             f"'scale:1,1.5,2'") from None
        return ScaleGroup(values)
    m = _NAME_RE.match(name)
    if m and int(m.group(2)) >= 1:
        cls = RotationGroup if m.group(1) == "C" else DihedralGroup
        return cls(int(m.group(2)))
    raise ValueError(f"unknown group {name!r}; valid: " + ", ".join(valid_group_names())
                     + " (C<n>/D<n> for any n >= 1; scale:<f1>,<f2>,... for other scale factors)")


def _as_element(group: Group, g) -> Element:
    if isinstance(g, Element):
        element = g
    elif isinstance(group, _PlanarGroup) and isinstance(g, int):
        if not 0 <= g < group.order:
            raise ValueError(f"element index {g} out of range for {group.name} (order {group.order})")
        return group.elements()[g]
    elif isinstance(group, SO2Group) and isinstance(g, (int, float)):
        return Element(float(g))
    else:
        raise ValueError(f"cannot read {g!r} as an element of {group.name}: pass an Element"
                         + (", an index" if isinstance(group, _PlanarGroup) else "")
                         + (" or an angle in radians" if isinstance(group, SO2Group) else ""))
    if isinstance(group, RotationGroup) and element.reflect:
        raise ValueError(f"{element} is not an element of {group.name} (no reflections)")
    return element


def _shift(group: Group, g) -> tuple[int, int]:
    if (isinstance(g, Sequence) and len(g) == 2 and all(isinstance(v, int) for v in g)):
        return int(g[0]), int(g[1])
    raise ValueError(f"a translation element is a (dy, dx) pair of ints, got {g!r}")


def _resample(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``out(p) = x(matrix^-1 p)`` about the grid centre, bilinear, zeros outside."""
    h, w = x.shape[-2:]
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    inv = torch.linalg.inv(matrix).to(dtype)
    jj, ii = torch.meshgrid(torch.arange(w, dtype=dtype), torch.arange(h, dtype=dtype),
                            indexing="xy")
    xy = torch.stack([jj - (w - 1) / 2, ii - (h - 1) / 2], -1)  # [H, W, 2] as (x, y)
    src = xy @ inv.T
    # grid_sample's normalised coordinates with align_corners=True: -1 = first cell, +1 = last
    norm = torch.stack([src[..., 0] / max((w - 1) / 2, 1e-12), src[..., 1] / max((h - 1) / 2, 1e-12)],
                       -1).to(x.device)
    flat = x.reshape(-1, 1, h, w).to(dtype)
    out = F.grid_sample(flat, norm.expand(flat.shape[0], h, w, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out.reshape(x.shape).to(x.dtype)


def _move_grid(x: torch.Tensor, element: Element) -> torch.Tensor:
    """Scalar action on the last two dims: reflect x first (if any), then rotate."""
    if element.reflect:
        x = torch.flip(x, dims=(-1,))
    k = _quarter_turns(element.angle)
    if k is not None:
        return torch.rot90(x, k, dims=(-1, -2)) if k else x
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation by {math.degrees(element.angle):g} degrees needs a square grid, "
                         f"got {tuple(x.shape[-2:])}")
    return _resample(x, exact_rotation_matrix(element.angle))


def _zoom(x: torch.Tensor, s: float) -> torch.Tensor:
    """``out(p) = x(p / s)`` about the grid centre (bilinear, zeros outside); s = 1 is a no-op."""
    if s == 1.0:
        return x
    return _resample(x, torch.eye(2, dtype=torch.float64) * s)


def transform_scalar(x: torch.Tensor, group: Group | str, g) -> torch.Tensor:
    """Act with ``g`` on scalar fields ``[B, C, H, W]`` (any leading dims): ``f(g^-1 p)``.
    For "scale", ``g`` is a scale factor: ``f(p / s)`` (module docstring)."""
    group = get_group(group)
    if isinstance(group, TranslationGroup):
        return torch.roll(x, shifts=_shift(group, g), dims=(-2, -1))
    if isinstance(group, ScaleGroup):
        return _zoom(x, _scale_factor(g))
    return _move_grid(x, _as_element(group, g))


def transform_field(x: torch.Tensor, group: Group | str, g) -> torch.Tensor:
    """Act with ``g`` on velocity stacks ``[B, 2T, H, W]`` of (u, v) pairs: the grid moves and
    each (u, v) vector turns with it, ``R_g F(g^-1 p)``. For "scale" the grid zooms and every
    vector is multiplied by the factor: ``s F(p / s)``."""
    group = get_group(group)
    if x.shape[-3] % 2:
        raise ValueError(f"a velocity stack needs an even channel count (u, v pairs), got {x.shape[-3]}")
    if isinstance(group, TranslationGroup):
        return transform_scalar(x, group, g)
    if isinstance(group, ScaleGroup):
        s = _scale_factor(g)
        return _zoom(x, s) * s if s != 1.0 else x
    element = _as_element(group, g)
    moved = _move_grid(x, element)
    pairs = moved.unflatten(-3, (-1, 2))  # [..., T, 2, H', W']
    mat = element.matrix.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64)
    turned = torch.einsum("ab,...bhw->...ahw", mat, pairs)
    return turned.flatten(-4, -3)


def interpolation_error(group: Group | str, size: int = 64, angle: float | None = None,
                        seed: int = 0) -> float:
    """Relative error of an interpolated rotation on a smooth field: rotate by ``angle`` and back
    and compare inside the inscribed disc. 0 for exact elements; reported, never assumed zero."""
    group = get_group(group)
    if angle is None:
        angle = 2 * math.pi / group.n if isinstance(group, _PlanarGroup) else math.pi / 4
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 2, 8, 8, generator=gen, dtype=torch.float64)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    there = transform_field(field, SO2Group(), Element(angle))
    back = transform_field(there, SO2Group(), Element(-angle))
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2,
                            indexing="ij")
    disc = (xx ** 2 + yy ** 2) < (size / 2 - 2) ** 2
    diff = (back - field)[..., disc]
    return float(diff.norm() / field[..., disc].norm())

"""Analysis of trained models: rollout error, equivariance error and learned symmetry breaking.

Every result is an ``xarray`` object with named dims, coordinates and ``attrs`` that document the
quantity, so it can be plotted or tabulated directly.

* :func:`rollout_rmse`: autoregressive RMSE per rollout step on the "future" or "domain" split.
* :func:`equivariance_error`: ``|f(g.x) - g.f(x)|`` per group element.
* :func:`irrep_decomposition`, :func:`breaking_score`, :func:`invariant_subgroup`: what the relaxed
  weights ``w[l, g]`` of a group convolution say about the broken symmetry.
* :func:`breaking_analysis`: all relaxed layers of a model at once (group, translation,
  steerable or scale relaxation), and :func:`boundary_location` for translation weight maps.

Irreducible representations (real) used for functions on C_n and D_n
--------------------------------------------------------------------
``k`` indexes the rotation ``r^k`` (angle ``2 pi k / n``) and ``m = 1`` marks the reflected
elements ``r^k s`` (the element order of :meth:`core.groups._PlanarGroup.elements`).

==========  ===  =====================================  ============================================
label       dim  character on r^k / r^k s               groups
==========  ===  =====================================  ============================================
trivial     1    1 / 1                                  all
flip        1    1 / -1                                 D_n
sign        1    (-1)^k / (-1)^k                        C_n, D_n with n even
sign*flip   1    (-1)^k / -(-1)^k                       D_n with n even
freq<j>     2    2 cos(2 pi j k / n) / 0                all, j = 1 .. floor((n - 1) / 2)
==========  ===  =====================================  ============================================

For C_n, ``freq<j>`` is the real 2-dim irrep made of the complex characters of frequency +-j (the
real Fourier mode ``cos, sin(2 pi j k / n)`` along the cyclic axis). A function ``w`` on the group
is split by the isotypic projectors of the regular representation
``(L(h) w)(g) = w(h^-1 g)``: ``P_rho = (c_rho / |G|) sum_h chi_rho(h) L(h)``, with ``c_rho`` the
dimension of the complex irreps that make up ``rho`` (1 for every C_n irrep, the real dimension for
D_n). The projectors are orthogonal and sum to the identity, so the energies ``|P_rho w|^2`` add
up to ``|w|^2``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import xarray as xr

from .datasets import DatasetError, WindowDataset
from .devices import resolve_device
from .groups import (Element, Group, ScaleGroup, SO2Group, TranslationGroup, _PlanarGroup,
                     get_group, transform_field)

__all__ = [
    "rollout_rmse", "equivariance_error", "irreps", "irrep_projectors", "irrep_decomposition",
    "breaking_score", "invariant_subgroup", "breaking_analysis", "boundary_location",
]

KINDS = ("group", "translation", "steerable", "scale", "other", "none")


# ------------------------------------------------------------------------------------ helpers
def _planar(group) -> _PlanarGroup:
    group = get_group(group)
    if not isinstance(group, _PlanarGroup):
        raise ValueError(f"needs a finite group C<n> or D<n>, got {group.name}")
    return group


def _weights64(weights, order: int) -> torch.Tensor:
    """``[L, |G|]`` float64 CPU copy of relaxed group weights (a 1-D input is one bank)."""
    if torch.is_tensor(weights):
        w = weights.detach().to("cpu", torch.float64)
    else:
        w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != order:
        raise ValueError(f"group weights must have shape [L, {order}] (banks, group elements), "
                         f"got {tuple(w.shape)}")
    return w


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.get_default_dtype()


def _rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


# ------------------------------------------------------------------------------------ rollout
def rollout_rmse(model: torch.nn.Module, ds: xr.Dataset, split: str = "future", steps: int = 20,
                 in_frames: int | None = None, device: str = "cpu", batch_size: int = 32,
                 max_samples: int | None = None) -> xr.DataArray:
    """Autoregressive rollout RMSE per step, in velocity units.

    Every sample of ``split`` (each sim of the split, each start time of its window) feeds
    ``in_frames`` frames stacked as channels ``[B, 2 * in_frames, H, W]``; the model is rolled
    out for ``steps`` steps, each prediction replacing the oldest (u, v) pair of the input window.
    ``rmse[s] = sqrt(mean over samples, components and pixels of (prediction_s - truth_s)^2)``.
    ``max_samples`` keeps that many samples evenly spaced over the split (deterministic).
    The model is moved to ``device`` and evaluated in eval mode without gradients; its training
    flag is restored afterwards.

    Returns a DataArray over ``step`` (1 .. steps) with attrs ``mean`` (mean over steps),
    ``split``, ``n_samples``, ``in_frames`` and ``units``.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if in_frames is None:
        in_frames = int(model.spec["in_frames"])
    windows = WindowDataset(ds, split, in_frames, target_steps=int(steps))
    n = len(windows)
    if n == 0:
        raise DatasetError(
            f"split {split!r} has no samples for in_frames={in_frames} and steps={steps}: "
            f"sims {windows.sims}, window_{split} = {np.atleast_1d(ds.attrs[f'window_{split}']).tolist()}"
            f" of {windows.velocity.shape[1]} time steps")
    indices = np.arange(n)
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
        if max_samples < n:
            indices = np.unique(np.linspace(0, n - 1, int(max_samples)).round().astype(int))
    dev = resolve_device(device)
    dtype = _model_dtype(model)
    was_training = model.training
    model.to(dev).eval()
    sq = torch.zeros(int(steps), dtype=torch.float64)
    count = 0
    try:
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                items = [windows[int(i)] for i in indices[start:start + batch_size]]
                x = torch.stack([it[0] for it in items]).to(dev, dtype)
                y = torch.stack([it[1] for it in items]).to(dev, dtype)  # [B, steps, 2, H, W]
                for s in range(int(steps)):
                    pred = model(x)
                    sq[s] += (pred - y[:, s]).double().pow(2).sum().cpu()
                    x = torch.cat([x[:, 2:], pred], 1)
                count += y[:, 0].numel()
    finally:
        model.train(was_training)
    rmse = (sq / count).sqrt().numpy()
    return xr.DataArray(
        rmse, dims=("step",), coords={"step": np.arange(1, int(steps) + 1)}, name="rmse",
        attrs=dict(mean=float(rmse.mean()), split=split, n_samples=int(len(indices)),
                   in_frames=int(in_frames), units="velocity (cells per time unit)",
                   long_name="rollout RMSE",
                   definition="sqrt(mean over samples, components and pixels of "
                              "(prediction - truth)^2) at each autoregressive step"))


# ------------------------------------------------------------------------------------ equivariance
def _test_elements(group: Group, shape: Sequence[int]) -> list:
    if isinstance(group, _PlanarGroup):
        return group.elements()
    if isinstance(group, SO2Group):
        return [Element(k * math.pi / 4) for k in range(8)]
    if isinstance(group, ScaleGroup):
        return group.elements()
    h, w = shape[-2:]
    sy, sx = max(1, h // 8), max(1, w // 8)
    return [(0, 0), (0, sx), (sy, 0), (0, 2 * sx), (2 * sy, 2 * sx)]


def _label(group: Group, g) -> str:
    if isinstance(group, TranslationGroup):
        return f"{int(g[0])},{int(g[1])}"
    if isinstance(group, ScaleGroup):
        return f"x{float(g):g}"
    if isinstance(g, int):
        g = group.elements()[g]
    if not isinstance(g, Element):
        g = Element(float(g))
    return str(g)


def _is_identity(group: Group, g, shape: Sequence[int]) -> bool:
    if isinstance(group, TranslationGroup):
        return int(g[0]) % shape[-2] == 0 and int(g[1]) % shape[-1] == 0
    if isinstance(group, ScaleGroup):
        return float(g) == 1.0
    if isinstance(g, int):
        g = group.elements()[g]
    if not isinstance(g, Element):
        g = Element(float(g))
    return not g.reflect and abs(math.remainder(g.angle, 2 * math.pi)) < 1e-12


def equivariance_error(model: torch.nn.Module, inputs: torch.Tensor, group,
                       elements: Sequence | None = None) -> xr.Dataset:
    """Equivariance error of ``model`` on ``inputs [B, 2T, H, W]`` per group element.

    Definition (the paper's): ``absolute(g) = RMS(f(g.x) - g.f(x))`` and
    ``relative(g) = absolute(g) / RMS(g.f(x))``, RMS over the batch, components and pixels, with
    ``g`` acting on velocity stacks by :func:`core.groups.transform_field` (grid moved, vectors
    turned). Elements: every element of C_n/D_n; for "SO2" the 8 rotations by multiples of
    45 degrees (odd multiples are interpolated, so their error includes resampling); for
    "translation" periodic shifts ``(dy, dx)`` of 0, 1/8 and 1/4 of the grid; for "scale" the
    group's scale factors (zoom about the centre and velocity times the factor: every factor but
    1 is interpolated, and the zoom pushes the outer part of the input off the grid, so the
    error includes resampling and the model's own border effects). ``elements`` overrides that
    list (Elements, indices, angles, (dy, dx) pairs or scale factors).

    Returns a Dataset with ``relative`` and ``absolute`` over ``element`` (labels such as "rot90",
    "rot0+flip", "dy,dx" or "x2"); attrs ``group``, ``definition``, ``mean`` and ``mean_absolute``
    (means over the non-identity elements).
    """
    group = get_group(group)
    if inputs.ndim != 4 or inputs.shape[1] % 2:
        raise ValueError(f"inputs must be a velocity stack [B, 2T, H, W], got {tuple(inputs.shape)}")
    elements = list(_test_elements(group, inputs.shape) if elements is None else elements)
    was_training = model.training
    model.eval()
    absolute, relative, labels, identity = [], [], [], []
    try:
        with torch.no_grad():
            y = model(inputs)
            for g in elements:
                lhs = model(transform_field(inputs, group, g))
                rhs = transform_field(y, group, g)
                a, s = _rms(lhs - rhs), _rms(rhs)
                absolute.append(a)
                relative.append(a / s if s > 0 else (0.0 if a == 0 else math.inf))
                labels.append(_label(group, g))
                identity.append(_is_identity(group, g, inputs.shape))
    finally:
        model.train(was_training)
    rel, ab = np.asarray(relative), np.asarray(absolute)
    keep = ~np.asarray(identity, dtype=bool)
    interpolated = [lab for lab, g, ident in zip(labels, elements, identity)
                    if (isinstance(g, Element) and not g.is_exact)
                    or (isinstance(group, ScaleGroup) and not ident)]
    return xr.Dataset(
        {"relative": ("element", rel, dict(long_name="relative equivariance error",
                                           definition="RMS(f(g.x) - g.f(x)) / RMS(g.f(x))")),
         "absolute": ("element", ab, dict(long_name="absolute equivariance error",
                                          units="velocity (cells per time unit)",
                                          definition="RMS(f(g.x) - g.f(x))"))},
        coords={"element": labels},
        attrs=dict(group=group.name,
                   definition="absolute = RMS(f(g.x) - g.f(x)); relative = absolute / RMS(g.f(x))",
                   mean=float(rel[keep].mean()) if keep.any() else 0.0,
                   mean_absolute=float(ab[keep].mean()) if keep.any() else 0.0,
                   interpolated=",".join(interpolated)))


# ------------------------------------------------------------------------------------ irreps
def _element_indices(group: _PlanarGroup) -> tuple[np.ndarray, np.ndarray]:
    """``(k, m)`` per element: rotation power and reflection flag."""
    ks = np.array([round(e.angle * group.n / (2 * math.pi)) % group.n for e in group.elements()])
    ms = np.array([int(e.reflect) for e in group.elements()])
    return ks, ms


def irreps(group) -> list[tuple[str, int, np.ndarray, float]]:
    """Real irreps of C_n / D_n as ``(label, dim, characters [|G|], c)`` (see the module
    docstring); ``c`` is the projector factor, ``P = (c / |G|) sum_h chi(h) L(h)``."""
    group = _planar(group)
    n, dihedral = group.n, group.reflections
    k, m = _element_indices(group)
    alt = np.where(k % 2 == 0, 1.0, -1.0)
    flip = np.where(m == 0, 1.0, -1.0)
    out = [("trivial", 1, np.ones(group.order), 1.0)]
    if dihedral:
        out.append(("flip", 1, flip, 1.0))
    if n % 2 == 0:
        out.append(("sign", 1, alt, 1.0))
        if dihedral:
            out.append(("sign*flip", 1, alt * flip, 1.0))
    for j in range(1, (n - 1) // 2 + 1):
        chi = 2 * np.cos(2 * math.pi * j * k / n) * (m == 0)
        out.append((f"freq{j}", 2, chi, 2.0 if dihedral else 1.0))
    return out


def irrep_projectors(group) -> tuple[list[str], list[int], torch.Tensor]:
    """Labels, real dimensions and the isotypic projectors ``[n_irreps, |G|, |G|]`` (float64)
    acting on functions on the group (column vectors indexed like ``group.elements()``)."""
    group = _planar(group)
    G = group.order
    inv = group.inverse_product()  # inv[h, g] = index of h^-1 g
    # L[h] w = w[inv[h, :]]: the permutation matrix with L[h][g, inv[h, g]] = 1
    L = torch.zeros(G, G, G, dtype=torch.float64)
    L[torch.arange(G)[:, None], torch.arange(G)[None, :], inv] = 1.0
    labels, dims, projectors = [], [], []
    for label, dim, chi, c in irreps(group):
        labels.append(label)
        dims.append(dim)
        projectors.append(torch.einsum("h,hab->ab", torch.as_tensor(chi, dtype=torch.float64), L)
                          * (c / G))
    return labels, dims, torch.stack(projectors)


def irrep_decomposition(weights, group) -> xr.Dataset:
    """Energies of relaxed group weights ``[L, |G|]`` per bank and real irrep, in float64.

    ``energy[l, rho] = |P_rho w_l|^2`` with the isotypic projectors of the regular representation
    (module docstring); ``sum_rho energy[l, rho] = total[l] = |w_l|^2``. Energy outside "trivial"
    means the weights vary over the group, i.e. the layer breaks the symmetry; which irreps carry
    it says how (e.g. only "sign" on C4: a period-2 pattern, symmetric under rot180 only).

    Returns a Dataset with ``energy`` and ``fraction`` (bank, irrep), ``total`` (bank), coordinate
    ``irrep_dim``; attrs ``group``, ``definition`` and ``breaking_score``.
    """
    group = _planar(group)
    w = _weights64(weights, group.order)
    labels, dims, P = irrep_projectors(group)
    energy = torch.einsum("rab,lb->lra", P, w).pow(2).sum(-1).numpy()  # [L, n_irreps]
    total = w.pow(2).sum(1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total[:, None] > 0, energy / total[:, None], 0.0)
    ds = xr.Dataset(
        {"energy": (("bank", "irrep"), energy,
                    dict(long_name="irrep energy", definition="|P_rho w_l|^2")),
         "total": ("bank", total, dict(long_name="total energy", definition="|w_l|^2")),
         "fraction": (("bank", "irrep"), fraction,
                      dict(long_name="energy fraction", definition="energy / total"))},
        coords={"bank": np.arange(w.shape[0]), "irrep": labels, "irrep_dim": ("irrep", dims)},
        attrs=dict(group=group.name,
                   definition="energy[l, rho] = |P_rho w_l|^2, P_rho = (c_rho/|G|) sum_h "
                              "chi_rho(h) L(h) the isotypic projector of the regular "
                              "representation; energies sum to |w_l|^2"))
    ds.attrs["breaking_score"] = breaking_score(ds)
    return ds


def breaking_score(weights, group=None) -> float:
    """Non-trivial energy / total energy of relaxed group weights ``[L, |G|]`` (summed over banks):
    0 when every bank is constant over the group (an exactly equivariant layer), up to 1 when the
    weights average to zero over the group. Accepts the weights with their group, or the Dataset of
    :func:`irrep_decomposition`. 0 for all-zero weights."""
    if isinstance(weights, xr.Dataset):
        ds = weights
    else:
        if group is None:
            raise ValueError("breaking_score needs the group along with raw weights")
        ds = irrep_decomposition(weights, group)
    energy = ds["energy"]
    nontrivial = float(energy.where(energy["irrep"] != "trivial", 0.0).sum())
    total = float(ds["total"].sum())
    return nontrivial / total if total > 0 else 0.0


def invariant_subgroup(weights, group, tol: float = 1e-6) -> list[str]:
    """Labels of the subgroup ``H = {h : w[l, g h] = w[l, g] for all banks l and elements g}``.

    Equality holds within ``tol * max|w|`` (``tol`` absolute for all-zero weights). H is the set
    of right translations that leave every bank unchanged, which is always a subgroup (the identity
    is in it, and ``g h1 h2`` reduces to ``g h1`` and then ``g``); the whole group for weights
    constant over the group. Its order is ``len(result)``. Labels follow ``group.elements()``.
    """
    group = _planar(group)
    w = _weights64(weights, group.order)
    cayley = group.cayley()  # cayley[g, h] = index of g h
    scale = float(w.abs().max()) if w.numel() else 0.0
    thresh = tol * (scale if scale > 0 else 1.0)
    moved = w[:, cayley.T]  # [L, h, g] = w[l, g h]
    ok = (moved - w[:, None, :]).abs().amax(dim=(0, 2)) <= thresh
    return [str(e) for e, keep in zip(group.elements(), ok.tolist()) if keep]


# ------------------------------------------------------------------------------------ per model
def _layer_kind(module) -> str:
    from .nn import (RelaxedGroupConv, RelaxedScaleConv, RelaxedSteerableConv,
                     RelaxedTranslationConv)
    if isinstance(module, RelaxedGroupConv):
        return "group"
    if isinstance(module, RelaxedTranslationConv):
        return "translation"
    if isinstance(module, RelaxedSteerableConv):
        return "steerable"
    if isinstance(module, RelaxedScaleConv):
        return "scale"
    return "other"


def _relaxed_modules(model) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    modules = dict(model.named_modules())
    return [(name, modules[name], w.detach().to("cpu", torch.float64))
            for name, w in model.relaxed_weights().items()]


def _group_analysis(layers, group) -> xr.Dataset:
    group = _planar(group)
    names = [n for n, _, _ in layers]
    banks = max(w.shape[0] for _, _, w in layers)
    raw = np.full((len(layers), banks, group.order), np.nan)
    energies, totals, scores, orders, subgroups, invariant = [], [], [], [], [], []
    labels = [str(e) for e in group.elements()]
    for i, (_, _, w) in enumerate(layers):
        raw[i, :w.shape[0]] = w.numpy()
        dec = irrep_decomposition(w, group)
        energies.append(dec["energy"].sum("bank").values)
        totals.append(float(dec["total"].sum()))
        scores.append(dec.attrs["breaking_score"])
        sub = invariant_subgroup(w, group)
        orders.append(len(sub))
        subgroups.append(",".join(sub))
        invariant.append([lab in sub for lab in labels])
    irrep_labels = list(dec["irrep"].values)
    energy = np.stack(energies)
    total = np.asarray(totals)
    nontrivial = energy[:, irrep_labels.index("trivial") != np.arange(len(irrep_labels))].sum()
    return xr.Dataset(
        {"weights": (("layer", "bank", "element"), raw, dict(long_name="relaxed weights w[l, g]")),
         "energy": (("layer", "irrep"), energy,
                    dict(long_name="irrep energy (summed over banks)",
                         definition="sum_l |P_rho w_l|^2")),
         "total": ("layer", total, dict(long_name="total energy", definition="sum_l |w_l|^2")),
         "breaking_score": ("layer", np.asarray(scores),
                            dict(long_name="symmetry-breaking score",
                                 definition="non-trivial irrep energy / total energy")),
         "subgroup_order": ("layer", np.asarray(orders),
                            dict(long_name="order of the invariant subgroup")),
         "invariant_subgroup": ("layer", np.asarray(subgroups, dtype=str),
                                dict(definition="{h : w[l, g h] = w[l, g] for all l, g}")),
         "invariant": (("layer", "element"), np.asarray(invariant, dtype=np.int8),
                       dict(long_name="element of the invariant subgroup (1) or not (0)"))},
        coords={"layer": names, "bank": np.arange(banks), "element": labels,
                "irrep": irrep_labels, "irrep_dim": ("irrep", dec["irrep_dim"].values)},
        attrs=dict(group=group.name, group_order=group.order,
                   breaking_score=float(nontrivial / total.sum()) if total.sum() > 0 else 0.0))


def _translation_analysis(layers) -> xr.Dataset:
    names = [n for n, _, _ in layers]
    shapes = {tuple(w.shape[1:]) for _, _, w in layers}
    if len(shapes) != 1:
        raise ValueError(f"translation layers have different grids: {sorted(shapes)}")
    h, w_ = shapes.pop()
    banks = max(w.shape[0] for _, _, w in layers)
    raw = np.full((len(layers), banks, h, w_), np.nan)
    grads, scores, var_sum, ms_sum = [], [], 0.0, 0.0
    for i, (_, _, w) in enumerate(layers):
        raw[i, :w.shape[0]] = w.numpy()
        if h > 1 and w_ > 1:
            gy, gx = torch.gradient(w, dim=(1, 2))
        else:
            gy = torch.gradient(w, dim=1)[0] if h > 1 else torch.zeros_like(w)
            gx = torch.gradient(w, dim=2)[0] if w_ > 1 else torch.zeros_like(w)
        grads.append((gy.pow(2) + gx.pow(2)).sqrt().sum(0).numpy())
        var = float(((w - w.mean((1, 2), keepdim=True)) ** 2).mean((1, 2)).sum())
        ms = float((w ** 2).mean((1, 2)).sum())
        scores.append(var / ms if ms > 0 else 0.0)
        var_sum, ms_sum = var_sum + var, ms_sum + ms
    maps = xr.DataArray(raw, dims=("layer", "bank", "y", "x"))
    return xr.Dataset(
        {"weights": (("layer", "bank", "y", "x"), raw, dict(long_name="relaxed weights w_l(x)")),
         "gradient": (("layer", "y", "x"), np.stack(grads),
                      dict(long_name="|grad w| summed over banks",
                           definition="sum_l sqrt((dw_l/dy)^2 + (dw_l/dx)^2), central differences "
                                      "(one-sided at the edges), per cell")),
         "x_profile": (("layer", "bank", "x"), maps.mean("y").values,
                       dict(long_name="weights averaged over y")),
         "y_profile": (("layer", "bank", "y"), maps.mean("x").values,
                       dict(long_name="weights averaged over x")),
         "breaking_score": ("layer", np.asarray(scores),
                            dict(long_name="symmetry-breaking score",
                                 definition="sum_l var_xy(w_l) / sum_l mean_xy(w_l^2)"))},
        coords={"layer": names, "bank": np.arange(banks), "y": np.arange(h) + 0.5,
                "x": np.arange(w_) + 0.5},
        attrs=dict(group="translation",
                   breaking_score=var_sum / ms_sum if ms_sum > 0 else 0.0))


def _steerable_analysis(layers) -> xr.Dataset:
    names = [n for n, _, _ in layers]
    sizes = {int(m.kernel_size) for _, m, _ in layers}
    if len(sizes) != 1:
        raise ValueError(f"steerable layers have different kernel sizes: {sorted(sizes)}")
    k = sizes.pop()
    p = k // 2
    n_coeff = max(w.shape[0] for _, _, w in layers)
    raw = np.full((len(layers), n_coeff, k, k), np.nan)
    variation, maps, scores, var_sum, ms_sum = [], [], [], 0.0, 0.0
    for i, (_, _, c) in enumerate(layers):
        c = c.expand(-1, k * k) if c.shape[1] == 1 else c  # a strict layer shares one value
        raw[i, :c.shape[0]] = c.view(-1, k, k).numpy()
        dev = c - c.mean(1, keepdim=True)
        std, rms = dev.pow(2).mean(1).sqrt(), c.pow(2).mean(1).sqrt()
        ratio = torch.where(rms > 0, std / rms.clamp_min(1e-300), torch.zeros_like(rms))
        variation.append(float(ratio.mean()))
        scale = float(c.pow(2).mean().sqrt())
        offset_map = dev.pow(2).mean(0).sqrt() / scale if scale > 0 else torch.zeros(k * k)
        maps.append(offset_map.view(k, k).numpy())
        var, ms = float(dev.pow(2).mean(1).sum()), float(c.pow(2).mean(1).sum())
        scores.append(var / ms if ms > 0 else 0.0)
        var_sum, ms_sum = var_sum + var, ms_sum + ms
    offsets = np.arange(-p, p + 1)
    return xr.Dataset(
        {"coefficients": (("layer", "coefficient", "ky", "kx"), raw,
                          dict(long_name="coefficients w_b(z) per kernel offset",
                               note="NaN pads layers with fewer coefficients")),
         "variation": ("layer", np.asarray(variation),
                       dict(long_name="variation across kernel offsets",
                            definition="mean over coefficients b of std_z(w_b) / RMS_z(w_b)")),
         "offset_variation": (("layer", "ky", "kx"), np.stack(maps),
                              dict(long_name="variation per kernel offset",
                                   definition="sqrt(mean_b (w_b(z) - mean_z w_b)^2) / RMS(w)")),
         "breaking_score": ("layer", np.asarray(scores),
                            dict(long_name="symmetry-breaking score",
                                 definition="sum_b var_z(w_b) / sum_b mean_z(w_b^2)"))},
        coords={"layer": names, "coefficient": np.arange(n_coeff), "ky": offsets, "kx": offsets},
        attrs=dict(breaking_score=var_sum / ms_sum if ms_sum > 0 else 0.0))


def _scale_analysis(layers) -> xr.Dataset:
    """Statistics over the entries inside each scale's support only (the others never move)."""
    names = [n for n, _, _ in layers]
    scales = {tuple(m.scales) for _, m, _ in layers}
    grids = {int(m.grid) for _, m, _ in layers}
    if len(scales) != 1 or len(grids) != 1:
        raise ValueError(f"scale layers have different scales or kernel grids: {sorted(scales)}, "
                         f"{sorted(grids)}")
    scales, K = scales.pop(), grids.pop()
    S = len(scales)
    scale_var, offset_maps, totals, scale_parts, offset_parts = [], [], [], [], []
    for _, m, w in layers:
        mask = m.support.to("cpu").reshape(S, K * K)  # [S, K*K] bool
        count = mask.sum(1).to(torch.float64)  # supported offsets per scale
        P = float(count.sum())
        w = w.expand(-1, S, K, K).reshape(w.shape[0], S, K * K)
        total = float((w.pow(2) * mask).sum() / P)  # sum_b mean_P w_b^2
        # shift by a supported entry first: constant coefficients give exact zeros below
        ref = w.flatten(1)[:, int(mask.flatten().nonzero()[0])][:, None, None]
        v = torch.where(mask, w - ref, torch.zeros_like(w))
        mean = v.sum((1, 2), keepdim=True) / P  # m_b
        per_scale = v.sum(2, keepdim=True) / count[:, None] - mean  # a[b, s]
        within = torch.where(mask, v - mean - per_scale, torch.zeros_like(v))
        s_part = float((per_scale.pow(2)[..., 0] * count).sum() / P)
        o_part = float(within.pow(2).sum() / P)
        rms = math.sqrt(total / w.shape[0]) if total > 0 else 0.0
        if rms > 0:
            scale_var.append((per_scale[..., 0].pow(2).mean(0).sqrt() / rms).numpy())
            hits = mask.sum(0)  # scales supporting each offset
            with np.errstate(invalid="ignore", divide="ignore"):
                omap = (within.pow(2).sum((0, 1)) / (hits * w.shape[0])).sqrt() / rms
            offset_maps.append(torch.where(hits > 0, omap, torch.nan).view(K, K).numpy())
        else:
            scale_var.append(np.zeros(S))
            offset_maps.append(np.where(mask.any(0).view(K, K).numpy(), 0.0, np.nan))
        totals.append(total)
        scale_parts.append(s_part)
        offset_parts.append(o_part)
    totals, sp, op = np.asarray(totals), np.asarray(scale_parts), np.asarray(offset_parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_score = np.where(totals > 0, sp / totals, 0.0)
        o_score = np.where(totals > 0, op / totals, 0.0)
    T = totals.sum()
    offsets = np.arange(-(K // 2), K // 2 + 1)
    return xr.Dataset(
        {"scale_variation": (("layer", "scale"), np.stack(scale_var),
                             dict(long_name="variation across scales",
                                  definition="sqrt(mean over coefficients b of (mean_z w_b(s, z) "
                                             "- mean_{s,z} w_b)^2) / RMS(w), z over the support "
                                             "of scale s")),
         "offset_variation": (("layer", "ky", "kx"), np.stack(offset_maps),
                              dict(long_name="variation per kernel offset",
                                   definition="sqrt(mean over b and the scales s supporting z of "
                                              "(w_b(s, z) - mean_z w_b(s, .))^2) / RMS(w); NaN "
                                              "where no scale reaches z")),
         "scale_score": ("layer", s_score,
                         dict(long_name="breaking across scales",
                              definition="sum_b mean_{s,z} (mean_z w_b(s, .) - mean w_b)^2 / "
                                         "sum_b mean(w_b^2)")),
         "offset_score": ("layer", o_score,
                          dict(long_name="breaking across offsets",
                               definition="sum_b mean_{s,z} (w_b(s, z) - mean_z w_b(s, .))^2 / "
                                          "sum_b mean(w_b^2)")),
         "breaking_score": ("layer", s_score + o_score,
                            dict(long_name="symmetry-breaking score",
                                 definition="sum_b var_{s,z}(w_b) / sum_b mean(w_b^2) = "
                                            "scale_score + offset_score (means over the "
                                            "supported (s, z))"))},
        coords={"layer": names, "scale": np.asarray(scales, dtype=np.float64),
                "ky": offsets, "kx": offsets},
        attrs=dict(breaking_score=float((sp.sum() + op.sum()) / T) if T > 0 else 0.0,
                   scale_score=float(sp.sum() / T) if T > 0 else 0.0,
                   offset_score=float(op.sum() / T) if T > 0 else 0.0))


def _other_score(module, w: torch.Tensor) -> float:
    """Non-symmetric energy fraction where the layer defines one, else NaN (see breaking_analysis)."""
    from .nn import LocallyConnected2d
    if isinstance(module, LocallyConnected2d):
        pix = w.reshape(w.shape[0], -1)  # [H*W, entries]
        ms = float(pix.pow(2).mean(0).sum())
        var = float((pix - pix.mean(0)).pow(2).mean(0).sum())
        return var / ms if ms > 0 else 0.0
    action = getattr(module, "action", None)
    if action is not None and hasattr(module, "in_rep") and hasattr(module, "out_rep"):
        orbit = action.orbit(w.to(action.T.dtype), module.in_rep, module.out_rep).double()
        total = float(w.pow(2).sum())
        broken = float((w - orbit.mean(0)).pow(2).sum())
        return broken / total if total > 0 else 0.0
    return math.nan


def _other_analysis(layers) -> xr.Dataset:
    names = [n for n, _, _ in layers]
    norms = np.asarray([float(w.norm()) for _, _, w in layers])
    size = np.asarray([w.numel() for _, _, w in layers])
    penalties, scores = [], []
    with torch.no_grad():
        for _, m, w in layers:
            pen = m.symmetry_penalty() if hasattr(m, "symmetry_penalty") else None
            penalties.append(float(pen) if pen is not None else math.nan)
            scores.append(_other_score(m, w))
    scores = np.asarray(scores)
    finite = np.isfinite(scores)
    energy = norms ** 2
    overall = (float((scores[finite] * energy[finite]).sum() / energy[finite].sum())
               if finite.any() and energy[finite].sum() > 0 else (0.0 if finite.any() else math.nan))
    return xr.Dataset(
        {"norm": ("layer", norms, dict(long_name="Frobenius norm of the relaxed weights")),
         "rms": ("layer", norms / np.sqrt(np.maximum(size, 1)),
                 dict(long_name="RMS of the relaxed weights")),
         "penalty": ("layer", np.asarray(penalties),
                     dict(long_name="the layer's symmetry penalty R (0 when symmetric)")),
         "breaking_score": ("layer", scores,
                            dict(long_name="symmetry-breaking score (NaN: see norm)",
                                 definition="free conv (combo): |W - mean_h h.W|^2 / |W|^2; "
                                            "locally connected: sum var_pixels / sum "
                                            "mean_pixels(W^2); zero-started paths (rpp, lift): "
                                            "NaN, their norm is the measure"))},
        coords={"layer": names},
        attrs=dict(breaking_score=overall))


def breaking_analysis(model: torch.nn.Module) -> xr.Dataset:
    """Symmetry breaking learned by every relaxed layer of ``model`` (``model.relaxed_weights()``).

    The ``kind`` attribute says which analysis applies (all layers share it):

    * "group" (rgroup with C_n/D_n; weights ``[L, |G|]``): ``weights`` (layer, bank, element),
      irrep ``energy`` (layer, irrep) and ``total`` (layer), ``breaking_score`` = non-trivial /
      total energy, the ``invariant_subgroup`` (labels joined by ",") with its
      ``subgroup_order`` and an ``invariant`` (layer, element) 0/1 mask.
    * "translation" (rgroup with "translation"; weights ``[L, H, W]``): ``weights`` (layer, bank,
      y, x), ``gradient`` = |grad w| summed over banks (layer, y, x), ``x_profile`` /
      ``y_profile`` (means over the other axis), ``breaking_score`` = variance / mean square of
      the maps (the non-constant share of their energy). Cell centres at ``j + 0.5``.
    * "steerable" (rsteer; coefficients ``[n, k*k]`` per kernel offset): ``coefficients``,
      ``variation`` = mean over coefficients of std / RMS across offsets, ``offset_variation``
      (layer, ky, kx) and ``breaking_score`` = variance / mean square across offsets.
    * "scale" (rsteer with group "scale"; coefficients ``w_b(s, z)`` ``[n, S, K, K]`` per scale
      and kernel offset; only the entries inside each scale's support count):
      ``scale_variation`` (layer, scale) = RMS over coefficients of (scale s's mean coefficient
      - the overall mean), relative to RMS(w); ``offset_variation`` (layer, ky, kx) = RMS
      deviation of each offset from its scale's mean (NaN where no scale reaches);
      ``breaking_score`` = variance / mean square over scales and offsets, split exactly into
      ``scale_score`` (the part carried by per-scale means) + ``offset_score`` (the part
      varying over offsets within a scale); attrs ``scale_score``/``offset_score`` pool the
      layers. The raw coefficients are ``model.relaxed_weights()``.
    * "other" (rpp free paths, lift context head, combo free layers, constrained locally
      connected kernels): per layer ``norm``, ``rms``, the layer's own ``penalty`` and a
      ``breaking_score`` where one is defined (combo: energy share outside the equivariant
      subspace; constrained: variance over pixels / mean square), NaN for the zero-started rpp
      and lift paths, whose norm is itself the amount of breaking.
    * "none": the model has no relaxed weights (strict or unconstrained), score 0.

    Every score is 0 for symmetric weights (a freshly built relaxed model). The overall score
    (attr ``breaking_score``) pools the energies of all layers the same way.
    """
    spec = getattr(model, "spec", {}) or {}
    layers = _relaxed_modules(model)
    base = dict(model=str(spec.get("name", type(model).__name__)), group=str(spec.get("group")))
    if not layers:
        return xr.Dataset(coords={"layer": np.asarray([], dtype=str)},
                          attrs=dict(base, kind="none", breaking_score=0.0))
    kinds = {_layer_kind(m) for _, m, _ in layers}
    kind = kinds.pop() if len(kinds) == 1 else "other"
    if kind == "group":
        ds = _group_analysis(layers, layers[0][1].group)
    elif kind == "translation":
        ds = _translation_analysis(layers)
    elif kind == "steerable":
        ds = _steerable_analysis(layers)
    elif kind == "scale":
        ds = _scale_analysis(layers)
    else:
        ds = _other_analysis(layers)
    ds.attrs.update(base, kind=kind)
    if kind == "group":
        ds.attrs["group"] = layers[0][1].group.name
    return ds


def boundary_location(translation_analysis: xr.Dataset | xr.DataArray) -> float:
    """x position (cells, cell centres at ``j + 0.5``) where translation weights change most.

    Takes :func:`breaking_analysis` of a translation model (or its ``gradient`` map), averages
    the gradient magnitude over layers and y into a column profile, finds its maximum column j,
    and refines it with a parabola through the peak and its neighbours (shift clipped to half a
    cell), so a step between columns ``W/2 - 1`` and ``W/2`` gives exactly ``W/2``. NaN when the
    maps are constant (nothing to locate).
    """
    grad = translation_analysis
    if isinstance(grad, xr.Dataset):
        if "gradient" not in grad:
            raise ValueError("boundary_location needs the translation analysis of "
                             "breaking_analysis (a 'gradient' variable over y and x)")
        grad = grad["gradient"]
    if "x" not in grad.dims:
        raise ValueError(f"gradient map needs an 'x' dim, got {grad.dims}")
    profile = grad.mean([d for d in grad.dims if d != "x"]).values.astype(np.float64)
    if not np.isfinite(profile).any() or np.nanmax(profile) <= 0:
        return math.nan
    j = int(np.nanargmax(profile))
    shift = 0.0
    if 0 < j < len(profile) - 1:
        a, b, c = profile[j - 1], profile[j], profile[j + 1]
        curv = a - 2 * b + c
        if curv < 0:
            shift = float(np.clip(0.5 * (a - c) / curv, -0.5, 0.5))
    x = grad["x"].values if "x" in grad.coords else np.arange(len(profile)) + 0.5
    spacing = float(x[1] - x[0]) if len(x) > 1 else 1.0
    return float(x[j] + shift * spacing)

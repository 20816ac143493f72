"""Discovery: does a dataset break a symmetry, where, and how sure can we be?

``discover(data, group)`` trains relaxed models on the data and on a symmetric *null* through the
job system, reads what the relaxed weights learned (for translation: would learn), and returns a
verdict with its evidence as an ``xarray.Dataset`` (``verdict_json`` gives the JSON of
``python -m core discover --json``).

The null
--------
Every discovery compares the data with a null that differs from it only by the symmetry:

* ``control`` given: that dataset (same grid and number of time steps; a rotation null must have
  the same orbit structure).
* rotations / reflections (C_n, D_n), no control: **the symmetrized orbits**. Each orbit member is
  replaced by its orbit element applied to the orbit's base member (``orbit_element`` 0), which
  is exactly symmetric data with the same inputs (for our simulated plumes it is exactly what the
  simulator gives for the set-up without the breaking: rotated siblings are bit-identical).
* translation, no control: **the counterfactual null** (:func:`counterfactual_null`): the
  recorded set-up re-simulated, every step taken a second time from the data's own state (smoke
  and velocity) with the buoyancy map replaced by its mean. The null's target for a window is
  what the symmetric rule gives from the very state the data's target came from: same inputs,
  only the rule differs. (A re-simulated *symmetric twin* drifts away from the data within tens
  of steps, and what the drift changes swamps what the buoyancy map does; measured in
  docs/RESULTS.md.) Data without a recorded set-up (imported), or one the solver does not
  reproduce bit for bit, needs a control: walls break translation symmetry too, so no
  translation null can be built from the data alone.

Protocols (the mechanism, measured in docs/RESULTS.md)
------------------------------------------------------
*Rotations and reflections*, per seed: (1) the strict model: ``rgroup`` with its relaxed weights
frozen equal (``train_params="shared"``), trained on the data with orbit batches; (2) from it,
only the relaxed weights train (``train_params="relaxed"``), with a learning rate of their own
that decays to a small fraction (``lr_decay``), on the data and on the null. Orbit batches make
the asymmetric part of every gradient exactly zero on symmetric data, so the null's weights stay
exactly equal and the data's move only where the data breaks the symmetry; freezing the strict
backbone and annealing the rate lets the weights settle on that breaking instead of jittering
around it (jointly trained weights at a constant rate named the odd member in 1 of 2 seeds; this
protocol in 6 of 6).

The readout compares each orbit member's own behaviour with the model's symmetric version: for
every training window ``x`` of member ``m`` the **gain** is ``MSE(fbar(x), y) - MSE(f(x), y)``,
where ``fbar(x) = mean_g g^-1 f(g x)`` is the group average of the trained model (exactly
equivariant). The member whose windows gain most from the breaking is the one the data treats
differently. The readout is equivariant by construction: turning the whole dataset turns the
trained weights (the training is equivariant) and hence the member positions the gains belong to,
so the named direction turns with the data. Directions come from the members' recorded inflow
positions, in the data's own frame (angle counter-clockwise from +x about the box centre).

*Translation*, per seed: the strict model, ``rgroup`` with its per-pixel relaxed weights held
equal (``train_params="shared"``), trained on the data's one-step targets. The readout is where
the weights would learn (:func:`relaxed_scores`): per *unit* (one simulation during 10 start
times) the gradient of the one-step MSE with respect to every per-pixel weight, with the data's
targets and with the null's on the same inputs. Per pixel, the units give a t of data minus
null; walls, inflows and plumes push both alike and cancel (units in standard errors, so where
the plumes are does not weigh more). The boundary is the single step that best explains that
t map: per seed, layer and bank the profile along an axis (mean over the other, ``margin`` cells
from the walls dropped) is split at every position and the two sides compared by a two-sample
t; the squares are averaged (:func:`step_scan`); the largest over both axes names the axis and
the position (between cells ``p - 1`` and ``p``, in cells from the lower-left corner). Trained
relaxed weights (the data's minus the null's, same seed and batches) show the same sign pattern
but the step fit on them lands 1-4 cells towards the centre (the maps are smoother and noisier)
(docs/RESULTS.md).

Significance
------------
* C_n / D_n: a **t statistic over data units**. Windows are grouped into units (one orbit
  during 10 start times); per unit, each member's gain averaged over seeds, minus the null's
  mean gain of that member. Two tests: the *direction* test takes per unit the resultant
  ``sum_e gain(e) (cos theta_e, sin theta_e)`` of the members' gains at their positions
  ``theta_e``, and divides the mean resultant's length by the standard error of the units'
  projections on it (under no breaking about the length of a 2-d standard normal: it reaches 3
  about 1 % of the time); the *axis* test does the same for the period-2 pattern (members a half
  turn apart alike). ``significance`` is the larger; ``broken`` when it is at least 3 and the
  data's gains exceed ten times the null's (the exactly symmetric nulls give float rounding
  only: their weights stay equal to about 1e-6) and 1e-5 of the rollout MSE. The direction is
  the mean resultant's angle, named by the nearest member; the invariant subgroup is the
  stabilizer of that member (or of the two axes) in G, the whole group when not broken.
* translation: a **cross-fitted t**. The units are split in two halves (alternating); one half
  picks the boundary and the sign of each seed's, layer's and bank's step there, the other half
  measures the sign-aligned step per unit (each map in units of its spread over units), as a t
  over its units (paired: data minus null on the same inputs; Welch with a control); then the
  halves swap and the two t's are combined as ``(t1 + t2) / sqrt(2)``. Since the measuring half
  did not choose the position it is about a standard normal when data and null do not differ
  (tests: under 5 % of such draws reach 3); broken when it is at least 3 *and* at least half
  the seeds (rounded up) put their own strongest step on the same axis within 2 cells.
  Symmetric data gives exactly 0: its null is itself. ``seed_boundary`` lists each seed's.

What it does not do: with a control dataset instead of the counterfactual null (imported data)
the data and the null have different trajectories, and the readout is unpaired and much weaker
(the translation scenario against its re-simulated twin: significance 1.8, not broken).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .datasets import DatasetError, WindowDataset, generate, load_dataset, save_dataset
from .files import atomic_write_json
from .groups import Element, TranslationGroup, _PlanarGroup, get_group, transform_field
from .runs import RunStore

__all__ = ["DiscoveryError", "Protocol", "PROTOCOLS", "Discovery", "DiscoveryStore", "discover",
           "check_request", "verdict_json", "symmetric_twin", "counterfactual_null",
           "symmetrized_orbits", "member_gains", "relaxed_scores", "step_scan", "launch",
           "request_cancel", "SIGNIFICANCE_METHODS", "THRESHOLDS"]

RECORDS = "discoveries"  # folder of a run store root holding the discovery records
THRESHOLDS = {"group": 3.0, "translation": 3.0}
REPRODUCTION_TOLERANCE = 1e-4  # re-simulated vs stored velocity, relative to the largest speed
NULL_FACTOR = 10.0  # data gains no larger than this many times the null's are no breaking
ROUNDING = 1e-5  # gains below this fraction of the rollout MSE are float32 rounding
SIGNIFICANCE_METHODS = {
    "group": "t over (orbit x 10-start) units of the members' rollout gains, along the "
             "direction they point to (or the axis pair); broken at >= 3",
    "translation": "cross-fitted t over (simulation x 10-start) units of the step in the "
                   "relaxed-weight gradient, data minus null, at the boundary the other half of "
                   "the units found; broken at >= 3 when at least half the seeds find that "
                   "boundary too",
}
LABELS = {0: "right", 90: "top", 180: "left", 270: "bottom"}
FINAL = ("done", "failed", "cancelled")


class DiscoveryError(ValueError):
    """A discovery that cannot run on this input: the message names what is wrong."""


@dataclass(frozen=True)
class Protocol:
    """Model sizes and training budgets of one discovery (JSON-friendly, stored with it)."""

    hidden_dim: int = 16
    num_layers: int = 4
    num_banks: int = 2
    in_frames: int = 10
    batch_size: int = 8
    batches_per_epoch: int = 25
    lr: float = 2e-3
    valid_samples: int = 64
    # translation: the strict model (one-step targets), then the relaxed weights' gradients
    epochs: int = 8
    margin: int = 1  # cells next to each wall left out of the boundary scan
    # rotations: strict backbone, then the relaxed weights alone with a decaying rate
    strict_epochs: int = 8
    relax_epochs: int = 6
    relax_lr: float = 0.01
    relax_decay: float = 0.5
    readout_starts: int = 32  # training start times (evenly spaced) in the gain readout
    device: str = "cpu"
    threads: int = 1  # per job; jobs run side by side

    def scaled(self, budget: float) -> "Protocol":
        """The same protocol with every stage's epochs multiplied by ``budget``."""
        if not budget > 0:
            raise DiscoveryError(f"budget must be a positive factor, got {budget}")
        return replace(self, epochs=max(1, round(self.epochs * budget)),
                       strict_epochs=max(1, round(self.strict_epochs * budget)),
                       relax_epochs=max(1, round(self.relax_epochs * budget)))


PROTOCOLS = {
    # 32x32, 3 seeds, 2 CPU cores: rotations about 2.5 minutes, translation about 20 s
    "default": Protocol(),
    # half a minute at 24x24, for tests and teaching: narrower models, fewer epochs (weaker)
    "quick": Protocol(hidden_dim=8, num_layers=3, batches_per_epoch=15, epochs=6,
                      strict_epochs=5, relax_epochs=4, valid_samples=16),
}


# ------------------------------------------------------------------------------ input checks
def _group(group):
    try:
        g = get_group(group)
    except ValueError as err:
        raise DiscoveryError(str(err)) from None
    if not isinstance(g, (TranslationGroup, _PlanarGroup)):
        raise DiscoveryError(f"discover supports translation, C<n> and D<n>; got {g.name}")
    if isinstance(g, _PlanarGroup) and not g.is_exact:
        raise DiscoveryError(f"{g.name} acts on the grid by interpolation; discover needs a group "
                             f"that maps the grid onto itself (C1, C2, C4, D1, D2, D4)")
    return g


def _load(path, what: str) -> xr.Dataset:
    try:
        return load_dataset(path)
    except DatasetError as err:
        raise DiscoveryError(f"{what}: {err}") from None


def _orbit_members(ds: xr.Dataset) -> dict[int, dict[int, int]]:
    """orbit -> {orbit_element: sim}, for the training sims."""
    train = set(np.atleast_1d(ds.attrs["split_train_sims"]).astype(int).tolist())
    out: dict[int, dict[int, int]] = {}
    for sim, (o, e) in enumerate(zip(ds["orbit"].values, ds["orbit_element"].values)):
        if sim in train:
            out.setdefault(int(o), {})[int(e)] = sim
    return out


def _element_index(group: _PlanarGroup, quarter: int) -> int:
    """Index in ``group`` of the rotation by ``quarter`` x 90 degrees (ValueError if absent)."""
    return group.index(Element(quarter * math.pi / 2))


def check_request(data: xr.Dataset, group, control: xr.Dataset | None, seeds: int,
                  protocol: Protocol, where: str = "DATA") -> None:
    """Raise DiscoveryError naming the first problem; nothing is written before this passes."""
    g = _group(group)
    if not isinstance(seeds, int) or seeds < 1:
        raise DiscoveryError(f"seeds must be an integer >= 1, got {seeds!r}")
    h, w = data.sizes["y"], data.sizes["x"]
    if isinstance(g, _PlanarGroup) and h != w and g.n not in (1, 2):
        raise DiscoveryError(f"{g.name} needs a square grid: {where} is {h}x{w} (H x W); "
                             f"a quarter turn of its frames would not fit the grid (python -m core "
                             f"import FILE --crop-square keeps the centred square)")
    train = np.atleast_1d(data.attrs["split_train_sims"])
    if isinstance(g, TranslationGroup):
        if len(train) < 3:
            raise DiscoveryError(f"{where} has {len(train)} training simulation(s); a translation "
                                 f"discovery needs at least 3")
        if control is None and "inflow_x" not in data.coords:
            raise DiscoveryError(f"{where} records no simulation set-up (inflows) to re-simulate "
                                 f"a symmetric twin; give a control dataset (--control)")
    else:
        if "orbit" not in data.coords or "orbit_element" not in data.coords:
            raise DiscoveryError(f"{g.name} discovery needs simulations that form orbits "
                                 f"(coordinates 'orbit' and 'orbit_element', as the rotation "
                                 f"and levels scenarios have); {where} has none")
        for e in np.unique(data["orbit_element"].values):
            try:
                _element_index(g, int(e))
            except ValueError:
                raise DiscoveryError(f"{where}'s orbits hold rotations by {90 * int(e)} degrees, "
                                     f"which {g.name} does not contain") from None
        complete = [m for m in _orbit_members(data).values()
                    if len(m) == len(np.unique(data["orbit_element"].values))]
        if len(complete) < 2:
            raise DiscoveryError(f"{where} has {len(complete)} complete orbit(s) among its "
                                 f"training simulations; the seeds, the null and the "
                                 f"significance need at least 2")
    windows = WindowDataset(data, "train", protocol.in_frames, 6)
    if len(windows) == 0:
        raise DiscoveryError(f"{where} has too few time steps ({data.sizes['time']}) for "
                             f"{protocol.in_frames} input frames and a 6-step rollout")
    if control is not None:
        for dim in ("y", "x", "time"):
            if control.sizes[dim] != data.sizes[dim]:
                what = "time steps" if dim == "time" else "grid"
                raise DiscoveryError(
                    f"the control's {what} differ from DATA's: {dict(y=control.sizes['y'], x=control.sizes['x'], time=control.sizes['time'])} "
                    f"vs {dict(y=h, x=w, time=data.sizes['time'])}")
        if isinstance(g, _PlanarGroup):
            check_request(control, g, None, seeds, protocol, where="the control")


# ------------------------------------------------------------------------------ nulls
def _direction(degrees: float) -> tuple[float, float]:
    """Unit vector at ``degrees``; exact for multiples of 90 (so twins stay bit-exact)."""
    quarter = degrees / 90.0
    if abs(quarter - round(quarter)) < 1e-9:
        return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][round(quarter) % 4]
    rad = math.radians(degrees)
    return math.cos(rad), math.sin(rad)


def _recorded_inflows(ds: xr.Dataset) -> list[list]:
    """The inflows a simulated dataset records, per simulation."""
    from .simulation import Inflow

    if "inflow_x" not in ds.coords:
        raise DiscoveryError("the dataset records no inflows to re-simulate")
    inflows = []
    for s in range(ds.sizes["sim"]):
        sim = []
        for i in range(ds.sizes["inflow"]):
            x = float(ds["inflow_x"].values[s, i])
            if not math.isfinite(x):
                continue
            sim.append(Inflow(x, float(ds["inflow_y"].values[s, i]),
                              float(ds["inflow_radius"].values[s, i]),
                              _direction(float(ds["inflow_direction"].values[s, i])),
                              float(ds["inflow_strength"].values[s, i])))
        inflows.append(sim)
    return inflows


def _maps(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The recorded buoyancy map and its uniform version (the mean, per simulation when the map
    is per simulation)."""
    bmap = ds["buoyancy_map"].values.astype(np.float32)
    mean = bmap.mean(axis=(-2, -1), keepdims=True)
    return bmap, np.broadcast_to(mean, bmap.shape).copy()


def symmetric_twin(ds: xr.Dataset, device: str = "auto") -> xr.Dataset:
    """The recorded set-up re-simulated with the buoyancy map replaced by its mean (per
    simulation when the map is per simulation): same inflows, walls, steps and split. A
    separate symmetric dataset, e.g. a control (its trajectories diverge from the data's)."""
    _, uniform = _maps(ds)
    twin = generate("custom", grid=(ds.sizes["y"], ds.sizes["x"]), steps=ds.sizes["time"],
                    inflows=_recorded_inflows(ds), buoyancy_map=uniform, device=device,
                    domain_sims=np.atleast_1d(ds.attrs["split_domain_sims"]).astype(int).tolist())
    for key in ("split_train_sims", "split_domain_sims", "window_train", "window_valid",
                "window_future", "window_domain"):
        twin.attrs[key] = ds.attrs[key]
    twin.attrs.update(null="symmetric twin: the set-up re-simulated with a uniform buoyancy map "
                           "(the map's mean)", null_of=str(ds.attrs.get("scenario")))
    return twin


def counterfactual_null(ds: xr.Dataset, device: str = "cpu") -> xr.Dataset:
    """The translation null of a simulated dataset: its recorded set-up re-simulated, and every
    step taken a second time from the *same* state (smoke and velocity) with the buoyancy map
    replaced by its mean. ``counterfactual[sim, t]`` is what the symmetric rule gives where the
    data has frame ``t``: same inputs, only the rule differs, so walls, inflows, plumes and the
    chaos of the trajectories are shared by data and null and cancel in their difference.

    Raises DiscoveryError when the re-simulation does not reproduce the stored velocity (data
    made by another solver version or device): such data needs a control."""
    from .simulation import SimulationConfig, simulate

    bmap, uniform = _maps(ds)
    config = SimulationConfig(grid=(ds.sizes["y"], ds.sizes["x"]), steps=ds.sizes["time"])
    velocity, counterfactual = simulate(_recorded_inflows(ds), config,
                                        buoyancy_map=torch.from_numpy(bmap),
                                        counterfactual_map=torch.from_numpy(uniform),
                                        device=device)
    stored = ds["velocity"].values
    gap = float(np.abs(velocity.numpy() - stored).max())
    scale = max(float(np.abs(stored).max()), 1e-12)
    if not gap <= REPRODUCTION_TOLERANCE * scale:
        raise DiscoveryError(f"re-simulating DATA's recorded set-up does not reproduce its "
                             f"velocity (largest difference {gap:.3g}, {gap / scale:.2%} of its "
                             f"largest speed; made by another solver version or device?): give "
                             f"a control dataset (--control)")
    keep = {k: v for k, v in ds.coords.items() if set(v.dims) <= set(ds["velocity"].dims)}
    null = xr.Dataset({"counterfactual": (ds["velocity"].dims, counterfactual.numpy(), dict(
        long_name="velocity after one step from the data's own state with a uniform buoyancy "
                  "map (its mean)", units="cells per time unit"))}, coords=keep)
    null.attrs.update({k: ds.attrs[k] for k in ("split_train_sims", "split_domain_sims",
                                                 "window_train", "window_valid") if k in ds.attrs})
    null.attrs.update(null="counterfactual: the data's own states stepped with a uniform "
                           "buoyancy map (the map's mean)", null_of=str(ds.attrs.get("scenario")),
                      reproduction_gap=gap)
    return null


def symmetrized_orbits(ds: xr.Dataset, group) -> xr.Dataset:
    """Each orbit member replaced by its orbit element applied to the orbit's base member:
    exactly symmetric data with the orbit structure, split and geometry of ``ds``."""
    g = _group(group)
    vel = torch.from_numpy(np.ascontiguousarray(ds["velocity"].values))
    out = vel.clone()
    orbits, elements = ds["orbit"].values, ds["orbit_element"].values
    for o in np.unique(orbits):
        members = np.flatnonzero(orbits == o)
        base = [m for m in members if elements[m] == 0]
        if len(base) != 1:
            raise DiscoveryError(f"orbit {o} has no unique base member (orbit_element 0)")
        for m in members:
            out[m] = transform_field(vel[base[0]], g, _element_index(g, int(elements[m])))
    null = ds.copy()
    null["velocity"] = (ds["velocity"].dims, out.numpy(), ds["velocity"].attrs)
    null.attrs.update(null="symmetrized orbits: every member is its orbit element applied to "
                           "the orbit's base member", null_of=str(ds.attrs.get("scenario")),
                      data_equivariance_error=0.0)
    return null


# ------------------------------------------------------------------------------ readouts
def _inverse(group: _PlanarGroup) -> list[int]:
    perm = group.inverse_product()  # perm[h, g] = index of h^-1 g
    return [int(perm[g, 0]) for g in range(group.order)]


def member_gains(model: torch.nn.Module, ds: xr.Dataset, group, *, steps: int = 6,
                 starts: int = 32, batch_size: int = 64) -> xr.Dataset:
    """Per training window: the gain of the model over its group average on a ``steps``-step
    autoregressive rollout, ``sum_t MSE(fbar_t, y_t) - MSE(f_t, y_t)``, where
    ``fbar(x) = mean_g g^-1 f(g x)`` (exactly equivariant) is rolled out on its own predictions.

    ``starts`` training start times, evenly spaced, of every training sim are used (the same
    for all, so each orbit and time block holds every member). Returns a Dataset over ``window`` with
    ``gain``, ``mse`` (of the group average) and coordinates ``sim``, ``start``, ``orbit`` and
    ``member`` (the sim's orbit element)."""
    g = _group(group)
    inv = _inverse(g)
    k = int(model.spec["in_frames"])
    windows = WindowDataset(ds, "train", k, steps)
    n = len(windows.starts)
    chosen = {windows.starts[j] for j in np.unique(np.linspace(0, n - 1, min(n, max(1, starts)))
                                                   .round().astype(int))} if n else set()
    picks = [i for i in range(len(windows)) if windows.index(i)[1] in chosen]
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    gains, mses = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(picks), batch_size):
                idx = picks[s:s + batch_size]
                x = torch.stack([windows[i][0] for i in idx]).to(dtype)
                y = torch.stack([windows[i][1] for i in idx]).to(dtype)
                own, bar = x, x
                gain = torch.zeros(len(idx), dtype=torch.float64)
                mse = torch.zeros(len(idx), dtype=torch.float64)
                for t in range(steps):
                    f = model(own)
                    fb = torch.stack([transform_field(model(transform_field(bar, g, e)), g, inv[e])
                                      for e in range(g.order)]).mean(0)
                    sym = ((fb - y[:, t]) ** 2).double().mean((1, 2, 3))
                    gain += sym - ((f - y[:, t]) ** 2).double().mean((1, 2, 3))
                    mse += sym
                    own, bar = torch.cat([own[:, 2:], f], 1), torch.cat([bar[:, 2:], fb], 1)
                gains.append(gain)
                mses.append(mse)
    finally:
        model.train(was_training)
    where = [windows.index(i) for i in picks]
    sims = np.asarray([w[0] for w in where])
    return xr.Dataset(
        {"gain": ("window", torch.cat(gains).numpy(),
                  dict(long_name="gain of the relaxed model over its group average",
                       definition=f"sum over a {steps}-step rollout of MSE(fbar, y) - MSE(f, y)")),
         "mse": ("window", torch.cat(mses).numpy(),
                 dict(long_name=f"{steps}-step summed MSE of the group-averaged model"))},
        coords={"sim": ("window", sims), "start": ("window", np.asarray([w[1] for w in where])),
                "orbit": ("window", ds["orbit"].values[sims]),
                "member": ("window", ds["orbit_element"].values[sims])})


def relaxed_scores(model: torch.nn.Module, ds: xr.Dataset, *,
                   counterfactual: xr.Dataset | None = None, control: xr.Dataset | None = None,
                   block: int = 10) -> dict[str, np.ndarray]:
    """The gradient of the one-step MSE with respect to the model's relaxed weights (the
    direction they would learn in), per *unit* of training windows: one simulation during
    ``block`` consecutive start times. Returns ``{"data": [unit, layer, bank, H, W], "null":
    ...}``: the null's targets are ``counterfactual``'s frames on the data's own inputs (paired,
    unit for unit), or the ``control``'s own windows (its own units)."""
    k = int(model.spec["in_frames"])
    was_training = model.training
    model.eval()
    weights = list(model.relaxed_weights().values())
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(True)

    def per_unit(windows, targets=None):
        out, n = [], len(windows.starts)
        for first in range(0, len(windows), n):  # the windows' items run sim by sim
            for a in range(first, first + n, block):
                items = range(a, min(a + block, first + n))
                x = torch.stack([windows[i][0] for i in items])
                y = torch.stack([windows[i][1][0] for i in items] if targets is None else
                                [targets[sim, t + k] for sim, t in map(windows.index, items)])
                loss = ((model(x) - y) ** 2).mean()
                grads = torch.autograd.grad(loss, weights)
                out.append(torch.stack([g.detach() for g in grads]).numpy())  # float32
        return np.stack(out)

    try:
        data = WindowDataset(ds, "train", k, 1)
        result = {"data": per_unit(data)}
        if counterfactual is not None:
            result["null"] = per_unit(data, torch.from_numpy(
                np.ascontiguousarray(counterfactual["counterfactual"].values)))
        elif control is not None:
            result["null"] = per_unit(WindowDataset(control, "train", k, 1))
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
        model.train(was_training)
    return result


def _profiles(maps: np.ndarray, axis: str, margin: int) -> np.ndarray:
    """Profiles ``[..., cells]`` of maps ``[..., H, W]`` along ``axis`` (mean over the other),
    ``margin`` cells next to each wall left out."""
    profile = maps.mean(-2 if axis == "x" else -1)
    return profile[..., margin:profile.shape[-1] - margin]


def step_scan(maps: np.ndarray, margin: int = 1) -> xr.Dataset:
    """How well one step explains the profile of maps ``[lead..., H, W]`` along each axis.

    Per leading index (seed, layer, bank) and candidate position ``p`` (the boundary between
    cells ``p - 1`` and ``p``, from the lower-left corner) the profile is split at ``p`` and the
    two sides' means compared by a two-sample t (residual variance from the profile itself);
    ``statistic`` is its square averaged over the leading indices. At least two cells stay on
    each side. All-zero maps give 0."""
    maps = np.asarray(maps, dtype=np.float64)
    h, w = maps.shape[-2:]
    flat = maps.reshape(-1, h, w)
    stats, positions, axes = [], [], []
    for axis, n in (("x", w), ("y", h)):
        profile = _profiles(flat, axis, margin)
        m = profile.shape[-1]
        for k in range(2, m - 1):
            left, right = profile[:, :k], profile[:, k:]
            resid = np.concatenate([left - left.mean(1, keepdims=True),
                                    right - right.mean(1, keepdims=True)], 1)
            var = (resid ** 2).sum(1) / (m - 2) * (1 / k + 1 / (m - k))
            jump2 = (right.mean(1) - left.mean(1)) ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                t2 = np.where(var > 0, jump2 / np.where(var > 0, var, 1.0), 0.0)
            stats.append(float(t2.mean()))
            positions.append(margin + k)
            axes.append(axis)
    return xr.Dataset({"statistic": ("candidate", np.asarray(stats), dict(
        long_name="step statistic",
        definition="mean over seeds, layers and banks of the squared two-sample t of a single "
                   "step in the profile"))},
        coords={"axis": ("candidate", np.asarray(axes)),
                "position": ("candidate", np.asarray(positions))})


def _t_map(data: np.ndarray, null: np.ndarray, paired: bool) -> np.ndarray:
    """Per element, t of data minus null over units (axis 0): paired (same units) or Welch."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if paired:
            d = data - null
            se = d.std(0, ddof=1) / math.sqrt(len(d))
            mean = d.mean(0)
        else:
            se = np.sqrt(data.var(0, ddof=1) / len(data) + null.var(0, ddof=1) / len(null))
            mean = data.mean(0) - null.mean(0)
        return np.where(se > 0, mean / np.where(se > 0, se, 1.0), 0.0)


def _best(scan: xr.Dataset) -> tuple[str, int]:
    k = int(np.argmax(scan["statistic"].values))
    return str(scan["axis"].values[k]), int(scan["position"].values[k])


def _contrasts(maps: np.ndarray, axis: str, position: int, margin: int) -> np.ndarray:
    """Right-of-the-step minus left-of-the-step profile means, ``[unit, lead]``."""
    profile = _profiles(maps, axis, margin)
    k = position - margin
    return profile[..., k:].mean(-1) - profile[..., :k].mean(-1)


def _held_out_t(data: np.ndarray, null: np.ndarray, paired: bool, margin: int) -> float:
    """Cross-fitted significance of the strongest step, units ``[unit, lead, H, W]``: the units
    are split in two halves (alternating); one half picks the boundary and the sign of each
    leading index's step, the other half measures it (per unit, the sign-aligned steps, each
    leading index in units of its spread, averaged) as a t over its units; then the halves swap.
    Returns their Stouffer combination ``(t1 + t2) / sqrt(2)``: about a standard normal when
    nothing breaks the symmetry, free of the selection of the position (the half that measures
    did not choose it)."""
    ts = []
    for pick in (0, 1):
        fit_d, test_d = data[pick::2], data[1 - pick::2]
        fit_n, test_n = (null[pick::2], null[1 - pick::2])
        tmap = _t_map(fit_d, fit_n, paired)
        if not np.any(tmap):
            return 0.0
        axis, position = _best(step_scan(tmap, margin))
        sign = np.sign(_contrasts(tmap[None], axis, position, margin)[0])
        cd = _contrasts(test_d, axis, position, margin)
        cn = _contrasts(test_n, axis, position, margin)
        if paired:
            c = cd - cn
            spread = c.std(0, ddof=1)
        else:
            spread = np.sqrt((cd.var(0, ddof=1) + cn.var(0, ddof=1)) / 2)
        use = spread > 0
        if not use.any():
            return 0.0
        if paired:
            z = (c[:, use] / spread[use] * sign[use]).mean(1)
            se = z.std(ddof=1) / math.sqrt(len(z))
            t = z.mean() / se if se > 0 else 0.0
        else:
            zd = (cd[:, use] / spread[use] * sign[use]).mean(1)
            zn = (cn[:, use] / spread[use] * sign[use]).mean(1)
            se = math.sqrt(zd.var(ddof=1) / len(zd) + zn.var(ddof=1) / len(zn))
            t = (zd.mean() - zn.mean()) / se if se > 0 else 0.0
        ts.append(float(t))
    return float(sum(ts) / math.sqrt(2))


# ------------------------------------------------------------------------------ records
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DiscoveryError(f"{path}: missing") from None
    except (OSError, ValueError) as err:
        raise DiscoveryError(f"{path}: unreadable ({err})") from None


class Discovery:
    """One discovery record: a folder with ``request.json``, ``status.json``, the constructed
    ``null.nc``, ``runs/`` (a run store with its training runs, so no other job manager picks
    them up and deleting the record deletes them), and when done ``result.json`` (the verdict)
    and ``evidence.nc`` (the verdict's Dataset). Files are replaced atomically;
    ``cancel.request`` asks the driver to stop."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.id = self.path.name

    def __repr__(self) -> str:
        return f"Discovery({str(self.path)!r})"

    @property
    def runs(self) -> RunStore:
        """The record's own run store (folder ``runs/``): its training runs."""
        return RunStore(self.path / "runs")

    @property
    def request(self) -> dict:
        return _read(self.path / "request.json")

    def status(self) -> dict:
        return _read(self.path / "status.json")

    def update_status(self, **values) -> dict:
        status = {**self.status(), **values, "updated": _now()}
        atomic_write_json(self.path / "status.json", status)
        return status

    def result(self) -> dict | None:
        path = self.path / "result.json"
        return _read(path) if path.exists() else None

    def evidence(self) -> xr.Dataset | None:
        path = self.path / "evidence.nc"
        if not path.exists():
            return None
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()

    @property
    def cancel_requested(self) -> bool:
        return (self.path / "cancel.request").exists()


class DiscoveryStore:
    """The discovery records of one run store (folder ``<runs root>/discoveries``)."""

    def __init__(self, runs_root: str | os.PathLike):
        self.runs_root = Path(runs_root)
        self.root = self.runs_root / RECORDS

    def create(self, request: dict) -> Discovery:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        group = "".join(c for c in str(request["group"]) if c.isalnum())
        name = Path(str(request["data"])).stem
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))
        try:
            atomic_write_json(tmp / "request.json", dict(request, created=_now()))
            atomic_write_json(tmp / "status.json", dict(state="queued", progress=0.0, runs=[],
                                                        message="", error=None, updated=_now()))
            for attempt in range(100):
                path = self.root / (f"{stamp}-{name}-{group}" + (f"-{attempt}" if attempt else ""))
                try:
                    os.rename(tmp, path)
                    return Discovery(path)
                except OSError:
                    continue
            raise DiscoveryError(f"cannot name a new discovery record in {self.root}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def get(self, discovery_id: str) -> Discovery:
        path = self.root / discovery_id
        if "/" in discovery_id or discovery_id.startswith(".") or not path.is_dir():
            raise DiscoveryError(f"no discovery {discovery_id!r} in {self.root}")
        return Discovery(path)

    def list(self) -> list[dict]:
        """One row per record, oldest first: id, data, group, state, progress, broken,
        significance, error. A record whose driver process died is marked failed."""
        if not self.root.is_dir():
            return []
        rows = []
        for path in sorted(p for p in self.root.iterdir()
                           if p.is_dir() and not p.name.startswith(".")):
            rec = Discovery(path)
            try:
                request, status = rec.request, _recover(rec)
                result = rec.result() or {}
            except DiscoveryError as err:
                rows.append(dict(id=rec.id, state="damaged", error=str(err)))
                continue
            rows.append(dict(id=rec.id, data=Path(str(request.get("data"))).name,
                             group=request.get("group"), state=status.get("state"),
                             progress=status.get("progress"), broken=result.get("broken"),
                             significance=result.get("significance"),
                             error=status.get("error"), created=request.get("created")))
        return rows


STARTUP_S = 120.0  # a launched record with no driver after this long has failed


def _recover(record: Discovery) -> dict:
    """The record's status, first marking it failed when its driver is gone: a dead pid on
    this host, or a launched record that no driver took up within STARTUP_S seconds."""
    from .jobs import process_alive

    status = record.status()
    state, pid = status.get("state"), status.get("pid")
    if state not in ("queued", "running"):
        return status
    if pid is not None and status.get("host") == socket.gethostname() and not process_alive(int(pid)):
        return record.update_status(state="failed", error="the discovery process died")
    if pid is None and time.time() - (record.path / "status.json").stat().st_mtime > STARTUP_S:
        return record.update_status(state="failed", error="the discovery process never started")
    return status


def request_cancel(record: Discovery) -> None:
    (record.path / "cancel.request").touch()


# ------------------------------------------------------------------------------ driver
def _training(protocol: Protocol, seed: int, **extra) -> dict:
    return dict(batch_size=protocol.batch_size, batches_per_epoch=protocol.batches_per_epoch,
                lr=protocol.lr, valid_samples=protocol.valid_samples, device=protocol.device,
                threads=protocol.threads, seed=seed, **extra)


def _spec(protocol: Protocol, group: str, alpha: float) -> dict:
    return dict(name="rgroup", group=group, in_frames=protocol.in_frames,
                hidden_dim=protocol.hidden_dim, num_layers=protocol.num_layers,
                num_banks=protocol.num_banks, alpha=alpha)


class _Cancelled(Exception):
    pass


def _wait(manager, record: Discovery, run_ids: list[str], planned: int,
          progress: Callable[[float, str], None] | None, cancel: Callable[[], bool] | None,
          done_before: int = 0) -> None:
    """Poll until ``run_ids`` are final; report progress over ``planned`` runs; on cancel,
    cancel them and raise _Cancelled."""
    while True:
        statuses = [manager.status(r) for r in run_ids]
        if (cancel is not None and cancel()) or record.cancel_requested:
            for r in run_ids:
                manager.cancel(r)
            raise _Cancelled()
        finished = sum(s.get("state") in FINAL for s in statuses)
        fraction = (done_before + sum(1.0 if s.get("state") in FINAL else
                                      float(s.get("progress") or 0) for s in statuses)) / planned
        message = f"{done_before + finished} of {planned} training runs finished"
        record.update_status(progress=min(1.0, fraction), message=message)
        if progress is not None:
            progress(min(1.0, fraction), message)
        if finished == len(run_ids):
            failed = [r for r, s in zip(run_ids, statuses) if s.get("state") != "done"]
            if failed:
                errors = "; ".join(f"{r}: {manager.status(r).get('error')}" for r in failed)
                raise DiscoveryError(f"{len(failed)} training run(s) did not finish: {errors}")
            return
        time.sleep(manager.poll)


def discover(data: str | os.PathLike, group: str, *, control: str | os.PathLike | None = None,
             seeds: int = 3, protocol: Protocol | str = "default", budget: float = 1.0,
             runs: str | os.PathLike = "runs", manager=None, scheduler=None,
             record: Discovery | None = None,
             progress: Callable[[float, str], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> xr.Dataset:
    """Run one discovery (see the module docstring) and return its verdict Dataset.

    ``data`` and ``control`` are dataset files; ``runs`` the run store root whose
    ``discoveries/`` folder gets the record (with the training runs in the record's own store);
    ``manager`` a :class:`core.jobs.JobManager` to train with (its store then holds the runs),
    else one is made on the record's store (local worker processes, two at a time, or a Dask
    cluster with ``scheduler``: its workers must see the record's folder). ``progress(fraction, message)`` is called while runs train; ``cancel()``
    returning True (or ``cancel.request`` in the record) cancels the runs and raises
    ``InterruptedError``. Bad input raises DiscoveryError before anything is written.
    """
    from .jobs import JobManager

    started = time.perf_counter()
    try:
        if isinstance(protocol, str) and protocol not in PROTOCOLS:
            raise DiscoveryError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        proto = (PROTOCOLS[protocol] if isinstance(protocol, str) else protocol).scaled(budget)
        data_path = Path(data).resolve()
        ds = _load(data_path, "DATA")
        g = _group(group)
        control_path = Path(control).resolve() if control is not None else None
        ctrl = _load(control_path, "the control") if control_path is not None else None
        check_request(ds, g, ctrl, seeds, proto)
        # built before the record: data the solver does not reproduce is bad input
        counterfactual = (counterfactual_null(ds, device=proto.device)
                          if ctrl is None and isinstance(g, TranslationGroup) else None)
    except DiscoveryError as err:
        if record is not None:  # a launched record must not stay queued
            record.update_status(state="failed", error=str(err))
        raise
    if record is None:
        record = DiscoveryStore(runs).create(dict(
            data=str(data_path), group=g.name, control=str(control_path) if control_path else None,
            seeds=seeds, protocol=asdict(proto), budget=budget))
    record.update_status(state="running", pid=os.getpid(), host=socket.gethostname(),
                         message="preparing the null", error=None)
    own_manager = manager is None
    if own_manager:  # the record's own run store: no other manager dispatches these runs
        manager = JobManager(record.runs, scheduler=scheduler, max_cpu_jobs=2, poll=0.5)
    try:
        if ctrl is not None:
            null_path, null_kind = control_path, "control"
        elif counterfactual is not None:
            null_path, null_kind = record.path / "null.nc", "counterfactual"
            counterfactual.to_netcdf(record.path / ".null.tmp", engine="h5netcdf")
            os.replace(record.path / ".null.tmp", null_path)
        else:
            null = symmetrized_orbits(ds, g)
            null_path, null_kind = record.path / "null.nc", null.attrs["null"].split(":")[0]
            save_dataset(null, null_path)
        if isinstance(g, TranslationGroup):
            evidence = _translation(manager, record, ds, data_path,
                                    ctrl if counterfactual is None else counterfactual,
                                    counterfactual is not None, seeds, proto, progress, cancel)
        else:
            evidence = _rotation(manager, record, ds, data_path, null_path, g, seeds, proto,
                                 progress, cancel)
        evidence.attrs.update(data=str(data_path), null=null_kind, null_path=str(null_path),
                              run_store=str(manager.store.root),
                              discovery=record.id, seeds=seeds, budget=budget,
                              seconds=time.perf_counter() - started,
                              protocol=json.dumps(asdict(proto)))
        evidence.to_netcdf(record.path / ".evidence.tmp", engine="h5netcdf")
        os.replace(record.path / ".evidence.tmp", record.path / "evidence.nc")
        atomic_write_json(record.path / "result.json", verdict_json(evidence))
        record.update_status(state="done", progress=1.0, message=_sentence(evidence))
        return evidence
    except _Cancelled:
        record.update_status(state="cancelled", message="cancelled by request")
        raise InterruptedError(f"discovery {record.id} cancelled") from None
    except BaseException as err:
        record.update_status(state="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        if own_manager:
            manager.shutdown()


def _tags(record: Discovery, role: str, seed: int) -> dict:
    return dict(discovery=record.id, role=role, seed=seed)


def _submit(manager, record, spec, training, path, role, seed) -> str:
    run_id = manager.submit(spec, training, path, tags=_tags(record, role, seed))
    record.update_status(runs=record.status().get("runs", []) + [run_id])
    return run_id


def _translation(manager, record, ds, data_path, other, paired, seeds, proto, progress,
                 cancel):
    spec = _spec(proto, "translation", 0.0)
    strict = [_submit(manager, record, spec,
                      _training(proto, s, epochs=proto.epochs, train_steps=1,
                                train_params="shared"), data_path, "strict", s)
              for s in range(seeds)]
    _wait(manager, record, strict, len(strict), progress, cancel)
    record.update_status(message="reading the relaxed weights' gradients")
    scores = [relaxed_scores(manager.store.get(r).load_model("last"), ds,
                             **({"counterfactual": other} if paired else {"control": other}))
              for r in strict]
    data = np.stack([sc["data"] for sc in scores], 1)  # [unit, seed, layer, bank, H, W]
    null = np.stack([sc["null"] for sc in scores], 1)
    del scores  # the units dominate the memory at 64x64
    lead = (data.shape[0], -1, *data.shape[-2:])
    tmap = _t_map(data, null, paired)  # [seed, layer, bank, H, W]
    per_seed = [step_scan(tmap[s], proto.margin) for s in range(seeds)]
    stats = np.stack([p["statistic"].values for p in per_seed])
    scan = xr.Dataset({"statistic": ("candidate", stats.mean(0))}, coords=per_seed[0].coords)
    axis, position = _best(scan)
    if not scan["statistic"].values.max() > 0:  # data and null push the weights alike
        axis, position = "", math.nan
    significance = _held_out_t(data.reshape(lead), null.reshape(lead), paired, proto.margin)
    seed_best = [_best(p) for p in per_seed]
    agreeing = sum(a == axis and abs(p - position) <= 2 for a, p in seed_best)
    broken = bool(significance >= THRESHOLDS["translation"] and agreeing >= (seeds + 1) // 2)

    def own(values):  # each side's own push on the relaxed weights, in standard errors
        with np.errstate(invalid="ignore", divide="ignore"):
            se = values.std(0, ddof=1) / math.sqrt(len(values))
            return np.where(se > 0, values.mean(0) / np.where(se > 0, se, 1.0), 0.0).mean(0)

    dims = ("layer", "bank", "y", "x")
    out = xr.Dataset(
        {"difference": (dims, tmap.mean(0), dict(
            long_name="relaxed-weight gradient, data minus null, t per pixel",
            note="mean over seeds")),
         "data_score": (dims, own(data), dict(long_name="relaxed-weight gradient on the data, t "
                                                        "per pixel (mean over seeds)")),
         "null_score": (dims, own(null), dict(long_name="relaxed-weight gradient on the null, t "
                                                        "per pixel (mean over seeds)")),
         "boundary_statistic": scan["statistic"],
         "seed_statistic": (("seed", "candidate"), stats,
                            dict(long_name="step statistic of each seed's t map")),
         "strict_runs": ("seed", strict),
         "seed_boundary": ("seed", [f"{a}={p}" for a, p in seed_best])},
        coords={"layer": np.arange(tmap.shape[1]), "bank": np.arange(tmap.shape[2]),
                "y": np.arange(tmap.shape[3]) + 0.5, "x": np.arange(tmap.shape[4]) + 0.5,
                "seed": np.arange(seeds), "axis": scan["axis"], "position": scan["position"]})
    out.attrs.update(group="translation", kind="translation", broken=int(broken),
                     significance=float(significance),
                     significance_method=SIGNIFICANCE_METHODS["translation"],
                     threshold=THRESHOLDS["translation"], paired=int(paired),
                     boundary_axis=axis, boundary_position=float(position),
                     boundary_statistic=float(scan["statistic"].max()),
                     seeds_agreeing=int(agreeing), units=int(data.shape[0]))
    return out


def _member_angles(ds: xr.Dataset) -> dict[int, float | None]:
    """Angle (degrees, counter-clockwise from +x about the box centre) of each orbit member's
    inflow, from the recorded positions; None without them."""
    out = {}
    h, w = ds.sizes["y"], ds.sizes["x"]
    for e in np.unique(ds["orbit_element"].values):
        if "inflow_x" not in ds.coords:
            out[int(e)] = None
            continue
        sims = np.flatnonzero(ds["orbit_element"].values == e)
        dx = np.nanmean(ds["inflow_x"].values[sims, 0]) - w / 2
        dy = np.nanmean(ds["inflow_y"].values[sims, 0]) - h / 2
        out[int(e)] = float(np.degrees(np.arctan2(dy, dx)) % 360)
    return out


def _unit_table(gains: list[xr.Dataset], members: list[int], block: int = 10) -> np.ndarray:
    """``[units, members]``: mean gain (averaged over seeds) of each member in each unit, a unit
    being one orbit during one block of ``block`` start times (every member is in every unit)."""
    first = gains[0]
    mean_gain = np.mean([p["gain"].values for p in gains], 0)
    unit = first["orbit"].values.astype(np.int64) * 1_000_000 + first["start"].values // block
    units = np.unique(unit)
    table = np.full((len(units), len(members)), np.nan)
    for i, u in enumerate(units):
        for j, e in enumerate(members):
            pick = (unit == u) & (first["member"].values == e)
            if pick.any():
                table[i, j] = mean_gain[pick].mean()
    return table[~np.isnan(table).any(1)]


def _direction_tests(table: np.ndarray, angles: list[float]) -> dict:
    """Two tests on the units' member gains, each a t statistic over units (mean / standard
    error of the mean):

    * direction (the frequency-1 part of the gains over the member positions): per unit the
      resultant ``r_u = sum_e gain_u(e) (cos theta_e, sin theta_e)``; ``phi`` = angle of the mean
      resultant; ``t_direction`` = mean of ``r_u . (cos phi, sin phi)`` over its standard error.
      Under no breaking (independent units) it is about as large as the length of a 2-d
      standard normal: P(>= 3) is about 1 %.
    * axis (the period-2 part, members a half turn apart alike): per unit
      ``sum_e (-1)^{theta_e / 90} gain_u(e)``; ``t_axis`` = |mean| / standard error (only when
      the members sit on both axes).
    """
    theta = np.radians(np.asarray(angles))
    n = table.shape[0]
    out = dict(phi=math.nan, t_direction=0.0, t_axis=0.0, axis_sign=0.0)
    if n < 2:
        return out
    resultant = table @ np.stack([np.cos(theta), np.sin(theta)], 1)  # [units, 2]
    mean = resultant.mean(0)
    if np.any(mean):
        phi = math.atan2(mean[1], mean[0])
        proj = resultant @ np.array([math.cos(phi), math.sin(phi)])
        se = proj.std(ddof=1) / math.sqrt(n)
        out.update(phi=math.degrees(phi) % 360,
                   t_direction=float(proj.mean() / se) if se > 0 else math.inf)
    parity = np.round(np.asarray(angles) / 90.0).astype(int) % 2
    if 0 < parity.sum() < len(parity):
        axis = table @ np.where(parity == 0, 1.0, -1.0)
        se = axis.std(ddof=1) / math.sqrt(n)
        if se > 0:
            out.update(t_axis=float(abs(axis.mean()) / se), axis_sign=float(np.sign(axis.mean())))
    return out


def _rotation(manager, record, ds, data_path, null_path, g, seeds, proto, progress, cancel):
    spec = _spec(proto, g.name, 0.0)
    planned = 3 * seeds
    strict = [_submit(manager, record, spec, _training(proto, s, epochs=proto.strict_epochs,
                                                       orbit_batches=True, train_params="shared"),
                      data_path, "strict", s) for s in range(seeds)]
    _wait(manager, record, strict, planned, progress, cancel)
    relax, pairs = [], []
    for s, base in enumerate(strict):
        training = _training(proto, s, epochs=proto.relax_epochs, orbit_batches=True,
                             train_params="relaxed", relaxed_lr=proto.relax_lr,
                             lr_decay=proto.relax_decay,
                             init_weights=str(manager.store.get(base).path))
        pair = (_submit(manager, record, spec, training, data_path, "data", s),
                _submit(manager, record, spec, training, null_path, "null", s))
        pairs.append(pair)
        relax += pair
    _wait(manager, record, relax, planned, progress, cancel, done_before=len(strict))
    record.update_status(message="reading the relaxed weights")
    null_ds = load_dataset(null_path)
    members = sorted(int(e) for e in np.unique(ds["orbit_element"].values))
    gains, weights = {}, {}
    for role, source, starts in (("data", ds, proto.readout_starts),
                                 ("null", null_ds, max(1, proto.readout_starts // 4))):
        per_seed, w_seed = [], []
        for pair in pairs:
            model = manager.store.get(pair[0 if role == "data" else 1]).load_model("last")
            per_seed.append(member_gains(model, source, g, starts=starts))
            w_seed.append(np.stack([w.detach().double().numpy()
                                    for w in model.relaxed_weights().values()]))
        gains[role], weights[role] = per_seed, np.stack(w_seed)
    located = _member_angles(ds)
    relative = any(located[e] is None for e in members)  # no inflow positions recorded
    angles = [90.0 * e if relative else located[e] for e in members]
    null_table = _unit_table(gains["null"], members)
    # the null's gains are what training and readout give without any asymmetry in the data
    # (float rounding for the exactly symmetric nulls); the data must clearly exceed them
    table = _unit_table(gains["data"], members) - np.nanmean(null_table, 0)
    tests = _direction_tests(table, angles)
    scale = float(np.mean([p["mse"].values.mean() for p in gains["data"]]))
    floor = max(NULL_FACTOR * float(np.abs(null_table).max(initial=0.0)), ROUNDING * scale)
    tiny = float(np.abs(table).max(initial=0.0)) <= floor
    t_dir = 0.0 if tiny else tests["t_direction"]
    t_axis = 0.0 if tiny else tests["t_axis"]
    significance = max(t_dir, t_axis)
    broken = bool(significance >= THRESHOLDS["group"])
    kind = "direction" if t_dir >= t_axis else "axis"
    phi = tests["phi"]
    nearest = (int(np.argmin([abs(math.remainder(a - phi, 360.0)) for a in angles]))
               if math.isfinite(phi) else 0)
    label = None if relative or not math.isfinite(phi) else \
        LABELS[int(round(angles[nearest] / 90.0)) % 4 * 90]
    invariant = ([str(el) for el in g.elements()] if not broken
                 else _stabilizer(g, angles, nearest if kind == "direction" else None))
    member_gain = {role: np.asarray([[p["gain"].values[p["member"].values == e].mean()
                                      for e in members] for p in gains[role]])
                   for role in ("data", "null")}
    coords = {"member": members, "seed": np.arange(seeds), "role": ["data", "null"],
              "member_angle": ("member", np.asarray(angles, dtype=np.float64)),
              "member_label": ("member", [LABELS.get(int(round(a / 90.0)) % 4 * 90, "")
                                          if not relative else "" for a in angles]),
              "layer": np.arange(weights["data"].shape[1]),
              "bank": np.arange(weights["data"].shape[2]),
              "element": [str(e) for e in g.elements()]}
    out = xr.Dataset(
        {"gain": (("role", "seed", "member"), np.stack([member_gain["data"], member_gain["null"]]),
                  dict(long_name="mean gain per orbit member",
                       definition="sum over a 6-step rollout of MSE(fbar, y) - MSE(f, y), "
                                  "mean over the member's training windows")),
         "unit_gain": (("unit", "member"), table,
                       dict(long_name="gain per unit (orbit x 10 start times), mean over seeds")),
         "weights": (("role", "seed", "layer", "bank", "element"),
                     np.stack([weights["data"], weights["null"]]),
                     dict(long_name="relaxed weights w[l, g]")),
         "strict_runs": ("seed", strict), "data_runs": ("seed", [p[0] for p in pairs]),
         "null_runs": ("seed", [p[1] for p in pairs])},
        coords=coords)
    out.attrs.update(group=g.name, kind="group", broken=int(broken),
                     significance=float(significance),
                     significance_method=SIGNIFICANCE_METHODS["group"],
                     threshold=THRESHOLDS["group"],
                     t_direction=float(t_dir), t_axis=float(t_axis), breaking_kind=kind,
                     named_member=int(members[nearest]),
                     direction_angle=float(phi) if math.isfinite(phi) else math.nan,
                     direction_relative=int(relative), direction_label=label or "",
                     invariant_subgroup=",".join(invariant), units=int(table.shape[0]))
    return out


def _stabilizer(g: _PlanarGroup, angles: list[float], named: int | None) -> list[str]:
    """Elements of ``g`` that keep the detected pattern: the named member's position when the
    breaking has a direction (``named``), else the two axes (members a half turn apart)."""
    keep = []
    for el in g.elements():
        mat = el.matrix.numpy()

        def moved(a):
            v = mat @ np.array([math.cos(math.radians(a)), math.sin(math.radians(a))])
            return math.degrees(math.atan2(v[1], v[0])) % 360

        if named is not None:
            ok = abs(math.remainder(moved(angles[named]) - angles[named], 360.0)) < 1e-6
        else:
            ok = all(round(moved(a) / 90.0) % 2 == round(a / 90.0) % 2 for a in angles)
        if ok:
            keep.append(str(el))
    return keep


# ------------------------------------------------------------------------------ output
def verdict_json(evidence: xr.Dataset) -> dict:
    """The JSON verdict of ``python -m core discover --json`` from an evidence Dataset."""
    a = evidence.attrs
    out = dict(group=a["group"], broken=bool(a["broken"]), significance=float(a["significance"]),
               significance_method=a["significance_method"], null=a.get("null"),
               data=a.get("data"), discovery=a.get("discovery"), seeds=int(a.get("seeds", 0)),
               seconds=float(a.get("seconds", math.nan)))
    if a["kind"] == "translation":
        out["boundary"] = (dict(axis=a["boundary_axis"], position=float(a["boundary_position"]))
                           if a["boundary_axis"] else None)
        out["runs"] = [str(r) for r in evidence["strict_runs"].values]
    else:
        angle = a.get("direction_angle")
        out["direction"] = dict(angle_deg=None if angle is None or not math.isfinite(angle)
                                else float(angle), label=a.get("direction_label") or None,
                                member=int(a["named_member"]),
                                relative_to_base=bool(a.get("direction_relative", 0)))
        out["breaking_kind"] = a.get("breaking_kind")
        out["t_direction"], out["t_axis"] = float(a["t_direction"]), float(a["t_axis"])
        out["invariant_subgroup"] = a["invariant_subgroup"].split(",")
        out["runs"] = [str(r) for v in ("strict_runs", "data_runs", "null_runs")
                       for r in evidence[v].values]
    out["run_store"] = evidence.attrs.get("run_store")
    return out


def _sentence(evidence: xr.Dataset) -> str:
    a = evidence.attrs
    head = (f"{a['group']}: {'broken' if a['broken'] else 'no breaking found'} "
            f"(significance {a['significance']:.3g})")
    if a["kind"] == "translation":
        return head + (f"; strongest boundary {a['boundary_axis']} = {a['boundary_position']:g}"
                       if a["boundary_axis"] else "; no boundary stands out")
    where = a.get("direction_label") or f"member {a['named_member']}"
    return head + f"; the data treats the {where} member differently"


def launch(data: str | os.PathLike, group: str, *, runs: str | os.PathLike,
           control: str | os.PathLike | None = None, seeds: int = 3, budget: float = 1.0,
           protocol: str = "default") -> Discovery:
    """Check the request, create its record and run it in a detached ``python -m core
    discover`` process (the dashboard's Discover button); returns the record to watch."""
    proto = PROTOCOLS.get(protocol)
    if proto is None:
        raise DiscoveryError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    ds = _load(data, "DATA")
    ctrl = _load(control, "the control") if control is not None else None
    g = _group(group)
    check_request(ds, g, ctrl, seeds, proto.scaled(budget))
    record = DiscoveryStore(runs).create(dict(
        data=str(Path(data).resolve()), group=g.name, seeds=seeds, budget=budget,
        control=str(Path(control).resolve()) if control else None,
        protocol=asdict(proto.scaled(budget))))
    cmd = [sys.executable, "-m", "core", "discover", str(Path(data).resolve()), "--group", g.name,
           "--seeds", str(seeds), "--budget", str(budget), "--protocol", protocol,
           "--runs", str(Path(runs).resolve()), "--record", str(record.path)]
    if control is not None:
        cmd += ["--control", str(Path(control).resolve())]
    with open(record.path / "driver.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
    # reap it when it ends, so a finished driver is not left as a zombie of a long-lived server
    threading.Thread(target=proc.wait, daemon=True, name=f"discover-{record.id}").start()
    return record

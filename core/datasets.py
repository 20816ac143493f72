"""Scenarios -> xarray.Dataset; netCDF I/O; windowed torch Dataset; splits; .pt import.

Format (one netCDF file, engine h5netcdf, compressed)
-----------------------------------------------------
* ``velocity``: float32, dims ``(sim, time, component, y, x)``, component = ["u", "v"]; u along x,
  v along y, y growing with the row index (see :mod:`core.groups`).
* per-sim coordinates ``inflow_x, inflow_y, inflow_radius, inflow_direction`` (degrees,
  counter-clockwise from +x), ``inflow_strength`` with dims ``(sim, inflow)``; ``orbit`` and
  ``orbit_element`` where the sims form group orbits; ``scale`` / ``level`` where they apply.
* ``buoyancy_map``: dims ``(y, x)`` or ``(sim, y, x)``.
* attributes: ``scenario``, ``breaking``, ``grid``, ``dt``, ``steps``, ``solver`` (JSON), ``seed``,
  ``package_version``, ``orbit_group``, and the split: ``split_train_sims``,
  ``split_domain_sims`` (held-out sims) and the start-time windows ``window_train``,
  ``window_valid``, ``window_future``, ``window_domain`` as half-open ``[begin, end)`` ranges
  (the paper's 0-159, 160-199, 200-249 and 0-99, scaled when there are fewer than 310 steps).
  A sample starting at ``t`` uses frames ``t .. t + in_frames - 1`` as input and the following
  frames as targets; starts whose targets would run past the end are dropped.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from . import scenarios as sc
from .groups import get_group, transform_field, transform_scalar
from .devices import resolve_device
from .files import atomic_write
from .simulation import DIV_TOLERANCE, SimulationConfig, max_divergence, simulate

DIMS = ("sim", "time", "component", "y", "x")
SPLITS = ("train", "valid", "future", "domain")
DEFAULT_TARGET_STEPS = {"train": 6, "valid": 6, "future": 20, "domain": 20}
ENGINE = "h5netcdf"


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the file and what is wrong."""


def _package_version() -> str:
    from . import __version__
    return __version__


# ------------------------------------------------------------------------------------ generate
def generate(scenario: str, *, grid: int | tuple[int, int] = 64, steps: int = 310,
             sims: int | None = None, breaking: float = 1.0, seed: int = 0,
             device: str = "auto", progress: Callable[[int, int], None] | None = None,
             cancel: Callable[[], bool] | None = None, **custom) -> xr.Dataset:
    """Simulate a scenario (see :mod:`core.scenarios`) and return it as an ``xarray.Dataset``.

    ``grid`` is an int (square) or ``(H, W)``; ``sims`` caps the number of simulations (orbit
    scenarios take multiples of 4); ``progress(done, total)`` is called once per simulated step
    over all batches; ``cancel()`` returning True stops with ``InterruptedError``. The custom
    scenario takes ``inflows=[[Inflow, ...], ...]``, optional ``buoyancy_map`` and
    ``domain_sims``. ``seed`` seeds torch for the run and is recorded (the solver itself is
    deterministic).
    """
    grid = (grid, grid) if isinstance(grid, int) else tuple(int(v) for v in grid)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if sims is not None and sims < 1:
        raise ValueError(f"sims must be >= 1, got {sims}")
    if not math.isfinite(breaking) or breaking < 0:
        raise ValueError(f"breaking must be a finite number >= 0, got {breaking}")
    setup = sc.build(scenario, grid, sims, breaking, **custom)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    n = len(setup.inflows)
    if scenario == "scale":
        velocity = _simulate_scaled(setup, grid, steps, dev, progress, cancel)
    else:
        config = SimulationConfig(grid=grid, steps=steps)

        def step_done(step, total):
            if progress is not None:
                progress(step * n, total * n)

        velocity = simulate(setup.inflows, config, buoyancy_map=torch.from_numpy(setup.buoyancy_map),
                            device=dev, progress=step_done, cancel=cancel)
    ds = _to_dataset(velocity.numpy(), setup, scenario=scenario, breaking=breaking, seed=seed,
                     steps=steps, grid=grid)
    if setup.orbit_group:  # recorded so plots need not reload the data
        ds.attrs["data_equivariance_error"] = float(data_equivariance_error(ds).mean())
    return ds


def _simulate_scaled(setup, grid, steps, device, progress, cancel) -> torch.Tensor:
    """Each scale sim runs alone on its enlarged domain, then is area-averaged to ``grid``."""
    out = []
    total = steps * len(setup.inflows)
    for i, (inflows, f) in enumerate(zip(setup.inflows, setup.scale)):
        big = (int(round(grid[0] * f)), int(round(grid[1] * f)))
        config = SimulationConfig(grid=big, steps=steps)

        def step_done(step, _total, i=i):
            if progress is not None:
                progress(i * steps + step, total)

        vel = simulate([inflows], config, device=device, progress=step_done, cancel=cancel)[0]
        small = torch.nn.functional.adaptive_avg_pool2d(vel, grid) / f
        out.append(small)
    return torch.stack(out)


def _to_dataset(velocity: np.ndarray, setup: sc.SetUp, *, scenario, breaking, seed, steps,
                grid, solver: dict | None = None) -> xr.Dataset:
    """Assemble the format of the module docstring (imported data has no inflows)."""
    n = velocity.shape[0]
    most = max(len(s) for s in setup.inflows)
    solver = SimulationConfig().solver if solver is None else solver

    def per_inflow(fn):
        arr = np.full((n, most), np.nan, dtype=np.float64)
        for s, sim in enumerate(setup.inflows):
            for i, inflow in enumerate(sim):
                arr[s, i] = fn(inflow)
        return (("sim", "inflow"), arr)

    coords = {"sim": np.arange(n), "time": np.arange(steps), "component": ["u", "v"],
              "y": np.arange(grid[0]) + 0.5, "x": np.arange(grid[1]) + 0.5}
    if most:
        coords.update(
            inflow_x=per_inflow(lambda f: f.x), inflow_y=per_inflow(lambda f: f.y),
            inflow_radius=per_inflow(lambda f: f.radius),
            inflow_direction=per_inflow(
                lambda f: math.degrees(math.atan2(f.unit_direction()[1], f.unit_direction()[0]))),
            inflow_strength=per_inflow(lambda f: f.strength))
    if setup.orbit:
        coords["orbit"] = ("sim", np.asarray(setup.orbit))
    if setup.orbit_element:
        coords["orbit_element"] = ("sim", np.asarray(setup.orbit_element))
    if setup.scale:
        coords["scale"] = ("sim", np.asarray(setup.scale))
    for key, values in setup.extra.items():
        if isinstance(values, list):
            coords[key] = ("sim", np.asarray(values))
    bmap = setup.buoyancy_map
    bdims = ("y", "x") if bmap.ndim == 2 else ("sim", "y", "x")
    train_sims = [i for i in range(n) if i not in set(setup.domain_sims)]
    attrs = dict(
        scenario=scenario, breaking=float(breaking), grid=np.asarray(grid, dtype=np.int64),
        dt=SimulationConfig().dt, steps=int(steps), solver=json.dumps(solver),
        seed=int(seed), package_version=_package_version(),
        orbit_group=setup.orbit_group or "",
        split_train_sims=np.asarray(train_sims, dtype=np.int64),
        split_domain_sims=np.asarray(setup.domain_sims, dtype=np.int64),
    )
    for key, value in setup.extra.items():
        if not isinstance(value, list):
            attrs[key] = value
    for name, (a, b) in sc.windows(steps).items():
        attrs[f"window_{name}"] = np.asarray([a, b], dtype=np.int64)
    ds = xr.Dataset({"velocity": (DIMS, velocity.astype(np.float32, copy=False)),
                     "buoyancy_map": (bdims, bmap.astype(np.float32))}, coords=coords, attrs=attrs)
    ds["velocity"].attrs.update(units="cells per time unit", long_name="velocity (u, v)")
    return ds


# ------------------------------------------------------------------------------------ file I/O
def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to netCDF atomically: a temporary file in the same folder, then a rename, so a
    reader never sees a half-written file and an existing file survives a failed write."""
    path = Path(path)
    validate(ds, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = (1, min(16, ds.velocity.shape[1]), 2, *ds.velocity.shape[-2:])
    encoding = {"velocity": {"compression": "gzip", "compression_opts": 1, "shuffle": True,
                             "chunksizes": chunk}}
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine=ENGINE, encoding=encoding))
    return path


def load_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Read and validate a dataset file; raise :class:`DatasetError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(8)
    if not (magic.startswith(b"\x89HDF") or magic.startswith(b"CDF")):
        raise DatasetError(f"{path}: not a netCDF file")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    except Exception as err:  # h5py/h5netcdf raise many kinds on damaged files
        raise DatasetError(f"{path}: cannot be read as netCDF ({type(err).__name__}: {err})") from None
    validate(ds, str(path))
    return ds


def dataset_attrs(path: str | os.PathLike) -> dict:
    """A dataset file's attributes, read from its header (no velocity data is loaded)."""
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return dict(ds.attrs)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the attributes ({err})") from None


def read_frames(path: str | os.PathLike, sim: int, start: int, count: int) -> np.ndarray:
    """Frames ``start .. start + count - 1`` of one simulation, ``[count, 2, H, W]``, reading only
    those chunks of the file."""
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds["velocity"][sim, start:start + count].values


def dataset_grid(path: str | os.PathLike) -> list[int]:
    """``[H, W]`` of a dataset file, read from its header (no velocity data is loaded)."""
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return [int(ds.sizes["y"]), int(ds.sizes["x"])]
    except (OSError, KeyError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the grid ({err})") from None


def validate(ds: xr.Dataset, where: str = "dataset") -> None:
    """Check the format described in the module docstring."""
    if "velocity" not in ds:
        raise DatasetError(f"{where}: missing variable 'velocity'")
    vel = ds["velocity"]
    if vel.dims != DIMS:
        raise DatasetError(f"{where}: velocity has dims {vel.dims}, expected {DIMS}")
    if vel.dtype != np.float32:
        raise DatasetError(f"{where}: velocity has dtype {vel.dtype}, expected float32")
    if list(ds["component"].values) != ["u", "v"]:
        raise DatasetError(f"{where}: component must be ['u', 'v'], got {list(ds['component'].values)}")
    if not np.isfinite(vel.values).all():
        raise DatasetError(f"{where}: velocity contains NaN or inf")
    n, steps = vel.shape[:2]
    for key in ("split_train_sims", "split_domain_sims"):
        if key not in ds.attrs:
            raise DatasetError(f"{where}: missing split attribute '{key}'")
    train = np.atleast_1d(ds.attrs["split_train_sims"]).astype(int)
    domain = np.atleast_1d(ds.attrs["split_domain_sims"]).astype(int)
    if len(train) == 0:
        raise DatasetError(f"{where}: split_train_sims is empty")
    for key, sims in (("split_train_sims", train), ("split_domain_sims", domain)):
        if len(sims) and (sims.min() < 0 or sims.max() >= n):
            raise DatasetError(f"{where}: {key} has sims outside 0..{n - 1}: {sims.tolist()}")
    if set(train) & set(domain):
        raise DatasetError(f"{where}: sims {sorted(set(train) & set(domain))} are both train and domain")
    for name in SPLITS:
        key = f"window_{name}"
        if key not in ds.attrs:
            raise DatasetError(f"{where}: missing split attribute '{key}'")
        a, b = (int(v) for v in np.atleast_1d(ds.attrs[key]))
        if not 0 <= a <= b <= steps:
            raise DatasetError(f"{where}: {key} = [{a}, {b}) does not fit {steps} time steps")


# ------------------------------------------------------------------------------------ windows
class WindowDataset(torch.utils.data.Dataset):
    """Samples ``(x, y)`` of one split: ``x = [2 * in_frames, H, W]`` (frames stacked as channels,
    (u, v) pairs), ``y = [target_steps, 2, H, W]``. Items are views into one tensor that holds the
    velocity array once; nothing is copied per sample."""

    def __init__(self, ds: xr.Dataset, split: str, in_frames: int = 10,
                 target_steps: int | None = None):
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if in_frames < 1:
            raise DatasetError(f"in_frames must be >= 1, got {in_frames}")
        self.split, self.in_frames = split, in_frames
        self.target_steps = target_steps or DEFAULT_TARGET_STEPS[split]
        self.velocity = torch.from_numpy(np.ascontiguousarray(ds["velocity"].values))
        steps = self.velocity.shape[1]
        key = "split_domain_sims" if split == "domain" else "split_train_sims"
        self.sims = [int(s) for s in np.atleast_1d(ds.attrs[key])]
        a, b = (int(v) for v in np.atleast_1d(ds.attrs[f"window_{split}"]))
        last = steps - in_frames - self.target_steps  # latest start with all targets inside
        self.starts = list(range(a, min(b, last + 1)))

    def __len__(self) -> int:
        return len(self.sims) * len(self.starts)

    def index(self, i: int) -> tuple[int, int]:
        """(sim, start time) of item ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self.sims[i // len(self.starts)], self.starts[i % len(self.starts)]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sim, t = self.index(i)
        k = self.in_frames
        x = self.velocity[sim, t:t + k].reshape(2 * k, *self.velocity.shape[-2:])
        y = self.velocity[sim, t + k:t + k + self.target_steps]
        return x, y


# ------------------------------------------------------------------------------------ import
PT_LAYOUTS = {
    # published PhiFlow smoke data: one [T, 2, H, W] tensor of (u, v) per simulation
    "phiflow": dict(scenario="imported-phiflow"),
    # published JetFlow PIV data: one [T, 2, H, W] tensor per trajectory on a 62 x 23 grid
    "jetflow": dict(scenario="imported-jetflow"),
}


def import_pt(folder: str | os.PathLike, layout: str) -> xr.Dataset:
    """Read a folder of per-simulation ``.pt`` tensors ``[T, 2, H, W]`` (u, v) into the dataset
    format (:func:`core.importers.read_flow`: natural order of names, never unpickled, the
    default splits). Layouts: "phiflow" (smoke plumes) and "jetflow" (PIV jets); they share the
    tensor convention and differ in the scenario name recorded."""
    from .importers import read_flow

    if layout not in PT_LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; valid: {', '.join(PT_LAYOUTS)}")
    if not Path(folder).is_dir():
        raise DatasetError(f"{folder}: not a folder")
    ds = read_flow(folder)
    ds.attrs["scenario"] = PT_LAYOUTS[layout]["scenario"]
    return ds


# ------------------------------------------------------------------------------------ transform
def transform_dataset(ds: xr.Dataset, group: str, element) -> xr.Dataset:
    """The whole dataset acted on by an exact element of C_n / D_n (a quarter turn or a flip of
    a square grid): every velocity field is moved and turned (:func:`core.groups.transform_field`),
    the buoyancy map is moved, and the inflow positions and directions are turned the same way
    about the box centre. Orbit labels (``orbit``, ``orbit_element``: each member's element
    relative to its orbit's base) are kept: the turned data has the same orbit structure, seen
    from a turned frame. Attributes that name a boundary position (``boundary_x``) are dropped,
    since the boundary moved."""
    from .groups import Element, _PlanarGroup

    g = get_group(group)
    if not isinstance(g, _PlanarGroup):
        raise DatasetError(f"transform_dataset needs a group C<n> or D<n>, got {g.name}")
    el = g.elements()[element] if isinstance(element, int) else element
    if not isinstance(el, Element) or not el.is_exact:
        raise DatasetError(f"transform_dataset needs an exact element (quarter turn or flip), "
                           f"got {el}")
    h, w = ds.sizes["y"], ds.sizes["x"]
    if el.angle % math.pi and h != w:
        raise DatasetError(f"a quarter turn needs a square grid, this one is {h}x{w}")
    vel = torch.from_numpy(np.ascontiguousarray(ds["velocity"].values))
    out = ds.copy()
    out["velocity"] = (ds["velocity"].dims, transform_field(vel, g, el).numpy(),
                       ds["velocity"].attrs)
    bmap = torch.from_numpy(np.ascontiguousarray(ds["buoyancy_map"].values))
    out["buoyancy_map"] = (ds["buoyancy_map"].dims, transform_scalar(bmap, g, el).numpy())
    if "inflow_x" in ds.coords:
        rot = el.matrix.numpy()
        px = ds["inflow_x"].values - w / 2
        py = ds["inflow_y"].values - h / 2
        qx, qy = rot[0, 0] * px + rot[0, 1] * py, rot[1, 0] * px + rot[1, 1] * py
        rad = np.radians(ds["inflow_direction"].values)
        dx, dy = np.cos(rad), np.sin(rad)
        ex, ey = rot[0, 0] * dx + rot[0, 1] * dy, rot[1, 0] * dx + rot[1, 1] * dy
        out = out.assign_coords(
            inflow_x=(("sim", "inflow"), qx + w / 2), inflow_y=(("sim", "inflow"), qy + h / 2),
            inflow_direction=(("sim", "inflow"), np.round(np.degrees(np.arctan2(ey, ex)), 9)))
    out.attrs.pop("boundary_x", None)
    out.attrs["transformed"] = f"{g.name} {el}" + (f" after {ds.attrs['transformed']}"
                                                    if ds.attrs.get("transformed") else "")
    return out


# ------------------------------------------------------------------------------------ analysis
def data_equivariance_error(ds: xr.Dataset, group: str | None = None) -> xr.DataArray:
    """How far the data is from symmetric, per orbit (0 = exactly symmetric).

    The sims of an orbit scenario are declared images of the orbit's base sim (element 0) under
    a group element: sim ``m = g_m . base``. Following the paper (the difference between the
    dynamics of transformed inputs and the transformed dynamics), the error of member m is
    ``RMS(g_m . u_base - u_m) / RMS(u_m)``, RMS over time, space and components: relative, so
    about 1 means "unrelated flows" at any speed. An orbit's error is the mean over its non-base
    members; the absolute RMS (velocity units) comes along as the ``absolute`` coordinate.

    group "C4" (rotation, levels): ``g_m`` is the quarter turn ``orbit_element``.
    group "translation": orbits are sims sharing an inflow row; ``g_m`` shifts by the inflow's
    x offset (periodically, so walls make this non-zero even for a symmetric set-up).
    Returns a DataArray over ``orbit`` (``.mean()`` for one number).
    """
    group = group or ds.attrs.get("orbit_group") or None
    if group is None or "orbit" not in ds.coords:
        raise DatasetError(f"dataset '{ds.attrs.get('scenario')}' has no orbit structure; "
                           "data equivariance needs the rotation, levels or translation scenario")
    get_group(group)  # a clear ValueError for unknown names
    vel = torch.from_numpy(np.ascontiguousarray(ds["velocity"].values)).double()
    orbits = ds["orbit"].values
    relative, absolute, labels = [], [], []
    for o in np.unique(orbits):
        members = np.flatnonzero(orbits == o)
        if group == "translation":
            xs = ds["inflow_x"].values[members, 0]
            base = members[np.argmin(xs)]
            moved = {m: torch.roll(vel[base], int(round(x - xs.min())), dims=-1)
                     for m, x in zip(members, xs) if m != base}
        else:
            if "orbit_element" not in ds.coords:
                raise DatasetError(f"group {group} needs the 'orbit_element' coordinate")
            elements = ds["orbit_element"].values
            base = members[elements[members] == 0]
            if len(base) != 1:
                raise DatasetError(f"orbit {o} has no unique base sim (orbit_element 0)")
            moved = {m: transform_field(vel[base[0]], group, int(elements[m])) for m in members
                     if m != base[0]}
        if not moved:
            continue
        rms = [float(((moved[m] - vel[m]) ** 2).mean().sqrt()) for m in moved]
        scale = [float((vel[m] ** 2).mean().sqrt()) for m in moved]
        relative.append(float(np.mean([r / s if s > 0 else 0.0 for r, s in zip(rms, scale)])))
        absolute.append(float(np.mean(rms)))
        labels.append(int(o))
    return xr.DataArray(np.asarray(relative), dims=("orbit",),
                        coords={"orbit": labels, "absolute": ("orbit", np.asarray(absolute))},
                        name="data_equivariance_error",
                        attrs=dict(group=group, definition="mean over orbit members of "
                                   "RMS(g.u_base - u_member) / RMS(u_member)"))


def summary(ds: xr.Dataset) -> dict:
    """What `python -m core info` prints: sizes, scenario, split, divergence, equivariance."""
    vel = ds["velocity"]
    info = dict(
        dims={d: int(s) for d, s in zip(vel.dims, vel.shape)},
        scenario=str(ds.attrs.get("scenario")), breaking=float(ds.attrs.get("breaking", "nan")),
        seed=int(ds.attrs.get("seed", -1)), package_version=str(ds.attrs.get("package_version")),
        split=dict(train_sims=np.atleast_1d(ds.attrs["split_train_sims"]).tolist(),
                   domain_sims=np.atleast_1d(ds.attrs["split_domain_sims"]).tolist(),
                   **{f"window_{s}": np.atleast_1d(ds.attrs[f"window_{s}"]).tolist()
                      for s in SPLITS}),
        max_speed=max(float(np.sqrt((sim ** 2).sum(axis=1)).max()) for sim in vel.values),
        max_divergence=max_divergence(torch.from_numpy(np.ascontiguousarray(vel.values))),
        divergence_tolerance=DIV_TOLERANCE,
    )
    try:
        err = data_equivariance_error(ds)
        info["data_equivariance_error"] = dict(group=err.attrs["group"], mean=float(err.mean()),
                                               per_orbit=[float(e) for e in err.values])
    except DatasetError:
        info["data_equivariance_error"] = None
    return info

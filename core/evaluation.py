"""Evaluation artifacts: analyses of a run computed once and shared by every reader.

A dashboard serving a class shows the same shipped runs to every session; the analyses behind
its tabs (the breaking decomposition of the relaxed weights, the flow player's rollout) are
computed once per run, weights file and dataset, written to the run folder and read by every
session and every server process afterwards.

Layout: ``<run>/evaluation/<kind>-<weights fingerprint>-<dataset fingerprint or "none">.nc``,
an ``xarray.Dataset`` (netCDF, engine h5netcdf) written atomically (:mod:`core.files`). The
fingerprints are part of the name, so retrained weights or a regenerated dataset never meet a
stale result: they look for another file. Older artifacts of the same kind are removed when a
new one is written.

Computing is serialised per artifact: a thread lock inside the process and an ``flock`` on a
lock file beside the artifact across processes (``panel serve --num-procs``), so two sessions
asking for the same missing analysis at once compute it once. A damaged artifact (unreadable,
or whose attributes do not match its name) is recomputed and replaced. When the run folder is
read-only the result is kept in the process cache only.

Kinds (:data:`KINDS`):

* ``breaking``: :func:`core.analysis.breaking_analysis` of the best weights (no dataset).
* ``rollout``: the flow player's window: the first held-out ("domain") simulation, else the
  first training simulation's future window, ``in_frames`` frames of truth then up to 20
  autoregressive steps: ``truth`` and ``prediction`` over (step, component, y, x) and ``rmse``
  per step.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import xarray as xr

from .analysis import breaking_analysis
from .datasets import dataset_attrs, read_frames
from .files import atomic_write
from .runs import ENGINE, Run, RunError, dataset_fingerprint

try:  # POSIX: serialise computing across server processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: threads only
    fcntl = None

__all__ = ["EvaluationError", "KINDS", "evaluation", "precompute", "weights_fingerprint",
           "cached_metrics", "cached_dataset_attrs", "artifact_path", "clear_cache"]

log = logging.getLogger(__name__)

FOLDER = "evaluation"
VERSION = 1  # bump when an artifact's content changes; old files are then ignored and replaced
ROLLOUT_STEPS = 20


class EvaluationError(RunError):
    """An analysis that cannot be computed (e.g. the run's dataset is not here); the message
    says what is missing."""


# ------------------------------------------------------------------------------ file-keyed cache
class _FileCache:
    """Values computed from a file, kept until the file's size or mtime changes (LRU)."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path, compute: Callable[[Path], object], extra=()):
        st = path.stat()  # FileNotFoundError propagates: the caller says what is missing
        key = (str(path), *extra)
        stamp = (st.st_mtime_ns, st.st_size)
        with self.lock:
            hit = self.items.get(key)
            if hit is not None and hit[0] == stamp:
                self.items.move_to_end(key)
                return hit[1]
        value = compute(path)
        with self.lock:
            self.items[key] = (stamp, value)
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def clear(self):
        with self.lock:
            self.items.clear()


_fingerprints = _FileCache(256)
_metrics = _FileCache(128)
_attrs = _FileCache(64)
_artifacts = _FileCache(128)
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def clear_cache() -> None:
    """Forget everything cached in this process (the files stay)."""
    for cache in (_fingerprints, _metrics, _attrs, _artifacts):
        cache.clear()


def _sha16(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def weights_fingerprint(run: Run) -> str:
    """sha256 (16 hex) of the run's best weights file, cached until the file changes."""
    path = run.weights_path("best")
    if not path.exists():
        raise RunError(f"run {run.id!r} has no weights yet")
    return _fingerprints.get(path, _sha16, ("weights",))


def _dataset_fingerprint(path: Path) -> str:
    return _fingerprints.get(path, dataset_fingerprint, ("dataset",))


def cached_metrics(run: Run) -> xr.Dataset | None:
    """The run's metrics, read once per version of metrics.nc (None before the first epoch)."""
    path = run.path / "metrics.nc"
    if not path.exists():
        return None
    try:
        return _metrics.get(path, lambda _p: run.read_metrics())
    except FileNotFoundError:  # replaced or deleted between stat and read
        return run.read_metrics()


def cached_dataset_attrs(path: str | os.PathLike) -> dict:
    """A dataset file's attributes, read once per version of the file ({} when it is absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    return _attrs.get(path, dataset_attrs)


# ------------------------------------------------------------------------------ the kinds
def _breaking(run: Run, _dataset: Path | None) -> xr.Dataset:
    return breaking_analysis(run.load_model())


def _rollout(run: Run, dataset: Path | None) -> xr.Dataset:
    attrs = cached_dataset_attrs(dataset)
    model = run.load_model()
    k = int(model.spec["in_frames"])
    domain = np.atleast_1d(attrs["split_domain_sims"])
    split, sims = ("domain", domain) if len(domain) else (
        "future", np.atleast_1d(attrs["split_train_sims"]))
    start = int(np.atleast_1d(attrs[f"window_{split}"])[0])
    steps = max(1, min(ROLLOUT_STEPS, int(attrs["steps"]) - start - k))
    sim = int(sims[0])
    frames = read_frames(dataset, sim, start, k + steps)
    window = torch.from_numpy(frames[:k]).reshape(1, 2 * k, *frames.shape[-2:]).float()
    predictions = []
    model.eval()
    with torch.no_grad():
        for _ in range(steps):
            pred = model(window)
            predictions.append(pred[0].reshape(2, *frames.shape[-2:]))
            window = torch.cat([window[:, 2:], pred], 1)
    truth = frames[k:].astype(np.float32)
    prediction = torch.stack(predictions).numpy().astype(np.float32)
    dims = ("step", "component", "y", "x")
    steps_coord = np.arange(1, steps + 1)
    rmse = np.sqrt(((prediction.astype(np.float64) - truth) ** 2).mean(axis=(1, 2, 3)))
    return xr.Dataset(
        {"truth": (dims, truth), "prediction": (dims, prediction), "rmse": (("step",), rmse)},
        coords={"step": steps_coord, "component": ["u", "v"]},
        attrs=dict(split=split, sim=sim, start=start, in_frames=k))


KINDS: dict[str, tuple[bool, Callable[[Run, Path | None], xr.Dataset]]] = {
    "breaking": (False, _breaking),
    "rollout": (True, _rollout),
}


# ------------------------------------------------------------------------------ artifacts
def _key(run: Run, kind: str) -> tuple[str, Path | None, str]:
    if kind not in KINDS:
        raise ValueError(f"unknown evaluation kind {kind!r}; valid: {', '.join(KINDS)}")
    needs_dataset, _ = KINDS[kind]
    dataset = None
    dataset_fp = "none"
    if needs_dataset:
        dataset = run.dataset_path()
        if not dataset.exists():
            raise EvaluationError(f"dataset {dataset.name} of run {run.id!r} is not here "
                                  f"({dataset}; `make data` generates the default ones)")
        dataset_fp = _dataset_fingerprint(dataset)
    return f"{kind}-{weights_fingerprint(run)}-{dataset_fp}", dataset, dataset_fp


def artifact_path(run: Run, kind: str) -> Path:
    """Where ``kind`` of ``run`` for its current weights and dataset is (or would be) stored."""
    name, _, _ = _key(run, kind)
    return run.path / FOLDER / f"{name}.nc"


def _read(path: Path, expected: dict) -> xr.Dataset:
    with xr.open_dataset(path, engine=ENGINE) as ds:
        ds = ds.load()
    found = {k: ds.attrs.get(f"evaluation_{k}") for k in expected}
    if found != expected:
        raise ValueError(f"attributes {found} do not match {expected}")
    return ds


def _thread_lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


class _FileLock:
    """An exclusive ``flock`` on ``<folder>/.<name>.lock``; a no-op where it cannot be had
    (read-only folder, no fcntl): then only this process's thread lock serialises."""

    def __init__(self, path: Path):
        self.path = path.parent / f".{path.name}.lock"
        self.fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        try:
            self.path.parent.mkdir(exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return self
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
        return False


def evaluation(run: Run, kind: str) -> xr.Dataset:
    """``kind`` of ``run`` (see :data:`KINDS`), computed at most once per weights file and
    dataset and shared through the run folder and a process cache.

    Raises :class:`EvaluationError` when it cannot be computed (no dataset here) and
    :class:`~core.runs.RunError` when the run has no weights or vanished.
    """
    name, dataset, dataset_fp = _key(run, kind)
    path = run.path / FOLDER / f"{name}.nc"
    expected = dict(kind=kind, weights=name.split("-")[1], dataset=dataset_fp, version=VERSION)
    reader = lambda p: _read(p, expected)  # noqa: E731
    try:
        return _artifacts.get(path, reader)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError) as err:
        log.warning("evaluation artifact %s is damaged (%s); recomputing", path, err)
    with _thread_lock(path), _FileLock(path):
        try:  # another thread or process may have written it while we waited
            return _artifacts.get(path, reader)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError):
            pass
        started = time.perf_counter()
        ds = KINDS[kind][1](run, dataset)
        ds.attrs.update({f"evaluation_{k}": v for k, v in expected.items()},
                        evaluation_seconds=time.perf_counter() - started,
                        evaluation_pid=os.getpid(), evaluation_run=run.id)
        try:
            atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine=ENGINE))
        except FileNotFoundError:
            if not run.path.is_dir():
                raise RunError(f"run {run.id!r} was deleted") from None
            raise
        except OSError as err:  # read-only run folder: serve from memory only
            log.info("cannot store %s (%s); keeping it in memory", path, err)
            return ds
        _remove_stale(path.parent, kind, keep=path.name)
        return _artifacts.get(path, reader)


def _remove_stale(folder: Path, kind: str, keep: str) -> None:
    for old in folder.glob(f"{kind}-*.nc"):
        if old.name != keep:
            old.unlink(missing_ok=True)
            (folder / f".{old.name}.lock").unlink(missing_ok=True)


def precompute(runs: Iterable[Run], kinds: Iterable[str] | None = None,
               say: Callable[[str], None] = print) -> list[dict]:
    """Compute (or confirm) every artifact of every finished run; one row per run and kind
    with ``state`` ("ready", "computed" or "skipped: reason") and ``seconds``."""
    rows = []
    for run in runs:
        if run.status().get("state") != "done":
            continue
        for kind in (kinds or KINDS):
            started = time.perf_counter()
            try:
                existed = artifact_path(run, kind).exists()
                evaluation(run, kind)
                state = "ready" if existed else "computed"
            except RunError as err:
                state = f"skipped: {err}"
            row = dict(run=run.id, kind=kind, state=state,
                       seconds=round(time.perf_counter() - started, 3))
            rows.append(row)
            say(f"{run.id:32s} {kind:9s} {state} ({row['seconds']:.2f} s)")
    return rows

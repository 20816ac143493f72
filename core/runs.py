"""Run store: one folder per training run, every file written atomically.

Layout of ``<root>/<run_id>/``
------------------------------
* ``spec.json``: ``{"model": spec, "training": config, "dataset": {"path", "fingerprint"},
  "created": ISO time, "tags": {...} (optional)}``; ``build_model(**spec)`` rebuilds the
  architecture; tags say what a run belongs to (a discovery and its role).
* ``weights.safetensors`` (best epoch) and ``last.safetensors`` (latest epoch): safetensors only;
  anything else is refused, nothing is ever unpickled.
* ``metrics.nc``: an ``xarray.Dataset`` (netCDF, engine h5netcdf): per-epoch variables over the
  dim ``epoch`` (``train_loss``, ``valid_rmse``, ``lr``, ``seconds``, ...) and final results as
  scalar variables (``future_rmse``, ``domain_rmse``, ``equivariance_error``, ...).
* ``status.json``: ``state`` (queued / running / done / failed / cancelled), ``progress`` (0..1),
  ``epoch``, ``eta_seconds``, ``message``, ``error``, ``device``, ``updated`` and any extra keys.

Names starting with ``.`` are temporary files of interrupted writes (see :mod:`core.files`),
runs being created or deleted; the store ignores them. A new run appears complete in one rename.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import xarray as xr
from safetensors.torch import load_file, save_file

from .devices import resolve_device
from .errors import SpecError
from .files import atomic_write, atomic_write_json, current_umask
from .models import ZooModel, build_model

__all__ = ["RunError", "Run", "RunStore", "dataset_fingerprint", "load_weights_file",
           "load_initial_weights", "STATES", "WEIGHT_FILES", "FINAL_METRICS"]

STATES = ("queued", "running", "done", "failed", "cancelled")
WEIGHT_FILES = {"best": "weights.safetensors", "last": "last.safetensors"}
FINAL_METRICS = ("future_rmse", "domain_rmse", "equivariance_error")
SPEC_FILE, STATUS_FILE, METRICS_FILE = "spec.json", "status.json", "metrics.nc"
ENGINE = "h5netcdf"
DAMAGED = "damaged"

_MiB = 1 << 20
_MAX_HEADER = 100_000_000  # the limit safetensors itself enforces
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
_SPEC_FIELDS = tuple(inspect.signature(build_model).parameters)


PROJECT_ROOT = Path(__file__).resolve().parents[1]
# folders of a store root that are not runs
RESERVED = {"discoveries": "discovery records (core.discovery)"}


class RunError(ValueError):
    """A bad run id, a damaged run or refused weights: the message names the run or file."""


# ------------------------------------------------------------------------------------ helpers
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _plain(value: Any) -> Any:
    """Numpy and 0-dim torch scalars, paths, devices and tuples as the JSON types they stand for."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        return value.item()
    if isinstance(value, (os.PathLike, torch.device)):
        return str(value)
    return value


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``, or RunError saying why not."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: unreadable ({err})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_id(run_id: str) -> str:
    if not isinstance(run_id, str) or ".." in run_id or not _ID.match(run_id):
        raise RunError(f"bad run id {run_id!r}: expected letters, digits, '.', '_' or '-' "
                       "(not leading '.', no '..', no path separators)")
    if run_id in RESERVED:
        raise RunError(f"bad run id {run_id!r}: reserved for {RESERVED[run_id]}")
    return run_id


def _check_state(state: Any) -> None:
    if state not in STATES:
        raise RunError(f"state must be one of {', '.join(STATES)}, got {state!r}")


def _check_progress(progress: Any) -> None:
    if (isinstance(progress, bool) or not isinstance(progress, (int, float))
            or not 0 <= progress <= 1):
        raise RunError(f"progress must be a number in [0, 1], got {progress!r}")


def _build(model_spec: Mapping[str, Any]) -> ZooModel:
    """``build_model(**model_spec)``, with unknown or missing fields as SpecError too."""
    if not isinstance(model_spec, Mapping):
        raise SpecError(f"model spec must be a dict, got {type(model_spec).__name__}")
    unknown = sorted(set(model_spec) - set(_SPEC_FIELDS))
    if unknown:
        raise SpecError(f"unknown model spec field(s) {', '.join(map(repr, unknown))}; "
                        f"valid fields: {', '.join(_SPEC_FIELDS)}")
    if "name" not in model_spec:
        raise SpecError("model spec needs a 'name'")
    return build_model(**model_spec)


def _scalars(ds: xr.Dataset) -> dict[str, float]:
    """The dataset's numeric 0-dim variables as floats (the run's final results)."""
    out = {}
    for name, var in ds.data_vars.items():
        if var.ndim == 0 and (np.issubdtype(var.dtype, np.number) or var.dtype == bool):
            out[str(name)] = float(var.values)
    return out


def _state(run: Run) -> str:
    """The run's state, or "damaged" when its spec or status cannot be read."""
    try:
        _ = run.spec  # a damaged spec makes the run damaged whatever its status says
        return run.status()["state"]
    except RunError:
        return DAMAGED


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a safetensors file (8-byte little-endian header length, then a JSON
    object), or None. Checked before the file reaches any loader."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        size = path.stat().st_size
        if not 2 <= n <= min(size - 8, _MAX_HEADER):
            return f"header length {n} does not fit a file of {size} bytes"
        header = f.read(n)
    try:
        if not isinstance(json.loads(header.decode("utf-8")), dict):
            return "header is not a JSON object"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "header is not JSON"
    return None


def load_weights_file(path: str | os.PathLike, which: str = "") -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, on CPU; anything else raises RunError (the file is
    checked before any loader sees it, and nothing is ever unpickled)."""
    path = Path(path)
    try:
        problem = _safetensors_problem(path)
    except FileNotFoundError:
        raise RunError(f"{path}: no {which + ' ' if which else ''}weights saved") from None
    except OSError as err:
        raise RunError(f"{path}: unreadable ({err})") from None
    if problem is not None:
        raise RunError(f"{path}: refused, not a safetensors file ({problem})")
    try:
        return load_file(path, device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError and others
        raise RunError(f"{path}: refused, damaged safetensors file "
                       f"({type(err).__name__}: {err})") from None


def load_initial_weights(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights to start training from: a run folder (its best weights) or a safetensors file."""
    source = Path(source)
    if source.is_dir():
        return Run.open(source).load_weights("best")
    return load_weights_file(source)


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """A quick identity for a dataset file: sha256 of its size, first and last MiB (16 hex)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        digest.update(f.read(_MiB))
        f.seek(max(0, size - _MiB))
        digest.update(f.read(_MiB))
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------ run
class Run:
    """One run folder. Only the job running it writes status, weights and metrics; the files
    are replaced atomically, so other processes may read at any time."""

    def __init__(self, root: str | os.PathLike, run_id: str):
        self.root = Path(root)
        self.id = _check_id(run_id)
        self.path = self.root / run_id

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """The run whose folder is ``path`` (a worker is handed the folder, not the store)."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"{path}: no run folder")
        return cls(path.parent, path.name)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r}, {self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ spec and status
    @cached_property
    def spec(self) -> dict:
        """spec.json: ``model``, ``training``, ``dataset`` and ``created`` (never changes)."""
        path = self.path / SPEC_FILE
        spec = _read_json(path)
        for key, kind in (("model", dict), ("training", dict), ("dataset", dict),
                          ("created", str)):
            if not isinstance(spec.get(key), kind):
                raise RunError(f"{path}: '{key}' must be a {kind.__name__}, "
                               f"got {spec.get(key)!r}")
        if not isinstance(spec["model"].get("name"), str):
            raise RunError(f"{path}: model spec has no 'name'")
        return spec

    def dataset_path(self) -> Path:
        """The run's dataset file. Recorded paths are absolute, except in shipped runs, which
        record ``data/NAME.nc`` relative to the project root; relative paths are tried against
        the working folder, then the project root."""
        recorded = Path(self.spec["dataset"]["path"])
        if recorded.is_absolute():
            return recorded
        for base in (Path.cwd(), PROJECT_ROOT):
            if (base / recorded).exists():
                return base / recorded
        return PROJECT_ROOT / recorded

    def status(self) -> dict:
        """status.json as a dict."""
        path = self.path / STATUS_FILE
        status = _read_json(path)
        try:
            _check_state(status.get("state"))
            _check_progress(status.get("progress"))
        except RunError as err:
            raise RunError(f"{path}: {err}") from None
        return status

    def update_status(self, **fields: Any) -> dict:
        """Merge ``fields`` into status.json, stamp ``updated`` and return the new status."""
        fields = _plain(fields)
        if "state" in fields:
            _check_state(fields["state"])
        if "progress" in fields:
            _check_progress(fields["progress"])
        status = {**self.status(), **fields, "updated": _now()}
        atomic_write_json(self.path / STATUS_FILE, status)
        return status

    # ------------------------------------------------------------------ weights
    def weights_path(self, which: str = "best") -> Path:
        """The file holding the ``best`` or ``last`` weights."""
        if which not in WEIGHT_FILES:
            raise RunError(f"which must be one of {', '.join(WEIGHT_FILES)}, got {which!r}")
        return self.path / WEIGHT_FILES[which]

    def save_weights(self, state_dict: Mapping[str, torch.Tensor], which: str = "best") -> Path:
        """Write a state dict as safetensors (on CPU, contiguous; shared tensors copied)."""
        path = self.weights_path(which)
        tensors, seen = {}, set()
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise RunError(f"state dict entry {key!r} is a {type(value).__name__}, "
                               "not a tensor")
            t = value.detach().to("cpu").contiguous()
            storage = t.untyped_storage().data_ptr()
            # safetensors refuses tensors sharing memory (tied weights); give each its own
            if storage in seen:
                t = t.clone()
            seen.add(storage)
            tensors[str(key)] = t
        metadata = {"format": "pt", "run": self.id, "which": which}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def load_weights(self, which: str = "best") -> dict[str, torch.Tensor]:
        """The saved state dict, on CPU. Anything but a safetensors file raises RunError."""
        return load_weights_file(self.weights_path(which), which)

    def load_model(self, which: str = "best", device: str | torch.device = "cpu") -> ZooModel:
        """The model of spec.json with the saved weights (strict), on ``device``, in eval mode."""
        try:
            model = _build(self.spec["model"])
        except SpecError as err:
            raise RunError(f"{self.path / SPEC_FILE}: model spec cannot be built ({err})") from None
        try:
            model.load_state_dict(self.load_weights(which), strict=True)
        except RuntimeError as err:
            raise RunError(f"{self.weights_path(which)}: does not fit the model of "
                           f"{SPEC_FILE} ({err})") from None
        return model.to(resolve_device(device)).eval()

    # ------------------------------------------------------------------ metrics
    def write_metrics(self, ds: xr.Dataset) -> Path:
        """Replace metrics.nc with ``ds``."""
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"metrics must be an xarray.Dataset, got {type(ds).__name__}")
        return atomic_write(self.path / METRICS_FILE, lambda tmp: ds.to_netcdf(tmp, engine=ENGINE))

    def read_metrics(self) -> xr.Dataset | None:
        """metrics.nc loaded into memory (the file is closed), or None before the first write."""
        path = self.path / METRICS_FILE
        if not path.exists():
            return None
        try:
            # per-epoch "seconds" with time units must stay plain numbers
            with xr.open_dataset(path, engine=ENGINE, decode_timedelta=False) as ds:
                return ds.load()
        except Exception as err:  # h5py/h5netcdf raise many kinds on damaged files
            raise RunError(f"{path}: unreadable ({type(err).__name__}: {err})") from None

    def final_metrics(self) -> dict[str, float]:
        """The scalar variables of metrics.nc (empty before any are written)."""
        ds = self.read_metrics()
        return {} if ds is None else _scalars(ds)


# ------------------------------------------------------------------------------------ store
class RunStore:
    """All runs under one folder: create, get, list, compare, delete."""

    ROW_KEYS = ("id", "model", "group", "num_banks", "alpha", "dataset", "state", "progress",
                "eta_seconds", "device", "created", *FINAL_METRICS, "error")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._finals: dict[Path, tuple[tuple[int, int], dict[str, float]]] = {}

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def __contains__(self, run_id: object) -> bool:
        try:
            self.get(run_id)  # type: ignore[arg-type]
        except RunError:
            return False
        return True

    def create(self, model_spec: Mapping[str, Any], training: Mapping[str, Any],
               dataset_path: str | os.PathLike, run_id: str | None = None,
               tags: Mapping[str, Any] | None = None) -> Run:
        """A new queued run. The spec is built once first, so a bad one raises SpecError and
        nothing is written; the default id is ``<UTC time>-<model>-<group>-<6 hex>``. ``tags``
        (JSON) say what the run belongs to, e.g. ``{"discovery": id, "role": "data"}``."""
        model = _build(model_spec)
        if not isinstance(training, Mapping):
            raise RunError(f"training config must be a dict, got {type(training).__name__}")
        training = _plain(training)
        try:
            json.dumps(training)
        except (TypeError, ValueError) as err:
            raise RunError(f"training config cannot be stored as JSON ({err})") from None
        dataset = Path(dataset_path).resolve()
        try:
            fingerprint = dataset_fingerprint(dataset)
        except OSError as err:
            raise RunError(f"{dataset}: dataset unreadable ({err})") from None
        now = datetime.now(timezone.utc)
        if run_id is None:
            group = re.sub(r"[^A-Za-z0-9]", "", str(model.spec["group"] or "none"))
            run_id = (f"{now:%Y%m%d-%H%M%S}-{model.spec['name']}-{group}-"
                      f"{secrets.token_hex(3)}")
        path = self.root / _check_id(run_id)
        if path.exists():
            raise RunError(f"run {run_id!r} already exists in {self.root}")
        created = now.isoformat(timespec="microseconds")
        spec = {"model": model.spec, "training": training,
                "dataset": {"path": str(dataset), "fingerprint": fingerprint},
                "created": created}
        if tags:
            spec["tags"] = _plain(dict(tags))
        status = {"state": "queued", "progress": 0.0, "epoch": None, "eta_seconds": None,
                  "message": "", "error": None, "device": None, "updated": created}
        # filled under a hidden name, then renamed: listings never see a half-made run
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", suffix=".tmp", dir=self.root))
        try:
            os.chmod(tmp, 0o777 & ~current_umask())
            atomic_write_json(tmp / SPEC_FILE, spec)
            atomic_write_json(tmp / STATUS_FILE, status)
            os.rename(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if path.exists():
                raise RunError(f"run {run_id!r} already exists in {self.root}") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Run(self.root, run_id)

    def get(self, run_id: str) -> Run:
        """The run ``run_id``; RunError if the id is malformed or no such run exists."""
        run = Run(self.root, run_id)
        if not run.path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        return run

    def runs(self) -> list[Run]:
        """Every run folder (damaged ones included), oldest first."""
        keyed = []
        for entry in self.root.iterdir():
            if not (_ID.match(entry.name) and ".." not in entry.name and entry.is_dir()) \
                    or entry.name in RESERVED:
                continue
            run = Run(self.root, entry.name)
            try:
                created = run.spec["created"]
            except RunError:
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:  # deleted meanwhile
                    continue
                created = datetime.fromtimestamp(mtime, timezone.utc).isoformat(
                    timespec="microseconds")
            keyed.append((created, run.id, run))
        return [run for _, _, run in sorted(keyed, key=lambda k: k[:2])]

    def list(self) -> list[dict]:
        """One row (keys :attr:`ROW_KEYS`) per run, oldest first: its spec, its status (state,
        progress, ETA, device, a failed job's error) and final metrics, from one read of each
        file. A run whose files cannot be read has state ``"damaged"`` and the reason in
        ``error``."""
        rows = []
        for run in self.runs():
            row = dict.fromkeys(self.ROW_KEYS)
            row["id"] = run.id
            try:
                spec = run.spec
                model = spec["model"]
                row.update(model=model.get("name"), group=model.get("group"),
                           num_banks=model.get("num_banks"), alpha=model.get("alpha"),
                           dataset=Path(str(spec["dataset"].get("path", ""))).name or None,
                           created=spec["created"])
                status = run.status()
                row.update(state=status["state"], progress=status["progress"],
                           eta_seconds=status.get("eta_seconds"), device=status.get("device"),
                           error=status.get("error"))
                finals = self._final_metrics(run)
                row.update({name: finals.get(name) for name in FINAL_METRICS})
            except RunError as err:
                if not run.path.is_dir():  # deleted meanwhile
                    continue
                row.update(state=DAMAGED, error=str(err))
            rows.append(row)
        return rows

    def _final_metrics(self, run: Run) -> dict[str, float]:
        """Run.final_metrics, cached until metrics.nc changes (listings are polled)."""
        path = run.path / METRICS_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            self._finals.pop(path, None)
            return {}
        key = (st.st_mtime_ns, st.st_size)
        cached = self._finals.get(path)
        if cached is None or cached[0] != key:
            cached = self._finals[path] = (key, run.final_metrics())
        return cached[1]

    def runs_in_state(self, *states: str) -> list[Run]:
        """Runs whose status is one of ``states`` (``"damaged"`` allowed), oldest first."""
        for state in states:
            if state != DAMAGED:
                _check_state(state)
        return [run for run in self.runs() if _state(run) in states]

    def delete(self, run_id: str) -> None:
        """Remove a run folder. It disappears from listings at once, even if removal is slow."""
        run = self.get(run_id)
        trash = self.root / f".{run.id}.{secrets.token_hex(3)}.deleted"
        os.rename(run.path, trash)
        self._finals.pop(run.path / METRICS_FILE, None)
        shutil.rmtree(trash)

    def compare(self, run_ids: Iterable[str]) -> xr.Dataset:
        """The runs' scalar final metrics stacked along a new dim ``run`` (NaN where a run lacks
        one), with ``model``, ``group`` and ``alpha`` as coordinates over ``run``."""
        ids = list(run_ids)
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise RunError(f"run ids given more than once: {', '.join(duplicated)}")
        runs = [self.get(i) for i in ids]
        finals, attrs = [], {}
        for run in runs:
            ds = run.read_metrics()
            finals.append({} if ds is None else _scalars(ds))
            for name in finals[-1]:
                attrs.setdefault(name, dict(ds[name].attrs))
        names = sorted(set().union(*finals)) if finals else []
        data = {name: xr.Variable("run", np.array([f.get(name, math.nan) for f in finals],
                                                  dtype=np.float64), attrs[name])
                for name in names}
        models = [run.spec["model"] for run in runs]
        coords = {"run": ids,
                  "model": ("run", [str(m["name"]) for m in models]),
                  "group": ("run", [str(m.get("group") or "none") for m in models]),
                  "alpha": ("run", [float(m.get("alpha", math.nan)) for m in models])}
        return xr.Dataset(data, coords=coords)

"""Dashboard state: experiment settings, the run catalog and the job watcher (param objects).

One :class:`Services` per server process (the run stores and the job manager); per-session
objects (:class:`ExperimentState`) are light and hold only settings and selections. Listings of
the run stores, discoveries and datasets are taken at most once per :data:`LISTING_TTL_S` per
process (:meth:`Services.snapshot`) and shared by every session; a version number tells a
session whether anything changed since it last looked, so idle sessions cost nothing. Nothing here
trains or simulates: training is submitted to the job manager, dataset generation runs in a
``python -m core generate`` child process, and the state only reads the run store.

Folders (overridable by environment variables, resolved once per process):
``REE_DATA`` (default ``data/``: datasets and ``pretrained/``), ``REE_RUNS`` (default ``runs/``:
runs trained from the dashboard). File choices are limited to these roots.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import param

from core.errors import SpecError
from core.datasets import dataset_grid, save_dataset
from core.discovery import Discovery, DiscoveryError, DiscoveryStore, launch
from core.models import build_model, models_for_group
from core.runs import PROJECT_ROOT, RunError, RunStore
from core.scenarios import DEFAULT_SIMS
from core.training import TrainConfig

GROUP_CHOICES = ["translation", "C2", "C4", "C8", "D2", "D4", "SO2", "scale"]
ALPHA_CHOICES = ["0", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1", "10", "strict"]
STRICT_OF = {"rgroup": "gconv", "rsteer": "steer", "rpp": "gconv", "lift": "gconv",
             "combo": "gconv", "constrained": "conv"}


LISTING_TTL_S = 1.0  # how stale a shared listing may be (the app polls once a second)
# the largest upload the dashboard accepts (REE_UPLOAD_MB, default 512); the browser refuses a
# larger file before sending it, and dashboard.serve sets panel's websocket limit to match
UPLOAD_LIMIT_MB = int(os.environ.get("REE_UPLOAD_MB", "512"))
UPLOADS = ".uploads"  # hidden folder of the data root where uploads wait for their preview


def safe_name(name: str, suffix: str = "") -> str:
    """A file name with only letters, digits, '.', '_' and '-' (others become '_'), no leading
    dot and no folders, at most 100 characters; ``suffix`` is added when missing."""
    base = Path(str(name).replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".") or "upload"
    if suffix and not base.lower().endswith(suffix):
        base = f"{base.rsplit('.', 1)[0] if '.' in base else base}{suffix}"
    return base[-100:].lstrip(".") or f"upload{suffix}"


@dataclass(frozen=True)
class Snapshot:
    """One listing shared by all sessions; ``version`` grows when its content changes.
    Treat the rows as read-only."""

    version: int
    runs: list = field(default_factory=list)
    discoveries: list = field(default_factory=list)
    datasets: list = field(default_factory=list)
    generations: dict = field(default_factory=dict)


def valid_models(group: str | None) -> list[str]:
    """The model names that accept ``group`` (the experiment panel offers only these)."""
    return models_for_group(group)


def alpha_value(choice: str) -> float | None:
    """Alpha for a slider position; None for "strict" (train the strict model instead)."""
    return None if choice == "strict" else float(choice)


def default_roots() -> tuple[Path, Path]:
    """The data folder and the user's run store, from ``REE_DATA`` / ``REE_RUNS``."""
    return (Path(os.environ.get("REE_DATA", PROJECT_ROOT / "data")).resolve(),
            Path(os.environ.get("REE_RUNS", PROJECT_ROOT / "runs")).resolve())


class Services:
    """Per-process singletons: the data folder, the two run stores and the job manager."""

    _instance: "Services | None" = None
    _lock = threading.Lock()

    def __init__(self, data_root: Path | None = None, runs_root: Path | None = None,
                 max_cpu_jobs: int = 1):
        from core.jobs import JobManager

        default_data, default_runs = default_roots()
        self.data_root = Path(data_root).resolve() if data_root else default_data
        self.runs_root = Path(runs_root).resolve() if runs_root else default_runs
        self.pretrained = RunStore(self.data_root / "pretrained")
        self.store = RunStore(self.runs_root)
        self.jobs = JobManager(self.store, max_cpu_jobs=max_cpu_jobs)
        self.generations: dict[str, dict] = {}  # dataset name -> {"progress", "state", "error"}
        self._snapshot = Snapshot(0)
        self._snapshot_taken = -float("inf")
        self._snapshot_lock = threading.Lock()
        self._signature = ""

    @classmethod
    def get(cls) -> "Services":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    # -- the shared listing
    def snapshot(self, max_age: float = LISTING_TTL_S) -> Snapshot:
        """Runs, discoveries, datasets and generations, listed at most once per ``max_age``
        seconds in this process whatever the number of sessions."""
        with self._snapshot_lock:
            if time.monotonic() - self._snapshot_taken < max_age:
                return self._snapshot
            runs = [dict(row, store=label) for store, label in
                    ((self.pretrained, "pretrained"), (self.store, "runs")) for row in store.list()]
            discoveries = [dict(row, store=label) for root, label in
                           ((self.pretrained.root, "pretrained"), (self.store.root, "runs"))
                           for row in DiscoveryStore(root).list()]
            datasets = self._list_datasets()
            generations = {k: dict(v) for k, v in self.generations.items()}
            old = self._snapshot
            # compared as JSON text: NaN metrics compare equal to themselves there
            signature = json.dumps([runs, discoveries, datasets, generations], default=str,
                                   sort_keys=True)
            changed = signature != self._signature or not old.version
            self._signature = signature
            self._snapshot = Snapshot(old.version + changed, runs, discoveries, datasets,
                                      generations)
            self._snapshot_taken = time.monotonic()
            return self._snapshot

    def invalidate(self) -> None:
        """The next :meth:`snapshot` lists afresh (after a submit, delete or launch)."""
        with self._snapshot_lock:
            self._snapshot_taken = -float("inf")

    # -- datasets
    def datasets(self) -> list[str]:
        return self.snapshot().datasets

    def _list_datasets(self) -> list[str]:
        return sorted(p.name for p in self.data_root.glob("*.nc") if not p.name.startswith("."))

    def dataset_path(self, name: str) -> Path:
        """A dataset inside the data root, by file name only (no path traversal)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+\.nc", name or "") or name.startswith("."):
            raise ValueError(f"invalid dataset name {name!r}: a file name like rotation.nc")
        path = (self.data_root / name).resolve()
        if path.parent != self.data_root:
            raise ValueError(f"dataset {name!r} is outside the data folder")
        return path

    def generate(self, scenario: str, name: str, *, breaking: float, grid: int = 64,
                 steps: int = 310) -> None:
        """Simulate a dataset in a child process; progress lands in ``generations[name]``."""
        path = self.dataset_path(name)
        if scenario not in DEFAULT_SIMS:
            raise ValueError(f"unknown scenario {scenario!r}")
        if self.generations.get(name, {}).get("state") == "running":
            raise ValueError(f"{name} is already being generated")
        record = self.generations[name] = dict(progress=0.0, state="running", error=None)
        self.invalidate()
        cmd = [sys.executable, "-m", "core", "generate", scenario, "--out", str(path),
               "--grid", str(grid), "--steps", str(steps), "--breaking", str(breaking)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=str(PROJECT_ROOT), start_new_session=True)

        def follow():
            tail = b""
            for chunk in iter(lambda: proc.stderr.read(256), b""):
                tail = (tail + chunk)[-2000:]
                found = re.findall(rb"(\d+)/(\d+)", chunk)
                if found:
                    done, total = (int(v) for v in found[-1])
                    record["progress"] = done / max(total, 1)
            code = proc.wait()
            record["state"] = "done" if code == 0 else "failed"
            if code:
                lines = [l for l in tail.decode(errors="replace").splitlines() if "error" in l]
                record["error"] = lines[-1] if lines else f"generation exited with code {code}"

        threading.Thread(target=follow, daemon=True, name=f"generate-{name}").start()

    @property
    def uploads(self) -> Path:
        """Hidden folder of the data root where uploads wait for their preview."""
        return self.data_root / UPLOADS

    def stage_upload(self, files: dict[str, Path]) -> Path:
        """What to read from uploaded files (name -> a finished file in :attr:`uploads`): the
        file itself, or a folder of them when several .pt files came together. Files must lie
        in the uploads folder; names are sanitised."""
        if not files:
            raise ValueError("no file was uploaded")
        paths = [Path(p).resolve() for p in files.values()]
        outside = [p for p in paths if p.parent != self.uploads.resolve()]
        if outside:
            raise ValueError(f"{outside[0].name} is not an upload")
        too_big = [p.name for p in paths if p.stat().st_size > UPLOAD_LIMIT_MB * 2 ** 20]
        if too_big:
            raise ValueError(f"{too_big[0]} is larger than the upload limit of "
                             f"{UPLOAD_LIMIT_MB} MB (REE_UPLOAD_MB)")
        if len(paths) == 1:
            return paths[0]
        if not all(p.name.lower().endswith(".pt") for p in paths):
            raise ValueError("several files at once must all be .pt tensors (one per sim)")
        target = self.uploads / safe_name(paths[0].stem + "-folder")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for p in paths:
            os.link(p, target / p.name)
        return target

    def discard_upload(self, staged: Path) -> None:
        """Remove a staged upload (file or folder) once it is saved; only inside the uploads
        folder."""
        staged = Path(staged).resolve()
        if staged.parent != self.uploads.resolve():
            return
        if staged.is_dir():
            for part in staged.iterdir():
                (self.uploads / part.name).unlink(missing_ok=True)  # the uploads linked here
            shutil.rmtree(staged, ignore_errors=True)
        else:
            staged.unlink(missing_ok=True)

    def save_imported(self, ds, name: str, overwrite: bool = False) -> str:
        """Save an imported dataset into the data root under ``name`` (sanitised, ``.nc``),
        atomically; an existing file is replaced only with ``overwrite``. Returns the name."""
        name = safe_name(name, ".nc")
        path = self.dataset_path(name)
        if path.exists() and not overwrite:
            raise ValueError(f"{name} exists in the data folder: tick 'Replace' to overwrite it")
        save_dataset(ds, path)
        self.invalidate()
        return name

    # -- runs
    def catalog(self) -> list[dict]:
        """Rows of every run: shipped ones first, then the user's (``store`` column says which)."""
        return self.snapshot().runs

    def run(self, run_id: str):
        for store in (self.store, self.pretrained):
            if run_id in store:
                return store.get(run_id)
        raise RunError(f"no run {run_id!r}")

    # -- discoveries
    def discoveries(self) -> list[dict]:
        """Rows of every discovery record: shipped ones first (``store`` says which)."""
        return self.snapshot().discoveries

    def discovery(self, discovery_id: str) -> Discovery:
        for root in (self.store.root, self.pretrained.root):
            try:
                return DiscoveryStore(root).get(discovery_id)
            except DiscoveryError:
                continue
        raise DiscoveryError(f"no discovery {discovery_id!r}")

    def discover(self, dataset: str, group: str, *, control: str | None = None, seeds: int = 3,
                 budget: float = 1.0) -> Discovery:
        """Start a discovery in its own background process (it trains through the job system);
        bad input raises DiscoveryError before anything is written."""
        control_path = self.dataset_path(control) if control else None
        record = launch(self.dataset_path(dataset), group, runs=self.store.root,
                        control=control_path, seeds=seeds, budget=budget)
        self.invalidate()
        return record

    def submit(self, spec: dict, config: dict, dataset: Path) -> str:
        """Queue a training job; returns its run id."""
        run_id = self.jobs.submit(spec, config, dataset)
        self.invalidate()
        return run_id

    def delete(self, run_id: str) -> None:
        """Delete one of the user's runs (shipped runs are read-only)."""
        self.store.delete(run_id)
        self.invalidate()


class ExperimentState(param.Parameterized):
    """One session's experiment settings and selections."""

    dataset = param.Selector(default=None, objects=[], doc="dataset in the data folder")
    group = param.Selector(default="C4", objects=GROUP_CHOICES)
    model = param.Selector(default="rgroup", objects=valid_models("C4"))
    num_banks = param.Integer(default=2, bounds=(1, 8))
    alpha = param.Selector(default="1e-3", objects=ALPHA_CHOICES,
                           doc="penalty weight; 'strict' trains the strict model")
    hidden_dim = param.Integer(default=24, bounds=(4, 256))
    num_layers = param.Integer(default=4, bounds=(2, 12))
    epochs = param.Integer(default=5, bounds=(1, 500))
    batch_size = param.Integer(default=8, bounds=(1, 256))
    batches_per_epoch = param.Integer(default=20, bounds=(1, 100000))
    lr = param.Number(default=2e-3, bounds=(1e-6, 1.0))
    device = param.Selector(default="auto", objects=["auto", "cpu"])
    scenario = param.Selector(default="rotation", objects=sorted(DEFAULT_SIMS))
    breaking = param.Number(default=1.0, bounds=(0.0, 10.0))
    selected_runs = param.List(default=[], doc="run ids selected in the catalog")
    discovery = param.String(default=None, allow_None=True, doc="discovery record shown")
    focus = param.String(default="", doc="a tab a view asks the app to show")
    relaxed_lr = param.Number(default=None, allow_None=True, bounds=(1e-6, 10.0),
                              doc="learning rate of the relaxed weights (None: the shared one)")
    message = param.String(default="")

    def __init__(self, services: Services | None = None, **params):
        self.services = services or Services.get()
        super().__init__(**params)
        import torch

        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        self.param.device.objects = devices
        self.refresh_datasets()

    def refresh_datasets(self) -> None:
        """Offer the data folder's datasets, also those saved since by other sessions."""
        names = self.services.datasets()
        if list(self.param.dataset.objects) != names:  # unchanged: nothing sent to the page
            self.param.dataset.objects = names
        if self.dataset not in names:
            self.dataset = "rotation.nc" if "rotation.nc" in names else (names[0] if names else None)

    @param.depends("group", watch=True)
    def _offer_valid_models(self):
        models = valid_models(self.group)
        self.param.model.objects = models
        if self.model not in models:
            self.model = models[0]

    def model_spec(self) -> dict:
        """The spec the Train button submits; SpecError / ValueError for impossible settings."""
        name, alpha = self.model, alpha_value(self.alpha)
        if alpha is None:
            name, alpha = STRICT_OF.get(name, name), 0.0
        if self.dataset is None:
            raise ValueError("choose or generate a dataset first")
        spec = dict(name=name, group=self.group, in_frames=10, hidden_dim=self.hidden_dim,
                    num_layers=self.num_layers, num_banks=self.num_banks if name == "rgroup" else 1,
                    alpha=alpha, grid=dataset_grid(self.services.dataset_path(self.dataset)))
        build_model(**spec)  # raises SpecError naming what is wrong
        return spec

    def training_config(self) -> dict:
        config = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      batches_per_epoch=self.batches_per_epoch, device=self.device)
        if self.relaxed_lr is not None:
            config["relaxed_lr"] = self.relaxed_lr
        TrainConfig.from_dict(config)
        return config

    def submit(self) -> str:
        """Submit a training job with the current settings; returns the run id."""
        spec, config = self.model_spec(), self.training_config()
        path = self.services.dataset_path(self.dataset)
        run_id = self.services.submit(spec, config, path)
        self.message = f"submitted {run_id}"
        return run_id

    def cancel(self, run_id: str) -> None:
        self.services.jobs.cancel(run_id)
        self.message = f"cancel requested for {run_id}"


__all__ = ["Services", "Snapshot", "ExperimentState", "valid_models", "alpha_value", "GROUP_CHOICES",
           "ALPHA_CHOICES", "SpecError", "DiscoveryError"]

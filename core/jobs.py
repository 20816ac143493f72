"""Background execution of training runs: local worker processes, or a Dask cluster.

Every job is a run directory of the run store (:mod:`core.runs`). The job writes its progress into
that directory (``status.json``, ``metrics.nc``, weights), so any process or browser session can
watch it, and a job outlives the client that submitted it:

* ``JobManager(store)`` (local, the default): each job runs ``python -m core execute RUN_DIR`` in
  its own process (its own session, so a crash or out-of-memory cannot take down a server and the
  job survives the submitter). CPU jobs run :data:`CPU_WORKER_NICE` steps nicer than the
  manager's process, so a dashboard training on its own server's cores still answers its users
  first; on an otherwise idle machine the job runs as fast as before (niceness only orders
  competing work). At most one job per GPU and ``max_cpu_jobs`` CPU jobs run at once; the rest
  wait in the queue. A queued job that no manager is running any more is picked up by the
  next manager that starts.
* ``JobManager(store, scheduler="tcp://host:8786")`` or ``scheduler="local"`` (a LocalCluster on
  127.0.0.1): jobs run on the cluster's workers as fire-and-forget tasks; the workers must see the
  run store at the same path (a shared filesystem).

Cancel works the same in both: it writes ``cancel.request`` into the run directory; the job checks
for it before every batch and stops with state "cancelled", keeping its weights. On start, a
manager marks runs left "running" by a dead process (same host: the recorded pid is gone; other
hosts: no heartbeat for ``stale_after`` seconds) as failed, with a message.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .runs import Run, RunStore

CANCEL_FILE = "cancel.request"
# added to a local CPU worker's niceness: with 20 browser sessions and a training job on two
# cores the pages come first; training gets what they leave (BENCHMARKS.md, 2026-12-01).
# GPU workers keep the manager's priority: their CPU thread only feeds the device.
CPU_WORKER_NICE = 10
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")


# ------------------------------------------------------------------------------ one job
def process_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this host (a zombie, finished but not yet reaped,
    counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _timestamp(iso: str | None) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return 0.0


def evaluate_model(model, ds: xr.Dataset, *, device: str = "cpu", steps: int = 20,
                   max_samples: int | None = 64) -> xr.Dataset:
    """Final numbers of a run: rollout RMSE per step on the future and domain splits (and their
    means), the model's equivariance error on test inputs, and the breaking score."""
    from . import analysis
    from .datasets import DatasetError, WindowDataset

    out = xr.Dataset()
    for split in ("future", "domain"):
        try:
            rmse = analysis.rollout_rmse(model, ds, split, steps=steps, device=device,
                                         max_samples=max_samples)
        except DatasetError:
            continue  # e.g. no held-out sims, or too few steps for a 20-step rollout
        out[f"{split}_rmse_step"] = rmse.rename({"step": "rollout_step"})
        out[f"{split}_rmse"] = float(rmse.mean())
    group = model.spec.get("group")
    if group:
        split = "future" if len(WindowDataset(ds, "future", model.spec["in_frames"], 1)) else "train"
        windows = WindowDataset(ds, split, model.spec["in_frames"], 1)
        picks = np.linspace(0, len(windows) - 1, min(8, len(windows))).round().astype(int)
        inputs = torch.stack([windows[int(i)][0] for i in picks])
        err = analysis.equivariance_error(model, inputs, group if group != "SO2" else "C4")
        out["equivariance_error_element"] = err["relative"]
        out["equivariance_error"] = float(err.attrs["mean"])
    breaking = analysis.breaking_analysis(model)
    if "breaking_score" in breaking.attrs:
        out["breaking_score"] = float(breaking.attrs["breaking_score"])
    return out


def execute_run(run_dir: str | os.PathLike, *, progress: Callable[[dict], None] | None = None,
                device: str | None = None, ds: xr.Dataset | None = None) -> str:
    """Train one run of the store to completion and record everything in its directory.

    Returns the final state ("done", "cancelled" or "failed"); never raises for a failing run:
    the error text goes to status.json. ``progress`` receives the batch/epoch callbacks.
    """
    from .datasets import load_dataset
    from .training import CancelToken, Trainer, TrainingDiverged

    run = Run.open(run_dir)
    cancel_path = run.path / CANCEL_FILE
    token = CancelToken()
    run.update_status(state="running", pid=os.getpid(), host=socket.gethostname(),
                      started=time.time(), progress=0.0, error=None)
    trainer = None
    try:
        if ds is None:
            ds = load_dataset(run.dataset_path())
        training = dict(run.spec["training"])
        if device is not None:
            training["device"] = device
        last_beat = [0.0]

        def on_batch(info):
            if cancel_path.exists():
                token.cancel()
            if progress is not None:
                progress(dict(info, kind="batch"))
            now = time.time()
            if now - last_beat[0] > 2.0:  # heartbeat without rewriting the file every batch
                last_beat[0] = now
                done = (info["epoch"] - 1 + info["batch"] / info["batches"]) / epochs
                run.update_status(progress=done, epoch=info["epoch"])

        def on_epoch(info):
            if progress is not None:
                progress(dict(info, kind="epoch"))
            run.update_status(progress=info["epoch"] / epochs, epoch=info["epoch"],
                              eta_seconds=info["eta_seconds"], best_epoch=info["best_epoch"],
                              valid_rmse=info["valid_rmse"])
            run.write_metrics(trainer.result.history_dataset())

        trainer = Trainer(run.spec["model"], ds, training, on_batch=on_batch, on_epoch=on_epoch,
                          cancel=token)
        epochs = trainer.config.epochs
        run.update_status(device=str(trainer.device))
        try:
            result = trainer.fit()
        except TrainingDiverged as err:
            run.save_weights(err.result.last_state, "last")
            run.write_metrics(err.result.history_dataset())
            run.update_status(state="failed", error=f"TrainingDiverged: {err}",
                              message="training diverged; last good weights kept")
            return "failed"
        run.save_weights(result.best_state, "best")
        run.save_weights(result.last_state, "last")
        metrics = result.history_dataset()
        if result.stopped == "cancelled":
            run.write_metrics(metrics)
            run.update_status(state="cancelled", message="cancelled by request")
            return "cancelled"
        trainer.model.load_state_dict(result.best_state)
        final = evaluate_model(trainer.model, ds, device=str(trainer.device))
        metrics = xr.merge([metrics, final], compat="override")
        metrics.attrs.update(best_epoch=result.best_epoch or 0, stopped=result.stopped)
        run.write_metrics(metrics)
        run.update_status(state="done", progress=1.0, eta_seconds=0.0,
                          message=f"{result.stopped}; best epoch {result.best_epoch}")
        return "done"
    except Exception as err:  # the job must report, never vanish
        run.update_status(state="failed", error=f"{type(err).__name__}: {err}",
                          message=traceback.format_exc(limit=3).strip().splitlines()[-1])
        return "failed"


def request_cancel(run: Run) -> None:
    (run.path / CANCEL_FILE).touch()


# ------------------------------------------------------------------------------ manager
class JobManager:
    """Submit, queue, watch and cancel training jobs (see the module docstring).

    Args:
        store: a RunStore or its root folder.
        scheduler: None for local worker processes; a Dask scheduler address, a
            ``distributed.Client``, or "local" for a LocalCluster on 127.0.0.1.
        max_cpu_jobs: local CPU jobs running at once (GPU jobs: one per visible GPU).
        stale_after: seconds without a heartbeat after which a remote "running" job is failed.
        cpu_nice: niceness added to local CPU workers (0: the manager's own priority).
    """

    def __init__(self, store: RunStore | str | os.PathLike, *, scheduler=None,
                 max_cpu_jobs: int = 1, stale_after: float = 900.0, poll: float = 0.5,
                 cpu_nice: int = CPU_WORKER_NICE):
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.cpu_nice = cpu_nice
        self.max_cpu_jobs, self.stale_after, self.poll = max_cpu_jobs, stale_after, poll
        self._client = self._cluster = None
        self._procs: dict[str, tuple[subprocess.Popen, str]] = {}
        self._futures: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.recover()
        if scheduler is not None:
            self._connect(scheduler)
        else:
            self._thread = threading.Thread(target=self._dispatch_loop, daemon=True,
                                            name="job-dispatch")
            self._thread.start()

    # -- backends
    def _connect(self, scheduler) -> None:
        from distributed import Client, LocalCluster

        if isinstance(scheduler, Client):
            self._client = scheduler
        elif scheduler == "local":
            self._cluster = LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self._client = Client(self._cluster)
        else:
            self._client = Client(scheduler, timeout=10)

    @property
    def backend(self) -> str:
        return "dask" if self._client is not None else "local"

    # -- API
    def submit(self, model_spec: dict, training: dict, dataset_path: str | os.PathLike,
               tags: dict | None = None) -> str:
        """Create a queued run and schedule it; returns the run id. A spec without ``grid`` gets
        the dataset's; ``tags`` are stored with the run (see :meth:`RunStore.create`)."""
        from .datasets import dataset_grid

        if model_spec.get("grid") is None:
            model_spec = dict(model_spec, grid=dataset_grid(dataset_path))
        run = self.store.create(model_spec, training, str(dataset_path), tags=tags)
        if self._client is not None:
            from distributed import fire_and_forget

            future = self._client.submit(execute_run, str(run.path), key=f"train-{run.id}",
                                         pure=False)
            fire_and_forget(future)
            self._futures[run.id] = future
        return run.id

    def status(self, run_id: str) -> dict:
        return self.store.get(run_id).status()

    def jobs(self) -> list[dict]:
        return self.store.list()

    def cancel(self, run_id: str) -> None:
        """Stop a job: a queued one never starts; a running one stops before its next batch."""
        run = self.store.get(run_id)
        state = run.status().get("state")
        if state in FINAL:
            return
        request_cancel(run)
        future = self._futures.get(run_id)
        if state == "queued":
            if future is not None:
                future.cancel()
            run.update_status(state="cancelled", message="cancelled before it started")

    def wait(self, run_id: str, timeout: float | None = None) -> dict:
        """Block until the run reaches a final state (or ``timeout`` seconds); its status."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            status = self.status(run_id)
            if status.get("state") in FINAL:
                return status
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"run {run_id} still {status.get('state')} after {timeout} s")
            time.sleep(self.poll)

    def recover(self) -> list[str]:
        """Mark runs left "running" by a dead process as failed; returns their ids."""
        failed, host = [], socket.gethostname()
        for row in self.store.list():
            if row.get("state") != "running":
                continue
            run = self.store.get(row["id"])
            status = run.status()
            pid, where = status.get("pid"), status.get("host")
            if where == host and pid is not None:
                dead = not process_alive(int(pid))
            else:
                dead = time.time() - _timestamp(status.get("updated")) > self.stale_after
            if dead:
                run.update_status(state="failed", error="the worker running this job died",
                                  message=f"found running with no live process (pid {pid} on "
                                          f"{where}); marked failed")
                failed.append(row["id"])
        return failed

    def shutdown(self, cancel_running: bool = False) -> None:
        """Stop dispatching (running jobs continue unless ``cancel_running``)."""
        self._stop.set()
        if cancel_running:
            for run_id in list(self._procs):
                self.cancel(run_id)
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            # a daemon thread frozen at exit inside a file read can deadlock h5py's finalizers
            thread.join(timeout=30)
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    # -- local dispatch
    def _slots(self) -> dict[str, int]:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"cpu": self.max_cpu_jobs, **{f"cuda:{i}": 1 for i in range(gpus)}}

    def _device_kind(self, run: Run) -> str:
        wanted = str(run.spec["training"].get("device", "auto"))
        if wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available()):
            return "cuda"
        return "cpu"

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch_once()
            except Exception:  # keep dispatching; the run's own status shows job errors
                traceback.print_exc()
            self._stop.wait(self.poll)

    def _dispatch_once(self) -> None:
        with self._lock:
            for run_id, (proc, _) in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[run_id]
                    run = self.store.get(run_id)
                    if run.status().get("state") in ACTIVE:  # died without reporting
                        run.update_status(state="failed",
                                          error=f"worker process exited with code {proc.returncode}")
            busy = {slot for _, slot in self._procs.values() if slot != "cpu"}
            cpu_busy = sum(1 for _, slot in self._procs.values() if slot == "cpu")
            # spec and status only (no metrics files): oldest first
            for run in self.store.runs_in_state("queued"):
                if run.id in self._procs:
                    continue
                if self._device_kind(run) == "cuda":
                    free = [s for s in self._slots() if s.startswith("cuda") and s not in busy]
                    if not free:
                        continue
                    slot = free[0]
                    busy.add(slot)
                else:
                    if cpu_busy >= self.max_cpu_jobs:
                        continue
                    slot = "cpu"
                    cpu_busy += 1
                self._procs[run.id] = (self._launch(run, slot), slot)

    def _launch(self, run: Run, slot: str) -> subprocess.Popen:
        env = dict(os.environ)
        if slot.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = slot.split(":")[1]
        run.update_status(state="running", message="starting worker process")
        nice = ["--nice", str(self.cpu_nice)] if slot == "cpu" and self.cpu_nice > 0 else []
        log = open(run.path / "worker.log", "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", "core", "execute", *nice,
                                     str(run.path)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=str(Path.cwd()))
        finally:
            log.close()

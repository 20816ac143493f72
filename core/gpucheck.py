"""`python -m core gpu-check`: one prepared check of the GPU path, made to fit a short GPU lease.

It works through six steps in order and rewrites ``gpu-check.json`` and ``gpu-check.md`` in the
output folder after each one, so a run cut short (a lease that ends, a crash) still reports what
it did:

1. ``environment``: GPU name, memory, driver, torch / CUDA / cuDNN versions, package versions.
2. ``correctness``: every model of the zoo with every group it accepts, on the device in float32:
   the equivariance error at initialisation (quarter turns and flips for C4/D4, shifts for
   translation; those three must be at most ``EXACT_TOLERANCE`` relative, SO2 and scale are
   approximate by construction and only recorded, mlp is not equivariant and only recorded); a
   few bf16-autocast training steps (CUDA; float32 elsewhere) with a finite loss and a nonzero
   gradient on every relaxed weight; the penalty computed on the CPU and on the device for the
   same weights.
3. ``jobs``: one training job through :class:`core.jobs.JobManager` on the device that reaches
   "done", and one that is cancelled while it runs (needs h5netcdf: runs write netCDF).
4. ``simulator``: the full rotation scenario (64x64, 310 steps, 36 sims) timed warm, the error
   between rotated siblings of the symmetric set-up, and the max |div|.
5. ``speed``: ``bench --suite paper`` (fp32, and bf16 on CUDA) against the published code's
   H200 figures (:data:`core.bench.PUBLISHED_H200_MS`; the goals hold on an H200 only).
6. ``reproduce``: a slice of ``reproduce --preset gpu`` (rotation; conv, gconv, rgroup, rsteer;
   one seed; a capped number of batches per model), with the epoch time per model and the full
   preset's wall time extrapolated from them.

Each step's status is "passed", "failed" (with one line saying why) or "skipped" (with the
reason: no CUDA, a missing optional package, the time budget spent). The exit code is 1 when a
step failed and 0 otherwise: skipping is not failing. ``--quick`` shrinks every size so the whole
check runs on a CPU in well under two minutes (``make test`` runs it so it cannot rot).

The time budget (``--minutes``, default 8) is shared: the speed and reproduce steps shrink
their samples to what is left, and a step that cannot start in the time left is skipped.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

STEPS = ("environment", "correctness", "jobs", "simulator", "speed", "reproduce")
EXACT_GROUPS = ("C4", "D4", "translation")
EXACT_TOLERANCE = 1e-5  # relative equivariance error of the exact groups at initialisation
PENALTY_TOLERANCE = 1e-5  # relative difference of the penalty between CPU and device
CANDIDATE_GROUPS = (None, "translation", "C4", "D4", "SO2", "scale")
PACKAGES = ("torch", "numpy", "xarray", "h5py", "h5netcdf", "safetensors", "tqdm", "scipy",
            "dask", "distributed", "panel", "holoviews", "bokeh", "param")
# speed goals on the published code's card: training >= 3x faster for every configuration, the
# group conv's batch-1 rollout >= 10x faster, the full rotation scenario in under 5 s
GOALS = dict(train_speedup=3.0, group_rollout_speedup=10.0, simulator_seconds=5.0)
REPRODUCE_MODELS = (("conv", "translation"), ("gconv", "C4"), ("rgroup", "C4"), ("rsteer", "C4"))

# sizes of the full check and of --quick (CPU, tiny)
SIZES = {
    False: dict(grid=32, hidden=16, layers=3, frames=2, sim_grid=64, sim_steps=310, sim_sims=36,
                job_grid=32, job_steps=60, bench=dict(repeats=5, warmup=2, sample_seconds=0.3),
                slice_batches=30),
    True: dict(grid=16, hidden=8, layers=2, frames=2, sim_grid=16, sim_steps=40, sim_sims=4,
               job_grid=16, job_steps=40, bench=dict(repeats=1, warmup=1, sample_seconds=0.02,
                                                     grid=(16, 16)),
               slice_batches=3),
}


class StepSkipped(Exception):
    """A step that cannot run here (no CUDA, a missing package, no time left): not a failure."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _missing(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is None
    except ImportError:  # a finder that refuses it
        return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuCheck:
    """The check's state: device, sizes, deadline, and the report written after every step."""

    def __init__(self, out: str | Path, *, device: str = "cuda", quick: bool = False,
                 minutes: float = 8.0, steps=STEPS,
                 say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
            raise ValueError(f"minutes must be a positive number, got {minutes!r}")
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {', '.join(unknown)}; valid: {', '.join(STEPS)}")
        self.out, self.quick, self.say = Path(out), bool(quick), say
        self.requested, self.steps = str(device), [s for s in STEPS if s in steps]
        self.sizes = SIZES[self.quick]
        self.started = time.perf_counter()
        self.deadline = self.started + 60.0 * minutes
        self.device: torch.device | None = None
        self.device_error: str | None = None
        try:
            from .devices import resolve_device
            self.device = resolve_device(device)
        except ValueError as err:
            self.device_error = f"{err} (torch {torch.__version__}, built for CUDA " \
                                f"{torch.version.cuda or 'none'})"
        self.shared: dict = {}  # what one step leaves for a later one (the simulated data)
        self.report = dict(started=_now(), finished=None, requested_device=self.requested,
                           device=None if self.device is None else str(self.device),
                           quick=self.quick, minutes=minutes, steps=[], out_error=None)
        self.out_error = self._prepare_out()

    # -- report
    def _prepare_out(self) -> str | None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".gpu-check-write-test"
            probe.write_text("ok")
            probe.unlink()
            return None
        except OSError as err:
            return f"--out {self.out} cannot be written: {err.strerror or err}"

    def _write(self) -> None:
        if self.out_error is not None:
            return
        from .files import atomic_write_json, atomic_write_text
        try:
            atomic_write_json(self.out / "gpu-check.json", self.report)
            atomic_write_text(self.out / "gpu-check.md", format_markdown(self.report))
        except OSError as err:
            self.out_error = f"--out {self.out} cannot be written: {err.strerror or err}"
        self.report["out_error"] = self.out_error

    @property
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def need_device(self, cuda_only: bool = False) -> torch.device:
        if self.device is None:
            raise StepSkipped(f"no {self.requested} device: {self.device_error}")
        if cuda_only and self.device.type != "cuda":
            raise StepSkipped("needs CUDA")
        return self.device

    def run(self) -> dict:
        self.report["out_error"] = self.out_error
        if self.out_error:
            self.say(f"[gpu-check] {self.out_error}; the report goes to the screen only")
        for name in self.steps:
            entry = dict(name=name, status="running", reason=None, seconds=None, results={})
            self.report["steps"].append(entry)
            self._write()
            began = time.perf_counter()
            try:
                if self.left <= 0:
                    raise StepSkipped("the time budget (--minutes) is spent")
                entry["results"] = STEP_FUNCTIONS[name](self) or {}
                problems = entry["results"].pop("problems", [])
                entry["status"] = "failed" if problems else "passed"
                entry["reason"] = "; ".join(problems) or None
            except StepSkipped as why:
                entry.update(status="skipped", reason=str(why))
            except Exception as err:  # a step that raises is reported; the others still run
                entry.update(status="failed",
                             reason=f"{type(err).__name__}: {err}".splitlines()[0],
                             traceback=traceback.format_exc(limit=8))
            entry["seconds"] = round(time.perf_counter() - began, 2)
            self.say(f"[gpu-check] {name}: {entry['status']} ({entry['seconds']:.1f} s)"
                     + (f": {entry['reason']}" if entry["reason"] else ""))
            self._write()
        self.report["finished"] = _now()
        self.report["seconds"] = round(time.perf_counter() - self.started, 2)
        self._write()
        return self.report


# ------------------------------------------------------------------------------ steps
def _environment(check: GpuCheck) -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None  # absent: the steps that need it say so
    info = dict(python=platform.python_version(), platform=platform.platform(),
                torch=torch.__version__, torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                else None, cuda_available=torch.cuda.is_available(), packages=versions,
                cpu_count=os.cpu_count())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    gpu_count=torch.cuda.device_count(),
                    capability=f"{props.major}.{props.minor}", driver=_driver())
    problems = [] if check.device is not None else [f"no {check.requested} device: "
                                                     f"{check.device_error}"]
    return dict(info, problems=problems)


def _driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def translation_error(model: torch.nn.Module, inputs: torch.Tensor,
                      shifts=((0, 1), (1, 0), (2, 3), (4, 4))) -> float:
    """Largest relative error of ``f(S x) = S f(x)`` over ``shifts``, on inputs that are zero in
    a band along the walls and compared only where the walls cannot reach: the zoo's convs pad
    with zeros (walls), so a periodic shift is no symmetry of theirs, but away from the walls a
    convolution is exactly shift-equivariant."""
    h, w = inputs.shape[-2:]
    reach = max(max(abs(a), abs(b)) for a, b in shifts)
    x = torch.zeros_like(inputs)
    x[..., reach:h - reach, reach:w - reach] = inputs[..., reach:h - reach, reach:w - reach]
    layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                 or hasattr(m, "kernel_size"))
    band = min(h, w) // 2 - 1
    margin = min(band, reach + max(1, layers) * int(model.spec.get("kernel_size", 3)) // 2 + reach)
    with torch.no_grad():
        y = model(x)
        worst = 0.0
        for dy, dx in shifts:
            lhs = model(torch.roll(x, (dy, dx), (-2, -1)))
            rhs = torch.roll(y, (dy, dx), (-2, -1))
            inner = (..., slice(margin, h - margin), slice(margin, w - margin))
            diff = (lhs - rhs)[inner].pow(2).mean().sqrt()
            scale = rhs[inner].pow(2).mean().sqrt()
            worst = max(worst, float(diff / scale) if scale > 0 else float(diff))
    return worst


def _zoo(check: GpuCheck):
    from .models import build_model, models_for_group

    s = check.sizes
    for group in CANDIDATE_GROUPS:
        for name in models_for_group(group):
            torch.manual_seed(0)
            yield name, group, build_model(
                name, group=group, in_frames=s["frames"], hidden_dim=s["hidden"],
                num_layers=s["layers"], num_banks=2 if name == "rgroup" else 1, alpha=1e-3,
                grid=(s["grid"], s["grid"]))


def _correctness(check: GpuCheck) -> dict:
    from .analysis import equivariance_error

    device = check.need_device()
    amp = device.type == "cuda"
    s = check.sizes
    rows, problems = [], []
    for name, group, model in _zoo(check):
        row = dict(model=name, group=group)
        rows.append(row)
        try:
            cpu_model = model
            model = _clone(model).to(device).float()
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(2, 2 * s["frames"], s["grid"], s["grid"], generator=gen).to(device)
            if group is None:
                row["equivariance"] = None
            elif group == "translation":
                row["equivariance"] = translation_error(model.eval(), x)
            else:
                row["equivariance"] = float(equivariance_error(model, x, group)["relative"].max())
            row["exact"] = group in EXACT_GROUPS and name != "mlp"
            if row["exact"] and not row["equivariance"] <= EXACT_TOLERANCE:
                problems.append(f"{name} {group}: equivariance error {row['equivariance']:.2e} "
                                f"> {EXACT_TOLERANCE:g}")
            row.update(_train_steps(model, x, amp))
            for key, bad in (("loss_finite", "a non-finite loss"),
                             ("relaxed_grads_nonzero", "a zero gradient on a relaxed weight")):
                if row.get(key) is False:
                    problems.append(f"{name} {group}: {bad}")
            row["penalty_difference"] = _penalty_difference(cpu_model, device)
            if row["penalty_difference"] is not None and \
                    not row["penalty_difference"] <= PENALTY_TOLERANCE:
                problems.append(f"{name} {group}: penalty differs between CPU and "
                                f"{device.type} by {row['penalty_difference']:.2e}")
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            problems.append(f"{name} {group}: {row['error']}")
    return dict(models=rows, precision="bf16 autocast" if amp else "float32",
                tolerance=EXACT_TOLERANCE, problems=problems)


def _clone(model: torch.nn.Module) -> torch.nn.Module:
    from .models import build_model

    twin = build_model(**model.spec)
    twin.load_state_dict(model.state_dict())
    return twin


def _train_steps(model: torch.nn.Module, x: torch.Tensor, amp: bool, steps: int = 3) -> dict:
    """A few Trainer-like steps (2-step rollout MSE + penalty, Adam) under bf16 autocast on CUDA."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.randn(2, *x.shape[:1], 2, *x.shape[-2:], device=x.device,
                         generator=None)
    relaxed = model.relaxed_weights()
    losses, grads_nonzero = [], True
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        window, loss = x, 0.0
        for t in range(2):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                pred = model(window).float()
            loss = loss + F.mse_loss(pred, target[t])
            window = torch.cat([window[:, 2:], pred], 1)
        loss = loss + model.penalty()
        loss.backward()
        grads_nonzero &= all(w.grad is not None and bool(w.grad.abs().sum() > 0)
                             for w in relaxed.values())
        optimizer.step()
        losses.append(float(loss.detach()))
    return dict(loss=losses[-1], loss_finite=all(math.isfinite(v) for v in losses),
                relaxed_weights=len(relaxed),
                relaxed_grads_nonzero=grads_nonzero if relaxed else None)


def _penalty_difference(model: torch.nn.Module, device: torch.device) -> float | None:
    """Relative difference of ``alpha * R`` on the CPU and on ``device`` for the same (perturbed)
    relaxed weights; None for strict models."""
    if not model.relaxed_weights():
        return None
    model = _clone(model)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for w in model.relaxed_weights().values():
            w.add_(0.1 * torch.randn(w.shape, generator=gen))
    on_cpu = float(model.penalty())
    on_device = float(model.to(device).penalty())
    return abs(on_cpu - on_device) / max(abs(on_cpu), 1e-30)


def _jobs(check: GpuCheck) -> dict:
    from .datasets import generate, save_dataset
    from .jobs import JobManager

    device = check.need_device()
    if _missing("h5netcdf"):
        raise StepSkipped("h5netcdf is not installed (runs and datasets are netCDF files); "
                          "carry its wheel (README, GPU section)")
    s = check.sizes
    problems = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-jobs-") as tmp:
        data = Path(tmp) / "data.nc"
        save_dataset(generate("rotation", grid=s["job_grid"], steps=s["job_steps"], sims=4,
                              device=device.type), data)
        spec = dict(name="rgroup", group="C4", in_frames=2, hidden_dim=s["hidden"],
                    num_layers=s["layers"], num_banks=2, alpha=1e-3)
        short = dict(epochs=1, batch_size=4, batches_per_epoch=3, valid_samples=4,
                     device=device.type, threads=1, patience=1000)
        manager = JobManager(Path(tmp) / "runs", max_cpu_jobs=1, poll=0.2)
        try:
            began = time.perf_counter()
            done_id = manager.submit(spec, short, data)
            done = manager.wait(done_id, timeout=max(30.0, min(300.0, check.left)))
            done_seconds = time.perf_counter() - began
            if done.get("state") != "done":
                problems.append(f"the job ended {done.get('state')}: {done.get('error')}")
            long_id = manager.submit(spec, dict(short, epochs=500, batches_per_epoch=50), data)
            deadline = time.time() + max(30.0, min(300.0, check.left))
            while manager.status(long_id).get("state") in ("queued",) and time.time() < deadline:
                time.sleep(0.2)
            manager.cancel(long_id)
            cancelled = manager.wait(long_id, timeout=max(30.0, min(300.0, check.left)))
            if cancelled.get("state") != "cancelled":
                problems.append(f"the cancelled job ended {cancelled.get('state')}")
            trained_on = manager.store.get(done_id).status().get("device")
        finally:
            manager.shutdown()
    return dict(done_state=done.get("state"), done_seconds=round(done_seconds, 2),
                done_device=trained_on, cancelled_state=cancelled.get("state"),
                problems=problems)


def _simulator(check: GpuCheck) -> dict:
    from .datasets import data_equivariance_error, generate
    from .simulation import max_divergence

    device = check.need_device()
    s = check.sizes
    size = dict(grid=s["sim_grid"], steps=s["sim_steps"], sims=s["sim_sims"], device=device.type)

    def timed(**extra):
        _sync(device)
        began = time.perf_counter()
        ds = generate("rotation", **size, **extra)
        _sync(device)
        return ds, time.perf_counter() - began

    symmetric, cold = timed(breaking=0.0)  # includes kernel warm-up
    data, warm = timed()
    check.shared["rotation"] = data
    sibling = float(data_equivariance_error(symmetric, "C4").max())
    divergence = max_divergence(torch.from_numpy(data["velocity"].values).to(device))
    problems = []
    if device.type == "cuda" and not check.quick and warm > GOALS["simulator_seconds"]:
        problems.append(f"the rotation scenario took {warm:.1f} s (goal "
                        f"< {GOALS['simulator_seconds']:g} s)")
    return dict(grid=s["sim_grid"], steps=s["sim_steps"], sims=s["sim_sims"],
                seconds_cold=round(cold, 3), seconds=round(warm, 3),
                sibling_error=sibling, sibling_exact=sibling == 0.0,
                max_divergence=divergence, goal_seconds=GOALS["simulator_seconds"],
                published_phiflow_h200_seconds=134.0, problems=problems)


def _speed(check: GpuCheck) -> dict:
    from .bench import PUBLISHED_H200_MS, run_benchmark

    device = check.need_device()
    settings = dict(check.sizes["bench"])
    if check.left < 60 and not check.quick:  # shrink the samples to the time left
        settings.update(repeats=2, sample_seconds=0.1)
    report = run_benchmark(suite="paper", device=device.type, progress=None, **settings)
    h200 = "H200" in str(report["machine"].get("device_name", ""))
    rows, problems = [], []
    for r in report["results"]:
        base = r["model"].removesuffix("+bf16")
        (train_lo, _), (roll_lo, _) = PUBLISHED_H200_MS[base]
        row = dict(model=r["model"], precision=r.get("precision"), hidden_dim=r.get("hidden_dim"),
                   batch=r.get("batch"), train_ms=r["train_ms"], rollout_ms=r["rollout_ms"],
                   published_train_ms=train_lo, published_rollout_ms=roll_lo,
                   train_speedup=None if not r["train_ms"] else train_lo / r["train_ms"],
                   rollout_speedup=None if not r["rollout_ms"] else roll_lo / r["rollout_ms"],
                   error=r.get("error"))
        rows.append(row)
        if r.get("error"):
            problems.append(f"{r['model']}: {r['error']}")
        elif h200 and not check.quick:
            if row["train_speedup"] < GOALS["train_speedup"]:
                problems.append(f"{r['model']} trains {row['train_speedup']:.1f}x faster than "
                                f"published (goal {GOALS['train_speedup']:g}x)")
            if base == "paper-rgroup" and row["rollout_speedup"] < GOALS["group_rollout_speedup"]:
                problems.append(f"{r['model']} rolls out {row['rollout_speedup']:.1f}x faster "
                                f"than published (goal {GOALS['group_rollout_speedup']:g}x)")
    return dict(rows=rows, comparable=h200, machine=report["machine"],
                note=None if h200 else "the published figures are from an H200: the ratios "
                                       "say little on another device", problems=problems)


def _reproduce(check: GpuCheck) -> dict:
    from .datasets import WindowDataset
    from .reproduce import FAMILIES, PRESETS
    from .training import Trainer

    device = check.need_device()
    data = check.shared.get("rotation")
    if data is None:  # the simulator step was not asked for: simulate the same data here
        from .datasets import generate
        s = check.sizes
        data = generate("rotation", grid=s["sim_grid"], steps=s["sim_steps"], sims=s["sim_sims"],
                        device=device.type)
    preset = PRESETS["gpu"]
    s = check.sizes
    frames = 2 if check.quick else preset.in_frames
    batch = preset.training["batch_size"]
    windows = len(WindowDataset(data, "train", frames, 6))
    batches = math.ceil(windows / batch)
    rows, problems = [], []
    for name, group in REPRODUCE_MODELS:
        if check.left < 15 and rows:
            break
        width = s["hidden"] if check.quick else preset.width(name)
        spec = dict(name=name, group=group, in_frames=frames, hidden_dim=width,
                    num_layers=s["layers"] if check.quick else preset.layers,
                    num_banks=preset.banks if name == "rgroup" else 1,
                    alpha=preset.alpha if name in ("rgroup", "rsteer") else 0.0)
        stamps = []
        config = dict(epochs=1, batch_size=batch, batches_per_epoch=s["slice_batches"],
                      valid_samples=8, device=device.type, lr=preset.training["lr"])
        try:
            trainer = Trainer(spec, data, config, on_batch=lambda info: (
                _sync(device), stamps.append(time.perf_counter())))
            trainer.fit()
            timed = np.diff(stamps[1:]) if len(stamps) > 2 else np.diff(stamps)
            per_batch = float(np.median(timed)) if len(timed) else math.nan
            rows.append(dict(model=name, group=group, hidden_dim=width,
                             batch_ms=per_batch * 1e3, epoch_s=per_batch * batches))
        except Exception as err:
            rows.append(dict(model=name, group=group, error=f"{type(err).__name__}: {err}"
                             .splitlines()[0]))
            problems.append(f"{name}: {rows[-1]['error']}")
    epoch = {r["model"]: r["epoch_s"] for r in rows if "epoch_s" in r}
    estimate = _extrapolate(epoch, preset, FAMILIES) if epoch else None
    return dict(models=rows, train_windows=windows, batches_per_epoch=batches,
                estimate=estimate, problems=problems)


# unmeasured families take the time of the measured model closest in cost
PROXY = {"mlp": "conv", "constrained": "conv", "steer": "rsteer", "rpp": "rgroup",
         "lift": "rgroup", "combo": "rgroup"}


def _extrapolate(epoch: dict[str, float], preset, families) -> dict:
    """The gpu preset's training wall time from the measured rotation epoch times: every
    scenario's families x seeds x the preset's epochs (an upper bound: early stopping ends many
    runs sooner), scaled by each scenario's number of simulations, one job at a time per GPU;
    the levels experiment counted as one orbit (4 sims) per level. Discoveries not included."""
    def per_epoch(name):
        key = name if name in epoch else PROXY.get(name)
        return epoch.get(key, float(np.mean(list(epoch.values()))))

    epochs, seeds = preset.training["epochs"], preset.seeds
    total = 0.0
    for scenario, members in families.items():
        scale = preset.sims[scenario] / preset.sims["rotation"]
        total += sum(per_epoch(n) for n, _ in members) * seeds * epochs * scale
    levels = preset.levels * sum(per_epoch(n) for n in preset.level_models) * epochs * 4 \
        / preset.sims["rotation"]
    return dict(hours=(total + levels) / 3600, epochs=epochs, seeds=seeds,
                assumption="every run trains all its epochs; unmeasured families cost like "
                           "their proxies " + json.dumps(PROXY))


STEP_FUNCTIONS = dict(environment=_environment, correctness=_correctness, jobs=_jobs,
                      simulator=_simulator, speed=_speed, reproduce=_reproduce)


# ------------------------------------------------------------------------------ report
def _f(value, spec=".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def format_markdown(report: dict) -> str:
    lines = [f"# GPU check ({report.get('requested_device')}"
             f"{', quick' if report.get('quick') else ''})", "",
             f"Started {report.get('started')}, finished {report.get('finished') or '(running)'}.",
             "", "| step | status | seconds | note |", "|---|---|---|---|"]
    for step in report["steps"]:
        lines.append(f"| {step['name']} | {step['status']} | {_f(step['seconds'])} | "
                     f"{(step.get('reason') or '').replace('|', '/')} |")
    by_name = {s["name"]: s.get("results") or {} for s in report["steps"]}
    env = by_name.get("environment")
    if env:
        lines += ["", "## Environment", "",
                  f"GPU: {env.get('gpu', 'none')} ({_f(env.get('gpu_memory_gib'))} GiB), "
                  f"driver {env.get('driver') or '-'}; torch {env.get('torch')}, CUDA "
                  f"{env.get('torch_cuda') or '-'}, cuDNN {env.get('cudnn') or '-'}; Python "
                  f"{env.get('python')}.", "",
                  "Packages: " + ", ".join(f"{k} {v or 'absent'}"
                                           for k, v in env.get("packages", {}).items())]
    corr = by_name.get("correctness")
    if corr:
        lines += ["", f"## Correctness ({corr.get('precision')} steps)", "",
                  "| model | group | equivariance (rel.) | loss | relaxed grads | penalty diff |",
                  "|---|---|---|---|---|---|"]
        for r in corr.get("models", []):
            lines.append(f"| {r['model']} | {r['group']} | {_f(r.get('equivariance'), '.2e')} | "
                         f"{_f(r.get('loss'))} | {_f(r.get('relaxed_grads_nonzero'))} | "
                         f"{_f(r.get('penalty_difference'), '.1e')} |"
                         + (f" {r['error']}" if r.get("error") else ""))
    jobs = by_name.get("jobs")
    if jobs:
        lines += ["", "## Jobs", "", f"Done job: {jobs.get('done_state')} in "
                  f"{_f(jobs.get('done_seconds'))} s on {jobs.get('done_device')}; cancelled "
                  f"job: {jobs.get('cancelled_state')}."]
    sim = by_name.get("simulator")
    if sim:
        lines += ["", "## Simulator", "",
                  f"Rotation scenario {sim['grid']}x{sim['grid']}, {sim['steps']} steps, "
                  f"{sim['sims']} sims: {_f(sim['seconds'])} s warm ({_f(sim['seconds_cold'])} s "
                  f"cold; PhiFlow on an H200: 134 s); rotated-sibling error "
                  f"{_f(sim['sibling_error'], '.2e')}; max |div| {_f(sim['max_divergence'], '.2e')}."]
    speed = by_name.get("speed")
    if speed:
        lines += ["", "## Speed against the published code (H200, fp32)", "",
                  "| configuration | precision | train ms | published | speed-up | rollout ms "
                  "| published | speed-up |", "|---|---|---|---|---|---|---|---|"]
        for r in speed.get("rows", []):
            lines.append(f"| {r['model']} | {r.get('precision')} | {_f(r['train_ms'])} | "
                         f"{_f(r['published_train_ms'])} | {_f(r['train_speedup'], '.2f')}x | "
                         f"{_f(r['rollout_ms'])} | {_f(r['published_rollout_ms'])} | "
                         f"{_f(r['rollout_speedup'], '.2f')}x |")
        if speed.get("note"):
            lines += ["", speed["note"] + "."]
    rep = by_name.get("reproduce")
    if rep:
        lines += ["", "## A slice of reproduce --preset gpu (rotation, one seed)", "",
                  "| model | width | ms per batch | s per epoch |", "|---|---|---|---|"]
        for r in rep.get("models", []):
            lines.append(f"| {r['model']} {r['group']} | {_f(r.get('hidden_dim'))} | "
                         f"{_f(r.get('batch_ms'))} | {_f(r.get('epoch_s'))} |"
                         + (f" {r['error']}" if r.get("error") else ""))
        if rep.get("estimate"):
            lines += ["", f"The full gpu preset: about {rep['estimate']['hours']:.1f} h of "
                          f"training at most ({rep['estimate']['assumption']})."]
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    counts = {k: sum(s["status"] == k for s in report["steps"])
              for k in ("passed", "failed", "skipped")}
    head = (f"gpu-check on {report.get('device') or report.get('requested_device')}: "
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    rows = [f"  {s['name']:<12} {s['status']:<8}" + (f" {s['reason']}" if s.get("reason") else "")
            for s in report["steps"]]
    tail = [f"  report: {report['out_error']}"] if report.get("out_error") else []
    return "\n".join([head, *rows, *tail])


def gpu_check(out: str | Path, **options) -> dict:
    """Run the check (see the module docstring); returns the report dictionary."""
    return GpuCheck(out, **options).run()

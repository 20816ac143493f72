"""Speed benchmark of the model zoo at equal width: ``python -m core bench``.

For every entry it times

* a training iteration: a 6-step autoregressive rollout from a batch of random velocity stacks,
  summed MSE against random targets plus ``model.penalty()``, backward and an Adam step;
* a 20-step batch-1 rollout in eval mode under ``no_grad``,

and reports the median over repeats, the parameter count and the ratios against the strict model
of the same family and against the plain CNN, all from the same run.

The ``naive-rgroup`` entry is a relaxed C4 group conv network of the same shape as ``rgroup`` that
rebuilds its kernels on every call by rotating each filter bank for each group element with
``grid_sample`` in Python loops: the cost structure of the usual published implementation, kept
here as the reference our layers are measured against. It lives in this module only.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .devices import resolve_device
from .models import ZooModel, build_model
from .nn.cache import pairwise_abs_difference

TRAIN_STEPS = 6
ROLLOUT_STEPS = 20
# Nonzero so the penalty is part of the training graph, as it is in real training runs.
ALPHA = 0.1

# Entry label -> (model name, group, uses num_banks). Order is the order of the report.
ENTRIES: dict[str, tuple[str, str | None, bool]] = {
    "conv": ("conv", "translation", False),
    "gconv": ("gconv", "C4", False),
    "rgroup": ("rgroup", "C4", True),
    "naive-rgroup": ("naive-rgroup", "C4", True),
    "rgroup-translation": ("rgroup", "translation", True),
    "steer": ("steer", "C4", False),
    "rsteer": ("rsteer", "C4", False),
    "steer-scale": ("steer", "scale", False),
    "rsteer-scale": ("rsteer", "scale", False),
    "rpp": ("rpp", "C4", False),
    "lift": ("lift", "C4", False),
    "combo": ("combo", "C4", False),
    "constrained": ("constrained", "translation", False),
    "mlp": ("mlp", None, False),
}

# The published configurations (64x64, 10 frames, 6-step rollout per iteration), with the
# published implementation's times on an NVIDIA H200 in fp32, as (fastest, slowest) of the
# published measurements: train iteration ms, 20-step batch-1 rollout ms. Comparable only on the
# same card. Widths are ours: hidden_dim counts channels, so the group conv's 32 regular C4 fields
# are 128 channels; the published strict steerable model (e2cnn, "Equiv") is our steer at 32.
PAPER = {
    "paper-conv": dict(hidden_dim=128, batch=8),
    "paper-rgroup-translation": dict(hidden_dim=128, num_banks=2, batch=8),
    "paper-rsteer": dict(hidden_dim=92, batch=16),
    "paper-rgroup": dict(hidden_dim=128, num_banks=2, batch=8),
    "paper-steer": dict(hidden_dim=32, batch=16),
}
PUBLISHED_H200_MS = {"paper-conv": ((15.1, 15.4), (13.1, 13.5)),
                     "paper-rgroup-translation": ((39.0, 40.0), (25.0, 28.0)),
                     "paper-rsteer": ((65.0, 65.0), (18.0, 27.0)),
                     "paper-rgroup": ((90.0, 107.0), (136.0, 211.0)),
                     "paper-steer": ((49.0, 49.0), (30.0, 30.0))}
ROTATION_TRAIN_WINDOWS = 28 * 160  # default rotation dataset: train sims x train start times
for _label, _like in (("paper-conv", "conv"), ("paper-rgroup-translation", "rgroup-translation"),
                      ("paper-rsteer", "rsteer"), ("paper-rgroup", "rgroup"),
                      ("paper-steer", "steer")):
    ENTRIES[_label] = ENTRIES[_like]

# Entry -> the strict model of its family (entries absent here have none: they are the strict
# reference themselves, or, like mlp, belong to no family).
STRICT = {
    "rgroup": "gconv", "naive-rgroup": "gconv", "rpp": "gconv", "lift": "gconv", "combo": "gconv",
    "rsteer": "steer", "rgroup-translation": "conv", "constrained": "conv",
    "rsteer-scale": "steer-scale",
}

# The speed targets for the relaxed C4 group conv: (kind, limit) against strict gconv C4.
TARGETS = (("train", 1.5), ("rollout", 1.2))

MAX_CALLS = 50  # per sample, for the cheapest models

# Chosen so the full default run stays around three minutes on a 2-core CPU.
DEFAULTS = dict(models=tuple(label for label in ENTRIES if not label.startswith("paper-")), grid=(64, 64), batch=8, hidden_dim=32, num_layers=5,
                in_frames=10, kernel_size=3, num_banks=2, repeats=5, warmup=2, sample_seconds=0.3,
                device="cpu", suite="all", sim_batches=(1, 8, 36), sim_steps=60,
                dtype="float32", threads=None)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------------
# naive baseline


def _rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the spatial dims of ``x [N, C, k, k]`` counter-clockwise by ``angle``: ``x(g^-1 z)``.
    affine_grid samples the input at ``theta @ z``, so theta is the inverse rotation."""
    c, s = math.cos(-angle), math.sin(-angle)
    theta = x.new_tensor([[c, -s, 0.0], [s, c, 0.0]]).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation(angle: float, like: torch.Tensor) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return like.new_tensor([[c, -s], [s, c]])


class NaiveRelaxedGroupConv(nn.Module):
    """Relaxed C_n lifting / group / projection conv whose kernel is rebuilt on every call by
    rotating every bank for every group element (one ``grid_sample`` each), with no cache.
    Same parameter shapes as :class:`core.nn.RelaxedGroupConv`; not numerically identical."""

    def __init__(self, order: int, in_fields: int, out_fields: int, in_rep: str, out_rep: str,
                 kernel_size: int, num_banks: int):
        super().__init__()
        self.order, self.in_rep, self.out_rep = order, in_rep, out_rep
        self.in_fields, self.out_fields = in_fields, out_fields
        self.kernel_size = kernel_size
        d_in = 2 if in_rep == "vector" else order
        if out_rep == "regular":
            shape = (num_banks, out_fields, in_fields * d_in, kernel_size, kernel_size)
        else:  # projection onto vector fields
            shape = (num_banks, 2 * out_fields, in_fields, kernel_size, kernel_size)
        fan_in = in_fields * d_in * kernel_size ** 2
        self.banks = nn.Parameter(torch.randn(shape) * math.sqrt(2.0 / fan_in / num_banks))
        self.weights = nn.Parameter(torch.ones(num_banks, order))
        self.bias = nn.Parameter(torch.zeros(out_fields)) if out_rep == "regular" else None

    @property
    def relaxed_weight(self) -> torch.Tensor:
        return self.weights

    def symmetry_penalty(self) -> torch.Tensor:
        return pairwise_abs_difference(self.weights, dim=1)

    def build_kernel(self) -> torch.Tensor:
        G, k = self.order, self.kernel_size
        per_element = []
        for g in range(G):
            angle = 2 * math.pi * g / G
            kernel_g = 0
            for l in range(self.banks.shape[0]):
                psi = _rotate(self.banks[l], angle)
                if self.in_rep == "vector":  # turn the input components: psi rho(g)^-1
                    psi = torch.einsum("oidyx,dc->oicyx", psi.unflatten(1, (-1, 2)),
                                       _rotation(-angle, psi)).flatten(1, 2)
                elif self.out_rep == "regular":  # shift the input group axis by g
                    psi = psi.unflatten(1, (-1, G)).roll(g, 2).flatten(1, 2)
                if self.out_rep == "vector":  # turn the output components: rho(g) psi
                    psi = torch.einsum("ab,obiyx->oaiyx", _rotation(angle, psi),
                                       psi.unflatten(0, (-1, 2))).flatten(0, 1)
                kernel_g = kernel_g + self.weights[l, g] * psi
            per_element.append(kernel_g)
        if self.out_rep == "regular":  # output channel o * G + g
            return torch.stack(per_element, 1).reshape(self.out_fields * G, -1, k, k)
        return torch.stack(per_element, 2).reshape(2 * self.out_fields, -1, k, k)  # input i * G + g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.repeat_interleave(self.order)
        return F.conv2d(x, self.build_kernel(), bias, padding=self.kernel_size // 2)


class NaiveRelaxedGroupNet(ZooModel):
    """Lift (vector -> regular), group convs, projection (regular -> vector), ReLU between: the
    architecture of ``build_model("rgroup", group="C<n>")`` on the naive layer."""

    def __init__(self, order: int = 4, in_frames: int = 10, hidden_dim: int = 32,
                 num_layers: int = 5, kernel_size: int = 3, num_banks: int = 2,
                 alpha: float = 0.0):
        super().__init__(dict(name="naive-rgroup", group=f"C{order}", in_frames=in_frames,
                              hidden_dim=hidden_dim, num_layers=num_layers,
                              kernel_size=kernel_size, num_banks=num_banks, alpha=alpha))
        c = max(1, hidden_dim // order)
        plan = ([("vector", in_frames, "regular", c)]
                + [("regular", c, "regular", c)] * (num_layers - 2)
                + [("regular", c, "vector", 1)])
        self.layers = nn.ModuleList(
            NaiveRelaxedGroupConv(order, fi, fo, ri, ro, kernel_size, num_banks)
            for ri, fi, ro, fo in plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# --------------------------------------------------------------------------------------------
# measurement


def _synchronize(device: torch.device) -> None:
    # Kernels run asynchronously on accelerators: wait so the clock sees the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _time_ms(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Mean wall time of ``calls`` back-to-back calls, in ms."""
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _synchronize(device)
    return (time.perf_counter() - start) * 1e3 / calls


def _build(label: str, s: dict) -> nn.Module:
    name, group, banked = ENTRIES[label.removesuffix("+bf16")]
    sizes = dict(in_frames=s["in_frames"], hidden_dim=s["hidden_dim"], num_layers=s["num_layers"],
                 kernel_size=s["kernel_size"], num_banks=s["num_banks"] if banked else 1,
                 alpha=ALPHA)
    if name == "naive-rgroup":
        return NaiveRelaxedGroupNet(order=int(group[1:]), **sizes)
    return build_model(name, group=group, grid=tuple(s["grid"]), **sizes)


def _slide(window: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Drop the oldest (u, v) frame and append the newest."""
    return torch.cat([window[:, 2:], frame], 1)


class _Workload:
    """One entry's model with its two timed tasks: ``train`` (one training iteration) and
    ``rollout`` (a 20-step batch-1 eval rollout)."""

    def __init__(self, label: str, s: dict, device: torch.device, dtype: torch.dtype):
        s = {**s, **PAPER.get(label.removesuffix("+bf16"), {})}
        self.amp = label.endswith("+bf16") and device.type == "cuda"
        torch.manual_seed(0)
        self.model = model = _build(label, s).to(device=device, dtype=dtype)
        self.params = sum(p.numel() for p in model.parameters())
        h, w = s["grid"]
        opts = dict(device=device, dtype=dtype)
        self.x = torch.randn(s["batch"], 2 * s["in_frames"], h, w, **opts)
        self.targets = torch.randn(TRAIN_STEPS, s["batch"], 2, h, w, **opts)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        window, loss = self.x, 0.0
        for t in range(TRAIN_STEPS):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                pred = self.model(window).float()
            loss = loss + F.mse_loss(pred, self.targets[t])
            window = _slide(window, pred)
        loss = loss + self.model.penalty()
        loss.backward()
        self.optimizer.step()

    def rollout(self) -> None:
        # eval() drops any cached kernels, so every rollout pays for building them once, as a
        # fresh rollout after training does.
        self.model.eval()
        with torch.no_grad():
            window = self.x[:1]
            for _ in range(ROLLOUT_STEPS):
                window = _slide(window, self.model(window))


def _measure_all(labels: list[str], s: dict, device: torch.device, dtype: torch.dtype,
                 progress: Callable[[str], None] | None) -> dict[str, dict]:
    """Time every entry in interleaved rounds (each round times every model once), so slow drift
    of a shared machine hits all models alike; the median over rounds is reported. Each sample
    repeats a task enough times to last about ``sample_seconds``."""
    say = progress or (lambda line: None)
    measured, loads, calls = {}, {}, {}

    def fail(label, err):
        measured[label] = dict(params=None, train_ms=None, rollout_ms=None,
                               error=f"{type(err).__name__}: {err}".splitlines()[0])
        loads.pop(label, None)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for label in labels:
        try:
            load = loads[label] = _Workload(label, s, device, dtype)
            for task in ("train", "rollout"):
                fn = getattr(load, task)
                for _ in range(s["warmup"]):
                    fn()
                once = _time_ms(fn, device, 1) / 1e3
                calls[label, task] = max(1, min(MAX_CALLS, round(s["sample_seconds"] / once)))
            say(f"[bench] {label}: built and warmed up")
        except (RuntimeError, ValueError) as err:  # OOM, or a spec the grid rules out
            fail(label, err)
            say(f"[bench] {label}: {measured[label]['error']}")
    samples = {key: [] for key in calls}
    for r in range(s["repeats"]):
        for label in list(loads):
            try:
                for task in ("train", "rollout"):
                    samples[label, task].append(
                        _time_ms(getattr(loads[label], task), device, calls[label, task]))
            except RuntimeError as err:
                fail(label, err)
        say(f"[bench] round {r + 1}/{s['repeats']} done")
    for label, load in loads.items():
        measured[label] = dict(params=load.params,
                               train_ms=statistics.median(samples[label, "train"]),
                               rollout_ms=statistics.median(samples[label, "rollout"]))
    return measured


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def machine_info(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = f"Apple MPS ({platform.machine()})"
    else:
        name = _cpu_name()
    return dict(torch=torch.__version__, python=platform.python_version(),
                platform=platform.platform(), device=device.type, device_name=name,
                cpu=_cpu_name(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _paper_columns(label: str, m: dict, s: dict) -> dict:
    """Extra numbers of the published configurations: settings, estimated epoch time on the
    default rotation dataset, and the published H200 times."""
    base = label.removesuffix("+bf16")
    if base not in PAPER or m.get("train_ms") is None:
        return {}
    cfg = {**s, **PAPER[base]}
    iterations = math.ceil(ROTATION_TRAIN_WINDOWS / cfg["batch"])
    (train, _), (rollout, _) = PUBLISHED_H200_MS[base]
    return dict(hidden_dim=cfg["hidden_dim"], batch=cfg["batch"],
                precision="bf16" if label.endswith("+bf16") else "fp32",
                epoch_s=m["train_ms"] * iterations / 1e3, published_h200_train_ms=train,
                published_h200_rollout_ms=rollout)


def _parse_models(models) -> list[str]:
    if isinstance(models, str):
        models = [m for m in models.split(",") if m.strip()]
    chosen = {m.strip() for m in models if m.strip()}
    unknown = sorted(m for m in chosen if m.removesuffix("+bf16") not in ENTRIES)
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(ENTRIES)}")
    if not chosen:
        raise ValueError(f"no model selected; valid: {', '.join(ENTRIES)}")
    return [label for label in ENTRIES if label in chosen] + sorted(
        m for m in chosen if m.endswith("+bf16"))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


SUITES = ("all", "models", "simulation", "paper", "discovery")
# full rotation scenario (36 sims x 310 steps at 64x64): seconds allowed per device type
SIM_TARGETS = {"cpu": 60.0, "cuda": 5.0}


def simulation_benchmark(device: torch.device, batches=(1, 8, 36), steps: int = 60,
                         grid: int = 64) -> dict:
    """Simulator throughput at ``grid`` for each batch size (simulations run together), and the
    time the full rotation scenario (36 sims x 310 steps) would take at batch 36."""
    from .scenarios import _orbit_of_bottom
    from .simulation import SimulationConfig, simulate

    orbit = _orbit_of_bottom((grid, grid), 0.1)
    rows = []
    for batch in batches:
        sims = [orbit[i % 4] for i in range(batch)]
        simulate(sims, SimulationConfig(grid=(grid, grid), steps=3), device=device)  # warm up
        _synchronize(device)
        start = time.perf_counter()
        simulate(sims, SimulationConfig(grid=(grid, grid), steps=steps), device=device)
        _synchronize(device)
        seconds = time.perf_counter() - start
        rows.append(dict(batch=batch, steps=steps, seconds=seconds,
                         sim_steps_per_s=batch * steps / seconds,
                         ms_per_step=seconds / steps * 1e3))
    for row in rows:
        row["speedup_vs_batch1"] = row["sim_steps_per_s"] / rows[0]["sim_steps_per_s"]
    widest = max(rows, key=lambda r: r["batch"])
    scenario_s = 36 * 310 / widest["sim_steps_per_s"]
    limit = SIM_TARGETS.get(device.type)
    return dict(grid=grid, rows=rows, rotation_scenario_s=scenario_s,
                target=dict(name=f"full rotation scenario (36 x 310 steps, {grid}x{grid}) at "
                                 f"batch {widest['batch']}", limit_s=limit,
                            passed=None if limit is None else scenario_s <= limit))


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants, from /proc (0 elsewhere)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


DISCOVERY_CASES = {  # name -> (scenario, grid, steps, sims, breaking, group)
    "rotation-32": ("rotation", 32, 120, 16, 4.0, "C4"),
    "translation-32": ("translation", 32, 120, 14, 1.0, "translation"),
    "rotation-64": ("rotation", 64, 310, 36, 1.0, "C4"),
    "translation-64": ("translation", 64, 310, 35, 1.0, "translation"),
}


def discovery_benchmark(cases=tuple(DISCOVERY_CASES), seeds: int = 3,
                        device: str = "cpu", progress: Callable[[str], None] | None = None) -> dict:
    """Wall time and peak memory (the driver and its worker processes together, sampled every
    0.2 s) of whole ``discover`` calls, default protocol, on freshly simulated data."""
    import tempfile
    import threading
    from dataclasses import replace

    from .datasets import generate, save_dataset
    from .discovery import PROTOCOLS, discover

    rows = []
    for name in cases:
        scenario, grid, steps, sims, breaking, group = DISCOVERY_CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.nc")
            save_dataset(generate(scenario, grid=grid, steps=steps, sims=sims,
                                  breaking=breaking, device=device), path)
            peak, stop = [0], threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], _tree_rss(os.getpid()))
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start = time.perf_counter()
            try:
                evidence = discover(path, group, seeds=seeds, runs=os.path.join(tmp, "runs"),
                                    protocol=replace(PROTOCOLS["default"], device=device))
            finally:
                stop.set()
                sampler.join()
            seconds = time.perf_counter() - start
        rows.append(dict(case=name, grid=grid, steps=steps, sims=sims, breaking=breaking,
                         group=group, seeds=seeds, seconds=seconds, peak_rss_mb=peak[0] / 2**20,
                         broken=bool(evidence.attrs["broken"]),
                         significance=float(evidence.attrs["significance"])))
        if progress is not None:
            progress(f"[bench] discover {name}: {seconds:.0f} s, peak {peak[0] / 2**20:.0f} MB")
    return dict(rows=rows, limits=dict(seconds_32=600.0, peak_rss_mb_64=4096.0))


def run_benchmark(*, progress: Callable[[str], None] | None = _stderr, **settings) -> dict:
    """Measure the selected entries and return ``{"machine", "settings", "results", "targets"}``.

    Settings (see ``DEFAULTS``): models (labels of ``ENTRIES``, a list or comma-separated string),
    grid (H, W), batch, hidden_dim, num_layers, in_frames, kernel_size, num_banks, repeats, warmup,
    sample_seconds (each timed sample repeats a task to last about this long),
    device ("auto", "cpu", "cuda", "mps"), dtype ("float32", "float64"), threads (None keeps
    torch's default). ``progress`` receives a line per built entry and per round (None: silent).
    An entry that cannot be built or run (e.g. out of memory) gets an ``error`` instead of times.
    """
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    device = resolve_device(s["device"])
    if s["suite"] == "discovery":
        return dict(machine=machine_info(device), settings=dict(s, device=device.type),
                    results=[], targets=[], simulation=None,
                    discovery=discovery_benchmark(device=device.type, progress=progress))
    if s["suite"] == "paper":  # the published configurations, fp32 and (on CUDA) bf16
        s["models"] = list(PAPER) + ([f"{k}+bf16" for k in PAPER] if device.type == "cuda" else [])
    else:
        s["models"] = _parse_models(s["models"])
    s["grid"] = [int(v) for v in s["grid"]]
    for key in ("batch", "repeats"):
        if int(s[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {s[key]}")
    if int(s["kernel_size"]) % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {s['kernel_size']}")
    if int(s["num_layers"]) < 2:
        raise ValueError(f"num_layers must be >= 2, got {s['num_layers']}")
    if int(s["warmup"]) < 0:
        raise ValueError(f"warmup must be >= 0, got {s['warmup']}")
    if s["suite"] not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}, got {s['suite']!r}")
    if s["dtype"] not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {s['dtype']!r}")
    s["device"] = device.type

    threads_before = torch.get_num_threads()
    if s["threads"] is not None:
        torch.set_num_threads(int(s["threads"]))
    try:
        machine = machine_info(device)
        measured = (_measure_all(s["models"], s, device, DTYPES[s["dtype"]], progress)
                    if s["suite"] != "simulation" else {})
        simulation = None
        if s["suite"] in ("all", "simulation"):
            simulation = simulation_benchmark(device, tuple(s["sim_batches"]), s["sim_steps"])
            if progress is not None:
                progress("[bench] simulator measured")
    finally:
        torch.set_num_threads(threads_before)

    results = []
    for label in (s["models"] if measured else []):
        name, group, banked = ENTRIES[label.removesuffix("+bf16")]
        m, strict = measured[label], STRICT.get(label)
        ref = measured.get(strict, {})
        conv = measured.get("conv", {})
        results.append(dict(
            model=label, name=name, group=group, num_banks=s["num_banks"] if banked else 1,
            params=m["params"], train_ms=m["train_ms"], rollout_ms=m["rollout_ms"],
            strict=strict,
            train_vs_strict=_ratio(m["train_ms"], ref.get("train_ms")),
            rollout_vs_strict=_ratio(m["rollout_ms"], ref.get("rollout_ms")),
            train_vs_conv=_ratio(m["train_ms"], conv.get("train_ms")),
            rollout_vs_conv=_ratio(m["rollout_ms"], conv.get("rollout_ms")),
            **({"error": m["error"]} if "error" in m else {}),
            **_paper_columns(label, m, s)))

    headline = next((r for r in results if r["model"] == "rgroup"), {})
    measured_zoo = any(r["model"] in ENTRIES and not r["model"].startswith("paper-")
                       for r in results)
    targets = []
    for kind, limit in TARGETS:
        ratio = headline.get(f"{kind}_vs_strict")
        targets.append(dict(name=f"rgroup C4 L={s['num_banks']} {kind} vs gconv C4", kind=kind,
                            limit=limit, ratio=ratio,
                            passed=None if ratio is None else ratio <= limit))
    s["grid"] = list(s["grid"])
    s.update(train_steps=TRAIN_STEPS, rollout_steps=ROLLOUT_STEPS, rollout_batch=1, alpha=ALPHA)
    s["sim_batches"] = list(s["sim_batches"])
    return dict(machine=machine, settings=s, results=results,
                targets=targets if measured_zoo else [], simulation=simulation)


# --------------------------------------------------------------------------------------------
# report


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """The report as a readable table, with the machine, the settings and the target checks."""
    m, s = report["machine"], report["settings"]
    lines = [
        f"torch {m['torch']} | python {m['python']} | device {m['device']} ({m['device_name']}) | "
        f"CPU threads {m['torch_threads']} of {m['cpu_count']}",
        f"grid {s['grid'][0]}x{s['grid'][1]}, in_frames {s['in_frames']}, "
        f"hidden {s['hidden_dim']}, layers {s['num_layers']}, kernel {s['kernel_size']}, "
        f"{s['dtype']}; median of {s['repeats']} interleaved rounds (samples of ~"
        f"{s['sample_seconds']:g} s) after {s['warmup']} warmup",
        f"train: batch {s['batch']}, {s['train_steps']}-step rollout + penalty + Adam step; "
        f"rollout: {s['rollout_steps']} steps, batch {s['rollout_batch']}, eval, no_grad",
        "",
    ]
    if not any("epoch_s" not in r for r in report["results"]):
        lines = lines[:1]
    head = ("model", "group", "L", "params", "train ms", "rollout ms", "strict", "train/strict",
            "roll/strict", "train/conv", "roll/conv")
    rows = []
    for r in report["results"]:
        if "epoch_s" in r:
            continue  # the published configurations get their own table below
        rows.append((r["model"], str(r["group"]), str(r["num_banks"]), _fmt(r["params"], ","),
                     _fmt(r["train_ms"], ".1f"), _fmt(r["rollout_ms"], ".1f"), r["strict"] or "-",
                     _fmt(r["train_vs_strict"], ".2f"), _fmt(r["rollout_vs_strict"], ".2f"),
                     _fmt(r["train_vs_conv"], ".2f"), _fmt(r["rollout_vs_conv"], ".2f")))
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(head)]
    left = {0, 1, 6}  # text columns

    def line(cells):
        return "  ".join(c.ljust(wd) if i in left else c.rjust(wd)
                         for i, (c, wd) in enumerate(zip(cells, widths))).rstrip()

    if rows:
        lines += [line(head), line(["-" * wd for wd in widths]), *map(line, rows)]
    errors = [r for r in report["results"] if "error" in r]
    if errors:
        lines += ["", *(f"{r['model']}: {r['error']}" for r in errors)]
    lines.append("")
    for t in report["targets"] if rows else []:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["passed"]]
        lines.append(f"{verdict} {t['name']}: {_fmt(t['ratio'], '.2f')}x (target <= "
                     f"{t['limit']}x)")
    paper = [r for r in report["results"] if "epoch_s" in r]
    if paper:
        lines += ["", "published configurations (per training iteration; epoch = default rotation "
                  "dataset, 4480 windows):",
                  "model                     prec  hidden  batch  train ms  rollout ms  epoch s  "
                  "published H200 train/rollout ms"]
        for r in paper:
            pub = f"{r['published_h200_train_ms']:g}" + (
                f" / {r['published_h200_rollout_ms']:g}" if r["published_h200_rollout_ms"] else "")
            lines.append(f"{r['model'].removesuffix('+bf16'):<25} {r['precision']:<5} "
                         f"{r['hidden_dim']:>6}  {r['batch']:>5}  {r['train_ms']:>8.1f}  "
                         f"{r['rollout_ms']:>10.1f}  {r['epoch_s']:>7.1f}  {pub}")
    found = report.get("discovery")
    if found:
        lines += ["", "discover (default protocol, whole call: null, seeds, training, readout):",
                  "case            grid  steps  sims  seeds  seconds  peak MB  verdict"]
        for r in found["rows"]:
            lines.append(f"{r['case']:<15} {r['grid']:>4}  {r['steps']:>5}  {r['sims']:>4}  "
                         f"{r['seeds']:>5}  {r['seconds']:>7.0f}  {r['peak_rss_mb']:>7.0f}  "
                         f"{'broken' if r['broken'] else 'not broken'} "
                         f"({r['significance']:.2f})")
    sim = report.get("simulation")
    if sim:
        lines += ["", f"simulator, {sim['grid']}x{sim['grid']}:",
                  "batch  steps  sim-steps/s  ms/step  speed-up vs batch 1"]
        for r in sim["rows"]:
            lines.append(f"{r['batch']:>5}  {r['steps']:>5}  {r['sim_steps_per_s']:>11.0f}  "
                         f"{r['ms_per_step']:>7.2f}  {r['speedup_vs_batch1']:>8.1f}x")
        t = sim["target"]
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["passed"]]
        limit = "-" if t["limit_s"] is None else f"{t['limit_s']:g} s"
        lines.append(f"{verdict} {t['name']}: {sim['rotation_scenario_s']:.1f} s "
                     f"(target <= {limit})")
    return "\n".join(lines)

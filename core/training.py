"""Trainer: the paper's protocol, done carefully.

Loss per batch: ``sum_{t=1..train_steps} MSE(prediction_t, target_t) + model.penalty()``, where
predictions roll out autoregressively (each prediction replaces the oldest input frame) and the
penalty is ``alpha * R`` on every device (never squared, never skipped). Adam with weight decay,
the learning rate multiplied by ``lr_decay`` after each epoch, early stopping on the validation
RMSE of the same rollout with a *copy* of the best weights (never a reference to the live model).

Safety: a cancellation token is checked before every batch; a NaN/inf loss stops training with
:class:`TrainingDiverged`, whose ``result`` holds the last good weights (those at the end of the
last finite epoch, or the initial ones). On the CPU torch threads are capped (default: all cores
but one) so a server beside the training stays responsive. On CUDA the forward pass runs under
bf16 autocast (``amp=True``); losses are accumulated in float32.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch
import torch.nn.functional as F
import xarray as xr

from .datasets import DatasetError, WindowDataset
from .devices import resolve_device
from .errors import SpecError
from .models import build_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``result`` keeps the last good weights."""

    def __init__(self, message: str, result: "TrainResult"):
        super().__init__(message)
        self.result = result


class CancelToken:
    """Set from any thread (or by a callback) to stop training before the next batch."""

    def __init__(self):
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled


TRAIN_PARAMS = ("all", "shared", "relaxed")


@dataclass
class TrainConfig:
    """Training settings; every field is JSON-friendly and stored with a run."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-6
    lr_decay: float = 0.95  # per epoch
    train_steps: int = 6  # autoregressive steps in the loss
    patience: int = 5  # epochs without a better validation RMSE before stopping
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA only
    threads: int | None = None  # CPU threads; None = all cores but one, 0 = torch's default
    batches_per_epoch: int | None = None  # cap (random subset each epoch) for quick runs
    valid_samples: int | None = 512  # cap on validation windows (evenly spaced), None = all
    orbit_batches: bool = False  # batches of whole group orbits (see Trainer)
    relaxed_lr: float | None = None  # learning rate of the relaxed weights; None = lr
    train_params: str = "all"  # "all", "shared" (relaxed weights frozen) or "relaxed" (only them)
    init_weights: str | None = None  # a run folder or .safetensors file to start from

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(known))}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "train_steps", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.relaxed_lr is not None and not (isinstance(self.relaxed_lr, (int, float))
                                                and math.isfinite(self.relaxed_lr)
                                                and self.relaxed_lr > 0):
            raise ValueError(f"relaxed_lr must be None or a positive number, got "
                             f"{self.relaxed_lr!r}")
        if self.train_params not in TRAIN_PARAMS:
            raise ValueError(f"train_params must be one of {', '.join(TRAIN_PARAMS)}, got "
                             f"{self.train_params!r}")
        if self.init_weights is not None and not isinstance(self.init_weights, str):
            raise ValueError(f"init_weights must be None or a path, got {self.init_weights!r}")
        for name in ("batches_per_epoch", "valid_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the best and last weights (CPU copies), the per-epoch
    history and why it stopped ("done", "early_stop", "cancelled", "diverged")."""

    best_state: dict
    last_state: dict
    best_epoch: int | None
    best_valid_rmse: float
    history: list[dict] = field(default_factory=list)
    stopped: str = "done"
    device: str = "cpu"

    def history_dataset(self) -> xr.Dataset:
        """Per-epoch history as an xarray Dataset over ``epoch``."""
        if not self.history:
            return xr.Dataset(coords={"epoch": []})
        keys = [k for k in self.history[0] if k != "epoch"]
        return xr.Dataset({k: ("epoch", [h[k] for h in self.history]) for k in keys},
                          coords={"epoch": [h["epoch"] for h in self.history]})


def _state_copy(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def _slide(window: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Drop the oldest (u, v) frame of the input stack and append the newest prediction."""
    return torch.cat([window[:, 2:], frame], 1)


class Trainer:
    """Train the model described by ``spec`` (a :func:`core.models.build_model` spec) on ``ds``.

    ``orbit_batches``: on data whose sims form group orbits (rotation, levels), every batch holds
    whole orbits (all members at the same start time). On exactly symmetric data the gradient of
    the relaxed weights is then symmetric at every step, so they stay symmetric up to rounding:
    relaxation breaks symmetry only where the data does.

    Callbacks: ``on_batch(info)`` after every batch with epoch, batch, batches, loss;
    ``on_epoch(info)`` after every epoch with the history row plus best_epoch and eta_seconds.
    Either may call ``cancel()`` on the token.
    """

    def __init__(self, spec: dict, ds: xr.Dataset, config: TrainConfig | dict | None = None,
                 *, on_batch: Callable[[dict], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None,
                 cancel: CancelToken | None = None):
        self.config = (config if isinstance(config, TrainConfig)
                       else TrainConfig.from_dict(config or {}))
        self.config.validate()
        self.spec = dict(spec)
        self.on_batch, self.on_epoch = on_batch, on_epoch
        self.cancel = cancel or CancelToken()
        self.result: TrainResult | None = None
        self.device = resolve_device(self.config.device)
        in_frames = self.spec.get("in_frames", 10)
        self.train_set = WindowDataset(ds, "train", in_frames, self.config.train_steps)
        self.valid_set = WindowDataset(ds, "valid", in_frames, self.config.train_steps)
        for name, subset in (("train", self.train_set), ("valid", self.valid_set)):
            if len(subset) == 0:
                raise DatasetError(f"the {name} split has no windows of {in_frames} input and "
                                   f"{self.config.train_steps} target frames; use more time "
                                   f"steps or fewer frames")
        grid = list(ds["velocity"].shape[-2:])
        if self.spec.get("grid") is not None and list(self.spec["grid"]) != grid:
            raise DatasetError(f"model grid {self.spec['grid']} does not match the dataset's "
                               f"{grid}")
        self.spec["grid"] = grid
        self.orbits = ds["orbit"].values if "orbit" in ds.coords else None
        torch.manual_seed(self.config.seed)
        self.model = build_model(**self.spec)
        if self.config.init_weights:
            from .runs import load_initial_weights
            try:
                self.model.load_state_dict(load_initial_weights(self.config.init_weights))
            except RuntimeError as err:
                raise ValueError(f"init_weights {self.config.init_weights}: does not fit the "
                                 f"model ({err})") from None
        self.model = self.model.to(self.device)

    def _batch_units(self) -> list[list[int]]:
        """Training window indices grouped into the units a batch is made of: single windows,
        or whole orbits at one start time when ``orbit_batches`` is on."""
        data = self.train_set
        if not self.config.orbit_batches:
            return [[i] for i in range(len(data))]
        if self.orbits is None:
            raise DatasetError("orbit_batches needs a dataset whose sims form orbits "
                               "(coordinate 'orbit'), e.g. the rotation or levels scenario")
        n_starts = len(data.starts)
        members: dict[int, list[int]] = {}
        for k, sim in enumerate(data.sims):
            members.setdefault(int(self.orbits[sim]), []).append(k)
        return [[k * n_starts + t for k in ks] for ks in members.values() for t in range(n_starts)]

    def _valid_rmse(self) -> float:
        """RMSE of the ``train_steps`` rollout over (evenly spaced) validation windows."""
        n = len(self.valid_set)
        cap = self.config.valid_samples
        picks = range(n) if cap is None or cap >= n else [round(i * (n - 1) / max(1, cap - 1))
                                                          for i in range(cap)]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.valid_set, list(picks)),
                                             batch_size=max(self.config.batch_size, 16))
        total, count = 0.0, 0
        self.model.eval()
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(self.device), y.to(self.device)
                for t in range(y.shape[1]):
                    with self._autocast():
                        pred = self.model(x).float()
                    total += float(((pred - y[:, t]) ** 2).sum())
                    count += pred.numel()
                    x = _slide(x, pred.to(x.dtype))
        self.model.train()
        return math.sqrt(total / count)

    def _autocast(self):
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fit(self) -> TrainResult:
        cfg = self.config
        threads_before = torch.get_num_threads()
        if self.device.type == "cpu" and cfg.threads != 0:
            torch.set_num_threads(cfg.threads or default_threads())
        try:
            return self._fit()
        finally:
            torch.set_num_threads(threads_before)

    def _param_groups(self) -> list[dict]:
        """Adam parameter groups: the shared parameters at ``lr``, the relaxed weights at
        ``relaxed_lr``; ``train_params`` freezes one kind (``requires_grad`` off)."""
        cfg = self.config
        relaxed_ids = {id(p) for p in self.model.relaxed_weights().values()}
        params = list(self.model.parameters())
        relaxed = [p for p in params if id(p) in relaxed_ids]
        shared = [p for p in params if id(p) not in relaxed_ids]
        if cfg.train_params == "relaxed" and not relaxed:
            raise SpecError(f"train_params='relaxed' needs a model with relaxed weights; "
                            f"{self.spec['name']} has none")
        groups = []
        for kind, ps, lr in (("shared", shared, cfg.lr),
                             ("relaxed", relaxed, cfg.relaxed_lr or cfg.lr)):
            train = cfg.train_params in ("all", kind)
            for p in ps:
                p.requires_grad_(train)
            if train and ps:
                groups.append(dict(params=ps, lr=lr, name=kind))
        return groups

    def _fit(self) -> TrainResult:
        cfg, model = self.config, self.model
        optimizer = torch.optim.Adam(self._param_groups(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        units = self._batch_units()
        per_batch = max(1, cfg.batch_size // len(units[0]))
        n_batches = math.ceil(len(units) / per_batch)
        if cfg.batches_per_epoch:
            n_batches = min(n_batches, cfg.batches_per_epoch)
        good = _state_copy(model)
        # kept on the trainer so callbacks can read the history while training runs
        self.result = result = TrainResult(best_state=good, last_state=good, best_epoch=None,
                                           best_valid_rmse=math.inf, device=str(self.device))
        stale, started = 0, time.perf_counter()
        model.train()
        for epoch in range(1, cfg.epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(len(units), generator=generator).tolist()
            sums = dict(loss=0.0, mse=0.0, penalty=0.0)
            for b in range(n_batches):
                if self.cancel.cancelled:
                    result.last_state, result.stopped = _state_copy(model), "cancelled"
                    return result
                idx = [i for u in order[b * per_batch:(b + 1) * per_batch] for i in units[u]]
                x = torch.stack([self.train_set[i][0] for i in idx]).to(self.device)
                y = torch.stack([self.train_set[i][1] for i in idx]).to(self.device)
                mse = 0.0
                for t in range(cfg.train_steps):
                    with self._autocast():
                        pred = model(x).float()
                    mse = mse + F.mse_loss(pred, y[:, t])
                    x = _slide(x, pred.to(x.dtype))
                penalty = model.penalty()
                loss = mse + penalty
                if not torch.isfinite(loss):
                    result.last_state, result.stopped = good, "diverged"
                    raise TrainingDiverged(
                        f"loss became {float(loss)} at epoch {epoch}, batch {b + 1}; kept the "
                        f"weights from {'epoch ' + str(epoch - 1) if epoch > 1 else 'the start'}",
                        result)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums["loss"] += float(loss.detach())
                sums["mse"] += float(mse.detach())
                sums["penalty"] += float(penalty.detach())
                if self.on_batch is not None:
                    self.on_batch(dict(epoch=epoch, batch=b + 1, batches=n_batches,
                                       loss=float(loss.detach())))
            valid = self._valid_rmse()
            if not math.isfinite(valid):
                result.last_state, result.stopped = good, "diverged"
                raise TrainingDiverged(f"validation RMSE became {valid} at epoch {epoch}", result)
            good = _state_copy(model)
            row = dict(epoch=epoch, train_loss=sums["loss"] / n_batches,
                       train_mse=sums["mse"] / n_batches, penalty=sums["penalty"] / n_batches,
                       valid_rmse=valid, lr=optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - epoch_start)
            result.history.append(row)
            if valid < result.best_valid_rmse:
                result.best_valid_rmse, result.best_epoch, result.best_state = valid, epoch, good
                stale = 0
            else:
                stale += 1
            result.last_state = good
            scheduler.step()
            if self.on_epoch is not None:
                elapsed = time.perf_counter() - started
                self.on_epoch(dict(row, best_epoch=result.best_epoch, epochs=cfg.epochs,
                                   eta_seconds=elapsed / epoch * (cfg.epochs - epoch)))
            if stale >= cfg.patience:
                result.stopped = "early_stop"
                return result
        return result


def train(spec: dict, ds: xr.Dataset, config: TrainConfig | dict | None = None, **callbacks):
    """Build a :class:`Trainer`, fit, and return ``(model with the best weights, result)``."""
    trainer = Trainer(spec, ds, config, **callbacks)
    result = trainer.fit()
    trainer.model.load_state_dict(result.best_state)
    trainer.model.eval()
    return trainer.model, result


__all__ = ["Trainer", "TrainConfig", "TrainResult", "TrainingDiverged", "CancelToken", "train",
           "default_threads"]

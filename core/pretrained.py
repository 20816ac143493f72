"""The shipped pretrained runs (data/pretrained/): recipes and the command that trains them.

`make pretrained` (``python -m core pretrain``) trains, on the default datasets (`make data`),
the models the dashboard opens with: on rotation conv, gconv (C4), rgroup (C4, 2 banks), steer
(C4) and rsteer (C4); on translation conv and rgroup (translation, 2 banks). Budgets are sized
for a 2-core CPU (under 15 minutes in all): 10 epochs of 30 batches of 8 windows, hidden width 24,
4 layers. Shipped runs record their dataset as ``data/NAME.nc`` relative to the project root.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .datasets import load_dataset
from .files import atomic_write_json
from .jobs import execute_run
from .runs import PROJECT_ROOT, SPEC_FILE, RunStore

SIZES = dict(in_frames=10, hidden_dim=24, num_layers=4, kernel_size=3)
TRAINING = dict(epochs=10, batch_size=8, batches_per_epoch=30, lr=2e-3, valid_samples=128,
                seed=0, device="cpu")
RECIPES = [  # (run id, dataset, model, group, banks, alpha)
    ("rotation-conv", "rotation", "conv", "translation", 1, 0.0),
    ("rotation-gconv-C4", "rotation", "gconv", "C4", 1, 0.0),
    ("rotation-rgroup-C4", "rotation", "rgroup", "C4", 2, 1e-3),
    ("rotation-steer-C4", "rotation", "steer", "C4", 1, 0.0),
    ("rotation-rsteer-C4", "rotation", "rsteer", "C4", 1, 1e-3),
    ("translation-conv", "translation", "conv", "translation", 1, 0.0),
    ("translation-rgroup", "translation", "rgroup", "translation", 2, 1e-3),
]


def pretrain(out: str | Path, data_dir: str | Path = PROJECT_ROOT / "data", *, force=False,
             say: Callable[[str], None] = print) -> list[str]:
    """Train every recipe missing from ``out`` (all with ``force``); returns the run ids."""
    store = RunStore(out)
    data_dir = Path(data_dir)
    loaded = {}
    done = []
    for run_id, data, name, group, banks, alpha in RECIPES:
        if run_id in store:
            if not force and store.get(run_id).status().get("state") == "done":
                say(f"{run_id}: already trained")
                done.append(run_id)
                continue
            store.delete(run_id)
        path = data_dir / f"{data}.nc"
        if data not in loaded:
            loaded[data] = load_dataset(path)
        ds = loaded[data]
        model = dict(name=name, group=group, num_banks=banks, alpha=alpha,
                     grid=list(ds["velocity"].shape[-2:]), **SIZES)
        run = store.create(model, TRAINING, str(path), run_id=run_id)
        start = time.perf_counter()
        state = execute_run(run.path, ds=ds)
        status = run.status()
        say(f"{run_id}: {state} in {time.perf_counter() - start:.0f} s "
            f"({status.get('message') or status.get('error')})")
        try:  # ship a path that works in any clone
            relative = path.resolve().relative_to(PROJECT_ROOT)
        except ValueError:
            relative = None
        if relative is not None:
            spec = dict(run.spec, dataset=dict(run.spec["dataset"], path=str(relative)))
            atomic_write_json(run.path / SPEC_FILE, spec)
        done.append(run_id)
    return done

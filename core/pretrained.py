"""The shipped pretrained runs and discoveries (data/pretrained/): recipes and the command.

`make pretrained` (``python -m core pretrain``) trains, on the default datasets (`make data`),
the models the dashboard opens with: on rotation conv, gconv (C4), rgroup (C4, 2 banks), steer
(C4) and rsteer (C4); on translation conv and rgroup (translation, 2 banks). Budgets are sized
for a 2-core CPU: 10 epochs of 30 batches of 8 windows, hidden width 24, 4 layers. The relaxed
runs use the settings that let relaxed weights learn breaking at such budgets (a learning rate
of their own; orbit batches for rotations; the total-variation penalty for translation).

It then runs the shipped discoveries (:mod:`core.discovery`, default protocol, three seeds) on
the two 32x32 discovery datasets (`make data`): the rotation plumes with the top inflow 40 %
stronger (breaking 4) and the translation plumes with a twice as buoyant right half (breaking
1), into ``data/pretrained/discoveries/``. About 20 minutes in all on a 2-core CPU.

Shipped files record datasets as ``data/NAME.nc`` relative to the project root; the discoveries'
constructed nulls (tens of MB, rebuilt on demand by the same functions) and logs are not kept.
"""
from __future__ import annotations

import shutil
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
RECIPES = [  # (run id, dataset, model, group, banks, alpha, extra training settings)
    ("rotation-conv", "rotation", "conv", "translation", 1, 0.0, {}),
    ("rotation-gconv-C4", "rotation", "gconv", "C4", 1, 0.0, {}),
    ("rotation-rgroup-C4", "rotation", "rgroup", "C4", 2, 1e-3,
     dict(orbit_batches=True, relaxed_lr=0.02)),
    ("rotation-steer-C4", "rotation", "steer", "C4", 1, 0.0, {}),
    ("rotation-rsteer-C4", "rotation", "rsteer", "C4", 1, 1e-3, dict(relaxed_lr=0.02)),
    ("translation-conv", "translation", "conv", "translation", 1, 0.0, {}),
    ("translation-rgroup", "translation", "rgroup", "translation", 2, 1.0,
     dict(relaxed_lr=0.06)),
]
DISCOVERIES = [("discover-rotation", "C4"), ("discover-translation", "translation")]


def pretrain(out: str | Path, data_dir: str | Path = PROJECT_ROOT / "data", *, force=False,
             say: Callable[[str], None] = print) -> list[str]:
    """Train every recipe missing from ``out`` (all with ``force``); returns the run ids."""
    store = RunStore(out)
    data_dir = Path(data_dir)
    loaded = {}
    done = []
    for run_id, data, name, group, banks, alpha, extra in RECIPES:
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
        run = store.create(model, dict(TRAINING, **extra), str(path), run_id=run_id)
        start = time.perf_counter()
        state = execute_run(run.path, ds=ds)
        status = run.status()
        say(f"{run_id}: {state} in {time.perf_counter() - start:.0f} s "
            f"({status.get('message') or status.get('error')})")
        _relative_dataset(run)
        done.append(run_id)
    done += discoveries(out, data_dir, force=force, say=say)
    return done


def _relative(path: str | Path) -> str:
    """``path`` relative to the project root when it is inside it (paths that work in any
    clone), else unchanged."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _relative_dataset(run) -> None:
    spec = dict(run.spec, dataset=dict(run.spec["dataset"], path=_relative(run.spec["dataset"]["path"])))
    atomic_write_json(run.path / SPEC_FILE, spec)


def discoveries(out: str | Path, data_dir: str | Path = PROJECT_ROOT / "data", *, force=False,
                seeds: int = 3, say: Callable[[str], None] = print) -> list[str]:
    """Run the shipped discoveries missing from ``out`` (all with ``force``); returns their ids."""
    import json

    from .discovery import DiscoveryStore, discover

    records = DiscoveryStore(out)
    present = {r["data"]: r for r in records.list() if r.get("state") == "done"}
    done = []
    for name, group in DISCOVERIES:
        path = Path(data_dir) / f"{name}.nc"
        if f"{name}.nc" in present and not force:
            say(f"discovery on {name}: already done")
            done.append(present[f"{name}.nc"]["id"])
            continue
        for row in records.list():
            if row.get("data") == f"{name}.nc":
                shutil.rmtree(records.root / row["id"])
        start = time.perf_counter()
        evidence = discover(path, group, seeds=seeds, runs=out)
        record = records.get(evidence.attrs["discovery"])
        say(f"discovery on {name}: {'broken' if evidence.attrs['broken'] else 'not broken'} "
            f"(significance {evidence.attrs['significance']:.3g}) in "
            f"{time.perf_counter() - start:.0f} s")
        # ship only what a clone needs, with paths that work in it
        for run in record.runs.runs():
            _relative_dataset(run)
            (run.path / "worker.log").unlink(missing_ok=True)
        (record.path / "null.nc").unlink(missing_ok=True)
        (record.path / "driver.log").unlink(missing_ok=True)
        request = dict(record.request, data=_relative(record.request["data"]))
        atomic_write_json(record.path / "request.json", request)
        evidence.attrs.update(data=_relative(evidence.attrs["data"]),
                              null_path=_relative(evidence.attrs["null_path"]),
                              run_store=_relative(evidence.attrs["run_store"]))
        evidence.to_netcdf(record.path / "evidence.nc", engine="h5netcdf")
        result = json.loads((record.path / "result.json").read_text())
        result.update(data=evidence.attrs["data"], run_store=evidence.attrs["run_store"])
        atomic_write_json(record.path / "result.json", result)
        done.append(record.id)
    return done

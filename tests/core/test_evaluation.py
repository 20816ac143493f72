"""Evaluation artifacts: exact round trips, keyed by weights and dataset, computed once, damage
and deletion handled."""
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from core import build_model
from core import evaluation as ev
from core.analysis import breaking_analysis
from core.datasets import generate, load_dataset, read_frames, save_dataset
from core.evaluation import EvaluationError, artifact_path, evaluation, precompute
from core.runs import RunError, RunStore

ROOT = Path(__file__).resolve().parents[2]
SPEC = dict(name="rgroup", group="C4", in_frames=2, hidden_dim=8, num_layers=2, grid=[16, 16],
            num_banks=2, alpha=0.5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.nc"
    save_dataset(generate("rotation", grid=16, steps=40, sims=8, device="cpu"), path)
    return path


def _finished_run(store, dataset, seed=0):
    run = store.create(SPEC, dict(epochs=1), dataset)
    torch.manual_seed(seed)
    model = build_model(**SPEC)
    with torch.no_grad():  # move the relaxed weights off their symmetric start
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    run.save_weights(model.state_dict())
    run.update_status(state="done", progress=1.0)
    return run


@pytest.fixture
def run(tmp_path, dataset):
    ev.clear_cache()
    return _finished_run(RunStore(tmp_path / "runs"), dataset)


def test_breaking_artifact_round_trips_exactly(run):
    stored = evaluation(run, "breaking")
    assert artifact_path(run, "breaking").exists()
    fresh = breaking_analysis(run.load_model())
    for name in fresh.data_vars:
        np.testing.assert_array_equal(stored[name].values, fresh[name].values)
    ev.clear_cache()  # read back from the file, not the process cache
    again = evaluation(run, "breaking")
    assert again.attrs["evaluation_pid"] == stored.attrs["evaluation_pid"]
    xr.testing.assert_identical(again.drop_attrs(), stored.drop_attrs())


def test_rollout_artifact_is_the_models_own_rollout(run, dataset):
    ro = evaluation(run, "rollout")
    model = run.load_model().eval()
    k, start, sim = ro.attrs["in_frames"], int(ro.attrs["start"]), int(ro.attrs["sim"])
    frames = read_frames(dataset, sim, start, k + ro.sizes["step"])
    np.testing.assert_array_equal(ro["truth"].values, frames[k:])
    window = torch.from_numpy(frames[:k]).reshape(1, 2 * k, 16, 16)
    with torch.no_grad():
        first = model(window)[0].numpy()
    np.testing.assert_allclose(ro["prediction"].values[0].reshape(first.shape), first,
                               rtol=1e-6, atol=1e-7)
    rmse = np.sqrt(((ro["prediction"] - ro["truth"]) ** 2).mean(("component", "y", "x")))
    np.testing.assert_allclose(ro["rmse"].values, rmse.values, rtol=1e-6)


def test_new_weights_or_a_regenerated_dataset_are_never_served_stale(tmp_path, run, dataset):
    before = evaluation(run, "breaking")
    old_name = artifact_path(run, "breaking")
    model = run.load_model()
    with torch.no_grad():
        for p in model.parameters():  # a score is a ratio: rescaling would not change it
            p.add_(0.1 * torch.randn_like(p))
    run.save_weights(model.state_dict())  # "retrained"
    after = evaluation(run, "breaking")
    assert artifact_path(run, "breaking") != old_name and not old_name.exists()
    assert not np.allclose(after["breaking_score"].values, before["breaking_score"].values)

    rollout = evaluation(run, "rollout")
    regenerated = tmp_path / "copy.nc"
    changed = load_dataset(dataset)
    changed["velocity"] = changed["velocity"] * 0.5  # same layout, other content
    save_dataset(changed, regenerated)
    shutil.copyfile(dataset, tmp_path / "original.nc")
    try:
        shutil.copyfile(regenerated, dataset)
        fresh = evaluation(run, "rollout")
        assert not np.array_equal(fresh["truth"].values, rollout["truth"].values)
    finally:
        shutil.copyfile(tmp_path / "original.nc", dataset)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another runs artifact"])
def test_a_damaged_artifact_is_recomputed(tmp_path, run, dataset, damage):
    good = evaluation(run, "breaking")
    path = artifact_path(run, "breaking")
    if damage == "garbage":
        path.write_bytes(b"not netcdf at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid file whose attributes belong to another run's weights
        other = _finished_run(RunStore(tmp_path / "other"), dataset, seed=5)
        evaluation(other, "breaking")
        shutil.copyfile(artifact_path(other, "breaking"), path)
    ev.clear_cache()
    again = evaluation(run, "breaking")
    np.testing.assert_array_equal(again["breaking_score"].values, good["breaking_score"].values)
    ev.clear_cache()
    assert evaluation(run, "breaking").attrs["evaluation_weights"] == path.name.split("-")[1]


def test_concurrent_requests_compute_once(run, monkeypatch):
    calls = []
    needs, compute = ev.KINDS["breaking"]

    def counted(r, d):
        calls.append(threading.get_ident())
        return compute(r, d)

    monkeypatch.setitem(ev.KINDS, "breaking", (needs, counted))
    results = [None] * 6
    barrier = threading.Barrier(6)

    def ask(i):
        barrier.wait()
        results[i] = evaluation(run, "breaking")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({r.attrs["evaluation_seconds"] for r in results}) == 1


def _evaluate_in_child(path, queue):
    from core import evaluation as child_ev
    from core.runs import Run

    queue.put(int(child_ev.evaluation(Run.open(path), "rollout").attrs["evaluation_pid"]))


def test_two_processes_compute_once(run):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    children = [ctx.Process(target=_evaluate_in_child, args=(str(run.path), queue))
                for _ in range(2)]
    for c in children:
        c.start()
    pids = {queue.get(timeout=120) for _ in children}
    for c in children:
        c.join(timeout=60)
    assert len(pids) == 1 and pids <= {c.pid for c in children}
    assert len(list((run.path / "evaluation").glob("rollout-*.nc"))) == 1


def test_missing_dataset_and_deleted_run_say_so(tmp_path, dataset):
    ev.clear_cache()
    moved = tmp_path / "elsewhere.nc"
    shutil.copyfile(dataset, moved)
    store = RunStore(tmp_path / "runs")
    run = _finished_run(store, moved)
    moved.unlink()
    with pytest.raises(EvaluationError, match="elsewhere.nc"):
        evaluation(run, "rollout")
    assert evaluation(run, "breaking") is not None  # needs no dataset
    store.delete(run.id)
    with pytest.raises(RunError):
        evaluation(run, "breaking")
    with pytest.raises(ValueError, match="unknown evaluation kind"):
        evaluation(run, "nonsense")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder_serves_from_memory(run):
    os.chmod(run.path, 0o555)
    try:
        assert evaluation(run, "breaking") is not None
        assert not (run.path / "evaluation").exists()
    finally:
        os.chmod(run.path, 0o755)


def test_precompute_computes_then_confirms(tmp_path, dataset):
    ev.clear_cache()
    store = RunStore(tmp_path / "runs")
    runs = [_finished_run(store, dataset, seed=s) for s in range(2)]
    queued = store.create(SPEC, dict(epochs=1), dataset)  # unfinished: left alone
    first = precompute(store.runs(), say=lambda _line: None)
    assert {(r["run"], r["kind"]) for r in first} == {(r.id, k) for r in runs for k in ev.KINDS}
    assert {r["state"] for r in first} == {"computed"}
    assert not (queued.path / "evaluation").exists()
    assert {r["state"] for r in precompute(store.runs(), say=lambda _l: None)} == {"ready"}


def test_precompute_command(tmp_path, dataset):
    store = RunStore(tmp_path / "runs")
    _finished_run(store, dataset)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "core", "precompute", str(store.root)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 analyses: 2 computed" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "core", "precompute", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "no run store" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "core", "precompute", str(store.root), "--kinds",
                          "flows"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert bad.returncode == 2 and "flows" in bad.stderr

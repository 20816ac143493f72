"""Jobs: local worker processes, a real Dask LocalCluster on loopback, cancel, recovery, CLI."""
import json
import socket
import subprocess
import sys
import time

import pytest

from core.__main__ import main
from core.analysis import breaking_analysis
from core.datasets import generate, save_dataset
from core.jobs import JobManager, execute_run
from core.runs import RunStore
from core.training import train

MODEL = dict(name="rgroup", group="C4", in_frames=3, hidden_dim=8, num_layers=2, num_banks=2,
             alpha=0.01, grid=[12, 12])
TRAINING = dict(epochs=2, batch_size=4, batches_per_epoch=4, valid_samples=8, threads=1,
                device="cpu")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "r.nc"
    save_dataset(generate("rotation", grid=12, steps=80, sims=8, device="cpu"), path)
    return path


def test_execute_run_records_everything(tmp_path, data_path):
    run = RunStore(tmp_path).create(MODEL, TRAINING, str(data_path))
    assert execute_run(run.path) == "done"
    status = run.status()
    assert status["state"] == "done" and status["progress"] == 1.0
    metrics = run.read_metrics()
    assert list(metrics["epoch"].values) == [1, 2]
    for key in ("future_rmse", "domain_rmse", "equivariance_error", "breaking_score"):
        assert key in metrics, key
    assert (run.path / "weights.safetensors").exists() and (run.path / "last.safetensors").exists()
    assert run.load_model().spec["name"] == "rgroup"


def test_local_manager_runs_in_a_subprocess_that_others_can_watch(tmp_path, data_path):
    manager = JobManager(tmp_path, poll=0.1)
    try:
        run_id = manager.submit(MODEL, dict(TRAINING, epochs=3), data_path)
        deadline = time.time() + 60
        while manager.status(run_id)["state"] == "queued" and time.time() < deadline:
            time.sleep(0.1)
        # another process reads the same store
        code = ("import json, sys; from core.runs import RunStore; "
                f"print(json.dumps(RunStore({str(tmp_path)!r}).get({run_id!r}).status()))")
        seen = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                         text=True, check=True).stdout)
        assert seen["state"] in ("running", "done")
        final = manager.wait(run_id, timeout=120)
        assert final["state"] == "done", final
        assert final["pid"] != __import__("os").getpid(), "trained in another process"
    finally:
        manager.shutdown()


def test_cancel_running_and_queued_jobs(tmp_path, data_path):
    manager = JobManager(tmp_path, poll=0.1, max_cpu_jobs=1)
    try:
        long = dict(TRAINING, epochs=200, batches_per_epoch=50)
        first = manager.submit(MODEL, long, data_path)
        second = manager.submit(MODEL, long, data_path)  # waits: one CPU job at a time
        deadline = time.time() + 60
        while manager.status(first).get("epoch") is None and time.time() < deadline:
            time.sleep(0.1)
        assert manager.status(second)["state"] == "queued"
        manager.cancel(second)
        assert manager.status(second)["state"] == "cancelled"
        manager.cancel(first)
        final = manager.wait(first, timeout=60)
        assert final["state"] == "cancelled"
        assert (manager.store.get(first).path / "last.safetensors").exists()
        time.sleep(0.5)
        assert manager.status(second)["state"] == "cancelled", "a cancelled job never starts"
    finally:
        manager.shutdown()


def test_cpu_workers_yield_to_the_process_that_started_them(tmp_path, data_path):
    """A local CPU job runs CPU_WORKER_NICE steps nicer than its manager (so a server training
    on its own cores answers users first); cpu_nice=0 keeps the manager's priority."""
    import os

    from core.jobs import CPU_WORKER_NICE

    own = os.getpriority(os.PRIO_PROCESS, 0)
    for cpu_nice, expected in ((CPU_WORKER_NICE, min(19, own + CPU_WORKER_NICE)), (0, own)):
        manager = JobManager(tmp_path / str(cpu_nice), poll=0.1, cpu_nice=cpu_nice)
        try:
            run_id = manager.submit(MODEL, dict(TRAINING, epochs=200, batches_per_epoch=50),
                                    data_path)
            deadline = time.time() + 60
            while manager.status(run_id).get("epoch") is None and time.time() < deadline:
                time.sleep(0.1)
            pid = manager.status(run_id)["pid"]
            assert os.getpriority(os.PRIO_PROCESS, pid) == expected
            manager.cancel(run_id)
            assert manager.wait(run_id, timeout=60)["state"] == "cancelled"
        finally:
            manager.shutdown()


def test_runs_left_running_by_a_dead_worker_are_failed_on_start(tmp_path, data_path):
    store = RunStore(tmp_path)
    run = store.create(MODEL, TRAINING, str(data_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.update_status(state="running", pid=dead.pid, host=socket.gethostname())
    manager = JobManager(store)
    manager.shutdown()
    status = run.status()
    assert status["state"] == "failed" and "died" in status["error"]


def test_dask_local_cluster_runs_a_two_point_sweep(tmp_path, data_path):
    manager = JobManager(tmp_path, scheduler="local", poll=0.2)
    try:
        assert manager.backend == "dask"
        ids = [manager.submit(dict(MODEL, alpha=a), TRAINING, data_path) for a in (0.0, 0.1)]
        for run_id in ids:
            assert manager.wait(run_id, timeout=180)["state"] == "done"
        rows = {r["id"]: r for r in manager.jobs()}
        assert {rows[i]["alpha"] for i in ids} == {0.0, 0.1}
        assert all(rows[i]["future_rmse"] is not None for i in ids)
    finally:
        manager.shutdown()


def test_cli_train_evaluate_runs(tmp_path, data_path, capsys):
    runs = str(tmp_path / "runs")
    code = main(["train", "--data", str(data_path), "--model", "rgroup", "--group", "C4",
                 "--num-banks", "2", "--hidden", "8", "--layers", "2", "--frames", "3",
                 "--epochs", "1", "--batches-per-epoch", "3", "--device", "cpu", "--runs", runs])
    assert code == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["evaluate", run_dir, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("run", "model", "future_rmse", "domain_rmse", "future_rmse_step",
                "domain_rmse_step", "equivariance_error", "equivariance_error_element",
                "breaking_score"):
        assert key in report, key
    assert len(report["future_rmse_step"]) == 20 or report["future_rmse_step"] is None
    assert main(["runs", "--runs", runs]) == 0
    assert "rgroup" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "missing.nc", "--model", "rgroup", "--group", "C4"], "no such file"),
    (["train", "--data", "DATA", "--model", "steer", "--group", "D4"], "valid groups"),
    (["train", "--data", "DATA", "--model", "rgroup", "--group", "C4", "--lr", "-1"], "lr"),
    (["evaluate", "nonexistent-run"], "nonexistent-run"),
])
def test_cli_bad_arguments(tmp_path, data_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [str(data_path) if a == "DATA" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_breaking_scores_are_zero_fresh_and_on_symmetric_data():
    symmetric = generate("rotation", grid=12, steps=40, sims=8, breaking=0.0, device="cpu")
    model, _ = train(MODEL, symmetric, dict(TRAINING, orbit_batches=True, batch_size=8))
    assert breaking_analysis(model).attrs["breaking_score"] < 1e-12
    from core.models import build_model
    assert breaking_analysis(build_model(**MODEL)).attrs["breaking_score"] < 1e-12

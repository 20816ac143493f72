"""Run store: round trips, atomic writes (including killed writers), refused pickles, damage."""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from core import SpecError, build_model
from core import files as files_module
from core.files import atomic_write, atomic_write_json, atomic_write_text, current_umask
from core.runs import Run, RunError, RunStore, dataset_fingerprint

FILES_PY = Path(files_module.__file__)
SPEC = dict(name="rgroup", group="C4", in_frames=2, hidden_dim=8, num_layers=3, grid=[12, 12],
            num_banks=2, alpha=0.5)


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data" / "smoke.nc"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(0).bytes(3 * 2**20 + 17))
    return path


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def _hidden_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _metrics(future, domain=None, extra=None):
    ds = xr.Dataset({"train_loss": ("epoch", [1.0, 0.5, 0.25]),
                     "valid_rmse": ("epoch", [0.9, 0.6, 0.4]),
                     "lr": ("epoch", [1e-3, 1e-3, 5e-4]),
                     "seconds": ("epoch", [1.5, 1.4, 1.4]),
                     "future_rmse": ((), future)},
                    coords={"epoch": [1, 2, 3]})
    ds["seconds"].attrs["units"] = "s"
    if domain is not None:
        ds["domain_rmse"] = ((), domain)
    for name, value in (extra or {}).items():
        ds[name] = ((), value)
    return ds


# ------------------------------------------------------------------------------------ files
def test_atomic_write_replaces_and_sets_permissions(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def failing(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, failing)
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


# ------------------------------------------------------------------------------------ store
def test_create_get_list_round_trip(store, dataset):
    run = store.create(SPEC, {"epochs": 3, "lr": np.float32(1e-3)}, str(dataset))
    assert re.fullmatch(r"\d{8}-\d{6}-rgroup-C4-[0-9a-f]{6}", run.id)
    assert run.path == store.root / run.id and run.root == store.root
    again = store.get(run.id)
    assert again == run
    assert again.spec["model"] == build_model(**SPEC).spec
    assert again.spec["training"] == {"epochs": 3, "lr": pytest.approx(1e-3)}
    assert again.spec["dataset"] == {"path": str(dataset.resolve()),
                                     "fingerprint": dataset_fingerprint(dataset)}
    status = again.status()
    assert status["state"] == "queued" and status["progress"] == 0
    assert sorted(os.listdir(run.path)) == ["spec.json", "status.json"]

    other = store.create(dict(name="conv", group=None, in_frames=2, hidden_dim=8, num_layers=2,
                              grid=[12, 12]), {}, dataset, run_id="second")
    rows = store.list()
    assert [r["id"] for r in rows] == [run.id, other.id]
    first = rows[0]
    assert first["model"] == "rgroup" and first["group"] == "C4" and first["num_banks"] == 2
    assert first["alpha"] == 0.5 and first["dataset"] == "smoke.nc"
    assert first["state"] == "queued" and first["progress"] == 0 and first["error"] is None
    assert first["created"] == run.spec["created"]
    assert first["future_rmse"] is None and first["equivariance_error"] is None
    assert rows[1]["group"] is None
    assert other.id in store and "nope" not in store and "../x" not in store
    with pytest.raises(RunError, match="already exists"):
        store.create(SPEC, {}, dataset, run_id="second")


def test_dataset_fingerprint_reads_ends_and_size(tmp_path, dataset):
    fp = dataset_fingerprint(dataset)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    data = bytearray(dataset.read_bytes())
    data[-1] ^= 1
    changed = tmp_path / "changed.nc"
    changed.write_bytes(bytes(data))
    assert dataset_fingerprint(changed) != fp
    data[-1] ^= 1
    data[2 * 2**20] ^= 1  # the middle is not read: that is what keeps large files fast
    changed.write_bytes(bytes(data))
    assert dataset_fingerprint(changed) == fp
    changed.write_bytes(bytes(data) + b"\0")
    assert dataset_fingerprint(changed) != fp


def test_spec_round_trip_rebuilds_identical_model(store, dataset):
    torch.manual_seed(0)
    model = build_model(**SPEC)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    run = store.create(model.spec, {}, dataset)
    run.save_weights(model.state_dict())
    run.save_weights(build_model(**SPEC).state_dict(), which="last")

    loaded = store.get(run.id).load_model()
    assert not loaded.training
    assert loaded.spec == model.spec
    x = torch.randn(2, 4, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
        assert not torch.equal(run.load_model("last")(x), loaded(x))
    weights = run.load_weights()
    assert weights.keys() == model.state_dict().keys()
    assert all(t.device.type == "cpu" for t in weights.values())


def test_save_weights_handles_shared_and_strided_tensors(store, dataset):
    run = store.create(SPEC, {}, dataset)
    base = torch.arange(12.0).reshape(3, 4)
    run.save_weights({"a": base, "tied": base, "t": base.t(), "row": base[1]}, which="last")
    loaded = run.load_weights("last")
    assert torch.equal(loaded["a"], base) and torch.equal(loaded["tied"], base)
    assert torch.equal(loaded["t"], base.t()) and torch.equal(loaded["row"], base[1])
    with pytest.raises(RunError, match="which"):
        run.save_weights({"a": base}, which="final")
    with pytest.raises(RunError, match="no best weights"):
        run.load_weights()


def test_list_rows_carry_what_a_jobs_view_shows(store, dataset):
    """ETA, device and a failed job's error come with the listing (no second status read)."""
    running = store.create(SPEC, {}, dataset, run_id="running")
    running.update_status(state="running", progress=0.5, device="cpu", eta_seconds=12.5)
    failed = store.create(SPEC, {}, dataset, run_id="failed")
    failed.update_status(state="failed", error="out of memory")
    rows = {r["id"]: r for r in store.list()}
    assert set(rows["running"]) == set(store.ROW_KEYS)
    assert (rows["running"]["eta_seconds"], rows["running"]["device"]) == (12.5, "cpu")
    assert rows["running"]["error"] is None
    assert rows["failed"]["state"] == "failed" and rows["failed"]["error"] == "out of memory"


def test_status_updates_merge_and_are_atomic(store, dataset, monkeypatch):
    run = store.create(SPEC, {}, dataset)
    before = run.status()
    run.update_status(state="running", progress=0.25, epoch=1, device="cpu",
                      eta_seconds=np.float64(12.5), worker="w1")
    status = run.update_status(progress=0.5, epoch=2, message="epoch 2")
    assert status == run.status()
    assert status["state"] == "running" and status["worker"] == "w1"
    assert status["progress"] == 0.5 and status["eta_seconds"] == 12.5
    assert status["updated"] > before["updated"]
    on_disk = (run.path / "status.json").read_text()
    assert json.loads(on_disk) == status

    with pytest.raises(RunError, match="state"):
        run.update_status(state="finished")
    with pytest.raises(RunError, match="progress"):
        run.update_status(progress=1.5)
    with pytest.raises(TypeError):
        run.update_status(payload=object())

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        run.update_status(state="done", progress=1.0)
    monkeypatch.undo()
    assert (run.path / "status.json").read_text() == on_disk
    assert sorted(os.listdir(run.path)) == ["spec.json", "status.json"]


KILLED_WRITER = textwrap.dedent("""
    import importlib.util, os, sys, time
    spec = importlib.util.spec_from_file_location("files", sys.argv[1])
    files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)

    def writer(tmp):
        with open(tmp, "w") as f:
            f.write('{"state": "done", "prog')
        if sys.argv[3] == "exit":
            os._exit(1)
        print("writing", flush=True)
        time.sleep(60)

    files.atomic_write(sys.argv[2], writer)
""")


@pytest.mark.parametrize("death", ["exit", "sigkill"])
@pytest.mark.parametrize("existing", [True, False])
def test_killed_writer_leaves_no_half_written_file(store, dataset, death, existing):
    run = store.create(SPEC, {}, dataset)
    target = run.path / ("status.json" if existing else "metrics.nc")
    old = target.read_bytes() if existing else None
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(FILES_PY), str(target),
                             death], stdout=subprocess.PIPE, text=True)
    try:
        if death == "sigkill":
            assert proc.stdout.readline() == "writing\n"
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert proc.returncode == (-signal.SIGKILL if death == "sigkill" else 1)

    if existing:
        assert target.read_bytes() == old
    else:
        assert not target.exists()
    left = set(os.listdir(run.path)) - {"spec.json", "status.json"}
    assert len(left) == 1 and all(_hidden_tmp(name) for name in left)
    assert run.status()["state"] == "queued"
    assert run.read_metrics() is None
    [row] = store.list()
    assert row["state"] == "queued" and row["error"] is None

    # the same at the store's top level: a leftover of an interrupted write or create
    leftover = store.root / ".20260101-000000-conv-none-abcdef.x1y2z3.tmp"
    leftover.mkdir()
    (leftover / "spec.json").write_text('{"mod')
    (store.root / ".notes.json.abc123.tmp").write_text("{")
    assert [r["id"] for r in store.list()] == [run.id]
    for name in (leftover.name, ".notes.json.abc123.tmp"):
        with pytest.raises(RunError):
            store.get(name)


class _Boom:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload", ["pickle", "torch_state_dict", "torch_boom", "fake_header",
                                     "truncated", "empty"])
def test_pickle_disguised_as_weights_is_refused_unexecuted(store, dataset, tmp_path, payload):
    run = store.create(SPEC, {}, dataset)
    marker = tmp_path / "marker"
    target = run.weights_path("best")
    if payload == "pickle":
        target.write_bytes(pickle.dumps({"w": _Boom(marker)}))
    elif payload == "torch_state_dict":
        torch.save(build_model(**SPEC).state_dict(), target)
    elif payload == "torch_boom":
        torch.save({"w": torch.zeros(3), "x": _Boom(marker)}, target)
    elif payload == "fake_header":
        target.write_bytes((10).to_bytes(8, "little") + b"not json!!" + pickle.dumps(_Boom(marker)))
    elif payload == "truncated":
        run.save_weights(build_model(**SPEC).state_dict())
        target.write_bytes(target.read_bytes()[:-5])
    else:
        target.write_bytes(b"")

    with pytest.raises(RunError, match=re.escape(str(target))):
        run.load_weights()
    with pytest.raises(RunError, match="refused"):
        run.load_model()
    assert not marker.exists()


def test_disguised_pickle_payload_is_live(tmp_path):
    """The payload above really would run code if unpickled, so its refusal means something."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Boom(marker))).close()
    assert marker.exists()


def test_weights_that_do_not_fit_the_spec_are_refused(store, dataset):
    run = store.create(SPEC, {}, dataset)
    run.save_weights({"unexpected": torch.zeros(2)})
    with pytest.raises(RunError, match="does not fit"):
        run.load_model()


def test_damaged_run_listed_as_damaged(store, dataset):
    good = store.create(SPEC, {}, dataset, run_id="a-good")
    bad_spec = store.create(SPEC, {}, dataset, run_id="b-bad-spec")
    bad_status = store.create(SPEC, {}, dataset, run_id="c-bad-status")
    text = (bad_spec.path / "spec.json").read_text()
    (bad_spec.path / "spec.json").write_text(text[:len(text) // 2])
    (bad_status.path / "status.json").write_text('{"state": "running", "progress": 0.')
    (store.root / "d-empty").mkdir()

    rows = {r["id"]: r for r in store.list()}
    assert set(rows) == {"a-good", "b-bad-spec", "c-bad-status", "d-empty"}
    assert rows["a-good"]["state"] == "queued" and rows["a-good"]["error"] is None
    assert rows["b-bad-spec"]["state"] == "damaged"
    assert "spec.json" in rows["b-bad-spec"]["error"]
    assert rows["c-bad-status"]["state"] == "damaged"
    assert "status.json" in rows["c-bad-status"]["error"]
    assert rows["c-bad-status"]["model"] == "rgroup"  # what could be read is still shown
    assert rows["d-empty"]["state"] == "damaged"
    with pytest.raises(RunError, match="spec.json"):
        store.get("b-bad-spec").load_model()
    assert [r.id for r in store.runs_in_state("damaged")] == \
        [r for r in rows if r != "a-good"]
    assert store.runs_in_state("queued") == [good]
    with pytest.raises(RunError):
        store.runs_in_state("finished")
    store.delete("b-bad-spec")
    assert "b-bad-spec" not in {r["id"] for r in store.list()}


def test_metrics_round_trip_and_final_numbers_in_list(store, dataset):
    run = store.create(SPEC, {}, dataset)
    assert run.read_metrics() is None and run.final_metrics() == {}
    run.write_metrics(_metrics(0.3))
    back = run.read_metrics()
    xr.testing.assert_identical(back, _metrics(0.3))
    assert back["seconds"].dtype == np.float64  # not decoded to timedelta
    [row] = store.list()
    assert row["future_rmse"] == pytest.approx(0.3) and row["domain_rmse"] is None
    run.write_metrics(_metrics(0.2, 0.7, {"equivariance_error": 0.01}))
    [row] = store.list()
    assert row["future_rmse"] == pytest.approx(0.2)
    assert row["domain_rmse"] == pytest.approx(0.7)
    assert row["equivariance_error"] == pytest.approx(0.01)
    assert sorted(os.listdir(run.path)) == ["metrics.nc", "spec.json", "status.json"]

    (run.path / "metrics.nc").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(RunError, match="metrics.nc"):
        run.read_metrics()
    [row] = store.list()
    assert row["state"] == "damaged" and "metrics.nc" in row["error"]


def test_compare_stacks_final_metrics(store, dataset):
    a = store.create(SPEC, {}, dataset, run_id="a")
    b = store.create(dict(SPEC, name="gconv", num_banks=1, alpha=0.0), {}, dataset, run_id="b")
    store.create(SPEC, {}, dataset, run_id="c")
    a.write_metrics(_metrics(0.3, 0.5))
    b.write_metrics(_metrics(0.4, extra={"equivariance_error": 1e-7}))
    cmp = store.compare(["b", "a", "c"])
    assert cmp.sizes == {"run": 3}
    assert list(cmp["run"].values) == ["b", "a", "c"]
    assert list(cmp["model"].values) == ["gconv", "rgroup", "rgroup"]
    assert list(cmp["alpha"].values) == [0.0, 0.5, 0.5]
    np.testing.assert_allclose(cmp["future_rmse"], [0.4, 0.3, np.nan])
    np.testing.assert_allclose(cmp["domain_rmse"], [np.nan, 0.5, np.nan])
    np.testing.assert_allclose(cmp["equivariance_error"], [1e-7, np.nan, np.nan])
    assert "train_loss" not in cmp  # per-epoch curves are not final numbers
    with pytest.raises(RunError, match="more than once"):
        store.compare(["a", "a"])
    with pytest.raises(RunError):
        store.compare(["a", "missing"])


def test_delete(store, dataset):
    keep = store.create(SPEC, {}, dataset)
    gone = store.create(SPEC, {}, dataset)
    gone.write_metrics(_metrics(0.1))
    store.delete(gone.id)
    assert not gone.path.exists()
    assert [r["id"] for r in store.list()] == [keep.id]
    assert os.listdir(store.root) == [keep.id]
    with pytest.raises(RunError):
        store.delete(gone.id)


@pytest.mark.parametrize("run_id", ["../x", "missing", "a/b", "..", ".", "", ".hidden",
                                    "a\\b", "/etc", "x..y", 3])
def test_bad_run_ids_raise(store, dataset, run_id):
    store.create(SPEC, {}, dataset, run_id="present")
    with pytest.raises(RunError):
        store.get(run_id)
    with pytest.raises(RunError):
        store.delete(run_id)
    if run_id != "missing":
        with pytest.raises(RunError, match="bad run id"):
            store.create(SPEC, {}, dataset, run_id=run_id)
    assert os.listdir(store.root) == ["present"]
    assert not (store.root.parent / "x").exists()


@pytest.mark.parametrize("spec", [dict(name="gconv", group="translation"), dict(name="nope"),
                                  dict(SPEC, kernel_size=4), dict(SPEC, colour="red"),
                                  dict(group="C4")])
def test_impossible_spec_raises_and_writes_nothing(store, dataset, spec):
    with pytest.raises(SpecError):
        store.create(spec, {}, dataset)
    assert os.listdir(store.root) == []


def test_create_refuses_missing_dataset_and_unstorable_config(store, tmp_path, dataset):
    with pytest.raises(RunError, match="missing.nc"):
        store.create(SPEC, {}, tmp_path / "missing.nc")
    with pytest.raises(RunError, match="JSON"):
        store.create(SPEC, {"callback": print}, dataset)
    assert os.listdir(store.root) == []


def test_run_objects_need_valid_ids(tmp_path):
    with pytest.raises(RunError):
        Run(tmp_path, "../escape")


def test_open_run_by_folder(store, dataset):
    run = store.create(SPEC, {}, dataset)
    opened = Run.open(run.path)
    assert opened == run and opened.spec == run.spec
    opened.update_status(progress=torch.tensor(0.5))
    assert run.status()["progress"] == 0.5
    with pytest.raises(RunError, match="no run folder"):
        Run.open(store.root / "missing")

"""Bring your own data in the dashboard, without a server: drop, map names, preview, save.
(The browser test in tests/ui drives the same panel through a real page.)"""
import io

import numpy as np
import pytest
import xarray as xr

from core.datasets import load_dataset
from dashboard.state import ExperimentState, Services, safe_name
from dashboard.views import ImportPanel

RNG = np.random.default_rng(1)


@pytest.fixture
def services(tmp_path):
    services = Services(data_root=tmp_path / "data", runs_root=tmp_path / "runs")
    (tmp_path / "data").mkdir(exist_ok=True)
    yield services
    services.jobs.shutdown()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _drop(panel, files: dict[str, bytes]) -> None:
    """What the dropper does when uploads finish: files in the uploads folder, then value."""
    folder = panel.state.services.uploads
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    panel.dropper.value = {**panel.dropper.value, **paths}


def test_safe_names_stay_in_the_folder():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my flow (v2).nc", ".nc") == "my_flow__v2_.nc"
    assert safe_name(".hidden", ".nc") == "hidden.nc"
    assert safe_name("C:\\Users\\me\\jet.npy") == "jet.npy"
    assert safe_name("data.npy", ".nc") == "data.nc"


def test_drop_preview_save_and_choose(services):
    flow = RNG.standard_normal((4, 40, 2, 23, 62)).astype("float32")
    state = ExperimentState(services)
    panel = ImportPanel(state)
    _drop(panel, {"jet_flow.npy": _npy(flow)})
    assert "4 sims x 40 steps on 23 x 62" in panel.info.object
    assert "C_n/D_n need a square grid" in panel.info.object
    assert len(panel.preview.objects) == 1 and not panel.save_button.disabled
    assert panel.save_name.value == "jet_flow.nc"
    assert not (services.data_root / "jet_flow.nc").exists()  # nothing saved before Save
    panel.crop.value = True  # the explicit square crop
    assert "on 23 x 23" in panel.info.object
    panel.crop.value = False
    panel._save()
    assert state.dataset == "jet_flow.nc" and "jet_flow.nc" in state.param.dataset.objects
    assert np.array_equal(load_dataset(services.data_root / "jet_flow.nc")["velocity"].values,
                          flow)


def test_a_dataset_saved_in_one_session_is_offered_in_the_others(services):
    """Another student's open experiment panel lists it at its next refresh, keeps its own
    choice, and its dataset select is not re-sent while the list is unchanged."""
    from dashboard.views import ExperimentPanel

    flow = RNG.standard_normal((2, 30, 2, 8, 8)).astype("float32")
    saver = ImportPanel(ExperimentState(services))
    _drop(saver, {"first.npy": _npy(flow)})
    saver._save()
    other = ExperimentPanel(ExperimentState(services))
    chosen = other.state.dataset
    assert chosen == "first.nc"
    _drop(saver, {"shared.npy": _npy(flow)})
    saver._save()
    sent = []
    other.state.param.watch(lambda e: sent.append(e), "dataset", what="objects")
    other.poll()
    assert "shared.nc" in other.state.param.dataset.objects
    assert "shared.nc" in other.dataset.options and other.state.dataset == chosen
    assert len(sent) == 1
    other.poll()  # nothing new: nothing sent
    assert len(sent) == 1


def test_names_that_need_mapping_show_the_mapping_step(services, tmp_path):
    flow = RNG.standard_normal((2, 40, 2, 8, 8)).astype("float32")
    path = tmp_path / "odd.nc"
    xr.Dataset({"east": (("run", "frame", "a", "b"), flow[:, :, 0]),
                "north": (("run", "frame", "a", "b"), flow[:, :, 1])}).to_netcdf(
        path, engine="h5netcdf")
    panel = ImportPanel(ExperimentState(services))
    _drop(panel, {"odd.nc": path.read_bytes()})
    assert panel.mapping.visible and "Not imported" in panel.info.object
    assert panel.save_button.disabled
    assert {"east", "north", "run", "a"} <= set(panel.roles["u"].options)
    for role, name in dict(u="east", v="north", sim="run", time="frame", y="a", x="b").items():
        panel.roles[role].value = name
    panel._read()
    assert "2 sims x 40 steps on 8 x 8" in panel.info.object and not panel.save_button.disabled


def test_bad_uploads_give_one_message_and_keep_existing_data(services):
    panel = ImportPanel(ExperimentState(services))
    _drop(panel, {"broken.nc": b"\x89HDF\r\n\x1a\n" + b"\x00" * 500})
    assert panel.info.object.startswith("**Not imported:**") and panel.save_button.disabled
    _drop(panel, {"nan.npy": _npy(np.full((30, 2, 4, 4), np.nan, "float32"))})
    assert "NaN" in panel.info.object
    _drop(panel, {"a.pt": b"x", "b.pt": b"y"})  # several .pt files: read as one folder
    assert "a.pt" in panel.info.object and "Not imported" in panel.info.object
    keep = services.data_root / "mine.nc"
    keep.write_bytes(b"precious")
    _drop(panel, {"mine.npy": _npy(RNG.standard_normal((30, 2, 4, 4)).astype("f4"))})
    panel._save()
    assert "tick 'Replace'" in panel.info.object and keep.read_bytes() == b"precious"
    panel.overwrite.value = True
    panel._save()
    assert load_dataset(keep)["velocity"].shape == (1, 30, 2, 4, 4)
    staged = list(services.uploads.iterdir())
    assert staged and not (services.uploads / "mine.npy").exists()  # a saved upload is removed
    assert services.datasets() == ["mine.nc"]  # staged uploads are not datasets


def test_the_upload_limit_refuses_a_larger_file(services, monkeypatch):
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "UPLOAD_LIMIT_MB", 1)
    panel = ImportPanel(ExperimentState(services))
    _drop(panel, {"big.npy": b"\0" * (2 ** 20 + 1)})
    assert "larger than the upload limit of 1 MB" in panel.info.object
    assert panel.save_button.disabled


def test_the_dropper_stops_writing_a_file_past_the_limit(services, tmp_path):
    """Chunks as the browser sends them (upload events of the real widget's protocol)."""
    from types import SimpleNamespace

    panel = ImportPanel(ExperimentState(services))
    dropper = panel.dropper
    dropper.max_bytes = 10

    def chunk(name, i, total, data):
        dropper._process_event(SimpleNamespace(event_name="upload_event", data=dict(
            name=name, chunk=i, total_chunks=total, data=data, type="")))

    chunk("ok.npy", 1, 2, b"12345")
    chunk("ok.npy", 2, 2, b"678")
    assert (services.uploads / "ok.npy").read_bytes() == b"12345678"
    assert dropper.value["ok.npy"] == services.uploads / "ok.npy"
    chunk("big.npy", 1, 3, b"123456")
    chunk("big.npy", 2, 3, b"7890123")  # past 10 bytes: refused, nothing kept
    chunk("big.npy", 3, 3, b"4")
    assert "big.npy" not in dropper.value and not list(services.uploads.glob("*big*"))
    assert "larger than the upload limit" in panel.info.object

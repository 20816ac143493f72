"""Datasets: scenarios, netCDF round trip, validation errors, windows, .pt import, CLI."""
import json
import pickle

import numpy as np
import pytest
import torch
import xarray as xr

from core.__main__ import main
from core.datasets import (DatasetError, WindowDataset, data_equivariance_error, generate,
                           import_pt, load_dataset, save_dataset)
from core.groups import transform_field
from core.simulation import Inflow

SMALL = dict(grid=24, steps=40, device="cpu")


@pytest.fixture(scope="module")
def rotation0():
    return generate("rotation", sims=8, breaking=0.0, **SMALL)


def test_format(rotation0):
    ds = rotation0
    assert ds["velocity"].dims == ("sim", "time", "component", "y", "x")
    assert ds["velocity"].dtype == np.float32 and ds["velocity"].shape == (8, 40, 2, 24, 24)
    assert list(ds["component"].values) == ["u", "v"]
    for key in ("inflow_x", "inflow_y", "inflow_radius", "inflow_direction", "inflow_strength"):
        assert ds[key].dims == ("sim", "inflow")
    for key in ("scenario", "breaking", "grid", "dt", "solver", "seed", "package_version",
                "split_train_sims", "split_domain_sims", "window_train", "window_future"):
        assert key in ds.attrs
    assert json.loads(ds.attrs["solver"])["projection"].startswith("spectral")


def test_rotation_domain_split_holds_out_whole_strength_groups(rotation0):
    domain = set(np.atleast_1d(rotation0.attrs["split_domain_sims"]).tolist())
    orbit = rotation0["orbit"].values
    assert domain, "a held-out group"
    held_orbits = {int(orbit[s]) for s in domain}
    assert domain == {s for s in range(8) if orbit[s] in held_orbits}
    strengths = rotation0["inflow_strength"].values[:, 0]
    assert len({strengths[s] for s in domain}) == 1  # one strength, all four directions


def test_rotation_at_breaking_zero_is_exactly_symmetric(rotation0):
    vel = torch.from_numpy(rotation0["velocity"].values)
    for base in (0, 4):
        for k in (1, 2, 3):
            assert torch.equal(transform_field(vel[base], "C4", k), vel[base + k])
    assert float(data_equivariance_error(rotation0).max()) == 0.0


def test_data_equivariance_error_grows_with_breaking(rotation0):
    errors = [float(data_equivariance_error(generate("rotation", sims=8, breaking=b, **SMALL)).mean())
              for b in (1.0, 4.0)]
    assert 0.0 < errors[0] < errors[1]


def test_levels_start_exact_and_grow():
    err = data_equivariance_error(generate("levels", sims=16, **SMALL))
    assert err.values[0] == 0.0 and err.values[-1] > err.values[1] > 0.0
    assert list(err["orbit"].values) == [0, 1, 2, 3]


def test_translation_breaking_changes_only_the_buoyancy_map():
    a = generate("translation", sims=6, breaking=0.0, **SMALL)
    b = generate("translation", sims=6, breaking=1.0, **SMALL)
    assert float(a["buoyancy_map"].min()) == float(a["buoyancy_map"].max()) == 1.0
    right = b["x"] > 12
    assert (b["buoyancy_map"].where(right, drop=True) == 2.0).all()
    assert (b["buoyancy_map"].where(~right, drop=True) == 1.0).all()
    for key in ("inflow_x", "inflow_y", "inflow_radius", "inflow_direction", "inflow_strength"):
        xr.testing.assert_identical(a[key], b[key])
    # the same inflows run by hand with b's map reproduce b exactly
    inflows = [[Inflow(float(x), float(y), float(r), (0.0, 1.0), float(s))]
               for x, y, r, s in zip(b["inflow_x"].values[:, 0], b["inflow_y"].values[:, 0],
                                     b["inflow_radius"].values[:, 0],
                                     b["inflow_strength"].values[:, 0])]
    c = generate("custom", inflows=inflows, buoyancy_map=b["buoyancy_map"].values, **SMALL)
    assert np.array_equal(c["velocity"].values, b["velocity"].values)
    assert not np.array_equal(a["velocity"].values, b["velocity"].values)


def test_scale_scenario_resamples_and_divides_velocity():
    ds = generate("scale", sims=3, grid=16, steps=6, device="cpu")
    assert ds["velocity"].shape == (3, 6, 2, 16, 16)
    assert np.allclose(ds["scale"].values, [1.0, 2.85, 4.7])
    assert np.isfinite(ds["velocity"].values).all()


def test_same_seed_same_bytes(tmp_path):
    a = generate("translation", sims=3, seed=7, **SMALL)
    b = generate("translation", sims=3, seed=7, **SMALL)
    assert a["velocity"].values.tobytes() == b["velocity"].values.tobytes()


def test_netcdf_round_trip_is_exact(tmp_path, rotation0):
    path = save_dataset(rotation0, tmp_path / "r.nc")
    back = load_dataset(path)
    assert back["velocity"].values.tobytes() == rotation0["velocity"].values.tobytes()
    for key, value in rotation0.attrs.items():
        assert np.array_equal(np.atleast_1d(back.attrs[key]), np.atleast_1d(value)), key
    for key in rotation0.coords:
        np.testing.assert_array_equal(back[key].values, rotation0[key].values)
    assert list(tmp_path.iterdir()) == [path], "no temporary files left behind"


def _variant(ds, **changes):
    ds = ds.copy(deep=True)
    for key, value in changes.items():
        ds.attrs[key] = value
    return ds


@pytest.mark.parametrize("mutate, message", [
    (lambda ds: ds.drop_vars("velocity"), "missing variable 'velocity'"),
    (lambda ds: ds.assign(velocity=ds["velocity"].transpose("sim", "time", "component", "x", "y")),
     "expected"),
    (lambda ds: ds.assign(velocity=ds["velocity"].astype("float64")), "float32"),
    (lambda ds: ds.assign(velocity=ds["velocity"].where(ds["time"] != 3)), "NaN"),
    (lambda ds: _variant(ds, split_domain_sims=np.array([99])), "outside"),
    (lambda ds: _variant(ds, split_domain_sims=np.array([0])), "both train and domain"),
    (lambda ds: _variant(ds, window_future=np.array([30, 500])), "does not fit"),
])
def test_bad_datasets_raise_dataset_error(tmp_path, rotation0, mutate, message):
    bad = mutate(rotation0)
    path = tmp_path / "bad.nc"
    bad.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_non_netcdf_and_missing_files(tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="not a netCDF"):
        load_dataset(text)
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.nc")


def test_failed_save_keeps_the_existing_file(tmp_path, rotation0):
    path = save_dataset(rotation0, tmp_path / "keep.nc")
    before = path.read_bytes()
    broken = rotation0.assign(velocity=rotation0["velocity"].astype("float64"))
    with pytest.raises(DatasetError):
        save_dataset(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nc"]


def test_windows_shapes_boundaries_and_views(rotation0):
    ds = rotation0  # 40 steps: windows scaled from the paper's 310
    train = WindowDataset(ds, "train", in_frames=4)
    a, b = (int(v) for v in ds.attrs["window_train"])
    assert train.starts == list(range(a, b)) and len(train) == len(train.sims) * (b - a)
    x, y = train[0]
    assert x.shape == (8, 24, 24) and y.shape == (6, 2, 24, 24)
    sim, t = train.index(0)
    assert torch.equal(x[2:4], train.velocity[sim, t + 1])  # frame t+1 is channels 2..3
    assert torch.equal(y[0], train.velocity[sim, t + 4])
    assert x.untyped_storage().data_ptr() == train.velocity.untyped_storage().data_ptr()
    assert WindowDataset(ds, "future", in_frames=4).target_steps == 20
    assert len(WindowDataset(ds, "future", in_frames=4)) == 0  # 20 targets do not fit 40 steps
    future = WindowDataset(ds, "future", in_frames=4, target_steps=6)
    assert future.starts and max(future.starts) + 4 + 6 <= 40  # every target inside the run
    domain = WindowDataset(ds, "domain", in_frames=4)
    assert set(domain.sims) == set(np.atleast_1d(ds.attrs["split_domain_sims"]).tolist())
    with pytest.raises(DatasetError, match="unknown split"):
        WindowDataset(ds, "test")


@pytest.mark.parametrize("layout, shape", [("phiflow", (12, 2, 16, 16)), ("jetflow", (9, 2, 62, 23))])
def test_import_pt_layouts(tmp_path, layout, shape):
    tensors = {}
    for i in (0, 1, 2, 10, 3, 4):
        tensors[i] = torch.randn(shape)
        torch.save(tensors[i], tmp_path / f"sim_{i}.pt")
    ds = import_pt(tmp_path, layout)
    assert ds["velocity"].shape == (6, *shape)
    order = [0, 1, 2, 3, 4, 10]  # natural order of names
    for s, i in enumerate(order):
        assert np.array_equal(ds["velocity"].values[s], tensors[i].numpy())
    assert ds.attrs["scenario"] == f"imported-{layout}"
    save_dataset(ds, tmp_path / "out.nc")
    assert load_dataset(tmp_path / "out.nc")["velocity"].shape == (6, *shape)


def test_import_pt_refuses_pickles_and_bad_shapes(tmp_path):
    (tmp_path / "a.pt").write_bytes(pickle.dumps({"not": "a tensor"}))
    with pytest.raises(DatasetError, match="a.pt"):
        import_pt(tmp_path, "phiflow")
    (tmp_path / "a.pt").unlink()
    torch.save(torch.randn(3, 3, 8, 8), tmp_path / "b.pt")
    with pytest.raises(DatasetError, match=r"\[T, 2, H, W\]"):
        import_pt(tmp_path, "phiflow")
    with pytest.raises(DatasetError, match="unknown layout"):
        import_pt(tmp_path, "other")


def test_cli_generate_and_info(tmp_path, capsys):
    out = tmp_path / "x.nc"
    assert main(["generate", "rotation", "--out", str(out), "--grid", "16", "--steps", "12",
                 "--sims", "8", "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dims"] == {"sim": 8, "time": 12, "component": 2, "y": 16, "x": 16}
    assert info["scenario"] == "rotation" and info["max_divergence"] < 1e-4
    assert info["data_equivariance_error"]["group"] == "C4"
    assert set(info["split"]) >= {"train_sims", "domain_sims", "window_train", "window_domain"}


@pytest.mark.parametrize("argv, message", [
    (["generate", "rotation", "--out", "x.nc", "--sims", "5"], "multiple of 4"),
    (["generate", "rotation", "--out", "x.nc", "--breaking", "-1"], "breaking"),
    (["info", "missing.nc"], "no such file"),
    (["import-pt", "nowhere", "--layout", "phiflow", "--out", "x.nc"], "no such file or folder"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "x.nc").exists()

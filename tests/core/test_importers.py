"""Bring your own flow: every reader gives back exactly the numbers it was given (real netCDF,
numpy and torch files), with the default splits, and every bad input one clear line."""
import io
import zipfile

import numpy as np
import pytest
import torch
import xarray as xr

from core import build_model
from core.__main__ import main
from core.datasets import DatasetError, WindowDataset, generate, load_dataset, save_dataset
from core.importers import crop_square, parse_mapping, read_flow, read_pt

RNG = np.random.default_rng(0)


def _flow(sims=6, steps=40, h=12, w=10):
    return RNG.standard_normal((sims, steps, 2, h, w)).astype(np.float32)


def _same(ds, velocity):
    assert ds["velocity"].dims == ("sim", "time", "component", "y", "x")
    assert np.array_equal(ds["velocity"].values, velocity)


def test_our_netcdf_round_trips_unchanged(tmp_path):
    ds = generate("rotation", grid=12, steps=30, sims=4, device="cpu")
    save_dataset(ds, tmp_path / "ours.nc")
    back = read_flow(tmp_path / "ours.nc")
    _same(back, ds["velocity"].values)
    assert back.attrs["scenario"] == "rotation"  # ours: kept as it is


def test_netcdf_with_separate_u_v_and_no_sim_dimension(tmp_path):
    vel = _flow(sims=1)
    xr.Dataset({"U": (("t", "row", "col"), vel[0, :, 0]),
                "V": (("t", "row", "col"), vel[0, :, 1])}).to_netcdf(tmp_path / "a.nc",
                                                                      engine="h5netcdf")
    ds = read_flow(tmp_path / "a.nc")
    _same(ds, vel)
    assert ds.attrs["source_format"] == "netcdf"
    assert "no domain split" in ds.attrs["split_note"]
    assert list(ds.attrs["split_domain_sims"]) == []


def test_lat_lon_names_in_any_order_with_a_member_dimension(tmp_path):
    vel = _flow(sims=3, h=8, w=11)
    u = np.transpose(vel[:, :, 0], (2, 3, 1, 0))  # (lat, lon, time, member)
    v = np.transpose(vel[:, :, 1], (2, 3, 1, 0))
    xr.Dataset({"uwnd": (("lat", "lon", "time", "member"), u),
                "vwnd": (("lat", "lon", "time", "member"), v)}).to_netcdf(tmp_path / "b.h5",
                                                                         engine="h5netcdf")
    ds = read_flow(tmp_path / "b.h5")
    _same(ds, vel)
    assert list(ds.attrs["split_domain_sims"]) == [2]  # 3 sims: the last held out


def test_mapping_names_what_cannot_be_guessed(tmp_path):
    vel = _flow(sims=2)
    xr.Dataset({"east": (("run", "frame", "a", "b"), vel[:, :, 0]),
                "north": (("run", "frame", "a", "b"), vel[:, :, 1])}).to_netcdf(
        tmp_path / "c.nc", engine="h5netcdf")
    with pytest.raises(DatasetError, match=r"east\('run', 'frame', 'a', 'b'\).*--map"):
        read_flow(tmp_path / "c.nc")
    mapping = parse_mapping("u=east,v=north,y=a,x=b")
    ds = read_flow(tmp_path / "c.nc", mapping)
    _same(ds, vel)
    assert ds.attrs["mapping"] == "u=east,v=north,y=a,x=b"
    with pytest.raises(DatasetError, match="--map u=wind: no variable"):
        read_flow(tmp_path / "c.nc", {"u": "wind", "v": "north"})
    with pytest.raises(DatasetError, match="unknown role"):
        parse_mapping("speed=east")


def test_one_velocity_variable_with_a_component_dimension(tmp_path):
    vel = _flow(sims=5)
    data = np.transpose(vel, (1, 0, 3, 4, 2))  # (time, sim, y, x, comp)
    xr.Dataset({"flow": (("time", "sim", "y", "x", "comp"), data)}).to_netcdf(
        tmp_path / "d.nc", engine="h5netcdf")
    ds = read_flow(tmp_path / "d.nc")
    _same(ds, vel)
    assert list(ds.attrs["split_domain_sims"]) == [4]


@pytest.mark.parametrize("shape", [(4, 30, 2, 9, 7), (30, 2, 9, 7)])
def test_npy_with_and_without_a_sim_axis(tmp_path, shape):
    vel = RNG.standard_normal(shape).astype(np.float64)
    np.save(tmp_path / "f.npy", vel)
    ds = read_flow(tmp_path / "f.npy")
    _same(ds, vel.astype(np.float32).reshape(-1, *shape[-4:]))


def test_npz_velocity_or_u_and_v(tmp_path):
    vel = _flow(sims=2)
    np.savez(tmp_path / "a.npz", velocity=vel)
    _same(read_flow(tmp_path / "a.npz"), vel)
    np.savez(tmp_path / "b.npz", u=vel[:, :, 0], v=vel[:, :, 1])
    _same(read_flow(tmp_path / "b.npz"), vel)
    np.savez(tmp_path / "c.npz", first=vel, second=vel)
    with pytest.raises(DatasetError, match="first, second.*--map velocity=NAME"):
        read_flow(tmp_path / "c.npz")
    _same(read_flow(tmp_path / "c.npz", {"velocity": "second"}), vel)


def test_pt_folder_zip_and_single_file_without_unpickling(tmp_path):
    tensors = [torch.randn(30, 2, 8, 6) for _ in range(3)]
    folder = tmp_path / "pts"
    folder.mkdir()
    for i, t in zip((2, 10, 1), tensors):
        torch.save(t, folder / f"sim_{i}.pt")
    order = [tensors[2], tensors[0], tensors[1]]  # sim_1, sim_2, sim_10
    expected = torch.stack(order).numpy()
    _same(read_flow(folder), expected)
    with zipfile.ZipFile(tmp_path / "pts.zip", "w") as z:
        for f in folder.iterdir():
            z.write(f, f"inner/{f.name}")
    _same(read_flow(tmp_path / "pts.zip"), expected)
    _same(read_flow(folder / "sim_1.pt"), expected[:1])
    strided = torch.randn(6, 30, 2, 8).permute(1, 2, 3, 0)[:, :, 1:7]  # a view with an offset
    buf = io.BytesIO()
    torch.save(strided, buf)
    assert np.array_equal(read_pt(buf.getvalue(), "view"), strided.numpy())


class _Planted:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pt_with_code_is_refused_and_never_run(tmp_path):
    planted = tmp_path / "planted"
    torch.save(_Planted(planted), tmp_path / "evil.pt")
    with pytest.raises(DatasetError, match="never unpickled"):
        read_flow(tmp_path / "evil.pt")
    assert not planted.exists()
    torch.save({"velocity": torch.randn(3, 2, 4, 4)}, tmp_path / "dict.pt")
    with pytest.raises(DatasetError, match="dict.pt: not a plain tensor"):
        read_flow(tmp_path / "dict.pt")


def test_non_square_jetflow_grid_trains_translation_and_rotation_models(tmp_path):
    vel = _flow(sims=4, steps=40, h=23, w=62)
    np.save(tmp_path / "jet.npy", vel)
    ds = read_flow(tmp_path / "jet.npy")
    assert ds.sizes["y"] == 23 and ds.sizes["x"] == 62
    x, _ = WindowDataset(ds, "train", 2, 1)[0]
    for name, group in (("conv", "translation"), ("rgroup", "translation"), ("gconv", "C4")):
        model = build_model(name, group=group, in_frames=2, hidden_dim=8, num_layers=2,
                            grid=(23, 62))
        assert model(x[None]).shape == (1, 2, 23, 62)
    square = crop_square(ds)
    assert square.sizes["y"] == square.sizes["x"] == 23
    assert np.array_equal(square["velocity"].values, vel[..., :, 19:42])
    assert "centred 23x23 of 23x62" in square.attrs["crop"]


BAD = {
    "corrupt.nc": lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4),
    "notnetcdf.nc": lambda p: p.write_bytes(b"hello, world"),
    "empty.npy": lambda p: p.write_bytes(b""),
    "truncated.npy": lambda p: p.write_bytes(_npy_bytes()[:150]),
    "shape.npy": lambda p: np.save(p, np.zeros((10, 3, 4, 4), np.float32)),
    "nan.npy": lambda p: np.save(p, np.full((30, 2, 4, 4), np.nan, np.float32)),
    "zero.npy": lambda p: np.save(p, np.zeros((0, 2, 4, 4), np.float32)),
    "objects.npy": lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    "truncated.zip": lambda p: p.write_bytes(_zip_bytes()[:200]),
    "data.csv": lambda p: p.write_text("u,v\n1,2\n"),
}
MESSAGES = {"corrupt.nc": "cannot be read", "notnetcdf.nc": "not a netCDF", "empty.npy": "empty",
            "truncated.npy": "truncated", "shape.npy": r"\[sims, T, 2, H, W\]",
            "nan.npy": "NaN", "zero.npy": "empty", "objects.npy": "pickled",
            "truncated.zip": "zip", "data.csv": "unknown format"}


def _npy_bytes():
    buf = io.BytesIO()
    np.save(buf, np.zeros((30, 2, 8, 8), np.float32))
    return buf.getvalue()


def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        inner = io.BytesIO()
        torch.save(torch.zeros(30, 2, 4, 4), inner)
        z.writestr("a.pt", inner.getvalue())
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_give_one_clear_line_and_exit_2(tmp_path, capsys, name):
    path = tmp_path / name
    BAD[name](path)
    with pytest.raises(DatasetError, match=MESSAGES[name]) as err:
        read_flow(path)
    assert "\n" not in str(err.value) and name in str(err.value)
    assert main(["import", str(path), "--out", str(tmp_path / "out.nc")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "out.nc").exists()


def test_cli_import_keeps_an_existing_file_unless_forced(tmp_path, capsys):
    vel = _flow(sims=3)
    np.save(tmp_path / "a.npy", vel)
    out = tmp_path / "mine.nc"
    out.write_bytes(b"precious")
    assert main(["import", str(tmp_path / "a.npy"), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["import", str(tmp_path / "a.npy"), "--out", str(out), "--force"]) == 0
    _same(load_dataset(out), vel)
    assert "the last sim held out" in capsys.readouterr().out
    # the published-data alias still works
    torch.save(torch.from_numpy(vel[0]), tmp_path / "sim_0.pt")
    (tmp_path / "pts").mkdir()
    (tmp_path / "sim_0.pt").rename(tmp_path / "pts" / "sim_0.pt")
    assert main(["import-pt", str(tmp_path / "pts"), "--layout", "jetflow", "--out",
                 str(tmp_path / "jet.nc")]) == 0
    assert load_dataset(tmp_path / "jet.nc").attrs["scenario"] == "imported-jetflow"

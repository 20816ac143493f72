"""Discovery: nulls, readouts and statistics (fast), and the bad-input contract of `discover`.

The end-to-end verdicts (a boundary found, a direction named and turned with the data, nothing
found in symmetric data) train real models: tests/core/test_discovery_end_to_end.py.
"""
import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from core import build_model
from core.__main__ import main
from core.datasets import (data_equivariance_error, generate, import_pt, save_dataset,
                           transform_dataset)
from core.discovery import (THRESHOLDS, DiscoveryError, DiscoveryStore, Protocol,
                            _direction_tests, _held_out_t, _stabilizer, check_request,
                            counterfactual_null, member_gains, relaxed_scores, step_scan,
                            symmetric_twin, symmetrized_orbits, verdict_json)
from core.groups import get_group
from core.simulation import Inflow


@pytest.fixture(scope="module")
def rotation():
    return generate("rotation", grid=12, steps=30, sims=12, breaking=4.0, device="cpu")


# ------------------------------------------------------------------------------ nulls
def test_symmetrized_orbits_are_exactly_symmetric_and_keep_the_base(rotation):
    null = symmetrized_orbits(rotation, "C4")
    assert float(data_equivariance_error(null).max()) == 0.0
    assert float(data_equivariance_error(rotation).min()) > 0.01
    base = rotation["orbit_element"].values == 0
    assert np.array_equal(null["velocity"].values[base], rotation["velocity"].values[base])
    assert null.attrs["split_train_sims"].tolist() == rotation.attrs["split_train_sims"].tolist()


def test_symmetrized_orbits_equal_the_simulated_symmetric_set_up(rotation):
    """For our plumes the constructed null is what the simulator gives without the breaking."""
    symmetric = generate("rotation", grid=12, steps=30, sims=12, breaking=0.0, device="cpu")
    null = symmetrized_orbits(rotation, "C4")
    assert np.array_equal(null["velocity"].values, symmetric["velocity"].values)


def test_symmetric_twin_keeps_inflows_and_levels_the_buoyancy():
    ds = generate("translation", grid=16, steps=20, sims=7, breaking=1.0, device="cpu")
    twin = symmetric_twin(ds, device="cpu")
    assert np.allclose(twin["buoyancy_map"].values, ds["buoyancy_map"].values.mean())
    for name in ("inflow_x", "inflow_y", "inflow_radius", "inflow_strength"):
        assert np.allclose(twin[name].values, ds[name].values, equal_nan=True)
    assert twin.attrs["split_train_sims"].tolist() == ds.attrs["split_train_sims"].tolist()
    assert not np.array_equal(twin["velocity"].values, ds["velocity"].values)
    # already symmetric data: the twin is the same simulation, bit for bit
    flat = generate("translation", grid=16, steps=20, sims=7, breaking=0.0, device="cpu")
    assert np.array_equal(symmetric_twin(flat, device="cpu")["velocity"].values,
                          flat["velocity"].values)


def test_the_counterfactual_null_steps_the_data_own_states():
    """Same inputs, another rule: each counterfactual frame is one step from the data's state,
    so it stays next to the data while the re-simulated twin drifts away; a map that already is
    uniform gives the data itself, bit for bit."""
    ds = generate("translation", grid=16, steps=40, sims=7, breaking=1.0, device="cpu")
    null = counterfactual_null(ds)
    cf, v = null["counterfactual"].values, ds["velocity"].values
    assert cf.shape == v.shape and null.attrs["reproduction_gap"] == 0.0
    twin = symmetric_twin(ds, device="cpu")["velocity"].values
    late = slice(20, 40)
    assert np.abs(cf - v)[:, late].max() < 0.5 * np.abs(twin - v)[:, late].max()
    assert np.abs(cf - v).max() > 0
    flat = generate("translation", grid=16, steps=20, sims=7, breaking=0.0, device="cpu")
    assert np.array_equal(counterfactual_null(flat)["counterfactual"].values,
                          flat["velocity"].values)


def test_the_counterfactual_map_follows_turned_simulations():
    """The rotation scenario solves turned sims in their own frame: a counterfactual map equal
    to the buoyancy map must give the velocity itself there too."""
    from core.simulation import SimulationConfig, simulate
    inflows = [[Inflow(6, 2, 2, d, 0.1)] for d in ((0, 1), (-1, 0), (0, -1), (1, 0))]
    bmap = torch.linspace(1, 2, 12).repeat(12, 1)
    config = SimulationConfig(grid=(12, 12), steps=6)
    velocity, cf = simulate(inflows, config, buoyancy_map=bmap, counterfactual_map=bmap)
    assert torch.equal(velocity, cf)
    assert torch.equal(velocity, simulate(inflows, config, buoyancy_map=bmap))


def test_a_dataset_the_solver_does_not_reproduce_needs_a_control():
    ds = generate("translation", grid=16, steps=20, sims=7, breaking=1.0, device="cpu")
    ds["velocity"] = ds["velocity"] * 1.01
    with pytest.raises(DiscoveryError, match="does not reproduce.*--control"):
        counterfactual_null(ds)


def test_relaxed_scores_are_paired_and_vanish_without_a_difference():
    ds = generate("translation", grid=16, steps=40, sims=7, breaking=0.0, device="cpu")
    model = build_model("rgroup", group="translation", in_frames=2, hidden_dim=4,
                        num_layers=2, num_banks=2, grid=(16, 16))
    same = counterfactual_null(ds)  # a uniform map: the null is the data
    scores = relaxed_scores(model, ds, counterfactual=same, block=10)
    assert scores["data"].shape == scores["null"].shape
    assert scores["data"].shape[1:] == (2, 2, 16, 16)
    n_units = len(ds.attrs["split_train_sims"]) * math.ceil(
        (int(ds.attrs["window_train"][1]) - int(ds.attrs["window_train"][0])) / 10)
    assert scores["data"].shape[0] <= n_units and np.abs(scores["data"]).max() > 0
    assert np.array_equal(scores["data"], scores["null"])


def test_transform_dataset_turns_fields_inflows_and_map(rotation):
    turned = transform_dataset(rotation, "C4", 1)
    # the bottom inflow (16-grid centre x, low y) is now on the right, blowing left
    bottom = int(np.flatnonzero(rotation["orbit_element"].values == 0)[0])
    assert turned["inflow_x"].values[bottom, 0] > 8 and abs(turned["inflow_y"].values[bottom, 0] - 6) < 1e-9
    assert turned["inflow_direction"].values[bottom, 0] == 180.0
    back = rotation
    for _ in range(4):
        back = transform_dataset(back, "C4", 1)
    assert np.array_equal(back["velocity"].values, rotation["velocity"].values)
    assert np.allclose(back["inflow_x"].values, rotation["inflow_x"].values)
    assert np.allclose(data_equivariance_error(turned).values,
                       data_equivariance_error(rotation).values)


# ------------------------------------------------------------------------------ readouts
def test_member_gains_vanish_for_an_equivariant_model(rotation, float64):
    model = build_model("rgroup", group="C4", in_frames=2, hidden_dim=8, num_layers=2,
                        num_banks=2, grid=(12, 12))
    gains = member_gains(model.double(), rotation, "C4", steps=2, starts=4)
    assert np.abs(gains["gain"].values).max() < 1e-12 * gains["mse"].values.mean()
    assert set(gains["member"].values) == {0, 1, 2, 3}
    # every member appears at every chosen start time
    starts = {m: set(gains["start"].values[gains["member"].values == m]) for m in range(4)}
    assert starts[0] == starts[1] == starts[2] == starts[3]
    with torch.no_grad():  # break the symmetry: the gains move away from zero
        next(iter(model.relaxed_weights().values()))[:, 2] += 0.3
    gains = member_gains(model, rotation, "C4", steps=2, starts=4)
    assert np.abs(gains["gain"].values).max() > 1e-6


def test_step_scan_finds_a_step_on_either_axis():
    rng = np.random.default_rng(0)
    maps = rng.normal(0, 0.01, (3, 2, 24, 24))
    maps[..., :, 10:] += 0.2  # a jump between columns 9 and 10: x = 10
    maps[..., :, :] += np.linspace(0, 0.1, 24)  # a ramp does not move it
    for axis, m in (("x", maps), ("y", np.swapaxes(maps, -1, -2))):
        scan = step_scan(m)
        best = int(np.argmax(scan["statistic"].values))
        assert str(scan["axis"].values[best]) == axis and int(scan["position"][best]) == 10
    assert float(step_scan(np.zeros((2, 16, 16)))["statistic"].max()) == 0.0


def _units(rng, n=80, lead=6, step=0.0, at=9, axis=-1):
    maps = rng.normal(0, 1.0, (n, lead, 16, 16))
    signs = rng.choice([-1.0, 1.0], lead)[None, :, None, None]  # each map's own sign
    if step:
        bump = np.zeros((16, 16))
        bump[:, at:] = step
        maps = maps + signs * (bump if axis == -1 else bump.T)
    return maps


def test_the_cross_fitted_step_t_is_calibrated_and_finds_steps():
    """Without a difference (paired units whose difference is noise of mean zero, as the
    counterfactual null gives where nothing breaks) the significance is about standard normal:
    it reaches the threshold rarely; with a step of a fifth of the per-unit noise it is far above it, along either axis and for unpaired units."""
    rng = np.random.default_rng(3)
    null = [_held_out_t(_units(rng), np.zeros((80, 6, 16, 16)), True, 1) for _ in range(60)]
    assert np.mean(np.asarray(null) >= THRESHOLDS["translation"]) < 0.05
    assert abs(np.mean(null)) < 0.6
    for axis in (-1, -2):
        assert _held_out_t(_units(rng, step=0.2, axis=axis), np.zeros((80, 6, 16, 16)),
                           True, 1) > 2 * THRESHOLDS["translation"]
    unpaired = _held_out_t(_units(rng, step=0.3), _units(rng, n=60), False, 1)
    assert unpaired > THRESHOLDS["translation"]
    assert _held_out_t(np.zeros((20, 2, 8, 8)), np.zeros((20, 2, 8, 8)), True, 1) == 0.0


def test_direction_test_points_to_the_member_that_gains():
    angles = [270.0, 0.0, 90.0, 180.0]  # bottom, right, top, left
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1.0, (40, 4))
    strong = _direction_tests(noise + np.array([0, 0, 2.0, 0]), angles)
    assert abs(math.remainder(strong["phi"] - 90.0, 360)) < 20 and strong["t_direction"] > 5
    plain = [_direction_tests(rng.normal(0, 1.0, (40, 4)), angles)["t_direction"]
             for _ in range(200)]
    assert np.mean(np.asarray(plain) >= THRESHOLDS["group"]) < 0.05  # false alarms are rare
    axis = _direction_tests(noise + np.array([2.0, 0, 2.0, 0]), angles)  # top and bottom alike
    assert axis["t_axis"] > 5 and axis["t_axis"] > axis["t_direction"]


def test_stabilizers():
    angles = [270.0, 0.0, 90.0, 180.0]
    assert _stabilizer(get_group("C4"), angles, 2) == ["rot0"]
    assert _stabilizer(get_group("D4"), angles, 2) == ["rot0", "rot0+flip"]  # mirror x keeps top
    assert _stabilizer(get_group("D4"), angles, 1) == ["rot0", "rot180+flip"]
    assert _stabilizer(get_group("C4"), angles, None) == ["rot0", "rot180"]


# ------------------------------------------------------------------------------ bad input
def _square(ds, n):
    return ds.isel(x=slice(0, n), y=slice(0, n))


@pytest.mark.parametrize("group, match", [("SO2", "translation, C<n> and D<n>"),
                                          ("C8", "interpolation"), ("scale", "translation, C<n>"),
                                          ("C3", "interpolation"), ("nonsense", "unknown")])
def test_unsupported_groups_are_refused(rotation, group, match):
    with pytest.raises(DiscoveryError, match=match):
        check_request(rotation, group, None, 1, Protocol(in_frames=2))


def test_quarter_turns_need_a_square_grid():
    ds = generate("custom", grid=(12, 16), steps=20, device="cpu",
                  inflows=[[Inflow(8, 3, 2, (0, 1), 0.1)]] * 4)
    with pytest.raises(DiscoveryError, match="square grid.*12x16"):
        check_request(ds, "C4", None, 1, Protocol(in_frames=2))


def test_orbits_and_enough_of_them_are_required(rotation):
    few = generate("rotation", grid=12, steps=30, sims=8, breaking=4.0, device="cpu")
    with pytest.raises(DiscoveryError, match="1 complete orbit"):
        check_request(few, "C4", None, 1, Protocol(in_frames=2))
    flat = generate("translation", grid=12, steps=30, sims=5, device="cpu")
    with pytest.raises(DiscoveryError, match="orbits"):
        check_request(flat, "C4", None, 1, Protocol(in_frames=2))
    with pytest.raises(DiscoveryError, match="does not contain"):
        check_request(rotation, "C2", None, 1, Protocol(in_frames=2))
    check_request(rotation, "D4", None, 2, Protocol(in_frames=2))  # D4 contains the quarter turns


def test_controls_must_match_the_data(rotation):
    longer = generate("rotation", grid=12, steps=35, sims=12, device="cpu")
    with pytest.raises(DiscoveryError, match="time steps"):
        check_request(rotation, "C4", longer, 1, Protocol(in_frames=2))
    wider = generate("rotation", grid=16, steps=30, sims=12, device="cpu")
    with pytest.raises(DiscoveryError, match="grid"):
        check_request(rotation, "C4", wider, 1, Protocol(in_frames=2))


def test_imported_translation_data_needs_a_control(tmp_path):
    folder = tmp_path / "pt"
    folder.mkdir()
    for i in range(5):
        torch.save(torch.randn(30, 2, 12, 12), folder / f"sim_{i}.pt")
    imported = import_pt(folder, "phiflow")
    with pytest.raises(DiscoveryError, match="--control"):
        check_request(imported, "translation", None, 1, Protocol(in_frames=2))


@pytest.mark.parametrize("case", ["nonsquare", "few", "control", "not reproduced"])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, rotation):
    data = tmp_path / "data.nc"
    args = ["discover", str(data), "--group", "C4", "--runs", str(tmp_path / "runs")]
    if case == "not reproduced":  # a translation null needs the solver to give the data again
        ds = generate("translation", grid=16, steps=30, sims=7, device="cpu")
        ds["velocity"] = ds["velocity"] * 1.01
        save_dataset(ds, data)
        args[3] = "translation"
    elif case == "nonsquare":
        save_dataset(generate("custom", grid=(12, 16), steps=20, device="cpu",
                              inflows=[[Inflow(8, 3, 2, (0, 1), 0.1)]] * 4), data)
    elif case == "few":
        save_dataset(generate("rotation", grid=12, steps=30, sims=8, device="cpu"), data)
    else:
        save_dataset(rotation, data)
        save_dataset(generate("rotation", grid=16, steps=30, sims=12, device="cpu"),
                     tmp_path / "control.nc")
        args += ["--control", str(tmp_path / "control.nc")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_records_list_and_verdict_json(tmp_path):
    store = DiscoveryStore(tmp_path)
    record = store.create(dict(data="x.nc", group="C4", seeds=1))
    assert [r["state"] for r in store.list()] == ["queued"]
    ev = xr.Dataset({"strict_runs": ("seed", ["a"]), "data_runs": ("seed", ["b"]),
                     "null_runs": ("seed", ["c"])},
                    attrs=dict(group="C4", kind="group", broken=1, significance=4.2,
                               significance_method="m", null="symmetrized orbits", seeds=1,
                               seconds=1.0, direction_angle=91.0, direction_label="top",
                               named_member=2, direction_relative=0, invariant_subgroup="rot0",
                               breaking_kind="direction", t_direction=4.2, t_axis=1.0))
    verdict = verdict_json(ev)
    assert verdict["broken"] is True and verdict["direction"]["label"] == "top"
    assert verdict["runs"] == ["a", "b", "c"] and verdict["invariant_subgroup"] == ["rot0"]
    json.dumps(verdict)
    assert store.get(record.id).status()["state"] == "queued"
    with pytest.raises(DiscoveryError):
        store.get("../etc")


def test_records_whose_driver_died_are_marked_failed(tmp_path):
    import subprocess
    import sys

    store = DiscoveryStore(tmp_path)
    record = store.create(dict(data="x.nc", group="C4", seeds=1))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    import socket
    record.update_status(state="running", pid=proc.pid, host=socket.gethostname())
    [row] = store.list()
    assert row["state"] == "failed" and "died" in row["error"]

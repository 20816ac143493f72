"""Discovery end to end: real simulations, real training through the job system, the verdicts.

Sizes are small (the "quick" protocol on small grids) so the suite stays fast; the default
protocol at 32x32 is measured in docs/RESULTS.md. Each case trains its own runs in worker
processes, exactly as `python -m core discover` does.
"""
import json

import numpy as np
import pytest

from core.__main__ import main
from core.datasets import generate, save_dataset, transform_dataset
from core.discovery import discover, symmetric_twin, verdict_json

GRID, STEPS = 24, 80
LABELS = ["top", "left", "bottom", "right"]  # the top inflow after 0, 1, 2, 3 quarter turns


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("discovery")


@pytest.fixture(scope="module")
def rotation(folder):
    ds = generate("rotation", grid=GRID, steps=STEPS, sims=12, breaking=4.0, device="cpu")
    paths = []
    for k in range(4):
        path = folder / f"rotation-turn{k}.nc"
        save_dataset(transform_dataset(ds, "C4", k) if k else ds, path)
        paths.append(path)
    return paths


def _verdict(path, group, folder, **kw):
    return verdict_json(discover(path, group, protocol="quick", runs=folder / "runs", **kw))


def test_the_stronger_inflow_is_named_and_turns_with_the_data(rotation, folder):
    for k, path in enumerate(rotation):
        verdict = _verdict(path, "C4", folder, seeds=2)
        assert verdict["broken"], verdict
        assert verdict["direction"]["label"] == LABELS[k], verdict
        assert verdict["invariant_subgroup"] == ["rot0"]


def test_symmetric_rotation_data_is_not_broken(folder):
    path = folder / "rotation-symmetric.nc"
    save_dataset(generate("rotation", grid=GRID, steps=STEPS, sims=12, breaking=0.0,
                          device="cpu"), path)
    verdict = _verdict(path, "C4", folder, seeds=1)
    assert not verdict["broken"] and verdict["significance"] == 0.0
    assert verdict["invariant_subgroup"] == ["rot0", "rot90", "rot180", "rot270"]


def _translation_data(folder, name, boundary=None):
    """The translation scenario at 32x32 (14 plumes, buoyancy 1 and 2 across a straight
    boundary): its own boundary x = 16, or the same plumes with ``boundary = (axis, cells)``."""
    from core.scenarios import translation

    path = folder / f"translation-{name}.nc"
    kw = dict(grid=32, steps=120, device="cpu")
    if boundary is None:
        ds = generate("translation", sims=14, breaking=1.0, **kw)
    else:
        setup = translation((32, 32), 14, 1.0)
        bmap = np.ones((32, 32), np.float32)
        axis, cells = boundary
        if axis == "x":
            bmap[:, cells:] = 2.0
        else:
            bmap[cells:, :] = 2.0
        ds = generate("custom", inflows=setup.inflows, buoyancy_map=bmap,
                      domain_sims=setup.domain_sims, **kw)
    save_dataset(ds, path)
    return path


@pytest.mark.parametrize("name, boundary, axis, position", [
    ("centre", None, "x", 16), ("x10", ("x", 10), "x", 10), ("y18", ("y", 18), "y", 18)])
def test_the_buoyancy_boundary_is_found(folder, name, boundary, axis, position):
    """The default protocol with 3 seeds, as `python -m core discover` runs it: broken, and the
    boundary within 2 cells of the truth, at the centre, off the centre and along y."""
    path = _translation_data(folder, name, boundary)
    evidence = discover(path, "translation", seeds=3, runs=folder / "runs")
    verdict = verdict_json(evidence)
    assert verdict["broken"], verdict
    assert verdict["boundary"]["axis"] == axis, verdict
    assert abs(verdict["boundary"]["position"] - position) <= 2, verdict
    assert evidence.attrs["seeds_agreeing"] >= 2 and len(verdict["runs"]) == 3


def test_symmetric_translation_data_is_not_broken(folder):
    path = folder / "translation-symmetric.nc"
    save_dataset(generate("translation", grid=GRID, steps=STEPS, sims=14, breaking=0.0,
                          device="cpu"), path)
    verdict = _verdict(path, "translation", folder, seeds=1)  # its null is itself
    assert not verdict["broken"] and verdict["significance"] == 0.0
    assert verdict["boundary"] is None
    # against a different symmetric control: the same plumes under a uniform buoyancy 1.5 (the
    # twin of breaking 1) while the data has a uniform 1: nothing to locate
    kw = dict(grid=32, steps=120, sims=14, device="cpu")
    flat, stronger = folder / "translation-flat.nc", folder / "translation-stronger.nc"
    save_dataset(generate("translation", breaking=0.0, **kw), flat)
    save_dataset(symmetric_twin(generate("translation", breaking=1.0, **kw), device="cpu"),
                 stronger)
    verdict = verdict_json(discover(flat, "translation", seeds=1, control=stronger,
                                    runs=folder / "runs"))
    assert not verdict["broken"], verdict


def test_cli_prints_one_json_verdict(rotation, folder, capsys):
    assert main(["discover", str(rotation[0]), "--group", "C4", "--protocol", "quick",
                 "--seeds", "1", "--runs", str(folder / "cli-runs"), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    for key in ("group", "broken", "significance", "direction", "invariant_subgroup", "seconds",
                "runs"):
        assert key in verdict
    store = folder / "cli-runs" / "discoveries"
    record = next(store.iterdir())
    assert {"request.json", "status.json", "result.json", "evidence.nc"} <= {
        p.name for p in record.iterdir()}
    assert len(list((record / "runs").iterdir())) == len(verdict["runs"]) == 3


def test_a_dask_cluster_runs_the_training(rotation, folder):
    """The same discovery with its runs on a Dask LocalCluster on 127.0.0.1."""
    evidence = discover(rotation[0], "C4", protocol="quick", seeds=1, runs=folder / "dask-runs",
                        scheduler="local")
    verdict = verdict_json(evidence)
    assert verdict["direction"]["label"] == "top", verdict
    runs = folder / "dask-runs" / "discoveries" / evidence.attrs["discovery"] / "runs"
    assert len([p for p in runs.iterdir() if (p / "weights.safetensors").exists()]) == 3

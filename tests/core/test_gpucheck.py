"""`python -m core gpu-check`: the quick CPU run (what a GPU box runs, shrunk), its report and its
handling of bad input. The check itself runs on a GPU when a session is lent one."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import build_model
from core.gpucheck import STEPS, GpuCheck, translation_error, _extrapolate
from core.reproduce import FAMILIES, PRESETS

ROOT = Path(__file__).resolve().parents[2]
# a GPU box has no dashboard packages and no Dask: the check must run without them
# (a None in sys.modules is what Python reports for a package that is not installed)
BLOCK = ("import runpy, sys\n"
         "for name in sys.argv[1].split(','):\n"
         "    sys.modules[name] = None\n"
         "sys.argv = ['core'] + sys.argv[2:]\n"
         "runpy.run_module('core', run_name='__main__')\n")
GPU_BOX_LACKS = "panel,holoviews,bokeh,param,dask,distributed"


def _check(tmp_path, *args, block=GPU_BOX_LACKS):
    proc = subprocess.run([sys.executable, "-c", BLOCK, block, "gpu-check", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc


def test_quick_check_runs_every_step_without_dashboard_packages(tmp_path):
    proc = _check(tmp_path, "--device", "cpu", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [s["name"] for s in report["steps"]] == list(STEPS)
    for step in report["steps"]:
        assert step["status"] in ("passed", "skipped"), step
        assert step["status"] == "passed" or step["reason"], step  # a skip says why
        assert step["seconds"] >= 0
    results = {s["name"]: s["results"] for s in report["steps"]}
    assert results["environment"]["packages"]["torch"] == torch.__version__.split("+")[0] or \
        results["environment"]["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    rows = {(r["model"], r["group"]): r for r in results["correctness"]["models"]}
    for exact in [("gconv", "C4"), ("rgroup", "D4"), ("conv", "translation"),
                  ("rgroup", "translation"), ("rsteer", "C4")]:
        assert rows[exact]["exact"] and rows[exact]["equivariance"] <= 1e-5
    assert all(r["relaxed_grads_nonzero"] for r in rows.values() if r["relaxed_weights"])
    assert all(r["loss_finite"] for r in rows.values())
    assert results["jobs"]["done_state"] == "done"
    assert results["jobs"]["cancelled_state"] == "cancelled"
    sim = results["simulator"]
    assert sim["sibling_error"] == 0.0 and sim["max_divergence"] < 1e-4
    speed = {r["model"] for r in results["speed"]["rows"]}
    assert {"paper-conv", "paper-rgroup", "paper-steer"} <= speed
    assert results["speed"]["comparable"] is False  # not an H200
    assert [r["model"] for r in results["reproduce"]["models"]] == ["conv", "gconv", "rgroup",
                                                                   "rsteer"]
    assert results["reproduce"]["estimate"]["hours"] > 0
    markdown = (tmp_path / "gpu-check.md").read_text()
    assert all(f"| {name} | passed" in markdown for name in STEPS)
    assert "6 passed, 0 failed, 0 skipped" in proc.stdout


def test_missing_h5netcdf_skips_the_jobs_step_and_says_so(tmp_path):
    proc = _check(tmp_path, "--device", "cpu", "--quick", "--out", str(tmp_path),
                  "--steps", "environment,jobs", block=GPU_BOX_LACKS + ",h5netcdf")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # skipped is not failed
    steps = {s["name"]: s for s in json.loads((tmp_path / "gpu-check.json").read_text())["steps"]}
    assert steps["jobs"]["status"] == "skipped" and "h5netcdf" in steps["jobs"]["reason"]
    assert steps["environment"]["results"]["packages"]["panel"] is not None  # installed, blocked


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_in_one_line_and_skips_the_rest(tmp_path):
    proc = _check(tmp_path, "--quick", "--out", str(tmp_path), "--steps",
                  "environment,correctness,simulator")
    assert proc.returncode == 1
    steps = {s["name"]: s for s in json.loads((tmp_path / "gpu-check.json").read_text())["steps"]}
    assert steps["environment"]["status"] == "failed"
    assert "CUDA is not available" in steps["environment"]["reason"]
    assert "\n" not in steps["environment"]["reason"]
    assert {steps[n]["status"] for n in ("correctness", "simulator")} == {"skipped"}
    assert "Traceback" not in proc.stderr


def test_an_unwritable_out_is_reported_and_the_steps_still_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _check(tmp_path, "--device", "cpu", "--quick", "--out", str(blocker / "report"),
                  "--steps", "environment")
    assert proc.returncode == 1
    assert "cannot be written" in proc.stdout + proc.stderr
    assert "environment  passed" in proc.stdout
    assert blocker.read_text() == "not a folder"


def test_bad_options_exit_2_with_one_line(tmp_path):
    for args in (["--minutes", "0"], ["--steps", "environment,warp"]):
        proc = _check(tmp_path, "--device", "cpu", "--out", str(tmp_path), *args)
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:")
    assert not (tmp_path / "gpu-check.json").exists()


def test_a_step_that_raises_is_reported_and_the_next_still_runs(tmp_path, monkeypatch):
    import core.gpucheck as gc

    def broken(check):
        raise RuntimeError("CUDA error: an illegal memory access\nsecond line")

    monkeypatch.setitem(gc.STEP_FUNCTIONS, "simulator", broken)
    report = GpuCheck(tmp_path, device="cpu", quick=True,
                      steps=("environment", "simulator", "reproduce"), say=lambda _: None).run()
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["simulator"]["status"] == "failed"
    assert steps["simulator"]["reason"] == "RuntimeError: CUDA error: an illegal memory access"
    assert steps["reproduce"]["status"] == "passed"  # simulates its own data then
    assert steps["environment"]["status"] == "passed"


def test_time_budget_spent_skips_instead_of_failing(tmp_path):
    check = GpuCheck(tmp_path, device="cpu", quick=True, minutes=1e-9, say=lambda _: None)
    report = check.run()
    assert {s["status"] for s in report["steps"]} == {"skipped"}
    assert all("time budget" in s["reason"] for s in report["steps"])


def test_translation_check_is_exact_for_convs_and_sees_broken_symmetry():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 32, 32, dtype=torch.float64)
    conv = build_model("rgroup", group="translation", in_frames=2, hidden_dim=8, num_layers=3,
                       num_banks=2, grid=(32, 32)).double()
    assert translation_error(conv.eval(), x) < 1e-12
    with torch.no_grad():  # a relaxed map that varies across the interior breaks translation
        for w in conv.relaxed_weights().values():
            w.add_(0.5 * torch.linspace(0, 1, 32, dtype=torch.float64))
    assert translation_error(conv, x) > 1e-3


def test_extrapolation_scales_with_the_measured_epoch_time():
    preset = PRESETS["gpu"]
    one = _extrapolate({"conv": 1.0, "gconv": 2.0, "rgroup": 3.0, "rsteer": 4.0}, preset, FAMILIES)
    two = _extrapolate({"conv": 2.0, "gconv": 4.0, "rgroup": 6.0, "rsteer": 8.0}, preset, FAMILIES)
    assert two["hours"] == pytest.approx(2 * one["hours"]) and one["hours"] > 0

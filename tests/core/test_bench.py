"""The benchmark command: structure and ratios of its report (never wall times)."""
import json

import pytest
import torch

from core.__main__ import main
from core.bench import NaiveRelaxedGroupNet, run_benchmark

from .conftest import equivariance_error

TINY = dict(grid=(8, 8), batch=1, hidden_dim=8, num_layers=2, in_frames=1, repeats=1, warmup=0,
            sample_seconds=0.0)


def test_report_has_every_entry_with_ratios_from_the_same_run():
    report = run_benchmark(models="conv,gconv,rgroup,naive-rgroup,rsteer,steer", progress=None,
                           suite="models", **TINY)
    by = {r["model"]: r for r in report["results"]}
    assert set(by) == {"conv", "gconv", "rgroup", "naive-rgroup", "rsteer", "steer"}
    for r in by.values():
        assert r["train_ms"] > 0 and r["rollout_ms"] > 0 and r["params"] > 0
        assert r["train_vs_conv"] == pytest.approx(r["train_ms"] / by["conv"]["train_ms"])
    assert by["rgroup"]["strict"] == "gconv" and by["rsteer"]["strict"] == "steer"
    assert by["rgroup"]["rollout_vs_strict"] == pytest.approx(
        by["rgroup"]["rollout_ms"] / by["gconv"]["rollout_ms"])
    assert by["naive-rgroup"]["params"] == by["rgroup"]["params"]
    assert [t["kind"] for t in report["targets"]] == ["train", "rollout"]
    assert all(isinstance(t["passed"], bool) for t in report["targets"])
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__


def test_naive_baseline_is_the_same_kind_of_function(float64):
    """The reference we compare speed against is a genuine C4-equivariant relaxed network."""
    model = NaiveRelaxedGroupNet(order=4, in_frames=2, hidden_dim=8, num_layers=3).eval()
    assert equivariance_error(model, torch.randn(1, 4, 9, 9), "C4") < 1e-8
    assert model.penalty().item() == 0.0


def test_cli_prints_json(capsys):
    code = main(["bench", "--json", "--models", "conv,gconv", "--grid", "8", "8", "--batch", "1",
                 "--hidden", "8", "--layers", "2", "--frames", "1", "--repeats", "1",
                 "--warmup", "0", "--sample-seconds", "0", "--suite", "models"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"machine", "settings", "results", "targets"}
    assert [r["model"] for r in report["results"]] == ["conv", "gconv"]


def test_cli_rejects_unknown_models_by_name(capsys):
    assert main(["bench", "--models", "conv,nonsense"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "rgroup" in err


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"]])
def test_help_runs(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_simulation_suite_reports_throughput_and_target():
    report = run_benchmark(suite="simulation", sim_batches=(1, 2), sim_steps=2, progress=None)
    assert report["results"] == [] and report["targets"] == []
    sim = report["simulation"]
    assert [r["batch"] for r in sim["rows"]] == [1, 2]
    assert sim["rows"][0]["speedup_vs_batch1"] == 1.0
    assert sim["rotation_scenario_s"] == pytest.approx(36 * 310 / sim["rows"][1]["sim_steps_per_s"])
    assert sim["target"]["limit_s"] == 60.0 and isinstance(sim["target"]["passed"], bool)


def test_paper_suite_reports_epoch_time_and_published_numbers():
    report = run_benchmark(suite="paper", grid=(8, 8), repeats=1, warmup=0, sample_seconds=0.0,
                           progress=None)
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == {"paper-conv", "paper-rgroup-translation", "paper-rsteer", "paper-rgroup",
                         "paper-steer"}
    rgroup = rows["paper-rgroup"]  # 32 regular C4 fields = 128 channels
    assert rgroup["hidden_dim"] == 128 and rgroup["batch"] == 8 and rgroup["precision"] == "fp32"
    assert rgroup["epoch_s"] == pytest.approx(rgroup["train_ms"] * 560 / 1e3)
    assert rgroup["published_h200_train_ms"] == 90.0 and report["targets"] == []
    assert rows["paper-steer"]["published_h200_rollout_ms"] == 30.0

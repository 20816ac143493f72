"""The tiny reproduce preset runs every stage end to end."""
import json

from core.__main__ import main


def test_tiny_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["reproduce", "--preset", "tiny", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    scenarios = {r["scenario"] for r in results["table"]}
    assert {"translation", "rotation"} <= scenarios
    models = {(r["scenario"], r["model"]) for r in results["table"]}
    for name in ("mlp", "conv", "gconv", "steer", "rgroup", "rsteer", "rpp", "lift", "combo"):
        assert ("rotation", name) in models
    assert ("translation", "constrained") in models
    assert all(r["failed"] == 0 for r in results["table"]), [r for r in results["table"]
                                                             if r["failed"]]
    assert {r["level"] for r in results["levels"]} == {0, 1}
    assert set(results["discovery"]) == {"boundary", "direction", "symmetric", "budget_curve"}
    assert results["discovery"]["symmetric"]["broken"] is False
    text = (out / "results.md").read_text()
    for heading in ("Rollout RMSE", "beat both", "Figure 4", "Discovery"):
        assert heading in text

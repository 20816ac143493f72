"""Figures of a reproduce results folder are drawn by the dashboard package, not by core."""
import json

from dashboard.reports import main


def test_reports_draw_the_reproduce_figures(tmp_path):
    results = dict(
        levels=[dict(level=0, model="rgroup", data_error=0.0, model_error=0.001),
                dict(level=1, model="rgroup", data_error=0.3, model_error=0.01),
                dict(level=0, model="gconv", data_error=0.0, model_error=0.0)],
        table=[dict(scenario="rotation", model="conv", future_mean=0.2),
               dict(scenario="rotation", model="rgroup", future_mean=None)])
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path)]) == 0
    for name in ("figure4.html", "rmse-rotation.html"):
        text = (tmp_path / name).read_text()
        assert "<html" in text.lower() and "cdn.bokeh.org" not in text  # inlined, offline


def test_reports_refuse_a_folder_without_results(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err

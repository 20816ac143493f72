"""The scale group in the dashboard: offered, with only the models that accept it, and the
breaking plots of relaxed scale models."""
import holoviews as hv
import torch

from core import build_model
from core.analysis import breaking_analysis
from dashboard import plots
from dashboard.state import GROUP_CHOICES, valid_models


def _model(name="rsteer"):
    torch.manual_seed(0)
    return build_model(name, group="scale", in_frames=2, hidden_dim=8, num_layers=3,
                       grid=(12, 12))


def test_scale_is_offered_with_only_its_models():
    assert "scale" in GROUP_CHOICES
    assert valid_models("scale") == ["steer", "rsteer"]


def test_scale_breaking_plots_render():
    model = _model()
    with torch.no_grad():
        model.relaxed_weights()["net.2"][:, 1] += 0.3  # scale 1.5 of the middle layer
    analysis = breaking_analysis(model)
    maps = plots.weights_heatmaps(analysis)
    assert isinstance(maps, hv.Layout)
    heat = next(p for p in maps if isinstance(p, hv.HeatMap))
    frame = heat.dframe()
    assert set(frame["scale"]) == {"x1", "x1.5", "x2", "x2.5"}
    row = frame[(frame["layer"] == "net.2")].set_index("scale")["variation"]
    assert row["x1.5"] == row.max() > 0
    bars = plots.breaking_bars(analysis)
    assert isinstance(bars, hv.Bars)
    parts = bars.dframe().groupby("part")["score"].sum()
    assert parts["across scales"] > 0
    for obj in (maps, bars):
        hv.render(obj, backend="bokeh")


def test_symmetric_scale_model_draws_zero_variation():
    analysis = breaking_analysis(_model())
    heat = next(p for p in plots.weights_heatmaps(analysis) if isinstance(p, hv.HeatMap))
    assert (heat.dframe()["variation"] == 0).all()
    assert isinstance(plots.weights_heatmaps(breaking_analysis(_model("steer"))), hv.Text)


def test_experiment_panel_builds_a_scale_spec(tmp_path):
    from core.datasets import generate, save_dataset
    from dashboard.state import ExperimentState, Services

    data = tmp_path / "data"
    data.mkdir()
    save_dataset(generate("scale", grid=12, steps=30, sims=3, device="cpu"), data / "scale.nc")
    services = Services(data_root=data, runs_root=tmp_path / "runs")
    try:
        state = ExperimentState(services)
        state.dataset, state.group = "scale.nc", "scale"
        assert state.param.model.objects == ["steer", "rsteer"]
        assert state.model in ("steer", "rsteer")
        state.model, state.alpha = "rsteer", "1e-3"
        spec = state.model_spec()
        assert (spec["name"], spec["group"], spec["grid"]) == ("rsteer", "scale", [12, 12])
        state.alpha = "strict"
        assert state.model_spec()["name"] == "steer"
    finally:
        services.jobs.shutdown()

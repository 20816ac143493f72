"""dashboard.plots: element types and dims, colour limits, orientation, NaN handling, rendering."""
import math

import holoviews as hv
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from core import build_model
from core.analysis import breaking_analysis, equivariance_error
from core.datasets import WindowDataset, data_equivariance_error, generate, save_dataset
from core.jobs import evaluate_model
from core.runs import RunStore
from core.training import train
from dashboard import plots

SPEC = dict(name="rgroup", group="C4", in_frames=2, hidden_dim=16, num_layers=3, num_banks=2,
            alpha=1e-3)


@pytest.fixture(scope="module", autouse=True)
def bokeh():
    hv.extension("bokeh")


def render(obj):
    """The bokeh model of ``obj``; raises if HoloViews cannot plot it."""
    return hv.renderer("bokeh").get_plot(obj).state


def small(name, group, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_banks", 2 if name == "rgroup" else 1)
    return build_model(name, group=group, in_frames=2, hidden_dim=16, num_layers=3,
                       grid=(16, 16), **kw)


def clim(element):
    return element.opts.get().kwargs["clim"]


@pytest.fixture(scope="module")
def ds():
    return generate("rotation", grid=16, steps=60, sims=8, device="cpu")


@pytest.fixture(scope="module")
def trained(ds):
    model, result = train(SPEC, ds, dict(epochs=2, batches_per_epoch=3, batch_size=4,
                                         device="cpu", threads=2))
    return model, result


@pytest.fixture(scope="module")
def metrics(ds, trained):
    model, result = trained
    final = evaluate_model(model, ds, steps=5, max_samples=8)
    return xr.merge([result.history_dataset(), final])


@pytest.fixture(scope="module")
def inputs(ds):
    windows = WindowDataset(ds, "future", 2, 1)
    return torch.stack([windows[i][0] for i in range(4)])


# ------------------------------------------------------------------------------------ weights
def _layer_rows(hm, layer: str) -> np.ndarray:
    """The HeatMap's rows of one layer as a mask over its points."""
    return np.array([r.startswith(f"{layer} (") for r in hm.dimension_values("row")])


def test_group_heatmap_has_a_row_per_layer_and_bank_in_group_order(trained):
    analysis = breaking_analysis(trained[0])
    hm = plots.weights_heatmaps(analysis)
    assert isinstance(hm, hv.HeatMap)
    assert [d.name for d in hm.kdims] == ["element", "row"]
    assert [d.name for d in hm.vdims] == ["relative", "deviation", "weight", "score"]
    assert clim(hm) == (-1.0, 1.0)
    for i, layer in enumerate(analysis["layer"].values):
        rows = _layer_rows(hm, str(layer))
        raw = analysis["weights"].values[i]
        dev = hm.dimension_values("deviation")[rows]
        np.testing.assert_allclose(np.sort(hm.dimension_values("weight")[rows]),
                                   np.sort(raw.ravel()))
        np.testing.assert_allclose(dev.reshape(2, 4), raw - raw.mean(1, keepdims=True),
                                   atol=1e-12)
        # each layer fills the colour scale by itself: its largest deviation sits at ±1
        relative = hm.dimension_values("relative")[rows]
        assert np.abs(relative).max() == pytest.approx(1.0)
        np.testing.assert_allclose(relative * np.abs(dev).max(), dev, atol=1e-12)
        np.testing.assert_allclose(hm.dimension_values("score")[rows],
                                   analysis["breaking_score"].values[i])
    plot = render(hm)
    assert list(plot.x_range.factors) == ["rot0", "rot90", "rot180", "rot270"]
    score = plots._score(analysis["breaking_score"].values[0])
    assert list(plot.y_range.factors)[-1] == f"layers.0 ({score}) · bank 0", "first layer on top"
    assert plot.sizing_mode == "stretch_both" and plot.min_height >= 250


def test_symmetric_layer_has_zero_deviation_and_a_white_colour_scale():
    hm = plots.weights_heatmaps(breaking_analysis(small("rgroup", "D4")))  # exactly symmetric
    assert np.all(hm.dimension_values("deviation") == 0)
    assert np.all(hm.dimension_values("relative") == 0)
    lo, hi = clim(hm)
    # zero sits at the centre of the diverging palette: a uniform white map
    assert (0 - lo) / (hi - lo) == 0.5


def test_rounding_level_deviation_stays_white_but_real_breaking_fills_the_scale():
    model = small("rgroup", "C4")
    weights = model.relaxed_weights()
    with torch.no_grad():
        weights["layers.0"][0, 0] += 1e-9
        weights["layers.1"][1, 2] += 0.3
    hm = plots.weights_heatmaps(breaking_analysis(model))
    relative = np.abs(hm.dimension_values("relative"))
    assert relative[_layer_rows(hm, "layers.0")].max() <= 1e-3
    assert relative[_layer_rows(hm, "layers.1")].max() == pytest.approx(1.0)


def test_translation_maps_are_y_up_with_limits_about_the_mean_and_a_boundary():
    model = small("rgroup", "translation", num_banks=1)
    w = next(iter(model.relaxed_weights().values()))
    with torch.no_grad():
        w[0, :4] += 0.5  # rows 0..3: the bottom quarter of the domain
    analysis = breaking_analysis(model)
    layout = plots.weights_heatmaps(analysis, boundary_x=8.0)
    assert isinstance(layout, hv.Layout) and len(layout) == analysis.sizes["layer"]
    overlay = layout.values()[0]
    image, line = overlay.get(0), overlay.get(1)
    assert isinstance(image, hv.Image) and isinstance(line, hv.VLine)
    assert line.data == 8.0 and line.opts.get().kwargs["line_dash"] == "dashed"
    assert image.bounds.lbrt() == (0, 0, 16, 16)
    raw = analysis["weights"].values[0, 0]
    assert image[0.5, 0.5] == pytest.approx(raw[0, 0]) and image[0.5, 0.5] > image[0.5, 15.5]
    lo, hi = clim(image)
    assert (lo + hi) / 2 == pytest.approx(raw.mean()) and hi - lo > 0
    for missing in (None, math.nan):
        overlay = plots.weights_heatmaps(analysis, boundary_x=missing).values()[0]
        assert len(overlay) == 1
    render(layout)


def test_steerable_other_and_none_kinds():
    steer = plots.weights_heatmaps(breaking_analysis(small("rsteer", "C4")))
    assert isinstance(steer, hv.Layout)
    img = steer.values()[0]
    assert isinstance(img, hv.Image) and [d.name for d in img.kdims] == ["kx", "ky"]
    norms = plots.weights_heatmaps(breaking_analysis(small("rpp", "C4")))
    assert isinstance(norms, hv.Bars) and norms.vdims[0].name == "norm"
    assert isinstance(plots.weights_heatmaps(breaking_analysis(small("gconv", "C4"))), hv.Text)
    assert isinstance(plots.weights_heatmaps(None), hv.Text)
    for obj in (steer, norms):
        render(obj)


def test_breaking_bars_group_fractions_sum_to_one(trained):
    analysis = breaking_analysis(trained[0])
    bars = plots.breaking_bars(analysis)
    assert isinstance(bars, hv.Bars) and [d.name for d in bars.kdims] == ["layer", "irrep"]
    assert bars.opts.get().kwargs["stacked"] is True
    assert "score" in bars.opts.get().kwargs["title"]
    frame = bars.dframe()
    np.testing.assert_allclose(frame.groupby("layer")["fraction"].sum(), 1.0, rtol=1e-9)
    render(bars)


@pytest.mark.parametrize("name,group,kind", [("rgroup", "translation", hv.Bars),
                                             ("rsteer", "C4", hv.Bars),
                                             ("constrained", "translation", hv.Bars),
                                             ("rpp", "C4", hv.Text),  # scores are NaN
                                             ("gconv", "C4", hv.Text)])
def test_breaking_bars_other_kinds(name, group, kind):
    obj = plots.breaking_bars(breaking_analysis(small(name, group)))
    assert isinstance(obj, kind)
    render(obj)


# ------------------------------------------------------------------------------------ training
def test_training_curves_full_partial_and_empty(metrics, trained):
    overlay = plots.training_curves(metrics, "rgroup")
    assert isinstance(overlay, hv.Overlay)
    curves = [el for el in overlay if isinstance(el, hv.Curve)]
    assert {c.vdims[0].name for c in curves} == {"train_loss", "valid_rmse"}
    assert all(len(c) == 2 for c in curves)
    assert overlay.opts.get().kwargs["logy"] is True
    assert overlay.opts.get().kwargs["xticks"] == [1, 2]
    one = plots.training_curves(trained[1].history[:1])
    assert {len(el) for el in one} == {1}
    for empty in ([], None, xr.Dataset(coords={"epoch": []}), xr.Dataset()):
        waiting = plots.training_curves(empty)
        assert isinstance(waiting, hv.Overlay) and isinstance(waiting.get(0), hv.Text)
        assert "waiting" in waiting.get(0).text
    nan_rows = [dict(epoch=1, train_loss=math.nan, valid_rmse=None)]
    assert isinstance(plots.training_curves(nan_rows).get(0), hv.Text)
    for obj in (overlay, one, plots.training_curves([])):
        render(obj)


def test_rollout_curves_solid_future_dashed_domain(metrics):
    only_future = metrics.drop_vars(["domain_rmse_step", "domain_rmse"])
    overlay = plots.rollout_curves({"a": metrics, "b": only_future, "c": None,
                                    "d": xr.Dataset()})
    labels = [c.label for c in overlay]
    assert labels == ["a (future)", "a (domain)", "b (future)"]
    dashes = [c.opts.get().kwargs["line_dash"] for c in overlay]
    assert dashes == ["solid", "dashed", "solid"]
    first = overlay.get(0)
    assert first.kdims[0].name == "rollout_step" and len(first) == 5
    assert isinstance(plots.rollout_curves({}).get(0), hv.Text)
    render(overlay)


# ------------------------------------------------------------------------------------ flows
def solid_body(h=12, w=12, omega=0.3):
    y, x = np.mgrid[0:h, 0:w] + 0.5  # y grows with the row index
    return np.stack([-omega * (y - h / 2), omega * (x - w / 2)])


def test_vorticity_of_counter_clockwise_rotation_is_positive_and_uniform():
    field = solid_body()
    vort = plots.vorticity(field)
    np.testing.assert_allclose(vort[1:-1, 1:-1], 0.6, rtol=1e-12)
    assert (vort > 0).all()
    panel = plots.flow_panel(field, field, "vorticity", arrows=4)
    image = panel.values()[0].get(0)
    assert image[6.5, 6.5] == pytest.approx(0.6)
    np.testing.assert_allclose(plots.speed(field)[6, 6], 0.3 * math.hypot(0.5, 0.5))


def test_flow_panel_is_y_up_with_thinned_arrows():
    field = np.zeros((2, 12, 12))
    field[0, 0] = 1.0  # u = 1 along the bottom row only
    panel = plots.flow_panel(field, field * 0.5, "speed", arrows=4)
    assert isinstance(panel, hv.Layout) and len(panel) == 3
    truth = panel.values()[0]
    image, arrows = truth.get(0), truth.get(1)
    assert image[5.5, 0.5] == 1.0 and image[5.5, 11.5] == 0.0
    assert isinstance(arrows, hv.VectorField) and len(arrows) == 16  # 12 // 4 = every 3rd cell
    assert [d.name for d in panel.values()[2].get(0).vdims] == ["speed_error"]
    render(panel)


def test_flow_frames_share_limits_over_steps(ds):
    truth = ds["velocity"].values[0, 20:25]
    pred = truth + 0.05 * np.random.default_rng(0).standard_normal(truth.shape)
    hmap = plots.flow_frames(truth, pred, "vorticity", arrows=4)
    assert isinstance(hmap, hv.HoloMap) and hmap.kdims[0].name == "step"
    assert list(hmap.keys()) == [1, 2, 3, 4, 5]
    limits = {(clim(hmap[k].values()[0].get(0)), clim(hmap[k].values()[1].get(0)))
              for k in hmap.keys()}
    assert len(limits) == 1
    (lo, hi), same = limits.pop()
    assert same == (lo, hi) and lo == -hi
    assert hi == pytest.approx(max(np.abs(plots.vorticity(truth)).max(),
                                   np.abs(plots.vorticity(pred)).max()))
    error_limits = {clim(hmap[k].values()[2].get(0)) for k in hmap.keys()}
    assert len(error_limits) == 1 and error_limits != {(lo, hi)}
    speed = plots.flow_frames(truth, pred, "speed", steps=[10, 11, 12])
    assert list(speed.keys()) == [10, 11, 12] and clim(speed[10].values()[0].get(0))[0] == 0
    render(hmap)
    render(hmap.collate())
    with pytest.raises(ValueError, match="quantity"):
        plots.flow_frames(truth, pred, "pressure")


def test_flow_frames_with_missing_or_nan_input():
    assert isinstance(plots.flow_frames(None, np.zeros((2, 2, 8, 8))), hv.Text)
    assert isinstance(plots.flow_frames(np.zeros((2, 2, 8, 8)), np.zeros((2, 2, 6, 6))), hv.Text)
    truth = np.full((2, 2, 8, 8), np.nan)
    hmap = plots.flow_frames(truth, np.zeros((2, 2, 8, 8)))
    assert isinstance(hmap, hv.HoloMap)
    assert [type(p) for p in hmap[1].values()] == [hv.Text, hv.Overlay, hv.Text]
    render(hmap[1])


# ------------------------------------------------------------------------------------ equivariance
def test_equivariance_bars(trained, inputs, metrics):
    err = equivariance_error(trained[0], inputs, "C4")
    bars = plots.equivariance_bars(err)
    assert isinstance(bars, hv.Bars)
    assert list(bars.dimension_values("element")) == ["rot0", "rot90", "rot180", "rot270"]
    np.testing.assert_allclose(bars.dimension_values("relative"), err["relative"].values)
    so2 = plots.equivariance_bars(equivariance_error(small("rsteer", "SO2"), inputs, "SO2"))
    assert "rot45*" in list(so2.dimension_values("element"))
    assert isinstance(plots.equivariance_bars(metrics), hv.Bars)
    broken = err.copy(deep=True)
    broken["relative"][1] = np.inf
    assert len(plots.equivariance_bars(broken)) == 3
    assert isinstance(plots.equivariance_bars(None), hv.Text)
    for obj in (bars, so2):
        render(obj)


def test_equivariance_vs_data_has_a_curve_per_model_and_a_reference(ds, trained, inputs):
    data = float(data_equivariance_error(ds).mean())
    strict = equivariance_error(small("gconv", "C4"), inputs, "C4").attrs["mean"]
    relaxed = equivariance_error(trained[0], inputs, "C4").attrs["mean"]
    points = [dict(data_error=0.0, model_error=0.0, model="rgroup"),
              dict(data_error=data, model_error=relaxed, model="rgroup"),
              dict(data_error=data, model_error=strict, model="gconv"),
              dict(data_error=math.nan, model_error=0.1, model="gconv"), {}]
    overlay = plots.equivariance_vs_data(points)
    steps = next(el for el in overlay if isinstance(el, hv.Segments))
    # rgroup's two points joined in order of data error; gconv's single point has no line
    assert list(steps.dimension_values("model")) == ["rgroup"]
    assert steps.dframe()[["data_error", "data_error_to"]].values.tolist() == [[0.0, data]]
    dots = next(el for el in overlay if isinstance(el, hv.Scatter))
    assert list(dots.dimension_values("model")) == ["rgroup", "rgroup", "gconv"]  # NaN left out
    slope = [el for el in overlay if isinstance(el, hv.Slope)]
    assert len(slope) == 1 and slope[0].slope == 1 and slope[0].y_intercept == 0
    assert isinstance(plots.equivariance_vs_data([]).get(0), hv.Text)
    plot = render(overlay)
    lines_color, dots_color = (r.glyph for r in plot.renderers[:2])
    mapper = dots_color.fill_color.transform
    assert list(mapper.factors) == ["rgroup", "gconv"]
    # the lines are coloured by the markers' model colours, and drawn from point to point
    assert lines_color.line_color.transform.palette == mapper.palette
    drawn = plot.renderers[0].data_source.data
    assert [drawn[lines_color.x0][0], drawn[lines_color.x1][0]] == [0.0, data]
    assert [drawn[lines_color.y0][0], drawn[lines_color.y1][0]] == [0.0, relaxed]


# ------------------------------------------------------------------------------------ sweeps
def test_sweep_plot_puts_alpha_zero_left_and_averages_seeds():
    rows = [dict(alpha=a, num_banks=b, future_rmse=0.5 + a + 0.01 * s)
            for a in (0.0, 1e-4, 1e-2, 1.0) for b in (1, 2) for s in range(3)]
    rows += [dict(alpha=0.1, num_banks=1, future_rmse=None), dict(alpha=None, future_rmse=1.0)]
    refs = {"strict (gconv)": 0.8, "free (conv)": 0.9, "missing": math.nan}
    overlay = plots.sweep_plot(rows, references=refs)
    curves = [el for el in overlay if isinstance(el, hv.Curve)]
    assert [c.label for c in curves] == ["1 bank", "2 banks"]
    xs = curves[0].dimension_values(0)
    assert xs[0] == pytest.approx(1e-5) and xs[0] < xs[1] == 1e-4
    assert plots.zero_alpha_position([0, 1e-4, 1]) == pytest.approx(1e-5)
    np.testing.assert_allclose(curves[0].dimension_values(1)[1], 0.5 + 1e-4 + 0.01)
    errorbars = [el for el in overlay if isinstance(el, hv.ErrorBars)]
    assert len(errorbars) == 2 and errorbars[0].dimension_values(2)[0] == pytest.approx(0.01)
    lines = [el for el in overlay if isinstance(el, hv.HLine)]
    assert [line.data for line in lines] == [0.8, 0.9]
    texts = [el.text.strip() for el in overlay if isinstance(el, hv.Text)]
    assert texts == ["strict (gconv)", "free (conv)"]
    opts = overlay.opts.get().kwargs
    assert opts["logx"] is True and opts["xticks"][0] == (pytest.approx(1e-5), "0")
    assert opts["ylim"][0] < 0.5 and opts["ylim"][1] > 0.9  # reference lines stay in view
    plot = render(overlay)
    assert "0" in plot.xaxis[0].major_label_overrides.values()
    single = plots.sweep_plot([dict(alpha=0.0, future_rmse=0.4)])
    assert not [el for el in single if isinstance(el, hv.ErrorBars)]
    render(single)
    assert isinstance(plots.sweep_plot([]).get(0), hv.Text)
    assert isinstance(plots.sweep_plot(rows, metric="domain_rmse").get(0), hv.Text)


# ------------------------------------------------------------------------------------ table
def test_runs_table_frame_from_a_run_store(tmp_path, ds):
    path = save_dataset(ds, tmp_path / "rotation.nc")
    store = RunStore(tmp_path / "runs")
    run = store.create(dict(SPEC, grid=[16, 16]), {"epochs": 2}, path, run_id="r1")
    run.update_status(state="running", progress=0.25)
    (tmp_path / "runs" / "broken").mkdir()
    frame = plots.runs_table_frame(store.list())
    assert list(frame.columns) == list(plots.TABLE_COLUMNS)
    assert frame.index.name == "run" and set(frame.index) == {"r1", "broken"}
    row = frame.loc["r1"]
    assert (row["model"], row["group"], row["banks"], row["alpha"]) == ("rgroup", "C4", 2, 1e-3)
    assert row["dataset"] == "rotation.nc" and row["state"] == "running"
    assert "progress %" not in frame.columns and math.isnan(row["future RMSE"])
    assert len(row["created"]) == 19
    broken = frame.loc["broken"]
    assert broken["state"] == "damaged" and broken["model"] == "" and broken["banks"] is pd.NA
    empty = plots.runs_table_frame([])
    assert list(empty.columns) == list(plots.TABLE_COLUMNS) and len(empty) == 0



# ------------------------------------------------------------------------------------ discovery
def _shipped_evidence(data: str) -> xr.Dataset:
    from pathlib import Path

    from core.discovery import DiscoveryStore

    store = DiscoveryStore(Path(__file__).resolve().parents[2] / "data" / "pretrained")
    row = next(r for r in store.list() if r["data"] == data)
    return store.get(row["id"]).evidence()


def test_discovery_gains_put_data_beside_null_per_member():
    evidence = _shipped_evidence("discover-rotation.nc")
    plot = plots.discovery_gains(evidence)
    bars = plot.Bars.I
    labels = [str(v) for v in bars.data["bar"]]
    assert {"top · data", "top · null", "bottom · data"} <= set(labels)
    gains = dict(zip(labels, bars.data["gain"]))
    assert gains["top · data"] == max(v for k, v in gains.items() if k.endswith("data"))
    assert max(abs(v) for k, v in gains.items() if k.endswith("null")) < 1e-3 * gains["top · data"]
    render(plot)


def test_discovery_maps_draw_data_null_difference_and_the_boundary():
    evidence = _shipped_evidence("discover-translation.nc")
    layout = plots.discovery_maps(evidence)
    assert len(layout) == 3
    titles = [panel.opts.get().kwargs.get("title", "") for panel in layout]
    assert any("data minus null" in t for t in titles)
    line = layout[0].VLine.I if evidence.attrs["boundary_axis"] == "x" else layout[0].HLine.I
    assert line.data == evidence.attrs["boundary_position"]
    render(layout)
    profile = plots.boundary_profile(evidence)
    assert {c.label for c in profile if isinstance(c, hv.Curve)} == {"along x", "along y"}
    render(profile)


def test_discovery_plots_explain_missing_evidence():
    for fn in (plots.discovery_gains, plots.discovery_maps, plots.boundary_profile,
               plots.discovery_weights):
        assert isinstance(fn(xr.Dataset()), hv.Text)


def test_flow_preview_draws_one_frame_with_arrows_or_says_why_not():
    frame = np.zeros((2, 6, 9))
    frame[1, 2:4, 3:5] = 1.0  # an updraught
    overlay = plots.flow_preview(frame, "upload")
    image, arrows = overlay.get(0), overlay.get(1)
    assert isinstance(image, hv.Image) and isinstance(arrows, hv.VectorField)
    assert image.dimension_values(2).max() == pytest.approx(1.0)  # speed of the updraught
    assert isinstance(plots.flow_preview(np.zeros((3, 4, 4))), hv.Text)

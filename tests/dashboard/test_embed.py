"""dashboard.embed: figures rendered once to Bokeh JSON, animations' frames as HoloViews draws
them."""
import json

import holoviews as hv
import numpy as np
import pytest
from bokeh.models import ColumnDataSource
from holoviews.plotting.bokeh.element import ElementPlot

from dashboard import plots
from dashboard.embed import StaticFigure, animation_json, figure_json


@pytest.fixture(scope="module", autouse=True)
def bokeh():
    plots.use_bokeh()


def _flows(steps=4, grid=12, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(steps, 2, grid, grid))
    return truth, truth + 0.1 * rng.normal(size=truth.shape)


def _drawn(figure) -> list[dict]:
    """What HoloViews puts in the Image sources of its own rendering of ``figure``, in plot
    order."""
    plot = hv.renderer("bokeh").get_plot(figure)
    sources = []
    for source in plot.traverse(lambda p: p.handles.get("source"), [ElementPlot]):
        if isinstance(source, ColumnDataSource) and source not in sources:
            sources.append(source)
    return [dict(source.data) for source in sources]


def _frames(rendered) -> np.ndarray:
    index = json.loads(rendered.index)
    per = sum(size for _id, _column, size in index)
    return np.frombuffer(rendered.frames, "<f4").reshape(rendered.count, per), index


def test_a_figure_becomes_one_bokeh_json_item_with_its_height():
    curve = hv.Curve(([0, 1, 2], [3, 1, 2])).opts(responsive=True, min_height=250, title="t")
    rendered = figure_json(curve, with_picture=False)
    item = json.loads(rendered.item)
    assert set(item) >= {"doc", "root_id"} and item["doc"]["roots"][0]["id"] == item["root_id"]
    assert rendered.height == 250 and rendered.frames is None and rendered.count == 1
    assert rendered.image == ""
    # with its picture (dashboard/raster.py): the same figure, at least as much room
    pictured = figure_json(curve)
    root = json.loads(pictured.item)["doc"]["roots"][0]
    assert root["name"] == item["doc"]["roots"][0]["name"] and pictured.height >= 250
    assert pictured.image.startswith("data:image/png;base64,")
    # HoloViews' theme travels with it (its title font), as in a live pane's document
    assert "12pt" in rendered.item


@pytest.mark.parametrize("arrows", [0, 4])
@pytest.mark.parametrize("quantity", ["vorticity", "speed"])
def test_every_frame_holds_what_holoviews_draws_for_that_step(quantity, arrows):
    truth, prediction = _flows()
    frames = plots.flow_frames(truth, prediction, quantity=quantity, arrows=arrows)
    rendered = animation_json(frames)
    data, index = _frames(rendered)
    assert rendered.count == len(frames) == 4
    assert "rollout step" not in rendered.item  # no layout title fixed at the first step
    moving = {column for _id, column, _size in index}
    assert "image" in moving and (("x0" in moving) == bool(arrows))
    for n, key in enumerate(frames.keys()):
        drawn = _drawn(frames[key])
        expected = []
        for source in drawn:
            for column, value in source.items():
                value = value[0] if isinstance(value, list) and len(value) == 1 else value
                if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
                    expected.append(np.ravel(value))
        expected = np.concatenate(expected)
        assert expected.shape == data[n].shape
        np.testing.assert_allclose(data[n], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        if n:
            assert not np.allclose(data[n], data[0])  # the steps differ


def test_frames_that_change_the_data_layout_are_refused():
    frames = hv.HoloMap({1: hv.Curve([1, 2, 3]), 2: hv.Curve([1, 2, 3, 4])}, kdims=["step"])
    with pytest.raises(ValueError, match="changes the figure's data layout"):
        animation_json(frames)


def test_the_component_carries_what_was_rendered():
    truth, prediction = _flows(steps=3)
    rendered = animation_json(plots.flow_frames(truth, prediction, arrows=0))
    figure = StaticFigure.of(rendered, frame=2)
    assert (figure.item, figure.frames, figure.count, figure.frame, figure.image) == (
        rendered.item, rendered.frames, 3, 2, rendered.image)
    assert rendered.image.startswith("data:image/png;base64,")  # the first step's picture
    assert figure.height == rendered.height and figure.sizing_mode == "stretch_width"

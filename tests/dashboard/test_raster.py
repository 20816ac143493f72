"""dashboard.raster: the figures' pictures, drawn by matplotlib from the Bokeh-styled HoloViews
objects: what they show (colours, orientation, layout), not how they look pixel for pixel."""
import io
import logging

import holoviews as hv
import numpy as np
import pytest
from PIL import Image

from dashboard import plots, raster
from dashboard.embed import figure_json, picture


@pytest.fixture(scope="module", autouse=True)
def bokeh():
    plots.use_bokeh()


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def _reds_and_blues(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 150) & (r - b > 80) & (r - g > 60), (b > 120) & (b - r > 60)


def _image_with_red_top():
    """A map whose upper half is +1 and lower half -1 (y grows upward), on a diverging map."""
    z = np.ones((20, 20))
    z[:10] = -1.0  # rows 0-9 are the bottom half: y grows with the row index
    return plots._image(np.arange(20), np.arange(20), z, ["x", "y"], "w").opts(
        cmap="RdBu_r", clim=(-1, 1), colorbar=True, tools=["hover"], responsive=True,
        min_height=250, title="halves")


def test_drawing_a_picture_leaves_the_current_backend_as_it_was():
    raster.figure_png(hv.Curve([1, 2]), 250)
    assert hv.Store.current_backend == "bokeh"


def test_a_picture_is_a_png_as_wide_as_the_page_and_as_high_as_the_bokeh_figure():
    curve = hv.Curve(([0, 1, 2], [3, 1, 2])).opts(responsive=True, min_height=250, title="t",
                                                  tools=["hover"], line_width=3)
    png = raster.figure_png(curve, 300)
    width, height = raster.png_size(png)
    assert 0.7 * raster.WIDTH <= width <= raster.WIDTH + 20
    assert 0.7 * 300 <= height <= 300 + 20


def test_colours_and_orientation_carry_over_from_the_bokeh_options():
    rgb = _rgb(raster.figure_png(_image_with_red_top(), 400))
    red, blue = _reds_and_blues(rgb)
    assert red.sum() > 2000 and blue.sum() > 2000  # RdBu_r from -1 to 1, not the default map
    rows = np.arange(rgb.shape[0])[:, None]
    # the colour bar has both colours too; the map's halves outweigh it
    assert (rows * red).sum() / red.sum() < (rows * blue).sum() / blue.sum(), \
        "+1 (red) is drawn below -1 (blue): the picture is upside down"


def test_a_sequential_map_draws_no_red():
    img = _image_with_red_top().opts(cmap="viridis", clim=(-1, 1))
    red, _ = _reds_and_blues(_rgb(raster.figure_png(img, 400)))
    assert red.sum() < 50


def test_options_without_a_matplotlib_meaning_are_dropped_and_styles_renamed():
    curve = hv.Curve([1, 2, 3]).opts(line_width=4, line_dash="dashed", color="red",
                                     tools=["hover"], responsive=True, title="c")
    drawn = raster._translated(curve)
    style = hv.Store.lookup_options("matplotlib", drawn, "style").kwargs
    plot = hv.Store.lookup_options("matplotlib", drawn, "plot").kwargs
    assert (style["linewidth"], style["linestyle"], style["color"]) == (4, "--", "red")
    assert plot["title"] == "c" and "tools" not in plot and "responsive" not in plot
    heat = raster._translated(hv.HeatMap([("a", "b", 1.0)]).opts(cmap="RdBu_r"))
    assert hv.Store.lookup_options("matplotlib", heat, "plot").kwargs["show_values"] is False


def test_a_layout_of_many_maps_is_as_high_as_its_rows_need():
    maps = [_image_with_red_top().opts(data_aspect=1) for _ in range(8)]
    png = raster.figure_png(hv.Layout(maps).cols(2), 400)
    width, height = raster.png_size(png)
    assert height > 1.2 * width  # four rows of two square maps
    assert width <= 2 * raster.PANEL_WIDTH + 40


def test_every_figure_a_tab_shows_gets_a_picture(caplog):
    """The shipped kinds of figure, and a message panel: each has a picture; a picture's
    height is at least the Bokeh figure's (the interactive figure keeps its room)."""
    frames = plots.flow_frames(np.random.default_rng(0).normal(size=(2, 2, 8, 8)),
                               np.random.default_rng(1).normal(size=(2, 2, 8, 8)), arrows=4)
    figures = [plots.message("n/a: nothing here", "title"),
               plots.rollout_curves({}),
               plots.equivariance_vs_data([dict(data_error=0.1, model_error=0.2, model="conv")]),
               plots.sweep_plot([], references={"free (conv)": 0.3}),
               frames[frames.keys()[0]]]
    with caplog.at_level(logging.WARNING):
        for figure in figures:
            rendered = figure_json(figure)
            assert rendered.image.startswith(raster.DATA_URL), type(figure)
            assert rendered.height >= figure_json(figure, with_picture=False).height
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_a_figure_matplotlib_cannot_draw_has_no_picture_and_says_why(caplog):
    with caplog.at_level(logging.WARNING):
        image, height = picture(hv.Div("<b>html</b>"), 123)
    assert (image, height) == ("", 123)
    assert "no picture for a Div" in caplog.text


def test_png_size_reads_the_header_and_refuses_anything_else():
    png = raster.figure_png(hv.Curve([1, 2]), 250)
    assert raster.png_size(png) == Image.open(io.BytesIO(png)).size
    with pytest.raises(ValueError, match="not a PNG"):
        raster.png_size(b"GIF89a" + bytes(20))

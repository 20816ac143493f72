"""Figures as PNG pictures, drawn once per process by matplotlib from the same HoloViews objects
the interactive (Bokeh) figures show.

A page that builds a Bokeh figure pays for it in its own CPU: some 0.1-0.3 s of a browser's
main thread per figure, several times the server's share of the same tab. Twenty pages of a
class sharing a small machine's cores with the server drew a tab in 5-10 s; with pictures, a tab
costs a page a decoded PNG (BENCHMARKS.md, "2026-12-01, late: figures as pictures"). So
:class:`dashboard.embed.StaticFigure` shows the picture first and builds the Bokeh figure
(hover, zoom, pan, save) when the reader asks for it.

Only the figure's content carries over: HoloViews keeps each backend's options apart, so the
options the plotting functions set for Bokeh are translated here (:data:`PLOT_OPTIONS`,
:data:`STYLE_OPTIONS`); what has no matplotlib meaning (tools, responsive sizes) is dropped. The
picture is a preview in matplotlib's style of what the interactive figure shows.
"""
from __future__ import annotations

import importlib
import io
import math
import sys
import threading

import holoviews as hv
import numpy as np
import holoviews.plotting.bokeh  # noqa: F401  (the options below are read from Bokeh's tree)

WIDTH = 1200  # px: about a laptop's main area beside the sidebar; the page scales it to fit
PANEL_WIDTH = 420  # px: the widest a panel of a layout gets (eight maps stay readable, not huge)
DPI = 100
DATA_URL = "data:image/png;base64,"
# pyplot keeps its figures in one process-wide registry and is not thread-safe: the server's
# callback threads draw one picture at a time
_DRAWING = threading.Lock()

# plot options with the same name and meaning in both backends
PLOT_OPTIONS = frozenset({
    "title", "xlabel", "ylabel", "xlim", "ylim", "logx", "logy", "colorbar", "invert_yaxis",
    "invert_xaxis", "invert_axes", "xticks", "yticks", "xrotation", "yrotation", "show_legend",
    "legend_position", "padding", "show_grid", "stacked", "xaxis", "yaxis", "clim", "cmap",
    "color_levels", "symmetric", "clabel", "show_title", "magnitude", "pivot", "arrow_heads",
    "normalize_lengths", "rescale_lengths", "color_index", "size_index", "scaling_factor",
    "multi_level", "shared_axes"})
# Bokeh style option -> matplotlib's name for it
STYLE_OPTIONS = {"color": "color", "line_width": "linewidth", "line_dash": "linestyle",
                 "alpha": "alpha", "size": "s", "marker": "marker", "cmap": "cmap",
                 "fill_color": "facecolor", "line_color": "edgecolor", "fill_alpha": "alpha",
                 "text_color": "color", "text_font_size": "fontsize"}
_DASHES = {"dashed": "--", "dotted": ":", "dotdash": "-.", "dashdot": "-.", "solid": "-"}


_loading = threading.Lock()
_loaded = False


def _matplotlib() -> None:
    """Loads matplotlib and HoloViews' plotting with it, once, at the first picture (1.2 s of
    imports that a session, or a notebook that never draws a picture, does not pay)."""
    global _loaded
    with _loading:  # two threads' first pictures: one loads, and the backend is put back once
        if _loaded:
            return
        import matplotlib

        # a server draws into memory, whatever display the machine has (a GUI backend fails
        # outside the main thread); a notebook's backend (inline: off screen too) and a user's
        # pyplot are theirs
        if "ipykernel" not in sys.modules and "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("agg")
        current = hv.Store.current_backend
        importlib.import_module("holoviews.plotting.mpl")  # registers matplotlib's options
        # which makes it HoloViews' current backend: put back the one in use
        hv.Store.set_current_backend(current)
        _loaded = True


def _allowed(element) -> set[str]:
    _matplotlib()
    tree = hv.Store.options("matplotlib")
    name = type(element).__name__
    if name not in tree.children:
        return set()
    node = tree[name]
    return set(node.groups["plot"].allowed_keywords) | set(node.groups["style"].allowed_keywords)


def _style(name: str, value):
    if name == "line_dash":
        return _DASHES.get(value, value)
    if name == "text_font_size" and isinstance(value, str) and value.endswith("pt"):
        return float(value[:-2])
    if name == "size":  # Bokeh: diameter in px; matplotlib: area in points²
        return float(value) ** 2
    return value


def _positive(element, dim: int) -> bool:
    """Whether ``element`` (an overlay: one of its data layers, not its lines or labels) has a
    positive value along its ``dim``-th dimension."""
    if isinstance(element, hv.Overlay):
        return any(_positive(layer, dim) for layer in element.values())
    if isinstance(element, hv.element.Annotation):
        return False
    try:
        values = np.asarray(element.dimension_values(dim), dtype=float)
    except (TypeError, ValueError, IndexError):  # categorical, or no such dimension
        return False
    return bool((values[np.isfinite(values)] > 0).any())


def _translated(element):
    """``element`` with its Bokeh options given to matplotlib too."""
    plot = hv.Store.lookup_options("bokeh", element, "plot").kwargs
    style = hv.Store.lookup_options("bokeh", element, "style").kwargs
    opts = {k: v for k, v in plot.items() if k in PLOT_OPTIONS}
    opts.update({STYLE_OPTIONS[k]: _style(k, v) for k, v in style.items() if k in STYLE_OPTIONS})
    for log, dim in (("logx", 0), ("logy", 1)):  # matplotlib refuses a log axis with no data
        if opts.get(log) and not _positive(element, dim):  # on it; Bokeh draws it empty
            opts[log] = False
    # a map keeps its cells square; anything else fills the space it is given
    opts["aspect"] = "equal" if plot.get("data_aspect") else "auto"
    if isinstance(element, hv.HeatMap):
        opts["show_values"] = False  # Bokeh shows them on hover
    opts = {k: v for k, v in opts.items() if k in _allowed(element)}
    return element.opts(backend="matplotlib", clone=True, **opts) if opts else element


def _grid(layout: hv.Layout) -> tuple[int, int]:
    cols = layout._max_cols or len(layout)  # HoloViews keeps the .cols(n) it was given there
    cols = max(1, min(cols, len(layout)))
    return math.ceil(len(layout) / cols), cols


def figure_png(figure, height: int) -> bytes:
    """``figure`` (a HoloViews object styled for Bokeh) drawn by matplotlib as a PNG, about
    :data:`WIDTH` px wide; a single plot about ``height`` px high (its Bokeh height), a layout
    as high as its panels need. Raises whatever HoloViews raises for a figure it cannot draw."""
    _matplotlib()
    import matplotlib.pyplot as plt

    renderer = hv.renderer("matplotlib").instance(dpi=DPI)
    drawn = figure.map(_translated, lambda o: isinstance(o, (hv.Element, hv.Overlay)))
    if isinstance(drawn, hv.Layout):
        rows, cols = _grid(drawn)
        panel = min(PANEL_WIDTH, WIDTH / cols)
        size = (panel * cols, panel * 0.8 * rows)
        drawn = drawn.opts(backend="matplotlib", clone=True, sublabel_format="", tight=True,
                           hspace=0.45, vspace=0.35, fig_inches=(size[0] / DPI, size[1] / DPI))
    else:
        drawn = drawn.opts(backend="matplotlib", clone=True,
                           fig_inches=(WIDTH / DPI, height / DPI))
    with _DRAWING:
        fig = renderer.get_plot(drawn).state
        try:
            buf = io.BytesIO()
            # around the axes the page shows through, as around a Bokeh figure's plot area
            fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08,
                        facecolor="none")
            return buf.getvalue()
        finally:
            plt.close(fig)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in px, from the PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


__all__ = ["DATA_URL", "DPI", "WIDTH", "figure_png", "png_size"]

"""Static figures: a HoloViews figure rendered once per process, to a picture (PNG) and to Bokeh
JSON, shown by the page as the picture until the reader asks for the interactive figure.

A figure that needs nothing from Python once drawn (hover, zoom, pan and save all run in the
browser) does not need live Bokeh models in every session's document. Rendering it to JSON once
and letting each page build it with BokehJS (``Bokeh.embed.embed_item``) takes HoloViews'
plotting, Bokeh's model walks and its serialisation off the server's per-session work: a tab of
such figures costs the server one string per figure (BENCHMARKS.md, 2026-12-01).

Building a Bokeh figure costs the page far more than the server's share of the tab (0.1-0.3 s of
the browser's main thread per figure), so a page first shows the figure's picture, drawn by
matplotlib on the server (:mod:`dashboard.raster`), and builds the Bokeh figure when the picture
is clicked, or when an animation is stepped. A figure matplotlib cannot draw has no picture and
is built at once, as before.

An animation (the flow player) is the same: its first frame as JSON, and every frame's data,
taken once per process from HoloViews' own update of the plot. The page swaps the data into its
plot when the frame changes; a step costs the server one integer sent.
"""
from __future__ import annotations

import base64
import json
import logging
from typing import NamedTuple

import holoviews as hv
import numpy as np
import param
from bokeh.embed import json_item
from bokeh.models import ColumnDataSource
from holoviews.plotting.bokeh.element import ElementPlot
from panel.custom import JSComponent

from . import raster

log = logging.getLogger(__name__)
DEFAULT_HEIGHT = 400  # px, for a stretching figure (a layout) that names no height of its own


class Rendered(NamedTuple):
    """A figure ready for :class:`StaticFigure`."""
    item: str  # Bokeh JSON item of the figure (an animation: its first frame)
    height: int  # px
    frames: bytes | None = None  # an animation's changing columns, float32, frame after frame
    index: str = ""  # JSON: [[source id, column, values per frame], ...] in the bytes' order
    count: int = 1  # frames
    image: str = ""  # the figure's picture as a PNG data URL ("": none, the page builds it)


def _start(figure):
    renderer = hv.renderer("bokeh")
    plot = renderer.get_plot(figure)
    model = plot.state
    height = model.height or getattr(model, "min_height", None) or DEFAULT_HEIGHT
    return renderer, plot, int(height)


def _item(renderer, plot) -> str:
    # with the renderer's theme (HoloViews' title font), as a live pane's document has it
    return json.dumps(json_item(plot.state, theme=renderer.theme))


def picture(figure, height: int) -> tuple[str, int]:
    """``figure``'s picture as a PNG data URL and the height it asks for (px): at least
    ``height``, the Bokeh figure's, so that the interactive figure that replaces it has the
    room it had. ("", height) when matplotlib cannot draw it: the page then builds the Bokeh
    figure at once."""
    try:
        png = raster.figure_png(figure, height)
    except Exception as err:  # a preview must never cost the figure itself
        log.warning("no picture for a %s: %s: %s", type(figure).__name__,
                    type(err).__name__, err)
        return "", height
    return (raster.DATA_URL + base64.b64encode(png).decode("ascii"),
            max(height, raster.png_size(png)[1]))


def figure_json(figure, with_picture: bool = True) -> Rendered:
    """``figure`` (a HoloViews object) rendered for :class:`StaticFigure`, with its picture
    unless ``with_picture`` is False."""
    renderer, plot, height = _start(figure)
    image, height = picture(figure, height) if with_picture else ("", height)
    return Rendered(_item(renderer, plot), height, image=image)


def _moving(source: ColumnDataSource) -> list[tuple[str, np.ndarray]]:
    """The columns of ``source`` that frames replace: arrays (an Image's is a list holding one
    2-D array); scalars kept in lists (an Image's position) stay as they are."""
    out = []
    for name, value in source.data.items():
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], np.ndarray):
            value = value[0]
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
            out.append((name, value))
    return out


def animation_json(frames: hv.HoloMap, with_picture: bool = True) -> Rendered:
    """A HoloMap over one key dimension, rendered for :class:`StaticFigure`: the first frame as
    JSON (and as a picture unless ``with_picture`` is False) and every frame's data as
    HoloViews' update of the plot leaves it. Raises ValueError when a frame changes a column's
    length (the page could not swap it in place)."""
    keys = list(frames.keys())
    dim = frames.kdims[0]
    # no layout title: HoloViews would write the first frame's key there, for good
    dynamic = hv.DynamicMap(lambda key: frames[key].opts(title="", clone=True), kdims=[dim])
    dynamic = dynamic.redim.values(**{dim.name: [k[0] if isinstance(k, tuple) else k
                                                 for k in keys]})
    renderer, plot, height = _start(dynamic)
    item = _item(renderer, plot)
    sources = []
    for source in plot.traverse(lambda p: p.handles.get("source"), [ElementPlot]):
        if isinstance(source, ColumnDataSource) and source not in sources:
            sources.append(source)
    index = [(s.id, name, int(v.size)) for s in sources for name, v in _moving(s)]
    chunks = []
    for n, key in enumerate(keys):
        if n:
            plot.update(key if isinstance(key, tuple) else (key,))
        columns = [(s.id, name, v) for s in sources for name, v in _moving(s)]
        if [(i, name, int(v.size)) for i, name, v in columns] != index:
            raise ValueError(f"frame {key} changes the figure's data layout")
        chunks += [np.ascontiguousarray(v, dtype="<f4").ravel() for _i, _n, v in columns]
    payload = np.concatenate(chunks).tobytes() if chunks else b""
    image = ""
    if with_picture:
        image, height = picture(frames[keys[0]].opts(title="", clone=True), height)
    return Rendered(item, height, payload, json.dumps(index), len(keys), image)


class StaticFigure(JSComponent):
    """One figure from :func:`figure_json` or :func:`animation_json`. The page shows its
    picture until the reader clicks it (or an animation is stepped); then the page's BokehJS
    builds the figure from its JSON, with hover, zoom, pan and save. A figure without a picture
    is built at once. It works wherever Panel does (a served page, a notebook). The page drops
    the figure's Bokeh document when the component goes or gets another figure, so a long
    session does not grow; an animation shows frame ``frame`` (from 0)."""

    item = param.String(default="", doc="the figure as a Bokeh JSON item")
    frames = param.Bytes(default=None, doc="an animation's frames (Rendered.frames)")
    index = param.String(default="", doc="where each column lies in a frame (Rendered.index)")
    count = param.Integer(default=1, bounds=(1, None), doc="frames in the animation")
    frame = param.Integer(default=0, bounds=(0, None), doc="the frame shown")
    image = param.String(default="", doc="the figure's picture, a PNG data URL (Rendered.image)")

    _esm = """
    export function render({ model, el }) {
      let shown = null;  // {views, doc} of the figure on screen
      let live = false;  // the Bokeh figure asked for (else its picture is shown)
      let drawing = 0;  // the latest draw: an older one still loading gives way
      let decoded = { raw: null, floats: null };
      const drop = () => {
        if (shown === null) return;
        const { views, doc } = shown;
        shown = null;
        for (const view of views.roots) { window.Bokeh.index.delete(view); view.remove(); }
        const docs = window.Bokeh.documents, i = docs.indexOf(doc);
        if (i >= 0) docs.splice(i, 1);
      };
      const values = () => {  // the frames as float32, whatever form the bytes arrive in
        const raw = model.frames;
        if (raw == null) return null;
        if (decoded.raw !== raw) {
          const bytes = raw instanceof ArrayBuffer ? new Uint8Array(raw)
            : raw instanceof Uint8Array ? raw : new Uint8Array(raw.buffer ?? raw);
          decoded = { raw, floats: new Float32Array(bytes.slice().buffer) };
        }
        return decoded.floats;
      };
      const show = () => {  // swap frame `frame` into the plot's data, in place
        if (shown === null || shown.doc === null || !model.index) return;
        const floats = values();
        if (floats === null) return;
        const index = JSON.parse(model.index);
        const per = index.reduce((sum, entry) => sum + entry[2], 0);
        const frame = Math.min(Math.max(model.frame, 0), model.count - 1);
        let offset = frame * per;
        const touched = new Set();
        for (const [id, column, size] of index) {
          const source = shown.doc.get_model_by_id(id);
          const part = floats.subarray(offset, offset + size);
          offset += size;
          if (source == null) continue;
          const data = source.data;
          let target = data instanceof Map ? data.get(column) : data[column];
          if (Array.isArray(target) && target.length === 1 && target[0]?.length === size)
            target = target[0];  // an Image's column: a list holding one 2-D array
          if (target == null || target.length !== size) continue;
          if (typeof target.set === "function") target.set(part);
          else for (let i = 0; i < size; i++) target[i] = part[i];
          touched.add(source);
        }
        for (const source of touched)  // changed in place: tell the glyphs (Bokeh's own way)
          source.change.emit();
      };
      const interactive = () => { live = true; draw(); };
      const picture = () => {  // the picture, and a way to the interactive figure
        const img = document.createElement("img");
        img.src = model.image;
        img.alt = "figure: click for the interactive one";
        img.title = "Click for the interactive figure: hover for values, zoom, pan, save";
        img.style.cssText = "flex:1 1 auto;min-width:0;height:100%;object-fit:contain;" +
          "object-position:left top;cursor:zoom-in;display:block";
        img.addEventListener("click", interactive);
        // where a Bokeh figure has its toolbar: a narrow column on the right
        const button = document.createElement("button");
        button.textContent = "interactive";
        button.className = "figure-interactive";
        button.title = img.title;
        button.style.cssText = "flex:0 0 auto;align-self:flex-start;writing-mode:vertical-rl;" +
          "font-size:11px;padding:6px 2px;margin-left:4px;cursor:pointer";
        button.addEventListener("click", interactive);
        const box = document.createElement("div");
        box.className = "figure-picture";
        box.style.cssText = "display:flex;width:100%;height:100%";
        box.append(img, button);
        el.appendChild(box);
      };
      const draw = async () => {
        const mine = ++drawing;
        drop();
        el.replaceChildren();
        if (!model.item) return;
        // the picture is an animation's first frame: at any other, the figure is built
        if (model.image && !live && model.frame === 0) { picture(); return; }
        const host = document.createElement("div");
        host.style.width = "100%";
        host.style.height = "100%";
        el.appendChild(host);
        const views = await window.Bokeh.embed.embed_item(JSON.parse(model.item), host);
        shown = { views, doc: views.roots.length ? views.roots[0].model.document : null };
        if (mine !== drawing) { drop(); return; }  // replaced while it loaded
        if (model.frame > 0) show();
      };
      const another = () => { live = false; draw(); };  // another figure: its picture first
      model.on("item", another);
      model.on("image", another);
      model.on("frame", () => { if (live || !model.image) show(); else interactive(); });
      model.on("remove", drop);
      draw();
    }
    """

    @classmethod
    def of(cls, rendered: Rendered, **params) -> "StaticFigure":
        """The component showing ``rendered``."""
        params.setdefault("sizing_mode", "stretch_width")
        return cls(item=rendered.item, height=rendered.height, frames=rendered.frames,
                   index=rendered.index, count=rendered.count, image=rendered.image, **params)


__all__ = ["Rendered", "StaticFigure", "animation_json", "figure_json"]

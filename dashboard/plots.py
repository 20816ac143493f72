"""Pure plotting functions: analysis results, metrics and run rows -> HoloViews elements.

Nothing here does I/O, trains or builds widgets; every function returns a HoloViews object styled
for the bokeh backend. Plots follow the project's orientation convention: x runs along columns,
y grows with the row index (row 0 at the bottom), u is along x and v along y. Missing, empty or
non-finite inputs give an "n/a" :class:`hv.Text` panel instead of an exception.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import holoviews as hv
# registers the bokeh option names so .opts works without hv.extension (no notebook side effects)
import holoviews.plotting.bokeh  # noqa: F401
import numpy as np
import pandas as pd
import xarray as xr
from bokeh.palettes import Category10_10

__all__ = [
    "weights_heatmaps", "breaking_bars", "training_curves", "rollout_curves", "flow_frames",
    "flow_panel", "speed", "vorticity", "equivariance_bars", "equivariance_vs_data",
    "sweep_plot", "zero_alpha_position", "runs_table_frame", "message", "TABLE_COLUMNS",
    "discovery_gains", "discovery_maps", "boundary_profile", "discovery_weights", "flow_preview",
    "use_bokeh",
]

PALETTE = tuple(Category10_10)
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"
ROUNDING = 1e-6  # deviations below this fraction of the weights' scale are rounding: drawn white
TINY = 1e-12  # colour half-range for data that is exactly zero
ZERO_ALPHA_FACTOR = 10.0  # alpha = 0 is drawn at (smallest positive alpha) / ZERO_ALPHA_FACTOR
VELOCITY_UNIT = "cells per time unit"
QUANTITIES = ("speed", "vorticity")
METRIC_LABELS = {
    "future_rmse": "future RMSE (velocity)",
    "domain_rmse": "domain RMSE (velocity)",
    "equivariance_error": "equivariance error (relative)",
    "breaking_score": "breaking score",
}
# no progress column: a running job's progress is in the Jobs tab. In the table every change of
# it cost every open page a rebuild of the whole table, and a class's twenty pages rebuilding
# together held up the slider of whoever was exploring (BENCHMARKS.md)
TABLE_COLUMNS = ("model", "group", "banks", "alpha", "dataset", "state",
                 "future RMSE", "domain RMSE", "equivariance error", "created")
NUMERIC_TABLE_COLUMNS = ("banks", "alpha", "future RMSE", "domain RMSE", "equivariance error")

_SIZE = dict(responsive=True, min_height=250)
_X = hv.Dimension("x", label="x", unit="cells")
_Y = hv.Dimension("y", label="y", unit="cells")


# ------------------------------------------------------------------------------------ helpers
def _num(value) -> float:
    """``float(value)``; NaN for None or anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value, spec: str = ".3g") -> str:
    v = _num(value)
    return format(v, spec) if math.isfinite(v) else "n/a"


def _score(value) -> str:
    """A breaking score (a fraction) for titles; float noise around 0 reads as 0."""
    return _fmt(round(_num(value), 9))


def _int_ticks(values, limit: int = 20) -> list[int] | None:
    """Integer ticks for a few whole-numbered positions (epochs, steps); None for many."""
    ints = sorted({int(v) for v in _floats(values) if math.isfinite(v) and v == int(v)})
    return ints if 0 < len(ints) <= limit else None


def _text(value, default: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return str(value)


def _floats(values) -> np.ndarray:
    """Any sequence (None entries allowed) as a float array, NaN for missing entries."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(float)
    return np.asarray([_num(v) for v in arr.ravel()], float).reshape(arr.shape)


def _peak(*arrays) -> float:
    """Largest finite |value| over ``arrays`` (0 when there is none)."""
    vals = [np.abs(a[np.isfinite(a)]) for a in map(_floats, arrays)]
    vals = [v for v in vals if v.size]
    return float(max(v.max() for v in vals)) if vals else 0.0


def _half_range(deviation, scale: float) -> float:
    """Half-width of colour limits symmetric about 0: at least ``ROUNDING * scale``, so weights
    that are equal up to rounding render in the palette's white centre."""
    floor = ROUNDING * scale if math.isfinite(scale) else 0.0
    return max(_peak(deviation), floor, TINY)


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def message(text: str, title: str = "") -> hv.Text:
    """A blank panel showing ``text`` (the "n/a" and "waiting" states of every plot)."""
    return hv.Text(0.5, 0.5, text).opts(
        xaxis=None, yaxis=None, xlim=(0, 1), ylim=(0, 1), title=title, toolbar=None,
        text_font_size="11pt", text_color="grey", **_SIZE)


def _kind(analysis) -> str | None:
    return analysis.attrs.get("kind") if isinstance(analysis, xr.Dataset) else None


def _model_name(analysis) -> str:
    attrs = analysis.attrs if isinstance(analysis, xr.Dataset) else {}
    return str(attrs.get("model", "model"))


def _image(x, y, z, kdims, vdim) -> hv.Image:
    """``hv.Image`` of ``z[row, col]`` at cell centres ``x`` (columns) and ``y`` (rows), with y
    growing upward; bounds reach half a cell beyond the outer centres."""
    x, y, z = _floats(x), _floats(y), _floats(z)
    if len(y) > 1 and y[0] > y[-1]:
        y, z = y[::-1], z[::-1]
    if len(x) > 1 and x[0] > x[-1]:
        x, z = x[::-1], z[:, ::-1]
    dx = x[1] - x[0] if len(x) > 1 else 1.0
    dy = y[1] - y[0] if len(y) > 1 else 1.0
    bounds = (x[0] - dx / 2, y[0] - dy / 2, x[-1] + dx / 2, y[-1] + dy / 2)
    # hv.Image draws the array's first row at the top
    return hv.Image(np.flipud(z), bounds=bounds, kdims=kdims, vdims=[vdim])


def _layout(panels: list, cols: int) -> hv.Layout:
    return hv.Layout(panels).cols(max(1, min(cols, len(panels))))


# ------------------------------------------------------------------------------------ discovery
def discovery_gains(evidence: xr.Dataset) -> hv.Overlay | hv.Element:
    """Bars of each orbit member's mean rollout gain (how much the relaxed model beats its own
    group average on that member's windows), data beside null, with the seeds' spread as error
    bars; members are named by where their inflow sits (bottom, right, top, left)."""
    if not isinstance(evidence, xr.Dataset) or "gain" not in evidence:
        return message("n/a: no member gains", "discovery")
    gain = evidence["gain"]
    labels = [lab or f"member {m}" for lab, m in zip(
        [str(v) for v in evidence["member_label"].values], evidence["member"].values)]
    rows, errs = [], []
    for lab_index, lab in enumerate(labels):
        for role in ("data", "null"):
            values = _floats(gain.sel(role=role).values)[:, lab_index]  # over seeds
            mean = float(np.nanmean(values))
            spread = float(np.nanstd(values)) if values.size > 1 else 0.0
            bar = f"{lab} · {role}"
            rows.append((bar, mean, role))
            errs.append((bar, mean, spread))
    kdim = hv.Dimension("bar", label="orbit member (where its inflow sits) · runs")
    vdim = hv.Dimension("gain", label="rollout gain over the group average")
    bars = hv.Bars(rows, [kdim], [vdim, "role"]).opts(
        tools=["hover"], color=hv.dim("role").categorize({"data": _color(0), "null": "#999999"}),
        xrotation=30, ylabel="gain (MSE units)",
        title="Which member the relaxed weights help: data (colour) beside its null (grey)",
        **_SIZE)
    return bars * hv.ErrorBars(errs, [kdim], [vdim, "spread"])


def discovery_weights(evidence: xr.Dataset) -> hv.Layout | hv.Element:
    """The relaxed weights minus their mean over the group, per layer (banks and seeds
    averaged): the data runs beside the null runs, on shared symmetric colour limits."""
    if not isinstance(evidence, xr.Dataset) or "weights" not in evidence:
        return message("n/a: no relaxed weights", "discovery")
    w = evidence["weights"]  # role, seed, layer, bank, element
    dev = (w - w.mean("element")).mean(("seed", "bank"))
    half = _half_range(dev.values, _peak(w.values))
    panels = []
    kdims = [hv.Dimension("element", label="group element"), hv.Dimension("layer")]
    for role in ("data", "null"):
        rows = [(str(e), str(int(layer)), float(dev.sel(role=role, layer=layer, element=e)))
                for layer in dev["layer"].values for e in dev["element"].values]
        panels.append(hv.HeatMap(rows, kdims, ["deviation"]).opts(
            cmap=DIVERGING, clim=(-half, half), colorbar=True, tools=["hover"],
            title=f"{role} runs: w - mean over elements", **_SIZE))
    return _layout(panels, 2)


def discovery_maps(evidence: xr.Dataset) -> hv.Layout | hv.Element:
    """Translation discovery: for the layer and bank whose difference steps most at the found
    boundary, how the data and the null push the relaxed weights (their gradients, t per pixel,
    seeds averaged) and the difference, with the found boundary dashed."""
    if not isinstance(evidence, xr.Dataset) or "difference" not in evidence:
        return message("n/a: no weight maps", "discovery")
    axis = str(evidence.attrs.get("boundary_axis", "x"))
    pos = _num(evidence.attrs.get("boundary_position"))
    diff = evidence["difference"]
    if axis in ("x", "y") and math.isfinite(pos):
        profile = diff.mean("y" if axis == "x" else "x")
        coord = profile[axis].values
        step = np.abs(profile.where(coord > pos).mean(axis) - profile.where(coord < pos).mean(axis))
        layer, bank = np.unravel_index(int(np.nanargmax(_floats(step.values))), step.shape)
    else:
        layer, bank = 0, 0
    x, y = diff["x"].values, diff["y"].values
    panels = []
    for name, title in (("data_score", "data"), ("null_score", "null"),
                        ("difference", "data minus null")):
        if name not in evidence:
            continue
        raw = _floats(evidence[name].values[layer, bank])
        half = _half_range(raw, _peak(raw))
        img = _image(x, y, raw, [_X, _Y], hv.Dimension("t", label="gradient (t)")).opts(
            cmap=DIVERGING, clim=(-half, half), colorbar=True, tools=["hover"])
        if axis in ("x", "y") and math.isfinite(pos):
            img = img * (hv.VLine(pos) if axis == "x" else hv.HLine(pos)).opts(
                color="black", line_dash="dashed", line_width=1.5)
        panels.append(img.opts(title=f"{title} (layer {layer}, bank {bank})", data_aspect=1,
                               **_SIZE))
    return _layout(panels, 3)


def boundary_profile(evidence: xr.Dataset) -> hv.Overlay | hv.Element:
    """The step statistic of data minus null (all seeds together) at every candidate position
    along x and y; dashed: the boundary found."""
    if not isinstance(evidence, xr.Dataset) or "boundary_statistic" not in evidence:
        return message("n/a: no boundary statistic", "discovery")
    stat = evidence["boundary_statistic"]
    curves = []
    for i, axis in enumerate(("x", "y")):
        pick = stat["axis"].values == axis
        if pick.any():
            curves.append(hv.Curve((stat["position"].values[pick], _floats(stat.values[pick])),
                                   hv.Dimension("position", label="boundary position",
                                                unit="cells"),
                                   "statistic", label=f"along {axis}").opts(
                color=_color(i), line_width=2, tools=["hover"]))
    pos = _num(evidence.attrs.get("boundary_position"))
    if math.isfinite(pos):
        curves.append(hv.VLine(pos).opts(color="black", line_dash="dashed"))
    return hv.Overlay(curves).opts(
        title="How well one step explains data minus null (dashed: the boundary found)",
        legend_position="top_left", **_SIZE)


# ------------------------------------------------------------------------------------ weights
def weights_heatmaps(analysis: xr.Dataset,
                     boundary_x: float | None = None) -> hv.Layout | hv.Element:
    """Relaxed weights of every layer, from :func:`core.analysis.breaking_analysis`.

    * "group": one HeatMap, x = group elements (group order), y = layer (its breaking score)
      · bank, first layer on top; colour = ``w - mean over elements`` of that bank divided by
      the layer's half-range ``max|dev|`` (at least rounding level), on a diverging map from
      -1 to 1: a symmetric layer is uniformly white; hover shows the deviation, raw weight and
      score.
    * "translation": one Image per layer and bank of ``w(x, y)`` (cells, y up), diverging
      colours symmetric about the map's mean; ``boundary_x`` draws a dashed vertical line at a
      known breaking location.
    * "steerable": one Image per layer of ``offset_variation`` over kernel offsets (kx, ky).
    * "scale": one HeatMap, x = scale factor, y = layer, colour = ``scale_variation`` (how far
      each scale's coefficients sit from their mean over scales, relative to the layer's RMS;
      a strict-equivalent layer is 0 everywhere), plus one Image per layer of
      ``offset_variation`` over kernel offsets.
    * "other": Bars of the per-layer weight norm; "none" or anything else: a Text panel.
    """
    kind = _kind(analysis)
    if kind == "group" and "weights" in analysis:
        return _group_heatmaps(analysis)
    if kind == "translation" and "weights" in analysis:
        return _translation_maps(analysis, boundary_x)
    if kind == "steerable" and "offset_variation" in analysis:
        return _steerable_maps(analysis)
    if kind == "scale" and "scale_variation" in analysis:
        return _scale_maps(analysis)
    if kind == "other" and "norm" in analysis:
        return _norm_bars(analysis)
    if kind == "none":
        return message(f"{_model_name(analysis)} has no relaxed weights\n"
                       "(strict or unconstrained model)", "relaxed weights")
    return message("n/a: no relaxed-weight analysis", "relaxed weights")


def _group_heatmaps(analysis: xr.Dataset) -> hv.HeatMap | hv.Element:
    """All layers in one HeatMap: a row per (layer, bank), a column per group element, each
    layer's deviations divided by that layer's colour half-range (one plot instead of one per
    layer: a tab of four heatmaps cost every session four Bokeh figures)."""
    w = analysis["weights"].transpose("layer", "bank", "element")
    elements = [str(e) for e in w["element"].values]
    banks = [str(b) for b in w["bank"].values]
    scores = analysis["breaking_score"].values if "breaking_score" in analysis else None
    kdims = [hv.Dimension("element", label="group element"),
             hv.Dimension("row", label="layer · bank")]
    vdims = [hv.Dimension("relative", label="(w − mean) / layer's largest |w − mean|"),
             hv.Dimension("deviation", label="w − mean over elements"),
             hv.Dimension("weight", label="weight w"),
             hv.Dimension("score", label="layer's breaking score")]
    rows = []
    for i, layer in enumerate(w["layer"].values):
        raw = _floats(w.values[i])
        devs = {}
        for j in range(len(banks)):
            finite = np.isfinite(raw[j])
            if finite.any():  # NaN pads layers with fewer banks
                devs[j] = (raw[j] - raw[j][finite].mean(), finite)
        if not devs:
            continue
        half = _half_range(np.concatenate([d for d, _ in devs.values()]), _peak(raw))
        score = float(scores[i]) if scores is not None else float("nan")
        # the score in the label: a layer that barely breaks still fills its own colour scale
        name = f"{layer} ({_score(score)})" if scores is not None else str(layer)
        for j, (dev, finite) in devs.items():
            label = f"{name} · bank {banks[j]}"
            rows += [(e, label, float(dev[k]) / half, float(dev[k]), float(raw[j, k]), score)
                     for k, e in enumerate(elements) if finite[k]]
    if not rows:
        return message("n/a: no finite weights", "relaxed weights")
    title = "relaxed weights: deviation from equal weights, each layer to its own scale"
    height = max(_SIZE["min_height"], 60 + 28 * len({r[1] for r in rows}))
    return hv.HeatMap(rows, kdims=kdims, vdims=vdims).opts(
        cmap=DIVERGING, clim=(-1.0, 1.0), colorbar=True, tools=["hover"], title=title,
        xlabel="group element", ylabel="layer (breaking score) · bank", invert_yaxis=True,
        **dict(_SIZE, min_height=height))


def _translation_maps(analysis: xr.Dataset, boundary_x: float | None) -> hv.Layout | hv.Element:
    w = analysis["weights"].transpose("layer", "bank", "y", "x")
    x, y = w["x"].values, w["y"].values
    boundary = _num(boundary_x)
    vdim = hv.Dimension("weight", label="relaxed weight w")
    panels = []
    for i, layer in enumerate(w["layer"].values):
        for j, bank in enumerate(w["bank"].values):
            raw = _floats(w.values[i, j])
            finite = np.isfinite(raw)
            if not finite.any():
                continue
            mean = float(raw[finite].mean())
            half = _half_range(raw - mean, _peak(raw))
            img = _image(x, y, raw, [_X, _Y], vdim).opts(
                cmap=DIVERGING, clim=(mean - half, mean + half), colorbar=True, tools=["hover"])
            layers = [img]
            if math.isfinite(boundary):
                layers.append(hv.VLine(boundary).opts(color="black", line_dash="dashed",
                                                      line_width=1.5))
            panels.append(hv.Overlay(layers).opts(
                title=f"{layer}, bank {bank}", xlabel="x (cells)", ylabel="y (cells)",
                data_aspect=1, **_SIZE))
    if not panels:
        return message("n/a: no finite weights", "relaxed weights")
    # one column lets bokeh stretch square maps into strips: keep at least two
    return _layout(panels, max(2, w.sizes["bank"]))


def _steerable_maps(analysis: xr.Dataset) -> hv.Layout | hv.Element:
    ov = analysis["offset_variation"].transpose("layer", "ky", "kx")
    kdims = [hv.Dimension("kx", label="kernel offset x", unit="cells"),
             hv.Dimension("ky", label="kernel offset y", unit="cells")]
    vdim = hv.Dimension("variation", label="variation per offset")
    scores = analysis["breaking_score"].values if "breaking_score" in analysis else None
    panels = []
    for i, layer in enumerate(ov["layer"].values):
        z = _floats(ov.values[i])
        title = f"{layer}: variation across offsets"
        if scores is not None:
            title += f" (score {_score(scores[i])})"
        if not np.isfinite(z).any():
            panels.append(message("n/a: no finite coefficients", title))
            continue
        panels.append(_image(ov["kx"].values, ov["ky"].values, z, kdims, vdim).opts(
            cmap=SEQUENTIAL, clim=(0.0, max(_peak(z), TINY)), colorbar=True, tools=["hover"],
            title=title, xlabel="kx (cells)", ylabel="ky (cells)", data_aspect=1, **_SIZE))
    if not panels:
        return message("n/a: no layers", "relaxed weights")
    return _layout(panels, 3)


def _scale_maps(analysis: xr.Dataset) -> hv.Layout | hv.Element:
    sv = analysis["scale_variation"].transpose("layer", "scale")
    layers = [str(n) for n in sv["layer"].values]
    scales = [f"x{float(s):g}" for s in sv["scale"].values]
    z = _floats(sv.values)
    rows = [(scales[j], layers[i], float(z[i, j]))
            for i in range(len(layers)) for j in range(len(scales)) if math.isfinite(z[i, j])]
    title = (f"{_model_name(analysis)}: variation across scales "
             f"(score {_score(analysis.attrs.get('scale_score'))})")
    if not rows:
        return message("n/a: no finite coefficients", title)
    heat = hv.HeatMap(rows, kdims=[hv.Dimension("scale", label="scale factor"),
                                   hv.Dimension("layer")],
                      vdims=[hv.Dimension("variation", label="variation across scales")]).opts(
        cmap=SEQUENTIAL, clim=(0.0, max(_peak(z), TINY)), colorbar=True, tools=["hover"],
        title=title, xlabel="scale factor", ylabel="layer", invert_yaxis=True, **_SIZE)
    offsets = _steerable_maps(analysis)
    panels = [heat] + (list(offsets) if isinstance(offsets, hv.Layout) else [offsets])
    return _layout(panels, 2)


def _norm_bars(analysis: xr.Dataset) -> hv.Element:
    layers = [str(n) for n in analysis["layer"].values]
    norms = _floats(analysis["norm"].values)
    ok = np.isfinite(norms)
    title = f"{_model_name(analysis)}: relaxed weight norm per layer"
    if not ok.any():
        return message("n/a: no finite weight norms", title)
    return hv.Bars((np.asarray(layers)[ok], norms[ok]), kdims=[hv.Dimension("layer")],
                   vdims=[hv.Dimension("norm", label="|W| (Frobenius norm)")]).opts(
        tools=["hover"], title=title, xlabel="layer", ylabel="|W| (Frobenius norm)", **_SIZE)


def breaking_bars(analysis: xr.Dataset) -> hv.Element:
    """Symmetry breaking per layer, from :func:`core.analysis.breaking_analysis`.

    "group": stacked Bars of the irrep energy fraction (energy / total) per layer, the model's
    breaking score in the title. "scale": stacked Bars of the per-layer score split into its
    part across scales and its part across kernel offsets (they add up to the breaking score).
    Other kinds: the per-layer ``breaking_score`` as Bars (layers without a score, e.g.
    zero-started rpp paths, are left out). No layers: a Text panel.
    """
    kind = _kind(analysis)
    if kind is None:
        return message("n/a: no breaking analysis", "symmetry breaking")
    title = (f"{_model_name(analysis)}: symmetry breaking per layer "
             f"(score {_score(analysis.attrs.get('breaking_score'))})")
    if kind == "group" and {"energy", "total"} <= set(analysis.data_vars):
        energy = analysis["energy"].transpose("layer", "irrep")
        total = _floats(analysis["total"].values)
        rows = []
        for i, layer in enumerate(energy["layer"].values):
            for k, irrep in enumerate(energy["irrep"].values):
                e = _num(energy.values[i, k])
                frac = e / total[i] if total[i] > 0 else math.nan
                if math.isfinite(frac):
                    rows.append((str(layer), str(irrep), frac, e))
        if not rows:
            return message("n/a: no finite irrep energies", title)
        return hv.Bars(rows, kdims=[hv.Dimension("layer"), hv.Dimension("irrep")],
                       vdims=[hv.Dimension("fraction", label="energy fraction"),
                              hv.Dimension("energy", label="irrep energy")]).opts(
            stacked=True, tools=["hover"], title=title, xlabel="layer",
            ylabel="irrep energy fraction", legend_position="right", **_SIZE)
    if kind == "scale" and {"scale_score", "offset_score"} <= set(analysis.data_vars):
        rows = []
        for i, layer in enumerate(analysis["layer"].values):
            for part, var in (("across scales", "scale_score"), ("across offsets", "offset_score")):
                v = _num(analysis[var].values[i])
                if math.isfinite(v):
                    rows.append((str(layer), part, v))
        if not rows:
            return message("n/a: no finite scores", title)
        return hv.Bars(rows, kdims=[hv.Dimension("layer"), hv.Dimension("part")],
                       vdims=[hv.Dimension("score", label="breaking score")]).opts(
            stacked=True, tools=["hover"], title=title, xlabel="layer", ylabel="breaking score",
            legend_position="right", **_SIZE)
    if "breaking_score" in analysis.data_vars and analysis["breaking_score"].dims == ("layer",):
        layers = np.asarray([str(n) for n in analysis["layer"].values])
        scores = _floats(analysis["breaking_score"].values)
        ok = np.isfinite(scores)
        if not ok.any():
            return message("n/a: these layers define no breaking score\n"
                           "(see the weight norms)", title)
        return hv.Bars((layers[ok], scores[ok]), kdims=[hv.Dimension("layer")],
                       vdims=[hv.Dimension("breaking_score", label="breaking score")]).opts(
            tools=["hover"], title=title, xlabel="layer", ylabel="breaking score", **_SIZE)
    return message(f"{_model_name(analysis)} has no relaxed layers: breaking score "
                   f"{_score(analysis.attrs.get('breaking_score'))}", "symmetry breaking")


# ------------------------------------------------------------------------------------ training
_CURVES = (("train_loss", "train loss"), ("valid_rmse", "valid RMSE"))


def _history(metrics) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Epochs and the per-epoch columns of ``_CURVES`` from a metrics Dataset or history rows."""
    if isinstance(metrics, xr.Dataset):
        if "epoch" not in metrics.dims:
            return np.empty(0), {}
        cols = {name: _floats(metrics[name].values) for name, _ in _CURVES
                if name in metrics and metrics[name].dims == ("epoch",)}
        return _floats(metrics["epoch"].values), cols
    rows = [r for r in (metrics or []) if isinstance(r, Mapping)]
    epochs = _floats([r.get("epoch", i + 1) for i, r in enumerate(rows)])
    return epochs, {name: _floats([r.get(name) for r in rows]) for name, _ in _CURVES}


def training_curves(metrics: xr.Dataset | Sequence[dict] | None, label: str = "") -> hv.Overlay:
    """``train_loss`` and ``valid_rmse`` against epoch on a log y axis.

    ``metrics``: :meth:`core.runs.Run.read_metrics` (variables over ``epoch``) or the history
    rows of training callbacks (dicts with epoch, train_loss, valid_rmse). Non-positive or
    non-finite values are left out (log axis); no epochs yet gives a "waiting" Text overlay.
    """
    title = f"training: {label}" if label else "training"
    epochs, cols = _history(metrics)
    if epochs.size == 0:
        return hv.Overlay([message("waiting for the first epoch", title)])
    layers = []
    for i, (name, text) in enumerate(_CURVES):
        vals = cols.get(name)
        if vals is None:
            continue
        ok = np.isfinite(epochs) & np.isfinite(vals) & (vals > 0)
        if not ok.any():
            continue
        data, kdim = (epochs[ok], vals[ok]), hv.Dimension("epoch")
        vdim = hv.Dimension(name, label=text)
        name_label = f"{label} {text}".strip()
        layers += [hv.Curve(data, kdim, vdim, label=name_label).opts(color=_color(i),
                                                                      tools=["hover"]),
                   hv.Scatter(data, kdim, vdim, label=name_label).opts(color=_color(i), size=6,
                                                                        tools=["hover"])]
    if not layers:
        return hv.Overlay([message("n/a: no finite loss values yet", title)])
    return hv.Overlay(layers).opts(
        logy=True, title=title, xlabel="epoch",
        ylabel="train loss (MSE + penalty) / valid RMSE (velocity)", xticks=_int_ticks(epochs),
        padding=0.05, legend_position="top_right", **_SIZE)


def rollout_curves(runs: Mapping[str, xr.Dataset | None]) -> hv.Overlay:
    """RMSE per autoregressive step for each run: ``future_rmse_step`` solid and
    ``domain_rmse_step`` dashed, one colour per run, labelled by the dict keys.

    ``runs``: label -> metrics Dataset (:meth:`core.runs.Run.read_metrics`); runs or splits
    without those variables are skipped.
    """
    title = "rollout error per step (solid: future, dashed: domain)"
    kdim = hv.Dimension("rollout_step", label="rollout step")
    layers, steps_seen = [], []
    for i, (name, ds) in enumerate((runs or {}).items()):
        if not isinstance(ds, xr.Dataset):
            continue
        for split, dash in (("future", "solid"), ("domain", "dashed")):
            var = f"{split}_rmse_step"
            if var not in ds or ds[var].ndim != 1:
                continue
            da = ds[var]
            steps, vals = _floats(da[da.dims[0]].values), _floats(da.values)
            ok = np.isfinite(steps) & np.isfinite(vals)
            if not ok.any():
                continue
            steps_seen += list(steps[ok])
            vdim = hv.Dimension("rmse", label="RMSE", unit="velocity")
            layers.append(hv.Curve((steps[ok], vals[ok]), kdim, vdim,
                                   label=f"{name} ({split})").opts(
                color=_color(i), line_dash=dash, line_width=2, tools=["hover"]))
    if not layers:
        return hv.Overlay([message("n/a: no rollout errors yet", title)])
    return hv.Overlay(layers).opts(
        title=title, xlabel="rollout step", ylabel=f"RMSE ({VELOCITY_UNIT})",
        xticks=_int_ticks(steps_seen), padding=0.05, legend_position="top_left", **_SIZE)


# ------------------------------------------------------------------------------------ flows
def speed(field: np.ndarray) -> np.ndarray:
    """``|(u, v)|`` of a field ``[..., 2, H, W]``."""
    field = _floats(field)
    return np.hypot(field[..., 0, :, :], field[..., 1, :, :])


def vorticity(field: np.ndarray) -> np.ndarray:
    """``dv/dx - du/dy`` of a field ``[..., 2, H, W]`` by central differences (one-sided at the
    edges), grid spacing one cell, y growing with the row index: positive is counter-clockwise."""
    field = _floats(field)
    u, v = field[..., 0, :, :], field[..., 1, :, :]
    if u.shape[-1] < 2 or u.shape[-2] < 2:
        return np.zeros_like(u)
    return np.gradient(v, axis=-1) - np.gradient(u, axis=-2)


def _quantity(field, quantity: str) -> np.ndarray:
    return speed(field) if quantity == "speed" else vorticity(field)


def _limits(quantity: str, *arrays) -> tuple[float, float]:
    peak = max(_peak(*arrays), TINY)
    return (-peak, peak) if quantity == "vorticity" else (0.0, peak)


def _check_quantity(quantity: str) -> None:
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")


def _arrows(field: np.ndarray, arrows: int) -> hv.VectorField:
    """Arrows of ``field [2, H, W]`` at every ``H // arrows``-th cell centre."""
    h, w = field.shape[-2:]
    stride = max(1, h // max(1, int(arrows)))
    rows, cols = np.meshgrid(np.arange(stride // 2, h, stride), np.arange(stride // 2, w, stride),
                             indexing="ij")
    u, v = field[0][rows, cols], field[1][rows, cols]
    ok = np.isfinite(u) & np.isfinite(v)
    data = (cols[ok] + 0.5, rows[ok] + 0.5, np.arctan2(v[ok], u[ok]), np.hypot(u[ok], v[ok]))
    return hv.VectorField(data, kdims=[_X, _Y], vdims=["angle", "magnitude"]).opts(
        magnitude="magnitude", color="black", alpha=0.7, pivot="mid")


def _flow_image(field, quantity, title, vdim, cmap, clim, arrows) -> hv.Overlay | hv.Text:
    q = _quantity(field, quantity)
    if not np.isfinite(q).any():
        return message(f"n/a: no finite {quantity}", title)
    h, w = q.shape
    img = _image(np.arange(w) + 0.5, np.arange(h) + 0.5, q, [_X, _Y], vdim).opts(
        cmap=cmap, clim=tuple(clim), colorbar=True, tools=["hover"])
    layers = [img] + ([_arrows(field, arrows)] if arrows else [])
    return hv.Overlay(layers).opts(title=title, xlabel="x (cells)", ylabel="y (cells)",
                                   data_aspect=1, **_SIZE)


def flow_preview(frame: np.ndarray, title: str = "flow", quantity: str = "speed",
                 arrows: int = 12) -> hv.Overlay | hv.Text:
    """One velocity frame ``[2, H, W]`` as speed (or vorticity) with arrows: an upload's look."""
    _check_quantity(quantity)
    frame = _as_frames(frame, 3)
    if frame is None:
        return message("n/a: a frame must be [2, H, W]", title)
    vdim, _ = _flow_dims(quantity)
    cmap = SEQUENTIAL if quantity == "speed" else DIVERGING
    return _flow_image(frame, quantity, title, vdim, cmap,
                       _limits(quantity, _quantity(frame, quantity)), arrows)


def _flow_dims(quantity: str) -> tuple[hv.Dimension, hv.Dimension]:
    if quantity == "speed":
        return (hv.Dimension("speed", unit=VELOCITY_UNIT),
                hv.Dimension("speed_error", label="|prediction − truth|", unit=VELOCITY_UNIT))
    return (hv.Dimension("vorticity", unit="1 / time unit"),
            hv.Dimension("vorticity_error", label="vorticity error", unit="1 / time unit"))


def _as_frames(array, ndim: int) -> np.ndarray | None:
    if array is None:
        return None
    arr = _floats(array)
    return arr if arr.ndim == ndim and arr.shape[-3] == 2 else None


def flow_panel(truth_t: np.ndarray, pred_t: np.ndarray, quantity: str = "speed",
               clim: tuple[float, float] | None = None, arrows: int = 12,
               error_clim: tuple[float, float] | None = None) -> hv.Layout | hv.Element:
    """One step: truth, prediction and error (prediction − truth) side by side.

    ``truth_t``, ``pred_t``: velocity ``[2, H, W]`` (u, v). Each panel is an Image of
    ``quantity`` ("speed" or "vorticity", see :func:`vorticity`) in cells (y up) with arrows
    every ``H // arrows`` cells (``arrows=0``: none). ``clim`` colours truth and prediction
    (default: this step's range, symmetric for vorticity); ``error_clim`` the error panel,
    which shows the quantity of the error field (``|Δu|`` or the vorticity difference).
    """
    _check_quantity(quantity)
    truth, pred = _as_frames(truth_t, 3), _as_frames(pred_t, 3)
    if truth is None or pred is None or truth.shape != pred.shape:
        return message("n/a: truth and prediction must both be [2, H, W]", "flow")
    error = pred - truth
    vdim, edim = _flow_dims(quantity)
    cmap = DIVERGING if quantity == "vorticity" else SEQUENTIAL
    if clim is None:
        clim = _limits(quantity, _quantity(truth, quantity), _quantity(pred, quantity))
    if error_clim is None:
        error_clim = _limits(quantity, _quantity(error, quantity))
    panels = [_flow_image(truth, quantity, f"truth: {quantity}", vdim, cmap, clim, arrows),
              _flow_image(pred, quantity, f"prediction: {quantity}", vdim, cmap, clim, arrows),
              _flow_image(error, quantity, f"error: {quantity} of (prediction − truth)", edim,
                          DIVERGING if quantity == "vorticity" else "magma", error_clim, arrows)]
    return hv.Layout(panels).cols(3).opts(shared_axes=True)


def flow_frames(truth: np.ndarray, prediction: np.ndarray, quantity: str = "speed",
                arrows: int = 12, steps: Sequence[int] | None = None) -> hv.HoloMap | hv.Element:
    """A HoloMap over ``step`` of :func:`flow_panel` layouts (truth, prediction, error).

    ``truth``, ``prediction``: rollouts ``[T, 2, H, W]`` (the shorter length is used); steps
    are keyed ``steps`` or 1..T. Truth and prediction share colour limits over all steps
    (symmetric for vorticity); the error panel has its own, also fixed over steps.
    ``.collate()`` turns the result into a Layout of HoloMaps when displaying it directly.
    """
    _check_quantity(quantity)
    truth, prediction = _as_frames(truth, 4), _as_frames(prediction, 4)
    if truth is None or prediction is None or truth.shape[1:] != prediction.shape[1:]:
        return message("n/a: truth and prediction must both be [T, 2, H, W] on one grid", "flow")
    n = min(len(truth), len(prediction))
    keys = list(range(1, n + 1)) if steps is None else [int(s) for s in steps][:n]
    if n == 0 or not keys:
        return message("n/a: no frames", "flow")
    truth, prediction = truth[:len(keys)], prediction[:len(keys)]
    clim = _limits(quantity, _quantity(truth, quantity), _quantity(prediction, quantity))
    error_clim = _limits(quantity, _quantity(prediction - truth, quantity))
    return hv.HoloMap({k: flow_panel(truth[i], prediction[i], quantity, clim, arrows, error_clim)
                       for i, k in enumerate(keys)},
                      kdims=[hv.Dimension("step", label="rollout step")])


# ------------------------------------------------------------------------------------ equivariance
def equivariance_bars(err: xr.Dataset | xr.DataArray | None) -> hv.Element:
    """Relative equivariance error per group element as Bars.

    ``err``: :func:`core.analysis.equivariance_error` (variable ``relative``), a run's metrics
    (``equivariance_error_element``) or that DataArray. Interpolated elements (non-quarter
    turns) are starred; non-finite errors are left out and counted in the title.
    """
    da = err
    if isinstance(err, xr.Dataset):
        da = next((err[n] for n in ("relative", "equivariance_error_element") if n in err), None)
    title = "equivariance error per element"
    if not isinstance(da, xr.DataArray) or da.dims != ("element",):
        return message("n/a: no equivariance error", title)
    attrs = {**da.attrs, **(err.attrs if isinstance(err, xr.Dataset) else {})}
    interpolated = set(filter(None, str(attrs.get("interpolated", "")).split(",")))
    labels = np.asarray([f"{e}*" if str(e) in interpolated else str(e)
                         for e in da["element"].values])
    vals = _floats(da.values)
    ok = np.isfinite(vals)
    if "group" in attrs:
        title += f" ({attrs['group']})"
    mean = attrs.get("mean")
    if mean is None and isinstance(err, xr.Dataset) and "equivariance_error" in err:
        mean = err["equivariance_error"].values  # a run's metrics: the scalar mean
    if mean is not None:
        title += f", mean {_fmt(mean)}"
    if interpolated:
        title += ", * interpolated"
    if not ok.all():
        title += f", {int((~ok).sum())} n/a"
    if not ok.any():
        return message("n/a: no finite equivariance error", title)
    return hv.Bars((labels[ok], vals[ok]), kdims=[hv.Dimension("element", label="group element")],
                   vdims=[hv.Dimension("relative", label="relative error")]).opts(
        tools=["hover"], title=title, xlabel="group element",
        ylabel="RMS(f(g·x) − g·f(x)) / RMS(g·f(x))", **_SIZE)


def equivariance_vs_data(points: Sequence[Mapping]) -> hv.Overlay:
    """Model against data equivariance error (the paper's Figure 4).

    ``points``: dicts with ``data_error``, ``model_error`` (relative) and ``model`` (name); per
    model a line through its points sorted by data error (Segments between consecutive
    points), the points coloured by model, and a dashed y = x reference. All models share one
    line glyph and one marker glyph (a glyph per model cost every session's page two Bokeh
    renderers per model).
    """
    title = "model vs data equivariance error (dashed: y = x)"
    by_model: dict[str, list[tuple[float, float]]] = {}
    for p in points or []:
        if not isinstance(p, Mapping):
            continue
        d, m = _num(p.get("data_error")), _num(p.get("model_error"))
        if math.isfinite(d) and math.isfinite(m):
            by_model.setdefault(_text(p.get("model"), "model"), []).append((d, m))
    if not by_model:
        return hv.Overlay([message("n/a: no finite (data, model) error pairs", title)])
    kdim = hv.Dimension("data_error", label="data equivariance error")
    vdim = hv.Dimension("model_error", label="model equivariance error")
    colors = {name: _color(i) for i, name in enumerate(by_model)}
    table, steps = [], []
    for name, pts in by_model.items():
        pts = sorted(pts)
        table += [(d, m, name) for d, m in pts]
        steps += [(*a, *b, name) for a, b in zip(pts, pts[1:])]
    # the lines as segments between a model's consecutive points: a table, one glyph (each
    # end needs a label of its own: HoloViews finds dimensions by label too)
    ends = [kdim, vdim, hv.Dimension("data_error_to", label="data error, next point"),
            hv.Dimension("model_error_to", label="model error, next point")]
    layers = [hv.Segments(steps, ends, ["model"]).opts(color="model", cmap=colors, line_width=2,
                                                       show_legend=False),
              hv.Scatter(table, kdim, [vdim, "model"]).opts(
                  color="model", cmap=colors, size=7, tools=["hover"], show_legend=True),
              hv.Slope(1, 0).opts(color="grey", line_dash="dashed", line_width=1)]
    return hv.Overlay(layers).opts(
        title=title, xlabel="data equivariance error (relative)",
        ylabel="model equivariance error (relative)", padding=0.05, legend_position="top_left",
        **_SIZE)


# ------------------------------------------------------------------------------------ sweeps
def zero_alpha_position(alphas: Sequence[float]) -> float:
    """Where alpha = 0 goes on the log alpha axis: the smallest positive alpha divided by
    ``ZERO_ALPHA_FACTOR`` (1 when there is no positive alpha). Its tick reads "0"."""
    positive = [a for a in map(_num, alphas) if math.isfinite(a) and a > 0]
    return min(positive) / ZERO_ALPHA_FACTOR if positive else 1.0


def sweep_plot(rows: Sequence[Mapping], metric: str = "future_rmse",
               references: Mapping[str, float] | None = None) -> hv.Overlay:
    """``metric`` against the penalty weight alpha (log x), one curve per bank count.

    ``rows``: dicts with ``alpha``, ``num_banks`` (missing: 1) and ``metric`` (e.g.
    :meth:`core.runs.RunStore.list` rows); rows sharing (banks, alpha), e.g. seeds, are
    averaged, with ±1 standard deviation error bars. alpha = 0 sits at
    :func:`zero_alpha_position`, labelled "0". ``references``: label -> value drawn as
    horizontal lines, e.g. ``{"strict (gconv)": 0.8, "free (conv)": 0.9}``.
    """
    label = METRIC_LABELS.get(metric, metric)
    title = f"{label} against alpha"
    cells: dict[int, dict[float, list[float]]] = {}
    for r in rows or []:
        if not isinstance(r, Mapping):
            continue
        alpha, value, banks = _num(r.get("alpha")), _num(r.get(metric)), _num(r.get("num_banks"))
        if math.isfinite(alpha) and alpha >= 0 and math.isfinite(value):
            banks = int(banks) if math.isfinite(banks) else 1
            cells.setdefault(banks, {}).setdefault(alpha, []).append(value)
    refs = {str(k): _num(v) for k, v in (references or {}).items() if math.isfinite(_num(v))}
    if not cells and not refs:
        return hv.Overlay([message(f"n/a: no runs with {metric}", title)])
    alphas = sorted({a for by_alpha in cells.values() for a in by_alpha})
    zero = zero_alpha_position(alphas)
    xdim = hv.Dimension("alpha", label="alpha (penalty weight)")
    ydim = hv.Dimension(metric, label=label)
    layers, extent = [], list(refs.values())
    for i, (banks, by_alpha) in enumerate(sorted(cells.items())):
        keys = sorted(by_alpha)
        xs = np.asarray([a if a > 0 else zero for a in keys])
        means = np.asarray([np.mean(by_alpha[a]) for a in keys])
        seeds = np.asarray([len(by_alpha[a]) for a in keys])
        extent += list(means)
        name = f"{banks} bank" + ("" if banks == 1 else "s")
        layers += [hv.Curve((xs, means), xdim, ydim, label=name).opts(color=_color(i),
                                                                       tools=["hover"]),
                   hv.Scatter((xs, means, seeds), xdim, [ydim, "seeds"], label=name).opts(
                       color=_color(i), size=7, tools=["hover"])]
        if (seeds > 1).any():
            std = np.asarray([np.std(by_alpha[a], ddof=1) if len(by_alpha[a]) > 1 else 0.0
                              for a in keys])
            layers.append(hv.ErrorBars((xs, means, std), xdim, [ydim, "std"]).opts(
                color=_color(i)))
            extent += list(means - std) + list(means + std)
    left = zero if alphas and alphas[0] == 0 else (alphas[0] if alphas else 1.0)
    for j, (name, value) in enumerate(refs.items()):
        color = ("black", "dimgrey", "grey")[j % 3]
        layers += [hv.HLine(value).opts(color=color, line_dash=("dashed", "dotted")[j % 2],
                                        line_width=1.5),
                   hv.Text(left, value, f" {name}", halign="left", valign="bottom").opts(
                       text_color=color, text_font_size="9pt")]
    # HLines do not widen the y range, so the references are put in it here
    lo, hi = min(extent), max(extent)
    margin = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-12)
    opts = dict(logx=True, title=title, xlabel="alpha (penalty weight; 0 at the left)",
                ylabel=label, ylim=(lo - margin, hi + margin), padding=0.05,
                legend_position="top_right", **_SIZE)
    if alphas:
        opts["xticks"] = [(a if a > 0 else zero, "0" if a == 0 else f"{a:g}") for a in alphas]
        xs_all = [a if a > 0 else zero for a in alphas]
        if max(xs_all) == min(xs_all):  # one alpha: a log axis needs some width around it
            opts["xlim"] = (xs_all[0] / 10, xs_all[0] * 10)
    return hv.Overlay(layers).opts(**opts)


# ------------------------------------------------------------------------------------ backend
def use_bokeh() -> None:
    """Load HoloViews' Bokeh backend, drawing on plain canvases rather than WebGL (a process-wide
    renderer setting; the dashboard, its warm-up and the report figures call this).

    Why canvases: these figures are small (fields of at most 64 x 64 cells, a few curves or
    bars), where WebGL gains nothing, while every WebGL plot is drawn off screen and copied
    back, in software when the browser has no GPU. Measured, one session's tour: about 10 %
    less browser CPU without WebGL (BENCHMARKS.md, 2026-12-01)."""
    hv.extension("bokeh", logo=False)
    hv.renderer("bokeh").webgl = False


# ------------------------------------------------------------------------------------ table
def _created(value) -> str:
    text = _text(value)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return text
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def runs_table_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """:meth:`core.runs.RunStore.list` rows as a DataFrame for the runs table: columns
    :data:`TABLE_COLUMNS`, indexed by run id ("run"); missing numbers are NaN/<NA>, missing
    text "", created as "YYYY-MM-DD HH:MM:SS" (UTC)."""
    ids, records = [], []
    for r in rows or []:
        if not isinstance(r, Mapping):
            continue
        ids.append(_text(r.get("id")))
        records.append({
            "model": _text(r.get("model")),
            "group": _text(r.get("group"), "none" if r.get("model") else ""),
            "banks": _num(r.get("num_banks")),
            "alpha": _num(r.get("alpha")),
            "dataset": _text(r.get("dataset")),
            "state": _text(r.get("state")),
            "future RMSE": _num(r.get("future_rmse")),
            "domain RMSE": _num(r.get("domain_rmse")),
            "equivariance error": _num(r.get("equivariance_error")),
            "created": _created(r.get("created")),
        })
    frame = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS),
                                      index=pd.Index(ids, dtype=object))
    frame.index.name = "run"  # set after: from_records drops the index's name when it has no rows
    banks = frame["banks"].astype(float)
    frame["banks"] = pd.array([int(b) if math.isfinite(b) else None for b in banks],
                              dtype="Int64")
    return frame

"""Figures of a ``python -m core reproduce`` results folder: ``python -m dashboard.reports OUT``.

Reads ``OUT/results.json`` and writes ``figure4.html`` (model against data equivariance error)
and ``rmse-<scenario>.html`` (future RMSE per model) beside it, as standalone HTML with the
resources inlined (no network needed to open them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import holoviews as hv
import numpy as np

from . import plots


def write_figures(results: dict, out: str | Path) -> list[Path]:
    """The reproduce figures for ``results`` (the dict of results.json) into ``out``."""
    plots.use_bokeh()
    out = Path(out)
    written = []
    points = [dict(data_error=r["data_error"], model_error=r["model_error"], model=r["model"])
              for r in results.get("levels", []) if r.get("model_error") is not None]
    hv.save(plots.equivariance_vs_data(points), out / "figure4.html", resources="inline")
    written.append(out / "figure4.html")
    for scenario in sorted({r["scenario"] for r in results.get("table", [])}):
        rows = [r for r in results["table"] if r["scenario"] == scenario]
        bars = hv.Bars([(r["model"], r["future_mean"] if r["future_mean"] is not None else np.nan)
                        for r in rows], "model", "future RMSE").opts(
            title=f"{scenario}: future RMSE", width=600)
        path = out / f"rmse-{scenario}.html"
        hv.save(bars, path, resources="inline")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.reports",
                                     description="Draw the figures of a reproduce results folder.")
    parser.add_argument("out", help="the folder with results.json")
    args = parser.parse_args(argv)
    path = Path(args.out) / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        print(f"{path}: cannot read results ({err})", file=sys.stderr)
        return 2
    for written in write_figures(results, args.out):
        print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())

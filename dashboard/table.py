"""The runs table: a plain HTML table drawn by the page, with no table library to load.

Tabulator cost each page about 0.2 s of its CPU to the first screen (its 520 kB of scripts and
the measuring of every cell to fit the columns), a tenth of what a page costs a class of twenty
sharing a small server's cores (BENCHMARKS.md). The runs table needs far less: a checkbox per
run to choose the runs to compare, columns that sort on a click, a header that stays in view
while the rows scroll.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import param
from panel.custom import JSComponent

MAX_HEIGHT_PX = 520  # the rows scroll below this; the header stays


def _cell(value) -> str:
    """One cell as text: numbers with four significant digits, missing values empty."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def table_rows(frame: pd.DataFrame) -> list[list[str]]:
    """``frame``'s rows as text, each led by its index (the run id)."""
    return [[str(index), *(_cell(v) for v in row)]
            for index, row in zip(frame.index, frame.itertuples(index=False))]


class RunsTable(JSComponent):
    """Rows of text with a checkbox each; ``selection`` holds the positions (in ``rows``) of the
    checked rows, set by the page or by Python. A click on a row toggles its checkbox, the
    header's checkbox checks all or none, and a click on a column's name sorts by it in the page
    (again: the other way); numeric columns sort as numbers, empty cells last either way."""

    columns = param.List(default=[], item_type=str, doc="the column names, the first the id's")
    numeric = param.List(default=[], item_type=str, doc="columns sorted as numbers")
    rows = param.List(default=[], doc="each row's cells as text (table_rows)")
    selection = param.List(default=[], item_type=int, doc="positions in rows of checked rows")

    _stylesheets = [f"""
    .runs {{ max-height: {MAX_HEIGHT_PX}px; overflow: auto; border: 1px solid #dee2e6;
             border-radius: 4px; }}
    table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
    th, td {{ padding: 4px 8px; border-bottom: 1px solid #e9ecef; white-space: nowrap;
              text-align: left; }}
    th {{ position: sticky; top: 0; background: #f8f9fa; cursor: pointer; user-select: none;
          font-weight: 600; }}
    td.number, th.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
    tr.run-row {{ cursor: pointer; }}
    tr.run-row:hover {{ background: #f1f3f5; }}
    tr.run-row.selected {{ background: #dbe9ff; }}
    th.check, td.check {{ width: 1.5em; cursor: default; }}
    """]

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement("div");
      box.className = "runs";
      const table = document.createElement("table");
      const head = document.createElement("thead"), body = document.createElement("tbody");
      table.append(head, body);
      box.append(table);
      el.append(box);
      let order = null;  // {column, descending}: the page's own sorting
      const checkbox = (checked, label) => {
        const input = document.createElement("input");
        input.type = "checkbox";
        input.checked = checked;
        input.setAttribute("aria-label", label);
        return input;
      };
      const choose = (positions) => { model.selection = [...positions].sort((a, b) => a - b); };
      const compare = (column, numeric) => (a, b) => {
        const x = a.cells[column], y = b.cells[column];
        if ((x === "") !== (y === "")) return x === "" ? 1 : -1;  // empty last, both ways
        const sign = order.descending ? -1 : 1;
        if (numeric) {
          const d = Number(x) - Number(y);
          if (Number.isFinite(d) && d !== 0) return sign * d;
        }
        return sign * x.localeCompare(y, undefined, { numeric: true });
      };
      const draw = () => {
        const numeric = new Set(model.numeric);
        const selected = new Set(model.selection);
        const all = checkbox(model.rows.length > 0 && selected.size === model.rows.length,
                             "select all runs");
        all.addEventListener("click", (event) => {
          event.stopPropagation();
          choose(all.checked ? model.rows.map((_row, i) => i) : []);
        });
        const corner = document.createElement("th");
        corner.className = "check";
        corner.append(all);
        const names = model.columns.map((name, column) => {
          const th = document.createElement("th");
          const sorted = order !== null && order.column === column;
          th.textContent = name + (sorted ? (order.descending ? " \\u25BC" : " \\u25B2") : "");
          th.setAttribute("aria-sort", sorted ? (order.descending ? "descending" : "ascending")
                                              : "none");
          if (numeric.has(name)) th.className = "number";
          th.tabIndex = 0;  // sorts from the keyboard too
          const sort = () => {
            order = { column, descending: sorted ? !order.descending : false };
            draw();
            head.querySelectorAll("th")[column + 1]?.focus();
          };
          th.addEventListener("click", sort);
          th.addEventListener("keydown", (event) => {
            if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
          });
          return th;
        });
        const header = document.createElement("tr");
        header.append(corner, ...names);
        head.replaceChildren(header);
        const rows = model.rows.map((cells, position) => ({ cells, position }));
        if (order !== null && order.column < model.columns.length)
          rows.sort(compare(order.column, numeric.has(model.columns[order.column])));
        body.replaceChildren(...rows.map(({ cells, position }) => {
          const tr = document.createElement("tr");
          const on = selected.has(position);
          tr.className = on ? "run-row selected" : "run-row";
          tr.dataset.run = cells[0] ?? "";
          const check = document.createElement("td");
          check.className = "check";
          check.append(checkbox(on, `select run ${cells[0] ?? ""}`));
          tr.append(check, ...cells.map((text, column) => {
            const td = document.createElement("td");
            td.textContent = text;
            if (numeric.has(model.columns[column])) td.className = "number";
            return td;
          }));
          tr.addEventListener("click", () => {  // the checkbox's click lands here too
            const now = new Set(model.selection);
            if (now.has(position)) now.delete(position); else now.add(position);
            choose(now);
          });
          return tr;
        }));
      };
      model.on(["rows", "columns", "numeric", "selection"], draw);
      draw();
    }
    """

    @param.depends("rows", watch=True)
    def _keep_selection_in_rows(self):
        kept = [i for i in self.selection if 0 <= i < len(self.rows)]
        if kept != self.selection:
            self.selection = kept

    @classmethod
    def of(cls, frame: pd.DataFrame, numeric: Sequence[str] = (), **params) -> "RunsTable":
        """The table of ``frame`` (its index first, under the index's name)."""
        return cls(columns=[frame.index.name or "", *map(str, frame.columns)],
                   numeric=list(numeric), rows=table_rows(frame), **params)


__all__ = ["MAX_HEIGHT_PX", "RunsTable", "table_rows"]

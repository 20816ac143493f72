"""The runs table's cells and selection (its drawing and sorting in a page: tests/ui)."""
import math

from dashboard import plots
from dashboard.table import RunsTable, table_rows


def _rows():
    return [dict(id="b-run", model="rgroup", group="C4", num_banks=2, alpha=1e-5, state="done",
                 future_rmse=0.123456, domain_rmse=float("nan"), created="2026-01-02T03:04:05"),
            dict(id="a-run", model="conv", state="running")]


def test_cells_are_text_with_missing_values_empty():
    frame = plots.runs_table_frame(_rows())
    (first, second) = table_rows(frame)
    row = dict(zip(["run", *frame.columns], first))
    assert row["run"] == "b-run" and row["banks"] == "2" and row["alpha"] == "1e-05"
    assert row["future RMSE"] == "0.1235" and row["domain RMSE"] == ""
    assert row["created"] == "2026-01-02 03:04:05"
    assert math.isclose(float(row["future RMSE"]), 0.123456, rel_tol=1e-3)
    other = dict(zip(["run", *frame.columns], second))
    assert other["banks"] == "" and other["future RMSE"] == "" and other["state"] == "running"
    assert all(isinstance(cell, str) for cell in first + second)


def test_the_table_shows_the_frame_under_its_columns():
    frame = plots.runs_table_frame(_rows())
    table = RunsTable.of(frame, numeric=plots.NUMERIC_TABLE_COLUMNS)
    assert table.columns == ["run", *plots.TABLE_COLUMNS]
    assert set(table.numeric) <= set(table.columns)
    assert all(len(row) == len(table.columns) for row in table.rows)
    empty = RunsTable.of(plots.runs_table_frame([]))
    assert empty.rows == [] and empty.columns == table.columns


def test_a_shorter_listing_drops_selected_positions_it_no_longer_has():
    table = RunsTable.of(plots.runs_table_frame(_rows()))
    table.selection = [0, 1]
    table.rows = table.rows[:1]
    assert table.selection == [0]
    table.rows = []
    assert table.selection == []

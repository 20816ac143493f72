"""State and views without a server: valid choices, refusals, rendering on real runs."""
import json
import shutil

import panel as pn
import pytest

from core.datasets import generate, save_dataset
from core.errors import SpecError
from dashboard.embed import StaticFigure
from dashboard.state import STRICT_OF, ExperimentState, Services, alpha_value, valid_models
from dashboard.views import (BreakingView, DiscoveryView, EquivarianceView, JobsView,
                             RolloutView, RunsCatalog, SweepView)
from tests.workspace import shipped_workspace


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    work = tmp_path_factory.mktemp("project")
    data = shipped_workspace(work)
    save_dataset(generate("rotation", grid=16, steps=80, sims=8, device="cpu"), data / "tiny.nc")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)  # where the shipped runs' data/NAME.nc are found
        services = Services(data_root=data, runs_root=tmp_path_factory.mktemp("runs"))
        yield services
        services.jobs.shutdown()


@pytest.fixture
def state(services):
    return ExperimentState(services)


def test_valid_models_follow_the_group():
    assert valid_models("SO2") == ["steer", "rsteer"]
    assert "steer" not in valid_models("D4") and "combo" in valid_models("D4")
    assert set(valid_models("translation")) == {"mlp", "conv", "rgroup", "constrained"}
    assert alpha_value("strict") is None and alpha_value("1e-3") == 1e-3


def test_group_change_keeps_the_model_valid(state):
    state.group = "SO2"
    assert state.param.model.objects == ["steer", "rsteer"] and state.model in ("steer", "rsteer")
    state.group = "translation"
    assert state.model in valid_models("translation")


def test_strict_end_of_the_alpha_slider_trains_the_strict_model(state):
    state.dataset, state.group, state.model, state.alpha = "tiny.nc", "C4", "rgroup", "strict"
    spec = state.model_spec()
    assert spec["name"] == "gconv" and spec["alpha"] == 0.0 and spec["grid"] == [16, 16]


def test_forced_invalid_settings_are_rejected(state):
    state.dataset, state.group = "tiny.nc", "D4"
    with pytest.raises(ValueError, match="does not accept 'steer'"):
        state.model = "steer"  # the panel never offers it
    state.param.model.objects = list(state.param.model.objects) + ["steer"]  # forced anyway
    state.model = "steer"
    with pytest.raises(SpecError, match="valid groups"):
        state.submit()


@pytest.mark.parametrize("name", ["../etc/passwd", "/tmp/x.nc", "..", "a/b.nc", ".hidden.nc"])
def test_file_choices_stay_inside_the_data_folder(services, name):
    with pytest.raises(ValueError):
        services.dataset_path(name)


def test_catalog_lists_shipped_runs_and_selects_one(state):
    catalog = RunsCatalog(state)
    catalog.poll()
    assert "rotation-rgroup-C4" in list(catalog.frame.index)
    assert [row[0] for row in catalog.table.rows] == list(catalog.frame.index)
    assert len(state.selected_runs) == 1
    # it opens on a run with relaxed weights (listed after rotation-conv): a breaking picture
    assert state.selected_runs[0].split("-")[1] in STRICT_OF


@pytest.mark.parametrize("view", [BreakingView, EquivarianceView, SweepView])
def test_views_render_shipped_runs(state, view):
    state.selected_runs = ["rotation-rgroup-C4"]
    shown = view(state)
    text = " ".join(str(getattr(o, "object", "")) for o in shown.body.objects)
    assert "cannot show" not in text
    assert any(isinstance(o, StaticFigure) and o.item for o in shown.body.objects)


def test_breaking_view_names_the_kind_and_score(state):
    shown = BreakingView(state, run_id="translation-rgroup")
    assert "kind **translation**" in shown.body.objects[0].object


def test_hidden_views_do_not_render(state):
    state.selected_runs = ["rotation-rgroup-C4"]
    shown = BreakingView(state, active=False)
    assert shown.body.objects == []
    shown.active = True
    assert shown.body.objects


def test_a_hidden_view_lets_go_of_its_plots(state):
    """A tab renders afresh each time it is shown, so while hidden it keeps nothing of its
    figures: a session used to hold every visited tab's plots (~500 models, half its memory)."""
    import gc
    import weakref

    from bokeh.document import Document

    state.selected_runs = ["rotation-rgroup-C4"]
    shown = BreakingView(state)
    doc = Document()
    root = shown.body.get_root(doc)
    doc.add_root(root)
    figures = [weakref.ref(o) for o in shown.body.objects if isinstance(o, StaticFigure)]
    models = [weakref.ref(m) for m in root.references() if "item" in m.properties()]
    assert len(figures) == len(models) == 2
    shown.active = False
    doc.models.flush_synced()  # as a served session does once the change is sent
    gc.collect()
    assert shown.body.objects == [] and all(ref() is None for ref in figures + models)
    shown.active = True
    assert shown.body.objects


def test_rollout_view_without_the_dataset_explains(state, services, tmp_path):
    """A run whose dataset has moved away shows why there is no rollout, and how to get one."""
    moved = services.store.root / "rotation-gconv-C4-moved"
    shutil.copytree(services.run("rotation-gconv-C4").path, moved,
                    ignore=shutil.ignore_patterns("evaluation"))
    spec = json.loads((moved / "spec.json").read_text())
    spec["dataset"]["path"] = str(tmp_path / "moved.nc")
    (moved / "spec.json").write_text(json.dumps(spec))
    state.selected_runs = [moved.name]
    shown = RolloutView(state)
    (message,) = shown.body.objects
    assert "moved.nc" in message.object and "is not here" in message.object


def test_rollout_arrows_are_off_until_asked_for(state):
    state.dataset, state.group, state.model, state.alpha = "tiny.nc", "C4", "rgroup", "1e-3"
    state.epochs, state.batches_per_epoch, state.hidden_dim = 1, 2, 8
    run_id = state.submit()
    assert state.services.jobs.wait(run_id, timeout=120)["state"] == "done"
    state.selected_runs = [run_id]
    shown = RolloutView(state)

    def glyphs():  # the player figure's glyph types
        item = shown.flow.item
        return {g for g in ("Image", "Segment") if f'"name":"{g}"' in item.replace(" ", "")}

    assert shown.flow is shown.body.objects[-1] and glyphs() == {"Image"}
    columns = {column for _id, column, _size in json.loads(shown.flow.index)}
    assert columns == {"image"}
    shown.arrows = True
    assert glyphs() == {"Image", "Segment"}  # arrows over truth, prediction and error
    assert {"image", "x0", "y0", "x1", "y1"} <= {
        column for _id, column, _size in json.loads(shown.flow.index)}


def test_the_player_moves_the_frame_shown(state):
    shown = RolloutView(state, run_id="rotation-rgroup-C4")
    assert shown.flow.count == shown.player.end and shown.flow.frame == shown.player.value - 1
    for value in (5, shown.player.end, 1):
        shown.player.value = value
        assert shown.flow.frame == value - 1
    other = RolloutView(ExperimentState(state.services), run_id="rotation-rgroup-C4")
    assert other.flow.frames is shown.flow.frames  # the frames are rendered once per process


def test_jobs_view_trains_and_reports(state):
    state.dataset, state.group, state.model, state.alpha = "tiny.nc", "C4", "rgroup", "1e-3"
    state.epochs, state.batches_per_epoch, state.hidden_dim = 1, 2, 8
    run_id = state.submit()
    final = state.services.jobs.wait(run_id, timeout=120)
    assert final["state"] == "done"
    jobs = JobsView(state)
    jobs.poll()
    assert any(run_id in str(row.objects[0].object) for row in jobs.rows.objects)
    text = next(str(row.objects[0].object) for row in jobs.rows.objects
                if run_id in str(row.objects[0].object))
    assert "done" in text and "device cpu" in text  # from the shared listing's job status
    # the watched run's curves, rendered once for every session that watches it
    assert "train_loss" in jobs.curves.item and run_id in jobs.curves.item
    other = JobsView(ExperimentState(state.services))
    other.poll()
    assert other.curves.item is jobs.curves.item


def test_a_hidden_jobs_tab_changes_nothing_until_shown(state, monkeypatch):
    """An ETA changes every second in every session: a hidden Jobs tab must not re-render its
    rows for it, and must be current as soon as it is shown."""
    jobs = JobsView(state, active=False)
    row = dict(id="r1", store="runs", state="running", progress=0.25, eta_seconds=40.0,
               device="cpu", error=None)
    jobs.poll([row])
    assert jobs.rows.objects == [] and jobs._widgets == {}
    jobs.poll([dict(row, progress=0.5, eta_seconds=20.0)])
    assert jobs._widgets == {}
    listing = type("Listing", (), dict(runs=[dict(row, progress=0.75, eta_seconds=10.0)]))
    monkeypatch.setattr(state.services, "snapshot", lambda *a, **k: listing)
    jobs.active = True  # shown: polls the listing at once
    text = str(jobs._widgets["r1"]["text"].object)
    assert "ETA 10 s" in text and jobs._widgets["r1"]["progress"].value == 75


def test_catalog_selects_a_run_once_then_leaves_the_choice_to_the_user(state):
    catalog = RunsCatalog(state)
    catalog.poll()
    assert len(state.selected_runs) == 1
    catalog.table.selection = []
    catalog.poll()
    assert state.selected_runs == []


def test_discovery_view_shows_the_shipped_verdicts_beside_their_nulls(state):
    rows = state.services.discoveries()
    shipped = {r["data"]: r for r in rows if r["store"] == "pretrained" and r["state"] == "done"}
    assert {"discover-rotation.nc", "discover-translation.nc"} <= set(shipped)
    view = DiscoveryView(state)
    for data, needle in (("discover-rotation.nc", "member differently"),
                         ("discover-translation.nc", "Strongest boundary")):
        view.records.value = shipped[data]["id"]
        text = " ".join(str(getattr(o, "object", "")) for o in view.body.objects)
        assert needle in text and "significance" in text and "cannot show" not in text
        assert sum(isinstance(o, StaticFigure) for o in view.body.objects) >= 2


def test_discover_refuses_bad_input_without_writing(state, services):
    state.dataset, state.group = "tiny.nc", "SO2"
    view = DiscoveryView(state)
    before = services.discoveries()
    view._discover()
    assert "Not started" in view.status.object and "SO2" in view.status.object
    state.group = "C4"  # tiny.nc has two orbits, one of them held out
    view._discover()
    assert "complete orbit" in view.status.object
    assert services.discoveries() == before


def test_breaking_view_links_to_the_discovery_tab(state):
    shown = BreakingView(state, run_id="rotation-rgroup-C4")
    link = next(o for o in shown.body.objects if isinstance(o, pn.widgets.Button))
    link.clicks += 1
    assert state.focus == "Discovery"


def _tiny_run(services):
    from core.models import build_model

    spec = dict(name="rgroup", group="C4", in_frames=2, hidden_dim=8, num_layers=2,
                grid=[16, 16], num_banks=2, alpha=0.5)
    run = services.store.create(spec, dict(epochs=1), services.dataset_path("tiny.nc"))
    run.save_weights(build_model(**spec).state_dict())
    run.update_status(state="done", progress=1.0)
    services.invalidate()
    return run


def test_a_run_deleted_while_shown_gives_a_clear_screen(state):
    run = _tiny_run(state.services)
    views = [BreakingView(state, run_id=run.id), RolloutView(state, run_id=run.id),
             EquivarianceView(state, run_id=run.id)]
    for view in views:
        assert any(isinstance(o, StaticFigure) for o in view.body.objects)
    state.services.delete(run.id)
    for view in views:
        view.render()
        text = " ".join(str(getattr(o, "object", "")) for o in view.body.objects)
        assert "no longer in the run store" in text and "Traceback" not in text


def test_sessions_share_one_listing_and_one_set_of_figures(services):
    first, second = ExperimentState(services), ExperimentState(services)
    services.invalidate()
    listing = services.snapshot()
    assert first.services.snapshot() is listing is second.services.snapshot()
    services.invalidate()
    assert services.snapshot().version == listing.version  # nothing changed: same version
    views = [BreakingView(s, run_id="rotation-rgroup-C4") for s in (first, second)]
    plots_of = [[o.item for o in v.body.objects if isinstance(o, StaticFigure)] for v in views]
    assert plots_of[0] and all(a is b for a, b in zip(*plots_of))  # rendered once, shared


def test_a_changing_listing_keeps_the_selection_without_re_rendering(state):
    catalog = RunsCatalog(state)
    rows = [dict(r) for r in state.services.catalog()]
    catalog.poll(rows)
    catalog.table.selection = [1]
    chosen = list(state.selected_runs)
    events = []
    state.param.watch(events.append, "selected_runs")
    rows[0]["progress"] = 0.5  # a job's progress moves, a new run appears
    catalog.poll(rows + [dict(rows[-1], id="zz-new-run", state="queued")])
    assert events == [] and state.selected_runs == chosen
    catalog.poll([r for r in rows if r["id"] != chosen[0]])  # the selected run disappears
    assert state.selected_runs == []


def test_state_changes_update_the_row_and_keep_the_selection(state):
    catalog = RunsCatalog(state)
    rows = [dict(r) for r in state.services.catalog()]
    catalog.poll(rows)
    catalog.table.selection = [2]
    chosen = list(state.selected_runs)
    rows[1]["progress"], rows[1]["state"] = 0.25, "running"
    catalog.poll(rows)
    assert catalog.frame.iloc[1]["state"] == "running"
    assert catalog.table.rows[1][catalog.table.columns.index("state")] == "running"
    assert catalog.table.selection == [2] and state.selected_runs == chosen


def test_progress_alone_sends_nothing_to_the_table(state):
    """Every open page redraws the table for a change: a running job's progress (shown by the
    Jobs tab) must not reach it; its end, with the run's metrics, does."""
    catalog = RunsCatalog(state)
    rows = [dict(r) for r in state.services.catalog()]
    rows[1]["progress"], rows[1]["state"] = 0.1, "running"
    catalog.poll(rows)
    sent = []
    catalog.table.param.watch(sent.append, ["rows", "selection"])
    for progress in (0.2, 0.3, 0.9):
        rows[1]["progress"] = progress
        catalog.poll(rows)
    assert sent == []
    rows[1]["progress"], rows[1]["state"], rows[1]["future_rmse"] = 1.0, "done", 0.5
    catalog.poll(rows)
    assert [event.name for event in sent] == ["rows"]
    row = dict(zip(catalog.table.columns, catalog.table.rows[1]))
    assert row["state"] == "done" and row["future RMSE"] == "0.5"


def test_sessions_asking_for_one_missing_figure_at_once_wait_for_one_rendering():
    import threading
    import time

    from dashboard.views import _Shared

    shared, made, start = _Shared(size=4), [], threading.Barrier(6)

    def make():
        made.append(1)
        time.sleep(0.2)  # long enough for every other session to ask meanwhile
        return object()

    got = []

    def session(key):
        start.wait()
        got.append((key, shared.get(key, make)))

    threads = [threading.Thread(target=session, args=("a" if i < 4 else f"b{i}",))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 3  # "a" once, "b4" and "b5" once each
    assert len({id(v) for k, v in got if k == "a"}) == 1 and shared.making == {}


def test_the_served_page_leaves_out_only_the_unused_bundles():
    from dashboard.app import UNUSED_BUNDLES, without_unused_bundles

    tag = '<script type="text/javascript" src="static/js/{}.min.js?v=abc"></script>\n'
    page = "".join(tag.format(name) for name in
                   ("bokeh", "bokeh-gl", "bokeh-widgets", "bokeh-tables", "bokeh-mathjax"))
    kept = without_unused_bundles(page)
    assert set(UNUSED_BUNDLES) == {"bokeh-mathjax", "bokeh-gl"}
    assert kept == "".join(tag.format(name) for name in ("bokeh", "bokeh-widgets", "bokeh-tables"))

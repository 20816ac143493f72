"""Dashboard views: thin ``pn.viewable.Viewer`` components over :mod:`dashboard.state`.

Each view works on its own in a notebook after ``pn.extension()`` (e.g. ``BreakingView(state)``)
and inside :class:`dashboard.app.ExplorerApp`. Views read analyses from the run folders' evaluation
artifacts (:mod:`core.evaluation`: computed once per weights file and dataset, shared by every
session and server process), build each figure once per process, never train, render only while
their tab is shown, and update in batches under ``pn.io.hold``.
"""
from __future__ import annotations

import threading
from pathlib import Path
from collections import OrderedDict
from functools import lru_cache, partial

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from core.datasets import DatasetError, summary
from core.errors import SpecError
from core.evaluation import cached_dataset_attrs, cached_metrics, evaluation
from core.importers import ROLES, crop_square, file_names, read_flow
from core.runs import RunError

from . import plots
from .background import Background
from .embed import StaticFigure, animation_json, figure_json
from .state import STRICT_OF, UPLOAD_LIMIT_MB, ExperimentState, safe_name
from .table import RunsTable, table_rows
from .upload import StreamingDropper

EXPLANATION = """
**What you are looking at.** A relaxed layer mixes its filter banks with weights that may differ
between group elements (rotations/reflections), pixels (translation) or kernel offsets
(steerable). Equal weights mean the layer is exactly symmetric. The heatmaps show each layer's
weights *minus their mean* (for a group, one row per layer and bank, each layer scaled to its own
largest deviation; hover for the raw values): white everywhere = no symmetry breaking; colour
shows where the trained model chose to break the symmetry. The bars split each layer's weights
into the group's irreducible representations: energy outside *trivial* is symmetry breaking, and
which irrep carries it names the broken symmetry (e.g. *sign* on C4 = a period-2 pattern, what a
square squeezed into a rectangle would show). The breaking score is the non-trivial share of the
energy.
For translation models the maps show the learned per-pixel weights; the dashed line marks the
dataset's known buoyancy boundary.
"""

_lock = threading.Lock()
ARROWS = 12  # velocity arrows across the flow player's images, when shown


def _notify(kind: str, text: str) -> None:
    notifications = getattr(pn.state, "notifications", None)
    if notifications is not None:
        getattr(notifications, kind)(text, duration=6000)


class _Shared:
    """Figures rendered once per process and shown by every session (:func:`_rendered`,
    :func:`_animate`): no session runs HoloViews' plotting for them. LRU by key. Sessions
    asking for the same missing figure at once wait for one rendering of it (a flow player's
    frames take ~2 s); different figures render side by side."""

    def __init__(self, size: int = 64):
        self.size, self.items = size, OrderedDict()
        self.making: dict = {}  # key -> [lock, sessions waiting on it]

    def _cached(self, key):
        with _lock:
            if key in self.items:
                self.items.move_to_end(key)
                return True, self.items[key]
        return False, None

    def get(self, key, make):
        found, value = self._cached(key)
        if found:
            return value
        with _lock:
            entry = self.making.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                found, value = self._cached(key)  # made while this one waited
                if found:
                    return value
                value = make()
                with _lock:
                    self.items[key] = value
                    while len(self.items) > self.size:
                        self.items.popitem(last=False)
                return value
        finally:
            with _lock:
                entry[1] -= 1
                if not entry[1]:
                    del self.making[key]


_figures = _Shared()
_animations = _Shared(size=8)  # ~1 MB each (a rollout's 20 frames of three 64 x 64 fields)


def _animate(rollout: xr.Dataset, quantity: str, arrows: int):
    """The flow player's frames of one evaluated rollout, rendered once for every session."""
    frames = plots.flow_frames(rollout["truth"].values, rollout["prediction"].values,
                               quantity=quantity, arrows=arrows)
    return animation_json(frames) if isinstance(frames, hv.HoloMap) else figure_json(frames)


def _rendered(key: tuple, make, with_picture: bool = True):
    """The figure ``make()`` builds, rendered once per process and ``key`` (what the figure
    shows, and every version it depends on) to Bokeh JSON and, unless ``with_picture`` is
    False, to a picture: a session's tab costs the server a string, not HoloViews' plotting and
    Bokeh's model walks, and the page a picture until the figure is wanted interactive."""
    return _figures.get(("static", with_picture, *key),
                        lambda: figure_json(make(), with_picture=with_picture))


def _file_version(path) -> tuple:
    """What tells one version of a file from the next (None when it is absent)."""
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return (str(path), None)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _figure_key(evaluated, *extra) -> tuple:
    """Identity of a figure: the evaluation it shows (kind, weights and dataset fingerprints,
    which the artifact carries), plus what else shapes the figure."""
    a = evaluated.attrs
    return (a["evaluation_kind"], a["evaluation_weights"], a["evaluation_dataset"], *extra)


def _folded(title: str, contents) -> pn.Card:
    """A collapsed card whose widgets are put in (and sent to the browser) only when it is
    first opened: a session that never opens it never pays for them."""
    card = pn.Card(title=title, collapsed=True, sizing_mode="stretch_width")

    def unfold(event):
        if not event.new and not card.objects:
            card.objects = list(contents())

    card.param.watch(unfold, "collapsed")
    return card


def _message(text: str) -> pn.pane.Markdown:
    return pn.pane.Markdown(f"*{text}*", sizing_mode="stretch_width")


class ExperimentPanel(pn.viewable.Viewer):
    """Settings, Train, and dataset generation."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(**params)
        self.state = state
        s = state.param
        self.dataset = pn.widgets.Select.from_param(s.dataset, name="Dataset")
        self.group = pn.widgets.Select.from_param(s.group, name="Symmetry group")
        self.model = pn.widgets.Select.from_param(s.model, name="Model")
        self.banks = pn.widgets.IntSlider.from_param(s.num_banks, name="Filter banks L")
        self.alpha = pn.widgets.DiscreteSlider.from_param(s.alpha, name="Relaxation alpha "
                                                          "(0 = free, strict = strict model)")
        self.train_button = pn.widgets.Button(name="Train", button_type="primary")
        self.train_button.on_click(self._train)
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.new_name = None  # the generation card's widgets, made when it is first opened
        state.param.watch(self._sync_banks, "model")
        self._sync_banks()
        self._layout = pn.Column(
            "### Experiment", self.dataset, self.group, self.model, self.banks, self.alpha,
            _folded("Training budget", self._budget), self.train_button, self.status,
            _folded("Generate a dataset", self._generation),
            _folded("Bring your own data", lambda: [ImportPanel(state)]),
            sizing_mode="stretch_width")

    def _budget(self) -> list:
        s = self.state.param
        return [*(pn.widgets.IntInput.from_param(p, name=n) for p, n in (
                    (s.epochs, "Epochs"), (s.batch_size, "Batch size"),
                    (s.batches_per_epoch, "Batches per epoch"), (s.hidden_dim, "Hidden width"),
                    (s.num_layers, "Layers"))),
                pn.widgets.FloatInput.from_param(s.lr, name="Learning rate", step=1e-4),
                pn.widgets.FloatInput.from_param(
                    s.relaxed_lr, name="Relaxed-weight learning rate (empty: same)", step=1e-3),
                pn.widgets.Select.from_param(s.device, name="Device")]

    def _generation(self) -> list:
        s = self.state.param
        self.new_name = pn.widgets.TextInput(name="File name", value="my_rotation.nc")
        self.generation = pn.indicators.Progress(value=0, max=100, visible=False,
                                                 sizing_mode="stretch_width")
        generate = pn.widgets.Button(name="Generate", button_type="default")
        generate.on_click(self._generate)
        return [pn.widgets.Select.from_param(s.scenario, name="Scenario"),
                pn.widgets.FloatSlider.from_param(s.breaking, name="Breaking", step=0.1),
                self.new_name, generate, self.generation]

    def _sync_banks(self, *_):
        self.banks.disabled = self.state.model != "rgroup"

    def _train(self, _event=None):
        try:
            run_id = self.state.submit()
        except (SpecError, ValueError) as err:
            self.status.object = f"**Not submitted:** {err}"
            _notify("error", f"Not submitted: {err}")
            return
        self.status.object = f"Submitted `{run_id}`: see the Jobs tab."
        _notify("info", f"Training job {run_id} queued")

    def _generate(self, _event=None):
        name = self.new_name.value.strip()
        try:
            self.state.services.generate(self.state.scenario, name, breaking=self.state.breaking)
        except ValueError as err:
            _notify("error", str(err))
            self.status.object = f"**Not generated:** {err}"
            return
        self.generation.visible = True
        self.status.object = f"Generating `{name}` in the background."

    def poll(self) -> None:
        """Called when the shared listing changed: datasets saved or generated in other
        sessions, and this session's generation progress."""
        self.state.refresh_datasets()
        if self.new_name is None:  # no generation card yet: none was started here
            return
        record = self.state.services.generations.get(self.new_name.value.strip())
        if not record:
            return
        self.generation.value = int(100 * record["progress"])
        if record["state"] != "running" and self.generation.visible:
            self.generation.visible = False
            self.state.refresh_datasets()
            if record["state"] == "done":
                _notify("success", f"Dataset {self.new_name.value} ready")
                self.status.object = f"Generated `{self.new_name.value}`."
            else:
                _notify("error", f"Generation failed: {record['error']}")
                self.status.object = f"**Generation failed:** {record['error']}"

    def __panel__(self):
        return self._layout


class ImportPanel(pn.viewable.Viewer):
    """Bring your own flow: drop a file, map its names if needed, preview, save.

    The file is staged in the data root's hidden ``.uploads`` folder and read by
    :func:`core.importers.read_flow`; nothing enters the data folder before Save, which writes
    atomically and replaces an existing dataset only when asked."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(**params)
        self.state = state
        # no accepted_filetypes: browsers give .nc/.npy/.pt files no MIME type the dropper
        # knows, so it would refuse them; read_flow names the formats it takes instead
        self.dropper = StreamingDropper(
            folder=state.services.uploads, multiple=True, max_file_size=f"{UPLOAD_LIMIT_MB}MB",
            chunk_size=min(10_000_000, UPLOAD_LIMIT_MB * 2 ** 19),  # below the websocket limit
            max_bytes=UPLOAD_LIMIT_MB * 2 ** 20, sizing_mode="stretch_width",
            name="Drop a file (or several .pt)")
        self.dropper.param.watch(self._dropped, "value")
        self.dropper.param.watch(lambda e: e.new and self._fail(
            f"{e.new} is larger than the upload limit of {UPLOAD_LIMIT_MB} MB (REE_UPLOAD_MB)"),
            "refused")
        self.roles = {r: pn.widgets.Select(name=r, options=[""], width=140) for r in ROLES}
        self.map_button = pn.widgets.Button(name="Read with these names")
        self.map_button.on_click(self._read)
        self.mapping = pn.Column(
            pn.pane.Markdown("Which variable or dimension is which? (leave empty: not present)"),
            pn.GridBox(*self.roles.values(), ncols=2), self.map_button, visible=False)
        self.crop = pn.widgets.Checkbox(name="Centred square crop (rotation symmetry of the data "
                                             "needs a square grid)")
        self.crop.param.watch(self._read, "value")
        self.save_name = pn.widgets.TextInput(name="Save as", value="")
        self.overwrite = pn.widgets.Checkbox(name="Replace an existing dataset of that name")
        self.save_button = pn.widgets.Button(name="Save to the data folder", disabled=True,
                                             button_type="primary")
        self.save_button.on_click(self._save)
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.preview = pn.Column(sizing_mode="stretch_width")  # a new plot per file read
        self._staged = None
        self._ds = None
        self._reading = Background()  # the staged file's names and contents
        self._saving = Background()  # never dropped by a read: a save always reports
        self._layout = pn.Column(
            pn.pane.Markdown(f"netCDF/HDF5, .npy/.npz, .zip or .pt files up to "
                             f"{UPLOAD_LIMIT_MB} MB."),
            self.dropper, self.mapping, self.crop, self.info, self.preview, self.save_name,
            self.overwrite, self.save_button, sizing_mode="stretch_width")

    def _dropped(self, event):
        files, new = dict(event.new or {}), set(event.new or {}) - set(event.old or {})
        if not new:  # a file removed from the list
            return
        if not all(n.lower().endswith(".pt") for n in new):  # read the file just dropped;
            files = {n: files[n] for n in new}  # .pt files read together, one sim each
        elif not all(n.lower().endswith(".pt") for n in files):
            files = {n: p for n, p in files.items() if n.lower().endswith(".pt")}
        self._ds = None
        self.save_button.disabled = True
        try:
            self._staged = self.state.services.stage_upload(files)
        except (ValueError, OSError) as err:
            self._fail(str(err))
            return
        self.save_name.value = safe_name(Path(self._staged.name).stem.removesuffix("-folder"),
                                         ".nc")
        self._inspect()

    def _inspect(self):
        staged = self._staged

        def names():
            try:
                return file_names(staged)
            except DatasetError:  # unreadable: reading it says why
                return dict(variables=[], dimensions=[])

        self._reading.run(names, partial(self._named, staged))

    def _named(self, staged, outcome) -> None:
        if staged != self._staged:  # another file came meanwhile
            return
        names = outcome.value or dict(variables=[], dimensions=[])
        options = [""] + names["variables"] + names["dimensions"]
        for widget in self.roles.values():
            widget.options, widget.value = options, ""
        self.mapping.visible = False
        self._read()

    def _mapping(self) -> dict:
        return {r: w.value for r, w in self.roles.items() if w.value} if self.mapping.visible \
            else {}

    def _read(self, *_):
        """Read the staged file (on a worker thread under ``panel serve``: a large file takes
        seconds), then show what came of it."""
        if self._staged is None:
            return
        staged, mapping, crop = self._staged, self._mapping(), self.crop.value

        def read():
            ds = read_flow(staged, mapping)
            return crop_square(ds) if crop else ds

        self._reading.run(read, partial(self._was_read, staged),
                          waiting=lambda: setattr(self.info, "object", f"Reading {staged.name} ..."))

    def _was_read(self, staged, outcome) -> None:
        if staged != self._staged:
            return
        if isinstance(outcome.error, DatasetError):
            self.mapping.visible = self.mapping.visible or "--map" in str(outcome.error)
            self._fail(str(outcome.error).replace(str(staged.parent) + "/", ""))
            return
        if outcome.error is not None:  # not a format problem: say what, never a traceback
            self._fail(f"{type(outcome.error).__name__}: {outcome.error}")
            return
        ds = self._ds = outcome.value
        self.info.object = _upload_summary(ds)
        self.preview.objects = [pn.pane.HoloViews(
            plots.flow_preview(ds["velocity"].values[0, ds.sizes["time"] // 2],
                               "speed, sim 0, middle frame"),
            sizing_mode="stretch_width", height=280)]
        self.save_button.disabled = False

    def _fail(self, text: str) -> None:
        self._ds = None
        self.save_button.disabled = True
        self.preview.objects = []
        self.info.object = f"**Not imported:** {text}"
        _notify("error", f"Not imported: {text}")

    def _save(self, _event=None):
        """Write the dataset (on a worker thread under ``panel serve``), then make it the
        chosen one."""
        if self._ds is None:
            return
        ds, name, overwrite = self._ds, self.save_name.value, self.overwrite.value
        self.save_button.disabled = True  # one save at a time
        self._saving.run(
            lambda: self.state.services.save_imported(ds, name, overwrite=overwrite),
            partial(self._saved, self._staged),
            waiting=lambda: setattr(self.info, "object", f"Saving `{name}` ..."))

    def _saved(self, staged, outcome) -> None:
        if outcome.error is not None:
            err = outcome.error
            text = str(err) if isinstance(err, (ValueError, DatasetError, OSError)) else \
                f"{type(err).__name__}: {err}"
            self.info.object = f"**Not saved:** {text}"
            self.save_button.disabled = self._ds is None
            _notify("error", f"Not saved: {text}")
            return
        name = outcome.value
        self.state.services.discard_upload(staged)
        if staged == self._staged:
            self._staged, self._ds = None, None
        self.state.refresh_datasets()
        self.state.dataset = name
        self.info.object = f"Saved `{name}`: it is now the chosen dataset."
        _notify("success", f"Dataset {name} saved")

    def __panel__(self):
        return self._layout


def _upload_summary(ds) -> str:
    info = summary(ds)
    dims = info["dims"]
    square = dims["y"] == dims["x"]
    dee = info["data_equivariance_error"]
    symmetric = (f"{dee['group']} {dee['mean']:.3f} (0 = exactly symmetric)" if dee else
                 "n/a: the file declares no orbits (sims that are images of each other)")
    groups = "translation, C_n, D_n (square grid)" if square else \
        "translation; C_n/D_n need a square grid (tick the crop)"
    return "\n".join([
        f"**{dims['sim']} sims x {dims['time']} steps on {dims['y']} x {dims['x']}** "
        f"(H x W); {ds.attrs.get('split_note', '')}.",
        f"- max |divergence| {info['max_divergence']:.2e}, max speed {info['max_speed']:.3g}",
        f"- data equivariance error: {symmetric}",
        f"- symmetries of the data a discovery can test: {groups}"])


class JobsView(pn.viewable.Viewer):
    """Active and recent jobs: progress, ETA, device, live curves, Cancel."""

    active = param.Boolean(default=True, doc="stream curves only while shown")

    def __init__(self, state: ExperimentState, **params):
        super().__init__(**params)
        self.state = state
        self._states: dict[str, str] = {}
        self.rows = pn.Column(sizing_mode="stretch_width")
        # a new figure once per epoch, rendered once for every session watching (a streamed
        # overlay whose legend grows breaks bokeh's views); empty until the tab is first shown.
        # Interactive at once, no picture first: it changes while watched
        self.curves = StaticFigure(sizing_mode="stretch_width", height=300)
        self._curves = Background()
        self._watched: tuple | None = None
        self._widgets: dict[str, dict] = {}
        self._order: list[str] | None = None
        self._layout = pn.Column("### Jobs", self.rows, "#### Live training curves", self.curves,
                                 sizing_mode="stretch_width")
        self.param.watch(self._shown, "active")

    def _shown(self, event):
        if event.new:
            self._watched = None  # resend the curves of the watched run
            self.poll()

    def _row(self, run_id: str) -> dict:
        """Widgets of one job row, created once and updated in place."""
        text = pn.pane.Markdown("", sizing_mode="stretch_width")
        progress = pn.indicators.Progress(value=0, max=100, width=200)
        cancel = pn.widgets.Button(name="Cancel", button_type="warning", width=90)
        cancel.on_click(lambda _e: self.state.cancel(run_id))
        return dict(text=text, progress=progress, cancel=cancel,
                    layout=pn.Row(text, progress, cancel, sizing_mode="stretch_width"))

    def _update(self, widgets: dict, row: dict) -> None:
        """From the shared listing's row (its status is read once per process, not here)."""
        eta = row.get("eta_seconds")
        text = (f"**{row['id']}** · {row['state']} · device {row.get('device') or '?'}"
                + (f" · ETA {eta:.0f} s" if isinstance(eta, (int, float)) and
                   row["state"] == "running" else "")
                + (f" · {row.get('error')}" if row.get("error") else ""))
        if widgets["text"].object != text:
            widgets["text"].object = text
        value = int(100 * (row.get("progress") or 0))
        if widgets["progress"].value != value:
            widgets["progress"].value = value
        widgets["cancel"].disabled = row["state"] not in ("queued", "running")

    def poll(self, rows: list[dict] | None = None) -> None:
        """Update from the user run store's rows (listed here unless the caller has them)."""
        rows = ([r for r in self.state.services.catalog() if r["store"] == "runs"]
                if rows is None else rows)
        recent = [r for r in rows if r["state"] in ("queued", "running")] + \
            [r for r in rows if r["state"] not in ("queued", "running")][-5:]
        for r in rows:  # notifications on transitions
            before = self._states.get(r["id"])
            if before in ("queued", "running") and r["state"] in ("done", "failed", "cancelled"):
                kind = {"done": "success", "failed": "error", "cancelled": "warning"}[r["state"]]
                _notify(kind, f"{r['id']}: {r['state']}" + (f" ({r['error']})" if r.get("error")
                                                            else ""))
            self._states[r["id"]] = r["state"]
        if not self.active:  # a hidden tab's rows are brought up to date when it is shown
            return          # (an ETA changes every second, in every session)
        for r in recent:
            if r["id"] not in self._widgets:
                self._widgets[r["id"]] = self._row(r["id"])
            self._update(self._widgets[r["id"]], r)
        order = [r["id"] for r in recent]
        if order != self._order:  # change the layout only when the set of rows changes
            self._order = order
            self.rows.objects = ([self._widgets[i]["layout"] for i in order]
                                 or [_message("no jobs yet")])
        watched = next((r["id"] for r in reversed(rows) if r["state"] == "running"),
                       rows[-1]["id"] if rows else None)
        if watched is None:  # no runs: empty axes (once, not again while they are drawn)
            if self._watched != ("no runs",):
                self._watched = ("no runs",)
                self._draw_curves(("training curves",), lambda: plots.training_curves([]))
            return
        try:
            run = self.state.services.store.get(watched)
            stamp = (watched, _file_version(run.path / "metrics.nc"))
        except (RunError, FileNotFoundError):  # deleted meanwhile: the next listing drops it
            self._watched = None
            return
        if stamp != self._watched:
            self._watched = stamp

            def curves():
                metrics = cached_metrics(run)
                return plots.training_curves(metrics if metrics is not None else [],
                                             label=watched)

            self._draw_curves(("training curves", *stamp), curves)

    def _draw_curves(self, key: tuple, make) -> None:
        """The curves figure, drawn once per process and epoch on a worker thread (a tenth of
        a second or more: not on the server's loop)."""
        def shown(outcome):
            if outcome.error is None:
                self.curves.item = outcome.value.item
            else:  # e.g. deleted meanwhile: the next listing drops it
                self._watched = None

        self._curves.run(lambda: _rendered(key, make, with_picture=False), shown)

    def __panel__(self):
        return self._layout


class RunsCatalog(pn.viewable.Viewer):
    """A table of runs; select runs to compare; delete with confirmation; downloads."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(**params)
        self.state = state
        self.frame = plots.runs_table_frame([])  # what the table shows, as data
        self.table = RunsTable.of(self.frame, numeric=plots.NUMERIC_TABLE_COLUMNS,
                                  sizing_mode="stretch_width")
        self.table.param.watch(self._selected, "selection")
        self.delete = pn.widgets.Button(name="Delete selected", button_type="danger")
        self.confirm = pn.widgets.Button(name="Confirm delete", button_type="danger", visible=False)
        self.delete.on_click(lambda _e: setattr(self.confirm, "visible", True))
        self.confirm.on_click(self._delete)
        self.downloads = pn.Row()
        self._opened = False
        self._refreshing = False
        self._layout = pn.Column("### Runs", self.table,
                                 pn.Row(self.delete, self.confirm, self.downloads),
                                 sizing_mode="stretch_width")

    def poll(self, rows: list[dict] | None = None) -> None:
        """Update from the catalog's rows (listed here unless the caller has them)."""
        rows = self.state.services.catalog() if rows is None else rows
        frame = plots.runs_table_frame(rows)
        ids, shown = list(frame.index), list(self.frame.index)
        self.frame = frame
        cells = table_rows(frame)
        if ids == shown:
            if cells != self.table.rows:  # a run's state or metrics: the selection stays
                self.table.rows = cells
        else:
            kept = [i for i in self.state.selected_runs if i in ids]
            self._refreshing = True  # the positions of the chosen runs move: not the user's
            try:
                self.table.rows = cells
                self.table.selection = [ids.index(i) for i in kept]
            finally:
                self._refreshing = False
            if kept != self.state.selected_runs:  # a selected run disappeared
                self._apply_selection(kept)
        if not self._opened and ids:  # open on a finished run; later the user decides
            done = [i for i, r in enumerate(rows) if r["state"] == "done"]
            # a relaxed one first: the app's first picture is its learned symmetry breaking
            done.sort(key=lambda i: rows[i]["model"] not in STRICT_OF)
            if done and not self.state.selected_runs:
                self.table.selection = done[:1]
            self._opened = bool(done)

    def _selected(self, event):
        if not self._refreshing:
            ids = list(self.frame.index)
            self._apply_selection([ids[i] for i in event.new if i < len(ids)])

    def _apply_selection(self, run_ids: list[str]) -> None:
        self.state.selected_runs = run_ids
        self.confirm.visible = False
        self.downloads.objects = []
        if self.state.selected_runs:
            run = self.state.services.run(self.state.selected_runs[0])
            files = [f for f in ("weights.safetensors", "metrics.nc", "spec.json")
                     if (run.path / f).exists()]
            self.downloads.objects = [pn.widgets.FileDownload(file=str(run.path / f),
                                                              filename=f"{run.id}-{f}",
                                                              button_type="light", label=f)
                                      for f in files]

    def _delete(self, _event=None):
        self.confirm.visible = False
        for run_id in list(self.state.selected_runs):
            if run_id in self.state.services.store:
                self.state.services.delete(run_id)
                _notify("info", f"deleted {run_id}")
            else:
                _notify("warning", f"{run_id} is a shipped run and cannot be deleted here")
        self.state.selected_runs = []
        self.poll()

    def __panel__(self):
        return self._layout


@lru_cache(maxsize=16)
def _evidence(path: str, version: tuple):
    from core.discovery import Discovery

    return Discovery(path).evidence()


def _evidence_version(record) -> tuple:
    """What tells one version of a finished discovery's evidence from the next."""
    return _file_version(record.path / "evidence.nc")


def evidence_of(record):
    """A finished discovery's evidence Dataset, cached per version of the evidence file."""
    with _lock:
        return _evidence(str(record.path), _evidence_version(record))


DISCOVERY_HELP = """
**How to read it.** Relaxed models were trained and read on the data and on a *null*: the same
data with the symmetry restored (or your control). Only the difference between the two is evidence.
For rotations the bars show, for every orbit member (where its inflow sits), how much the
relaxed weights improve the model over its own symmetric average: the member that gains most is
the one the data treats differently; the null's bars stay at zero. For translation the maps show
where the data and the null push the per-pixel relaxed weights of the same strict model (their
gradients, in standard errors per pixel) and the difference; walls and plumes push both alike
and cancel, and the dashed line is the strongest step left in the difference. The significance
and its method are stated with the verdict; a verdict is only as good as its null.
"""


def _verdict_text(record, evidence) -> str:
    a = evidence.attrs
    verdict = "**Broken**" if a["broken"] else "**No breaking found**"
    lines = [f"### Discovery `{record.id}`",
             f"{verdict}: significance **{a['significance']:.3g}** (threshold "
             f"{a.get('threshold', float('nan')):g}; {a['significance_method']})."]
    if a["kind"] == "translation":
        lines.append(f"Strongest boundary: **{a['boundary_axis']} = {a['boundary_position']:g}** "
                     f"cells from the lower-left (per seed: "
                     f"{', '.join(str(v) for v in evidence['seed_boundary'].values)})."
                     if a["boundary_axis"] else "No boundary stands out: the data and the null "
                                                "push the relaxed weights alike.")
    else:
        where = a.get("direction_label") or f"orbit member {a['named_member']}"
        lines.append(f"The data treats the **{where}** member differently (direction "
                     f"{a['direction_angle']:.0f} degrees; t along it {a['t_direction']:.2f}, "
                     f"axis test {a['t_axis']:.2f}); invariant subgroup "
                     f"{{{a['invariant_subgroup'].replace(',', ', ')}}}.")
    lines.append(f"Null: {a['null']}. {int(a['seeds'])} seed(s), {a['seconds']:.0f} s; data "
                 f"`{a['data'].split('/')[-1]}`.")
    return "\n\n".join(lines)


class DiscoveryView(pn.viewable.Viewer):
    """Discover (a background job with progress and Cancel) and the verdict with its evidence
    beside its null."""

    active = param.Boolean(default=True, doc="render only while shown")

    def __init__(self, state: ExperimentState | None = None, **params):
        super().__init__(**params)
        self.state = state or ExperimentState()
        self.records = pn.widgets.Select(name="Discovery", options={}, sizing_mode="stretch_width")
        self.records.param.watch(self._picked, "value")
        self.control = pn.widgets.Select(name="Null", sizing_mode="stretch_width")
        self.seeds = pn.widgets.IntSlider(name="Seeds", start=1, end=5, value=3)
        self.budget = pn.widgets.FloatSlider(name="Budget (x epochs)", start=0.25, end=4.0,
                                             step=0.25, value=1.0)
        self.start = pn.widgets.Button(name="Discover", button_type="primary")
        self.start.on_click(self._discover)
        self.cancel = pn.widgets.Button(name="Cancel", button_type="warning", disabled=True)
        self.cancel.on_click(self._cancel)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width",
                                               visible=False)
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.body = pn.Column(sizing_mode="stretch_width")
        self._rows: list[dict] = []
        self._states: dict[str, str] = {}
        self._shown: tuple | None = None  # (discovery, its state) shown or being prepared
        self._work = Background()
        self.param.watch(lambda _e: self.render(), "active")
        self.state.param.watch(lambda _e: self._offer_nulls(), "dataset")
        self._offer_nulls()
        self.poll()
        self._layout = pn.Column(
            "### Discovery", pn.Row(self.records, sizing_mode="stretch_width"),
            pn.Card(pn.pane.Markdown("Uses the dataset and symmetry group of the experiment "
                                     "panel (translation, C<n> or D<n>)."),
                    self.control, self.seeds, self.budget, pn.Row(self.start, self.cancel),
                    self.progress, self.status, title="Run a discovery", collapsed=False,
                    sizing_mode="stretch_width"),
            self.body, sizing_mode="stretch_width")

    def _offer_nulls(self):
        others = [d for d in self.state.services.datasets() if d != self.state.dataset]
        self.control.options = {"built from the data": ""} | {f"control: {d}": d for d in others}

    def _discover(self, _event=None):
        try:
            record = self.state.services.discover(
                self.state.dataset, self.state.group, control=self.control.value or None,
                seeds=self.seeds.value, budget=self.budget.value)
        except ValueError as err:  # DiscoveryError, DatasetError: bad input
            self.status.object = f"**Not started:** {err}"
            _notify("error", f"Discovery not started: {err}")
            return
        self.status.object = f"Started `{record.id}`."
        _notify("info", f"Discovery {record.id} started")
        self.poll()
        self.records.value = record.id

    def _cancel(self, _event=None):
        from core.discovery import request_cancel

        if self.records.value:
            request_cancel(self.state.services.discovery(self.records.value))
            self.status.object = "Cancel requested."

    def _picked(self, event):
        self.state.discovery = event.new
        self.render()

    def poll(self) -> None:
        """Records, progress of the shown one, notifications on transitions."""
        rows = self.state.services.discoveries()
        for r in rows:
            before = self._states.get(r["id"])
            if before in ("queued", "running") and r["state"] in ("done", "failed", "cancelled"):
                kind = {"done": "success", "failed": "error", "cancelled": "warning"}[r["state"]]
                _notify(kind, f"discovery {r['id']}: {r['state']}")
            self._states[r["id"]] = r["state"]
        options = {f"{r['id']} ({r['state']}, {r['store']})": r["id"] for r in rows}
        if options != self.records.options:
            self.records.options = options
        if self.records.value not in options.values() and rows:
            done = [r["id"] for r in rows if r["state"] == "done"]
            self.records.value = (self.state.discovery if self.state.discovery in options.values()
                                  else (done or [rows[-1]["id"]])[-1])
        current = next((r for r in rows if r["id"] == self.records.value), None)
        running = current is not None and current["state"] in ("queued", "running")
        self.progress.visible = running
        self.cancel.disabled = not running or current.get("store") != "runs"
        if current is not None:
            self.progress.value = int(100 * (current.get("progress") or 0))
            if self._shown is None or self._shown[1] != current["state"]:
                self.render(current["state"])

    def render(self, state: str | None = None) -> None:
        """``state``: the shown discovery's state as the caller saw it (a poll)."""
        if not self.active:  # hidden: let go of the plots; shown again, it renders afresh
            self._work.drop()
            if self.body.objects:
                self.body.objects = []
                self._shown = None
            return
        value = self.records.value
        # what is being shown, at once: a poll meanwhile does not ask for it again
        self._shown = (value, state)
        if not value:
            self._work.drop()
            self.body.objects = [_message("no discovery yet: press Discover")]
            return
        self._work.run(partial(self._prepared, value), partial(self._show, value),
                       waiting=lambda: setattr(self.body, "objects",
                                               [_message(f"reading {value} ...")]))

    def _prepared(self, value: str):
        """On a worker thread: the record, its status and, when done, its evidence and
        figures."""
        record = self.state.services.discovery(value)
        status = record.status()
        if status.get("state") != "done":
            return record, status, None, []
        evidence = evidence_of(record)
        version = _evidence_version(record)
        figures = ((plots.discovery_maps, plots.boundary_profile)
                   if evidence.attrs["kind"] == "translation" else
                   (plots.discovery_gains, plots.discovery_weights))
        return record, status, evidence, [_rendered((make.__name__, version),
                                                    partial(make, evidence))
                                          for make in figures]

    def _show(self, value: str, outcome) -> None:
        state = None
        try:
            if outcome.error is not None:
                raise outcome.error
            record, status, evidence, figures = outcome.value
            state = status.get("state")
            if evidence is not None:
                objects = [pn.pane.Markdown(_verdict_text(record, evidence),
                                            sizing_mode="stretch_width")]
                objects += [StaticFigure.of(figure) for figure in figures]
                objects.append(pn.pane.Markdown(DISCOVERY_HELP, sizing_mode="stretch_width"))
            else:
                objects = [_message(f"{value}: {state}"
                                    + (f": {status.get('error')}" if status.get("error")
                                       else f" ({status.get('message', '')})"))]
        except Exception as err:  # show, never break the page
            objects = [_message(f"cannot show this discovery: {type(err).__name__}: {err}")]
        self._shown = (value, state)
        with pn.io.hold():
            self.body.objects = objects

    def __panel__(self):
        return self._layout


class RunView(pn.viewable.Viewer):
    """Base for views of the first selected run (or a run given directly, for notebooks).

    A subclass gives :meth:`prepare` (what may take long: analyses, figures; run on a worker
    thread under ``panel serve``, and it returns data, never Panel objects) and :meth:`content`
    (the tab's Panel objects from it, built on the server's loop): :mod:`dashboard.background`.
    """

    run_id = param.String(default=None, allow_None=True)
    active = param.Boolean(default=True, doc="render only while shown (the app toggles this)")

    def __init__(self, state: ExperimentState | None = None, **params):
        super().__init__(**params)
        self.state = state or ExperimentState()
        self.body = pn.Column(sizing_mode="stretch_width")
        self._work = Background()
        self.state.param.watch(lambda _e: self.render(), "selected_runs")
        self.param.watch(lambda _e: self.render(), ["run_id", "active"])
        self.render()

    def current(self):
        """The run shown: None when none is selected; RunError when it is gone or unfinished."""
        run_id = self.run_id or (self.state.selected_runs[0] if self.state.selected_runs else None)
        if run_id is None:
            return None
        try:
            run = self.state.services.run(run_id)
            state = run.status().get("state")
        except (RunError, FileNotFoundError):
            raise RunError(f"run {run_id} is no longer in the run store (deleted?); select "
                           f"another one in the Runs table") from None
        if state != "done":
            raise RunError(f"run {run_id} is {state}: its analyses appear when it is done")
        return run

    def render(self) -> None:
        if not self.active:  # a hidden tab renders when it is shown, afresh:
            self._work.drop()
            if self.body.objects:  # let go of its plots (a session kept ~500 hidden models)
                self.body.objects = []
            return
        self._work.run(self._prepared, self._show, waiting=self._waiting)

    def _prepared(self):
        """On a worker thread: the run shown (None: none selected) and what :meth:`prepare`
        makes of it."""
        run = self.current()
        return run, (None if run is None else self.prepare(run))

    def _waiting(self) -> None:
        self.body.objects = [_message("preparing this tab's figures ...")]

    def _show(self, outcome) -> None:
        try:
            if outcome.error is not None:
                raise outcome.error
            run, prepared = outcome.value
            objects = self.content(run, prepared) if run is not None else [
                _message("select a finished run in the Runs table")]
        except RunError as err:  # gone, unfinished, or an analysis that cannot be made here
            objects = [_message(str(err))]
        except Exception as err:  # show, never break the page
            objects = [_message(f"cannot show this run: {type(err).__name__}: {err}")]
        with pn.io.hold():
            self.body.objects = objects

    def prepare(self, run):
        """The data the tab shows (thread-safe, no Panel objects)."""
        return None

    def content(self, run, prepared) -> list:
        raise NotImplementedError

    def __panel__(self):
        return self.body


class BreakingView(RunView):
    """Relaxed weights as heatmaps, irrep energies and breaking scores, with an explanation."""

    def prepare(self, run):
        analysis = evaluation(run, "breaking")
        boundary = None
        if analysis.attrs.get("kind") == "translation":
            boundary = cached_dataset_attrs(run.dataset_path()).get("boundary_x")
        key = _figure_key(analysis, boundary)
        return dict(
            kind=analysis.attrs.get("kind"),
            score=analysis.attrs.get("breaking_score", float("nan")),
            heatmaps=_rendered((*key, "heatmaps"),
                               lambda: plots.weights_heatmaps(analysis, boundary_x=boundary)),
            bars=_rendered((*key, "bars"), lambda: plots.breaking_bars(analysis)))

    def content(self, run, prepared):
        head = (f"### Symmetry breaking: {run.id}\nkind **{prepared['kind']}**, "
                f"overall breaking score **{prepared['score']:.3g}**")
        link = pn.widgets.Button(name="Is the breaking real? Open the Discovery tab",
                                 button_type="light")
        link.on_click(lambda _e: setattr(self.state, "focus", "Discovery"))
        return [pn.pane.Markdown(head, sizing_mode="stretch_width"), link,
                StaticFigure.of(prepared["heatmaps"]), StaticFigure.of(prepared["bars"]),
                pn.pane.Markdown(EXPLANATION + "\nWeights of one run can move by chance; the "
                                 "**Discovery** tab compares relaxed models against a symmetric "
                                 "null and gives a verdict with its significance.",
                                 sizing_mode="stretch_width")]


class RolloutView(RunView):
    """Per-step RMSE of the selected runs, and a flow player for the first one."""

    quantity = param.Selector(default="vorticity", objects=["vorticity", "speed"])
    # off at first: the arrows are a fifth of the tab's server work and more of the browser's
    arrows = param.Boolean(default=False, doc="velocity arrows over the flow images")

    def __init__(self, state=None, **params):
        self.player = pn.widgets.Player(name="rollout step", start=1, end=20, value=1,
                                        loop_policy="loop", interval=400, width=400)
        self.flow: StaticFigure | None = None  # the player's figure while shown
        self.player.param.watch(self._step, "value")
        super().__init__(state, **params)

    def prepare(self, run):
        runs, versions = {}, []
        for run_id in (self.state.selected_runs or [run.id]):
            try:
                shown = self.state.services.run(run_id)
                metrics = cached_metrics(shown)
            except (RunError, FileNotFoundError):  # deleted meanwhile
                continue
            if metrics is not None:
                runs[run_id] = metrics
                versions.append((run_id, _file_version(shown.path / "metrics.nc")))
        curves = _rendered(("rollout curves", *versions), lambda: plots.rollout_curves(runs))
        rollout = evaluation(run, "rollout")
        quantity, every = self.quantity, ARROWS if self.arrows else 0
        frames = _animations.get(_figure_key(rollout, quantity, every),
                                 lambda: _animate(rollout, quantity, every))
        return dict(curves=curves, frames=frames)

    def content(self, run, prepared):
        rendered = prepared["frames"]
        self.player.end = rendered.count
        self.player.value = min(max(self.player.value, 1), rendered.count)
        # the player's loop buttons reach below the row Panel gives it: room for them
        self.flow = StaticFigure.of(rendered, frame=self.player.value - 1,
                                    css_classes=["flow-player"], margin=(30, 5, 5, 5))
        choice = pn.widgets.RadioButtonGroup.from_param(self.param.quantity)
        arrows = pn.widgets.Checkbox.from_param(self.param.arrows, name="arrows", width=80)
        return [StaticFigure.of(prepared["curves"]),
                pn.pane.Markdown(f"### Flow player: {run.id} (truth, prediction, error)"),
                pn.Row(self.player, choice, arrows), self.flow]

    def _step(self, event):
        if self.flow is not None:
            self.flow.frame = min(max(event.new - 1, 0), self.flow.count - 1)

    @param.depends("quantity", "arrows", watch=True)
    def _requantity(self):
        self.render()


class EquivarianceView(RunView):
    """Model equivariance error per group element, and model against data equivariance."""

    def prepare(self, run):
        metrics = cached_metrics(run)
        per_element = None
        if metrics is not None and "equivariance_error_element" in metrics:
            err = xr.Dataset({"relative": metrics["equivariance_error_element"]})
            per_element = _rendered(("equivariance", _file_version(run.path / "metrics.nc")),
                                    lambda: plots.equivariance_bars(err))
        points = []
        for row in self.state.services.catalog():
            if row["state"] != "done" or row.get("equivariance_error") is None:
                continue
            try:
                dataset = self.state.services.run(row["id"]).dataset_path()
            except RunError:  # deleted since the listing
                continue
            data_error = cached_dataset_attrs(dataset).get("data_equivariance_error")
            if data_error is not None:
                points.append(dict(data_error=data_error, model_error=row["equivariance_error"],
                                   model=row["model"]))
        return dict(per_element=per_element,
                    against_data=_rendered(("model vs data", repr(points)),
                                           lambda: plots.equivariance_vs_data(points)))

    def content(self, run, prepared):
        parts = [pn.pane.Markdown(f"### Equivariance: {run.id}")]
        if prepared["per_element"] is not None:
            parts.append(StaticFigure.of(prepared["per_element"]))
        return parts + [
            pn.pane.Markdown("### Model vs data equivariance error (the paper's Figure 4)"),
            StaticFigure.of(prepared["against_data"])]


class SweepView(RunView):
    """Error against alpha across runs of one dataset and model, with strict/free references."""

    def current(self):  # needs no finished run of its own: it looks at all runs
        return self.state

    def prepare(self, _state):
        rows = [r for r in self.state.services.catalog() if r["state"] == "done"]
        # the dataset of the first selected run, else the experiment panel's
        chosen = next((r for r in rows if self.state.selected_runs
                       and r["id"] == self.state.selected_runs[0]), None)
        dataset = chosen["dataset"] if chosen else self.state.dataset
        model, group = self.state.model, self.state.group
        same = [r for r in rows if r.get("dataset") == dataset and r["model"] == model
                and r.get("group") == group]
        refs = {}
        for label, name in (("strict", STRICT_OF.get(model, model)), ("free (conv)", "conv")):
            match = [r["future_rmse"] for r in rows if r["model"] == name
                     and r.get("dataset") == dataset and r.get("future_rmse") is not None]
            if match:
                refs[f"{label} ({name})" if label == "strict" else label] = float(np.mean(match))
        return dict(title=f"### Relaxation sweep: {model} {group} on `{dataset}`",
                    figure=_rendered(("sweep", repr((same, refs))),
                                     lambda: plots.sweep_plot(same, references=refs)))

    def content(self, _state, prepared):
        button = pn.widgets.Button(name="Launch alpha sweep (0, 1e-4, 1e-2, 1)",
                                   button_type="primary")
        button.on_click(self._launch)
        return [pn.pane.Markdown(prepared["title"]), StaticFigure.of(prepared["figure"]), button]

    def _launch(self, _event=None):
        original = self.state.alpha
        try:
            for alpha in ("0", "1e-4", "1e-2", "1"):
                self.state.alpha = alpha
                self.state.submit()
            _notify("info", "sweep submitted: 4 jobs")
        except (SpecError, ValueError) as err:
            _notify("error", f"sweep not submitted: {err}")
        finally:
            self.state.alpha = original


__all__ = ["ExperimentPanel", "JobsView", "RunsCatalog", "BreakingView", "RolloutView",
           "EquivarianceView", "SweepView", "DiscoveryView"]

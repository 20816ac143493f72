"""The dashboard app: ``panel serve dashboard/app.py`` (or ``make dashboard``).

This module only assembles the views; the template is built when the app is served, so importing
it has no side effects. ``dashboard.ExplorerApp()`` shows the same app inline in a notebook.
"""
from __future__ import annotations

import re
from functools import partial

import holoviews as hv
import panel as pn

from dashboard import plots
from dashboard.background import served_document, warn_if_pooled
from dashboard.delivery import deliver_queued_changes
from dashboard.gate import DRAWS, page_key
from dashboard.state import ExperimentState, Services
from dashboard.ticker import Ticker
from dashboard.views import (BreakingView, DiscoveryView, EquivarianceView, ExperimentPanel,
                             JobsView, RolloutView, RunsCatalog, SweepView)

TITLE = "Relaxed-Equivariance Explorer"
TAB_NAMES = ("Runs", "Jobs", "Symmetry breaking", "Discovery", "Rollout", "Equivariance", "Sweep")
REFRESH_MS = 1000

# FilePond, the file dropper's library, starts a 60-frames-a-second loop as soon as it loads: on
# every page, for the page's whole life, although most sessions never open "Bring your own data"
# (21 ms of CPU a second per idle page here; twenty pages kept 0.4 of a core busy doing nothing).
# It joins a frame painter it finds already on the page instead of starting its own, so the page
# gets one whose frames run only while a dropper exists. Should FilePond change this, the painter
# is simply unused and FilePond runs its own loop as before.
IDLE_PAINTER = """<script type="text/javascript">
(() => {
  const painter = {readers: [], writers: []};
  let ponds = 0, frame = null;
  const paint = (time) => {
    painter.readers.forEach((read) => read());
    painter.writers.forEach((write) => write(time));
    frame = ponds > 0 ? requestAnimationFrame(paint) : null;
  };
  window.__framePainter = painter;
  document.addEventListener("FilePond:loaded", () => {
    const library = window.FilePond, create = library.create, destroy = library.destroy;
    library.create = (...args) => {
      ponds += 1;
      if (frame === null) frame = requestAnimationFrame(paint);
      return create(...args);
    };
    library.destroy = (...args) => {
      const found = destroy(...args);
      if (found) ponds = Math.max(0, ponds - 1);
      return found;
    };
  });
})();
</script>"""


# Bokeh's bundles that no served page of the dashboard uses, left out of its page: MathJax (1.8 MB;
# Panel adds it to any page with a Markdown pane, for TeX, and no text here is TeX; without it a
# name with TeX's $$ in it shows as written, with no error: checked) and WebGL (every figure is
# drawn on a canvas, plots.use_bokeh): 2.0 of the page's 5.2 MB of scripts. (Bokeh's data
# tables are unused too, but Panel's own bundle needs them to load.) At N = 20 the MathJax
# bundle was the last script to arrive, 19 s after the pages asked for it (BENCHMARKS.md).
UNUSED_BUNDLES = ("bokeh-mathjax", "bokeh-gl")
_UNUSED_SCRIPT = re.compile(r'<script[^>]*src="[^"]*/(?:%s)\.min\.js[^"]*"[^>]*>\s*</script>\s*'
                            % "|".join(re.escape(name) for name in UNUSED_BUNDLES))


def without_unused_bundles(scripts: str) -> str:
    """The page's script tags (Panel's ``bokeh_js``) less :data:`UNUSED_BUNDLES`."""
    return _UNUSED_SCRIPT.sub("", scripts)


def load_extensions() -> None:
    """The Panel extensions the app's page needs: the file dropper (Bring your own data) and
    notifications. Every page has them, as Bokeh cannot add a model's scripts to a page later."""
    pn.extension("filedropper", notifications=True)


def end_turn_when_drawn(doc) -> partial:
    """A served page's turn to draw its first screen (dashboard/gate.py) ends once the page has
    drawn it (Panel's ``onload``). Returns what ends it sooner, for a session closed first;
    bound now, as under ``panel serve`` the app module's globals are gone when a session
    closes."""
    drawn = partial(DRAWS.release, page_key(doc.session_context.id))
    pn.state.onload(drawn)
    return drawn


def page_template(sidebar, main) -> pn.template.BootstrapTemplate:
    """The served page around ``sidebar`` and ``main``: the app's, and the load test's control
    page's (tests/control.py), which holds a line of text in the same page.

    Bootstrap: all resources are served locally (the Fast design fetches web fonts). No busy
    spinner: Panel's follows one flag for the whole process, so every callback of any session
    was sent to every open page and set all their spinners going (at N = 20 the pages' tour work
    79 -> 64 core-s, latency p95 2.7 -> 0.3-1.0 s; BENCHMARKS.md)."""
    template = pn.template.BootstrapTemplate(title=TITLE, sidebar=[sidebar], main=[main],
                                             sidebar_width=340, busy_indicator=None)
    # the painter must be on the page before the libraries load: the head's first block
    environment = template.template.environment
    environment.filters["without_unused_bundles"] = without_unused_bundles
    template.template = environment.from_string(
        '{% extends "bootstrap/bootstrap.html" %}{% block preamble %}' + IDLE_PAINTER
        + "{{ super() }}{% endblock %}{% block js_resources %}"
        "{{ bokeh_js | without_unused_bundles if bokeh_js }}{% endblock %}")
    return template


class ExplorerApp(pn.viewable.Viewer):
    """The whole dashboard: experiment panel, jobs, runs and the analysis tabs."""

    def __init__(self, services: Services | None = None, **params):
        super().__init__(**params)
        load_extensions()
        # once per server process (dashboard/warm.py does it before any session; 16 ms each);
        # a notebook loads it with each app, for the page's scripts
        if served_document() is None or hv.renderer("bokeh").webgl:
            plots.use_bokeh()
        self.state = ExperimentState(services)
        self.experiment = ExperimentPanel(self.state)
        # hidden views build nothing until their tab is first shown (cheap sessions)
        self.jobs = JobsView(self.state, active=False)
        self.catalog = RunsCatalog(self.state)
        self.breaking = BreakingView(self.state, active=False)
        self.rollout = RolloutView(self.state, active=False)
        self.equivariance = EquivarianceView(self.state, active=False)
        self.sweep = SweepView(self.state, active=False)
        # made when its tab is first shown: its widgets are a tenth of a session's start, and a
        # discovery can only be started from it
        self.discovery: DiscoveryView | None = None
        self._discovery_slot = pn.Column(sizing_mode="stretch_width")
        tabs = list(zip(TAB_NAMES, [self.catalog, self.jobs, self.breaking,
                                    self._discovery_slot, self.rollout, self.equivariance,
                                    self.sweep]))
        self._tab_names = list(TAB_NAMES)
        # not Panel's dynamic tabs: the views themselves render only while shown and let go of
        # their plots when hidden, and the Runs table is then built once, not again on every
        # return to it (dynamic tabs rebuilt it: 0.6 s of the page's CPU each time)
        self.tabs = pn.Tabs(*tabs, sizing_mode="stretch_width")
        self._views = [None, self.jobs, self.breaking, None, self.rollout,
                       self.equivariance, self.sweep]
        self.tabs.param.watch(self._show_tab, "active")
        self.state.param.watch(self._focus, "focus")
        self._seen = None  # the version of the shared listing shown last
        self._stop = None  # ends the refreshing started by start()
        self._first_screen_drawn = None  # ends the page's turn to draw (a served session)
        self._show_tab()
        self.refresh()

    def _show_tab(self, *_):
        """Only the shown view renders or streams plots (hidden plots cannot update)."""
        discovery = self._tab_names.index("Discovery")
        if self.tabs.active == discovery and self.discovery is None:
            self.discovery = self._views[discovery] = DiscoveryView(self.state)
            self._discovery_slot.objects = [self.discovery]
        for i, view in enumerate(self._views):
            if view is not None:
                view.active = i == self.tabs.active

    def _focus(self, event):
        """A view asked for another tab (e.g. Symmetry breaking -> Discovery)."""
        if event.new in self._tab_names:
            self.tabs.active = self._tab_names.index(event.new)
        self.state.focus = ""

    def refresh(self) -> None:
        """One batched update of everything that watches the run store, only when the shared
        listing (taken at most once a second per process) has changed."""
        snapshot = self.state.services.snapshot()
        if snapshot.version == self._seen:
            return
        self._seen = snapshot.version
        rows = snapshot.runs
        with pn.io.hold():
            self.catalog.poll(rows)
            self.jobs.poll([r for r in rows if r["store"] == "runs"])
            self.experiment.poll()
            if self.discovery is not None:
                self.discovery.poll()

    def start(self) -> None:
        """Keep the views current: a served session joins the process's one :class:`Ticker`;
        elsewhere (a notebook) the app polls with its own periodic callback."""
        if self._stop is not None:
            return
        doc = served_document()
        if doc is not None:
            warn_if_pooled()
            deliver_queued_changes()  # once per process: no change is left queued for a page
            ticker = Ticker.get(self.state.services, REFRESH_MS)
            ticker.add(doc, self.refresh)
            # bound now: under panel serve this module's globals are gone when a session closes
            self._stop = partial(ticker.remove, doc)
            pn.state.on_session_destroyed(self._closed)
            self._first_screen_drawn = end_turn_when_drawn(doc)  # or ended in _closed
        else:
            self._stop = pn.state.add_periodic_callback(self.refresh, period=REFRESH_MS).stop

    def _closed(self, _context) -> None:
        """Stop refreshing. (No forced garbage collection per closed session: measured at
        N = 20, it gave the other sessions' pages 'reference isn't known' errors; the ticker
        releases memory once the last session has gone, :func:`dashboard.ticker.release_memory`.)"""
        self._stop()
        if self._first_screen_drawn is not None:  # closed before it was drawn
            self._first_screen_drawn()

    def template(self) -> pn.template.BootstrapTemplate:
        self.start()
        return page_template(sidebar=self.experiment, main=self.tabs)

    def __panel__(self):
        self.start()
        return pn.Row(pn.Column(self.experiment, width=340), self.tabs, sizing_mode="stretch_width")


# what pn.state.served tests, without its walk through the call stack (some ms a session)
if __name__.startswith("bokeh_app_"):
    # the page's models are walked once, not once for each root the template adds (eight
    # walks; ~25 ms a session)
    with pn.state.curdoc.models.freeze():
        ExplorerApp().template().servable(title=TITLE)

"""``panel serve --setup dashboard/warm.py``: once per server process, before any session.

Imports the plotting stack, creates the process's services and its first shared listing, and
renders every finished run's tabs once outside any session (the flow player: for the run
sessions open on), so the shared figures, their pictures (dashboard/raster.py: about 11 s of
the warm-up for the shipped runs) and the evaluation artifacts (core/evaluation.py) are ready
when the class arrives. What is missing is computed here, once, not in a student's
session.

Then everything the process holds so far (modules, the shared caches: some 800 000 objects) is
moved out of the garbage collector's sight with :func:`gc.freeze`: it lives as long as the
process, and each full collection under a class's load would otherwise walk all of it again,
holding every session's callbacks for about 0.5 s each time (BENCHMARKS.md, 2026-12-01).

The page's scripts and stylesheets are sent gzip-compressed, each compressed once per process
(:mod:`dashboard.compression`; the big bundles here, before the first session).

Last, the process's draw queue is turned on (:mod:`dashboard.gate`): while the machine is busy,
``REE_DRAW_SLOTS`` pages (default: the cores) load their first screen at a time.
"""
import gc
import logging

from bokeh.settings import settings

from dashboard import plots
from dashboard.compression import prime, serve_compressed
from dashboard.gate import DRAWS, hold_first_screens, hold_from_env, slots_from_env
from dashboard.state import ExperimentState, Services
from dashboard.views import (BreakingView, DiscoveryView, EquivarianceView, RolloutView,
                             RunsCatalog, SweepView)

log = logging.getLogger("dashboard.warm")


def warm() -> None:
    plots.use_bokeh()
    # Bokeh reads this setting from the environment for every model it creates (an id each):
    # read once here, as the environment of a running server does not change
    settings.simple_ids.set_value(settings.simple_ids())
    services = Services.get()
    state = ExperimentState(services)
    RunsCatalog(state).poll()  # selects the run a session opens on
    shown = [SweepView(state), DiscoveryView(state), RolloutView(state)]
    # every run's figures; the flow player only for the run sessions open on: its frames take
    # ~2 s a run, and another run's are rendered when a session first plays them
    for row in services.catalog():
        if row["state"] == "done":
            shown += [view(state, run_id=row["id"]) for view in (BreakingView, EquivarianceView)]
    for view in shown:  # each tab's models once: warms the code paths of a session's first tab
        view.active = True
        view.__panel__().get_root()
    log.info("warmed %d runs", len(services.catalog()))


warm()
serve_compressed()
log.info("page bundles compressed to %.2f MB", prime() / 2 ** 20)
# first screens load in turn while the machine is busy (dashboard/gate.py)
DRAWS.configure(slots_from_env(), hold_s=hold_from_env())
if DRAWS.enabled:
    hold_first_screens(DRAWS)
print("dashboard: first screens load "
      + (f"{DRAWS.slots} at a time while the machine is busy" if DRAWS.enabled else "all at once"),
      flush=True)
gc.collect()  # what the warm-up left as garbage goes now; the rest is kept for good
gc.freeze()

"""``panel serve --setup dashboard/warm.py``: once per server process, before any session.

Imports the plotting stack, creates the process's services and its first shared listing, and
renders every finished run's tabs once outside any session, so the shared figures and the
evaluation artifacts (core/evaluation.py) are ready when the class arrives. What is missing is
computed here, once, not in a student's session.

Then everything the process holds so far (modules, the shared caches: some 800 000 objects) is
moved out of the garbage collector's sight with :func:`gc.freeze`: it lives as long as the
process, and each full collection under a class's load would otherwise walk all of it again,
holding every session's callbacks for about 0.5 s each time (BENCHMARKS.md, 2026-12-01).
"""
import gc
import logging

import panel as pn
from bokeh.settings import settings

from dashboard import plots
from dashboard.state import ExperimentState, Services
from dashboard.views import BreakingView, EquivarianceView, RolloutView

log = logging.getLogger("dashboard.warm")


def warm() -> None:
    plots.use_bokeh()
    # Bokeh reads this setting from the environment for every model it creates (an id each):
    # read once here, as the environment of a running server does not change
    settings.simple_ids.set_value(settings.simple_ids())
    services = Services.get()
    state = ExperimentState(services)
    for row in services.catalog():
        if row["state"] != "done":
            continue
        for view in (BreakingView, RolloutView, EquivarianceView):
            shown = view(state, run_id=row["id"])
            for obj in shown.body.objects:  # build the Bokeh models once (warms the code paths)
                if isinstance(obj, pn.pane.HoloViews):
                    obj.get_root()
    log.info("warmed %d runs", len(services.catalog()))


warm()
gc.collect()  # what the warm-up left as garbage goes now; the rest is kept for good
gc.freeze()

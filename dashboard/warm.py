"""``panel serve --setup dashboard/warm.py``: once per server process, before any session.

Imports the plotting stack, creates the process's services and its first shared listing, and
renders every finished run's tabs once outside any session, so the shared figures and the
evaluation artifacts (core/evaluation.py) are ready when the class arrives. What is missing is
computed here, once, not in a student's session.
"""
import logging

import holoviews as hv
import panel as pn

from dashboard.state import ExperimentState, Services
from dashboard.views import BreakingView, EquivarianceView, RolloutView

log = logging.getLogger("dashboard.warm")


def warm() -> None:
    hv.extension("bokeh", logo=False)
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

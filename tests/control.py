"""The load test's control page (``/control``): the app's page with a line of text in it.

Served beside the app by ``python -m tests.loadtest`` (its control phase): the same template,
extensions, scripts and sidebar width, the same tab names, and the same turn to draw its first
screen (dashboard/gate.py); each tab and the sidebar hold one line of text, the Runs tab the
text the load test waits for. Twenty of these opening at once measure what the machine costs a
class before the app draws anything of its own, in the same run as the app.
"""
import panel as pn

from dashboard.app import TAB_NAMES, TITLE, end_turn_when_drawn, load_extensions, page_template
from tests.loadtest import READY

if __name__.startswith("bokeh_app_"):
    load_extensions()
    tabs = pn.Tabs(*((name, pn.pane.Markdown(READY["Runs"][0] if name == "Runs" else name))
                     for name in TAB_NAMES), sizing_mode="stretch_width")
    sidebar = pn.Column("### Experiment", "A line of text.", sizing_mode="stretch_width")
    drawn = end_turn_when_drawn(pn.state.curdoc)
    pn.state.on_session_destroyed(lambda _context: drawn())
    page_template(sidebar=sidebar, main=tabs).servable(title=TITLE)

"""Background work in a served session: long work on a worker thread, every change to the page
on the server's loop thread, only the latest work shown (dashboard/background.py).

A real Panel server runs in this process with the dashboard's settings (no callback pool), and
a real browser opens it; every change to the session's document is recorded with the thread
that made it.
"""
import threading
import time

import panel as pn
import pytest
from bokeh.document.callbacks import DocumentCallbackManager

from dashboard.background import SLOW_S, Background
from tests.ui.conftest import served_in_process

SLOW_WORK_S = 5 * SLOW_S  # its "preparing" message stays on the page for a second


class _Tab(pn.viewable.Viewer):
    """Content prepared in the background: "slow" takes SLOW_WORK_S, "quick" no time."""

    def __init__(self, record, **params):
        super().__init__(**params)
        self.record, self.asked = record, 0
        self.body = pn.Column(pn.pane.Markdown("nothing yet"))
        self.work = Background()
        self.buttons = [pn.widgets.Button(name=name) for name in ("slow", "quick")]
        for button in self.buttons:
            button.on_click(lambda event: self.render(event.obj.name))

    def render(self, kind: str) -> None:
        self.asked += 1
        label = f"{kind} {self.asked}"

        def prepare():
            self.record["work threads"].add(threading.get_ident())
            time.sleep(SLOW_WORK_S if kind == "slow" else 0)
            return f"content {label}"

        def show(outcome):
            self.record["shown"].append(outcome.value)
            self.body.objects = [pn.pane.Markdown(outcome.value)]

        self.work.run(prepare, show, waiting=lambda: setattr(
            self.body, "objects", [pn.pane.Markdown(f"preparing {label}")]))

    def __panel__(self):
        return pn.Column(pn.Row(*self.buttons), self.body)


@pytest.fixture
def served(browser):
    """(page, record): the app served in this process and opened in a browser page."""
    record = {"changes": [], "work threads": set(), "shown": [], "loop thread": None}
    documents = set()
    original = DocumentCallbackManager.trigger_on_change

    def recording(manager, event):
        doc = manager._document()
        if doc is not None and id(doc) in documents:
            record["changes"].append((threading.get_ident(), type(event).__name__))
        return original(manager, event)

    def app():
        documents.add(id(pn.state.curdoc))
        record["loop thread"] = threading.get_ident()
        return _Tab(record)

    DocumentCallbackManager.trigger_on_change = recording
    try:
        with served_in_process(app) as url:
            context = browser.new_context()
            try:
                page = context.new_page()
                page.goto(url, timeout=60000)
                page.get_by_text("nothing yet").wait_for(timeout=60000)
                yield page, record
            finally:
                context.close()
    finally:
        DocumentCallbackManager.trigger_on_change = original


def test_work_runs_off_the_loop_and_the_page_changes_only_on_it(served):
    page, record = served
    page.get_by_role("button", name="slow").click()
    page.get_by_text("preparing slow 1").wait_for(timeout=20000)  # while it works
    page.get_by_text("content slow 1").wait_for(timeout=20000)
    page.get_by_role("button", name="quick").click()
    page.get_by_text("content quick 2").wait_for(timeout=20000)
    assert record["shown"] == ["content slow 1", "content quick 2"]
    assert record["loop thread"] not in record["work threads"], "the work ran on the loop"
    threads = {thread for thread, _ in record["changes"]}
    assert len(record["changes"]) > 4 and threads == {record["loop thread"]}, \
        "the session's document was changed off the server's loop thread"


def test_only_the_latest_work_is_shown(served):
    page, record = served
    page.get_by_role("button", name="slow").click()
    page.get_by_text("preparing slow 1").wait_for(timeout=20000)
    page.get_by_role("button", name="quick").click()  # asked again while the slow one works
    page.get_by_text("content quick 2").wait_for(timeout=20000)
    time.sleep(SLOW_WORK_S + SLOW_S)  # the slow work has ended by now
    assert record["shown"] == ["content quick 2"], "superseded work was shown"
    assert page.get_by_text("content slow 1").count() == 0

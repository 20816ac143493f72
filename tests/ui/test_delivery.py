"""Every change queued for a page is sent (dashboard/delivery.py).

The interleaving that loses a change in Panel 1.9 is made to happen: a change comes while a
write to the page is under way, so Panel queues it and starts a task to write it; the write
under way then ends (clearing the page's busy mark, as Panel's task for it does) before the
new task has run. A real Panel server in this process, a real browser page.
"""
import panel as pn
import pytest
from panel.io import document as writes
from panel.io.state import set_curdoc

from dashboard.delivery import deliver_queued_changes
from tests.ui.conftest import served_in_process


def _app():
    pane = pn.pane.Markdown("waiting")
    button = pn.widgets.Button(name="change")
    doc = pn.state.curdoc

    def change():
        with set_curdoc(doc):
            writes._WRITE_BLOCK[doc] = True  # a write to this page is under way
            pane.object = "delivered"  # so Panel queues this change and starts a task for it
            assert writes._WRITE_MSGS.get(doc), "Panel wrote the change at once: no queue"
            # the write under way ends first and clears the mark, as Panel's task for it does
            del writes._WRITE_BLOCK[doc]

    button.on_click(lambda _e: pn.state.execute(change, schedule=True))
    return pn.Column(button, pane)


@pytest.fixture
def opened(browser):
    def open_page(url):
        context = browser.new_context()
        page = context.new_page()
        page.goto(url, timeout=60000)
        page.get_by_text("waiting").wait_for(timeout=60000)
        return context, page
    return open_page


def test_a_change_queued_while_a_write_ends_reaches_the_page(opened):
    assert deliver_queued_changes()
    assert deliver_queued_changes(), "installing twice is harmless"
    with served_in_process(_app) as url:
        context, page = opened(url)
        try:
            page.get_by_role("button", name="change").click()
            page.get_by_text("delivered").wait_for(timeout=10000)
        finally:
            context.close()

"""Background work outside a served session, and the server's settings it relies on
(dashboard/background.py). Served sessions: tests/ui/test_background.py."""
from dashboard.background import Background, Outcome
from dashboard.serve import panel_command


def test_outside_a_served_session_the_work_runs_at_once_and_errors_are_handed_over():
    shown = []
    work = Background()
    work.run(lambda: 6 * 7, shown.append)
    assert shown == [Outcome(42)]
    work.run(lambda: 1 / 0, shown.append)
    assert shown[-1].value is None and isinstance(shown[-1].error, ZeroDivisionError)


def test_the_dashboards_server_runs_no_callback_pool():
    """With ``--num-threads`` Panel changes a page from pool threads: now and then a change is
    lost and the page never updates (dashboard/background.py)."""
    assert not any(arg.startswith("--num-threads") for arg in panel_command())

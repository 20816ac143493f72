"""Why the dashboard's server changes pages on its loop thread only (dashboard/background.py):
``python -m tests.heldevents`` shows Bokeh losing changes announced from a second thread.

One thread holds and releases a Bokeh document again and again, as the server's loop does
around every update Panel applies; another adds callbacks to it, as a callback pool's threads
do for each update. A released hold swaps the document's list of held changes for a new one; a
change added to the old list after it was copied is lost. Printed: how many of the callbacks
never reached the session.
"""
from __future__ import annotations

import argparse
import sys
import threading

from bokeh.document import Document


def lost_callbacks(n: int = 20_000, switch_s: float | None = None) -> tuple[int, int]:
    """(added, lost): callbacks added from a second thread while the first holds and
    releases the document; ``switch_s`` sets Python's thread switch interval meanwhile."""
    doc = Document()
    seen = []

    class Session:  # what a server session hears of the document
        def _session_callback_added(self, event):
            seen.append(event)

    doc.callbacks.on_change_dispatch_to(Session())
    stop = threading.Event()

    def holder():
        while not stop.is_set():
            doc.hold("combine")
            doc.unhold()

    before = sys.getswitchinterval()
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    thread = threading.Thread(target=holder)
    thread.start()
    try:
        for _ in range(n):
            doc.add_next_tick_callback(lambda: None)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(before)
    doc.unhold()
    return n, n - len(seen) - len(doc.callbacks._held_events)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.heldevents", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callbacks", type=int, default=20_000)
    args = p.parse_args(argv)
    for switch in (None, 1e-4, 1e-5):
        added, lost = lost_callbacks(args.callbacks, switch)
        label = "default" if switch is None else f"{switch:g} s"
        print(f"thread switch interval {label}: {lost} of {added} callbacks lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every change queued for a page is sent: a fix for a lost write in Panel 1.9's server.

While a page's websocket is busy, Panel does not write a session's new changes at once: it
queues them for the document (``panel.io.document._WRITE_MSGS``), marks the document busy
(``_WRITE_BLOCK``) and starts a task, ``_dispatch_msgs``, that writes the queue once the socket
is free. The task that was writing when they came clears the mark when it ends. If it ends
before the new task has first run, the new task finds no mark and returns at once: the queued
changes stay queued until the session changes something else. For a page that has just asked
for a tab that is never. The tab stays empty, and nothing, in the page or in the server's log,
says why. At twenty sessions on two cores, about one tab view in a few hundred did so
(BENCHMARKS.md, "2026-12-02: the empty tab").

:func:`deliver_queued_changes` (once per server process; :mod:`dashboard.app` calls it for a
served session) wraps that task: when it ends and changes are still queued with no busy mark,
it marks the document and starts the task again. The fix reads Panel's private names; if a
later Panel lacks them it does nothing and says so in the log.
"""
from __future__ import annotations

import logging

log = logging.getLogger("dashboard.delivery")
_NAMES = ("_WRITE_MSGS", "_WRITE_BLOCK", "_dispatch_msgs", "_dispatch_write_task")


def _stranded(writes, doc) -> bool:
    """Changes queued for ``doc`` and nobody on the way to write them."""
    return doc not in writes._WRITE_BLOCK and any(writes._WRITE_MSGS.get(doc, {}).values())


def deliver_queued_changes() -> bool:
    """Install the fix in this process (once; later calls do nothing). False where Panel has
    not the parts it mends."""
    from panel.io import document as writes

    if getattr(writes._dispatch_msgs, "delivers_queued_changes", False):
        return True
    if not all(hasattr(writes, name) for name in _NAMES):
        log.warning("Panel's write queue has changed (%s): queued changes are not checked",
                    ", ".join(n for n in _NAMES if not hasattr(writes, n)))
        return False
    panels_own = writes._dispatch_msgs

    async def dispatch(doc):
        await panels_own(doc)
        if _stranded(writes, doc):  # they came while the write under way ended
            writes._WRITE_BLOCK[doc] = True
            writes._dispatch_write_task(doc, dispatch, doc)

    dispatch.delivers_queued_changes = True
    # Panel looks the task up by this name each time it starts one (and when it restarts itself)
    writes._dispatch_msgs = dispatch
    return True


__all__ = ["deliver_queued_changes"]

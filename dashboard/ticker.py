"""One timer per server process that refreshes every open session when something changed.

Each served session used to poll with its own ``pn.state.add_periodic_callback``: about 10 ms of
server CPU per session per second with nothing to show (measured with six idle sessions: 0.2 s
of CPU every second at twenty), and every tick toggled the page's busy indicator. Here one
Tornado timer per process takes the shared listing (:meth:`dashboard.state.Services.snapshot`,
in a worker thread: it reads the run folders) and, only when its version moved, schedules each
session's refresh on that session's own document, as Panel runs a session's own periodic
callback.

Notebooks have no server loop of ours: :class:`dashboard.app.ExplorerApp` keeps a per-session
periodic callback there.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import threading
from typing import Callable

import panel as pn
from panel.io.state import set_curdoc

log = logging.getLogger("dashboard.ticker")
# once the last session has closed, wait this long (its objects are freed when Bokeh has dropped
# it) and then hand the freed memory back: see :func:`release_memory`
RELEASE_DELAY_S = 5.0


def release_memory() -> bool:
    """Collect garbage, then return the allocator's free pages to the system (glibc's
    ``malloc_trim``). False where there is no glibc.

    Python's own small-object allocator keeps a 1 MiB arena as long as any object lives in it, so
    under the default allocator this gives back little after a class (measured: 599 -> 592 MB);
    a server started with ``PYTHONMALLOC=malloc`` (``python -m dashboard.serve
    --release-memory``) keeps small objects in glibc's heap, where it gives back most of what
    the sessions used (BENCHMARKS.md). Called with no session open: a full collection then holds
    nobody up."""
    gc.collect()
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


class Ticker:
    """``Ticker.get(services, period_ms)`` is the process's one instance (started on the calling
    thread's Tornado loop); ``add(doc, refresh)`` registers a session, ``remove(doc)`` drops it
    (also done when its session is found closed)."""

    _instance: "Ticker | None" = None
    _guard = threading.Lock()

    def __init__(self, services, period_ms: int):
        from tornado.ioloop import IOLoop, PeriodicCallback

        self.services = services
        self.loop = IOLoop.current()
        self._sessions: dict[int, tuple[object, Callable[[], None]]] = {}
        self._seen = None
        self._listing = False
        self.timer = PeriodicCallback(self._tick, period_ms)
        self.timer.start()

    @classmethod
    def get(cls, services, period_ms: int) -> "Ticker":
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls(services, period_ms)
            return cls._instance

    def add(self, doc, refresh: Callable[[], None]) -> None:
        self._sessions[id(doc)] = (doc, refresh)

    def remove(self, doc) -> None:
        # a session is removed by its close and by a refresh that finds it closed: release once
        if self._sessions.pop(id(doc), None) is not None and not self._sessions:
            # called on the loop's thread or another: add_callback is safe from either
            self.loop.add_callback(self.loop.call_later, RELEASE_DELAY_S, self._release_if_idle)

    def _release_if_idle(self) -> None:
        if not self._sessions:  # nobody came back meanwhile
            release_memory()

    def _schedule(self, key: int) -> None:
        """Refresh one session (called on the loop's thread)."""
        entry = self._sessions.get(key)
        if entry is None:
            return
        doc, refresh = entry
        context = doc.session_context
        if context is None or getattr(context, "destroyed", False):
            self.remove(doc)
            return

        # on the loop, as Panel runs a session's own periodic callback without a callback pool:
        # a document changed from another thread can lose the change (dashboard/background.py).
        # (Spreading the sessions over the period was tried: its N = 20 run gave 7 console
        # errors where this gave none in two; BENCHMARKS.md.)
        with set_curdoc(doc):
            pn.state.execute(refresh, schedule=True)

    async def _tick(self) -> None:
        if self._listing or not self._sessions:  # a slow listing is not stacked up
            return
        self._listing = True
        try:
            snapshot = await self.loop.run_in_executor(None, self.services.snapshot)
        except Exception:  # a listing that fails now is tried again next tick
            log.exception("listing the run stores failed")
            return
        finally:
            self._listing = False
        if snapshot.version == self._seen:
            return
        self._seen = snapshot.version
        for key in list(self._sessions):
            self._schedule(key)

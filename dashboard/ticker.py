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

import logging
import threading
from typing import Callable

import panel as pn
from panel.io.state import set_curdoc

log = logging.getLogger("dashboard.ticker")


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
        self._sessions.pop(id(doc), None)

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
        for key, (doc, refresh) in list(self._sessions.items()):
            context = doc.session_context
            if context is None or getattr(context, "destroyed", False):
                self._sessions.pop(key, None)
                continue
            # as Panel runs a session's own periodic callback: on the server's thread pool when
            # it has one (the event loop stays free for the pages' events), else on the loop.
            # (Spreading the sessions over the period was tried: its N = 20 run gave 7 console
            # errors where this gave none in two; BENCHMARKS.md.)
            with set_curdoc(doc):
                pn.state.execute(refresh, schedule="thread" if pn.config.nthreads else True)

"""Long work off the server's loop; every change to a page on it.

Under ``panel serve`` a session's Bokeh document is safe to change on the server's loop thread
only. While a document is held (``pn.io.hold``, and Panel holds it around every update it
applies), Bokeh keeps the pending changes in a plain list, and the loop releasing the hold swaps
that list for a new one: a change announced from another thread in between is lost. Measured
with Bokeh 3.9 alone (two threads, one holding and releasing, one scheduling callbacks): 7 to 66
of 20 000 callbacks never reached the session. A lost change is a page that never updates, with
no error anywhere. With a callback pool (``panel serve --num-threads``) Panel runs every user
event on a pool thread and hands its changes to the loop through exactly that path; at twenty
sessions about one tab view in a few hundred stayed empty for good (BENCHMARKS.md,
"2026-12-02: the empty tab").

So the dashboard's server runs no callback pool (:mod:`dashboard.serve`): user events run on the
loop. Work that may take long (an analysis computed, a figure drawn, an uploaded file read) is
given to :class:`Background`, which runs it on this module's worker threads. The work only
returns data; what the page shows is then built from it on the loop. Outside a served session
(a notebook, the server's warm-up, the tests) the work runs at once, in the caller's thread.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple

import panel as pn

# two: one long piece of work (a new run's flow frames, ~2 s) does not hold up every other tab;
# the GIL makes more of no use on a small server
WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dashboard-work")
log = logging.getLogger("dashboard.background")
_warned = False
# work that has not finished by then gets a "preparing" message on the page meanwhile
SLOW_S = 0.3


class Outcome(NamedTuple):
    """What a piece of work gave: its value, or the exception it raised (never both)."""
    value: Any = None
    error: BaseException | None = None


def _outcome(work: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(work())
    except Exception as err:  # handed to the page's builder, which says what went wrong
        return Outcome(error=err)


def served_document():
    """The Bokeh document of the served session being built or updated, else None."""
    doc = pn.state.curdoc
    return doc if doc is not None and doc.session_context is not None else None


def warn_if_pooled() -> None:
    """Say once per process that a server with a callback pool can lose page updates."""
    global _warned
    if pn.config.nthreads is not None and not _warned:
        _warned = True
        log.warning("served with a callback pool (--num-threads): Panel then changes pages "
                    "from pool threads and can lose an update now and then (a tab that stays "
                    "empty); serve with `python -m dashboard.serve` instead")


class Background:
    """One view's latest piece of background work. ``run(work, show)`` calls ``work()`` on a
    worker thread and then ``show(outcome)`` on the server's loop, unless ``run`` or
    :meth:`drop` was called again meanwhile: only the latest work is shown. ``work`` must not
    touch Panel objects; ``show`` builds the page from its :class:`Outcome`."""

    def __init__(self):
        self._latest = 0

    def drop(self) -> None:
        """Whatever is under way will not be shown."""
        self._latest += 1

    def run(self, work: Callable[[], Any], show: Callable[[Outcome], None],
            waiting: Callable[[], None] | None = None) -> None:
        """``waiting()`` (on the loop) if the work takes more than :data:`SLOW_S`."""
        self._latest += 1
        mine = self._latest
        if served_document() is None:  # a notebook, the warm-up, a test: here and now
            show(_outcome(work))
            return

        async def finish():
            future = asyncio.get_running_loop().run_in_executor(WORKERS, _outcome, work)
            if waiting is None:
                outcome = await future
            else:
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(future), SLOW_S)
                except asyncio.TimeoutError:
                    if mine == self._latest:
                        waiting()
                    outcome = await future
            if mine == self._latest:
                show(outcome)

        # a coroutine: Panel runs it on the session's loop, with the session's document current
        pn.state.execute(finish)


__all__ = ["Background", "Outcome", "SLOW_S", "WORKERS", "served_document", "warn_if_pooled"]

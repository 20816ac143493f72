"""The class's waiting room: ``/class``, the address to give students (a ``panel serve`` plugin).

While the machine is busy, pages load their first screen in turn (:mod:`dashboard.gate`). A page
that opens the app itself (``/app``) waits for its turn inside its HTTP request, so its browser
shows it *loading* all that time, with nothing on screen, and a browser keeps drawing frames
for a loading tab's spinner (headless too): twenty co-located tabs waiting 10 s so took 7.8
CPU-s, most of one of the two cores drawing the pages whose turn it was (BENCHMARKS.md,
2026-12-01).

``/class`` answers at once. When a slot is free it sends the page straight on to the app (a
redirect: nothing more to load). Otherwise it sends a small page, loaded in an instant, that says
how many pages are ahead of it and asks ``/class/turn`` for its turn; the answer comes when the
turn has come, and the page then opens the app, which is let in without queueing again (its
``turn`` ticket hands the slot over). A page closed while waiting gives its place up.
"""
from __future__ import annotations

import asyncio
import html
import json
import secrets

from tornado.web import RequestHandler

from dashboard.gate import DRAWS, TICKET_ARG, DrawQueue, ticket_key

APP = "app"  # the app's route beside this one (panel serve dashboard/app.py)


def app_url(ticket: str | None = None) -> str:
    """Where a page goes when its turn has come (relative: works under any prefix)."""
    return APP if ticket is None else f"{APP}?{TICKET_ARG}={ticket}"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Relaxed-Equivariance Explorer</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 4em auto; max-width: 36em;
color: #222; }} h1 {{ font-size: 1.4em; }}</style></head>
<body><h1>Relaxed-Equivariance Explorer</h1>
<p>The class is opening the dashboard together, a few pages at a time, in the order they came.
<span id="ahead">{ahead}</span></p>
<p>This page opens the dashboard by itself when its turn comes; no need to reload it.</p>
<noscript><p><a href="{app}">Open the dashboard</a> (this page needs JavaScript to wait its
turn).</p></noscript>
<script>
(async () => {{
  for (;;) {{  // the answer comes when the turn has come; on a network error, ask again
    try {{
      const answer = await fetch({turn_url}, {{cache: "no-store"}});
      if (answer.ok) {{ location.replace((await answer.json()).go); return; }}
    }} catch (err) {{}}
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }}
}})();
</script></body></html>
"""


def _ahead_text(waiting: int) -> str:
    if waiting <= 0:
        return ""
    return f"{waiting} page{'s are' if waiting > 1 else ' is'} ahead of this one."


class WaitingRoom(RequestHandler):
    """``GET /class``: the app at once when a slot is free, else the waiting page."""

    def initialize(self, queue: DrawQueue = DRAWS) -> None:
        self.queue = queue

    def get(self) -> None:
        ticket = secrets.token_urlsafe(12)
        ahead = self.queue.stats()["waiting"]
        if self.queue.request(ticket_key(ticket), lambda _key: None):
            self.redirect(app_url(ticket if self.queue.enabled else None))
            return
        self.set_header("Cache-Control", "no-store")
        self.write(PAGE.format(ahead=html.escape(_ahead_text(ahead)), app=app_url(),
                               turn_url=json.dumps(f"class/turn?ticket={ticket}")))


class Turn(RequestHandler):
    """``GET /class/turn?ticket=T``: answers ``{"go": URL}`` when ticket T's turn has come."""

    def initialize(self, queue: DrawQueue = DRAWS) -> None:
        self.queue, self._ready = queue, None

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        ticket = self.get_argument("ticket", "")
        self._key = key = ticket_key(ticket)
        if not self.queue.draws(key):
            if not self.queue.waits(key):
                # unknown: answered before, or the server restarted meanwhile: on to the app,
                # which queues it itself
                self.write({"go": app_url()})
                return
            self._ready = asyncio.get_running_loop().create_future()
            if not self.queue.request(key, self._go):  # keeps the place it was given
                try:
                    await self._ready
                except asyncio.CancelledError:  # the page went away
                    return
        self.write({"go": app_url(ticket)})

    def _go(self, _key) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def on_connection_close(self) -> None:
        """The page went away while it waited: its place goes to the next one."""
        ready = self._ready
        if ready is not None and not ready.done():
            self.queue.release(self._key)
            ready.cancel()


# panel serve --plugins dashboard.waiting
ROUTES = [("/class", WaitingRoom), ("/class/turn", Turn)]

__all__ = ["APP", "ROUTES", "Turn", "WaitingRoom", "app_url"]

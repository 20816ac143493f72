"""First screens in turn when the machine is busy: one queue per server process.

Twenty pages that open the dashboard at once on a machine whose cores are already full share
them and all reach their first screen late, together: the median student waits as long as the
last. Letting a few pages load at a time, in the order they came, gets the median one there
much sooner and the last one about as late (at N = 20 on two cores, median 22.5-22.9 ->
13.9-14.7 s, the last 23.0-23.4 -> 23.6-24.4 s; BENCHMARKS.md, 2026-12-01).

A session's page request waits, without blocking the server, before its session is made
(:func:`hold_first_screens`); it takes a *slot*, given back when the page reports its first
screen drawn (Panel's ``onload``), when the session closes, or after :data:`HOLD_S`.

The queue only orders what competes for a busy machine. While the machine has CPU to spare (the
students' browsers run on their own computers, say) one more page is let in every
:data:`TICK_S` whatever the slots, so a class whose pages draw elsewhere does not wait for them.
A page that never reports back holds its slot for at most :data:`HOLD_S`: nobody waits for ever.
In a notebook, or with 0 slots, nothing waits.

The tabs are not queued. Their figures were, in the same way (each figure reporting when
drawn), and at N = 20 no tab came sooner beyond the spread between runs while the cheap ones
could come later (Sweep median 3.9 -> 6.7 and 4.9 s): a tour's tabs differ in cost (Sweep about
half of Rollout's), and first come, first served makes a cheap tab wait behind dear ones, where
sharing the cores lets it finish first. First screens are alike and asked for at once, where
taking turns wins.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable

log = logging.getLogger("dashboard.gate")

HOLD_S = 5.0  # the longest a slot is held without the page's report
TICK_S = 0.1  # how often waiters are looked at (and the machine's load read)
SPARE_BELOW = 0.8  # the machine's busy fraction under which one more waiter is let in a tick
SLOTS_ENV = "REE_DRAW_SLOTS"  # slots of a served dashboard (default: the machine's cores)
HOLD_ENV = "REE_DRAW_HOLD_S"  # a served dashboard's HOLD_S (tests: long, so a page that never
                              # reports stands out from one that is merely slow)


class MachineLoad:
    """The fraction of the whole machine's CPU time that was busy since the previous reading
    (every process, not only this one: the browsers may share the machine). 1.0 when unknown
    or when the previous reading is too old to say anything about now."""

    def __init__(self, max_age_s: float = 3 * TICK_S, clock=time.monotonic):
        self.max_age_s, self._clock = max_age_s, clock
        self._last = None  # (time, busy, total)

    def __call__(self) -> float:
        try:
            import psutil  # a dependency of dask's distributed, which core uses

            t = psutil.cpu_times()
        except Exception:  # no psutil, or no reading here: treat the machine as busy
            return 1.0
        idle = t.idle + getattr(t, "iowait", 0.0)
        total = sum(t)
        now, last = self._clock(), self._last
        self._last = (now, total - idle, total)
        if last is None or now - last[0] > self.max_age_s or total <= last[2]:
            return 1.0
        return (total - idle - last[1]) / (total - last[2])


class DrawQueue:
    """First come, first served, ``slots`` at a time while the machine is busy.

    Keys are any hashables (a session's page). ``request(key, start)`` returns True when
    ``key`` may go ahead at once; otherwise ``start(key)`` is called when its turn comes (on the
    server's loop thread). ``release(key)`` gives a slot (or a place in the queue) back; it may
    be called from any thread, any number of times. ``await turn(key)`` waits for a turn."""

    def __init__(self, slots: int = 0, hold_s: float = HOLD_S, tick_s: float = TICK_S,
                 spare_below: float = SPARE_BELOW, load: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.slots, self.hold_s, self.tick_s, self.spare_below = slots, hold_s, tick_s, spare_below
        self._load = load or MachineLoad(clock=clock)
        self._clock = clock
        self._waiting: OrderedDict[Hashable, Callable] = OrderedDict()
        self._admitted: dict[Hashable, float] = {}  # key -> when it was let in
        self._last_spare = float("-inf")
        self._lock = threading.Lock()
        self._loop = None  # the server's Tornado loop, where the queue is pumped
        self._pumping = False

    # --------------------------------------------------------------------- the public side
    @property
    def enabled(self) -> bool:
        return self.slots > 0

    def configure(self, slots: int, loop=None, hold_s: float | None = None) -> None:
        """Turn the queue on (``slots`` > 0) for the server whose loop is ``loop`` (default:
        this thread's); ``hold_s``: the longest a slot is held without the page's report
        (default: as before)."""
        from tornado.ioloop import IOLoop

        self.slots, self._loop = checked_slots(slots), loop or IOLoop.current()
        if hold_s is not None:
            self.hold_s = hold_s

    def request(self, key: Hashable, start: Callable[[Hashable], None]) -> bool:
        if not self.enabled:
            return True
        with self._lock:
            if key in self._waiting:  # keeps its place; its start will see the latest state
                self._waiting[key] = start
                return False
            self._admitted.pop(key, None)  # asked again while drawing: a new turn
            self._expire()
            if not self._waiting and len(self._admitted) < self.slots:
                self._admitted[key] = self._clock()
                return True
            self._waiting[key] = start
        self._wake()
        return False

    def release(self, key: Hashable) -> None:
        if not self.enabled:
            return
        with self._lock:
            freed = self._admitted.pop(key, None) is not None
            self._waiting.pop(key, None)
        if freed:
            self._wake()

    async def turn(self, key: Hashable) -> None:
        """Wait (on the server's loop) until ``key`` may go ahead."""
        if not self.enabled:
            return
        from tornado.ioloop import IOLoop

        self._loop = IOLoop.current()
        ready = asyncio.get_running_loop().create_future()

        def admitted(_key):
            if not ready.done():
                ready.set_result(None)

        if not self.request(key, admitted):
            try:
                await ready
            except BaseException:  # the request went away while waiting
                self.release(key)
                raise

    def waits(self, key: Hashable) -> bool:
        """Whether ``key`` is waiting for its turn."""
        with self._lock:
            return key in self._waiting

    def draws(self, key: Hashable) -> bool:
        """Whether ``key`` holds a slot (its turn has come and it has not reported back)."""
        with self._lock:
            return key in self._admitted

    def hand_over(self, key: Hashable, to: Hashable) -> bool:
        """Give the slot ``key`` holds to ``to``, with a fresh :data:`HOLD_S`; False when
        ``key`` holds none (never had one, reported back, or held it too long)."""
        with self._lock:
            self._expire()
            if self._admitted.pop(key, None) is None:
                return False
            self._admitted[to] = self._clock()
            return True

    def stats(self) -> dict:
        """What the queue holds now: ``waiting`` and ``drawing`` counts."""
        with self._lock:
            return dict(waiting=len(self._waiting), drawing=len(self._admitted),
                        slots=self.slots)

    # ------------------------------------------------------------------------ the pump
    def _expire(self) -> None:
        """Slots held past ``hold_s`` are given back (caller holds the lock)."""
        now = self._clock()
        for key in [k for k, since in self._admitted.items() if now - since > self.hold_s]:
            del self._admitted[key]
            # a page that closed, or never reported (a request without a browser behind it)
            log.warning("draw slot of %s given back after %g s without the page's report",
                        _label(key), self.hold_s)

    def admit(self) -> list[tuple[Hashable, Callable]]:
        """Let in whoever's turn it is now; returns them with their start (not yet called)."""
        out = []
        with self._lock:
            self._expire()
            while self._waiting and len(self._admitted) < self.slots:
                out.append(self._let_in())
            now = self._clock()
            if self._waiting and now - self._last_spare >= self.tick_s * 0.999:
                if self._load() < self.spare_below:  # CPU to spare: one more this tick
                    out.append(self._let_in())
                    self._last_spare = now
        return out

    def _let_in(self):
        key, start = self._waiting.popitem(last=False)
        self._admitted[key] = self._clock()
        return key, start

    def _wake(self) -> None:
        """Pump soon, on the loop (from any thread)."""
        if self._loop is not None:
            self._loop.add_callback(self._pump)

    def _pump(self) -> None:
        for key, start in self.admit():
            try:
                start(key)
            except Exception:  # its session is gone: the slot is not held for it
                log.debug("starting %r failed", key, exc_info=True)
                self.release(key)
        with self._lock:
            busy = bool(self._waiting)
        # while anyone waits, look again every tick (expired slots, CPU to spare)
        if busy and not self._pumping:
            self._pumping = True
            self._loop.call_later(self.tick_s, self._pumped)

    def _pumped(self) -> None:
        self._pumping = False
        self._pump()


def _label(key) -> str:
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "first screen":
        return f"the first screen of session {str(key[1])[:8]}"
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "waiting room":
        return f"the waiting room's page {str(key[1])[:8]}"
    return repr(key)


DRAWS = DrawQueue()  # the process's queue; off until a served dashboard turns it on


def slots_from_env() -> int:
    """The slots a served dashboard uses: ``REE_DRAW_SLOTS``, else the machine's cores."""
    raw = os.environ.get(SLOTS_ENV, "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        slots = int(raw)
    except ValueError:
        raise ValueError(f"{SLOTS_ENV} must be a whole number (0: off), got {raw!r}") from None
    return checked_slots(slots, SLOTS_ENV)


def hold_from_env() -> float:
    """How long a served dashboard's page may hold its slot unreported: ``REE_DRAW_HOLD_S``,
    else :data:`HOLD_S`."""
    raw = os.environ.get(HOLD_ENV, "").strip()
    try:
        hold = float(raw) if raw else HOLD_S
    except ValueError:
        hold = -1.0
    if not hold > 0:
        raise ValueError(f"{HOLD_ENV} must be a number of seconds above 0, got {raw!r}")
    return hold


def checked_slots(slots: int, what: str = "draw slots") -> int:
    """``slots`` when it is a valid count (0: every page at once), else ValueError naming
    ``what`` (the option or setting it came from)."""
    if slots < 0:
        raise ValueError(f"{what} must be 0 (all at once) or more, got {slots}")
    return slots


def page_key(session_id: str) -> tuple:
    """The queue's key for a session's first screen."""
    return ("first screen", session_id)


TICKET_ARG = "turn"  # the app URL's argument with a waiting room's ticket (dashboard/waiting.py)


def ticket_key(ticket: str) -> tuple:
    """The queue's key for a page in the waiting room (dashboard/waiting.py)."""
    return ("waiting room", ticket)


def hold_first_screens(queue: DrawQueue = DRAWS) -> None:
    """Make each new session of this server process wait for its turn before it is created.

    Bokeh's ``Application.on_session_created`` is the documented place to delay a session's
    creation (it may return a future); Panel's application class is the one ``panel serve``
    builds, so its method is wrapped here, once. The page then asks for its scripts only when
    its turn has come. A page sent by the waiting room brings the slot its turn gave it (its
    ``turn`` ticket) and does not queue again."""
    from panel.io.application import Application

    original = Application.on_session_created
    if getattr(original, "draws_in_turn", False):
        return

    async def on_session_created(self, session_context):
        key = page_key(session_context.id)
        request = getattr(session_context, "request", None)
        tickets = (getattr(request, "arguments", None) or {}).get(TICKET_ARG) or [b""]
        ticket = tickets[0].decode(errors="replace")
        if not (ticket and queue.hand_over(ticket_key(ticket), key)):
            await queue.turn(key)
        await original(self, session_context)

    on_session_created.draws_in_turn = True
    Application.on_session_created = on_session_created


__all__ = ["DRAWS", "DrawQueue", "MachineLoad", "HOLD_S", "TICK_S", "TICKET_ARG", "checked_slots",
           "hold_first_screens", "hold_from_env", "HOLD_ENV", "page_key", "slots_from_env",
           "ticket_key"]

"""The draw queue (dashboard/gate.py): first come, first served, a few at a time while the
machine is busy, nobody waiting for ever."""
import asyncio
import threading

import pytest

from dashboard.gate import (HOLD_S, DrawQueue, MachineLoad, hold_first_screens, hold_from_env,
                            page_key, slots_from_env)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Load:
    """The machine's busy fraction, as the test sets it; counts the readings."""

    def __init__(self, busy=1.0):
        self.busy, self.readings = busy, 0

    def __call__(self):
        self.readings += 1
        return self.busy


def queue(slots=2, busy=1.0, hold_s=5.0, tick_s=0.1):
    clock = Clock()
    q = DrawQueue(slots, hold_s=hold_s, tick_s=tick_s, load=Load(busy), clock=clock)
    return q, clock


def started(log):
    return lambda key: log.append(key)


def test_a_queue_with_no_slots_lets_everyone_through():
    q, _ = queue(slots=0)
    assert not q.enabled
    assert all(q.request(k, started([])) for k in range(50))
    q.release(3)  # harmless
    assert asyncio.run(_turn(q, "x")) is None


async def _turn(q, key):
    return await q.turn(key)


def test_free_slots_go_at_once_then_waiters_are_let_in_first_come_first_served():
    q, _ = queue(slots=2)
    log = []
    assert q.request("a", started(log)) and q.request("b", started(log))
    for key in "cdef":
        assert not q.request(key, started(log))
    assert q.stats() == dict(waiting=4, drawing=2, slots=2)
    assert q.admit() == []  # busy machine, full slots: nobody more
    q.release("b")
    assert [k for k, _ in q.admit()] == ["c"]
    q.release("a")
    q.release("c")
    assert [k for k, _ in q.admit()] == ["d", "e"]
    assert q.stats()["drawing"] == 2 and q.stats()["waiting"] == 1


def test_never_more_than_the_slots_draw_while_the_machine_is_busy():
    q, clock = queue(slots=3)
    drawing = set()
    for key in range(40):
        if q.request(key, started([])):
            drawing.add(key)
    order = []
    while len(order) + len(drawing) < 40:
        assert len(drawing) <= 3
        done = min(drawing)
        drawing.discard(done)
        q.release(done)
        clock.now += q.tick_s
        for key, _ in q.admit():
            drawing.add(key)
            order.append(key)
    assert order == sorted(order)  # in the order they asked


def test_a_slot_held_past_the_hold_time_is_given_back(caplog):
    q, clock = queue(slots=1, hold_s=5.0)
    assert q.request("silent page", started([]))
    assert not q.request("next", started([]))
    clock.now = 4.9
    assert q.admit() == []
    clock.now = 5.1
    with caplog.at_level("WARNING", logger="dashboard.gate"):
        assert [k for k, _ in q.admit()] == ["next"]
    assert "given back after 5 s without the page's report" in caplog.text
    q.release("silent page")  # its late report frees nothing twice
    assert q.stats()["drawing"] == 1


def test_with_cpu_to_spare_one_more_is_let_in_each_tick_whatever_the_slots():
    q, clock = queue(slots=1, busy=0.3, tick_s=0.1)
    assert q.request(0, started([]))
    for key in range(1, 6):
        assert not q.request(key, started([]))
    assert [k for k, _ in q.admit()] == [1]
    assert q.admit() == []  # the same tick: the load has not been read again
    clock.now += 0.1
    assert [k for k, _ in q.admit()] == [2]
    q._load.busy = 0.95  # the machine filled up: back to the slots
    clock.now += 0.1
    assert q.admit() == []
    assert q.stats() == dict(waiting=3, drawing=3, slots=1)


def test_asking_again_while_waiting_keeps_the_place_and_the_latest_start():
    q, _ = queue(slots=1)
    first, latest = [], []
    assert q.request("a", started([]))
    assert not q.request("b", started(first))
    assert not q.request("c", started([]))
    assert not q.request("b", started(latest))  # e.g. the selection changed meanwhile
    q.release("a")
    (key, start), = q.admit()
    start(key)
    assert key == "b" and latest == ["b"] and first == []


def test_asking_again_while_drawing_takes_a_new_turn():
    q, _ = queue(slots=1)
    assert q.request("a", started([]))
    assert not q.request("b", started([]))
    assert not q.request("a", started([]))  # a new drawing of "a" goes behind "b"
    assert [k for k, _ in q.admit()] == ["b"]


def test_a_waiter_that_goes_away_loses_its_place():
    q, _ = queue(slots=1)
    assert q.request("a", started([]))
    assert not q.request("gone", started([]))
    assert not q.request("b", started([]))
    q.release("gone")  # its tab was hidden, its session closed
    q.release("a")
    assert [k for k, _ in q.admit()] == ["b"]


def test_requests_and_releases_from_many_threads_keep_the_count():
    q, _ = queue(slots=2)
    admitted, lock = [], threading.Lock()

    def worker(n):
        for i in range(200):
            key = (n, i)
            if q.request(key, started([])):
                with lock:
                    admitted.append(key)
            q.release(key)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.stats() == dict(waiting=0, drawing=0, slots=2)
    assert admitted  # some went at once


def test_turn_waits_on_the_servers_loop_until_a_slot_is_given_back():
    from tornado.ioloop import IOLoop

    async def main():
        q = DrawQueue(1, hold_s=60, tick_s=0.01, load=Load(1.0))
        q.configure(1, IOLoop.current())
        order = []

        async def page(key, draw_s):
            await q.turn(key)
            order.append(("in", key))
            await asyncio.sleep(draw_s)
            order.append(("out", key))
            q.release(key)

        await asyncio.wait_for(asyncio.gather(page("a", 0.05), page("b", 0.01),
                                              page("c", 0.01)), timeout=10)
        return order

    order = asyncio.run(main())
    assert order == [("in", "a"), ("out", "a"), ("in", "b"), ("out", "b"),
                     ("in", "c"), ("out", "c")]


def test_a_start_that_fails_gives_its_slot_back():
    from tornado.ioloop import IOLoop

    async def main():
        q = DrawQueue(1, hold_s=60, tick_s=0.01, load=Load(1.0))
        q.configure(1, IOLoop.current())
        assert q.request("a", started([]))

        def closed(_key):
            raise RuntimeError("session closed")

        assert not q.request("gone", closed)
        ran = []
        assert not q.request("b", started(ran))
        q.release("a")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if ran:
                break
        return ran, q.stats()

    ran, stats = asyncio.run(main())
    assert ran == ["b"] and stats == dict(waiting=0, drawing=1, slots=1)


def test_machine_load_is_a_fraction_and_unknown_at_first():
    clock = Clock()
    load = MachineLoad(clock=clock)
    assert load() == 1.0  # nothing to compare with yet
    clock.now += 0.1
    assert 0.0 <= load() <= 1.0
    clock.now += 10  # too long ago to say anything about now
    assert load() == 1.0


def test_slots_come_from_the_environment_else_the_cores(monkeypatch):
    import os

    monkeypatch.delenv("REE_DRAW_SLOTS", raising=False)
    assert slots_from_env() == (os.cpu_count() or 1)
    monkeypatch.setenv("REE_DRAW_SLOTS", "3")
    assert slots_from_env() == 3
    monkeypatch.setenv("REE_DRAW_SLOTS", "0")
    assert slots_from_env() == 0
    for bad in ("two", "-1", "1.5"):
        monkeypatch.setenv("REE_DRAW_SLOTS", bad)
        with pytest.raises(ValueError, match="REE_DRAW_SLOTS"):
            slots_from_env()
    with pytest.raises(ValueError, match="draw slots"):
        DrawQueue().configure(-1)


def test_the_hold_comes_from_the_environment_else_five_seconds(monkeypatch):
    monkeypatch.delenv("REE_DRAW_HOLD_S", raising=False)
    assert hold_from_env() == HOLD_S == 5.0
    monkeypatch.setenv("REE_DRAW_HOLD_S", "120")
    assert hold_from_env() == 120.0
    for bad in ("long", "0", "-3", "nan"):
        monkeypatch.setenv("REE_DRAW_HOLD_S", bad)
        with pytest.raises(ValueError, match="REE_DRAW_HOLD_S"):
            hold_from_env()


def test_a_configured_hold_is_how_long_an_unreported_slot_is_kept():
    from tornado.ioloop import IOLoop

    q, clock = queue(slots=1, hold_s=5.0)
    q.configure(1, IOLoop.current(), hold_s=60.0)
    assert q.request("slow page", started([]))
    assert not q.request("next", started([]))
    clock.now = 30.0  # past the default 5 s, within the configured 60 s
    assert q.admit() == []
    clock.now = 60.1
    assert [k for k, _ in q.admit()] == ["next"]


def test_sessions_wait_for_their_turn_before_they_are_made(monkeypatch):
    """hold_first_screens wraps Panel's application hook once, and it waits for the queue."""
    from panel.io.application import Application

    calls = []

    async def original(self, context):
        calls.append(context.id)

    monkeypatch.setattr(Application, "on_session_created", original)
    q = DrawQueue(0)
    hold_first_screens(q)
    hold_first_screens(q)  # once only
    wrapped = Application.on_session_created
    assert wrapped is not original and wrapped.draws_in_turn

    class Context:
        id = "s1"

    asyncio.run(wrapped(None, Context()))  # no slots: straight through
    assert calls == ["s1"] and page_key("s1") == ("first screen", "s1")


def test_the_class_server_passes_its_draw_slots_and_answers_liveness():
    from dashboard.serve import main, panel_command, server_env

    assert "--liveness" in panel_command()
    assert server_env(base={}, draw_slots=3)["REE_DRAW_SLOTS"] == "3"
    assert server_env(base={}, draw_slots=0)["REE_DRAW_SLOTS"] == "0"
    assert "REE_DRAW_SLOTS" not in server_env(base={})
    with pytest.raises(ValueError, match="draw slots"):
        server_env(base={}, draw_slots=-2)
    with pytest.raises(SystemExit) as exit_:  # refused before anything starts
        main(["--draw-slots", "-1", "--no-precompute"])
    assert exit_.value.code == 2


def test_a_slot_is_handed_over_with_a_fresh_hold_time_and_only_while_held(caplog):
    q, clock = queue(slots=1, hold_s=5.0)
    assert q.request("room", started([]))
    assert q.draws("room") and not q.waits("room")
    clock.now = 4.0
    assert q.hand_over("room", "page")  # the waiting room's page opened the app
    assert q.draws("page") and not q.draws("room")
    clock.now = 8.0  # 4 s after the hand-over: still held
    assert not q.request("other", started([])) and q.waits("other")
    assert not q.hand_over("room", "again")  # handed over once
    assert not q.hand_over("nobody", "page2")
    clock.now = 9.5  # 5.5 s after the hand-over: taken back
    assert not q.hand_over("page", "late")
    assert "given back after 5 s" in caplog.text

"""The class's waiting room (dashboard/waiting.py) on a real Tornado server on 127.0.0.1: a page
goes straight on to the app when a slot is free, else waits and is sent on when its turn comes,
with the slot handed over to its session; a page that leaves gives its place up."""
import asyncio
import contextlib
import json

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from dashboard.gate import DrawQueue, hold_first_screens, page_key, ticket_key
from dashboard.waiting import ROUTES, Turn, WaitingRoom, app_url


class Busy:
    def __call__(self):
        return 1.0  # the machine is always busy: only the slots let pages in


@contextlib.asynccontextmanager
async def served(queue):
    """The waiting room's routes for ``queue`` on a free port of 127.0.0.1: its base URL."""
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([(pattern, handler, {"queue": queue})
                                     for pattern, handler in ROUTES]))
    server.add_sockets(sockets)
    queue.configure(queue.slots)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        server.stop()


async def opened(base: str):
    """GET /class without following its redirect."""
    return await AsyncHTTPClient().fetch(f"{base}/class", follow_redirects=False,
                                         raise_error=False)


def ticket_of(url: str) -> str:
    return url.split("turn=")[1] if "turn=" in url else url.split("ticket=")[1].split('"')[0]


def test_the_routes_are_the_waiting_room_and_its_turn():
    assert [p for p, _ in ROUTES] == ["/class", "/class/turn"]
    assert ROUTES[0][1] is WaitingRoom and ROUTES[1][1] is Turn
    assert app_url() == "app" and app_url("T") == "app?turn=T"


def test_a_free_slot_sends_the_page_straight_on_with_its_ticket():
    async def run():
        queue = DrawQueue(1, load=Busy())
        async with served(queue) as base:
            answer = await opened(base)
            assert answer.code == 302
            target = answer.headers["Location"]
            assert target.startswith("app?turn=")
            assert queue.draws(ticket_key(ticket_of(target)))
    asyncio.run(run())


def test_a_page_waits_its_turn_and_is_sent_on_when_a_slot_is_given_back():
    async def run():
        queue = DrawQueue(1, load=Busy())
        client = AsyncHTTPClient()
        async with served(queue) as base:
            first = await opened(base)
            first_key = ticket_key(ticket_of(first.headers["Location"]))
            page = await client.fetch(f"{base}/class")  # the slot is taken: the waiting page
            text = page.body.decode()
            assert page.code == 200 and "opens the dashboard by itself" in text
            second = ticket_of(text)
            assert queue.waits(ticket_key(second))
            third = (await client.fetch(f"{base}/class")).body.decode()
            assert "1 page is ahead of this one" in third

            turn = asyncio.ensure_future(client.fetch(f"{base}/class/turn?ticket={second}"))
            await asyncio.sleep(0.3)
            assert not turn.done()  # still the first page's turn
            queue.release(first_key)  # its first screen is drawn
            answer = json.loads((await asyncio.wait_for(turn, 5)).body)
            assert answer == {"go": f"app?turn={second}"}
            assert queue.draws(ticket_key(second))
            assert queue.waits(ticket_key(ticket_of(third)))  # next in line
    asyncio.run(run())


def test_an_unknown_ticket_goes_on_to_the_app_to_queue_there():
    async def run():
        async with served(DrawQueue(1, load=Busy())) as base:
            answer = await AsyncHTTPClient().fetch(f"{base}/class/turn?ticket=nobody")
            assert json.loads(answer.body) == {"go": "app"}
    asyncio.run(run())


def test_a_page_that_leaves_while_waiting_gives_its_place_up():
    async def run():
        queue = DrawQueue(1, load=Busy())
        async with served(queue) as base:
            await opened(base)  # takes the slot
            waiting = ticket_of((await AsyncHTTPClient().fetch(f"{base}/class")).body.decode())
            with pytest.raises(HTTPClientError):  # the page closes before its turn
                await AsyncHTTPClient(force_instance=True).fetch(
                    f"{base}/class/turn?ticket={waiting}", request_timeout=0.5)
            for _ in range(50):
                if not queue.waits(ticket_key(waiting)):
                    break
                await asyncio.sleep(0.05)
            assert not queue.waits(ticket_key(waiting))
    asyncio.run(run())


def test_with_the_queue_off_the_page_goes_straight_to_the_app():
    async def run():
        async with served(DrawQueue(0)) as base:
            answer = await opened(base)
            assert answer.code == 302 and answer.headers["Location"] == "app"
    asyncio.run(run())


def test_a_session_with_a_ticket_takes_over_its_slot_without_queueing(monkeypatch):
    from panel.io.application import Application as PanelApplication

    made = []

    async def original(self, context):
        made.append(context.id)

    monkeypatch.setattr(PanelApplication, "on_session_created", original)
    queue = DrawQueue(1, load=Busy())
    hold_first_screens(queue)

    class Request:
        arguments = {"turn": [b"T1"]}

    class Context:
        id = "s1"
        request = Request()

    async def run():
        queue.configure(1)
        assert queue.request(ticket_key("T1"), lambda _k: None)  # its turn came in the room
        await asyncio.wait_for(PanelApplication.on_session_created(None, Context()), 2)

    asyncio.run(run())
    assert made == ["s1"]
    assert queue.draws(page_key("s1")) and not queue.draws(ticket_key("T1"))

"""Load test: N Chromium sessions against a real ``panel serve`` of the dashboard on 127.0.0.1.

``python -m tests.loadtest --sessions 20`` (``make loadtest N=20``). The server is started the
way :mod:`dashboard.serve` starts it for a class, on the project's data folder (datasets and
shipped runs; ``make data`` first) and a temporary run store. Sessions open the address a class
is given, ``/class`` (the waiting room, dashboard/waiting.py, which sends each page on to the
app when its turn comes); ``--via app`` opens ``/app`` itself. Then:

1. one session opens the app and tours the tabs (the single-session reference);
2. N sessions open the app at once and each tours Symmetry breaking, Rollout, Equivariance,
   Sweep and Runs, timed from the click until that tab's plots are on screen
   (``--arrive-over S``: session i opens at i * S / N seconds instead, as a class that drifts in;
   the targets are defined for arrivals at once and are not checked then);
3. one of them starts a CPU training job and moves the rollout player's slider by mouse while it
   runs: callback latency is the time from the slider's input event to the first change of the
   page's Bokeh document that the server sends back (the updated plot);
4. all sessions close; the server's RSS is read once it has dropped them.

Before all this, a control (``--no-control`` leaves it out): N pages open ``/control`` at once,
the app's page with a line of text in it (tests/control.py: the same template, scripts and
turns), timed to their first screen. Its times say what this machine, this hour, costs a class
before the app draws anything of its own; the machine's CPU per first screen (every process:
browsers, server, this harness) is printed for both.

Printed: first-screen and per-tab times (median / max), the server's CPU seconds per session
(its own /proc counters, the browsers and the training worker excluded), callback latency
(median / p95), the server's RSS at each stage, console errors and requests to any host other
than the server. Bounded: at most 40 sessions, every wait has a timeout, loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CONTROL_PAGE = Path(__file__).with_name("control.py")  # served at /control
CHROMIUM = os.environ.get("REE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-dev-shm-usage"]
MAX_SESSIONS = 40
VIAS = ("class", "app")  # what sessions open: /class (the waiting room) or /app
MAX_ARRIVE_OVER_S = 600
TOUR = ("Symmetry breaking", "Rollout", "Equivariance", "Sweep", "Runs")
# what "on screen" means per tab: a text that only the rendered tab shows, and plots drawn
READY = {"Symmetry breaking": ("Symmetry breaking:", 1), "Rollout": ("Flow player", 2),
         "Equivariance": ("Model vs data", 1), "Sweep": ("Relaxation sweep", 1),
         "Runs": ("rotation-rgroup-C4", 0)}
TARGETS = dict(cpu_first_screen_s=0.4, cpu_tour_s=1.0, first_median_s=12, first_max_s=20,
               tab_median_s=3, tab_max_s=8, latency_p95_ms=250, rss_max_mb=1536,
               rss_after_ratio=1.2)


# ------------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """``panel serve`` as dashboard.serve runs it, in its own process group."""

    def __init__(self, data: Path, runs: Path, log: Path, cwd: Path = ROOT,
                 unused_session_ms: int | None = None, release_memory: bool = False,
                 draw_slots: int | None = None):
        from dashboard.serve import (UNUSED_SESSION_MS, panel_command, precompute_shipped,
                                     server_env)

        self.unused_session_ms = unused_session_ms or UNUSED_SESSION_MS
        self.port = _free_port()
        env = server_env(release_memory, dict(
            os.environ, REE_DATA=str(data), REE_RUNS=str(runs), PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))),
            draw_slots=draw_slots)
        saved = {k: os.environ.get(k) for k in ("REE_DATA", "REE_RUNS")}
        os.environ.update(REE_DATA=str(data), REE_RUNS=str(runs))
        here = Path.cwd()
        try:  # what a teacher runs before class, with the server's folders
            os.chdir(cwd)
            precompute_shipped()
        finally:
            os.chdir(here)
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        self.log = open(log, "wb")
        command = panel_command("127.0.0.1", self.port, unused_session_ms=self.unused_session_ms)
        app = command.index("serve") + 1  # the app's script; the control page served beside it
        command[app + 1:app + 1] = [str(CONTROL_PAGE)]
        self.proc = subprocess.Popen(command, cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/app"
        self.class_url = f"http://127.0.0.1:{self.port}/class"
        self.control_url = f"http://127.0.0.1:{self.port}/{CONTROL_PAGE.stem}"
        deadline = time.time() + 180
        while time.time() < deadline:
            try:  # up and warmed; unlike the app's page, this makes no session
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/liveness", timeout=30)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"panel serve exited: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("panel serve did not answer within 180 s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return _cpu_seconds(self.pid)

    def rss(self) -> float:
        return _rss_mb(self.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


# ------------------------------------------------------------------------------------ sessions
class Session:
    """One browser context (one student) and what it saw."""

    def __init__(self, browser, url: str, timeout: float):
        self.browser, self.url, self.timeout = browser, url, timeout
        self.errors: list[str] = []  # "[stage] message": which stage of the test saw it
        self.stage = "open"
        self.outside: list[str] = []
        self.times: dict[str, float] = {}

    async def open(self) -> None:
        self.context = await self.browser.new_context(viewport={"width": 1500, "height": 1000})
        await self.context.add_init_script(READY_PROBE)
        self.page = page = await self.context.new_page()
        page.on("console", lambda m: m.type == "error" and self._error(m.text))
        page.on("pageerror", lambda e: self._error(str(e)))
        page.on("requestfailed", lambda r: self._error(f"request failed: {r.url}"))
        page.on("request", self._request)
        start = time.perf_counter()
        await page.goto(self.url, timeout=self.timeout * 1000)
        await self._ready("Runs")
        self.times["first screen"] = time.perf_counter() - start

    def _error(self, text: str) -> None:
        self.errors.append(f"[{self.stage}] {text}")

    def _request(self, request) -> None:
        url = urlparse(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname != "127.0.0.1":
            self.outside.append(request.url)

    async def _ready(self, tab: str) -> None:
        text, plots = READY[tab]
        try:
            await self.page.wait_for_function("([t, n]) => window.__ready(t, n)",
                                              arg=[text, plots], polling=POLL_MS,
                                              timeout=self.timeout * 1000)
        except Exception as err:  # say what the page showed instead
            try:
                seen = await self.page.evaluate("([t, n]) => window.__seen(t, n, true)",
                                                [text, plots])
            except Exception:  # the page itself is gone
                seen = None
            raise TimeoutError(f"{tab}: not on screen within {self.timeout:.0f} s; the page "
                               f"showed {seen} (its text {text!r}, {plots} plots wanted): "
                               f"{type(err).__name__}") from err

    async def tour(self) -> None:
        for tab in TOUR:
            self.stage = f"tour: {tab}"
            start = time.perf_counter()
            await self.page.get_by_text(tab, exact=True).first.click(timeout=self.timeout * 1000)
            await self._ready(tab)
            self.times[tab] = time.perf_counter() - start
        self.stage = "toured"  # idle, or watching the other sessions train

    async def close(self) -> None:
        self.stage = "close"
        await self.context.close()


# "on screen", checked in the page every POLL_MS: a visible element holding the tab's text in a
# text node of its own, and enough drawn, visible plot canvases, looking into Bokeh's shadow
# roots. Polled on a timer, not on every animation frame (Playwright's default), and cheap: 20
# pages walking their DOM 60 times a second took CPU from the very sessions being timed, and so
# did asking every element for its whole text: 0.8-2.2 ms a check on a tab's 1 400-1 700
# elements and 100-150 shadow roots, against 0.7-1.2 ms reading text nodes only, with no CSS
# (BENCHMARKS.md, 2026-12-01).
POLL_MS = 100
READY_PROBE = """window.__seen = (text, plots, whole) => {  // whole: count plots without the text
  const shown = (el) => el.offsetParent !== null && el.getClientRects().length > 0;
  const roots = [document];  // the page and every shadow root in it
  for (let i = 0; i < roots.length; i++)
    for (const el of roots[i].querySelectorAll('*')) if (el.shadowRoot) roots.push(el.shadowRoot);
  const holds = (root) => {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, (node) =>  // no CSS
      node.parentNode.nodeName === 'STYLE' ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT);
    for (let node = walker.nextNode(); node !== null; node = walker.nextNode())
      if (node.data.includes(text) && node.parentElement && shown(node.parentElement))
        return true;
    return false; };
  const shownText = roots.some(holds);
  if (!shownText && !whole) return {text: false, drawn: 0};
  let drawn = 0;  // figures on screen: a Bokeh figure's canvas, or a figure's decoded picture
  const onScreen = (el) => {
    const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  for (const root of plots ? roots : []) {
    for (const el of root.querySelectorAll('canvas'))
      if (el.width > 0 && shown(el) && onScreen(el)) drawn++;
    for (const el of root.querySelectorAll('.figure-picture img'))
      if (el.complete && el.naturalWidth > 0 && shown(el) && onScreen(el)) drawn++;
  }
  return {text: shownText, drawn}; };
window.__ready = (text, plots) => {
  const seen = window.__seen(text, plots); return seen.text && seen.drawn >= plots; };"""

# listens for the slider's input events and the document changes the server sends back
LATENCY_PROBE = """() => {
  window.__lat = {t0: null, t1: null, sliders: new Set()};
  // on the document: input events are composed, so they reach it from Bokeh's shadow roots,
  // and a slider re-created by a re-render is still heard
  document.addEventListener('input', (e) => {
      const el = e.composedPath()[0];
      if (!el || el.type !== 'range') return;
      window.__lat.sliders.add(el);
      if (window.__lat.t0 === null) window.__lat.t0 = performance.now(); }, true);
  // the slider's own value change is local; the plot's update comes from the server
  for (const doc of window.Bokeh.documents) doc.on_change((e) => {
      if (e.attr !== undefined && String(e.attr).startsWith('value')) return;
      if (window.__lat.t0 !== null && window.__lat.t1 === null)
        window.__lat.t1 = performance.now(); });
}"""


async def _latency(session: Session, moves: int) -> list[float]:
    """Slider moves by mouse on the rollout player while a training job runs (ms each)."""
    page = session.page
    session.stage = "latency"
    await page.get_by_text("Rollout", exact=True).first.click()
    await session._ready("Rollout")
    slider = page.locator("input[type=range]").first
    await slider.wait_for(state="visible", timeout=session.timeout * 1000)
    await page.evaluate(LATENCY_PROBE)
    out = []
    for _ in range(moves):
        box = await slider.bounding_box()
        if box is None:  # the player is being redrawn (a finished job refreshes the tab)
            await slider.wait_for(state="visible", timeout=session.timeout * 1000)
            box = await slider.bounding_box()
            if box is None:
                continue
        await page.evaluate("() => { window.__lat.t0 = null; window.__lat.t1 = null; }")
        low, high, value = await slider.evaluate(
            "el => [Number(el.min), Number(el.max), Number(el.value)]")
        if high <= low:
            break
        target = value + 3 if value + 3 <= high else low + (value + 3 - high) % (high - low + 1)
        target = target if target != value else (low if value != low else high)
        thumb = 16  # px: the browser draws the range thumb inside the box
        x = box["x"] + thumb / 2 + (target - low) / (high - low) * (box["width"] - thumb)
        y = box["y"] + box["height"] / 2
        await page.mouse.move(x, y)
        await page.mouse.down()
        await page.mouse.up()
        try:
            await page.wait_for_function("() => window.__lat.t1 !== null", timeout=10000)
        except Exception:  # no update came back within 10 s: count it as such
            out.append(10000.0)
            continue
        out.append(await page.evaluate("() => window.__lat.t1 - window.__lat.t0"))
        await asyncio.sleep(0.3)
    session.sliders_seen = await page.evaluate("() => window.__lat.sliders.size")
    return out


async def _train(session: Session) -> None:
    page = session.page
    session.stage = "train"
    await page.get_by_role("button", name="Train", exact=True).click()
    await page.get_by_text(re.compile(r"Submitted \S+")).first.wait_for(
        timeout=session.timeout * 1000)


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (started by any of its threads)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _stats(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return dict(median=None, max=None, p95=None, n=0)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return dict(median=statistics.median(values), max=values[-1], p95=p95, n=len(values))


async def _arrive(session: Session, delay: float) -> None:
    """Open ``delay`` seconds from now, then tour at once (a student who comes in late)."""
    await asyncio.sleep(delay)
    await session.open()
    await session.tour()


async def _first_screens(sessions: list[Session], server: Server) -> tuple[list, dict]:
    """Open ``sessions`` at once: what each raised (None: on screen), and the machine's and the
    server's CPU seconds per session until the last is on screen."""
    machine0, server0 = _machine_cpu(), server.cpu()
    opened = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
    n = len(sessions)
    return opened, dict(machine=(_machine_cpu() - machine0) / n,
                        server=(server.cpu() - server0) / n)


async def _control(browser, server: Server, n: int, timeout: float, say) -> tuple[dict, list]:
    """N control pages (tests/control.py) at once, timed to their first screen, then closed."""
    pages = [Session(browser, server.control_url, timeout) for _ in range(n)]
    for page in pages:
        page.stage = "control"
    opened, cpu = await _first_screens(pages, server)
    await asyncio.gather(*(p.close() for p, o in zip(pages, opened) if o is None),
                         return_exceptions=True)
    failures = [repr(x) for x in opened if x is not None]
    say(f"[load] control: {n} pages of a line of text ({len(failures)} failed)")
    return dict(first_screen_s=_stats(p.times.get("first screen") for p in pages),
                cpu_per_first_screen_s=cpu, failures=failures), pages


async def _run(n: int, timeout: float, moves: int, data: Path, work: Path, cwd: Path,
               unused_session_ms: int | None, say, release_memory: bool,
               arrive_over: float = 0.0, draw_slots: int | None = None,
               via: str = "class", control: bool = True) -> dict:
    from playwright.async_api import async_playwright

    server = Server(data, work / "runs", work / "server.log", cwd, unused_session_ms,
                    release_memory, draw_slots)
    result = dict(sessions=n, machine=_machine(), release_memory=release_memory,
                  arrive_over_s=arrive_over, draw_slots=draw_slots, via=via)
    url = server.class_url if via == "class" else server.url
    try:
        result["rss_mb"] = {"idle": server.rss()}
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # 0. the control: the same page with a line of text, N at once
            controls = []
            if control and not arrive_over:
                result["control"], controls = await _control(browser, server, n, timeout, say)
                await asyncio.sleep(1)
            # 1. one session alone
            cpu0 = server.cpu()
            one = Session(browser, url, timeout)
            await one.open()
            cpu1 = server.cpu()
            await one.tour()
            result["single"] = dict(times=one.times, cpu_first_screen_s=cpu1 - cpu0,
                                    cpu_tour_s=server.cpu() - cpu0)
            result["rss_mb"]["one session"] = server.rss()
            await one.close()
            say(f"[load] one session: first screen {one.times['first screen']:.1f} s, "
                + ", ".join(f"{t} {one.times[t]:.1f} s" for t in TOUR))
            await asyncio.sleep(1)
            # 2. N at once (or arriving one by one over arrive_over seconds)
            sessions = [Session(browser, url, timeout) for _ in range(n)]
            cpu0 = server.cpu()
            if arrive_over > 0:  # each opens and tours in turn: no common "opened" moment
                opened = await asyncio.gather(*(_arrive(s, i * arrive_over / n)
                                                for i, s in enumerate(sessions)),
                                              return_exceptions=True)
                toured, cpu1 = [], None
            else:
                opened, per_page = await _first_screens(sessions, server)
                result["machine_cpu_per_first_screen_s"] = per_page["machine"]
                cpu1 = server.cpu()
                say(f"[load] {n} sessions opened ({sum(o is None for o in opened)} ok)")
                toured = await asyncio.gather(*(s.tour() for s, o in zip(sessions, opened)
                                                if o is None), return_exceptions=True)
            cpu2 = server.cpu()
            result["rss_mb"]["all open"] = server.rss()
            failures = [repr(x) for x in list(opened) + list(toured) if x is not None]
            failures += result.get("control", {}).get("failures", [])
            result["failures"] = failures
            result["first_screen_s"] = _stats(s.times.get("first screen") for s in sessions)
            result["tabs_s"] = {t: _stats(s.times.get(t) for s in sessions) for t in TOUR}
            result["cpu_per_session_s"] = dict(
                first_screen=None if cpu1 is None else (cpu1 - cpu0) / n, tour=(cpu2 - cpu0) / n)
            say(f"[load] {n} sessions toured ({len(failures)} failures)")
            # 3. callback latency while a CPU training job runs
            live = next((s for s, o in zip(sessions, opened) if o is None), None)
            if live is not None and moves:
                await _train(live)
                deadline = time.time() + 60
                while not _children(server.pid) and time.time() < deadline:
                    await asyncio.sleep(0.5)
                training = bool(_children(server.pid))
                lat = await _latency(live, moves)
                result["latency_ms"] = dict(_stats(lat), training=training,
                                            training_running_after=bool(_children(server.pid)),
                                            slider_elements=live.sliders_seen)
                say(f"[load] latency over {len(lat)} slider moves (training: {training})")
            everyone = sessions + [one] + controls
            result["console_errors"] = sorted({e for s in everyone for e in s.errors})
            result["outside_requests"] = sorted({u for s in everyone for u in s.outside})
            # 4. close all; the server drops them after its unused-session lifetime
            await asyncio.gather(*(s.close() for s, o in zip(sessions, opened) if o is None),
                                 return_exceptions=True)
            await browser.close()
        from dashboard.serve import CHECK_SESSIONS_MS
        from dashboard.ticker import RELEASE_DELAY_S

        check = min(CHECK_SESSIONS_MS, server.unused_session_ms)
        time.sleep((server.unused_session_ms + 2 * check) / 1000 + RELEASE_DELAY_S + 3)
        result["rss_mb"]["after close"] = server.rss()
    finally:
        for child in _children(server.pid):  # the training worker, if still running
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
        server.stop()
    # the targets are for a class that opens the app at once
    result["targets"] = _check(result) if not arrive_over else {}
    return result


def _machine() -> str:
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text()
                  .splitlines() if l.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {model}"


def _check(r: dict) -> dict:
    """Each target against its measurement: (value, target, met)."""
    t, out = TARGETS, {}

    def add(name, value, target, ok):
        out[name] = dict(value=value, target=target, met=bool(ok) if value is not None else None)

    add("server CPU per session to first screen (s)", r["cpu_per_session_s"]["first_screen"],
        t["cpu_first_screen_s"], r["cpu_per_session_s"]["first_screen"] <= t["cpu_first_screen_s"])
    add("server CPU per session, whole tour (s)", r["cpu_per_session_s"]["tour"],
        t["cpu_tour_s"], r["cpu_per_session_s"]["tour"] <= t["cpu_tour_s"])
    f = r["first_screen_s"]
    if f["n"]:
        add("first screen median (s)", f["median"], t["first_median_s"],
            f["median"] <= t["first_median_s"])
        add("first screen max (s)", f["max"], t["first_max_s"], f["max"] <= t["first_max_s"])
    for tab in TOUR[:-1]:
        s = r["tabs_s"][tab]
        if s["n"]:
            add(f"{tab} median (s)", s["median"], t["tab_median_s"], s["median"] <= t["tab_median_s"])
            add(f"{tab} max (s)", s["max"], t["tab_max_s"], s["max"] <= t["tab_max_s"])
    lat = r.get("latency_ms", {})
    if lat.get("n"):
        add("callback latency p95 (ms)", lat["p95"], t["latency_p95_ms"],
            lat["p95"] <= t["latency_p95_ms"])
    rss = r["rss_mb"]
    peak = max(v for v in rss.values() if v == v)
    add("server RSS peak (MB)", peak, t["rss_max_mb"], peak <= t["rss_max_mb"])
    if "after close" in rss:
        ratio = rss["after close"] / rss["one session"]
        add("RSS after close / one session", ratio, t["rss_after_ratio"],
            ratio <= t["rss_after_ratio"])
    add("console errors", len(r["console_errors"]), 0, not r["console_errors"])
    add("requests to other hosts", len(r["outside_requests"]), 0, not r["outside_requests"])
    add("sessions that failed", len(r["failures"]), 0, not r["failures"])
    return out


def report(r: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"load test: {r['sessions']} sessions on {r['machine']}, opening "
             + ("/app" if r.get("via") == "app" else "/class (the waiting room)")
             + (" (server started with --release-memory)" if r.get("release_memory") else "")
             + (f" (--draw-slots {r['draw_slots']})" if r.get("draw_slots") is not None else "")
             + (f"; arriving over {r['arrive_over_s']:g} s, each touring as it comes"
                if r.get("arrive_over_s") else ""),
             f"one session alone: first screen {fmt(r['single']['times'].get('first screen'))} s; "
             + ", ".join(f"{t} {fmt(r['single']['times'].get(t))} s" for t in TOUR)
             + f"; server CPU {fmt(r['single']['cpu_first_screen_s'])} s to first screen, "
               f"{fmt(r['single']['cpu_tour_s'])} s whole tour",
             f"{'stage':<22}{'median':>9}{'max':>9}",
             f"{'first screen (s)':<22}{fmt(r['first_screen_s']['median']):>9}"
             f"{fmt(r['first_screen_s']['max']):>9}"]
    for tab in TOUR:
        s = r["tabs_s"][tab]
        lines.append(f"{tab + ' (s)':<22}{fmt(s['median']):>9}{fmt(s['max']):>9}")
    if r.get("machine_cpu_per_first_screen_s") is not None:
        lines.append("machine CPU per first screen (s; every process: browsers, server, this "
                     f"test): {fmt(r['machine_cpu_per_first_screen_s'])}")
    c = r.get("control")
    if c and c["first_screen_s"]["n"]:
        f, cf = r["first_screen_s"], c["first_screen_s"]
        ratio = ("" if not f["n"] else f"; the app's first screens took "
                 f"{f['median'] / cf['median']:.2f}x (median) and {f['max'] / cf['max']:.2f}x "
                 "(max) the control's")
        lines.append(f"control, the same page with a line of text ({cf['n']} at once, "
                     f"/{CONTROL_PAGE.stem}): first screen median {fmt(cf['median'])} s, max "
                     f"{fmt(cf['max'])} s; machine CPU per first screen "
                     f"{fmt(c['cpu_per_first_screen_s']['machine'])} s, server "
                     f"{fmt(c['cpu_per_first_screen_s']['server'])} s" + ratio)
    lat = r.get("latency_ms")
    if lat:
        lines.append(f"callback latency: median {fmt(lat['median'])} ms, p95 {fmt(lat['p95'])} ms "
                     f"over {lat['n']} slider moves (training job running: {lat['training']})")
    lines.append("server RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mb"].items()))
    lines.append("server CPU per session (s): first screen "
                 f"{fmt(r['cpu_per_session_s']['first_screen'])}, whole tour "
                 f"{fmt(r['cpu_per_session_s']['tour'])}")
    lines.append("targets:" if r["targets"] else
                 "targets: not checked (they are for sessions that open the app at once)")
    for name, c in r["targets"].items():
        mark = {True: "met", False: "MISSED", None: "n/a"}[c["met"]]
        value = c["value"] if isinstance(c["value"], int) else fmt(c["value"])
        lines.append(f"  {mark:<7}{name}: {value} (target {c['target']})")
    for key in ("failures", "console_errors", "outside_requests"):
        for item in r[key][:10]:
            lines.append(f"{key}: {item}")
    return "\n".join(lines)


def run(sessions: int = 4, timeout: float = 180.0, moves: int = 20,
        data: str | os.PathLike | None = None, cwd: str | os.PathLike = ROOT,
        unused_session_ms: int | None = None, say=print,
        log: str | os.PathLike | None = None, release_memory: bool = False,
        arrive_over: float = 0.0, draw_slots: int | None = None, via: str = "class",
        control: bool = True) -> dict:
    """Run the load test and return its measurements (see the module docstring). ``data`` is
    the server's data folder (default: the project's); ``cwd`` its working folder, against which
    shipped runs' relative dataset paths (``data/NAME.nc``) are resolved first;
    ``unused_session_ms`` shortens the server's session lifetime (default: dashboard.serve's);
    ``log``: where to keep the server's log (default: removed with the test's folder);
    ``release_memory``: serve as ``python -m dashboard.serve --release-memory`` does;
    ``arrive_over``: spread the sessions' arrivals over this many seconds (0: all at once);
    ``draw_slots``: serve as ``python -m dashboard.serve --draw-slots N`` does (default: its
    default, the machine's cores; 0: every page draws at once, as before dashboard.gate);
    ``via``: the address the sessions open, ``"class"`` (the waiting room a class is given,
    dashboard/waiting.py) or ``"app"`` (the app itself); ``control``: first open N control pages
    (tests/control.py) at once, for comparison (not with ``arrive_over``)."""
    if not 1 <= sessions <= MAX_SESSIONS:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS}, got {sessions}")
    if not 0 <= arrive_over <= MAX_ARRIVE_OVER_S:
        raise ValueError(f"arrive_over must be 0..{MAX_ARRIVE_OVER_S} seconds, got {arrive_over}")
    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, got {via!r}")
    if draw_slots is not None:
        from dashboard.gate import checked_slots

        checked_slots(draw_slots, "draw_slots")
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"the load test needs Chromium at {CHROMIUM} "
                                "(apt-get install chromium)")
    data = Path(data or ROOT / "data").resolve()
    work = Path(tempfile.mkdtemp(prefix="ree-load-"))
    try:
        # in a thread of its own: pytest may already run an event loop here (sync Playwright)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _run(sessions, timeout, moves, data, work,
                                                 Path(cwd), unused_session_ms, say,
                                                 release_memory, arrive_over,
                                                 draw_slots, via, control)).result()
    finally:
        if log is not None and (work / "server.log").exists():
            shutil.copyfile(work / "server.log", log)
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", "-n", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds any one wait may take")
    p.add_argument("--moves", type=int, default=20, help="slider moves for the latency")
    p.add_argument("--data", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument("--log", default=None, metavar="PATH", help="keep the server's log here")
    p.add_argument("--release-memory", action="store_true",
                   help="serve as `python -m dashboard.serve --release-memory` does")
    p.add_argument("--arrive-over", type=float, default=0.0, metavar="S",
                   help="sessions arrive evenly over S seconds, each touring as it comes "
                        "(default 0: all at once, what the targets are for)")
    p.add_argument("--draw-slots", type=int, default=None, metavar="N",
                   help="serve as `python -m dashboard.serve --draw-slots N` does "
                        "(default: its default; 0: every page draws at once)")
    p.add_argument("--via", choices=VIAS, default="class",
                   help="the address sessions open: the class's waiting room (/class, the "
                        "default) or the app itself (/app)")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="leave out the control: N pages of the same page with a line of text, "
                        "opened at once before the app's sessions")
    args = p.parse_args(argv)
    try:
        result = run(args.sessions, args.timeout, args.moves, args.data, log=args.log,
                     release_memory=args.release_memory, arrive_over=args.arrive_over,
                     draw_slots=args.draw_slots, via=args.via, control=args.control)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    broken = result["failures"] or result["console_errors"] or result["outside_requests"]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

"""A real `panel serve` of the dashboard on loopback, driven by Debian's Chromium via Playwright.

The server gets its own project folder (:func:`tests.workspace.shipped_workspace`, plus tiny
datasets for training) and its own run store, so tests never touch the project's files and see
what a clean clone after `make data` shows.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.datasets import generate, save_dataset
from tests.workspace import shipped_workspace

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("REE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dashboard_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    work = tmp_path_factory.mktemp("project")  # the server's working folder
    data = shipped_workspace(work)
    save_dataset(generate("rotation", grid=16, steps=80, sims=8, device="cpu"), data / "tiny.nc")
    save_dataset(generate("rotation", grid=16, steps=80, sims=12, breaking=4.0, device="cpu"),
                 data / "orbits.nc")  # enough orbits for a discovery
    runs = tmp_path_factory.mktemp("runs")
    port = _free_port()
    env = dict(os.environ, REE_DATA=str(data), REE_RUNS=str(runs), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = open(tmp_path_factory.mktemp("log") / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", str(ROOT / "dashboard" / "app.py"),
         "--address", "127.0.0.1", "--port", str(port),
         "--allow-websocket-origin", f"127.0.0.1:{port}"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/app"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"panel serve exited: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("panel serve did not answer within 60 s")
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=20)
    log.close()
    # session clean-up callbacks run in the server only: their failures show in its log
    failed = [line for line in Path(log.name).read_text().splitlines()
              if "callback" in line and "failed with following error" in line]
    assert not failed, "\n".join(failed[:3])


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, dashboard_url):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(dashboard_url)
    page.wait_for_selector("text=Experiment", timeout=60000)
    yield page
    context.close()


@contextlib.contextmanager
def served_in_process(app):
    """``app`` (a function making a session's Panel object) served by Panel in this process,
    with the dashboard's settings (no callback pool); yields its URL."""
    import panel as pn

    assert pn.config.nthreads is None, "the dashboard's server runs no callback pool"
    port = _free_port()
    server = pn.serve({"app": app}, port=port, address="127.0.0.1", show=False, threaded=True,
                      websocket_origin=[f"127.0.0.1:{port}"])
    try:
        yield f"http://127.0.0.1:{port}/app"
    finally:
        server.stop()

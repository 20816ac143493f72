"""The ticker's per-session serial calls: one session's refreshes never overlap, none is lost."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dashboard.ticker import Serial


def test_calls_for_one_key_never_overlap_and_asks_meanwhile_merge_into_one():
    pool = ThreadPoolExecutor(4)
    release = threading.Event()
    lock = threading.Lock()
    running = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0}
    calls = {"a": 0, "b": 0}

    def work(key, block):
        def fn():
            with lock:
                running[key] += 1
                most[key] = max(most[key], running[key])
                calls[key] += 1
            if block:
                release.wait(10)
            with lock:
                running[key] -= 1
        return fn

    start = pool.submit  # runs what it is given on another thread, as the server's pool does
    serial = Serial(lambda key: serial.call(key, work(key, False), start))
    serial.call("a", work("a", True), start)
    time.sleep(0.1)  # "a" is running (blocked)
    for _ in range(5):  # asked again while it runs: merged into one more call
        serial.call("a", work("a", False), start)
    serial.call("b", work("b", False), start)  # another key is not held up
    deadline = time.time() + 5
    while calls["b"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    assert calls == {"a": 1, "b": 1}
    release.set()
    deadline = time.time() + 5
    while calls["a"] < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    pool.shutdown(wait=True)
    assert calls == {"a": 2, "b": 1}, "the asks made while 'a' ran gave exactly one more call"
    assert most == {"a": 1, "b": 1}, "never two calls of one key at once"


def test_a_failing_call_does_not_block_its_key():
    ran = []

    def boom():
        ran.append("boom")
        raise RuntimeError("refresh failed")

    serial = Serial(lambda key: None)
    try:
        serial.call("a", boom, lambda run: run())
    except RuntimeError:
        pass
    serial.call("a", lambda: ran.append("next"), lambda run: run())
    assert ran == ["boom", "next"]

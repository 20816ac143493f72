"""The ticker: memory handed back once a class has gone."""
import time
from concurrent.futures import ThreadPoolExecutor


def test_memory_is_released_once_the_last_session_has_gone(monkeypatch):
    import asyncio

    import dashboard.ticker as ticker_module
    from dashboard.ticker import Ticker

    released = []
    monkeypatch.setattr(ticker_module, "RELEASE_DELAY_S", 0.05)
    monkeypatch.setattr(ticker_module, "release_memory", lambda: released.append(time.time()))

    async def scenario():
        ticker = Ticker(None, 60_000)  # no tick within the test: only sessions come and go
        try:
            a, b, c = object(), object(), object()
            ticker.add(a, lambda: None)
            ticker.add(b, lambda: None)
            ticker.remove(a)
            await asyncio.sleep(0.3)
            assert released == [], "a session is still open"
            ticker.remove(b)
            ticker.add(c, lambda: None)  # someone came back within the delay
            await asyncio.sleep(0.3)
            assert released == []
            ticker.remove(c)
            ticker.remove(c)  # its close and a refresh that found it closed both remove it
            await asyncio.sleep(0.3)
            assert len(released) == 1, "released once the last one had gone"
        finally:
            ticker.timer.stop()

    # in a thread of its own: a browser test run earlier in this process leaves its loop running
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def test_release_memory_hands_freed_small_objects_back_under_the_c_allocator():
    """What ``--release-memory`` relies on: with PYTHONMALLOC=malloc, small objects freed by a
    session are returned to the system by release_memory (a fresh process, RSS from /proc)."""
    import subprocess
    import sys
    import textwrap

    from dashboard.serve import server_env
    from tests.loadtest import ROOT

    script = textwrap.dedent("""
        import os
        from dashboard.ticker import release_memory
        def rss():
            for line in open(f"/proc/{os.getpid()}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        base = rss()
        keep, junk = [], []
        for i in range(400_000):  # interleaved: a few survivors among many freed objects
            (keep if i % 1000 == 0 else junk).append({"i": i, "s": str(i) * 3})
        peak = rss()
        del junk
        before = rss()
        assert release_memory()
        print(base, peak, before, rss())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         env=server_env(True), timeout=120)
    assert out.returncode == 0, out.stderr
    base, peak, before, after = map(float, out.stdout.split())
    grown = peak - base
    assert grown > 50, f"the test allocated too little to see: {grown:.0f} MB"
    assert before - after > 0.7 * grown, (base, peak, before, after)

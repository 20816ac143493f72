"""Serve the dashboard the way a class needs it: ``python -m dashboard.serve`` (``make dashboard``).

One place for the server's settings (the load test uses the same):

* the analyses of every finished run are precomputed into the run folders before the server
  starts taking sessions (:mod:`core.evaluation`; quick when they are already there);
* ``--setup dashboard/warm.py`` imports the plotting stack and builds the shared figures once per
  server process, so no student's session pays for it;
* sessions whose page has not connected, or that were closed, are dropped after
  :data:`UNUSED_SESSION_MS` (checked every :data:`CHECK_SESSIONS_MS`), their objects freed for
  later sessions;
* no callback pool (no ``--num-threads``): a session's page may only be changed on the server's
  loop thread, where Panel then runs its events, and long work goes to worker threads that
  return data (:mod:`dashboard.background`; a pool lost an update now and then, and its tab
  stayed empty);
* while the machine is busy, pages load their first screen a few at a time, in the order they
  came (:mod:`dashboard.gate`; ``--draw-slots``, default the cores);
* ``/class`` is the address to give students: a waiting room that sends each page on to the app
  when its turn comes, and shows how many are ahead meanwhile (:mod:`dashboard.waiting`);
* ``/liveness`` answers once the server is up and warmed (for a health check that makes no
  session);
* loopback by default; ``--address 0.0.0.0 --origin HOST:PORT`` opens it to a class network;
* when the last session has closed the server collects garbage and trims its heap
  (:func:`dashboard.ticker.release_memory`); ``--release-memory`` starts it with Python's
  small objects in the C allocator (:func:`server_env`) so that this hands most of a class's
  memory back to the system, at some server CPU per session (BENCHMARKS.md).

Extra arguments after ``--`` go to ``panel serve`` unchanged (e.g. ``-- --admin``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dashboard.gate import SLOTS_ENV, checked_slots

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
WARM = ROOT / "dashboard" / "warm.py"
# A session is created by the page request and dropped if its websocket has not connected within
# this time; under a class's load the first screen can take a minute, and a session recreated at
# connect time lacks its page's resource paths (its stylesheets then point at cdn.holoviz.org).
UNUSED_SESSION_MS = 120_000
CHECK_SESSIONS_MS = 10_000


def panel_command(address: str = "127.0.0.1", port: int = 5006, origin: str | None = None,
                  procs: int = 1, extra: list[str] | None = None,
                  unused_session_ms: int = UNUSED_SESSION_MS) -> list[str]:
    """The ``panel serve`` command line for ``address:port``."""
    from dashboard.state import UPLOAD_LIMIT_MB

    origins = [origin or f"{'127.0.0.1' if address in ('0.0.0.0', '::') else address}:{port}"]
    if address in ("127.0.0.1", "localhost"):
        origins.append(f"localhost:{port}")
    cmd = [sys.executable, "-m", "panel", "serve", str(APP), "--address", address,
           "--port", str(port), "--num-procs", str(procs), "--setup", str(WARM),
           "--check-unused-sessions", str(min(CHECK_SESSIONS_MS, unused_session_ms)),
           "--unused-session-lifetime", str(unused_session_ms),
           "--liveness", "--plugins", "dashboard.waiting",
           # uploads arrive in chunks; no websocket message may exceed the upload limit
           "--websocket-max-message-size", str(UPLOAD_LIMIT_MB * 2 ** 20)]
    for o in origins:
        cmd += ["--allow-websocket-origin", o]
    return cmd + list(extra or [])


def server_env(release_memory: bool = False, base: dict | None = None,
               draw_slots: int | None = None) -> dict:
    """The server process's environment: ``base`` (default: this process's), with
    ``PYTHONMALLOC=malloc`` when ``release_memory``. Python's own allocator is faster for the
    many small objects a session builds but keeps each 1 MiB arena while one object lives in it,
    so a server that served a class stays near its peak memory (reused by later sessions).
    ``draw_slots``: how many pages load their first screen at once while the machine is busy
    (0: all at once; None: as ``base`` says, else the machine's cores; :mod:`dashboard.gate`)."""
    env = dict(os.environ if base is None else base)
    if release_memory:
        env["PYTHONMALLOC"] = "malloc"
    if draw_slots is not None:
        env[SLOTS_ENV] = str(checked_slots(draw_slots))
    return env


def precompute_shipped() -> None:
    """Every finished run's analyses, in the shipped and the user's run stores."""
    from core.evaluation import precompute
    from core.runs import RunStore
    from dashboard.state import default_roots

    data, runs = default_roots()
    for root in (data / "pretrained", runs):
        if root.is_dir():
            precompute(RunStore(root).runs(), say=lambda line: None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m dashboard.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--origin", default=None, metavar="HOST:PORT",
                   help="the address students type (websocket origin), when not --address")
    p.add_argument("--procs", type=int, default=1, help="server processes (panel --num-procs)")
    p.add_argument("--no-precompute", action="store_true",
                   help="start at once; sessions compute missing analyses on first use")
    p.add_argument("--draw-slots", type=int, default=None, metavar="N",
                   help="while the machine is busy, N pages load their first screen at a "
                        "time, in the order they came (default: the machine's cores; 0: all "
                        "at once)")
    p.add_argument("--release-memory", action="store_true",
                   help="hand a class's memory back to the system when its sessions have closed "
                        "(Python's small objects in the C allocator: some CPU per session)")
    args = p.parse_args(argv)
    if args.draw_slots is not None:
        try:
            checked_slots(args.draw_slots, "--draw-slots")
        except ValueError as err:
            p.error(str(err))
    if not args.no_precompute:
        print("precomputing the runs' analyses (once; quick when they exist) ...", flush=True)
        precompute_shipped()
    cmd = panel_command(args.address, args.port, args.origin, args.procs, extra)
    os.execve(sys.executable, cmd, server_env(args.release_memory, draw_slots=args.draw_slots))
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())

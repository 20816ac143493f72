"""Upload benchmark: a large netCDF with its own names dropped on a real served dashboard.

``python -m tests.uploadbench [--mb 200]``: writes a netCDF of about that size (``U``, ``V`` over
``(member, time, lat, lon)``, float32), starts the server as :mod:`dashboard.serve` does (on a
temporary data folder), opens the page in Chromium, drops the file on the upload control (through
the file input the drop zone feeds) and times it until the preview's summary is on screen: upload,
staging, reading, validation and preview together. The server's RSS is sampled throughout; its
growth is compared with the file size. Loopback only, every wait bounded.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import xarray as xr

from tests.loadtest import CHROMIUM, CHROMIUM_ARGS, ROOT, Server


def make_file(path: Path, mb: float) -> Path:
    h = w = 64
    steps = 310
    members = max(1, round(mb * 2 ** 20 / (steps * 2 * h * w * 4)))
    flow = np.random.default_rng(0).standard_normal((members, steps, 2, h, w), dtype=np.float32)
    xr.Dataset({"U": (("member", "time", "lat", "lon"), flow[:, :, 0]),
                "V": (("member", "time", "lat", "lon"), flow[:, :, 1])}).to_netcdf(
        path, engine="h5netcdf")
    return path


def run(mb: float = 200.0, timeout: float = 300.0) -> dict:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="ree-upload-"))
    try:
        data = work / "data"
        data.mkdir()
        shutil.copytree(ROOT / "data" / "pretrained", data / "pretrained")
        upload = make_file(work / "big_flow.nc", mb)
        size_mb = upload.stat().st_size / 2 ** 20
        server = Server(data, work / "runs", work / "server.log")
        peak, stop = [server.rss()], threading.Event()

        def sample():
            while not stop.is_set():
                peak.append(server.rss())
                time.sleep(0.1)

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.goto(server.url)
                page.wait_for_selector("text=Experiment", timeout=timeout * 1000)
                page.get_by_text("Bring your own data").click()
                page.wait_for_selector(".filepond--root", timeout=60000)
                time.sleep(1.0)
                before = server.rss()
                threading.Thread(target=sample, daemon=True).start()
                started = time.perf_counter()
                page.locator("input.filepond--browser").set_input_files(str(upload))
                page.wait_for_selector("text=sims x 310 steps on 64 x 64",
                                       timeout=timeout * 1000)
                seconds = time.perf_counter() - started
                stop.set()
                browser.close()
        finally:
            stop.set()
            server.stop()
        return dict(file_mb=size_mb, seconds=seconds, rss_before_mb=before,
                    rss_peak_mb=max(peak), growth_over_file=(max(peak) - before) / size_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.uploadbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=200.0, help="file size (default %(default)s)")
    args = p.parse_args(argv)
    r = run(args.mb)
    print(f"upload of a {r['file_mb']:.0f} MB netCDF to its preview: {r['seconds']:.1f} s; "
          f"server RSS {r['rss_before_mb']:.0f} -> peak {r['rss_peak_mb']:.0f} MB "
          f"(growth {r['growth_over_file']:.2f}x the file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

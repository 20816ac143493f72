"""The page's scripts and stylesheets sent gzip-compressed, each compressed once per process.

A page of the dashboard loads 3.4 MB of BokehJS, Panel and their extensions, which ``panel serve``
sends as they are: a class of twenty on one network moves 68 MB before anyone sees a first
screen, 11 s of a 50 Mbit/s classroom network with nothing else on it. Compressed they are a
quarter of that (the four big bundles: 2.72 -> 0.73 MB). Tornado can compress every response as
it goes (``compress_response``), but that is 0.1 s of the server's CPU for each page, a quarter
of what a whole session costs it (BENCHMARKS.md); here each file is compressed the first time it
is asked for, kept in memory, and the same bytes go to every page that asks again.

:func:`serve_compressed` wraps the ``get`` of Bokeh's two static file handlers (``/static/`` and
``/static/extensions/``), once per server process (``dashboard/warm.py``), as
:func:`dashboard.gate.hold_first_screens` wraps Panel's session creation. A request that does
not accept gzip, asks for a byte range, or names a file not worth compressing (not text, under
1 KB, over 32 MB) is answered by the handler as before; a compressed answer keeps the handler's
caching headers, with its own ETag and ``Vary: Accept-Encoding``.
"""
from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path

COMPRESSIBLE = (".js", ".mjs", ".css", ".json", ".map", ".svg", ".html", ".txt")
MIN_BYTES = 1024  # smaller files gain less than the header costs
MAX_BYTES = 32 * 2 ** 20
LEVEL = 6  # zlib's default: 0.1 s for the page's 3 MB, once; level 9 saves 1 % more

_lock = threading.Lock()
_cache: dict[str, tuple[int, int, bytes]] = {}  # path -> (mtime_ns, size, gzip bytes)


def compressed(path: str | os.PathLike) -> bytes | None:
    """The gzip bytes of the file at ``path``, made once for each version of the file (its
    modification time and size); None when it is not worth compressing or cannot be read."""
    path = str(path)
    if not path.endswith(COMPRESSIBLE):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not MIN_BYTES <= stat.st_size <= MAX_BYTES:
        return None
    with _lock:  # one compression of a file, however many pages ask for it at once
        entry = _cache.get(path)
        if entry is None or entry[:2] != (stat.st_mtime_ns, stat.st_size):
            try:
                data = Path(path).read_bytes()
            except OSError:
                return None
            # mtime=0: the same file always gives the same bytes
            entry = (stat.st_mtime_ns, stat.st_size, gzip.compress(data, LEVEL, mtime=0))
            _cache[path] = entry
        return entry[2]


def accepts_gzip(request) -> bool:
    """Whether the request accepts a gzip-encoded answer (with a quality above 0) and is not for
    a byte range."""
    if request.headers.get("Range"):
        return False
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, *params = (p.strip().lower() for p in part.split(";"))
        if coding in ("gzip", "*"):
            quality = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


def _compressing(get):
    async def compressing_get(self, path: str, include_body: bool = True):
        if not accepts_gzip(self.request):
            return await get(self, path, include_body)
        # the first steps of StaticFileHandler.get: which file, and is it inside the root
        self.path = self.parse_url_path(path)
        absolute = self.validate_absolute_path(self.root,
                                               self.get_absolute_path(self.root, self.path))
        if absolute is None:  # the handler has answered already (a redirect), as in its get
            return
        body = compressed(absolute)
        if body is None:
            return await get(self, path, include_body)
        self.absolute_path = absolute
        self.modified = self.get_modified_time()
        self.set_headers()
        # another representation of the file: its own tag, so that no cache mixes the two up
        self.set_header("Etag", self.compute_etag()[:-1] + '-gzip"')
        self.add_header("Vary", "Accept-Encoding")
        if self.should_return_304():
            self.set_status(304)
            return
        self.clear_header("Accept-Ranges")
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Content-Length", len(body))
        if include_body:
            self.write(body)

    compressing_get.compresses = True
    return compressing_get


def handler_classes() -> tuple[type, ...]:
    """Bokeh's handlers of the page's static files: BokehJS's, and the extensions' (Panel's)."""
    from bokeh.server.views.multi_root_static_handler import MultiRootStaticHandler
    from bokeh.server.views.static_handler import StaticHandler

    return StaticHandler, MultiRootStaticHandler


def serve_compressed() -> None:
    """Make this process's static file handlers answer with :func:`compressed` bytes (once)."""
    for cls in handler_classes():
        get = cls.get
        if not getattr(get, "compresses", False):
            cls.get = _compressing(get)


def page_bundles() -> list[Path]:
    """The big scripts every page of the dashboard loads (2.7 of its 3.4 MB), to compress before
    the first session instead of in its request (:func:`prime`)."""
    from bokeh.settings import settings
    from panel.io.resources import DIST_DIR

    js = Path(settings.bokehjs_path()) / "js"
    return [js / "bokeh.min.js", js / "bokeh-widgets.min.js", js / "bokeh-tables.min.js",
            Path(DIST_DIR) / "panel.min.js"]


def prime(paths=None) -> int:
    """Compress ``paths`` (default :func:`page_bundles`) now; the bytes they came to."""
    return sum(len(compressed(p) or b"") for p in (page_bundles() if paths is None else paths))


__all__ = ["COMPRESSIBLE", "LEVEL", "MAX_BYTES", "MIN_BYTES", "accepts_gzip", "compressed",
           "handler_classes", "page_bundles", "prime", "serve_compressed"]

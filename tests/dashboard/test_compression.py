"""The page's static files sent gzip-compressed (dashboard/compression.py), on a real Tornado
server on 127.0.0.1 with Bokeh's own static handlers routed as ``panel serve`` routes them: a
compressed answer decodes to exactly the file, a client that does not take gzip (or asks for a
range) gets the file as before, revalidation works, and each file is compressed once per
version."""
import asyncio
import contextlib
import gzip
import os
from pathlib import Path

import pytest
from bokeh.server.views.multi_root_static_handler import MultiRootStaticHandler
from bokeh.server.views.static_handler import StaticHandler
from bokeh.settings import settings
from panel.io.resources import DIST_DIR
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from dashboard import compression

BOKEH_JS = Path(settings.bokehjs_path()) / "js" / "bokeh.min.js"
PANEL_JS = Path(DIST_DIR) / "panel.min.js"


@pytest.fixture
def compressing():
    """serve_compressed() for the test only: the handlers' own get is put back after it."""
    before = {cls: cls.__dict__.get("get") for cls in compression.handler_classes()}
    compression.serve_compressed()
    yield
    for cls, get in before.items():
        if get is None:
            del cls.get
        else:
            cls.get = get


@contextlib.asynccontextmanager
async def served(extra_root: Path | None = None):
    """Bokeh's handlers as panel serve routes them (extensions first), on a free port."""
    roots = {"panel": str(DIST_DIR)}
    if extra_root is not None:
        roots["test"] = str(extra_root)
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([(r"/static/extensions/(.*)", MultiRootStaticHandler,
                                      {"root": roots}),
                                     (r"/static/(.*)", StaticHandler, {})]))
    server.add_sockets(sockets)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/static"
    finally:
        server.stop()


async def fetch(url: str, method: str = "GET", **headers):
    """The raw answer: nothing decompressed, redirects and errors returned as they are."""
    return await AsyncHTTPClient().fetch(url, method=method, headers=headers,
                                         decompress_response=False, raise_error=False)


def test_a_bundle_comes_compressed_and_decodes_to_exactly_the_file(compressing):
    async def run():
        async with served() as base:
            # versioned, as the page names them: cached by browsers for long
            for url, path in ((f"{base}/js/bokeh.min.js?v=1", BOKEH_JS),
                              (f"{base}/extensions/panel/panel.min.js?v=1", PANEL_JS)):
                first = await fetch(url, **{"Accept-Encoding": "gzip, deflate, br"})
                again = await fetch(url, **{"Accept-Encoding": "gzip"})
                assert first.code == 200 and first.headers["Content-Encoding"] == "gzip"
                assert gzip.decompress(first.body) == path.read_bytes()
                assert int(first.headers["Content-Length"]) == len(first.body)
                assert len(first.body) < 0.4 * path.stat().st_size
                assert "Accept-Encoding" in first.headers.get_list("Vary")
                assert "Accept-Ranges" not in first.headers
                assert first.headers["Content-Type"] == "application/javascript"
                plain = await fetch(url)
                assert first.headers["Cache-Control"] == plain.headers["Cache-Control"]
                assert "Expires" in first.headers
                assert again.body == first.body  # the same bytes, made once
    asyncio.run(run())


def test_a_client_without_gzip_a_zero_quality_or_a_range_gets_the_file_as_before(compressing):
    url_path = "/js/bokeh.min.js"
    whole = BOKEH_JS.read_bytes()

    async def run():
        async with served() as base:
            for headers in ({}, {"Accept-Encoding": "identity"},
                            {"Accept-Encoding": "gzip;q=0, identity"},
                            {"Accept-Encoding": "br"}):
                answer = await fetch(base + url_path, **headers)
                assert answer.code == 200 and answer.body == whole, headers
                assert "Content-Encoding" not in answer.headers
            part = await fetch(base + url_path, **{"Accept-Encoding": "gzip",
                                                   "Range": "bytes=10-19"})
            assert part.code == 206 and part.body == whole[10:20]
            assert "Content-Encoding" not in part.headers
    asyncio.run(run())


def test_revalidation_and_head_use_the_compressed_files_own_tag(compressing):
    async def run():
        async with served() as base:
            url = f"{base}/js/bokeh.min.js"
            zipped = await fetch(url, **{"Accept-Encoding": "gzip"})
            plain = await fetch(url)
            tag = zipped.headers["Etag"]
            assert tag.endswith('-gzip"') and tag != plain.headers["Etag"]
            same = await fetch(url, **{"Accept-Encoding": "gzip", "If-None-Match": tag})
            assert same.code == 304 and same.body == b""
            # the identity tag does not validate the compressed answer, nor the other way
            other = await fetch(url, **{"Accept-Encoding": "gzip",
                                        "If-None-Match": plain.headers["Etag"]})
            assert other.code == 200 and other.body == zipped.body
            head = await fetch(url, method="HEAD", **{"Accept-Encoding": "gzip"})
            assert head.code == 200 and head.body == b""
            assert head.headers["Content-Length"] == zipped.headers["Content-Length"]
    asyncio.run(run())


def test_small_binary_or_missing_files_and_escapes_are_answered_as_before(compressing, tmp_path):
    (tmp_path / "small.js").write_text("let a = 1;")
    (tmp_path / "picture.png").write_bytes(os.urandom(4096))
    (tmp_path / "big.css").write_text("a { color: red; }\n" * 400)

    async def run():
        async with served(tmp_path) as base:
            gz = {"Accept-Encoding": "gzip"}
            small = await fetch(f"{base}/extensions/test/small.js", **gz)
            assert small.code == 200 and small.body == b"let a = 1;"
            assert "Content-Encoding" not in small.headers
            png = await fetch(f"{base}/extensions/test/picture.png", **gz)
            assert png.body == (tmp_path / "picture.png").read_bytes()
            assert "Content-Encoding" not in png.headers
            css = await fetch(f"{base}/extensions/test/big.css", **gz)
            assert css.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(css.body) == (tmp_path / "big.css").read_bytes()
            assert (await fetch(f"{base}/extensions/test/missing.js", **gz)).code == 404
            escape = await fetch(f"{base}/extensions/test/..%2F..%2Fetc%2Fpasswd", **gz)
            assert escape.code in (403, 404)
    asyncio.run(run())


def test_a_changed_file_is_compressed_again_and_an_unchanged_one_once(tmp_path):
    path = tmp_path / "bundle.js"
    path.write_text("var x = 1;\n" * 500)
    first = compression.compressed(path)
    assert compression.compressed(path) is first  # kept, not made again
    path.write_text("var y = 2;\n" * 600)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))
    assert gzip.decompress(compression.compressed(path)) == path.read_bytes()
    assert compression.compressed(tmp_path / "gone.js") is None
    (tmp_path / "folder.js").mkdir()
    assert compression.compressed(tmp_path / "folder.js") is None  # no file to send


def test_serve_compressed_wraps_each_handler_once_and_prime_fills_the_cache(compressing):
    wrapped = [cls.get for cls in compression.handler_classes()]
    compression.serve_compressed()
    assert [cls.get for cls in compression.handler_classes()] == wrapped
    assert all(getattr(get, "compresses", False) for get in wrapped)
    bundles = compression.page_bundles()
    assert all(p.is_file() for p in bundles) and BOKEH_JS in bundles and PANEL_JS in bundles
    size = compression.prime()
    assert 0 < size < 0.4 * sum(p.stat().st_size for p in bundles)

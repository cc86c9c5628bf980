"""The web page's server, as pure logic: which bytes answer which request (lineside/web/server.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from lineside.errors import ConfigError
from lineside.web.server import STATIC, WebServer, load_assets, parse_head
from lineside.web.settings import WebSettings


@pytest.fixture
def server() -> WebServer:
    return WebServer(WebSettings(), log=None)


def _get(server: WebServer, path: str, *headers: str, method: str = "GET") -> tuple[str, dict[str, str], bytes, bool]:
    raw = f"{method} {path} HTTP/1.1\r\nHost: box\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    req = parse_head(raw.encode())
    assert req is not None
    data, keep = server.response(req)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    return lines[0], fields, body, keep


def test_every_file_of_the_page_is_served_with_its_type_and_gzip_when_asked(server):
    for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")):
        status, fields, body, keep = _get(server, path, "Accept-Encoding: gzip, deflate, br")
        assert status == "HTTP/1.1 200 OK"
        assert fields["content-type"].startswith(ctype)
        assert fields["content-encoding"] == "gzip"
        assert int(fields["content-length"]) == len(body)
        assert gzip.decompress(body) == (STATIC / ("index.html" if path == "/" else path[1:])).read_bytes()
        assert "script-src 'self'" in fields["content-security-policy"]
        assert keep
    status, fields, body, _ = _get(server, "/app.js")
    assert "content-encoding" not in fields
    assert body.startswith(b"// Lineside web page")


def test_an_unchanged_file_is_not_sent_again(server):
    _, fields, _, _ = _get(server, "/app.js")
    status, _, body, _ = _get(server, "/app.js", f"If-None-Match: {fields['etag']}")
    assert status == "HTTP/1.1 304 Not Modified"
    assert body == b""


def test_nothing_outside_the_page_and_no_other_method(server):
    assert _get(server, "/../../security/accounts.json")[0] == "HTTP/1.1 404 Not Found"
    assert _get(server, "/app.js?x=1")[0] == "HTTP/1.1 200 OK"
    status, _, _, keep = _get(server, "/", method="POST")
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert not keep
    assert _get(server, "/", method="HEAD")[2] == b""
    assert parse_head(b"GET / HTTP/2.0\r\n\r\n") is None
    assert parse_head(b"garbage\r\n\r\n") is None


def test_a_missing_page_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"no index\.html"):
        load_assets(tmp_path)


def test_the_first_load_is_small():
    assets = load_assets()
    total = sum(len(assets[p].gz) for p in ("/index.html", "/app.js", "/app.css"))
    assert total < 300_000

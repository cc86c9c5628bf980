"""The page's HTTPS server: the files in ``static/`` (gzip-compressed once, at start) and a pass-through
of the page's MQTT-over-WebSockets connection to Mosquitto's loopback WebSocket listener.

Why not Mosquitto's own ``http_dir``: Mosquitto 2.0.11 (Debian 12) serves files without a
Content-Type and without compression, and over TLS its web server offers HTTP/2 by ALPN and then
answers an HTTP/2 request with nothing (seen with curl; browsers negotiate HTTP/2). This server
speaks HTTP/1.1 only and never reads or writes an MQTT packet: the browser logs in to Mosquitto
with its device account, and the broker's ACL decides what it may do, as for any device.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineside.errors import ConfigError
from lineside.web.settings import WebSettings

STATIC = Path(__file__).resolve().parent / "static"
WS_PATH = "/mqtt"
"""Where the page opens its WebSocket; everything else is a file."""
HEAD_LIMIT = 16 * 1024
"""A request head is a few hundred bytes; a longer one is refused (431)."""
HEAD_TIMEOUT_S = 15.0
"""An idle kept-alive connection, or a client that never finishes its request head, is closed after this."""
PIPE_CHUNK = 64 * 1024

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}
SECURITY_HEADERS = (
    # Only the box's own files, its own WebSocket, and page images the box sends as data: URLs.
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n"
)


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, kept in memory whole and gzip-compressed."""

    body: bytes
    gz: bytes
    content_type: str
    etag: str


def load_assets(root: Path = STATIC) -> dict[str, Asset]:
    """Every file under ``root`` by URL path (``/`` is ``index.html``); unknown types are left out."""
    out: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        ctype = TYPES.get(path.suffix)
        if not path.is_file() or ctype is None:
            continue
        body = path.read_bytes()
        asset = Asset(body, gzip.compress(body, 9, mtime=0), ctype, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
        out["/" + path.relative_to(root).as_posix()] = asset
    if "/index.html" not in out:
        raise ConfigError(f"the web page's files are missing: no index.html in {root} (reinstall Lineside)")
    out["/"] = out["/index.html"]
    return out


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """Server TLS with the broker's certificate: TLS 1.2 at least, HTTP/1.1 only."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the web page's TLS certificate {certfile} / key {keyfile}: {exc} (run `lineside certs init`)"
        ) from exc
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed HTTP request head."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes


def parse_head(raw: bytes) -> Request | None:
    """The request line and headers, or None when they are not HTTP/1.x."""
    try:
        lines = raw.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Request(method, target.split("?", 1)[0].split("#", 1)[0], headers, raw)


def _status_page(code: int, reason: str) -> bytes:
    body = f"{code} {reason}\n".encode()
    return (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{SECURITY_HEADERS}Connection: close\r\n\r\n"
    ).encode() + body


class WebServer:
    """Serves the page's files and passes its WebSocket through to Mosquitto, one task per connection."""

    def __init__(self, settings: WebSettings, log: Any, assets: dict[str, Asset] | None = None) -> None:
        self.s = settings
        self.log = log
        self.assets = assets if assets is not None else load_assets()

    def response(self, req: Request) -> tuple[bytes, bool]:
        """The bytes to send for a file request, and whether the connection stays open."""
        keep = req.headers.get("connection", "").lower() != "close"
        if req.method not in ("GET", "HEAD"):
            return _status_page(405, "Method Not Allowed"), False
        asset = self.assets.get(req.path)
        if asset is None:
            return _status_page(404, "Not Found"), keep
        if req.headers.get("if-none-match") == asset.etag:
            head = f"HTTP/1.1 304 Not Modified\r\nETag: {asset.etag}\r\nCache-Control: no-cache\r\n\r\n"
            return head.encode(), keep
        gz = "gzip" in req.headers.get("accept-encoding", "")
        body = asset.gz if gz else asset.body
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {asset.content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{'Content-Encoding: gzip' + chr(13) + chr(10) if gz else ''}Vary: Accept-Encoding\r\n"
            # no-cache: the browser keeps the files but asks each time (a 304 when unchanged), so an upgraded box serves the new page at once.
            f"Cache-Control: no-cache\r\nETag: {asset.etag}\r\n{SECURITY_HEADERS}"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        return head.encode() + (b"" if req.method == "HEAD" else body), keep

    async def on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One browser connection: file requests until it closes, or one WebSocket passed through."""
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
                except asyncio.LimitOverrunError:
                    writer.write(_status_page(431, "Request Header Fields Too Large"))
                    return
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
                    return
                req = parse_head(raw)
                if req is None:
                    writer.write(_status_page(400, "Bad Request"))
                    return
                if req.path == WS_PATH and req.headers.get("upgrade", "").lower() == "websocket":
                    await self.on_websocket(req, reader, writer)
                    return
                data, keep = self.response(req)
                writer.write(data)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def on_websocket(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pass the WebSocket (its upgrade request included) through to Mosquitto, both ways, until either side closes."""
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.s.ws_port)
        except OSError as exc:
            self.log.warning("websocket_refused", reason=f"Mosquitto's WebSocket listener 127.0.0.1:{self.s.ws_port}: {exc}")
            writer.write(_status_page(502, "Bad Gateway"))
            return
        peer = writer.get_extra_info("peername")
        self.log.info("websocket_open", peer=str(peer[0]) if peer else "")
        up_writer.write(req.raw)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(PIPE_CHUNK):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipe(reader, up_writer))
                tg.create_task(pipe(up_reader, writer))
        finally:
            up_writer.close()
            self.log.info("websocket_closed", peer=str(peer[0]) if peer else "")

    async def run(self) -> None:
        """Listen until cancelled."""
        ctx = tls_context(self.s.certfile, self.s.keyfile)
        server = await asyncio.start_server(self.on_connection, self.s.bind, self.s.port, ssl=ctx, limit=HEAD_LIMIT)
        self.log.info("listening", port=self.s.port, bind=self.s.bind, files=len(self.assets) - 1, ws_port=self.s.ws_port)
        async with server:
            await server.serve_forever()

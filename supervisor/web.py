"""The supervisor's HTTP listener (``--metrics-listen``): /metrics, the dashboard and its SSE feed.

A small asyncio server that runs as one task of the arbiter's TaskGroup on its uvloop, so a
shutdown cancels it with everything else (no thread). HTTP/1.1 parsing is h11's (a sans-IO
state machine, as the style asks; no web framework for eight routes); this module is
the glue: one request per connection (``Connection: close``), the head bounded to
:data:`MAX_HEAD` bytes and :data:`HEAD_TIMEOUT` seconds, a body of at most :data:`MAX_BODY`,
at most :data:`MAX_CONNECTIONS` at a time, only GET and POST on the routes below.

Access: with a token (``--metrics-token-file``, required off loopback) every request must carry
``Authorization: Bearer TOKEN``, compared in constant time. Without one (a loopback listener)
the ``Host`` header must name a loopback host, so a web page cannot reach the dashboard by
DNS rebinding. Every POST also needs the page's CSRF token in ``X-CSRF-Token``.

Routes: ``GET /`` (dashboard page), ``GET /static/{app.js,style.css}``, ``GET /metrics``,
``GET /api/status`` (the snapshot as JSON), ``GET /events`` (the same snapshot every second,
as server-sent events), ``POST /api/sessions/{id}/close``, ``POST /api/drain``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import re
import secrets
import time
from importlib import resources
from typing import Protocol

import h11
import orjson

from tunnelpy.common.errors import ConfigError
from tunnelpy.common.logs import get_logger
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.supervisor import metrics

log = get_logger(__name__)

MAX_HEAD = 8 * 1024
MAX_BODY = 1024
HEAD_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 32
SSE_INTERVAL = 1.0
STATIC = {"/static/app.js": "text/javascript", "/static/style.css": "text/css"}
CLOSE_ROUTE = re.compile(r"/api/sessions/([0-9a-f]{1,64})/close")
SECURITY_HEADERS = [
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
]


class Operator(Protocol):
    """What the listener needs of the supervisor (the arbiter provides it)."""

    def status(self) -> cw.StatusReply: ...

    def close_session(self, session_id: str) -> bool: ...

    def drain(self) -> None: ...


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or []


def dashboard_json(reply: cw.StatusReply) -> bytes:
    """What the dashboard reads: the status snapshot, stamped with the supervisor's clock."""
    return orjson.dumps({**dataclasses.asdict(reply), "sampled_at": time.monotonic()})


def _is_loopback_host(host: str) -> bool:
    name = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rpartition(":")[0] or host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class WebListener:
    """Driven by the arbiter (``bind`` before serving, ``serve`` in its TaskGroup) and by clients."""

    def __init__(self, address: tuple[str, int], token: str | None, operator: Operator) -> None:
        self.address = address
        self._token = token.encode() if token else None
        self._operator = operator
        self.csrf = secrets.token_urlsafe(32)
        self.registry = metrics.make_registry(operator.status)
        self._files = resources.files("tunnelpy.supervisor") / "dashboard"
        self._server: asyncio.Server | None = None
        self._connections = 0
        self._group: asyncio.TaskGroup | None = None

    async def bind(self) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, *self.address, limit=MAX_HEAD)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-listen {self.address[0]}:{self.address[1]}: cannot listen ({exc.strerror})"
            ) from exc
        host, port = self._server.sockets[0].getsockname()[:2]
        log.info("metrics.listening", address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    async def serve(self) -> None:
        assert self._server is not None, "bind() first"
        try:
            # The group outlives the server: a cancel closes the listening socket first, then
            # cancels the open connections (SSE streams) and waits for them.
            async with asyncio.TaskGroup() as self._group, self._server:
                await self._server.serve_forever()
        finally:
            self._group = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._group is None:  # not serving yet (or any more)
            writer.transport.abort()
            return
        self._group.create_task(self._connection(reader, writer))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        refused: tuple[int, str, list[tuple[str, str]]] | None = None
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                request, body = await _read_request(conn, reader)
            if self._connections > MAX_CONNECTIONS:
                raise HttpError(503, "too many connections")
            await self._route(conn, writer, request, body)
        except HttpError as exc:
            refused = (exc.status, str(exc), exc.headers)
        except h11.RemoteProtocolError as exc:
            refused = (exc.error_status_hint, "bad request", [])
        except TimeoutError:
            refused = (408, "request timeout", [])
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            self._connections -= 1
            if refused is None:  # served, failed, or cancelled (shutdown): close at once
                writer.close()
        if refused is not None:
            try:
                if await _send_error(conn, writer, *refused):
                    await _linger(reader, writer)
            finally:
                writer.close()

    # -- routing ---------------------------------------------------------------------
    async def _route(self, conn: h11.Connection, writer: asyncio.StreamWriter, req: h11.Request, body: bytes) -> None:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in req.headers}
        self._check_access(headers)
        method, path = req.method.decode(), req.target.decode("latin-1").split("?", 1)[0]
        log.debug("metrics.request", method=method, path=path)
        if path in ("/", "/metrics", "/api/status", "/events", *STATIC):
            if method != "GET":
                raise HttpError(405, "only GET here", [("allow", "GET")])
            if path == "/events":
                await self._events(conn, writer)
            else:
                await _send(conn, writer, 200, *self._get(path))
            return
        match = CLOSE_ROUTE.fullmatch(path)
        if match or path == "/api/drain":
            if method != "POST":
                raise HttpError(405, "only POST here", [("allow", "POST")])
            self._check_csrf(headers)
            if match and not self._operator.close_session(match.group(1)):
                raise HttpError(404, "no such session")
            if not match:
                self._operator.drain()
            await _send(conn, writer, 202, "application/json", b'{"ok":true}')
            return
        raise HttpError(404, "not found")

    def _get(self, path: str) -> tuple[str, bytes]:
        if path == "/metrics":
            return metrics.CONTENT_TYPE, metrics.exposition(self.registry)
        if path == "/api/status":
            return "application/json", dashboard_json(self._operator.status())
        if path == "/":
            page = (self._files / "index.html").read_text(encoding="utf-8").replace("{{csrf_token}}", self.csrf)
            return "text/html; charset=utf-8", page.encode()
        return STATIC[path], (self._files / path.removeprefix("/static/")).read_bytes()

    def _check_access(self, headers: dict[str, str]) -> None:
        if self._token is not None:
            given = headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, b"Bearer " + self._token):
                raise HttpError(401, "a bearer token is required", [("www-authenticate", 'Bearer realm="tunnel-py"')])
        elif not _is_loopback_host(headers.get("host", "")):
            raise HttpError(403, "this listener answers only to a loopback Host (or set --metrics-token-file)")

    def _check_csrf(self, headers: dict[str, str]) -> None:
        given = headers.get("x-csrf-token", "").encode("latin-1")
        if not hmac.compare_digest(given, self.csrf.encode()):
            raise HttpError(403, "missing or wrong X-CSRF-Token (reload the dashboard)")

    async def _events(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        """Server-sent events: the snapshot now and every SSE_INTERVAL until the client leaves."""
        head = [("content-type", "text/event-stream"), ("connection", "close"), *SECURITY_HEADERS]
        await _write(writer, conn.send(h11.Response(status_code=200, headers=head)))
        await _write(writer, conn.send(h11.Data(data=b"retry: 2000\n\n")))
        while not writer.is_closing():
            event = b"event: status\ndata: " + dashboard_json(self._operator.status()) + b"\n\n"
            await _write(writer, conn.send(h11.Data(data=event)))
            await asyncio.sleep(SSE_INTERVAL)


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> tuple[h11.Request, bytes]:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(4096)
            conn.receive_data(data)
            if not data and request is None:
                raise ConnectionResetError("closed before a request")
        elif isinstance(event, h11.Request):
            request = event
            length = dict(event.headers).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > MAX_BODY:
                raise HttpError(413, f"the body may be at most {MAX_BODY} bytes")
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
            if len(body) > MAX_BODY:  # a chunked body names no length up front
                raise HttpError(413, f"the body may be at most {MAX_BODY} bytes")
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, body
        else:  # ConnectionClosed
            raise ConnectionResetError("closed mid-request")


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Before closing on an error, half-close and read what the client still sends (bounded),
    so the kernel does not answer its unread request with a reset that loses our response."""
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            for _ in range(16):
                if not await reader.read(65536):
                    break


async def _write(writer: asyncio.StreamWriter, data: bytes | None) -> None:
    if data:
        writer.write(data)
        async with asyncio.timeout(WRITE_TIMEOUT):  # a client that stops reading is dropped
            await writer.drain()


async def _send(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("connection", "close"),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await _write(writer, conn.send(h11.Response(status_code=status, headers=headers)))
    await _write(writer, conn.send(h11.Data(data=body)))
    await _write(writer, conn.send(h11.EndOfMessage()))


async def _send_error(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str, extra: list[tuple[str, str]]
) -> bool:
    """Answer with ``status`` if the exchange still allows a response (h11 says whether)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return False
    with contextlib.suppress(ConnectionError, TimeoutError, h11.LocalProtocolError):
        await _send(conn, writer, status, "text/plain; charset=utf-8", message.encode() + b"\n", extra)
        return True
    return False

"""The iroh front door: the supervisor's persistent endpoint where receivers ask for sessions.

For each incoming connection: authenticate the receiver by its EndpointId, read one
:class:`~tunnelpy.signaling.session_wire.SessionRequest`, ask the arbiter to open the
session, and answer with the worker's ticket or a rejection the receiver prints. Data never
passes here: the receiver then connects to the worker directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import ProtocolError, VersionMismatch
from tunnelpy.common.logs import get_logger
from tunnelpy.common.private_files import write_private
from tunnelpy.signaling import session_wire as sw
from tunnelpy.worker.forwarding.session import read_exact
from tunnelpy.worker.transport import iroh_transport

if TYPE_CHECKING:
    from tunnelpy.supervisor.arbiter import Opened

log = get_logger(__name__)

HANDSHAKE_TIMEOUT = 30.0  # covers the request read, the worker spawn and the reply
LINGER_TIMEOUT = 5.0

OpenSession = Callable[[str, str], Awaitable["Opened | sw.SessionRejected"]]


async def read_message(stream: iroh_transport.IrohStream) -> sw.Message:
    length = sw.decode_length(await read_exact(stream, sw.LENGTH_SIZE))
    body = await read_exact(stream, length)
    if len(body) != length:
        raise ProtocolError("session message truncated: the peer closed mid-message")
    return sw.decode(body)


class IrohFrontDoor:
    def __init__(self, config: SenderConfig, open_session: OpenSession) -> None:
        self.config = config
        self._open_session = open_session
        self.endpoint: iroh_transport.iroh.Endpoint | None = None
        self.ticket = ""

    async def start(self) -> None:
        secret = None
        if self.config.secret:
            secret = iroh_transport.decode_secret(self.config.secret, "--secret/--secret-file")
        self.endpoint = endpoint = await iroh_transport.bind_endpoint(self.config.net, secret=secret, alpns=[sw.ALPN])
        if not self.config.net.no_relay:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(iroh_transport.CONNECT_TIMEOUT):
                    await endpoint.online()
        self.ticket = iroh_transport.ticket_of(endpoint)
        if self.config.ticket_file:
            write_private(self.config.ticket_file, self.ticket + "\n")
        log.info(
            "supervisor.online",
            endpoint_id=str(endpoint.id()),
            ticket=self.ticket,
            addresses=endpoint.addr().direct_addresses(),
        )

    @property
    def endpoint_id(self) -> str:
        return str(self.endpoint.id()) if self.endpoint is not None else ""

    async def serve(self) -> None:
        assert self.endpoint is not None, "start() first"
        async with asyncio.TaskGroup() as tg:
            while True:
                incoming = await self.endpoint.accept_next()
                if incoming is None:
                    return
                tg.create_task(self._handle(incoming))

    async def close(self) -> None:
        if self.endpoint is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.endpoint.close()

    async def _handle(self, incoming) -> None:  # type: ignore[no-untyped-def]
        conn = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                conn = await (await incoming.accept()).connect()
                receiver_id = str(conn.remote_id())
                stream = iroh_transport.IrohStream(await conn.accept_bi())
                reply = await self._answer(receiver_id, stream)
                await stream.write(sw.encode(reply))
                await stream.finish()
            # Let the receiver read the reply and close first; closing now could drop it.
            with contextlib.suppress(TimeoutError, iroh_transport.iroh.IrohError):
                async with asyncio.timeout(LINGER_TIMEOUT):
                    await conn.closed()
        except (TimeoutError, ProtocolError, iroh_transport.iroh.IrohError) as exc:
            log.warning("front_door.handshake_failed", error=iroh_transport.describe(exc) or "timeout")
        except Exception as exc:  # one bad handshake must not take the front door down
            log.exception("front_door.handshake_crashed", error=str(exc))
        finally:
            if conn is not None:
                conn.close(0, b"")

    async def _answer(self, receiver_id: str, stream) -> sw.SessionAccepted | sw.SessionRejected:  # type: ignore[no-untyped-def]
        try:
            request = await read_message(stream)
        except VersionMismatch as exc:
            return sw.SessionRejected(sw.RejectReason.VERSION_MISMATCH, str(exc))
        if not isinstance(request, sw.SessionRequest):
            raise ProtocolError(f"expected a session request, got {type(request).__name__}")
        keys = self.config.authorized_keys
        if keys is not None and receiver_id not in keys:
            log.warning("front_door.unauthorized", receiver_id=receiver_id)
            return sw.SessionRejected(
                sw.RejectReason.UNAUTHORIZED, f"receiver {receiver_id} is not in the sender's --authorized-keys"
            )
        opened = await self._open_session(receiver_id, request.source)
        if isinstance(opened, sw.SessionRejected):
            return opened
        return sw.SessionAccepted(session_id=opened.session_id, worker_ticket=opened.ready.ticket)

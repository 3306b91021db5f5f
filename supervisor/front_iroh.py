"""The iroh front door: the supervisor's persistent endpoint where receivers ask for sessions.

For each incoming connection: take the receiver's EndpointId from the handshake, answer its
:class:`~tunnelpy.signaling.session_wire.SessionRequest` through
:func:`~tunnelpy.signaling.front_door.answer_request` (the session service authenticates,
admits and spawns), with the worker's ticket or a rejection the receiver prints. Data never
passes here: the receiver then connects to the worker directly.
"""

from __future__ import annotations

import asyncio
import contextlib

from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import ConfigError, ProtocolError
from tunnelpy.common.logs import get_logger
from tunnelpy.common.private_files import write_private
from tunnelpy.signaling import front_door
from tunnelpy.signaling import session_wire as sw
from tunnelpy.supervisor.front import rejection
from tunnelpy.supervisor.sessions import Opened, SessionService
from tunnelpy.worker.transport import iroh_transport

log = get_logger(__name__)

LINGER_TIMEOUT = 5.0


class IrohFrontDoor:
    """A :class:`~tunnelpy.supervisor.front.FrontDoor` on the sender's persistent iroh endpoint;
    driven by the arbiter (start/serve/close) and by each incoming connection."""

    def __init__(self, config: SenderConfig, service: SessionService) -> None:
        self.config = config
        self._service = service
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
            try:
                write_private(self.config.ticket_file, self.ticket + "\n")
            except OSError as exc:
                raise ConfigError(f"--ticket-file {self.config.ticket_file}: cannot write ({exc.strerror})") from exc
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
        await iroh_transport.close_endpoint(self.endpoint)

    async def _handle(self, incoming: iroh_transport.iroh.Incoming) -> None:
        conn = None
        try:
            async with asyncio.timeout(front_door.HANDSHAKE_TIMEOUT):
                conn = await (await incoming.accept()).connect()
                receiver_id = str(conn.remote_id())
                stream = iroh_transport.IrohStream(await conn.accept_bi())
                await front_door.answer_request(stream, lambda request: self._decide(receiver_id, request))
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

    async def _decide(self, receiver_id: str, request: sw.SessionRequest) -> front_door.Reply:
        opened = await self._service.open_session(receiver_id, request.source)
        if not isinstance(opened, Opened):
            return rejection(opened)
        return sw.SessionAccepted(session_id=opened.session_id, worker_ticket=opened.ready.ticket)

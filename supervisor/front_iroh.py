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
import time

from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import ConfigError, ConnectFailed, ConnectionLost, ProtocolError, StreamReset
from tunnelpy.common.logs import get_logger
from tunnelpy.common.private_files import write_private
from tunnelpy.signaling import front_door
from tunnelpy.signaling import session_wire as sw
from tunnelpy.supervisor.front import rejection
from tunnelpy.supervisor.sessions import Opened, SessionService
from tunnelpy.supervisor.throttle import FrontDoorGuard
from tunnelpy.worker.transport import iroh_transport

log = get_logger(__name__)

LINGER_TIMEOUT = 5.0
UNAUTHENTICATED_TIMEOUT = 10.0  # connect to a request read (an unknown identity's whole visit)


def _address_of(incoming: iroh_transport.Incoming) -> str:
    """Where an incoming connection comes from, for per-address limits: its IP without the port
    (which varies per connection), or the relay it came through."""
    addr = incoming.remote_addr()  # "IP:PORT", "[IPv6]:PORT", "relay <url>" or "custom"
    if addr.startswith("relay ") or addr == "custom":
        return addr
    host = addr.rsplit(":", 1)[0]
    return host.strip("[]")


class IrohFrontDoor:
    """A :class:`~tunnelpy.supervisor.front.FrontDoor` on the sender's persistent iroh endpoint;
    driven by the arbiter (start/serve/close) and by each incoming connection."""

    def __init__(self, config: SenderConfig, service: SessionService) -> None:
        self.config = config
        self._service = service
        self._guard = FrontDoorGuard(max_startups=config.max_startups)
        self.endpoint: iroh_transport.Endpoint | None = None
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
            endpoint_id=endpoint.endpoint_id(),
            ticket=self.ticket,
            addresses=endpoint.direct_addresses(),
        )

    @property
    def endpoint_id(self) -> str:
        return self.endpoint.endpoint_id() if self.endpoint is not None else ""

    async def serve(self) -> None:
        assert self.endpoint is not None, "start() first"
        async with asyncio.TaskGroup() as tg:
            while True:
                incoming = await self.endpoint.accept_incoming()
                if incoming is None:
                    return
                address = _address_of(incoming)
                if why := self._guard.incoming(address, time.monotonic()):
                    log.warning("front_door.refused_early", peer_address=address, reason=why)
                    incoming.refuse()
                    continue
                tg.create_task(self._handle(incoming, address))

    async def close(self) -> None:
        await iroh_transport.close_endpoint(self.endpoint)

    async def _handle(self, incoming: iroh_transport.Incoming, address: str) -> None:
        """One receiver's handshake. Until the peer's identity is known and admitted it holds a
        startup place and has UNAUTHENTICATED_TIMEOUT; a handshake that ends before that counts
        as a failure of its address."""
        conn, authenticated, started = None, False, True
        try:
            async with asyncio.timeout(UNAUTHENTICATED_TIMEOUT):
                conn = await iroh_transport.accept_connection(incoming, UNAUTHENTICATED_TIMEOUT)
                receiver_id = conn.remote_id
                if why := self._guard.identified(receiver_id, time.monotonic()):
                    log.warning("front_door.refused_early", receiver_id=receiver_id, reason=why)
                    return
                refused = self._service.authorize(receiver_id)
                stream = await conn.accept_stream()
                # An unknown identity is answered at once, without reading what it sent.
                request = rejection(refused) if refused else await front_door.read_request(stream)
            if isinstance(request, sw.SessionRequest):
                authenticated, started = True, False
                self._guard.finished()  # a known peer that spoke no longer holds a startup place
                async with asyncio.timeout(front_door.HANDSHAKE_TIMEOUT):
                    await front_door.send_reply(stream, await self._decide(receiver_id, request))
            else:
                async with asyncio.timeout(UNAUTHENTICATED_TIMEOUT):
                    await front_door.send_reply(stream, request)
            # Let the receiver read the reply and close first; closing now could drop it.
            with contextlib.suppress(TimeoutError, iroh_transport.NativeError):
                async with asyncio.timeout(LINGER_TIMEOUT):
                    await conn.wait_closed()
        except (TimeoutError, ProtocolError, ConnectFailed, ConnectionLost, StreamReset) as exc:
            log.warning(
                "front_door.handshake_failed", peer_address=address, error=iroh_transport.describe(exc) or "timeout"
            )
        except Exception as exc:  # one bad handshake must not take the front door down
            log.exception("front_door.handshake_crashed", error=str(exc))
        finally:
            if started:
                self._guard.finished()
            if not authenticated:
                self._guard.failed(address, time.monotonic())
            if conn is not None:
                conn.close(0, "")

    async def _decide(self, receiver_id: str, request: sw.SessionRequest) -> front_door.Reply:
        opened = await self._service.open_session(
            receiver_id, request.source, instance=request.instance, replaces=request.replaces
        )
        if not isinstance(opened, Opened):
            return rejection(opened)
        return sw.SessionAccepted(session_id=opened.session_id, worker_ticket=opened.ready.ticket)

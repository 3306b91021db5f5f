"""How a worker meets its one receiver, per transport: prepare an address, then accept.

* :class:`IrohRendezvous` binds a fresh iroh endpoint and accepts only the admitted
  receiver's EndpointId (iroh and iroh-manual modes).
* :class:`IceRendezvous` gathers ICE candidates as the controlled agent with the receiver's
  credentials, creates a fresh self-signed certificate, and after connectivity checks runs
  the QUIC server on the selected pair (custom-manual, later nostr).

Both report the address the receiver needs as a :class:`WorkerReady`, and hand the session
a :class:`~tunnelpy.worker.transport.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.supervisor.worker_wire import WorkerReady
from tunnelpy.worker import iroh_transport, wire
from tunnelpy.worker.transport import Connection

if TYPE_CHECKING:
    from tunnelpy.worker.quic_transport import ServerIdentity

log = get_logger(__name__)

ICE_CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class IcePeer:
    """The receiver's ICE parameters, from its offer."""

    ufrag: str
    pwd: str
    candidates: tuple[str, ...]


class Rendezvous(Protocol):
    async def prepare(self) -> WorkerReady: ...

    async def accept(self) -> Connection: ...

    async def close(self) -> None: ...


def stun_address(net: NetOptions) -> tuple[str, int] | None:
    """The first configured STUN server as (host, port); aioice uses one."""
    if not net.stun_servers:
        return None
    host, _, port = net.stun_servers[0].rpartition(":")
    return host.strip("[]"), int(port)


class IrohRendezvous:
    def __init__(self, net: NetOptions, receiver_id: str) -> None:
        bind = (net.bind[0], 0) if net.bind else None
        self._net = NetOptions(relay_urls=net.relay_urls, no_relay=net.no_relay, bind=bind)
        self._receiver_id = receiver_id
        self._endpoint: iroh_transport.iroh.Endpoint | None = None

    async def prepare(self) -> WorkerReady:
        self._endpoint = endpoint = await iroh_transport.bind_endpoint(self._net, secret=None, alpns=[wire.ALPN])
        return WorkerReady(ticket=iroh_transport.ticket_of(endpoint))

    async def accept(self) -> Connection:
        """Accept connections until the admitted receiver arrives; others are closed."""
        assert self._endpoint is not None, "prepare() first"
        while True:
            incoming = await self._endpoint.accept_next()
            if incoming is None:
                raise TunnelError("worker endpoint closed")
            try:
                conn = await (await incoming.accept()).connect()
            except iroh_transport.iroh.IrohError as exc:
                log.warning("worker.handshake_failed", error=iroh_transport.describe(exc))
                continue
            if str(conn.remote_id()) == self._receiver_id:
                return iroh_transport.IrohConnection(conn)
            log.warning("worker.foreign_peer_refused", peer=str(conn.remote_id())[:16])
            conn.close(1, b"not the admitted receiver")

    async def close(self) -> None:
        if self._endpoint is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._endpoint.close()


class IceRendezvous:
    def __init__(self, net: NetOptions, peer: IcePeer) -> None:
        from tunnelpy.worker.ice import IceAgent

        self._peer = peer
        self._agent = IceAgent(controlling=False, stun_server=stun_address(net), host_filter=net.ice_hosts)
        self._identity: ServerIdentity | None = None

    async def prepare(self) -> WorkerReady:
        from tunnelpy.worker.quic_transport import create_server_identity

        params = await self._agent.gather()
        await self._agent.set_remote(self._peer.ufrag, self._peer.pwd, self._peer.candidates)
        self._identity = identity = create_server_identity()
        return WorkerReady(
            ticket="",
            ice_ufrag=params.ufrag,
            ice_pwd=params.pwd,
            candidates=params.candidates,
            cert_sha256=identity.fingerprint,
        )

    async def accept(self) -> Connection:
        from tunnelpy.worker.quic_transport import connect_quic

        await self._agent.connect(timeout=ICE_CONNECT_TIMEOUT)
        return await connect_quic(self._agent, is_client=False, identity=self._identity)

    async def close(self) -> None:
        await self._agent.close()

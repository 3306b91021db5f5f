"""How a worker meets its one receiver, per transport: prepare an address, then accept.

* :class:`IrohRendezvous` binds a fresh iroh endpoint and accepts only the admitted
  receiver's EndpointId (iroh and iroh-manual modes).
* :class:`IceRendezvous` gathers ICE candidates as the controlled agent with the receiver's
  credentials, creates a fresh self-signed certificate, and after connectivity checks runs
  the QUIC server on the selected pair (custom-manual, nostr).

Both report the address the receiver needs as a :class:`WorkerReady`, and hand the session
a :class:`~tunnelpy.worker.transport.interface.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import ConfigError, ConnectFailed, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker.contract import ACCEPT_TIMEOUT, RendezvousSpec, Transport, WorkerReady
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.transport import iroh_transport
from tunnelpy.worker.transport.ice import ICE_CONNECT_TIMEOUT as ICE_CONNECT_TIMEOUT  # the receivers' too
from tunnelpy.worker.transport.ice import stun_address
from tunnelpy.worker.transport.interface import Connection
from tunnelpy.worker.transport.stun_probe import public_addresses

if TYPE_CHECKING:
    from tunnelpy.worker.transport.quic.connect import ServerIdentity

log = get_logger(__name__)

PUNCH_ALPN = b"tunnel-py/punch"
RELAY_WAIT = 5.0  # seconds a worker waits for its home relay before it reports a ticket without it


class Rendezvous(Protocol):
    async def prepare(self) -> WorkerReady: ...

    async def accept(self) -> Connection: ...

    async def close(self) -> None: ...


async def iroh_direct_addresses(endpoint: iroh_transport.Endpoint, net: NetOptions) -> list[str]:
    """The endpoint's direct addresses, plus the STUN-seen public IP with its bound port."""
    addresses = list(endpoint.direct_addresses())
    if net.stun_servers:
        ports = [int(s.rpartition(":")[2]) for s in endpoint.bound_sockets() if not s.startswith("[")]
        if ports:
            public = await public_addresses(net.stun_servers, ports[0])
            addresses += [a for a in public if a not in addresses]
    return addresses


class IrohRendezvous:
    """``punch``: the receiver's addresses (iroh-manual); dialling them once opens our NAT to it."""

    def __init__(self, net: NetOptions, receiver_id: str, punch: tuple[str, ...] = ()) -> None:
        # The sender's network choices, on a fresh port (the sender's own port is its front door's).
        self._net = dataclasses.replace(
            net,
            bind=(net.bind[0], 0) if net.bind else None,
            bind6=(net.bind6[0], 0) if net.bind6 else None,
        )
        self._receiver_id = receiver_id
        self._punch = punch
        self._endpoint: iroh_transport.Endpoint | None = None

    async def prepare(self) -> WorkerReady:
        self._endpoint = endpoint = await iroh_transport.bind_endpoint(self._net, secret=None, alpns=[wire.ALPN])
        if not self._net.no_relay:
            # The ticket must name our home relay: the receiver's way in when no direct path works.
            await iroh_transport.wait_online(endpoint, timeout=RELAY_WAIT)
        if not self._net.stun_servers:
            return WorkerReady(ticket=iroh_transport.ticket_of(endpoint))
        return WorkerReady(ticket=iroh_transport.ticket_of(endpoint, await iroh_direct_addresses(endpoint, self._net)))

    async def accept(self) -> Connection:
        assert self._endpoint is not None, "prepare() first"
        if not self._punch:
            return await self._accept_receiver(self._endpoint)
        async with asyncio.TaskGroup() as tg:
            punching = tg.create_task(self._punch_towards_receiver(self._endpoint))
            conn = await self._accept_receiver(self._endpoint)
            punching.cancel()
        return conn

    async def _punch_towards_receiver(self, endpoint: iroh_transport.Endpoint) -> None:
        """Like tunnel-rs's connect/accept race: our outgoing packets let the receiver's in.

        The receiver refuses this handshake (wrong ALPN); only the packets matter.
        """
        with contextlib.suppress(TimeoutError, ConfigError, ConnectFailed):
            peer = iroh_transport.peer_addr(self._receiver_id, addresses=list(self._punch))
            async with asyncio.timeout(5):
                (await iroh_transport.connect(endpoint, peer, PUNCH_ALPN, timeout=5)).close(0, "")

    async def _accept_receiver(self, endpoint: iroh_transport.Endpoint) -> Connection:
        """Accept connections until the admitted receiver arrives; others are closed."""
        while True:
            incoming = await endpoint.accept_incoming()
            if incoming is None:
                raise TunnelError("worker endpoint closed")
            try:
                conn = await iroh_transport.accept_connection(incoming)
            except ConnectFailed as exc:
                log.warning("worker.handshake_failed", error=str(exc))
                continue
            if conn.remote_id == self._receiver_id:
                return conn
            log.warning("worker.foreign_peer_refused", peer=conn.remote_id[:16])
            conn.close(1, "not the admitted receiver")

    async def close(self) -> None:
        await iroh_transport.close_endpoint(self._endpoint)


class IceRendezvous:
    """``accept_timeout``: how long the checks may take to succeed, from the spec (a copy-paste
    receiver starts its checks once a person pasted our answer; a nostr receiver at once)."""

    def __init__(self, net: NetOptions, peer: IceParameters, accept_timeout: float = ACCEPT_TIMEOUT) -> None:
        from tunnelpy.worker.transport.ice import IceAgent

        self._peer = peer
        self._accept_timeout = accept_timeout
        self._agent = IceAgent(
            controlling=False, stun_server=stun_address(net), host_filter=net.ice_hosts, turn=net.turn
        )
        self._identity: ServerIdentity | None = None

    async def prepare(self) -> WorkerReady:
        from tunnelpy.worker.transport.quic.connect import create_server_identity

        params = await self._agent.gather()
        await self._agent.set_remote(self._peer)
        self._identity = identity = create_server_identity()
        return WorkerReady(ice=params, cert_sha256=identity.fingerprint)

    async def accept(self) -> Connection:
        from tunnelpy.worker.transport.quic.connect import connect_quic

        await self._agent.connect(timeout=self._accept_timeout)
        return await connect_quic(self._agent, is_client=False, identity=self._identity)

    async def restart(self, conn: Connection, peer: IceParameters, answer: Callable[[IceParameters], None]) -> None:
        """ICE restart under ``conn`` with the receiver's new parameters; ``answer`` gets ours
        as soon as they are gathered. Raises (the connection stays as it was) on failure."""
        from tunnelpy.worker.transport.ice_restart import restart_controlled
        from tunnelpy.worker.transport.quic.glue import QuicTransportConnection

        if not isinstance(conn, QuicTransportConnection):
            raise ConnectFailed("this session's connection does not run on ICE")
        self._agent = await restart_controlled(self._agent, conn, peer, answer, "the receiver asked for an ICE restart")

    async def close(self) -> None:
        await self._agent.close()


def make_rendezvous(
    spec: RendezvousSpec, net: NetOptions, receiver_id: str, accept_timeout: float = ACCEPT_TIMEOUT
) -> Rendezvous:
    if spec.transport is Transport.ICE:
        assert spec.ice_peer is not None, "an ICE worker needs the receiver's ICE parameters"
        return IceRendezvous(net, spec.ice_peer, accept_timeout)
    return IrohRendezvous(net, receiver_id, spec.punch)

"""Receivers of the copy-paste modes: print an OFFER, read the sender's ANSWER, connect, serve.

* custom-manual: ICE as the controlling agent, then QUIC as client pinning the sender's
  certificate SHA-256 from the answer.
* iroh-manual: an offline iroh endpoint (relays off); the offer carries its EndpointId and
  direct addresses (plus the STUN-seen public address when STUN is on).

Both then serve ``--listen`` with the same data plane as iroh mode (:func:`serve_tunnel`).
"""

from __future__ import annotations

import dataclasses

from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import ExitCode
from tunnelpy.common.logs import get_logger
from tunnelpy.common.modes import Mode
from tunnelpy.signaling import manual_blocks as mb
from tunnelpy.signaling.paste import emit_block, read_pasted
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.receiver.tunnel import LocalSide, run_until_stopped
from tunnelpy.worker.rendezvous import ICE_CONNECT_TIMEOUT, iroh_direct_addresses, stun_address
from tunnelpy.worker.transport import iroh_transport
from tunnelpy.worker.transport.interface import Connection

log = get_logger(__name__)


async def run_manual_receiver(cfg: ReceiverConfig) -> ExitCode:
    session = _custom_manual if cfg.mode == Mode.CUSTOM_MANUAL else _iroh_manual
    return await run_until_stopped(cfg, lambda local: session(cfg, local))  # one pasted exchange: no reconnect


async def _custom_manual(cfg: ReceiverConfig, local: LocalSide) -> None:
    from tunnelpy.worker.transport.ice import IceAgent
    from tunnelpy.worker.transport.quic.connect import connect_quic

    agent = IceAgent(
        controlling=True, stun_server=stun_address(cfg.net), host_filter=cfg.net.ice_hosts, turn=cfg.net.turn
    )
    async with agent:
        params = await agent.gather()
        emit_block(
            mb.IceOffer(params, str(cfg.source)),
            "Give this OFFER block to the sender (tunnel-py sender custom-manual):",
        )
        answer = await read_pasted(mb.BlockKind.ICE_ANSWER)
        assert isinstance(answer, mb.IceAnswer)
        await agent.set_remote(answer.ice)
        pair = await agent.connect(timeout=ICE_CONNECT_TIMEOUT)
        conn = await connect_quic(agent, is_client=True, cert_fingerprint=answer.cert_sha256)
        log.info("receiver.connected", transport="ice", pair=str(pair))
        await _serve(conn, local)


async def _iroh_manual(cfg: ReceiverConfig, local: LocalSide) -> None:
    net = dataclasses.replace(cfg.net, no_relay=True, relay_urls=(), relay_only=False, dns_server=None)
    endpoint = await iroh_transport.bind_endpoint(net, secret=None, alpns=[])
    try:
        addresses = await iroh_direct_addresses(endpoint, net)
        emit_block(
            mb.IrohOffer(endpoint.endpoint_id(), tuple(addresses), str(cfg.source)),
            "Give this OFFER block to the sender (tunnel-py sender iroh-manual):",
        )
        answer = await read_pasted(mb.BlockKind.IROH_ANSWER)
        assert isinstance(answer, mb.IrohAnswer)
        peer = iroh_transport.peer_addr(answer.endpoint_id, what="answer", addresses=list(answer.direct_addresses))
        conn = await iroh_transport.connect(endpoint, peer, wire.ALPN, timeout=ICE_CONNECT_TIMEOUT)
        log.info("receiver.connected", transport="iroh", peer=answer.endpoint_id[:16])
        await _serve(conn, local)
    finally:
        await iroh_transport.close_endpoint(endpoint)


async def _serve(conn: Connection, local: LocalSide) -> None:
    try:
        await local.serve(conn)
    finally:
        conn.close(0, "receiver done")

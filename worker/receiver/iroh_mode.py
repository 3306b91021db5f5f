"""The iroh-mode receiver: asks the sender for a session, then serves the tunnel on a local address.

Lifecycle: request a session at the sender's front door (a rejection becomes its exit code),
connect to the session's worker, listen on ``--listen``
(:func:`~tunnelpy.worker.receiver.tunnel.serve_tunnel`), and run until the worker connection
ends or a signal arrives.
"""

from __future__ import annotations

import asyncio

from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import ConnectFailed, ConnectionLost, ExitCode
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import front_door
from tunnelpy.signaling import session_wire as sw
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.receiver.tunnel import LocalSide, run_until_stopped
from tunnelpy.worker.transport import iroh_transport

log = get_logger(__name__)


async def request_session(
    endpoint: iroh_transport.Endpoint, node_id: str, source: str, *, replaces: str = ""
) -> sw.SessionAccepted:
    """Ask the sender's front door for a session; raises SessionRefused with its reason."""
    front = await iroh_transport.connect(endpoint, iroh_transport.peer_addr(node_id), sw.ALPN)
    timeout = front_door.HANDSHAKE_TIMEOUT
    try:
        async with asyncio.timeout(timeout):
            return await front_door.request_session(await front.open_stream(), source, replaces=replaces)
    except TimeoutError as exc:
        raise ConnectFailed(f"the sender did not answer the session request within {timeout:.0f} s") from exc
    except ConnectionLost as exc:
        raise ConnectFailed(f"the sender closed the connection during the session request ({exc})") from exc
    finally:
        front.close(0, "done")


async def run_receiver(cfg: ReceiverConfig) -> ExitCode:
    """iroh mode: ask the sender's front door, connect to the session's worker, serve; after a
    loss, ask again (same endpoint and identity) unless --no-reconnect."""
    log.debug("receiver.starting", source=str(cfg.source))
    secret = iroh_transport.decode_secret(cfg.secret, "--secret-file") if cfg.secret else None
    endpoint = await iroh_transport.bind_endpoint(cfg.net, secret=secret, alpns=[])
    previous: list[str] = []  # the session a reconnect replaces at the sender (a ghost, if it lingers)

    async def session(local: LocalSide) -> None:
        accepted = await request_session(
            endpoint, cfg.node_id or "", str(cfg.source), replaces=previous[-1] if previous else ""
        )
        previous.append(accepted.session_id)
        log.info("receiver.session_accepted", session_id=accepted.session_id)
        conn = await iroh_transport.connect(endpoint, iroh_transport.peer_addr(accepted.worker_ticket), wire.ALPN)
        try:
            await local.serve(conn)
        finally:
            conn.close(0, "receiver done")

    try:
        return await run_until_stopped(cfg, session, reconnect=not cfg.no_reconnect)
    finally:
        await iroh_transport.close_endpoint(endpoint)

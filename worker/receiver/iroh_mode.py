"""The iroh-mode receiver: asks the sender for a session, then serves the tunnel on a local address.

Lifecycle: request a session at the sender's front door (a rejection becomes its exit code),
connect to the session's worker, listen on ``--listen``
(:func:`~tunnelpy.worker.receiver.tunnel.serve_tunnel`), and run until the worker connection
ends or a signal arrives. With several senders (``--node-id`` repeated) each attempt asks them
in turn (:class:`~tunnelpy.worker.receiver.senders.SenderRotation`), starting after the one
that carried the last session, so a lost session comes back through the next live sender.
"""

from __future__ import annotations

import asyncio

from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import ConfigError, ConnectFailed, ConnectionLost, ExitCode, StreamReset, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import front_door
from tunnelpy.signaling import session_wire as sw
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.receiver.senders import SenderRotation, round_error
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
    except (ConnectionLost, StreamReset) as exc:
        raise ConnectFailed(f"the sender closed the connection during the session request ({exc})") from exc
    finally:
        front.close(0, "done")


async def run_receiver(cfg: ReceiverConfig) -> ExitCode:
    """iroh mode: ask a sender's front door, connect to the session's worker, serve; after a
    loss, ask again (same endpoint and identity, the next sender first) unless --no-reconnect."""
    log.debug("receiver.starting", source=str(cfg.source), senders=len(cfg.node_ids))
    for node_id in cfg.node_ids:
        iroh_transport.peer_addr(node_id)  # a malformed id or ticket is exit 2 now, not after a loss
    senders = SenderRotation(cfg.node_ids, cfg.node_order)
    secret = iroh_transport.decode_secret(cfg.secret, "--secret-file") if cfg.secret else None
    endpoint = await iroh_transport.bind_endpoint(cfg.net, secret=secret, alpns=[])
    # The session each sender last gave us: a reconnect to it replaces that one (a ghost, if it lingers).
    previous: dict[str, str] = {}

    async def connect_through(node_id: str) -> iroh_transport.IrohConnection:
        accepted = await request_session(endpoint, node_id, str(cfg.source), replaces=previous.get(node_id, ""))
        previous[node_id] = accepted.session_id
        log.info("receiver.session_accepted", session_id=accepted.session_id, sender=_short(node_id))
        return await iroh_transport.connect(endpoint, iroh_transport.peer_addr(accepted.worker_ticket), wire.ALPN)

    async def session(local: LocalSide) -> None:
        errors: list[TunnelError] = []
        for node_id in senders.round():
            try:
                conn = await connect_through(node_id)
            except ConfigError:
                raise
            except TunnelError as exc:  # refused, unreachable, lost during the request: try the next one
                errors.append(exc)
                if len(senders.order) > 1:
                    why = " ".join(str(exc).split())
                    log.warning("receiver.sender_failed", sender=_short(node_id), reason=why, exit_code=exc.exit_code)
                continue
            senders.connected(node_id)
            try:
                await local.serve(conn)  # ends by raising ConnectionLost: the caller's loop decides what next
            finally:
                conn.close(0, "receiver done")
            return
        raise round_error(errors)

    try:
        return await run_until_stopped(cfg, session, reconnect=not cfg.no_reconnect)
    finally:
        await iroh_transport.close_endpoint(endpoint)


def _short(node_id: str) -> str:
    """A sender as the log names it: its EndpointId, short (a ticket carries addresses too)."""
    endpoint_id, _ = iroh_transport.ticket_parts(iroh_transport.peer_addr(node_id))
    return endpoint_id[:10]

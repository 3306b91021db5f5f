"""ICE restart under a live QUIC connection (RFC 8445 section 9): a fresh agent with new
credentials gathers, checks and selects a pair, and the connection moves onto it.

aioice has no restart of its own, so a restart is a new :class:`IceAgent` (same role and
options, new ufrag/pwd, new sockets); the QUIC connection is kept
(:meth:`~tunnelpy.worker.transport.quic.glue.QuicTransportConnection.switch_path`) and the old
agent is closed once the connection has left it. The signaling of the new parameters is the
caller's (nostr mode: :mod:`tunnelpy.signaling.nostr_restart`).

Roles stay: the receiver is controlling (it selects and sends first), the worker controlled
(it follows the pair the receiver's first QUIC packet arrives on, as at the start).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tunnelpy.common.errors import ConnectFailed
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker.transport.ice import IceAgent, IcePath, SelectedPair

if TYPE_CHECKING:
    from tunnelpy.worker.transport.quic.glue import QuicTransportConnection

log = get_logger(__name__)

RESTART_CONNECT_TIMEOUT = 15.0  # the new checks, once both sides have the other's parameters


async def restart_controlling(
    old: IceAgent,
    conn: QuicTransportConnection,
    ask: Callable[[IceParameters], Awaitable[IceParameters]],
    reason: str,
) -> IceAgent:
    """The receiver's restart: gather, ``ask`` the peer (our parameters -> its), check,
    move ``conn``. Returns the new agent (``old`` is closed); raises on failure (``conn`` kept)."""
    started = time.monotonic()
    agent = old.fresh()
    try:
        params = await agent.gather()
        peer = await ask(params)
        await agent.set_remote(peer)
        await agent.connect(timeout=RESTART_CONNECT_TIMEOUT)
        path = agent.path()
    except BaseException:
        await agent.close()
        raise
    previous = conn.path.pair
    conn.switch_path(path)
    return await _moved(old, agent, path, previous, reason, time.monotonic() - started)


async def restart_controlled(
    old: IceAgent,
    conn: QuicTransportConnection,
    peer: IceParameters,
    answer: Callable[[IceParameters], None],
    reason: str,
) -> IceAgent:
    """The worker's restart: gather with the peer's new parameters, ``answer`` ours, check,
    and move ``conn`` to the pair the peer's first QUIC packet arrives on."""
    started = time.monotonic()
    agent = old.fresh()
    try:
        params = await agent.gather()
        await agent.set_remote(peer)
        answer(params)
        previous = conn.path.pair
        async with asyncio.TaskGroup() as tg:
            # The receiver's pair is validated before our own checks end (aioice's controlled
            # connect() takes ~0.5 s more): move as soon as its first QUIC packet arrives on it.
            tg.create_task(agent.connect(timeout=RESTART_CONNECT_TIMEOUT))
            path = await tg.create_task(_follow(agent))
            conn.switch_path(path)
            took = time.monotonic() - started
        return await _moved(old, agent, path, previous, reason, took)
    except BaseExceptionGroup as group:
        await agent.close()
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
    except BaseException:
        await agent.close()
        raise


async def _follow(agent: IceAgent) -> IcePath:
    try:
        async with asyncio.timeout(RESTART_CONNECT_TIMEOUT):
            return await agent.follow_peer()
    except TimeoutError:
        raise ConnectFailed(
            f"no QUIC packet from the receiver on the restarted ICE pairs within {RESTART_CONNECT_TIMEOUT:g} s"
        ) from None


async def _moved(
    old: IceAgent, agent: IceAgent, path: IcePath, previous: SelectedPair, reason: str, took: float
) -> IceAgent:
    """The connection runs on ``path``: close the old agent, log the restart, return the new agent."""
    await old.close()
    pair = path.pair
    log.info(
        "session.ice_restart",
        reason=reason,
        took_s=round(took, 3),
        route=pair.route,
        path=pair.path,
        pair=str(pair),
        old_pair=str(previous),
    )
    return agent

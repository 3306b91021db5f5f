"""The nostr receiver's ICE restart: a lost path pauses the live connection instead of ending it.

When the connection's ICE path is lost (the host was re-addressed, or ICE consent expired),
:class:`IceRestarter` keeps the QUIC connection and its streams, gathers anew with fresh ICE
credentials, asks the sender through Nostr to restart the same session
(:class:`~tunnelpy.signaling.nostr_wire.IceRestart`, republished every
:data:`~tunnelpy.signaling.nostr_restart.RESTART_REPUBLISH` s), and on the sender's
:class:`~tunnelpy.signaling.nostr_wire.IceRestarted` runs the checks and moves the connection to
the new pair. No answer within :data:`~tunnelpy.signaling.nostr_restart.RESTART_ANSWER_WAIT` s
(an older sender, a lost worker) or failed checks end the connection with the original reason,
and the receiver re-signals a whole new session as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tunnelpy.common.errors import ConnectFailed, ProtocolError, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import nostr_restart
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.nostr_signal import NostrSignal, RelayError
from tunnelpy.worker.transport.ice import IceAgent
from tunnelpy.worker.transport.ice_restart import restart_controlling

if TYPE_CHECKING:  # the QUIC stack is imported late (nostr_mode), not with this module
    from tunnelpy.worker.transport.quic.glue import QuicTransportConnection

log = get_logger(__name__)

INBOX = 64


class IceRestarter:
    """Owns the session's current ICE agent once connected; driven by the connection's
    ``on_path_lost`` (set by :meth:`watch`). Its one restart task runs in ``tg``."""

    def __init__(
        self, tg: asyncio.TaskGroup, keys: Any, relays: Sequence[str], sender: str, request_id: str, agent: IceAgent
    ) -> None:
        self._tg, self._keys, self._relays, self._sender, self._request_id = tg, keys, relays, sender, request_id
        self.agent = agent
        self.generation = 0
        self._task: asyncio.Task[None] | None = None

    def watch(self, conn: QuicTransportConnection) -> None:
        conn.on_path_lost = lambda reason: self._lost(conn, reason)

    def _lost(self, conn: QuicTransportConnection, reason: str) -> bool:
        if self._task is not None and not self._task.done():
            return True  # already restarting (the new path failed while it was being set up)
        log.warning("receiver.path_lost", reason=reason, restart="ice")
        self._task = self._tg.create_task(self._restart(conn, reason))
        return True

    async def _restart(self, conn: QuicTransportConnection, reason: str) -> None:
        self.generation += 1
        try:
            self.agent = await restart_controlling(self.agent, conn, self._ask, reason)
        except (TunnelError, RelayError, OSError, TimeoutError) as exc:
            log.warning("receiver.ice_restart_failed", generation=self.generation, error=str(exc))
            conn.path_failed(f"{reason}; the ICE restart failed: {exc}")

    async def _ask(self, params: IceParameters) -> IceParameters:
        """Publish our restart until the sender answers; its new parameters."""
        generation = self.generation
        inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(INBOX)
        try:
            async with asyncio.timeout(nostr_restart.RESTART_ANSWER_WAIT):
                async with NostrSignal(self._keys, self._relays) as signal, asyncio.TaskGroup() as tg:
                    pumping = tg.create_task(_pump(signal, inbox))
                    publishing = tg.create_task(self._publish(signal, params, generation))
                    while True:
                        author, plaintext = await inbox.get()
                        answer = self._answer(author, plaintext, generation)
                        if answer is not None:
                            pumping.cancel()
                            publishing.cancel()
                            return answer.ice
        except TimeoutError:
            raise ConnectFailed(
                f"the sender did not answer the ICE restart within {nostr_restart.RESTART_ANSWER_WAIT:g} s"
            ) from None
        except BaseExceptionGroup as group:
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise leaf from None
        raise AssertionError("unreachable")

    async def _publish(self, signal: NostrSignal, params: IceParameters, generation: int) -> None:
        while True:
            restart = wire.IceRestart.create(self._request_id, generation, params, int(time.time()))
            try:
                published = await signal.publish(self._sender, wire.encode(restart))
                log.info("receiver.ice_restart_published", generation=generation, relays=published.relays)
            except RelayError as exc:
                log.warning("receiver.ice_restart_not_published", error=str(exc))
            await asyncio.sleep(nostr_restart.RESTART_REPUBLISH)

    def _answer(self, author: str, plaintext: str, generation: int) -> wire.IceRestarted | None:
        try:
            msg = wire.decode(plaintext)
        except ProtocolError as exc:  # VersionMismatch too: an answer of ours decodes
            log.debug("receiver.undecodable", author=author[:16], error=str(exc))
            return None
        decision = nostr_restart.check_restarted(msg, author, self._sender, self._request_id, generation)
        if isinstance(decision, wire.Ignore):
            log.debug("receiver.ignored", author=author[:16], why=decision.reason)
            return None
        assert isinstance(msg, wire.IceRestarted)
        return msg

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.agent.close()


async def _pump(signal: NostrSignal, inbox: asyncio.Queue[tuple[str, str]]) -> None:
    async for item in signal.receive():
        if inbox.full():
            inbox.get_nowait()
        inbox.put_nowait(item)

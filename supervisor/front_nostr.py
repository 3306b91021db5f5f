"""The nostr front door: session requests arrive as encrypted Nostr events through relays.

The sender's supervisor subscribes (:class:`~tunnelpy.signaling.nostr_signal.NostrSignal`) to
events addressed to its npub on every ``--relay``, and for each :class:`TunnelRequest` that
passes the :class:`~tunnelpy.signaling.nostr_wire.RequestGate` (an author in ``--peer-npub``,
fresh, not seen before) asks the session service for a session, as the other front doors do,
with the receiver's ICE parameters. The reply is a :class:`TunnelOffer` (the worker's ICE
parameters and certificate pin) or a :class:`TunnelReject` whose reason the receiver turns into
its exit code.

Why unknown authors get no reply at all: anyone can address an event to our npub, and a reply
would confirm that this sender exists and make it sign and publish one event per stranger's
event. So a receiver whose npub is not listed hears nothing and gives up after its
``--max-wait`` (exit 10). A listed receiver that speaks another protocol version does get a
:class:`TunnelReject` (version mismatch, exit 6) when its request carries a session id.

Each accepted request is handled in its own task (a worker start takes a while), at most
:data:`MAX_IN_FLIGHT` at once; the receive loop never waits for one. A request that finds
every slot busy is dropped before the gate records it, so the receiver's republication is
taken later. A receiver that keeps asking for a session we already answered (our reply got
lost) gets the same reply again, at most once per ``--republish-interval``.

An :class:`~tunnelpy.signaling.nostr_wire.IceRestart` (a receiver lost its path) passes the same
author check, then the :class:`~tunnelpy.signaling.nostr_restart.RestartGate`: it must name a live
session that this same receiver key requested. It goes to that session's worker
(``SessionService.restart_ice``) and the worker's new ICE parameters go back as
:class:`~tunnelpy.signaling.nostr_wire.IceRestarted`; a restart that fails gets no answer (the
receiver falls back to a new session after its deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import orjson

from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import ProtocolError, VersionMismatch
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import nostr_keys
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.nostr_restart import RestartGate
from tunnelpy.signaling.nostr_signal import NostrSignal, RelayError
from tunnelpy.signaling.session_wire import RejectReason
from tunnelpy.supervisor.front import rejection
from tunnelpy.supervisor.sessions import Opened, SessionService
from tunnelpy.worker.contract import RendezvousSpec, Transport

log = get_logger(__name__)

MAX_IN_FLIGHT = 32
"""Requests being handled at once (each may wait for a worker to start)."""

REPLIES_KEPT = 1000
"""Replies remembered for receivers that ask again, least recently sent dropped first."""


class NostrFrontDoor:
    """A :class:`~tunnelpy.supervisor.front.FrontDoor` on Nostr relays; driven by the arbiter
    (start/serve/close) and by each event addressed to the sender's key."""

    ticket = ""

    def __init__(self, config: SenderConfig, service: SessionService) -> None:
        assert config.nostr is not None, "a nostr sender has nostr options"
        self.config = config
        self.options = config.nostr
        self._service = service
        self._signal: NostrSignal | None = None
        self._gate: wire.RequestGate | None = None
        self._restarts = RestartGate()
        self._in_flight: set[tuple[str, str]] = set()
        self._replies: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()  # -> (plaintext, sent at)
        self.endpoint_id = ""

    async def start(self) -> None:
        keys, receivers = nostr_keys.identity(self.options)
        self._gate = wire.RequestGate(receivers)
        self._signal = NostrSignal(keys, self.options.relays)
        await self._signal.start()
        self.endpoint_id = str(keys.public_key().to_bech32())
        log.info(
            "supervisor.online",
            endpoint_id=self.endpoint_id,
            pubkey=self._signal.public_key_hex,
            relays=list(self.options.relays),
            connected=await self._signal.connected_relays(),
            receivers=len(receivers),
        )

    async def serve(self) -> None:
        assert self._signal is not None and self._gate is not None, "start() first"
        async with asyncio.TaskGroup() as tg:
            async for author, plaintext in self._signal.receive():
                try:
                    msg = wire.decode(plaintext)
                except VersionMismatch as exc:
                    self._version_mismatch(tg, author, plaintext, exc)
                    continue
                except ProtocolError as exc:
                    log.debug("nostr.undecodable", author=author[:16], error=str(exc))
                    continue
                if isinstance(msg, wire.TunnelRequest):
                    self._on_request(tg, author, msg)
                elif isinstance(msg, wire.IceRestart):
                    self._on_restart(tg, author, msg)
                elif isinstance(msg, wire.TunnelAnswer):
                    log.debug("nostr.answered", author=author[:16], request_id=msg.session_id)

    async def close(self) -> None:
        if self._signal is not None:
            await self._signal.close()

    # -- requests ----------------------------------------------------------------------
    def _on_request(self, tg: asyncio.TaskGroup, author: str, request: wire.TunnelRequest) -> None:
        assert self._gate is not None
        key = (author, request.session_id)
        if key in self._in_flight:
            return  # the same request through another relay or a republication: being handled
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            log.warning("nostr.busy", author=author[:16], in_flight=len(self._in_flight))
            return  # not recorded by the gate: the receiver's next republication is taken
        now = time.time()
        decision = self._gate.check(author, request, now)
        if isinstance(decision, wire.Ignore):
            if key in self._replies and now - request.timestamp <= self._gate.max_age:
                tg.create_task(self._resend(key, now))
            else:
                log.debug("nostr.ignored", author=author[:16], request_id=request.session_id, why=decision.reason)
            return
        self._in_flight.add(key)
        tg.create_task(self._handle(author, request))

    async def _handle(self, author: str, request: wire.TunnelRequest) -> None:
        key = (author, request.session_id)
        try:
            reply = await self._decide(author, request)
            plaintext = wire.encode(reply)
            self._remember(key, plaintext)
            await self._publish(author, plaintext, type(reply).__name__)
        except Exception as exc:  # one bad request must not take the front door down
            log.exception("nostr.request_crashed", author=author[:16], error=str(exc))
        finally:
            self._in_flight.discard(key)

    async def _decide(self, author: str, request: wire.TunnelRequest) -> wire.TunnelOffer | wire.TunnelReject:
        receiver_id = nostr_keys.npub_of(author)
        log.info("nostr.request", receiver_id=receiver_id, request_id=request.session_id, source=request.source)
        rendezvous = RendezvousSpec(Transport.ICE, ice_peer=request.ice)
        opened = await self._service.open_session(receiver_id, request.source, rendezvous)
        if not isinstance(opened, Opened):
            refused = rejection(opened)
            return wire.TunnelReject(request.session_id, refused.reason, refused.message)
        ready = opened.ready
        assert ready.ice is not None, "an ICE worker reports its ICE parameters"
        log.info("nostr.offered", session_id=opened.session_id, request_id=request.session_id)
        self._restarts.opened(author, request.session_id, opened.session_id)
        return wire.TunnelOffer.create(request.session_id, ready.ice, ready.cert_sha256)

    # -- ICE restarts ------------------------------------------------------------------
    def _on_restart(self, tg: asyncio.TaskGroup, author: str, restart: wire.IceRestart) -> None:
        assert self._gate is not None
        if self._gate.allowed is not None and author.lower() not in self._gate.allowed:
            log.debug("nostr.ignored", author=author[:16], why="not an authorized receiver")
            return
        decision = self._restarts.check(author, restart, time.time())
        live = self._restarts.session_of(author, restart.session_id)
        if isinstance(decision, wire.Ignore) or live is None:
            why = decision.reason if isinstance(decision, wire.Ignore) else "no live session"
            log.debug("nostr.restart_ignored", author=author[:16], request_id=restart.session_id, why=why)
            return
        tg.create_task(self._restart(author, restart, live.session_id))

    async def _restart(self, author: str, restart: wire.IceRestart, session_id: str) -> None:
        receiver_id = nostr_keys.npub_of(author)
        log.info(
            "nostr.ice_restart", session_id=session_id, request_id=restart.session_id, generation=restart.generation
        )
        try:
            answer = await self._service.restart_ice(session_id, receiver_id, restart.generation, restart.ice)
        except Exception as exc:  # one bad restart must not take the front door down
            log.exception("nostr.restart_crashed", author=author[:16], error=str(exc))
            return
        if isinstance(answer, str):
            log.warning("nostr.ice_restart_refused", session_id=session_id, error=answer)
            return
        reply = wire.IceRestarted.create(restart.session_id, restart.generation, answer)
        await self._publish(author, wire.encode(reply), "IceRestarted")

    def _remember(self, key: tuple[str, str], plaintext: str) -> None:
        self._replies[key] = (plaintext, time.monotonic())
        self._replies.move_to_end(key)
        while len(self._replies) > REPLIES_KEPT:
            self._replies.popitem(last=False)

    async def _resend(self, key: tuple[str, str], now: float) -> None:
        plaintext, sent = self._replies.get(key, ("", now))
        if not plaintext or time.monotonic() - sent < self.options.republish_interval:
            return
        self._remember(key, plaintext)
        log.info("nostr.reply_resent", author=key[0][:16], request_id=key[1])
        await self._publish(key[0], plaintext, "reply")

    def _version_mismatch(self, tg: asyncio.TaskGroup, author: str, plaintext: str, exc: VersionMismatch) -> None:
        """Tell a listed receiver of another version why it gets no session (if it named one)."""
        assert self._gate is not None
        session_id = _session_id_of(plaintext)
        if session_id is None or (self._gate.allowed is not None and author not in self._gate.allowed):
            log.debug("nostr.undecodable", author=author[:16], error=str(exc))
            return
        log.warning("nostr.version_mismatch", receiver_id=nostr_keys.npub_of(author), error=str(exc))
        reject = wire.TunnelReject(session_id, RejectReason.VERSION_MISMATCH, str(exc))
        tg.create_task(self._publish(author, wire.encode(reject), "TunnelReject"))

    async def _publish(self, author: str, plaintext: str, what: str) -> None:
        assert self._signal is not None
        try:
            published = await self._signal.publish(author, plaintext)
        except RelayError as exc:  # the receiver republishes; a relay may be back by then
            log.warning("nostr.reply_not_published", author=author[:16], error=str(exc))
            return
        except Exception as exc:  # a binding error for one reply must not end the front door
            log.exception("nostr.reply_failed", author=author[:16], error=str(exc))
            return
        log.debug("nostr.replied", author=author[:16], reply=what, relays=published.relays)


def _session_id_of(plaintext: str) -> str | None:
    """The session id of a message we cannot decode (another version), if it has a valid one."""
    try:
        body = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        return None
    value = body.get("session_id") if isinstance(body, dict) else None
    hex_id = isinstance(value, str) and len(value) == 2 * wire.SESSION_ID_BYTES and not value.strip("0123456789abcdef")
    return value if hex_id else None

"""The nostr-mode receiver: ask the sender through Nostr relays, then ICE + QUIC as in custom-manual.

Lifecycle: gather ICE candidates (controlling agent), publish an encrypted
:class:`~tunnelpy.signaling.nostr_wire.TunnelRequest` to the sender's npub on every relay and
republish it on a :class:`~tunnelpy.signaling.nostr_wire.RepublishSchedule` until the sender's
offer or reject arrives or ``--max-wait`` passes (exit 10). A reject becomes its reason's exit
code. On the offer: confirm it once (:class:`TunnelAnswer`), leave the relays, run the ICE checks,
connect QUIC as the client pinning the offer's certificate SHA-256, and serve ``--listen``.
A lost ICE path pauses the connection while :class:`~tunnelpy.worker.receiver.nostr_restart.IceRestarter`
restarts ICE for the same session; only if that fails does the session end (and a new one start).
"""

from __future__ import annotations

import asyncio
import importlib
import time

from tunnelpy.common.config import NostrOptions, ReceiverConfig
from tunnelpy.common.errors import ConnectFailed, ExitCode, ProtocolError, SessionRefused, VersionMismatch
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import nostr_keys
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.nostr_signal import NostrSignal, RelayError
from tunnelpy.worker.receiver.nostr_restart import IceRestarter
from tunnelpy.worker.receiver.tunnel import LocalSide, first_leaf, run_until_stopped
from tunnelpy.worker.transport.ice import ICE_CONNECT_TIMEOUT, IceAgent, stun_address

log = get_logger(__name__)

_QUIC = "tunnelpy.worker.transport.quic.connect"
INBOX = 64  # messages received but not yet looked at (a flood of foreign events is dropped)


async def run_nostr_receiver(cfg: ReceiverConfig) -> ExitCode:
    return await run_until_stopped(cfg, lambda local: _session(cfg, local), reconnect=not cfg.no_reconnect)


async def _session(cfg: ReceiverConfig, local: LocalSide) -> None:
    assert cfg.nostr is not None, "a nostr receiver has nostr options"
    keys, (sender,) = nostr_keys.identity(cfg.nostr)
    agent = IceAgent(
        controlling=True, stun_server=stun_address(cfg.net), host_filter=cfg.net.ice_hosts, turn=cfg.net.turn
    )
    async with agent:
        try:
            async with asyncio.TaskGroup() as tg:
                # The QUIC stack takes a while to import: do it meanwhile (relays, ICE, the sender's worker).
                quic = tg.create_task(asyncio.to_thread(importlib.import_module, _QUIC))
                async with NostrSignal(keys, cfg.nostr.relays) as signal:
                    params = await agent.gather()
                    offer = await ask_sender(signal, sender, str(cfg.source), params, cfg.nostr)
                    try:  # a confirmation only: the sender's worker already runs its checks
                        await signal.publish(sender, wire.encode(wire.TunnelAnswer(offer.session_id)))
                    except RelayError as exc:
                        log.warning("receiver.answer_not_published", error=str(exc))
        except BaseExceptionGroup as group:
            # The error itself, not a group: the reconnect loop decides on its type (retry a
            # sender that did not answer, give up on a refusal).
            raise first_leaf(group) from None
        connect_quic = quic.result().connect_quic
        await agent.set_remote(offer.ice)
        pair = await agent.connect(timeout=ICE_CONNECT_TIMEOUT)
        conn = await connect_quic(agent, is_client=True, cert_fingerprint=offer.cert_sha256)
        log.info("receiver.connected", transport="ice", pair=str(pair))
        try:
            async with asyncio.TaskGroup() as tg:
                restarter = IceRestarter(tg, keys, cfg.nostr.relays, sender, offer.session_id, agent)
                restarter.watch(conn)
                try:
                    await local.serve(conn)
                finally:
                    conn.close(0, "receiver done")
                    await restarter.close()  # the agent a restart moved to (the first one: below)
        except BaseExceptionGroup as group:
            raise first_leaf(group) from None


async def ask_sender(
    signal: NostrSignal, sender: str, source: str, ice: IceParameters, options: NostrOptions
) -> wire.TunnelOffer:
    """Publish our request until the sender replies; the offer, or SessionRefused / ConnectFailed."""
    session_id = wire.new_session_id()
    inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(INBOX)

    async def pump() -> None:
        async for item in signal.receive():
            if inbox.full():
                inbox.get_nowait()  # keep the newest: a reply arrives after whatever flooded us
            inbox.put_nowait(item)

    async def publish() -> None:
        request = wire.TunnelRequest.create(session_id, source, ice, int(time.time()))
        published = await signal.publish(sender, wire.encode(request))
        log.info("receiver.request_published", request_id=session_id, relays=published.relays)

    schedule = wire.RepublishSchedule(options.republish_interval, options.max_wait, time.monotonic())
    async with asyncio.TaskGroup() as tg:
        pumping = tg.create_task(pump())
        try:
            await publish()  # RelayError (exit 10) if no relay takes it within its timeout
            while True:
                now = time.monotonic()
                if schedule.expired(now):
                    raise ConnectFailed(_no_reply(sender, signal, options))
                if schedule.due(now):
                    schedule.published(now)
                    try:
                        await publish()
                    except RelayError as exc:
                        log.warning("receiver.request_not_published", error=str(exc))
                    continue
                try:
                    async with asyncio.timeout(schedule.wait_time(now)):
                        author, plaintext = await inbox.get()
                except TimeoutError:
                    continue
                offer = _reply(author, plaintext, sender, session_id)
                if offer is not None:
                    log.info("receiver.offer_received", request_id=session_id)
                    return offer
        finally:
            pumping.cancel()


def _reply(author: str, plaintext: str, sender: str, session_id: str) -> wire.TunnelOffer | None:
    """The offer if this message is the sender's reply to us; a reject raises SessionRefused."""
    try:
        msg = wire.decode(plaintext)
    except VersionMismatch as exc:
        if author == sender:  # our sender speaks another version: no session can work
            raise VersionMismatch(f"the sender's reply: {exc}") from None
        return None
    except ProtocolError as exc:
        log.debug("receiver.undecodable", author=author[:16], error=str(exc))
        return None
    decision = wire.check_reply(msg, author, sender, session_id)
    if isinstance(decision, wire.Ignore):
        log.debug("receiver.ignored", author=author[:16], why=decision.reason)
        return None
    if isinstance(msg, wire.TunnelReject):
        raise SessionRefused(f"sender refused the session ({msg.reason.value}): {msg.message}", msg.reason.exit_code)
    assert isinstance(msg, wire.TunnelOffer)
    return msg


def _no_reply(sender: str, signal: NostrSignal, options: NostrOptions) -> str:
    return (
        f"no reply from the sender {nostr_keys.npub_of(sender)} within {options.max_wait:.0f} s (--max-wait): "
        f"is it running on one of these relays ({', '.join(options.relays)}), and does its --peer-npub "
        f"list our npub {signal.public_key.to_bech32()}?"
    )

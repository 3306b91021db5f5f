"""The asyncio glue of nostr mode over nostr-sdk 0.45.1: encrypted, addressed events through relays.

:class:`NostrSignal` moves plaintext strings (made by :mod:`tunnelpy.signaling.nostr_wire`)
between two keys: :meth:`~NostrSignal.publish` NIP-44 v2 encrypts to the peer, builds an
event of our kind with a ``p`` tag, signs it and sends it to every connected relay;
:meth:`~NostrSignal.receive` yields ``(author_hex, plaintext)`` for each decryptable event
addressed to us. It decides nothing: which messages matter is nostr_wire's job.

What nostr-sdk does for us (tests/integration/test_nostr_signal.py checks all but the first
half of the second point, which nostr-sdk documents):

* ``Client.connect()`` spawns one connection task per relay that retries on its own: a
  relay down at start, or one that restarts, is (re)connected within its retry interval
  (10 s by default, adjusted by nostr-sdk, at least 5 s; 8-9 s measured), and our
  subscription is sent again on every reconnection.
* Event signatures are verified before a notification; ``NEW_EVENT`` comes once per event
  id, however many relays deliver it (republications are new events: nostr_wire's
  RequestGate drops those).
* ``send_event`` to a relay that is not connected *waits* for that relay's next connection
  attempt (6-9 s measured) before reporting "relay not connected". So we send only to the
  relays connected right now and bound the wait for OKs; a relay that comes back later
  gets the next republication.
* Refusals do not raise: they come back per relay in ``SendEventOutput.failed``.

Never fork a process after :meth:`NostrSignal.start` (its runtime is running then); build
it in the process that uses it (stack-notes §2).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import nostr_sdk

from tunnelpy.common import uniffi_fastcopy
from tunnelpy.common.errors import ConfigError, ConnectFailed
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import nostr_wire

uniffi_fastcopy.apply("nostr-sdk")

log = get_logger(__name__)

START_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 10.0
OK_TIMEOUT = 5.0
SINCE = 60
"""The subscription asks for events up to this many seconds old, so a request published just
before we subscribed is still seen (nostr_wire.RequestGate drops what is too old)."""

NOTIFICATION_QUEUE = 1024
"""nostr-sdk's notification channel (bounded; a consumer that lags loses the oldest)."""

_POLL = 0.05
# NIP-44 v2 payload: version 1 + nonce 32 + length 2 + padded plaintext + MAC 32, base64.
# MAX_PLAINTEXT is a power of two, so it pads to itself.
_MAX_CONTENT = 4 * -(-(1 + 32 + 2 + nostr_wire.MAX_PLAINTEXT + 32) // 3)


class RelayError(ConnectFailed):
    """No relay could be reached or none took our event; the message names the relays."""


@dataclass(frozen=True, slots=True)
class Published:
    """What one :meth:`NostrSignal.publish` achieved."""

    event_id: str  # hex
    relays: tuple[str, ...]  # the relays that acknowledged it


def parse_relay_url(url: str) -> nostr_sdk.RelayUrl:
    try:
        return nostr_sdk.RelayUrl.parse(url)
    except nostr_sdk.NostrSdkError as exc:
        raise ConfigError(f"Nostr relay URL {url!r} is not valid ({exc}): use ws://HOST:PORT or wss://HOST") from exc


class NostrSignal:
    """One key's connection to a set of relays: publish to a peer, receive what is addressed to us.

    Use ``async with NostrSignal(keys, relays) as sig:`` or call :meth:`start` and
    :meth:`close`. ``kind`` is the event kind published and subscribed to.
    """

    def __init__(self, keys: nostr_sdk.Keys, relays: Sequence[str], kind: int = nostr_wire.EVENT_KIND) -> None:
        if not relays:
            raise ConfigError("nostr mode needs at least one relay URL")
        self.keys, self.kind = keys, kind
        self.public_key = keys.public_key()
        self.public_key_hex: str = self.public_key.to_hex()
        self._urls = {url: parse_relay_url(url) for url in relays}
        self._kind = nostr_sdk.Kind(kind)
        self._client: nostr_sdk.Client | None = None
        self._notifications: nostr_sdk.ClientNotificationStream | None = None

    @property
    def relay_urls(self) -> list[str]:
        return list(self._urls)

    async def __aenter__(self) -> NostrSignal:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Add every relay, connect, wait until at least one is connected, then subscribe.

        Relays that are down keep being retried in the background. Raises RelayError
        naming the relays if none connects within ``timeout`` seconds.
        """
        if self._client is not None:
            raise RuntimeError("NostrSignal.start() called twice")
        client = nostr_sdk.ClientBuilder().notification_channel_size(NOTIFICATION_QUEUE).build()
        self._client = client
        for url in self._urls.values():
            await client.add_relay(url)
        self._notifications = client.notifications()  # before subscribing: nothing is missed
        await client.connect()
        try:
            async with asyncio.timeout(timeout):
                while not await self._connected():
                    await asyncio.sleep(_POLL)
        except TimeoutError:
            await self.close()
            raise RelayError(
                f"could not connect to any Nostr relay within {timeout:.0f} s: {', '.join(self._urls)}"
            ) from None
        since = nostr_sdk.Timestamp.from_secs(int(time.time()) - SINCE)
        query = nostr_sdk.Filter().kind(self._kind).pubkey(self.public_key).since(since)
        out = await client.subscribe(nostr_sdk.ReqTarget.auto([query]))
        log.info(
            "nostr.started",
            pubkey=self.public_key_hex,
            kind=self.kind,
            relays=len(self._urls),
            connected=await self.connected_relays(),
            subscribed=[str(u) for u in out.success],
        )

    async def connected_relays(self) -> list[str]:
        """The relay URLs connected right now."""
        return [str(url) for url in await self._connected()]

    async def _connected(self) -> list[nostr_sdk.RelayUrl]:
        relays = await self._require_client().relays()
        return [url for url, relay in relays.items() if relay.status() == nostr_sdk.RelayStatus.CONNECTED]

    async def publish(self, peer_pubkey_hex: str, plaintext: str, timeout: float = PUBLISH_TIMEOUT) -> Published:
        """Encrypt ``plaintext`` to the peer and send it to every connected relay.

        If no relay is connected, waits up to ``timeout`` s for one. Each refusal is logged;
        RelayError only if no relay took the event.
        """
        client = self._require_client()
        peer = nostr_sdk.PublicKey.parse(peer_pubkey_hex)
        content = nostr_sdk.nip44_encrypt(self.keys.secret_key(), peer, plaintext, nostr_sdk.Nip44Version.V2)
        event = nostr_sdk.EventBuilder(self._kind, content).tags([nostr_sdk.Tag.public_key(peer)]).finalize(self.keys)
        try:
            async with asyncio.timeout(timeout):
                while not (targets := await self._connected()):
                    await asyncio.sleep(_POLL)
                out = await client.send_event(
                    event,
                    nostr_sdk.SendEventTarget.to(targets),
                    ok_timeout=datetime.timedelta(seconds=OK_TIMEOUT),
                )
        except TimeoutError:
            raise RelayError(
                f"no Nostr relay connected within {timeout:.0f} s to publish to: {', '.join(self._urls)}"
            ) from None
        for url, error in out.failed.items():
            log.warning("nostr.relay_refused", relay=str(url), error=error, event_id=event.id().to_hex())
        if not out.success:
            refusals = "; ".join(f"{url}: {error}" for url, error in out.failed.items())
            raise RelayError(f"every Nostr relay refused our event: {refusals}")
        accepted = tuple(str(u) for u in out.success)
        log.debug("nostr.published", event_id=event.id().to_hex(), peer=peer_pubkey_hex, relays=accepted)
        return Published(event.id().to_hex(), accepted)

    async def receive(self) -> AsyncIterator[tuple[str, str]]:
        """Yield ``(author_hex, plaintext)`` per event for us, each event once; ends at close().

        Events of another kind, not addressed to us, oversize or undecryptable are dropped
        with a debug log. Cancelling the iteration is safe.
        """
        stream = self._notifications
        if stream is None:
            raise RuntimeError("NostrSignal.receive() before start()")
        while (note := await stream.next()) is not None:
            if note.is_shutdown():
                return
            if not note.is_new_event():
                continue
            opened = self._open(note.event)
            if opened is not None:
                yield opened

    def _open(self, event: nostr_sdk.Event) -> tuple[str, str] | None:
        """The author and plaintext of an event, or None (logged) if it is not one of ours."""
        author = event.author()
        event_id = event.id().to_hex()
        if event.kind().as_u16() != self.kind:
            log.debug("nostr.dropped", event_id=event_id, why=f"kind {event.kind().as_u16()}")
            return None
        recipients = [v[1] for v in (t.to_vec() for t in event.tags()) if len(v) > 1 and v[0] == "p"]
        if self.public_key_hex not in recipients:
            log.debug("nostr.dropped", event_id=event_id, why="not addressed to us")
            return None
        content = event.content()
        if len(content) > _MAX_CONTENT:
            log.debug("nostr.dropped", event_id=event_id, why=f"content of {len(content)} characters")
            return None
        try:
            plaintext = nostr_sdk.nip44_decrypt(self.keys.secret_key(), author, content)
        except nostr_sdk.NostrSdkError as exc:
            log.debug("nostr.dropped", event_id=event_id, author=author.to_hex(), why=f"undecryptable: {exc}")
            return None
        return author.to_hex(), plaintext

    async def close(self) -> None:
        """Disconnect from every relay; pending and later receive() iterations end."""
        client, self._client = self._client, None
        if client is not None:
            await client.shutdown()

    def _require_client(self) -> nostr_sdk.Client:
        if self._client is None:
            raise RuntimeError("NostrSignal is not started (or already closed)")
        return self._client

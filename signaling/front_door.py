"""Both halves of the front-door exchange (:mod:`~tunnelpy.signaling.session_wire`) on one stream.

The receiver calls :func:`request_session`; the sender's front door calls
:func:`answer_request` with a ``decide`` callback (authentication, admission and the worker
spawn happen there). Both read through :class:`~tunnelpy.signaling.session_wire.MessageDecoder`
over any :class:`MessageStream`, so the exchange does not care which transport carries it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol

from tunnelpy.common.errors import ProtocolError, SessionRefused, VersionMismatch
from tunnelpy.signaling import session_wire as sw

HANDSHAKE_TIMEOUT = 30.0  # covers the request read, the worker spawn and the reply
INSTANCE = secrets.token_hex(8)  # this receiver process: a restarted one replaces its ghosts at once

Reply = sw.SessionAccepted | sw.SessionRejected


class MessageStream(Protocol):
    """The part of a transport stream the exchange needs."""

    async def read(self, max_bytes: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


async def read_message(stream: MessageStream) -> sw.Message:
    """One whole message; a peer that closes early or sends too much is a ProtocolError."""
    decoder = sw.MessageDecoder()
    while (msg := decoder.next()) is None:
        chunk = await stream.read(decoder.wanted())
        if not chunk:
            decoder.eof()
        decoder.feed(chunk)
    return msg


async def request_session(stream: MessageStream, source: str, *, replaces: str = "") -> sw.SessionAccepted:
    """Receiver half: ask for ``source`` (``replaces``: our previous session, when reconnecting);
    a rejection raises SessionRefused with its exit code."""
    await stream.write(sw.encode(sw.SessionRequest(source=source, instance=INSTANCE, replaces=replaces)))
    await stream.finish()
    reply = await read_message(stream)
    if isinstance(reply, sw.SessionRejected):
        raise SessionRefused(
            f"sender refused the session ({reply.reason.value}): {reply.message}", reply.reason.exit_code
        )
    if not isinstance(reply, sw.SessionAccepted):
        raise ProtocolError(f"expected a session answer, got {type(reply).__name__}")
    return reply


async def read_request(stream: MessageStream) -> sw.SessionRequest | sw.SessionRejected:
    """Sender half, first step: the request, or the rejection to send a peer of another version."""
    try:
        request = await read_message(stream)
    except VersionMismatch as exc:
        return sw.SessionRejected(sw.RejectReason.VERSION_MISMATCH, str(exc))
    if not isinstance(request, sw.SessionRequest):
        raise ProtocolError(f"expected a session request, got {type(request).__name__}")
    return request


async def send_reply(stream: MessageStream, reply: Reply) -> None:
    """Sender half, last step (also the whole answer to a peer refused before it spoke)."""
    await stream.write(sw.encode(reply))
    await stream.finish()


async def answer_request(stream: MessageStream, decide: Callable[[sw.SessionRequest], Awaitable[Reply]]) -> Reply:
    """Sender half in one call: read the request, ``decide``, send the reply (returned for the log)."""
    request = await read_request(stream)
    reply = await decide(request) if isinstance(request, sw.SessionRequest) else request
    await send_reply(stream, reply)
    return reply

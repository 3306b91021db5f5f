"""Both halves of the front-door exchange, over an in-memory stream pair (the real one runs on
iroh in tests/integration/test_iroh_data_plane.py)."""

from __future__ import annotations

import asyncio

import pytest

from tunnelpy.common.errors import ExitCode, ProtocolError, SessionRefused
from tunnelpy.signaling import front_door
from tunnelpy.signaling import session_wire as sw


class Pipe:
    """One direction of a stream: bytes written on one end are read on the other."""

    def __init__(self, chunk: int = 3) -> None:
        self.data = bytearray()
        self.finished = False
        self.changed = asyncio.Event()
        self.chunk = chunk  # deliver small pieces: the framing must reassemble them

    async def read(self, max_bytes: int) -> bytes:
        while not self.data and not self.finished:
            self.changed.clear()
            await self.changed.wait()
        out = bytes(self.data[: min(max_bytes, self.chunk)])
        del self.data[: len(out)]
        return out

    async def write(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    async def finish(self) -> None:
        self.finished = True
        self.changed.set()


class End:
    """One end of a bi-stream: reads one pipe, writes the other."""

    def __init__(self, inbound: Pipe, outbound: Pipe) -> None:
        self.inbound, self.outbound = inbound, outbound

    async def read(self, max_bytes: int) -> bytes:
        return await self.inbound.read(max_bytes)

    async def write(self, data: bytes) -> None:
        await self.outbound.write(data)

    async def finish(self) -> None:
        await self.outbound.finish()


def pair() -> tuple[End, End]:
    a, b = Pipe(), Pipe()
    return End(a, b), End(b, a)


def test_accepted_request_round_trip() -> None:
    async def main() -> None:
        receiver, sender = pair()
        asked: list[str] = []

        async def decide(request: sw.SessionRequest) -> front_door.Reply:
            asked.append(request.source)
            return sw.SessionAccepted(session_id="s1", worker_ticket="ticket")

        reply, accepted = await asyncio.gather(
            front_door.answer_request(sender, decide), front_door.request_session(receiver, "tcp://127.0.0.1:22")
        )
        assert asked == ["tcp://127.0.0.1:22"]
        assert accepted == reply == sw.SessionAccepted(session_id="s1", worker_ticket="ticket")

    asyncio.run(main())


def test_rejection_becomes_its_exit_code() -> None:
    async def main() -> None:
        receiver, sender = pair()

        async def decide(request: sw.SessionRequest) -> front_door.Reply:
            return sw.SessionRejected(sw.RejectReason.AT_CAPACITY, "sender at capacity (2/2 sessions)")

        with pytest.raises(SessionRefused, match=r"at_capacity\): sender at capacity") as info:
            await asyncio.gather(front_door.answer_request(sender, decide), front_door.request_session(receiver, "x"))
        assert info.value.exit_code is ExitCode.AT_CAPACITY

    asyncio.run(main())


def test_peer_closing_mid_message_is_a_protocol_error() -> None:
    async def main() -> None:
        receiver, sender = pair()
        await receiver.write(sw.encode(sw.SessionRequest(source="tcp://127.0.0.1:22"))[:-2])
        await receiver.finish()
        with pytest.raises(ProtocolError, match="truncated"):
            await front_door.read_message(sender)

    asyncio.run(main())


def test_newer_peer_gets_a_version_rejection() -> None:
    async def main() -> None:
        receiver, sender = pair()
        body = b'{"v": 99, "kind": "session_request", "source": "tcp://x:1"}'
        await receiver.write(len(body).to_bytes(4, "big") + body)

        async def decide(request: sw.SessionRequest) -> front_door.Reply:
            raise AssertionError("a version mismatch never reaches the decision")

        reply = await front_door.answer_request(sender, decide)
        assert isinstance(reply, sw.SessionRejected) and reply.reason is sw.RejectReason.VERSION_MISMATCH
        assert await front_door.read_message(receiver) == reply

    asyncio.run(main())

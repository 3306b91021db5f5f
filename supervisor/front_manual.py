"""The front end of the copy-paste modes: one OFFER in on stdin, one ANSWER out on stdout.

The sender reads the receiver's offer, lets the arbiter check and admit its source and spawn
the session's worker (the same supervisor/worker split as iroh mode), and prints the
worker's answer. A refused source is an error on the sender (exit code 4) and nothing is
printed; the receiver then times out waiting for its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from tunnelpy.common.config import CUSTOM_MANUAL, SenderConfig
from tunnelpy.common.errors import SessionRejected
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import manual_blocks as mb
from tunnelpy.signaling import session_wire as sw
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.paste import emit_block, read_pasted
from tunnelpy.worker.contract import WorkerReady
from tunnelpy.worker.rendezvous import RendezvousSpec

log = get_logger(__name__)

OpenSession = Callable[[str, str, RendezvousSpec], Awaitable[object]]


class ManualFrontDoor:
    endpoint_id = ""
    ticket = ""

    def __init__(self, config: SenderConfig, open_session: OpenSession) -> None:
        self.config = config
        self._open_session = open_session

    async def start(self) -> None:
        log.info("manual.awaiting_offer", mode=self.config.mode)
        if self.config.mode == CUSTOM_MANUAL:
            offer = await read_pasted(mb.BlockKind.ICE_OFFER)
            assert isinstance(offer, mb.IceOffer)
            # No identity in ICE offers: name the receiver by its ICE credentials for the logs.
            receiver = "ice-" + hashlib.sha256(offer.ice_ufrag.encode()).hexdigest()[:12]
            rendezvous = RendezvousSpec("ice", ice_peer=IceParameters(offer.ice_ufrag, offer.ice_pwd, offer.candidates))
        else:
            offer = await read_pasted(mb.BlockKind.IROH_OFFER)
            assert isinstance(offer, mb.IrohOffer)
            receiver = offer.endpoint_id
            rendezvous = RendezvousSpec("iroh", punch=offer.direct_addresses)
        log.info("manual.offer", receiver_id=receiver, source=offer.source)
        opened = await self._open_session(receiver, offer.source, rendezvous)
        if isinstance(opened, sw.SessionRejected):
            raise SessionRejected(f"refused the receiver's offer: {opened.message}", opened.reason.exit_code)
        ready: WorkerReady = opened.ready  # type: ignore[attr-defined]
        emit_block(self._answer(ready), "Give this ANSWER block to the receiver:")

    def _answer(self, ready: WorkerReady) -> mb.BlockMessage:
        if self.config.mode == CUSTOM_MANUAL:
            return mb.IceAnswer(ready.ice_ufrag, ready.ice_pwd, ready.candidates, ready.cert_sha256)
        from tunnelpy.worker.transport.iroh_transport import iroh

        addr = iroh.EndpointTicket.from_string(ready.ticket).endpoint_addr()
        return mb.IrohAnswer(str(addr.id()), tuple(addr.direct_addresses()))

    async def serve(self) -> None:
        await asyncio.Event().wait()  # the arbiter stops after the one session

    async def close(self) -> None:
        return None

"""The front end of the copy-paste modes: one OFFER in on stdin, one ANSWER out on stdout.

The sender reads the receiver's offer, lets the arbiter check and admit its source and spawn
the session's worker (the same supervisor/worker split as iroh mode), and prints the
worker's answer. A refused source is an error on the sender (exit code 4) and nothing is
printed; the receiver then times out waiting for its answer.
"""

from __future__ import annotations

import asyncio
import hashlib

from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import SessionRefused
from tunnelpy.common.logs import get_logger
from tunnelpy.common.modes import Mode
from tunnelpy.signaling import manual_blocks as mb
from tunnelpy.signaling.paste import emit_block, read_pasted
from tunnelpy.supervisor.front import rejection
from tunnelpy.supervisor.sessions import Opened, SessionService
from tunnelpy.worker.contract import RendezvousSpec, Transport, WorkerReady

log = get_logger(__name__)


class ManualFrontDoor:
    """A :class:`~tunnelpy.supervisor.front.FrontDoor` for one pasted OFFER; ``start`` does the
    whole exchange, and the arbiter stops once that session's worker is gone."""

    endpoint_id = ""
    ticket = ""

    def __init__(self, config: SenderConfig, service: SessionService) -> None:
        self.config = config
        self._service = service

    async def start(self) -> None:
        log.info("manual.awaiting_offer", mode=self.config.mode)
        if self.config.mode == Mode.CUSTOM_MANUAL:
            offer = await read_pasted(mb.BlockKind.ICE_OFFER)
            assert isinstance(offer, mb.IceOffer)
            # No identity in ICE offers: name the receiver by its ICE credentials for the logs.
            receiver = "ice-" + hashlib.sha256(offer.ice.ufrag.encode()).hexdigest()[:12]
            rendezvous = RendezvousSpec(Transport.ICE, ice_peer=offer.ice)
        else:
            offer = await read_pasted(mb.BlockKind.IROH_OFFER)
            assert isinstance(offer, mb.IrohOffer)
            receiver = offer.endpoint_id
            rendezvous = RendezvousSpec(Transport.IROH, punch=offer.direct_addresses)
        log.info("manual.offer", receiver_id=receiver, source=offer.source)
        opened = await self._service.open_session(receiver, offer.source, rendezvous)
        if not isinstance(opened, Opened):
            exit_code = rejection(opened).reason.exit_code
            raise SessionRefused(f"refused the receiver's offer: {opened.message}", exit_code)
        emit_block(self._answer(opened.ready), "Give this ANSWER block to the receiver:")

    def _answer(self, ready: WorkerReady) -> mb.BlockMessage:
        if self.config.mode == Mode.CUSTOM_MANUAL:
            assert ready.ice is not None, "an ICE worker reports its ICE parameters"
            return mb.IceAnswer(ready.ice, ready.cert_sha256)
        from tunnelpy.worker.transport.iroh_transport import ticket_parts

        endpoint_id, addresses = ticket_parts(ready.ticket)
        return mb.IrohAnswer(endpoint_id, tuple(addresses))

    async def serve(self) -> None:
        await asyncio.Event().wait()  # the arbiter stops after the one session

    async def close(self) -> None:
        return None

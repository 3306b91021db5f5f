"""Learn this host's public address with one STUN binding request (iroh-manual's heuristic).

iroh with relays disabled does no STUN of its own, so iroh-manual asks a STUN server which
public IP it sees and pairs it with the endpoint's own bound port, as tunnel-rs does. This
works behind NATs that preserve ports and is harmless elsewhere (one more candidate address
to try). STUN messages are built and parsed by aioice's ``stun`` module.
"""

from __future__ import annotations

import asyncio
import contextlib

from aioice import stun

from tunnelpy.common.logs import get_logger

log = get_logger(__name__)

PROBE_TIMEOUT = 2.0


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.mapped: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        with contextlib.suppress(ValueError):
            message = stun.parse_message(data)
            mapped = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get("MAPPED-ADDRESS")
            if message.transaction_id == self.transaction_id and mapped and not self.mapped.done():
                self.mapped.set_result((mapped[0], mapped[1]))


async def public_address(server: str, timeout: float = PROBE_TIMEOUT) -> tuple[str, int] | None:
    """The (ip, port) a STUN ``server`` (HOST:PORT) sees us as; None if it does not answer."""
    host, _, port = server.rpartition(":")
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Reply(request.transaction_id), remote_addr=(host.strip("[]"), int(port))
        )
    except OSError as exc:
        log.warning("stun.unreachable", server=server, error=str(exc))
        return None
    try:
        async with asyncio.timeout(timeout):
            for _attempt in range(3):
                transport.sendto(bytes(request))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout / 3):
                        return await asyncio.shield(protocol.mapped)
    except TimeoutError:
        pass
    finally:
        transport.close()
    log.warning("stun.no_answer", server=server, timeout=timeout)
    return None


async def public_addresses(servers: tuple[str, ...], bound_port: int) -> list[str]:
    """``ip:port`` candidates: each distinct public IP seen by the servers, with ``bound_port``."""
    found = await asyncio.gather(*(public_address(s) for s in servers))
    ips = dict.fromkeys(addr[0] for addr in found if addr)
    return [f"[{ip}]:{bound_port}" if ":" in ip else f"{ip}:{bound_port}" for ip in ips]

"""Sending path-MTU probes on the ICE pair's socket without IP fragmentation.

A probe only proves a size if it crossed the path as one IP packet. Linux's default for UDP
(``IP_PMTUDISC_WANT``) sets DF but fragments locally any datagram above the outgoing
interface's MTU or a path MTU learnt from ICMP, so a 16 KB probe over an Ethernet link would
arrive as 12 fragments and "succeed". For the probe alone the socket is switched to
``IP_PMTUDISC_PROBE`` (DF set, never fragmented; too big for the interface fails at once with
EMSGSIZE, which the transport reports to ``error_received`` and the probe counts as lost), then
back: ordinary packets keep the kernel's default, whose local fragmentation still rescues a
base packet size that is too big for a tunnel interface (e.g. WireGuard's MTU 1420).

Linux only: elsewhere, and on a TURN relay candidate (no socket of its own), :attr:`ProbeSocket.usable`
is False and the connection does no path-MTU discovery.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from tunnelpy.worker.transport.ice import IcePath

PMTUDISC_PROBE = 3  # IP_PMTUDISC_PROBE / IPV6_PMTUDISC_PROBE in <linux/in.h>, <linux/in6.h>
# (level, IP_MTU_DISCOVER / IPV6_MTU_DISCOVER); Python 3.11's socket module lacks the names.
_MTU_DISCOVER = {socket.AF_INET: (socket.IPPROTO_IP, 10), socket.AF_INET6: (socket.IPPROTO_IPV6, 23)}


class ProbeSocket:
    """Sends one datagram at a time with fragmentation forbidden, on the path's socket."""

    def __init__(self, path: IcePath) -> None:
        # IcePath offers no accessor for its socket; its demultiplexer holds the transport.
        self._transport: Any = path.transport
        self._remote = path.remote
        self._sock = self._transport.get_extra_info("socket")  # None on a TURN allocation
        linux = sys.platform == "linux" and self._sock is not None
        option = _MTU_DISCOVER.get(self._sock.family) if linux else None
        self._option = option
        self._default = self._sock.getsockopt(*option) if option is not None else 0

    @property
    def usable(self) -> bool:
        return self._option is not None

    def idle(self) -> bool:
        """Nothing is queued in the transport, so a datagram sent now leaves now."""
        return self._option is not None and not self._transport.get_write_buffer_size()

    def send(self, datagram: bytes) -> bool:
        """Send ``datagram`` unfragmented. False if it got queued instead (the socket was
        full): it leaves later under the default setting, so it proves nothing."""
        if self._option is None:
            return False
        level, name = self._option
        self._sock.setsockopt(level, name, PMTUDISC_PROBE)
        try:
            self._transport.sendto(datagram, self._remote)
        finally:
            self._sock.setsockopt(level, name, self._default)
        return self.idle()

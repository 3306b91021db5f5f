"""A NAT lab in network namespaces: two private LANs, each behind its own NAT router, and a
"public" segment holding the servers the tests start there.

    left host (10.1.0.2) -- router L (NAT, 198.18.0.2) --+
                                                         +-- br0 on the server host
    right host (10.2.0.2) -- router R (NAT, 198.18.0.3) -+   (198.18.0.10 and 198.18.0.11)

Every namespace, veth and rule is made by the lab and removed at teardown; nothing is
connected to the host's own interfaces, so no packet can leave the lab. IPv6 is off inside
the lab (link-local candidates would only slow ICE down).

NAT kinds, both with Linux conntrack (filtering is address-and-port dependent: a router drops
what does not answer a mapping of its own):
- CONE: MASQUERADE, which keeps the source port, so one local socket gets the same public
  address towards every destination (endpoint-independent mapping);
- SYMMETRIC: MASQUERADE --random-fully: a new public port for every destination.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PUBLIC_A = "198.18.0.10"
PUBLIC_B = "198.18.0.11"
PUBLIC_PREFIX = "198.18.0"
STUN_PORT = 3478
REPO = Path(__file__).resolve().parents[2]

_serial = itertools.count()


class NatKind(enum.Enum):
    CONE = "cone"
    SYMMETRIC = "symmetric"


class LabUnavailable(Exception):
    """The kernel or the user may not build namespaces here (the fixture skips)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Host:
    """One network namespace; commands run in it through `ip netns exec`."""

    name: str
    addr: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list, repr=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        kwargs.setdefault("text", True)
        kwargs.setdefault("cwd", str(REPO))
        proc: subprocess.Popen[str] = subprocess.Popen(self.argv(argv), **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(argv), capture_output=True, text=True, timeout=timeout, check=check, cwd=str(REPO)
        )

    def sh(self, *commands: str) -> None:
        """Configuration commands (ip/sysctl/iptables) that must succeed."""
        for command in commands:
            done = self.run(["sh", "-c", command], check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{self.name}: {command}: {done.stderr.strip()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Link:
    """One uplink of a LAN host: its interface, its router and the router's side of the LAN."""

    host: Host
    device: str  # the host's interface
    router: Host
    router_device: str  # the router's LAN interface (taken down to cut the link)
    gateway: str
    public: str  # the router's public address


@dataclass
class Turn:
    """coturn on the server host: STUN and TURN (long-term credentials) on both public addresses."""

    user: str
    password: str
    stun: str = f"{PUBLIC_A}:{STUN_PORT}"
    uri: str = f"turn:{PUBLIC_A}:{STUN_PORT}"

    def password_file(self, directory: Path) -> Path:
        path = directory / "turn-password"
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path


class Lab:
    def __init__(self, left: NatKind = NatKind.CONE, right: NatKind = NatKind.CONE) -> None:
        tag = f"tp{os.getpid() % 100000}x{next(_serial)}"
        self._tag = tag
        self._namespaces: list[Host] = []
        self._links: dict[str, list[Link]] = {}
        self._offloads_off = False
        self._routers = 0
        self._lan_hosts: dict[str, int] = {}
        self._delayers: dict[str, subprocess.Popen[str]] = {}
        try:
            self.server = self._namespace(f"{tag}-srv", PUBLIC_A)
            self.server.sh(
                # a fixed MAC: a bridge otherwise takes its lowest port's, which changes when an
                # uplink is added and leaves the routers' ARP entries pointing nowhere
                "ip link add br0 address 02:00:c6:12:00:0a type bridge",
                f"ip addr add {PUBLIC_A}/24 dev br0",
                f"ip addr add {PUBLIC_B}/24 dev br0",
                "ip link set br0 up",
            )
            self.left = self._namespace(f"{tag}-l", "10.1.0.2")
            self.right = self._namespace(f"{tag}-r", "10.2.0.2")
            self._uplink(self.left, left, lan=1)
            self._uplink(self.right, right, lan=2)
        except BaseException:
            self.close()
            raise

    # -- building -------------------------------------------------------------------------

    def _namespace(self, name: str, addr: str) -> Host:
        done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise LabUnavailable(f"ip netns add refused: {done.stderr.strip() or done.returncode}")
        host = Host(name, addr)
        self._namespaces.append(host)
        host.sh(
            "ip link set lo up",
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
            "sysctl -qw net.ipv6.conf.default.disable_ipv6=1",
            "sysctl -qw net.ipv4.conf.all.promote_secondaries=1",
            "sysctl -qw net.ipv4.conf.default.promote_secondaries=1",
            # a cut link's routes are skipped, so traffic moves to the other uplink
            "sysctl -qw net.ipv4.conf.all.ignore_routes_with_linkdown=1",
            "sysctl -qw net.ipv4.conf.default.ignore_routes_with_linkdown=1",
        )
        return host

    def _uplink(self, host: Host, kind: NatKind, lan: int) -> Link:
        """A NAT router joining `host` (on LAN 10.<lan>.0.0/24) to the public segment."""
        self._routers += 1
        public = f"{PUBLIC_PREFIX}.{1 + self._routers}"
        router = self._namespace(f"{self._tag}-n{self._routers}", public)
        port = f"p{self._routers}"
        _ip("-n", self.server.name, "link", "add", port, "type", "veth", "peer", "name", "wan", "netns", router.name)
        self.server.sh(f"ip link set {port} master br0", f"ip link set {port} up")
        links = self._links.setdefault(host.name, [])
        device = f"eth{len(links)}"
        _ip("-n", router.name, "link", "add", "lan", "type", "veth", "peer", "name", device, "netns", host.name)
        gateway = f"10.{lan}.0.1"
        masquerade = "MASQUERADE --random-fully" if kind is NatKind.SYMMETRIC else "MASQUERADE"
        router.sh(
            f"ip addr add {public}/24 dev wan",
            f"ip addr add {gateway}/24 dev lan",
            "ip link set wan up",
            "ip link set lan up",
            "sysctl -qw net.ipv4.ip_forward=1",
            f"iptables -t nat -A POSTROUTING -o wan -j {masquerade}",
            "iptables -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "iptables -A FORWARD -i wan -j DROP",
            # nothing from outside reaches the router itself either (but answers to it)
            "iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "iptables -A INPUT -i wan -j DROP",
        )
        addr = f"10.{lan}.0.2"
        self._lan_hosts[f"10.{lan}.0"] = 2
        table = 100 + len(links)
        host.sh(f"ip addr add {addr}/24 dev {device}", f"ip link set {device} up")
        if not links:
            host.sh(f"ip route add default via {gateway} dev {device}")
        else:
            # a second uplink: used for its own source address, and for everything once the
            # first link is cut (a worse metric)
            host.sh(
                f"ip route add default via {gateway} dev {device} metric 200",
                f"ip route add default via {gateway} dev {device} table {table}",
                f"ip rule add from {addr} table {table}",
            )
        link = Link(host, device, router, "lan", gateway, public)
        links.append(link)
        self._offloads_off = False  # the new link's veths have theirs on (shape() again after adding one)
        return link

    # -- drills ---------------------------------------------------------------------------

    def nat_public(self, host: Host) -> str:
        return self.primary(host).public

    def primary(self, host: Host) -> Link:
        return self._links[host.name][0]

    def add_uplink(self, host: Host, kind: NatKind = NatKind.CONE) -> Link:
        lan = 10 + self._routers
        return self._uplink(host, kind, lan=lan)

    def cut(self, link: Link, withdraw_routes: bool = True) -> None:
        """Take `link` down: its carrier goes away and, as a host's network manager (or DHCP
        client) does when a link is lost, the host's default routes through it are withdrawn.
        ``withdraw_routes=False`` leaves them in place (the kernel then only skips them as
        linkdown): a host that does not react to the loss."""
        link.router.sh(f"ip link set {link.router_device} down")
        if withdraw_routes:
            link.host.sh(f"ip -4 route flush table all dev {link.device} exact 0.0.0.0/0")

    def restore(self, link: Link) -> None:
        link.router.sh(f"ip link set {link.router_device} up")
        primary = link is self.primary(link.host)
        metric = "" if primary else " metric 200"
        link.host.sh(f"ip route replace default via {link.gateway} dev {link.device}{metric}")
        if not primary:
            table = 100 + self._links[link.host.name].index(link)
            link.host.sh(f"ip route replace default via {link.gateway} dev {link.device} table {table}")

    def readdress(self, host: Host) -> str:
        """Move `host` to the next address of its first LAN (old address gone, route kept)."""
        link = self.primary(host)
        prefix = link.gateway.rsplit(".", 1)[0]
        self._lan_hosts[prefix] += 1
        new = f"{prefix}.{self._lan_hosts[prefix]}"
        old = host.addr
        host.sh(
            f"ip addr add {new}/24 dev {link.device}",
            f"ip addr del {old}/24 dev {link.device}",
            f"ip route replace default via {link.gateway} dev {link.device}",
        )
        host.addr = new
        return new

    def shape(self, delay_ms: float, loss_pct: float = 0.0) -> None:
        """Delay (and lose) what every router forwards, both ways: a path through one router
        (a LAN host to the server) gets RTT = 2 x delay_ms, LAN to LAN 4 x delay_ms.

        The kernels we run on lack tc netem, so the delay is a user-space delay line per router
        (tests/nat/delay.py, NFQUEUE) and the loss iptables' `statistic` match. Calling it again
        replaces the shaping; shape(0) removes it."""
        self._wire_sized_packets()
        for router in self._router_hosts():
            router.sh("iptables -t mangle -F FORWARD")
            old = self._delayers.pop(router.name, None)
            if old is not None:
                old.terminate()
                old.wait(timeout=10)
            if loss_pct:
                router.sh(
                    f"iptables -t mangle -A FORWARD -m statistic --mode random --probability "
                    f"{loss_pct / 100:.6f} -j DROP"
                )
            if delay_ms:
                line = router.popen(
                    [sys.executable, "-m", "tests.nat.delay", "--delay-ms", str(delay_ms)], stdout=subprocess.PIPE
                )
                assert line.stdout is not None
                if not line.stdout.readline():
                    raise RuntimeError(f"{router.name}: the delay line did not start")
                self._delayers[router.name] = line
                router.sh("iptables -t mangle -A FORWARD -j NFQUEUE --queue-num 0")

    def _wire_sized_packets(self) -> None:
        """Segmentation offloads off on every veth of the lab: a loss rule or a delay line then
        sees packets of wire size, not 64 KB TCP/UDP super-packets (which would make TCP's loss
        rate per segment tens of times lower than QUIC's)."""
        if self._offloads_off:
            return
        if shutil.which("ethtool") is None:
            raise RuntimeError("ethtool is not installed: run scripts/setup-test-env")
        devices = [(self.server, f"p{n}") for n in range(1, self._routers + 1)]
        for links in self._links.values():
            for link in links:
                devices += [(link.host, link.device), (link.router, "lan"), (link.router, "wan")]
        for host, device in devices:
            host.sh(f"ethtool -K {device} tso off gso off gro off tx-udp-segmentation off")
        self._offloads_off = True

    def _router_hosts(self) -> list[Host]:
        return [link.router for links in self._links.values() for link in links]

    # -- servers --------------------------------------------------------------------------

    def start_coturn(self, user: str = "tunnel", password: str = "lab-turn-secret") -> Turn:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("coturn is not installed: run scripts/setup-test-env")
        # The server host gets a default route to a gateway that never answers (both ends of
        # its veth stay in the server namespace). ICE pairs a relay candidate with the peer's
        # private 10.x candidate too, so coturn relays a check there: on the internet that
        # packet leaves by the default route and is lost; with no route at all the send fails
        # at once (ENETUNREACH) and coturn tears the whole allocation down, relay path included.
        self.server.sh(
            "ip link add sink0 type veth peer name sink1",
            "ip link set sink0 up",
            "ip link set sink1 up",
            "ip addr add 192.0.2.1/30 dev sink0",
            "ip route add default via 192.0.2.2 dev sink0",
        )
        self.server.popen(
            [
                binary,
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                f"--listening-ip={PUBLIC_A}",
                f"--listening-ip={PUBLIC_B}",
                f"--listening-port={STUN_PORT}",
                f"--relay-ip={PUBLIC_A}",
                "--min-port=49152",
                "--max-port=49999",
                "--lt-cred-mech",
                "--realm=tunnel-py.test",
                f"--user={user}:{password}",
                "--no-multicast-peers",
                f"--pidfile=/tmp/{self._tag}-turnserver.pid",
                "--log-file=stdout",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        turn = Turn(user, password)
        deadline = time.monotonic() + 15
        while True:  # ready once it answers a binding request from the left host
            try:
                if self.stun_mapping(self.left, turn, timeout=0.5):
                    return turn
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def stun_mapping(self, host: Host, turn: Turn, timeout: float = 2.0) -> list[tuple[str, int]]:
        """The public address PUBLIC_A and PUBLIC_B each see for one local UDP socket of `host`."""
        return [(ip, port) for ip, port, _ in self._stun_check(host, timeout)]

    def stun_rtt(self, host: Host, turn: Turn, timeout: float = 5.0) -> float:
        """The shorter of two STUN round trips from `host` to the server host, in seconds."""
        return min(rtt for _, _, rtt in self._stun_check(host, timeout))

    def _stun_check(self, host: Host, timeout: float) -> list[tuple[str, int, float]]:
        servers = [f"{PUBLIC_A}:{STUN_PORT}", f"{PUBLIC_B}:{STUN_PORT}"]
        done = host.run(
            [sys.executable, "-m", "tests.nat.stun_check", "--timeout", str(timeout), *servers],
            timeout=timeout * 3 + 10,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stun_check from {host.name}: {done.stderr.strip()}")
        return [(ip, int(port), float(rtt)) for ip, port, rtt in json.loads(done.stdout)]

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        for host in self._namespaces:
            host.stop()
        for host in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=30)
        self._namespaces.clear()

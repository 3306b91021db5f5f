"""The contenders of ``tunnel-py bench``: ways from a local port to the bench server.

Direct TCP, ``socat``, ``ssh -L`` into a throwaway sshd, and each tunnel-py mode. A contender's
turn is :meth:`Contender.start`, then :meth:`Contender.open_session` once per session, then
:meth:`Contender.stop`, which stops every process the turn started and says what was odd
about how they ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunnelpy.bench import report as br
from tunnelpy.bench.harness import Peer
from tunnelpy.bench.modes import ModeSessions
from tunnelpy.bench.net import SETUP_DEADLINE, free_port


@dataclass
class Session:
    """One way through a contender: where to connect, the processes (role -> (pid, with
    descendants)) whose memory to sample, and for a tunnel the seconds until its receiver listened."""

    address: tuple[str, int]
    pids: dict[str, tuple[int, bool]] = field(default_factory=dict)
    listening_s: float | None = None


class Contender:
    """Direct TCP: sessions are plain connections. Subclasses start processes in :meth:`open_session`."""

    kind = "baseline"

    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: list[Peer] = []
        self.work = Path()

    async def start(self, work: Path) -> None:
        self.work, self.peers = work, []

    async def open_session(self, target: tuple[str, int], index: int) -> Session:
        return Session(target)

    def shared_pids(self) -> dict[str, tuple[int, bool]]:
        return {}

    async def stop(self) -> list[str]:
        """Stop every process of this turn; returns notes on odd exits and log warnings."""
        ended = [peer for peer in self.peers if _exited(peer)]  # before the turn stops anything itself
        notes = []
        for peer in self._stop_order():
            notes += await self._before_stop(peer)
            code = await peer.stop(timeout=10)
            if peer in ended:
                notes.append(f"{peer.name} had exited (code {code}) before the turn ended: {br.one_line(peer.tail(3))}")
            elif code not in (0, None) and self.kind == "tunnel":
                notes.append(f"{peer.name} exited with code {code} when stopped (0 expected)")
            warned = Counter(
                f"{e.get('level')} {e.get('event')}"
                for e in peer.events
                if e.get("level") in ("warning", "error", "critical")
            )
            notes += [f"{peer.name} logged {n}x {what}" for what, n in sorted(warned.items())]
        return notes

    def _stop_order(self) -> list[Peer]:
        return self.peers[::-1]  # newest first

    async def _before_stop(self, peer: Peer) -> list[str]:
        """Runs just before ``peer`` is stopped; returns notes."""
        return []

    async def _spawn(self, command: str, name: str, args: list[str]) -> Peer:
        peer = Peer(name, args, self.work, command=[command])
        self.peers.append(peer)
        return await peer.start()


def _exited(peer: Peer) -> bool:
    """True if the process has ended, even if asyncio has not reaped it yet (a zombie)."""
    if peer.proc is None or peer.proc.returncode is not None:
        return True
    try:
        return Path(f"/proc/{peer.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class Socat(Contender):
    def __init__(self, binary: str) -> None:
        super().__init__("socat")
        self.binary = binary

    async def open_session(self, target: tuple[str, int], index: int) -> Session:
        port = free_port()
        peer = await self._spawn(
            self.binary,
            f"socat{index}",
            [f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:{target[0]}:{target[1]}"],
        )
        assert peer.proc is not None
        return Session(("127.0.0.1", port), {"socat": (peer.proc.pid, True)})


class DumbPipe(Contender):
    """``dumbpipe`` (iroh's own TCP forwarder, Rust) if installed: ``listen-tcp`` next to the
    target, ``connect-tcp`` per session. Installed only by hand (``scripts/setup-dumbpipe``)."""

    TICKET = re.compile(r"\b((?:endpoint|node)[a-z0-9]{40,})\b")

    def __init__(self, binary: str) -> None:
        super().__init__("dumbpipe")
        self.binary = binary

    async def open_session(self, target: tuple[str, int], index: int) -> Session:
        listener = await self._spawn(
            self.binary, f"dumbpipe-listen{index}", ["listen-tcp", "--host", f"{target[0]}:{target[1]}"]
        )
        ticket = None
        async with asyncio.timeout(SETUP_DEADLINE):
            while ticket is None:
                if found := self.TICKET.search(listener.tail(50)):
                    ticket = found.group(1)
                else:
                    await asyncio.sleep(0.05)
        port = free_port()
        connector = await self._spawn(
            self.binary, f"dumbpipe-connect{index}", ["connect-tcp", "--addr", f"127.0.0.1:{port}", ticket]
        )
        assert listener.proc is not None and connector.proc is not None
        return Session(
            ("127.0.0.1", port),
            {"dumbpipe listen": (listener.proc.pid, False), "dumbpipe connect": (connector.proc.pid, False)},
        )


class SshForward(Contender):
    """``ssh -L`` into the run's throwaway sshd, one ssh process per session."""

    def __init__(self, sshd: SshServer) -> None:
        super().__init__(br.SSH)
        self.sshd = sshd

    async def open_session(self, target: tuple[str, int], index: int) -> Session:
        port, d = free_port(), self.sshd.dir
        peer = await self._spawn(
            self.sshd.ssh,
            f"ssh{index}",
            [
                "-N",
                "-F",
                "/dev/null",
                "-i",
                str(d / "user_key"),
                "-p",
                str(self.sshd.port),
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={d / 'known_hosts'}",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                f"127.0.0.1:{port}:{target[0]}:{target[1]}",
                f"{self.sshd.user}@{self.sshd.listen}",
            ],
        )
        assert peer.proc is not None
        return Session(("127.0.0.1", port), {"ssh client": (peer.proc.pid, False)})

    def shared_pids(self) -> dict[str, tuple[int, bool]]:
        return {"sshd": (self.sshd.pid, True)}


class Tunnel(Contender):
    """A tunnel-py mode: a fresh :class:`ModeSessions` per turn, one receiver (and so one worker) per session."""

    kind = "tunnel"
    SELF_EXIT_DEADLINE = 10.0

    def __init__(self, name: str, new_sessions: Callable[[], ModeSessions]) -> None:
        super().__init__(name)
        self.new_sessions = new_sessions
        self.sessions = new_sessions()
        self.senders: list[Peer] = []

    async def start(self, work: Path) -> None:
        await super().start(work)
        self.sessions, self.senders = self.new_sessions(), []
        await self.sessions.start(work, self.peers)

    async def open_session(self, target: tuple[str, int], index: int) -> Session:
        started = time.perf_counter()
        receiver, address, sender = await self.sessions.open_session(
            self.work, self.peers, f"tcp://{target[0]}:{target[1]}", index
        )
        listening = time.perf_counter() - started
        if sender not in self.senders:
            self.senders.append(sender)
        assert receiver.proc is not None and sender.proc is not None
        # The worker's pid comes from its worker.ready event in the sender's log. An iroh sender serves
        # many sessions (the receiver names its one); a copy-paste sender serves only this one.
        accepted = receiver.find("receiver.session_accepted")
        ready = await sender.wait_event(
            "worker.ready", timeout=SETUP_DEADLINE, **({"session_id": accepted["session_id"]} if accepted else {})
        )
        return Session(
            address,
            {
                "supervisor": (sender.proc.pid, False),
                "worker": (ready["pid"], False),
                "receiver": (receiver.proc.pid, False),
            },
            listening,
        )

    def _stop_order(self) -> list[Peer]:
        # Receivers first: a copy-paste sender must then end by itself, its one session over.
        return [peer for peer in self.peers[::-1] if peer not in self.senders] + self.senders[::-1]

    async def _before_stop(self, peer: Peer) -> list[str]:
        if peer not in self.senders or not self.sessions.sender_ends_with_session or _exited(peer):
            return []
        try:
            await peer.wait(timeout=self.SELF_EXIT_DEADLINE)
        except TimeoutError:
            return [
                f"{peer.name} still ran {self.SELF_EXIT_DEADLINE:.0f} s after its receiver stopped "
                "(a copy-paste sender should exit after its one session)"
            ]
        return []


# ---- the throwaway sshd for ssh -L ------------------------------------------------------------------------


class SshServer:
    """sshd -D on ``listen`` (127.0.0.1) as the current user, with its own config, host key and user key
    in ``dir``; ``prefix`` runs it through another command (``ip netns exec NS``: the NAT lab)."""

    def __init__(
        self, work: Path, sshd: str, ssh: str, keygen: str, listen: str = "127.0.0.1", prefix: tuple[str, ...] = ()
    ) -> None:
        self.dir, self.sshd, self.ssh, self.keygen = work / "ssh", sshd, ssh, keygen
        self.port, self.user, self.pid = free_port(), pwd.getpwuid(os.getuid()).pw_name, 0
        self.listen, self.prefix = listen, prefix
        self.peer: Peer | None = None
        self.notes: list[str] = []

    async def start(self) -> None:
        self.dir.mkdir(mode=0o700)
        for key in ("host_key", "user_key"):
            await _run([self.keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / key)])
        host_pub = (self.dir / "host_key.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[{self.listen}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        shutil.copy(self.dir / "user_key.pub", self.dir / "authorized_keys")
        (self.dir / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.listen}",
                    f"HostKey {self.dir / 'host_key'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "StrictModes no",
                    "PidFile none",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        if os.geteuid() == 0 and not Path("/run/sshd").exists():
            # A root sshd refuses to start without its privilege-separation directory, which the
            # openssh-server service creates at boot; a container that never ran the service lacks it.
            Path("/run/sshd").mkdir(mode=0o755)
            self.notes.append("created /run/sshd (sshd's privilege-separation directory, missing here)")
        self.peer = await Peer(
            "sshd", ["-D", "-e", "-f", str(self.dir / "sshd_config")], self.dir, command=[*self.prefix, self.sshd]
        ).start()
        assert self.peer.proc is not None
        self.pid = self.peer.proc.pid
        async with asyncio.timeout(SETUP_DEADLINE):
            while not await _banner_seen((self.listen, self.port)):
                if self.peer.proc.returncode is not None:
                    raise RuntimeError(f"sshd exited ({self.peer.proc.returncode}):\n{self.peer.tail()}")
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.peer is not None:
            await self.peer.stop(timeout=10)


async def _banner_seen(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection(*address)
        try:
            return (await reader.readline()).startswith(b"SSH-")
        finally:
            writer.close()
    return False


async def _run(command: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(SETUP_DEADLINE):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")

"""One-stream throughput across a shaped link: ssh -L and the tunnel-py modes, side by side.

    scripts/netem-bench [--profile DELAY_MS:LOSS_PCT ...] [--seconds S] [--contenders a,b,...] [--json F]

The NAT lab (tests/nat/lab.py) is built once: the far side (the source, sshd, the senders) runs
on the lab's public server host, the near side (ssh clients, receivers, the reading client) on
a host behind a cone NAT; tc netem shapes both directions of the link between them (RTT = 2 x
DELAY_MS, LOSS_PCT each way). Each contender gets the same link in the same run; the figure is
MB/s read by one TCP client in --seconds from its first byte (download: source -> client).
This is a measurement, never a test: nothing here asserts a speed.

The delay is a user-space delay line (tests/nat/delay.py: the kernels here lack tc netem); it
moves some 40,000-50,000 packets/s on a loaded 2-core box, so figures close to the "direct TCP"
row (the same link without any tunnel) are the delay line's ceiling, not the contender's.

The near side runs as a second process of this module inside the NAT'd host (`--near`), so its
127.0.0.1 is that host's, where the receivers and ssh -L listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.nat.lab import PUBLIC_A, Lab, NatKind
from tests.nat.traffic import start_source
from tunnelpy.bench.contenders import SshForward, SshServer
from tunnelpy.bench.harness import Peer, listening_address, start_receiver, start_sender
from tunnelpy.bench.manual_pair import ManualPair
from tunnelpy.bench.modes import SENDER_ALLOWS

CONTENDERS = ("direct TCP", "ssh -L", "iroh", "iroh bbr3", "iroh tuned", "iroh-manual", "custom-manual")
# "iroh bbr3": iroh mode with --congestion bbr3 on both sides (ssh -L runs over the kernel's TCP
# congestion control, printed with the table; BBR there does not slow down for random loss)
DEFAULT_PROFILES = ("25:0", "25:1")
TRANSPORT = {
    "iroh": [],
    "iroh bbr3": ["--congestion", "bbr3"],
    "iroh tuned": ["--congestion", "bbr3", "--receive-window", str(16 << 20), "--send-window", str(32 << 20)],
}
SOURCE_BYTES = 1 << 40  # never runs out within a measurement


async def _open(name: str, work: Path, peers: list[Peer], far: list[str], source_port: int, stun: str):
    """Start contender `name`; returns (local address, what to stop besides `peers`)."""
    source = f"tcp://127.0.0.1:{source_port}"
    if name == "direct TCP":  # no tunnel: what the shaped link (and its delay line) carries at most
        return (PUBLIC_A, source_port), []
    if name == "ssh -L":
        tools = [shutil.which(t, path=f"{os.environ.get('PATH', '')}:/usr/sbin") for t in ("sshd", "ssh", "ssh-keygen")]
        if not all(tools):
            raise RuntimeError("openssh (sshd, ssh, ssh-keygen) is not installed")
        sshd = SshServer(work, *tools, listen=PUBLIC_A, prefix=tuple(far))  # type: ignore[arg-type]
        await sshd.start()
        forward = SshForward(sshd)
        await forward.start(work)
        session = await forward.open_session(("127.0.0.1", source_port), 1)
        return session.address, [forward.stop, sshd.stop]
    if name in TRANSPORT:
        transport = TRANSPORT[name]
        _, ticket = await start_sender(
            work, peers, bind=f"{PUBLIC_A}:0", prefix=far, extra=["--allow-any-receiver", *SENDER_ALLOWS, *transport]
        )
        _, address = await start_receiver(work, peers, ticket, source, extra=["--bind", "0.0.0.0:0", *transport])
        assert address is not None
        return address, []
    if name == "iroh-manual":
        sender_args = [*SENDER_ALLOWS, "--no-stun", "--bind", f"{PUBLIC_A}:0"]
        receiver_args = ["--no-stun", "--bind", "0.0.0.0:0"]
    elif name == "custom-manual":
        sender_args = [*SENDER_ALLOWS, "--stun-server", stun]
        receiver_args = ["--stun-server", stun]
    else:
        raise ValueError(f"unknown contender {name!r} (one of {', '.join(CONTENDERS)})")
    pair_dir = work / "pair"
    pair_dir.mkdir()
    pair = ManualPair(pair_dir, peers, name, source, sender_args, receiver_args, sender_prefix=far)
    receiver, _ = await pair.start()
    return await listening_address(receiver, timeout=30), []


async def _near(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Runs inside the NAT'd host: every contender in turn, one reading client each."""
    from tests.nat.traffic import fetch

    far = ["ip", "netns", "exec", args.far]
    results: dict[str, dict[str, object]] = {}
    for name in args.contenders:
        peers: list[Peer] = []
        stops: list = []  # type: ignore[type-arg]
        with tempfile.TemporaryDirectory(prefix="netem-") as tmp:
            work = Path(tmp)
            if args.logs:  # keep the peers' logs: one folder per link profile and contender
                work = args.logs / args.label.replace(" ", "_").replace(",", "") / name.replace(" ", "_")
                work.mkdir(parents=True, exist_ok=True)
            try:
                address, stops = await _open(name, work, peers, far, args.source_port, args.stun)
                result = await asyncio.to_thread(fetch, f"{address[0]}:{address[1]}", 30.0, args.seconds)
                results[name] = result
            except Exception as exc:  # one contender's failure is a row of the table, not the end
                results[name] = {"error": " ".join(str(exc).split())[:300]}
            finally:
                for stop in stops:
                    await stop()
                for peer in reversed(peers):
                    await peer.stop(timeout=10)
    return results


def _table(rows: list[tuple[str, dict[str, dict[str, object]]]]) -> str:
    lines = ["| link | contender | MB/s | x ssh -L |", "|---|---|---|---|"]
    for profile, results in rows:
        ssh = results.get("ssh -L", {}).get("mb_s")
        for name, result in results.items():
            if "error" in result:
                lines.append(f"| {profile} | {name} | failed: {result['error']} | |")
                continue
            rate = float(result["mb_s"])  # type: ignore[arg-type]
            ratio = f"{rate / float(ssh):.2f}x" if ssh else "-"  # type: ignore[arg-type]
            lines.append(f"| {profile} | {name} | {rate:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/netem-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        action="append",
        help="DELAY_MS:LOSS_PCT, one-way delay and loss each way (repeatable; "
        f"default: {' and '.join(DEFAULT_PROFILES)})",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="read time per contender (default 10)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, default: all")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--logs", type=Path, help="keep every peer's log under this folder")
    parser.add_argument("--near", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--far", help=argparse.SUPPRESS)
    parser.add_argument("--source-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stun", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if args.near:
        print(json.dumps(asyncio.run(_near(args))))
        return 0
    lab = Lab(NatKind.CONE, NatKind.CONE)
    rows = []
    try:
        turn = lab.start_coturn()
        source_port = start_source(lab.server, SOURCE_BYTES, listen="0.0.0.0")
        for profile in args.profile or DEFAULT_PROFILES:
            delay, loss = (float(x) for x in profile.split(":"))
            lab.shape(delay, loss)
            label = f"RTT {2 * delay:g} ms, loss {loss:g}%"
            print(f"netem-bench: {label} ...", file=sys.stderr, flush=True)
            done = lab.left.run(
                [
                    sys.executable,
                    "-m",
                    "tests.nat.netem_bench",
                    "--near",
                    "--far",
                    lab.server.name,
                    "--source-port",
                    str(source_port),
                    "--stun",
                    turn.stun,
                    "--seconds",
                    str(args.seconds),
                    "--contenders",
                    ",".join(args.contenders),
                    "--label",
                    label,
                    *(["--logs", str(args.logs.resolve())] if args.logs else []),
                ],
                timeout=len(args.contenders) * (args.seconds + 90),
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"near side failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
            rows.append((label, json.loads(done.stdout.strip().splitlines()[-1])))
    finally:
        lab.close()
    tcp = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    print(f"ssh -L over the kernel's TCP congestion control: {tcp}")
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps([{"link": label, "results": r} for label, r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

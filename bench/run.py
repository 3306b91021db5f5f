"""``tunnel-py bench``: the tunnel next to direct TCP, ``socat`` and ``ssh -L``, all on 127.0.0.1.

One bench server (:mod:`~tunnelpy.bench.net`) sits behind every contender
(:mod:`~tunnelpy.bench.contenders`; the tunnel modes are in
:mod:`~tunnelpy.bench.modes`). Each repeat gives every contender one turn, in an
order rotated per repeat so machine drift hits all alike. A turn starts the contender's
processes (a throwaway sshd is shared by the whole run), times session setup, one-stream
upload and download, ping-pong latency, 1/2/4 concurrent sessions, and samples RSS/PSS
(:mod:`~tunnelpy.bench.memory`); then stops every process it started, even when it
failed. :mod:`~tunnelpy.bench.report` turns the figures into the table, the JSON and
the PNG. Nothing is installed and traffic goes only to loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tunnelpy.bench import plot
from tunnelpy.bench import report as br
from tunnelpy.bench.contenders import Contender, DumbPipe, Socat, SshForward, SshServer, Tunnel
from tunnelpy.bench.idle import measure_idle_sessions, render_idle
from tunnelpy.bench.memory import peak_memory, read_cpus, record_cpu, record_memory
from tunnelpy.bench.modes import SESSIONS, unavailable
from tunnelpy.bench.net import MESSAGE_BYTES, BenchServer, download, first_echo, ping_pong, upload
from tunnelpy.common.errors import ExitCode, TunnelError
from tunnelpy.common.modes import Mode

LATENCY_DEADLINE = 120.0
# Where scripts/setup-dumbpipe installs it (searched after PATH).
DUMBPIPE_DIR = Path(os.environ.get("TUNNELPY_CACHE", "/var/cache/tunnel-py")) / "dumbpipe" / "bin"
BENCH_ERRORS = (OSError, RuntimeError, TimeoutError, EOFError)


# ---- one turn, the run, the command ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    size_mb: int
    repeat: int
    rounds: int
    modes: tuple[Mode, ...]
    without: frozenset[str] = frozenset()  # baselines left out (--without)

    @property
    def transfer_deadline(self) -> float:
        return 30.0 + self.size_mb  # a contender slower than ~1 MB/s is reported as failed


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # progress; the table goes to stdout


async def measure(contender: Contender, target: tuple[str, int], settings: Settings, metrics: dict[str, float]) -> None:
    """Fill ``metrics`` step by step, so a failure keeps the figures measured before it."""
    size, deadline = settings.size_mb * 1_000_000, settings.transfer_deadline
    started = time.perf_counter()
    first = await contender.open_session(target, 1)
    await first_echo(first.address)
    metrics["setup_s"] = time.perf_counter() - started
    if first.listening_s is not None:
        metrics["listening_s"] = first.listening_s
    pids = {**contender.shared_pids(), **first.pids}
    record_memory(metrics, "idle", pids)
    cpu_before = read_cpus(pids)
    async with peak_memory(pids) as peaks:
        async with asyncio.timeout(deadline):
            metrics["up_MBps"] = await upload(first.address, size)
        async with asyncio.timeout(deadline):
            metrics["down_MBps"] = await download(first.address, size)
    record_cpu(metrics, cpu_before, read_cpus(pids), 2 * size)
    record_memory(metrics, "load", pids, peaks)
    async with asyncio.timeout(LATENCY_DEADLINE):
        metrics["rtt_p50_us"], metrics["rtt_p99_us"] = await ping_pong(first.address, settings.rounds)
    sessions = [first]
    for count in br.SESSION_COUNTS:
        while len(sessions) < count:
            sessions.append(await contender.open_session(target, len(sessions) + 1))
            await first_echo(sessions[-1].address)
        started = time.perf_counter()
        async with asyncio.timeout(deadline), asyncio.TaskGroup() as tg:
            for session in sessions:
                tg.create_task(upload(session.address, size // count))
        metrics[f"sessions_{count}_MBps"] = size // count * count / (time.perf_counter() - started) / 1e6


async def run_turn(
    contender: Contender, target: tuple[str, int], settings: Settings, work: Path, repeat: int
) -> br.Run:
    run = br.Run(repeat)
    work.mkdir(parents=True)
    try:
        await contender.start(work)
        await measure(contender, target, settings, run.metrics)
    except BENCH_ERRORS as exc:
        run.error = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__).strip()
    finally:
        run.notes += await contender.stop()
    return run


LEFT_OUT = "skipped: left out (--without)"
BASELINES = ("socat", "dumbpipe", "ssh")


def _left_out(name: str, settings: Settings, found: object) -> str | None:
    if name in settings.without:
        return LEFT_OUT
    return None if found else br.NOT_INSTALLED


def dumbpipe_skipped(binary: str | None) -> str | None:
    """Why dumbpipe cannot run here, or None. It has no offline switch (its endpoints always
    look for n0's relays and discovery), so the bench runs it only where nothing but loopback
    exists: inside a network namespace holding only ``lo`` (``unshare -n``)."""
    if binary is None:
        return "skipped: not installed (scripts/setup-dumbpipe)"
    if not only_loopback():
        return "skipped: dumbpipe always contacts n0's relays; run the bench in `unshare -n` to include it"
    return None


def only_loopback() -> bool:
    """Whether this process sees no network interface but ``lo``."""
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return {line.split(":")[0].strip() for line in lines} == {"lo"}


def build_contenders(
    settings: Settings, work: Path
) -> tuple[list[Contender], list[br.ContenderResult], SshServer | None]:
    """Every contender that can run here, and the results list (with skipped rows) in display order."""
    results = [br.ContenderResult(br.DIRECT, "baseline")]
    contenders: list[Contender] = [Contender(br.DIRECT)]
    socat = None if "socat" in settings.without else shutil.which("socat")
    results.append(br.ContenderResult("socat", "baseline", _left_out("socat", settings, socat)))
    if socat:
        contenders.append(Socat(socat))
    dumbpipe = shutil.which("dumbpipe", path=f"{os.environ.get('PATH', '')}:{DUMBPIPE_DIR}")
    skipped = LEFT_OUT if "dumbpipe" in settings.without else dumbpipe_skipped(dumbpipe)
    results.append(br.ContenderResult("dumbpipe", "baseline", skipped))
    if dumbpipe and not skipped:
        contenders.append(DumbPipe(dumbpipe))
    tools = [
        shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
        for name in ("sshd", "ssh", "ssh-keygen")
    ]
    wanted = "ssh" not in settings.without
    sshd = SshServer(work, *tools) if all(tools) and wanted else None  # type: ignore[arg-type]
    results.append(br.ContenderResult(br.SSH, "baseline", _left_out("ssh", settings, sshd)))
    if sshd:
        contenders.append(SshForward(sshd))
    for name in settings.modes:
        new_sessions = SESSIONS.get(name)
        skipped = unavailable(name) if new_sessions else br.NOT_IMPLEMENTED
        results.append(br.ContenderResult(name, "tunnel", skipped))
        if new_sessions and not skipped:
            contenders.append(Tunnel(name, new_sessions))
    return contenders, results, sshd


async def bench(settings: Settings, work: Path) -> list[br.ContenderResult]:
    # SIGTERM unwinds like Ctrl-C, so every child (each in its own session) is still stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    contenders, results, sshd = build_contenders(settings, work)
    by_name = {result.name: result for result in results}
    async with BenchServer() as server, contextlib.AsyncExitStack() as stack:
        if sshd is not None:
            stack.push_async_callback(sshd.stop)
            try:
                await sshd.start()
            except BENCH_ERRORS as exc:
                contenders = [c for c in contenders if c.name != br.SSH]
                by_name[br.SSH].runs.append(br.Run(1, error=f"the throwaway sshd did not start: {exc}"))
            by_name[br.SSH].notes += sshd.notes
        for repeat in range(1, settings.repeat + 1):
            shift = (repeat - 1) % len(contenders)
            for order, contender in enumerate(contenders[shift:] + contenders[:shift], 1):
                say(f"repeat {repeat}/{settings.repeat}: {contender.name} ...")
                run = await run_turn(
                    contender, server.address, settings, work / f"r{repeat}-{contender.name.replace(' ', '')}", repeat
                )
                run.order = order
                say(f"  {run.error or 'ok'}")
                by_name[contender.name].runs.append(run)
    return results


def machine_info() -> dict[str, object]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--modes",
        type=_mode_list,
        default=tuple(SESSIONS),
        metavar="M1,M2",
        help=f"tunnel modes to measure, comma-separated, from {','.join(Mode)} (default: "
        f"{','.join(SESSIONS)}; a mode not implemented yet is shown as skipped)",
    )
    parser.add_argument(
        "--without",
        type=_baseline_list,
        default=frozenset(),
        metavar="B1,B2",
        help=f"baselines to leave out, comma-separated, from {','.join(BASELINES)} (direct always runs)",
    )
    parser.add_argument("--size", type=_positive, default=100, metavar="MB", help="MB per transfer (default: 100)")
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        metavar="N",
        help="turns per contender, alternated round-robin (default: 3)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=2000,
        metavar="N",
        help=f"ping-pong rounds of {MESSAGE_BYTES}-byte messages (default: 2000)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG bar chart (needs matplotlib)")
    parser.add_argument(
        "--idle-sessions",
        type=int,
        default=100,
        metavar="N",
        help="then hold N idle iroh sessions open and report the sender's memory (0 = skip; default: 100)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        help="keep the child processes' logs and keys here (default: a temporary directory)",
    )


def _mode_list(text: str) -> tuple[Mode, ...]:
    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in tuple(Mode)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(Mode)}"
        )
    return tuple(Mode(m) for m in names)


def _baseline_list(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if unknown := sorted(names - set(BASELINES)):
        choices = ", ".join(BASELINES)
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {', '.join(unknown)}; choose from {choices}")
    return names


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


async def _idle_sessions(count: int, work_root: Path | None) -> dict[str, object]:
    say(f"idle sessions: opening {count} ...")
    with tempfile.TemporaryDirectory(prefix="tpy-idle-", dir=work_root) as tmp:
        async with BenchServer() as server:
            try:
                return await measure_idle_sessions(Path(tmp), count, f"tcp://127.0.0.1:{server.address[1]}")
            except (*BENCH_ERRORS, TunnelError) as exc:
                return {"sessions": count, "error": str(exc) or type(exc).__name__}


def run_bench(args: argparse.Namespace) -> int:
    """Exit 0 when the report was produced and every tunnel turn worked; 1 if a tunnel mode failed."""
    if args.plot:
        plot.require_matplotlib()
    settings = Settings(args.size, args.repeat, args.rounds, args.modes, args.without)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.log_dir:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="bench-", dir=args.log_dir))
            say(f"logs and keys in {work}")
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tunnel-py-bench-")))
        try:
            results = asyncio.run(bench(settings, work))
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None  # SIGTERM: the CLI's exit code for an interrupted run
    report = br.build_report(
        results,
        machine_info(),
        {
            "size_mb": settings.size_mb,
            "repeat": settings.repeat,
            "rounds": settings.rounds,
            "message_bytes": MESSAGE_BYTES,
            "modes": list(settings.modes),
            "sessions": list(br.SESSION_COUNTS),
        },
        date,
        time.monotonic() - started,
    )
    if args.idle_sessions:
        report["idle_sessions"] = asyncio.run(_idle_sessions(args.idle_sessions, work_root=args.log_dir))
    print(br.render_table(report), flush=True)
    if "idle_sessions" in report:
        print("\n" + render_idle(report["idle_sessions"]), flush=True)
    if args.json:
        br.write_json(report, args.json)
    if args.plot:
        plot.write_plot(report, args.plot)
    failed = any(run.error for result in results if result.kind == "tunnel" for run in result.runs)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tunnel-py bench",
        description="Measure tunnel-py against direct TCP, socat and ssh -L on 127.0.0.1: one-stream "
        "throughput each way, ping-pong latency, session setup, 1/2/4 concurrent sessions and "
        "memory, with medians and min-max over alternated repeats.",
    )
    add_bench_arguments(parser)
    try:
        return run_bench(parser.parse_args(argv))
    except TunnelError as exc:
        print(f"tunnel-py bench: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``tunnel-py`` (sender, receiver, keys, status, demo) and ``tunnel-supervisor``.

Flags are generated from the option tables in :mod:`tunnelpy.common.options`, so the CLI,
the YAML keys and the help text cannot drift apart. What a person reads is printed by the
commands (``cli/``, the ``bench`` and ``demo`` commands in ``bench/``) and by the copy-paste
dialog (:mod:`tunnelpy.signaling.paste`: blocks on stdout, prompts on stderr); everything
else logs to stderr.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunnelpy.common import config as cfgmod
from tunnelpy.common import options as optmod
from tunnelpy.common.errors import ConfigError, ExitCode, TunnelError
from tunnelpy.common.merge import merge_receiver_values
from tunnelpy.common.modes import IMPLEMENTED, Mode
from tunnelpy.common.private_files import make_rundir, remove_stale_rundirs, write_private


def add_options(parser: argparse.ArgumentParser, options: Sequence[optmod.Option], mode: str | None) -> None:
    added: set[str] = set()
    for opt in options:
        if (mode is not None and mode not in opt.modes) or opt.flag in added:
            continue  # a key declared per mode (max_sessions) is one flag where every mode is offered
        added.add(opt.flag)
        help_text = opt.help_text
        if mode is None and (twins := [o for o in options if o.flag == opt.flag and o is not opt]):
            help_text = f"{opt.help} ({opt.modes_text()}: {opt.extras()}"
            help_text += "".join(f"; {o.modes_text()}: {o.extras()}" for o in twins) + ")"
        flags = (opt.flag, *opt.aliases)
        if opt.kind == "bool":
            parser.add_argument(*flags, dest=opt.key, action="store_true", default=None, help=help_text)
        elif opt.kind == "list":
            parser.add_argument(
                *flags, dest=opt.key, action="append", default=None, metavar=opt.metavar, help=help_text
            )
        else:
            kind = {"int": int, "float": float}.get(opt.kind, str)
            parser.add_argument(*flags, dest=opt.key, type=kind, default=None, metavar=opt.metavar, help=help_text)


def build_parser(bench_options: bool = True) -> argparse.ArgumentParser:
    """The ``tunnel-py`` parser; ``bench_options=False`` skips importing the bench (faster start)."""
    parser = argparse.ArgumentParser(
        prog="tunnel-py",
        description="Peer-to-peer TCP/UDP port forwarding. A sender exposes services behind NAT; a "
        "receiver asks for one (--source) and listens locally (--listen).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sender = sub.add_parser("sender", help="expose services to receivers (runs the supervisor)")
    sender_modes = sender.add_subparsers(dest="mode", required=True, metavar="MODE")
    for mode in IMPLEMENTED:
        p = sender_modes.add_parser(mode, help=mode.summary, description=mode.summary)
        p.add_argument("-c", "--config", help="YAML file with the same options (flags override it)")
        add_options(p, optmod.SENDER_OPTIONS, mode)

    receiver = sub.add_parser("receiver", help="reach a sender's service on a local address")
    receiver_modes = receiver.add_subparsers(dest="mode", required=True, metavar="MODE")
    for mode in IMPLEMENTED:
        p = receiver_modes.add_parser(mode, help=mode.summary, description=mode.summary)
        p.add_argument("-c", "--config", help="YAML file with the same options (flags override it)")
        add_options(p, optmod.RECEIVER_OPTIONS, mode)

    gen = sub.add_parser("generate-iroh-key", help="create a persistent iroh identity (mode 0600)")
    gen.add_argument("-o", "--output", required=True, help="file to write the secret to ('-' = stdout)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing file")
    show = sub.add_parser("show-iroh-node-id", help="print the EndpointId of an identity file")
    show.add_argument("-s", "--secret-file", required=True, help="identity file from generate-iroh-key")

    gen = sub.add_parser("generate-nostr-key", help="create a Nostr identity for nostr mode (mode 0600)")
    gen.add_argument("-o", "--output", required=True, help="file to write the nsec to ('-' = stdout, npub on stderr)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing file (its key is lost)")
    show = sub.add_parser("show-npub", help="print the npub of a Nostr key file")
    show.add_argument("-n", "--nsec-file", required=True, help="key file from generate-nostr-key")

    status = sub.add_parser("status", help="show a running supervisor's sessions")
    status.add_argument("--control", help=f"the supervisor's control socket (default: {cfgmod.default_control_path()})")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON (with its load)")
    probe = status.add_mutually_exclusive_group()
    probe.add_argument(
        "--check",
        dest="probe",
        action="store_const",
        const="ready",
        help="health probe: one line; exit 0 if the sender is online and not draining, 7 draining, 10 no answer",
    )
    probe.add_argument(
        "--alive", dest="probe", action="store_const", const="alive", help="health probe: exit 0 if it answers at all"
    )

    demo = sub.add_parser(
        "demo",
        help="run a sender, a receiver and an echo service on loopback and "
        "push TCP and UDP through a real tunnel (offline)",
    )
    demo.add_argument("--size", type=int, default=20, help="MB to push through the TCP tunnel (default: 20)")
    bench = sub.add_parser(
        "bench",
        help="measure throughput, latency, setup time and memory of each mode against direct, socat and ssh -L",
        description="Benchmark on loopback: every contender in one run, alternated, medians and min-max.",
    )
    if bench_options:
        from tunnelpy.bench.run import add_bench_arguments

        add_bench_arguments(bench)
    return parser


def _cli_values(args: argparse.Namespace, options: Sequence[optmod.Option]) -> dict[str, Any]:
    return {opt.key: getattr(args, opt.key, None) for opt in options}


def run_sender(config: cfgmod.SenderConfig) -> int:
    # Imported here: a receiver's start (part of its session setup time) needs none of them.
    import shutil
    import tempfile
    from multiprocessing import util as mp_util

    from tunnelpy.common.logs import configure_logging
    from tunnelpy.supervisor.launcher import WorkerLauncher

    configure_logging("supervisor", fmt=config.log_format, level=config.log_level)
    if not Mode(config.mode).implemented:
        raise ConfigError(f"mode {config.mode!r} is not implemented yet; use one of {', '.join(IMPLEMENTED)}")
    # One private run folder (worker sockets, multiprocessing's own temp folder): removed at exit
    # after multiprocessing removed its folder inside (a lower exit priority runs later), and by
    # the next supervisor if this one is SIGKILLed.
    remove_stale_rundirs()
    rundir = make_rundir()
    tempfile.tempdir = str(rundir)
    mp_util.Finalize(None, shutil.rmtree, args=(rundir,), kwargs={"ignore_errors": True}, exitpriority=-1000)
    launcher = WorkerLauncher()
    launcher.start()  # before any runtime exists in this process (stack-notes §2)

    import uvloop

    from tunnelpy.supervisor.arbiter import Supervisor
    from tunnelpy.supervisor.front_iroh import IrohFrontDoor
    from tunnelpy.supervisor.front_manual import ManualFrontDoor

    async def serve() -> int:
        manual = Mode(config.mode).one_shot
        supervisor = Supervisor(config, launcher, rundir, one_shot=manual)
        front: Any = ManualFrontDoor if manual else IrohFrontDoor
        if config.mode == Mode.NOSTR:
            from tunnelpy.supervisor.front_nostr import NostrFrontDoor

            front = NostrFrontDoor
        return await supervisor.run(lambda service: front(config, service))

    return uvloop.run(serve())


def run_receiver(args: argparse.Namespace) -> int:
    import uvloop

    from tunnelpy.common.logs import configure_logging

    raw = merge_receiver_values(args.mode, _cli_values(args, optmod.RECEIVER_OPTIONS), args.config)
    config = cfgmod.build_receiver_config(raw)
    quiet = config.quiet and config.log_level in ("debug", "info")  # --quiet: warnings and errors only
    configure_logging("receiver", fmt=config.log_format, level="warning" if quiet else config.log_level)
    if config.mode == Mode.IROH:
        from tunnelpy.worker.receiver.iroh_mode import run_receiver as run
    elif config.mode == Mode.NOSTR:
        from tunnelpy.worker.receiver.nostr_mode import run_nostr_receiver as run
    else:
        from tunnelpy.worker.receiver.manual_modes import run_manual_receiver as run
    return uvloop.run(run(config))


def generate_iroh_key(output: str, force: bool) -> int:
    import secrets

    from tunnelpy.worker.transport.iroh_transport import endpoint_id_of

    key = secrets.token_bytes(32)
    secret = base64.b64encode(key).decode()
    endpoint_id = endpoint_id_of(key)
    if output == "-":
        print(secret)
        print(f"EndpointId: {endpoint_id}", file=sys.stderr)
        return 0
    path = Path(output)
    if path.exists() and not force:
        raise ConfigError(f"--output {path} exists; pass --force to overwrite it")
    try:
        write_private(path, secret + "\n")
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write ({exc.strerror})") from exc
    print(f"EndpointId: {endpoint_id}")
    return 0


def show_iroh_node_id(secret_file: str) -> int:
    from tunnelpy.worker.transport.iroh_transport import decode_secret, endpoint_id_of

    try:
        text = Path(secret_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--secret-file {secret_file}: cannot read ({exc.strerror})") from exc
    print(endpoint_id_of(decode_secret(text, f"--secret-file {secret_file}")))
    return 0


def generate_nostr_key(output: str, force: bool) -> int:
    from tunnelpy.signaling import nostr_keys

    if output == "-":
        nsec, npub = nostr_keys.generate_keys()
        print(nsec)
        print(f"npub: {npub}", file=sys.stderr)
        return 0
    print(f"npub: {nostr_keys.generate_key_file(Path(output), force=force)}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "sender":
        values = _cli_values(args, optmod.SENDER_OPTIONS)
        return run_sender(cfgmod.sender_config_from(args.mode, values, args.config))
    if args.command == "receiver":
        return run_receiver(args)
    if args.command == "generate-iroh-key":
        return generate_iroh_key(args.output, args.force)
    if args.command == "show-iroh-node-id":
        return show_iroh_node_id(args.secret_file)
    if args.command == "generate-nostr-key":
        return generate_nostr_key(args.output, args.force)
    if args.command == "show-npub":
        from tunnelpy.signaling.nostr_keys import show_npub

        print(show_npub(Path(args.nsec_file), "--nsec-file"))
        return 0
    if args.command == "status":
        from tunnelpy.cli.status import show_status

        control = Path(args.control) if args.control else cfgmod.default_control_path()
        return show_status(control, args.json, args.probe)
    if args.command == "bench":
        from tunnelpy.bench.run import run_bench

        return run_bench(args)
    if args.command == "demo":
        from tunnelpy.bench.demo import run_demo

        return run_demo(args.size)
    raise AssertionError(args.command)


def _run(func, *args: Any) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(func(*args))
    except TunnelError as exc:
        # One line, whatever a library put in the message (iroh's errors span several).
        print(f"tunnel-py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(bench_options=argv[:1] == ["bench"]).parse_args(argv)
    return _run(dispatch, args)


def build_supervisor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunnel-supervisor",
        description="Run a tunnel-py sender from a YAML config (flags, where given, override the file).",
    )
    parser.add_argument("-c", "--config", required=True, help="sender YAML (see deploy/examples/sender.yaml)")
    add_options(parser, optmod.SENDER_OPTIONS, None)
    return parser


def supervisor_main(argv: Sequence[str] | None = None) -> int:
    args = build_supervisor_parser().parse_args(argv)

    def run() -> int:
        values = _cli_values(args, optmod.SENDER_OPTIONS)
        return run_sender(cfgmod.sender_config_from(None, values, args.config))

    return _run(run)


if __name__ == "__main__":
    sys.exit(main())

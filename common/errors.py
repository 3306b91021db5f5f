"""The exception hierarchy and the exit-code contract, read in one place.

Per-connection failures are logged and contained; session-fatal ones become an
:class:`ExitCode`. Every error a user can meet carries a message that says what to do.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of every tunnel-py process (CLI, supervisor, worker, receiver)."""

    OK = 0
    ERROR = 1  # unexpected failure; the log says why
    CONFIG = 2  # bad flag, config key or input: fix it and run again (argparse uses 2 too)
    UNAUTHORIZED = 3  # the sender does not know this receiver's EndpointId
    NOT_ALLOWED = 4  # the requested source is outside the sender's allow-lists
    AT_CAPACITY = 5  # the sender has --max-sessions sessions already: retry later
    VERSION_MISMATCH = 6  # peers speak different protocol versions: upgrade one side
    DRAINING = 7  # the sender is shutting down: retry later or elsewhere
    CONNECT_FAILED = 10  # could not reach the peer within the deadline
    CONNECTION_LOST = 11  # the peer connection died mid-session
    SOURCE_UNREACHABLE = 12  # the sender could not reach the requested source
    SUPERVISOR_GONE = 21  # a worker whose supervisor disappeared
    INTERRUPTED = 130  # stopped by Ctrl-C


class TunnelError(Exception):
    """Base of every error tunnel-py raises on purpose; ``exit_code`` tells the CLI what to return."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(TunnelError):
    """Bad configuration or input; the message names the flag or key and the fix."""

    exit_code = ExitCode.CONFIG


class ProtocolError(TunnelError):
    """A peer sent bytes that do not decode; names the message and what was wrong."""


class VersionMismatch(ProtocolError):
    exit_code = ExitCode.VERSION_MISMATCH


class SessionRefused(TunnelError):
    """The sender refused a session (the wire message is ``SessionRejected``); ``exit_code`` follows its reason."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConnectFailed(TunnelError):
    exit_code = ExitCode.CONNECT_FAILED


class ConnectionLost(TunnelError):
    """The transport connection is gone (closed by either side, timed out, reset)."""

    exit_code = ExitCode.CONNECTION_LOST


class StreamReset(TunnelError):
    """The peer reset one stream; only that stream's forwarding ends."""


class DatagramTooLarge(TunnelError):
    """A datagram above the connection's current maximum; send it framed on a stream."""

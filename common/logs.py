"""Structured logging, configured once per process.

JSON lines (orjson) by default and whenever stderr is not a TTY; a console renderer on a
TTY. ``role``, ``pid`` and ``session_id`` are bound through contextvars so every event of a
worker carries its session. Logs always go to stderr: stdout belongs to the CLI's own output
(copy-paste blocks, status tables, tickets).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson
import structlog

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(role: str, *, fmt: str = "auto", level: str = "info", **bound: Any) -> None:
    """Configure structlog for this process and bind ``role``, ``pid`` and ``bound`` values."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        if sys.stderr.isatty():  # erase a receiver's live status line first; it is redrawn below
            processors.append(lambda _logger, _name, line: "\r\x1b[2K" + line)
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid(), **bound)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)

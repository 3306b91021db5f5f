"""stdin/stdout glue of the copy-paste modes: print our block, read the peer's.

Blocks go to stdout and nothing else does (logs are on stderr), so two processes can be
wired with pipes or FIFOs. Reading works from a terminal, a pipe or a regular file, line by
line, so a deadline or Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys

from tunnelpy.common.errors import ConnectFailed
from tunnelpy.signaling.manual_blocks import BlockKind, BlockMessage, encode_block, read_block_async

PASTE_TIMEOUT = 600.0


class _FileLines:
    """Regular files (``< answer.txt``) cannot be watched by the event loop; they never block."""

    async def readline(self) -> bytes:
        return sys.stdin.buffer.readline()


async def _stdin_lines():  # type: ignore[no-untyped-def]
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not sys.stdin.isatty()):  # a file, /dev/null
        return _FileLines()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def emit_block(msg: BlockMessage, hint: str) -> None:
    """Print ``msg`` as a block on stdout, and a human hint on stderr."""
    if sys.stderr.isatty():
        print(hint, file=sys.stderr, flush=True)
    sys.stdout.write(encode_block(msg))
    sys.stdout.flush()


async def read_pasted(kind: BlockKind, timeout: float = PASTE_TIMEOUT) -> BlockMessage:
    """Read one block of ``kind`` from stdin within ``timeout`` seconds."""
    if sys.stdin.isatty():
        print(f"Paste the {kind.value} block from the other side, then press Enter:", file=sys.stderr, flush=True)
    try:
        async with asyncio.timeout(timeout):
            return await read_block_async(await _stdin_lines(), kind)
    except TimeoutError:
        raise ConnectFailed(f"no {kind.value} block was pasted within {timeout:.0f} s") from None

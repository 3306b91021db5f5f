"""The native transport as the modes use it: binds and the runtime-before-fork rule."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import run
from tunnelpy.common.config import NetOptions
from tunnelpy.worker.transport import iroh_transport


def test_bind_127_opens_no_wildcard_socket() -> None:
    async def main() -> None:
        for net in (
            NetOptions(no_relay=True, bind=("127.0.0.1", 0)),
            NetOptions(relay_urls=("https://relay.invalid",), no_portmap=True, bind=("127.0.0.1", 0)),
        ):
            endpoint = await iroh_transport.bind_endpoint(net, secret=None, alpns=[])
            try:
                sockets = endpoint.bound_sockets()
                assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets
            finally:
                await iroh_transport.close_endpoint(endpoint)

    run(main())


FORK_SCRIPT = textwrap.dedent(
    """
    import asyncio, multiprocessing
    from tunnelpy.worker import _native
    from tunnelpy.supervisor.launcher import WorkerLauncher
    from tunnelpy.common.config import NetOptions
    from tunnelpy.worker.transport import iroh_transport

    OFFLINE = NetOptions(no_relay=True, bind=("127.0.0.1", 0))

    def child(ticket, queue):
        async def main():
            ep = await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[])
            conn = await iroh_transport.connect(ep, ticket, b"t")
            stream = await conn.open_stream()
            await stream.write(b"ping")
            await stream.finish()
            queue.put(await stream.read(16))
            await iroh_transport.close_endpoint(ep)
        asyncio.run(main())

    if __name__ == "__main__":
        launcher = WorkerLauncher()
        assert not _native.runtime_started(), "a runtime before the forkserver"
        launcher.start()
        async def parent():
            ep = await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[b"t"])
            assert _native.runtime_started()
            ctx = multiprocessing.get_context("forkserver")
            queue = ctx.Queue()
            proc = ctx.Process(target=child, args=(ep.ticket(), queue))
            proc.start()
            conn = iroh_transport.IrohConnection(await ep.accept())
            stream = await conn.accept_stream()
            data = await stream.read(16)
            await stream.write(data.upper())
            await stream.finish()
            got = await asyncio.get_running_loop().run_in_executor(None, queue.get, True, 30)
            proc.join(30)
            await iroh_transport.close_endpoint(ep)
            return got, proc.exitcode
        got, code = asyncio.run(parent())
        assert got == b"PING" and code == 0, (got, code)
        print("ok")
    """
)


def test_a_forked_worker_works_while_the_supervisor_endpoint_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "fork_check.py"
    script.write_text(FORK_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

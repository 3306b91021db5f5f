"""The flapping guard with real worker processes that die at start (no sender CLI needed).

A real WorkerPool and SessionService spawn real processes that exit at once: after five
failed starts in a row the service stops spawning and refuses with the reason, logged once.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

import zmq.asyncio

from tests.support import run
from tunnelpy.common.allowlist import AllowLists, parse_networks
from tunnelpy.common.config import NetOptions, SenderConfig
from tunnelpy.supervisor.admission import Admission, Refusal, Refused
from tunnelpy.supervisor.pool import WorkerPool
from tunnelpy.supervisor.sessions import SessionService


class DyingLauncher:
    """Starts a real process per session that exits with code 3 before it is ready."""

    def __init__(self) -> None:
        self.spawned = 0

    def spawn(self, spec: object) -> multiprocessing.process.BaseProcess:
        self.spawned += 1
        process = multiprocessing.get_context("spawn").Process(target=os._exit, args=(3,))
        process.start()
        return process


def test_workers_dying_at_start_stop_the_spawning(tmp_path: Path) -> None:
    async def main() -> None:
        allowed = AllowLists(tcp=parse_networks(["127.0.0.1/32"], what="--allowed-tcp"))
        offline = NetOptions(no_relay=True)
        config = SenderConfig(mode="iroh", allowed=allowed, net=offline, authorized_keys=None, control=tmp_path / "c")
        admission = Admission(max_sessions=10, allowed=allowed)
        launcher = DyingLauncher()
        context = zmq.asyncio.Context()
        rundir = Path(tempfile.mkdtemp(dir=tmp_path))
        pool = WorkerPool(launcher, context, rundir, 10.0, on_reaped=lambda r: admission.release(r.session_id))  # type: ignore[arg-type]
        service = SessionService(config, admission, pool, one_shot=False)
        try:
            outcomes = [await service.open_session(f"r{n}", "tcp://127.0.0.1:22") for n in range(8)]
        finally:
            pool.close()
            context.term()
        assert all(isinstance(o, Refused) and o.reason is Refusal.INTERNAL for o in outcomes)
        assert [o.message for o in outcomes[:5]] == ["the sender's worker failed to start"] * 5  # type: ignore[union-attr]
        assert all("keep failing at start (5 in a row" in o.message for o in outcomes[5:])  # type: ignore[union-attr]
        assert launcher.spawned == 5  # no more processes once the pause began
        assert admission.active == 0  # every failed start gave its slot back

    run(main(), timeout=60)

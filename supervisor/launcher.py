"""Starting worker processes: a forkserver started before any runtime, heavy modules preloaded.

The forkserver is a fresh interpreter (exec'd, not forked from the supervisor) that imports
:mod:`tunnelpy.worker.main` (iroh, uvloop, zmq) once and then forks a worker per session in
milliseconds. It must be started before the supervisor creates its iroh endpoint, zmq
context or event loop (stack-notes §2); :meth:`WorkerLauncher.start` is called first thing.
The spec travels pickled over the forkserver's pipe, never on argv.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import signal

from tunnelpy.worker.main import WorkerSpec, worker_entry

# The ICE stack is preloaded too: forked workers share its pages and skip its import time.
PRELOAD = ["tunnelpy.worker.main", "tunnelpy.worker.ice", "tunnelpy.worker.quic_transport"]


class WorkerLauncher:
    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)

    def start(self) -> None:
        """Start the forkserver now, while this process runs no runtime yet."""
        from multiprocessing import forkserver

        forkserver.ensure_running()

    def spawn(self, spec: WorkerSpec) -> multiprocessing.context.ForkServerProcess:
        process = self._ctx.Process(
            target=worker_entry, args=(spec,), name=f"tunnel-py-worker-{spec.session_id}", daemon=False
        )
        process.start()
        return process


def describe_exit(exitcode: int | None) -> dict[str, object]:
    """Log fields for a worker's exit: ``exit_code`` or the ``signal`` name that killed it."""
    if exitcode is None:
        return {"exit_code": None}
    if exitcode < 0:
        try:
            return {"signal": signal.Signals(-exitcode).name}
        except ValueError:
            return {"signal": f"signal {-exitcode}"}
    return {"exit_code": exitcode}

"""Imported once, by the supervisor's forkserver, before it forks any worker.

Loads the workers' heavy modules (iroh, uvloop, zmq, aioice, aioquic, cryptography) so each
worker starts in milliseconds, then moves every object allocated so far into the garbage
collector's permanent generation: collections in a worker then never touch (and so never
copy) the pages it shares with the forkserver (https://docs.python.org/3/library/gc.html#gc.freeze).
"""

import gc

import tunnelpy.worker.process
import tunnelpy.worker.transport.ice
import tunnelpy.worker.transport.quic.connect  # noqa: F401

gc.collect()
gc.freeze()

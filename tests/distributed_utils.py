"""Run a function in N real gloo processes on 127.0.0.1 (no mocks of torch.distributed)."""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A port that was free a moment ago. Another process may take it before it is bound again: only for
    launchers that must be told a port up front (two `rice train --nnodes 2` nodes), whose tests retry."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
    # A bounded timeout: a rank that dies leaves the others failing in minutes, not hanging for gloo's 30.
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(minutes=5))
    fn(rank, world_size, *args)
    # Every rank has written its results before any leaves: a rank that is slow (a loaded machine) is waited for.
    dist.barrier()
    # Then leave without tearing anything down. Closing gloo's pairs and finalising the interpreter while a peer
    # (or gloo's own worker threads) still holds work aborts the process now and then ("terminate called without
    # an active exception", SIGABRT; seen on loaded machines even after the barrier). The results are on disk and
    # nothing after this point is under test, so the rank exits at once with status 0. A rank that raises never
    # gets here: torch.multiprocessing reports its traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_gloo(fn, world_size: int = 2, args: tuple = ()) -> None:
    """``fn(rank, world_size, *args)`` must be importable (module level); it writes its results to files.

    The rendezvous store is opened here on port 0 (the OS picks a free port and it stays bound while the ranks
    run), so no other process can take the port between choosing it and using it.
    """
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    try:
        mp.start_processes(_entry, args=(world_size, store.port, fn, args), nprocs=world_size, start_method="spawn")
    finally:
        del store

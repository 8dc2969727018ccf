"""Run a function in N real gloo processes on 127.0.0.1 (no mocks of torch.distributed)."""

from __future__ import annotations

import os
import socket
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
    try:
        fn(rank, world_size, *args)
        # Every rank finishes before any closes its connections: a peer that tears down early can make gloo
        # abort the other ("terminate called without an active exception", seen once in CI).
        if dist.is_initialized():
            dist.barrier()
    finally:
        dist.destroy_process_group()


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

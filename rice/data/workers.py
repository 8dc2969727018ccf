"""DataLoader worker set-up shared by the training and evaluation loaders."""

from __future__ import annotations

import torch


def single_threaded_worker(worker_id: int) -> None:
    """``worker_init_fn``: one intra-op thread per worker.

    Workers decode and transform one sample at a time; with torch's default (one thread per core) every worker
    would start a thread pool as large as the machine and, with the training process, oversubscribe the cores.
    """
    del worker_id  # same set-up in every worker
    torch.set_num_threads(1)

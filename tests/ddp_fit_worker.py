"""One torchrun rank of a real DDP training run: ``fit`` on a saved config, then save the weights this rank holds.

    python -m torch.distributed.run --standalone --nproc-per-node=2 -m tests.ddp_fit_worker CONFIG.yaml OUT_PREFIX

writes ``OUT_PREFIX.rank{r}.pt`` with the rank's starting and final weights and how many batches it trained on.
"""

from __future__ import annotations

import sys

import torch

from rice import distributed
from rice.config import load_config
from rice.train.engine import fit
from tests.training_watch import watch_model


def main(config_path: str, out_prefix: str) -> None:
    with watch_model() as seen:
        fit(load_config(config_path))
    rank = distributed.world_info().rank
    torch.save(
        {"initial": seen.initial, "final": seen.final(), "batches": len(seen.batches)}, f"{out_prefix}.rank{rank}.pt"
    )
    distributed.destroy()


if __name__ == "__main__":
    main(*sys.argv[1:])

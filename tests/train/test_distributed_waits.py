"""Distributed waits: rank-0-only work at the end holds no other rank; the collective timeout is a setting."""

from __future__ import annotations

import json
import os
import time

import torch.multiprocessing as mp

from rice import distributed
from rice.config import build_config
from tests.distributed_utils import free_port, run_gloo


def _train_and_stamp(rank: int, world_size: int, root: str, out: str, stamps: str) -> None:
    from rice.train.engine import fit

    cfg = build_config(
        base={
            "model": {"name": "rice_tiny", "pretrained": False},
            "data": {"root": root, "workers": 0},
            "train": {"batch_size": 2, "max_steps": 1, "out": out, "eval_at_end": True},
        }
    )
    fit(cfg)
    with open(os.path.join(stamps, f"rank{rank}.json"), "w") as handle:
        json.dump({"returned": time.time()}, handle)


def test_other_ranks_do_not_wait_for_the_rank_0_evaluation(synthetic_root, tmp_path):
    out, stamps = tmp_path / "run", tmp_path / "stamps"
    stamps.mkdir()
    run_gloo(_train_and_stamp, 2, (str(synthetic_root), str(out), str(stamps)))
    evaluated_at = (out / "eval.json").stat().st_mtime
    rank1_returned = json.loads((stamps / "rank1.json").read_text())["returned"]
    assert rank1_returned < evaluated_at  # rank 1 left while rank 0 was still evaluating
    assert json.loads((out / "eval.json").read_text())["num_queries"] == 12


def _wait_with_timeout(rank: int, port: int, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    distributed.init_from_env("cpu", timeout_minutes=0.03)  # about 2 s
    if rank == 1:
        time.sleep(8)  # rank 0 is left waiting longer than the timeout
        return
    start = time.monotonic()
    try:
        distributed.barrier()
        outcome = "returned"
    except RuntimeError:
        outcome = "timed out"
    with open(result, "w") as handle:
        json.dump({"outcome": outcome, "waited": time.monotonic() - start}, handle)


def test_dist_timeout_minutes_bounds_a_collective_wait(tmp_path):
    result = tmp_path / "rank0.json"
    mp.start_processes(_wait_with_timeout, args=(free_port(), str(result)), nprocs=2, start_method="spawn")
    outcome = json.loads(result.read_text())
    assert outcome["outcome"] == "timed out" and outcome["waited"] < 7

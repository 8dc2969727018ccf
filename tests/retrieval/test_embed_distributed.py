"""`rice embed` under real torchrun (2 ranks) writes exactly the embeddings of one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from rice.config import build_config
from rice.models import create_model
from rice.retrieval.shards import read_folder


def tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("rice_tiny")
    cfg = build_config(base={"model": {"name": "rice_tiny", "pretrained": False}})
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


def test_two_torchrun_ranks_equal_one_process(synthetic_root, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["rice", "embed", str(ckpt), str(synthetic_root / "imgs"), "--shard-size", "3", "--device", "cpu"]
    ranks = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "-m", *common,
             "--out", str(tmp_path / "two")]
    proc = subprocess.run(ranks, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two, single = read_folder(tmp_path / "two"), read_folder(tmp_path / "one")
    assert [i.id for i in two["items"]] == [i.id for i in single["items"]] and len(two["items"]) == 12
    np.testing.assert_array_equal(two["embeddings"], single["embeddings"])
    written = sorted(p.name for p in (tmp_path / "two").glob("shard-*.json"))
    assert written == [f"shard-{n:05d}.json" for n in range(4)]  # rank 0: shards 0, 2; rank 1: shards 1, 3

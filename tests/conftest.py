import os

import pytest
import torch

# Keep the suite polite on a 2-core CI machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic MovingFashion-layout dataset shared by the end-to-end tests."""
    from rice.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, num_products=12, videos_per_product=1, frames=8, size=32, seed=3)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, synthetic_root):
    """rice_tiny trained briefly (16 ICL steps, 2 frames per clip) on the synthetic data: the model behind the
    catalogue of the serving and scanning tests, trained once per session."""
    from pathlib import Path

    from rice.config import build_config
    from rice.train.engine import fit

    work = tmp_path_factory.mktemp("tiny_run")
    cfg = build_config(base={
        "data": {"root": str(synthetic_root), "workers": 0, "num_frames": 2}, "model": {"name": "rice_tiny"},
        "loss": {"losses": ["icl"]}, "train": {"out": str(work / "run"), "max_steps": 16, "batch_size": 8},
        "optim": {"warmup_steps": 4},
    })  # fmt: skip
    return Path(fit(cfg))

"""A rice_tiny checkpoint trained briefly on generated data, and that data: shared by the catalogue tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TRAIN_STEPS = 40


@pytest.fixture(scope="session")
def shop_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rice.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("shop")
    return write_synthetic_dataset(root, num_products=12, videos_per_product=2, frames=8, size=32, seed=5)


@pytest.fixture(scope="session")
def trained_checkpoint(shop_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rice_tiny with the PMD decoder (so --rerank works), trained TRAIN_STEPS steps on the CPU."""
    from rice.config import build_config
    from rice.train.engine import fit

    out = tmp_path_factory.mktemp("run")
    cfg = build_config(base={
        "model": {"name": "rice_tiny", "pretrained": False},
        "data": {"dataset": "movingfashion", "root": str(shop_data), "workers": 0, "num_frames": 4},
        "loss": {"losses": ["icl", "pmd"]},
        "train": {"batch_size": 12, "seed": 0, "max_steps": TRAIN_STEPS, "out": str(out), "device": "cpu",
                  "amp": "none", "save_every": 100000, "log_every": 1000},
    })  # fmt: skip
    return Path(fit(cfg))


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A native rice_tiny checkpoint with a PMD decoder, random weights (for format and plumbing tests)."""
    import torch

    from rice.config import build_config
    from rice.models import build_model

    torch.manual_seed(0)
    cfg = build_config(base={"model": {"name": "rice_tiny", "pretrained": False}, "data": {"num_frames": 4}})
    model = build_model(cfg.model, with_decoder=True)
    path = tmp_path_factory.mktemp("untrained") / "tiny.pt"
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


def shop_clips(shop_data: Path) -> list[tuple[Path, str]]:
    """(clip, the id of its shop image) for every test video."""
    test = json.loads((shop_data / "test.json").read_text())
    return [(shop_data / rec["video_paths"][0], Path(rec["img_path"]).stem) for rec in test.values()]

"""End to end: a tiny training run fed through the device stage (``data.normalize_on: device``, and
``data.decode_device: cuda`` run with the training device set to the CPU) takes the same steps as the default
worker-side path: same losses, seeded, on prepared frames (rice/data/device_stage.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rice.config import build_config
from rice.data.prepare import prepare_movingfashion
from rice.train.engine import fit


@pytest.fixture(scope="module")
def prepared_synthetic(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(shutil.copytree(synthetic_root, tmp_path_factory.mktemp("device_input") / "root"))
    prepare_movingfashion(root, workers=1, fps=8.0, progress=False)  # every frame of the 8-frame clips
    return root


def _losses(root: Path, out: Path, data: dict) -> list[float]:
    cfg = build_config(base={
        "data": {"root": str(root), "workers": 0, "num_frames": 4, "color_jitter": 0.3, **data},
        "model": {"name": "rice_tiny"}, "loss": {"losses": ["icl", "pmd", "pfr"]},
        "train": {"out": str(out), "max_steps": 3, "batch_size": 4, "log_every": 1, "device": "cpu", "seed": 7},
        "optim": {"warmup_steps": 1},
    })  # fmt: skip
    fit(cfg)
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_device_stage_trains_the_same_steps(prepared_synthetic: Path, tmp_path: Path) -> None:
    reference = _losses(prepared_synthetic, tmp_path / "worker", {})
    uint8 = _losses(prepared_synthetic, tmp_path / "uint8", {"normalize_on": "device"})
    jpeg = _losses(prepared_synthetic, tmp_path / "jpeg", {"decode_device": "cuda"})
    assert len(reference) == 3
    # Bit-identical inputs (tests/data/test_device_stage.py, test_gpu_decode_path.py) give the same steps.
    assert uint8 == pytest.approx(reference, rel=1e-6, abs=1e-7)
    assert jpeg == pytest.approx(reference, rel=1e-6, abs=1e-7)

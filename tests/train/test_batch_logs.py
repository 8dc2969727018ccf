"""Logs in batch jobs: with stderr in a file, a run prints a plain line every log_every steps while it runs, and
starts with a summary of what it trains."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from rice.config import build_config
from rice.models import build_model

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_a_run_written_to_a_file_shows_its_lines_before_the_end_and_a_summary_first(synthetic_root, tmp_path):
    out, log_path = tmp_path / "run", tmp_path / "train.log"
    args = ["train", "--root", str(synthetic_root), "--model", "rice_tiny", "--no-pretrained", "--batch-size", "2",
            "--out", str(out), "--workers", "0", "--max-steps", "25", "--losses", "icl",
            "--set", "train.log_every=5", "--set", "data.num_frames=2"]  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rice", *args], env=ENV, stdout=log, stderr=subprocess.STDOUT)
        seen_while_running = None
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            text = log_path.read_text()
            if "step 5/25" in text and seen_while_running is None:
                seen_while_running = text
            time.sleep(0.02)
        assert proc.wait(timeout=60) == 0, log_path.read_text()
    assert seen_while_running is not None, "no step line appeared in the file before the run ended"
    assert "step 25/25" not in seen_while_running  # read mid-way, not at the end
    text = log_path.read_text()
    steps = [int(m) for m in re.findall(r"^step (\d+)/25 ", text, flags=re.M)]
    assert steps == [5, 10, 15, 20, 25], text
    assert "━" not in text  # no progress bar drawn into the file

    # The summary, checked against values computed here.
    cfg = build_config(overrides=["model.name=rice_tiny", "model.pretrained=false"])
    params = sum(p.numel() for p in build_model(cfg.model).parameters())
    summary = text.split("step 5/25")[0]
    expected_lines = [
        "device cpu", "world size 1", "precision fp32", "batch: global 2 = 1 rank(s) x 2 per rank",
        "training pairs 12 (movingfashion, 2 frames per clip)", f"parameters {params:,}",
        "learning-rate groups: encoder", "lr 1.0e-03 wd 0.05", "recipe: losses icl, 25 steps",
    ]  # fmt: skip
    for expected in expected_lines:
        assert expected in summary, f"{expected!r} missing from the summary:\n{summary}"

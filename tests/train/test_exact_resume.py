"""A run killed at some step and resumed with `--resume latest` ends bit-identical to the uninterrupted run.

Every run is a real `rice train` process (one thread, so the arithmetic is the same in every run); the kill is a
real SIGKILL (or SIGTERM) sent while the run is mid-way; the final checkpoints are compared tensor by tensor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rice.checkpoint import read_checkpoint

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

# 12 synthetic pairs, batch 2: 6 batches per epoch (3 steps with grad_accum 2), so every run crosses epochs.
CASES = {
    "icl": ["--losses", "icl", "--max-steps", "8"],
    "rice-accum2-workers2": ["--losses", "icl,pmd,pfr", "--max-steps", "7", "--workers", "2",
                             "--set", "train.grad_accum=2"],  # fmt: skip
}


def train_args(root: Path, out: Path, case: str) -> list[str]:
    return [
        "train", "--root", str(root), "--model", "rice_tiny", "--no-pretrained", "--batch-size", "2",
        "--out", str(out), "--workers", "0", "--set", "optim.warmup_steps=2", "--set", "train.save_every=1",
        *CASES[case],
    ]  # fmt: skip


def rice(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rice", *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rice {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def interrupt(args: list[str], wait_for: Path, sig: int) -> subprocess.Popen:
    """Start `rice ARGS`, send ``sig`` as soon as ``wait_for`` exists (the run is then mid-way), wait for the end."""
    proc = subprocess.Popen([sys.executable, "-m", "rice", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not wait_for.exists():
        assert proc.poll() is None, f"the run ended before {wait_for.name}:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, sig) if sig == signal.SIGKILL else os.kill(proc.pid, sig)  # SIGKILL: DataLoader workers too
    proc.output = proc.communicate(timeout=600)[0]
    return proc


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), f"model tensor {key} differs"
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        for name in va:
            assert torch.equal(va[name], vb[name]), f"optimizer state {ka}.{name} differs"
    assert a["scheduler"] == b["scheduler"]


@pytest.fixture(scope="module")
def reference(synthetic_root, tmp_path_factory):
    """The uninterrupted run of each case, trained once for the module."""
    runs = {}

    def get(case: str) -> dict:
        if case not in runs:
            out = tmp_path_factory.mktemp(f"reference-{case}") / "run"
            rice(*train_args(synthetic_root, out, case))
            runs[case] = read_checkpoint(out / "last.pt")
        return runs[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_then_resume_latest_is_bit_identical(case, synthetic_root, tmp_path, reference):
    out = tmp_path / "run"
    args = train_args(synthetic_root, out, case)
    killed = interrupt(args, out / "step_3.pt", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    at = read_checkpoint(out / "last.pt")["step"]
    assert 2 <= at < reference(case)["step"]  # killed mid-way (last.pt may still hold step 2)

    resumed = rice(*args, "--resume", "latest")
    assert f"at step {at}" in resumed.stderr
    assert_same_state(reference(case), read_checkpoint(out / "last.pt"))


def test_sigterm_saves_and_exits_0_and_the_resumed_run_is_identical(synthetic_root, tmp_path, reference):
    out = tmp_path / "run"
    args = train_args(synthetic_root, out, "icl")
    stopped = interrupt(args, out / "step_2.pt", signal.SIGTERM)
    assert stopped.returncode == 0, stopped.output
    assert "stopped by SIGTERM" in stopped.output
    at = read_checkpoint(out / "last.pt")["step"]
    assert 2 <= at < reference("icl")["step"]
    rice(*args, "--resume", "latest")
    assert_same_state(reference("icl"), read_checkpoint(out / "last.pt"))

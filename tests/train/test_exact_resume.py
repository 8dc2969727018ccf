"""A run killed at some step and resumed with `--resume latest` ends bit-identical to the uninterrupted run.

Every run is a real `rice train` process (one thread, so the arithmetic is the same in every run); the kill is a
real SIGKILL (or SIGTERM) sent while the run is mid-way; the final checkpoints are compared tensor by tensor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rice.models.checkpoint_file import read_checkpoint

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
    """Start `rice ARGS`, send ``sig`` as soon as ``wait_for`` exists (the run is then mid-way), wait for the end.

    The signal goes to every process of the run: the launcher's group (DataLoader workers included) and, under
    torchrun, the rank processes, which torchrun starts in sessions of their own (found through /proc).
    """
    proc = subprocess.Popen([sys.executable, "-m", "rice", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not wait_for.exists():
        assert proc.poll() is None, f"the run ended before {wait_for.name}:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    ranks = run_pids(str(wait_for.parent))
    os.killpg(proc.pid, sig)
    for pid in ranks:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
    proc.output = proc.communicate(timeout=600)[0]
    return proc


def run_pids(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (the run's folder: launcher, torchrun and ranks)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "cmdline").read_bytes() and int(proc.name) != os.getpid():
                pids.append(int(proc.name))
    return pids


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
    """SIGTERM to the whole process group (as a scheduler sends it): DataLoader workers included."""
    out = tmp_path / "run"
    case = "rice-accum2-workers2"
    args = train_args(synthetic_root, out, case)
    stopped = interrupt(args, out / "step_2.pt", signal.SIGTERM)
    assert stopped.returncode == 0, stopped.output
    assert "stopped by SIGTERM" in stopped.output
    at = read_checkpoint(out / "last.pt")["step"]
    assert 2 <= at < reference(case)["step"]
    rice(*args, "--resume", "latest")
    assert_same_state(reference(case), read_checkpoint(out / "last.pt"))


# --- two ranks (real torchrun, gloo) ------------------------------------------------------------------------------
DDP_ARGS = ["--losses", "icl,pmd,pfr", "--max-steps", "12", "--nproc-per-node", "2"]  # 3 steps per epoch per rank


def ddp_args(root: Path, out: Path) -> list[str]:
    return [
        "train", "--root", str(root), "--model", "rice_tiny", "--no-pretrained", "--batch-size", "2",
        "--out", str(out), "--workers", "0", "--set", "optim.warmup_steps=2", "--set", "train.save_every=1",
        *DDP_ARGS,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ddp_reference(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-reference") / "run"
    rice(*ddp_args(synthetic_root, out))
    return read_checkpoint(out / "last.pt")


def test_two_ranks_sigkill_then_resume_latest_is_bit_identical(synthetic_root, tmp_path, ddp_reference):
    out = tmp_path / "run"
    args = ddp_args(synthetic_root, out)
    interrupt(args, out / "last.pt", signal.SIGKILL)  # the launcher, torchrun and both workers
    assert 1 <= read_checkpoint(out / "last.pt")["step"] < 12
    assert len(read_checkpoint(out / "last.pt")["rng"]) == 2  # each rank's RNG streams
    rice(*args, "--resume", "latest")
    assert_same_state(ddp_reference, read_checkpoint(out / "last.pt"))


def worker_pid(marker: str, local_rank: int) -> int | None:
    """The pid of the first-start torchrun worker ``local_rank`` whose command line mentions ``marker``."""
    for pid in run_pids(marker):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"LOCAL_RANK={local_rank}".encode() in environ and b"TORCHELASTIC_RESTART_COUNT=0" in environ:
                return pid
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker pid through /proc")
def test_max_restarts_a_killed_worker_is_restarted_and_the_run_matches(synthetic_root, tmp_path, ddp_reference):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rice", *ddp_args(synthetic_root, out), "--max-restarts", "1"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not (out / "step_1.pt").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = worker_pid(str(out), local_rank=1)
    assert pid is not None, "worker of rank 1 not found"
    os.kill(pid, signal.SIGKILL)
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    assert "resumed from" in output  # the restarted workers continued from the newest checkpoint
    assert_same_state(ddp_reference, read_checkpoint(out / "last.pt"))

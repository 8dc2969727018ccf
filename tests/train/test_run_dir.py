"""Run directories: an --out holding a run is refused without --resume/--overwrite; checkpoints honour the umask;
a truncated last.pt falls back to the newest intact step_N.pt; the training loop reads logged values rarely."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
import torch

import rice
from rice.config import build_config
from rice.models.checkpoint_file import atomic_save, read_checkpoint
from rice.train.checkpoint import find_resume
from rice.train.engine import fit


def _cfg(root, out, **train):
    return build_config(
        base={
            "model": {"name": "rice_tiny", "pretrained": False},
            "data": {"root": str(root), "workers": 0},
            "optim": {"warmup_steps": 1},
            "train": {"batch_size": 2, "max_steps": 2, "log_every": 1, "out": str(out), **train},
        }
    )


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_out_holding_a_run_is_refused_unless_resume_or_overwrite(synthetic_root, tmp_path):
    out = tmp_path / "run"
    fit(_cfg(synthetic_root, out, max_steps=3))
    before = (out / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run .*--resume latest.*--overwrite"):
        fit(_cfg(synthetic_root, out, max_steps=1))
    assert (out / "last.pt").read_bytes() == before and _steps(out) == [1, 2, 3]  # nothing touched

    fit(_cfg(synthetic_root, out, max_steps=1, overwrite=True))
    assert read_checkpoint(out / "last.pt")["step"] == 1
    assert _steps(out) == [1]  # the old run's log is gone, not appended to
    assert not (out / "step_2.pt").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoints_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_save({"x": torch.zeros(1)}, tmp_path / "ckpt.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ckpt.pt").stat().st_mode) == 0o666 & ~umask
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind


def test_truncated_last_pt_falls_back_to_the_newest_intact_step_checkpoint(synthetic_root, tmp_path, capfd):
    out = tmp_path / "run"
    fit(_cfg(synthetic_root, out, max_steps=4, save_every=2))
    at_step_4 = read_checkpoint(out / "step_4.pt")
    (out / "step_4.pt").rename(tmp_path / "step_4.pt")  # the newest intact file is now step_2.pt
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])  # a crash mid-copy on a filesystem without rename

    point = find_resume("latest", out)
    assert point.path.name == "step_2.pt" and "last.pt" in point.note and "step_2.pt" in point.note

    capfd.readouterr()
    fit(_cfg(synthetic_root, out, max_steps=4, save_every=2, resume="latest"))
    assert "unreadable; resuming from step_2.pt" in capfd.readouterr().err
    again = read_checkpoint(out / "last.pt")
    for key, value in at_step_4["model"].items():  # steps 3-4 replayed exactly
        assert torch.equal(value, again["model"][key]), key
    assert _steps(out) == [1, 2, 3, 4]  # records after the resumed step were dropped, then written again


def test_a_folder_with_only_broken_checkpoints_is_an_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="no intact checkpoint"):
        find_resume("latest", tmp_path)
    assert find_resume("latest", tmp_path / "empty") is None  # nothing there: a fresh start


def test_a_non_finite_loss_stops_the_run_before_any_checkpoint_stores_it(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(synthetic_root, out, max_steps=6, log_every=3, save_every=3)
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 1e30, "head_lr": 1e30})})
    with pytest.raises(FloatingPointError, match="non-finite .*loss between steps 1 and 3"):
        fit(cfg)
    for path in out.glob("*.pt"):  # whatever was saved holds finite weights only
        assert all(torch.isfinite(v).all() for v in read_checkpoint(path)["model"].values() if v.is_floating_point())


def test_logged_values_are_read_once_per_window_not_per_step(synthetic_root, tmp_path, monkeypatch):
    """Host reads (.item/.tolist/bool of a tensor) made by rice's code do not grow with the steps between logs.

    (On a GPU each is a sync that stalls the queue; torch's own CPU-side reads, such as AdamW's step counters,
    are not counted.)
    """
    package = os.path.dirname(rice.__file__)
    counts = {"reads": 0}
    for name in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counts["reads"] += sys._getframe(1).f_code.co_filename.startswith(package)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def reads(steps: int) -> int:
        counts["reads"] = 0
        fit(_cfg(synthetic_root, tmp_path / f"run{steps}", max_steps=steps, log_every=100, save_every=100))
        return counts["reads"]

    assert reads(2) == reads(5)  # 12 pairs / batch 2: both runs stay in the first epoch

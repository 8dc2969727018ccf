import json

import torch

from rice.config import build_config
from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit


def _cfg(root, out, **train):
    return build_config(
        base={
            "model": {"name": "rice_tiny", "pretrained": False},
            "data": {"root": str(root), "workers": 0},
            "optim": {"lr": 1e-3, "head_lr": 1e-3, "warmup_steps": 1},
            "train": {"batch_size": 4, "max_steps": 5, "save_every": 2, "log_every": 1, "out": str(out), **train},
        }
    )


def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(synthetic_root, tmp_path):
    # 12 pairs / batch 4 = 3 steps per epoch: step 2 is mid-epoch, step 5 is in the second epoch.
    full = fit(_cfg(synthetic_root, tmp_path / "full"))
    assert (tmp_path / "full" / "step_2.pt").is_file() and (tmp_path / "full" / "step_4.pt").is_file()
    assert read_checkpoint(full)["step"] == 5

    resumed = fit(_cfg(synthetic_root, tmp_path / "resumed", resume=str(tmp_path / "full" / "step_2.pt")))
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 4, 5]

    a, b = read_checkpoint(full), read_checkpoint(resumed)
    assert b["step"] == 5
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-5), key
    # The checkpoint carries the resolved config.
    assert a["config"]["train"]["batch_size"] == 4 and a["config"]["model"]["name"] == "rice_tiny"


def test_resume_latest_without_checkpoint_starts_fresh(synthetic_root, tmp_path):
    last = fit(_cfg(synthetic_root, tmp_path / "run", resume="latest", max_steps=1))
    assert read_checkpoint(last)["step"] == 1
    again = fit(_cfg(synthetic_root, tmp_path / "run", resume="latest", max_steps=2))
    assert read_checkpoint(again)["step"] == 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_grad_accumulation_and_autocast_run(synthetic_root, tmp_path):
    for amp in ("bf16", "fp16"):
        cfg = _cfg(synthetic_root, tmp_path / amp, max_steps=2, amp=amp, grad_accum=2, save_every=100)
        state = read_checkpoint(fit(cfg))
        assert state["step"] == 2
        assert (state["scaler"] is not None) == (amp == "fp16")  # fp16 needs a GradScaler, bf16 does not
        records = [json.loads(x) for x in (tmp_path / amp / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2] and all(r["loss"] > 0 for r in records)


def test_tensorboard_logs_when_installed_and_asked(synthetic_root, tmp_path):
    import pytest

    pytest.importorskip("tensorboard", reason="the optional extra rice[tensorboard] is not installed")
    fit(_cfg(synthetic_root, tmp_path / "tb", max_steps=1, tensorboard=True))
    assert any((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def test_eval_at_end_writes_the_table(synthetic_root, tmp_path):
    fit(_cfg(synthetic_root, tmp_path / "run", max_steps=1, eval_at_end=True))
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["num_queries"] == 12

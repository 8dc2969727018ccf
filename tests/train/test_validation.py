"""train.eval_every: R@k rows in metrics.jsonl, best.pt = the best step's weights, resume keeps the best score."""

from __future__ import annotations

import json

import pytest
import torch

from rice.config import build_config
from rice.retrieval.evaluate_model import evaluate_checkpoint
from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit


def run_config(root, out, *overrides: str):
    return build_config(overrides=[
        "model.name=rice_tiny", "model.pretrained=false", f"data.root={root}", "data.workers=0", "data.num_frames=2",
        f"train.out={out}", "train.device=cpu", "train.amp=none", "train.batch_size=4", "train.max_steps=4",
        "train.save_every=2", "train.eval_every=2", "loss.losses=[icl]", "eval.batch_size=8", *overrides,
    ])  # fmt: skip


def eval_rows(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval/R@1" in row]


def test_eval_every_logs_recalls_keeps_the_best_weights_and_resume_keeps_the_best_score(synthetic_root, tmp_path):
    out = tmp_path / "run"
    fit(run_config(synthetic_root, out))
    rows = eval_rows(out)
    assert [row["step"] for row in rows] == [2, 4]
    assert {row["eval_split"] for row in rows} == {"test"}  # synthetic MovingFashion has no val split
    for row in rows:  # each row is the score of that step's weights, evaluated independently
        results, _ = evaluate_checkpoint(out / f"step_{row['step']}.pt", split="test", device="cpu")
        for k in (1, 5, 10):
            assert row[f"eval/R@{k}"] == pytest.approx(results[f"R@{k}"], abs=1e-3)
    best_row = max(rows, key=lambda row: row["eval/R@1"])  # the first of equal scores, as `>` keeps
    best, step_ckpt = read_checkpoint(out / "best.pt"), read_checkpoint(out / f"step_{best_row['step']}.pt")
    assert best["step"] == best_row["step"] and best["best"]["R@1"] == pytest.approx(best_row["eval/R@1"], abs=1e-3)
    for name, value in step_ckpt["model"].items():
        assert torch.equal(best["model"][name], value), name
    assert json.loads((out / "best.json").read_text())["step"] == best_row["step"]
    last = read_checkpoint(out / "last.pt")

    # Resume from step 2 with a best score no evaluation can beat: best.pt must stay as it is.
    (out / "best.json").write_text(json.dumps({"step": best_row["step"], "R@1": 100.0}))
    before = (out / "best.pt").read_bytes()
    fit(run_config(synthetic_root, out, f"train.resume={out / 'step_2.pt'}"))
    assert (out / "best.pt").read_bytes() == before
    assert json.loads((out / "best.json").read_text())["R@1"] == 100.0
    assert [row["step"] for row in eval_rows(out)] == [2, 4]  # step 4 evaluated again, logged once
    # Validation does not disturb the training: the resumed run ends on the same weights.
    for name, value in read_checkpoint(out / "last.pt")["model"].items():
        assert torch.equal(last["model"][name], value), name

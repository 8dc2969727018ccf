"""Every baseline, and RICE with all three losses, trains and evaluates through the same commands."""

import json

import pytest
from typer.testing import CliRunner

from rice.cli import app


@pytest.mark.parametrize(
    "model, losses",
    [("swin_b_tiny", "icl"), ("timesformer_tiny", "icl"), ("fashionnet_tiny", "icl"), ("rice_tiny", "icl,pmd,pfr")],
)
def test_train_and_eval_through_the_cli(model, losses, synthetic_root, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--root", str(synthetic_root), "--model", model, "--losses", losses, "--max-steps", "2",
        "--batch-size", "4", "--out", str(run), "--workers", "0", "--set", "train.log_every=1",
        "--loss-weights", "icl=1,pmd=0.5,pfr=0.05",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for name in losses.split(","):
        assert all(f"{name}_loss" in r for r in records)  # each loss logged separately
    if "pmd" in losses:
        r = records[-1]
        assert r["loss"] == pytest.approx(r["icl_loss"] + 0.5 * r["pmd_loss"] + 0.05 * r["pfr_loss"], rel=1e-4)

    extra = ["--rerank", "5", "--rerank-fusion", "0.5"] if "pmd" in losses else []
    result = runner.invoke(app, ["eval", str(run / "last.pt"), "--json", str(tmp_path / "r.json"), *extra])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["num_queries"] == 12 and 0 <= out["R@1"] <= 100
    if extra:
        assert out["reranked"]["num_queries"] == 12
        # re-ranking only reorders the top 5, so R@5 and R@10 cannot change
        assert out["reranked"]["R@5"] == out["R@5"] and out["reranked"]["R@10"] == out["R@10"]


def test_losses_without_icl_is_a_clear_error(synthetic_root, tmp_path):
    result = CliRunner().invoke(app, ["train", "--root", str(synthetic_root), "--model", "rice_tiny",
                                      "--losses", "pmd", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2 and "must include 'icl'" in result.output


def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path):
    import torch

    runner = CliRunner()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"foo.weight": torch.zeros(2)}, foreign)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  name: [unclosed\n")
    cases = [
        (["eval", str(garbage)], str(garbage)),
        (["eval", str(foreign)], str(foreign)),
        (["eval", str(tmp_path / "missing.pt")], "missing.pt"),
        (["train", "--config", str(bad_yaml)], str(bad_yaml)),
        (["train", "--set", "optim.lrr=1"], "optim.lrr"),
    ]
    for args, fragment in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, result.output)

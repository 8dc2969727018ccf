"""The acceptance run of the foundation, at CI size: 60 steps of rice_tiny at batch 8 on a MovingFashion-layout
dataset that rice did not generate must beat chance several times over."""

import json

from typer.testing import CliRunner

from rice.cli import app
from tests.foreign_dataset import write_foreign_dataset


def test_rice_tiny_learns_in_60_steps_on_foreign_data(tmp_path):
    root = write_foreign_dataset(tmp_path / "mf", products=24)
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "--dataset", "movingfashion", "--root", str(root), "--losses", "icl", "--model", "rice_tiny",
        "--max-steps", "60", "--batch-size", "8", "--out", str(tmp_path / "run"), "--workers", "0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "run" / "last.pt"), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    recall = json.loads((tmp_path / "r.json").read_text())
    chance_r1 = 100.0 / 24
    assert recall["num_queries"] == 24
    assert recall["R@1"] >= 3 * chance_r1, recall

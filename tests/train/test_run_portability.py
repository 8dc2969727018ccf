"""A run can be used from any folder and its log stays readable: a relative ``--root`` is saved absolute (so
``rice eval RUN`` works elsewhere), and each bad sample file is listed once per run, later epochs give a count."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rice.cli import app
from tests.data.test_bad_images import bomb_png, truncated_jpeg


@pytest.fixture
def damaged_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A copy of the synthetic data whose training set holds a bomb PNG and a truncated JPEG."""
    root = tmp_path / "work" / "data"
    shutil.copytree(synthetic_root, root)
    train = json.loads((root / "train.json").read_text())
    first, second = list(train)[:2]
    (root / "imgs" / "bomb.png").write_bytes(bomb_png())
    train[first]["img_path"] = "imgs/bomb.png"
    (root / "train.json").write_text(json.dumps(train))
    (root / train[second]["img_path"]).write_bytes(truncated_jpeg())
    return root


def test_relative_root_is_saved_absolute_and_bad_files_are_listed_once(damaged_root, tmp_path, monkeypatch, capfd):
    work = damaged_root.parent
    monkeypatch.chdir(work)  # the user trains with `--root data` from the folder holding it
    runner = CliRunner()
    # 12 training pairs, batch 4: three steps an epoch, so 9 steps are three epochs over the same two bad files.
    result = runner.invoke(app, [
        "train", "--root", "data", "--model", "rice_tiny", "--out", "run", "--max-steps", "9", "--batch-size", "4",
        "--set", "data.workers=0", "--set", "data.num_frames=2", "--set", "train.device=cpu",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    log = capfd.readouterr().err + result.output

    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert Path(saved["data"]["root"]).is_absolute() and Path(saved["data"]["root"]) == damaged_root
    stored = torch.load(work / "run" / "last.pt", weights_only=False)["config"]
    assert Path(stored["data"]["root"]) == damaged_root

    assert log.count("bomb.png: cannot decode image") == 1, log  # listed once, the first epoch it was met
    epochs = re.findall(r"epoch (\d+): skipped 2 bad sample\(s\)(.*)", log)
    assert [int(e) for e, _ in epochs] == [0, 1, 2], log
    assert epochs[0][1] == ":" and all("all listed before" in rest for _, rest in epochs[1:]), epochs

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `rice eval RUN` from another folder finds the data by the saved root
    result = runner.invoke(app, ["eval", str(work / "run"), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output

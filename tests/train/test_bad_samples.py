import json
import shutil

from rice.config import build_config
from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit


def test_bad_videos_are_skipped_counted_and_reported_at_epoch_end(synthetic_root, tmp_path, capfd):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    train = json.loads((root / "train.json").read_text())
    records = list(train.values())
    corrupt = root / records[0]["video_paths"][0]
    corrupt.write_bytes(b"this is not an mp4 file" * 10)
    missing = root / records[1]["video_paths"][0]
    missing.unlink()

    cfg = build_config(
        base={
            "model": {"name": "rice_tiny", "pretrained": False},
            "data": {"root": str(root), "workers": 0},
            "train": {"batch_size": 4, "max_steps": 3, "out": str(tmp_path / "run")},  # 12 pairs: one epoch
        }
    )
    state = read_checkpoint(fit(cfg))
    assert state["step"] == 3  # no crash mid-run
    err = capfd.readouterr().err
    assert "skipped 2 bad sample(s)" in err
    assert corrupt.name in err and missing.name in err

"""A decompression-bomb PNG and a truncated JPEG in a training set: train and eval complete, skip them and say so."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from rice.data.frames import load_image
from rice.data.video import MediaError


def bomb_png(width: int = 20000, height: int = 10000) -> bytes:
    """A valid ~70-byte PNG whose header declares ``width x height`` RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 30))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("kind", ["bomb", "truncated"])
def test_load_image_turns_every_decoder_failure_into_media_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.img"
    path.write_bytes({"bomb": bomb_png(), "truncated": truncated_jpeg()}[kind])
    with pytest.raises(MediaError, match=f"{path.name}: cannot decode image") as info:
        load_image(path, 32)
    assert "\n" not in str(info.value)


def test_bomb_and_truncated_jpeg_in_training_and_test_sets_are_skipped_and_reported(
    synthetic_root: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    from typer.testing import CliRunner

    from rice.cli import app
    from rice.config import build_config
    from rice.train.engine import fit

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    train = json.loads((root / "train.json").read_text())
    first, second = list(train)[:2]
    (root / "imgs" / "bomb.png").write_bytes(bomb_png())
    train[first]["img_path"] = "imgs/bomb.png"
    (root / "train.json").write_text(json.dumps(train))
    # The truncated JPEG replaces a shop image that the training set and the test gallery both use.
    cut = root / train[second]["img_path"]
    cut.write_bytes(truncated_jpeg())

    cfg = build_config(base={
        "model": {"name": "rice_tiny", "pretrained": False},
        "data": {"root": str(root), "workers": 0},
        "train": {"batch_size": 4, "max_steps": 3, "out": str(tmp_path / "run")},  # 12 pairs: one whole epoch
    })
    checkpoint = fit(cfg)
    err = capfd.readouterr().err
    assert "skipped 2 bad sample(s)" in err
    assert "bomb.png: cannot decode image (decompression bomb" in err and f"{cut.name}: cannot decode image" in err

    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    output = result.output.replace("\n", "")  # rich wraps long paths
    assert "skipped 1 unreadable file(s)" in output and f"{cut.name}: cannot decode image" in output

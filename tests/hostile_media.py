"""The hostile-media corpus: small files that ask a decoder for gigabytes (issue 22's attack, made reproducible).

- `huge_frame_mp4`: a real H.264 MP4 of two 8192x8192 frames (~200 KB at the lowest quality); encoded in a
  subprocess, since the encoder itself needs ~750 MB;
- `many_frames_mp4`: a real 2-frame MP4 whose sample tables are patched to declare 50 million frames (1.5 KB);
- `big_png`: a valid single-colour PNG of 9000x9000 pixels (~10 KB), written row by row without PIL;
- `peak_rss_mb`: the peak resident memory a piece of code adds, measured in a fresh subprocess.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _encode(path: Path, width: int, height: int, frames: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "51", "preset": "ultrafast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def huge_frame_mp4(path: Path, side: int = 8192) -> Path:
    code = ("from pathlib import Path\nfrom tests.hostile_media import _encode\n"
            f"_encode(Path({str(path)!r}), {side}, {side}, 2)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300)
    return path


def many_frames_mp4(path: Path, claimed: int = 50_000_000) -> Path:
    """Two real frames; stsz (constant sample size 1), stsc and stts patched to claim ``claimed`` frames."""
    _encode(path, 64, 48, 2)
    data = bytearray(path.read_bytes())

    def box(kind: bytes) -> int:
        return data.index(kind) - 4  # the box starts with its 4-byte size

    struct.pack_into(">II", data, box(b"stsz") + 12, 1, claimed)  # sample_size 1, sample_count
    struct.pack_into(">I", data, box(b"stsc") + 20, claimed)  # samples per chunk of the first entry
    struct.pack_into(">I", data, box(b"stts") + 16, claimed)  # sample count of the first time-to-sample entry
    path.write_bytes(bytes(data))
    return path


def big_png(path: Path, width: int = 9000, height: int = 9000) -> Path:
    """A single-colour RGB PNG written one compressed row at a time (never the whole image in memory)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    packer = zlib.compressobj(9)
    row = b"\x00" + bytes([200, 30, 30]) * width  # filter byte + one red row
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def peak_rss_mb(code: str) -> tuple[float, dict]:
    """Run ``code`` in a fresh interpreter (after ``import rice.data``) and return the peak RSS it added in MiB,
    and the JSON object the code stored in the variable ``result`` (e.g. the error it met)."""
    script = (
        "import json, resource\nimport rice.data\nimport numpy, PIL.Image, av\nresult = {}\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'added_mb': (peak - base) / 1024, 'result': result}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=300, capture_output=True,
                         text=True)  # fmt: skip
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    return answer["added_mb"], answer["result"]

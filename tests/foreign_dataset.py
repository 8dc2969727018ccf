"""A MovingFashion-layout dataset made independently of rice.data.synthetic (its own drawing and encoder
settings), to check that training learns on data the project did not design for itself."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _product(rng: np.random.Generator, side: int = 48) -> Image.Image:
    img = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        box = sorted(rng.integers(0, side, 2).tolist()) + sorted(rng.integers(0, side, 2).tolist())
        x0, x1, y0, y1 = box[0], box[1] + 2, box[2], box[3] + 2
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def _clip(product: Image.Image, rng: np.random.Generator, frames: int, size: int) -> list[np.ndarray]:
    out = []
    start, end = rng.uniform(0, size * 0.4, 2), rng.uniform(0, size * 0.4, 2)
    scale = rng.uniform(0.55, 0.8)
    for t in range(frames):
        a = t / max(1, frames - 1)
        noise = rng.integers(60, 200, (size // 4, size // 4, 3), dtype=np.uint8)
        canvas = Image.fromarray(noise).resize((size, size), Image.NEAREST).filter(ImageFilter.BLUR)
        side = int(size * scale * (1 + 0.15 * np.sin(3 * a)))
        sprite = product.resize((side, side)).rotate(float(rng.uniform(-10, 10)))
        x, y = (1 - a) * start + a * end
        canvas.paste(sprite, (int(x), int(y)))
        frame = np.asarray(canvas, dtype=np.float32) * rng.uniform(0.8, 1.15)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def _write(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=6)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_foreign_dataset(root: Path, products: int = 24, train_videos: int = 2, frames: int = 8, size: int = 64):
    rng = np.random.default_rng(1234)
    (root / "videos").mkdir(parents=True)
    (root / "imgs").mkdir()
    train, test = {}, {}
    for p in range(products):
        item = _product(rng)
        img_path = f"imgs/p{p:03d}.jpg"
        item.resize((96, 96)).save(root / img_path)
        paths = []
        for v in range(train_videos + 1):
            rel = f"videos/p{p:03d}_{v}.mp4"
            _write(root / rel, _clip(item, rng, frames, size))
            paths.append(rel)
        source = int(p % 3 != 0)
        train[f"p{p}"] = {"img_path": img_path, "video_paths": paths[:train_videos], "source": source}
        test[f"p{p}"] = {"img_path": img_path, "video_paths": paths[train_videos:], "source": source}
    (root / "train.json").write_text(json.dumps(train))
    (root / "test.json").write_text(json.dumps(test))
    return root

"""A trained tiny model and a catalogue index over the synthetic shop images, shared by the serving tests."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")


@dataclass
class Catalogue:
    data: Path  # the synthetic dataset root
    checkpoint: Path
    index_dir: Path
    images: dict[str, Path]  # item id -> shop image
    videos: dict[str, Path]  # item id -> a test clip of that product
    groups: dict[str, str]  # item id -> group


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory, synthetic_root, tiny_checkpoint) -> Catalogue:
    """rice_tiny trained briefly on `rice synth` data, and an index of the test split's shop images in two shops."""
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index

    work = tmp_path_factory.mktemp("serve")
    checkpoint = tiny_checkpoint
    test = json.loads((synthetic_root / "test.json").read_text())
    images = {Path(r["img_path"]).stem: synthetic_root / r["img_path"] for r in test.values()}
    videos = {Path(r["img_path"]).stem: synthetic_root / r["video_paths"][0] for r in test.values()}
    ids = sorted(images)
    groups = {item_id: ("shop_a" if i % 2 else "shop_b") for i, item_id in enumerate(ids)}
    index = Index.build(load(checkpoint), [images[i] for i in ids], ids=ids, groups=[groups[i] for i in ids],
                        checkpoint=checkpoint)
    index.save(work / "index")
    return Catalogue(synthetic_root, checkpoint, work / "index", images, videos, groups)


def clip_of_image(image_path: Path, out: Path, frames: int = 8, size: int = 64) -> Path:
    """A short generated video of a shop image: the camera pans a few pixels across it."""
    from rice.data.synthetic import write_mp4

    with Image.open(image_path) as image:
        source = np.asarray(image.convert("RGB").resize((size + 4, size + 4), Image.BILINEAR))
    shots = [source[t % 4 : t % 4 + size, (t // 2) % 4 : (t // 2) % 4 + size] for t in range(frames)]
    write_mp4(out, np.stack(shots), fps=8)
    return out

"""Synthetic livestream recordings with ground truth, for measuring `rice scan` (issue 21, item 7).

A recording alternates host-only stretches and product stretches, starting and ending with the host. A product
stretch is a fresh clip of one TEST product of a dataset written by `write_synthetic_dataset` (the gallery the demo
evaluates on), drawn exactly as that dataset draws its clips (`render_video`, same frame size, same hard/normal
look, the same rule for other products in the background) but from new seeds, so a model trained on the dataset
has never seen it. A host-only stretch is the same kind of scene with no catalogue product: a person-like figure
(a head and a body, in colours no product uses) moves through it the way products do.

Each stretch is its own scene, as if the stream cut between cameras; the truth is frame-exact: a segment runs from
its first frame's index / fps to one past its last frame's index / fps.

Files under ``out``: ``recording_XX.mp4`` (H.264), ``recording_XX.truth.json``::

    {"source": "recording_00.mp4", "duration": 37.5, "fps": 8, "num_frames": 300,
     "segments": [{"start": 4.0, "end": 9.125, "id": "100003"}, ...]}

(only product stretches are segments; the gaps are host-only time), and ``livestream.json`` describing the run.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .synthetic import (
    SPRITE,
    Sprite,
    _product_specs,
    render_product,
    render_shop_image,
    render_video,
    write_mp4,
    write_synthetic_dataset,
)

# Host colours, chosen away from every colour of rice.data.synthetic.PALETTE, so no host pixel looks like a product.
SKIN_TONES = np.array([[224, 172, 140], [190, 140, 100], [141, 95, 64], [245, 205, 180]], dtype=np.float32) / 255
HOST_CLOTHES = np.array([[40, 160, 170], [110, 70, 150], [120, 120, 128], [120, 170, 220]], dtype=np.float32) / 255


@dataclass(frozen=True)
class Stretch:
    """One stretch of a recording: frames [start, end) show product ``product_id``, or the host when ``None``."""

    start: int
    end: int
    product_id: str | None


def render_host(rng: np.random.Generator, size: int = SPRITE) -> Sprite:
    """A person-like figure on a transparent canvas: a head circle over a body with arms, in host colours."""
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    head = Image.new("L", (size, size), 0)
    ImageDraw.Draw(head).ellipse((0.38 * size, 0.04 * size, 0.62 * size, 0.28 * size), fill=255)
    draw.rectangle((0.28 * size, 0.30 * size, 0.72 * size, 0.98 * size), fill=255)  # body
    draw.rectangle((0.14 * size, 0.32 * size, 0.26 * size, 0.80 * size), fill=255)  # arms
    draw.rectangle((0.74 * size, 0.32 * size, 0.86 * size, 0.80 * size), fill=255)
    is_head = np.asarray(head) > 127
    alpha = (np.asarray(mask_img) > 127) | is_head
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    clothes = HOST_CLOTHES[int(rng.integers(len(HOST_CLOTHES)))]
    rgb = np.where(is_head[..., None], skin, clothes)  # (size, size, 3)
    return Sprite(rgb=rgb.astype(np.float32), alpha=alpha)


def load_dataset_products(
    dataset_root: str | os.PathLike[str], check: bool = True
) -> tuple[dict, dict[str, tuple[Sprite, int]]]:
    """The parameters (synthetic.json) and ``{id: (sprite, source)}`` of the TEST products of a
    `write_synthetic_dataset` root (source 0 = hard).

    The sprites are recomputed from the recorded parameters exactly as the writer drew them. With ``check``, each
    is compared with its shop image on disk, so a dataset from another generator version fails loudly instead of
    yielding recordings of products that are not in the gallery.
    """
    root = Path(dataset_root)
    meta_file, test_file = root / "synthetic.json", root / "test.json"
    for path in (meta_file, test_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; write the dataset first with `rice synth --out {root}`")
    meta = json.loads(meta_file.read_text())
    test = json.loads(test_file.read_text())
    if not test:
        raise ValueError(f"{test_file} lists no test products; write the dataset with num_test_products >= 1")
    # The writer's own call: the same specs in the same order; product i has id 100000 + i.
    rng = np.random.default_rng([meta["seed"], 0])
    specs = _product_specs(int(meta["num_products"]), float(meta["hard_fraction"]), rng)
    products = {}
    for product_id in sorted(test):
        spec = specs[int(product_id) - 100000]
        sprite = render_product(spec)
        products[product_id] = (sprite, spec.source)
        if check:
            shop = render_shop_image(sprite, int(meta["image_size"])).astype(np.float32)
            on_disk = np.asarray(Image.open(root / test[product_id]["img_path"]).convert("RGB"), dtype=np.float32)
            # JPEG (quality 92) moves pixels by 2-3 on average (measured); another product differs by 20 or more.
            if on_disk.shape != shop.shape or np.abs(on_disk - shop).mean() > 8.0:
                raise ValueError(
                    f"{root}: product {product_id}'s shop image does not match its recomputed sprite; "
                    "the dataset was written by another version; rewrite it with `rice synth`"
                )
    return meta, products


def plan_recording(
    product_ids: list[str],
    products_per_recording: int,
    product_seconds: tuple[float, float],
    host_seconds: tuple[float, float],
    fps: int,
    rng: np.random.Generator,
) -> list[Stretch]:
    """Host, product, host, ..., product, host: lengths drawn uniformly in seconds (at least one frame each);
    consecutive products differ (when there are two or more to choose from)."""
    stretches, frame, previous = [], 0, None

    def add(seconds: tuple[float, float], product_id: str | None) -> None:
        nonlocal frame
        length = max(1, round(float(rng.uniform(*seconds)) * fps))
        stretches.append(Stretch(frame, frame + length, product_id))
        frame += length

    add(host_seconds, None)
    for _ in range(products_per_recording):
        choices = [p for p in product_ids if p != previous] or product_ids
        previous = choices[int(rng.integers(len(choices)))]
        add(product_seconds, previous)
        add(host_seconds, None)
    return stretches


def truth_json(stretches: list[Stretch], fps: int, source: str) -> dict:
    """The ground truth of a recording: product stretches as segments in seconds; host time is the gaps."""
    num_frames = stretches[-1].end if stretches else 0
    segments = [
        # "item": the catalogue id of the product's shop image imgs/<id>_in_pp.jpg (`rice index build` names items
        # by file stem), which a timeline reports
        {"start": round(s.start / fps, 6), "end": round(s.end / fps, 6), "id": s.product_id,
         "item": f"{s.product_id}_in_pp"}
        for s in stretches
        if s.product_id is not None
    ]
    return {"source": source, "duration": round(num_frames / fps, 6), "fps": fps, "num_frames": num_frames,
            "segments": segments}  # fmt: skip


def render_stretch(
    stretch: Stretch,
    products: dict[str, tuple[Sprite, int]],
    host: Sprite,
    hard_fraction: float,
    extreme: bool,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The frames (N, size, size, 3) uint8 of one stretch.

    A product stretch follows the dataset's clips: hard products (source 0) get 2-3 other products in the
    background, normal ones 0-1. The host scene has no product at all (its look is hard with the dataset's share).
    """
    num_frames = stretch.end - stretch.start
    if stretch.product_id is None:
        hard = extreme or bool(rng.random() < hard_fraction)
        return render_video(host, [], hard, num_frames, size, rng, extreme)
    sprite, source = products[stretch.product_id]
    others = [p for p in rng.permutation(sorted(products)).tolist() if p != stretch.product_id]
    count = int(rng.integers(2, 4)) if source == 0 else int(rng.integers(0, 2))
    return render_video(sprite, [products[p][0] for p in others[:count]], source == 0, num_frames, size, rng, extreme)


def write_synthetic_livestream(
    out: str | os.PathLike[str],
    dataset_root: str | os.PathLike[str],
    num_recordings: int = 1,
    products_per_recording: int = 6,
    product_seconds: tuple[float, float] = (4.0, 8.0),
    host_seconds: tuple[float, float] = (3.0, 6.0),
    fps: int = 8,
    size: int | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``num_recordings`` synthetic livestream recordings of a synthetic dataset's test products.

    Args:
        out: folder for ``recording_XX.mp4``, ``recording_XX.truth.json`` and ``livestream.json`` (created).
        dataset_root: a dataset written by `write_synthetic_dataset` (its synthetic.json and test.json are read).
        num_recordings: recordings to write.
        products_per_recording: product stretches per recording (between host-only stretches).
        product_seconds: (low, high) length of a product stretch in seconds, drawn uniformly.
        host_seconds: (low, high) length of a host-only stretch in seconds.
        fps: frame rate of the recordings.
        size: frame side in pixels (a multiple of 4); ``None`` = the dataset's.
        seed: everything derives from it (and not from the dataset's seeds, so every clip is new).

    Returns:
        The paths of the written mp4 files.
    """
    if num_recordings < 1 or products_per_recording < 1 or fps < 1:
        raise ValueError("num_recordings, products_per_recording and fps must all be >= 1")
    for name, (low, high) in (("product_seconds", product_seconds), ("host_seconds", host_seconds)):
        if not 0 < low <= high:
            raise ValueError(f"{name}=({low}, {high}) must satisfy 0 < low <= high")
    meta, products = load_dataset_products(dataset_root)
    size = int(meta["size"]) if size is None else size
    if size < 16 or size % 4:
        raise ValueError(f"size={size} must be a multiple of 4, >= 16")
    extreme = meta.get("difficulty", "normal") == "hard"
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(num_recordings - 1)))
    videos, listing = [], []
    for r in range(num_recordings):
        # Stream 7 (the dataset uses 0 and 1): the plan, the host and each stretch get their own generator.
        plan = plan_recording(sorted(products), products_per_recording, product_seconds, host_seconds, fps,
                              np.random.default_rng([seed, 7, r]))  # fmt: skip
        host = render_host(np.random.default_rng([seed, 7, r, 0]))
        frames = np.concatenate([
            render_stretch(s, products, host, float(meta["hard_fraction"]), extreme, size,
                           np.random.default_rng([seed, 7, r, k + 1]))
            for k, s in enumerate(plan)
        ])  # fmt: skip
        name = f"recording_{r:0{width}d}"
        write_mp4(root / f"{name}.mp4", frames, fps=fps)
        truth = truth_json(plan, fps, f"{name}.mp4")
        (root / f"{name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
        videos.append(root / f"{name}.mp4")
        listing.append({"video": f"{name}.mp4", "truth": f"{name}.truth.json", "duration": truth["duration"],
                        "products": [s["id"] for s in truth["segments"]]})  # fmt: skip
    description = {
        "generator": "rice.data.synthetic_livestream.write_synthetic_livestream",
        "dataset_root": str(Path(dataset_root).resolve()), "dataset": meta,
        "num_recordings": num_recordings, "products_per_recording": products_per_recording,
        "product_seconds": list(product_seconds), "host_seconds": list(host_seconds), "fps": fps, "size": size,
        "seed": seed, "recordings": listing,
    }  # fmt: skip
    (root / "livestream.json").write_text(json.dumps(description, indent=1) + "\n")
    return videos


def synthetic_dataset_matches(root: str | os.PathLike[str], **params: object) -> bool:
    """Whether ``root`` holds a `write_synthetic_dataset` output written with these keyword arguments (and the
    writer's defaults for the others), so it can be reused instead of rewritten."""
    meta_file = Path(root) / "synthetic.json"
    if not meta_file.is_file() or not (Path(root) / "test.json").is_file():
        return False
    meta = json.loads(meta_file.read_text())
    defaults = {k: p.default for k, p in inspect.signature(write_synthetic_dataset).parameters.items() if k != "out"}
    wanted = {**defaults, **params}
    # The values the writer records instead of None / the value it forces.
    if wanted["num_test_products"] is None:
        wanted["num_test_products"] = wanted["num_products"]
    if wanted["image_size"] is None:
        wanted["image_size"] = 2 * wanted["size"]  # type: ignore[operator]
    if wanted["difficulty"] == "hard":
        wanted["hard_fraction"] = 1.0
    return all(meta.get(k, "normal" if k == "difficulty" else None) == v for k, v in wanted.items())

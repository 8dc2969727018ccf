"""MovingFashion over its released layout (shared/docs/datasets.md): ``train.json``, ``test.json``, ``videos/``,
``imgs/`` and, after ``rice prepare``, ``frames/<video_stem>/*.jpg`` with a ``.done`` marker.

Three datasets, items as in docs/internals.md:

- `MovingFashionPairs`: one training pair per (product, video) association.
- `MovingFashionQueries`: one query per unique test video; a video shared by several products keeps ALL their
  images as ground truth (``shared_video_gt="any"``), or only the last product's, as the official
  ``video_to_gt.json`` (``"official"``).
- `MovingFashionGallery`: one item per unique shop image of the split.

Bad media never pass silently: missing/empty files are counted at construction (``dataset.missing``,
``dataset.empty``, `describe`), and every item that meets one reports ``"path: reason"`` in ``skipped``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .frames import DecodedImageCache
from .pixel_items import check_item_pixels, encoded_clip, encoded_image, uint8_chw, uint8_image
from .sampling import FramePolicy, pad_clip
from .transforms import ClipTransform, ImageTransform, build_transform
from .video import MediaError, read_video_frames, resolve_backend

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class ProductRecord:
    """One product of a split file."""

    product_id: str
    img_path: str  # relative to the root
    video_paths: tuple[str, ...]
    source: int  # 1 = regular, 0 = hard


def image_id_of(path: str) -> str:
    """Gallery image id: the basename up to its first '.' (as the official loader does)."""
    return os.path.basename(path).split(".", 1)[0]


def video_id_of(path: str) -> str:
    """Video id: the basename without its extension (also the prepared-frames folder name)."""
    return os.path.splitext(os.path.basename(path))[0]


def _download_hint(root: Path) -> str:
    return f"run `rice download movingfashion --root {root}` (or pass the right --root)"


def load_split(root: str | os.PathLike[str], split: str) -> list[ProductRecord]:
    """Read and validate ``<root>/<split>.json``.

    Raises:
        FileNotFoundError: no root or no split file (the message says how to get it).
        ValueError: malformed JSON or record (one line naming the file and the product id).
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown MovingFashion split {split!r}; choose from {list(SPLITS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"MovingFashion root {root} not found; {_download_hint(root)}")
    path = root / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {_download_hint(root)}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(f"{path}: not valid JSON ({detail}); re-download the dataset") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a non-empty object mapping product id -> record")
    records = []
    for product_id, record in raw.items():
        where = f"{path}: product {product_id!r}"
        if not product_id:
            raise ValueError(f"{path}: empty product id")
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object with img_path, video_paths, source")
        img_path, video_paths, source = record.get("img_path"), record.get("video_paths"), record.get("source")
        if not isinstance(img_path, str) or not img_path:
            raise ValueError(f"{where}: 'img_path' must be a non-empty string, got {img_path!r}")
        if (
            not isinstance(video_paths, list)
            or not video_paths
            or not all(isinstance(v, str) and v for v in video_paths)
        ):
            raise ValueError(f"{where}: 'video_paths' must be a non-empty list of strings, got {video_paths!r}")
        if isinstance(source, bool) or source not in (0, 1):
            raise ValueError(f"{where}: 'source' must be 0 (hard) or 1 (regular), got {source!r}")
        records.append(ProductRecord(str(product_id), img_path, tuple(video_paths), int(source)))
    return records


class _MovingFashionBase(Dataset):
    """Shared plumbing: split loading, media checks, clip and image reading."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        num_frames: int,
        transform: ImageTransform | None,
        train: bool,
        video_backend: str,
        use_prepared_frames: bool,
        frame_policy: FramePolicy | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.frame_policy = frame_policy or FramePolicy()
        self.split = split
        self.records = load_split(self.root, split)
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1")
        self.num_frames = num_frames
        self.train = train
        self.transform = transform if transform is not None else build_transform(224, train=train)
        self.clip_transform = ClipTransform(self.transform)
        self.image_transform = self.transform  # the shop image's; training pairs may set their own
        resolve_backend(video_backend)  # checks the name now; "auto" stays "auto" so each file can fall back to PyAV
        self.video_backend = video_backend
        self.use_prepared_frames = use_prepared_frames
        self.decoded = DecodedImageCache(0)  # off; training pairs may keep decoded images (``decoded_cache_mb``)
        self.pixels = "float"  # training pairs may carry uint8 crops or JPEG bytes (rice.data.pixel_items)
        self._check_media()

    # ---------------------------------------------------------------------------------------------- media checks
    def _prepared_folder(self, video_path: str) -> Path | None:
        folder = self.root / "frames" / video_id_of(video_path)
        return folder if self.use_prepared_frames and (folder / ".done").is_file() else None

    def _check_media(self) -> None:
        """Stat every referenced file once (cheap), so missing media are counted before training starts."""
        self.missing: list[str] = []
        self.empty: list[str] = []
        videos = dict.fromkeys(v for r in self.records for v in r.video_paths)
        images = dict.fromkeys(r.img_path for r in self.records)
        self.num_prepared = 0
        for rel in videos:
            if self._prepared_folder(rel) is not None:
                self.num_prepared += 1
                continue
            self._stat(rel)
        for rel in images:
            self._stat(rel)

    def _stat(self, rel: str) -> None:
        try:
            size = (self.root / rel).stat().st_size
        except OSError:
            self.missing.append(rel)
            return
        if size == 0:
            self.empty.append(rel)

    def describe(self) -> dict[str, Any]:
        """Counts for logs."""
        return {
            "dataset": "movingfashion",
            "kind": type(self).__name__,
            "split": self.split,
            "root": str(self.root),
            "products": len(self.records),
            "items": len(self),
            "hard_products": sum(r.source == 0 for r in self.records),
            "prepared_videos": self.num_prepared,
            "missing_files": len(self.missing),
            "empty_files": len(self.empty),
        }

    def __repr__(self) -> str:
        info = self.describe()
        return f"{info['kind']}({', '.join(f'{k}={v}' for k, v in info.items() if k != 'kind')})"

    # ---------------------------------------------------------------------------------------------- reading media
    def _indices_sampler(self, rng: random.Random | None, tail_drop_prob: float):  # noqa: ANN202
        def sample(count: int) -> list[int]:
            return self.frame_policy.indices(count, self.num_frames, self.train, tail_drop_prob, rng)

        return sample

    def _read_clip(
        self, video_path: str, rng: random.Random | None, tail_drop_prob: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, 3, S, S) frames (zero-padded) and the (T,) bool mask; raises MediaError."""
        sample = self._indices_sampler(rng, tail_drop_prob)
        folder = self._prepared_folder(video_path)
        if folder is not None:
            files = self.decoded.list_frame_files(folder)
            if not files:
                raise MediaError(f"{folder}: prepared frames folder has no images; delete it and rerun `rice prepare`")
            frames: Sequence[Any] = self.decoded.load_frames([files[i] for i in sample(len(files))], self._draft_size())
        else:
            frames = read_video_frames(self.root / video_path, sample, backend=self.video_backend)
        if self.pixels == "float":
            return pad_clip(self.clip_transform(frames, rng), self.num_frames)
        return pad_clip(uint8_chw(self.clip_transform.arrays(frames, rng)), self.num_frames)

    def _read_encoded_clip(
        self, video_path: str, rng: random.Random | None, tail_drop_prob: float = 0.0
    ) -> dict[str, Any]:
        """The ``"jpeg"`` pixels of a clip (`rice.data.pixel_items`): its prepared frames' bytes, crop draws, mask."""
        folder = self._prepared_folder(video_path)
        if folder is None:
            raise MediaError(f"{self.root / video_path}: no prepared frames; data.decode_device=cuda reads the JPEG "
                             f"frames of `rice prepare movingfashion --root {self.root}` (run it) or use "
                             "data.decode_device=cpu")  # fmt: skip
        files = self.decoded.list_frame_files(folder)
        if not files:
            raise MediaError(f"{folder}: prepared frames folder has no images; delete it and rerun `rice prepare`")
        picks = self._indices_sampler(rng, tail_drop_prob)(len(files))
        return encoded_clip(self.clip_transform, [files[i] for i in picks], self.num_frames, rng)

    def _draft_size(self) -> int | None:
        # JPEG draft decoding is fast but not pixel-identical to a full decode: use it for training only, so
        # evaluation reproduces the public code's preprocessing exactly.
        return self.transform.resize_size if self.transform.train else None

    def _read_image(self, img_path: str, rng: random.Random | None) -> torch.Tensor:
        image = self.decoded.load_image(self.root / img_path, self._draft_size())
        if self.pixels == "float":
            return self.image_transform(image, rng)
        return uint8_image(self.image_transform, image, rng)  # uint8 items: the shop image as uint8 (decoded here)

    def _zero_frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.transform.image_size
        return torch.zeros(self.num_frames, 3, size, size), torch.zeros(self.num_frames, dtype=torch.bool)


class MovingFashionPairs(_MovingFashionBase):
    """Training pairs: one per (product, video) association.

    An unreadable video or image is replaced by the next association (``idx + 1`` modulo the length, up to
    ``max_tries``), and the item lists what it replaced in ``skipped``; the batch size stays the same on every rank.

    Args:
        root: dataset root.
        split: "train" (or "test").
        num_frames: T frames per clip.
        transform: the image transform, also applied (one crop for all frames) to the clip; default 224 px CLIP.
        train: random temporal offsets and tail dropping (False: segment centres, no dropping).
        tail_drop_prob: chance to keep only the head of a clip (training only).
        video_backend: "auto", "decord" or "pyav".
        use_prepared_frames: read ``frames/<stem>/`` when its ``.done`` marker exists.
        seed: ``None``: randomness from torch's RNG (seeded per DataLoader worker and epoch). An int: each item's
            randomness depends only on (seed, epoch, index); call `set_epoch` every epoch.
        max_tries: how many consecutive associations to try before giving up.
        image_transform: the shop image's transform; None = ``transform`` (see `shop_image_transform`).
        decoded_cache_mb: keep decoded frames and shop images in memory up to this many MiB per loader process
            (`DecodedImageCache`; 0 = off), for small datasets read for many epochs.
        pixels: ``"float"``, ``"uint8"`` or ``"jpeg"``: what the items carry (`rice.data.pixel_items`); ``"jpeg"``
            reads prepared frames only (a video without them is a bad sample, skipped with the fix in its reason).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        num_frames: int = 10,
        transform: ImageTransform | None = None,
        image_transform: ImageTransform | None = None,
        train: bool = True,
        tail_drop_prob: float = 0.5,
        video_backend: str = "auto",
        use_prepared_frames: bool = True,
        seed: int | None = None,
        max_tries: int = 32,
        frame_policy: FramePolicy | None = None,
        decoded_cache_mb: float = 0.0,
        pixels: str = "float",
    ) -> None:
        super().__init__(root, split, num_frames, transform, train, video_backend, use_prepared_frames, frame_policy)
        self.decoded = DecodedImageCache(decoded_cache_mb)
        self.pixels = check_item_pixels(pixels)
        if self.pixels == "jpeg" and self.num_prepared == 0:
            raise ValueError(f"{self.root}: no video has prepared frames, and data.decode_device=cuda decodes "
                             f"prepared JPEG frames only; run `rice prepare movingfashion --root {self.root}` or "
                             "set data.decode_device=cpu")  # fmt: skip
        if not 0.0 <= tail_drop_prob <= 1.0:
            raise ValueError(f"tail_drop_prob={tail_drop_prob} must lie in [0, 1]")
        self.tail_drop_prob = tail_drop_prob if train else 0.0
        self.seed = seed
        self.epoch = 0
        self.max_tries = max(1, max_tries)
        self.image_transform = image_transform or self.transform
        self.pairs: list[tuple[str, str]] = [(v, r.img_path) for r in self.records for v in r.video_paths]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _rng(self, idx: int) -> random.Random:
        if self.seed is None:
            return random.Random(int(torch.randint(0, 2**62, ()).item()))
        return random.Random(f"{self.seed}:{self.epoch}:{idx}")

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} pairs")
        idx %= len(self)
        skipped: list[str] = []
        for attempt in range(min(self.max_tries, len(self))):
            current = (idx + attempt) % len(self)
            video_path, img_path = self.pairs[current]
            rng = self._rng(current)
            try:
                if self.pixels == "jpeg":
                    fields = self._read_encoded_clip(video_path, rng, self.tail_drop_prob)
                    fields.update(encoded_image(self.image_transform, self.root / img_path, rng))
                else:
                    frames, mask = self._read_clip(video_path, rng, self.tail_drop_prob)
                    fields = {"frames": frames, "frame_mask": mask, "image": self._read_image(img_path, rng)}
            except MediaError as err:
                skipped.append(str(err))
                continue
            return {
                **fields,
                "video_id": video_id_of(video_path),
                "image_id": image_id_of(img_path),
                "skipped": skipped,
            }
        raise RuntimeError(
            f"{len(skipped)} consecutive training pairs from index {idx} under {self.root} are unreadable "
            f"(first: {skipped[0]}); check the dataset with `rice prepare` or re-download it"
        )


class MovingFashionQueries(_MovingFashionBase):
    """Evaluation queries: one per unique video of the split, deterministic frames.

    ``gt_ids`` holds the image ids of every product that lists the video and ``source`` is the first such
    product's (``shared_video_gt="any"``); with ``"official"`` both are the last such product's in the split file,
    as the public ``prepare_movingfashion.py`` writes them (each product overwrites the video's entry), so a hit on
    an earlier product's image is a miss. An unreadable video gives ``ok=False``, zero frames and an all-False mask
    (it counts as a miss).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "test",
        *,
        num_frames: int = 10,
        transform: ImageTransform | None = None,
        video_backend: str = "auto",
        use_prepared_frames: bool = True,
        frame_policy: FramePolicy | None = None,
        shared_video_gt: str = "any",
    ) -> None:
        super().__init__(root, split, num_frames, transform, False, video_backend, use_prepared_frames, frame_policy)
        if shared_video_gt not in ("any", "official"):
            raise ValueError(f"shared_video_gt {shared_video_gt!r} is unknown; choose 'any' or 'official'")
        by_video: dict[str, dict[str, Any]] = {}
        for record in self.records:
            for video_path in record.video_paths:
                image_id = image_id_of(record.img_path)
                if shared_video_gt == "official":  # the later product replaces the entry, as the public script
                    by_video[video_path] = {"gt_ids": [image_id], "source": record.source}
                    continue
                entry = by_video.setdefault(video_path, {"gt_ids": [], "source": record.source})
                if image_id not in entry["gt_ids"]:
                    entry["gt_ids"].append(image_id)
        self.queries: list[tuple[str, list[str], int]] = [
            (video_path, entry["gt_ids"], entry["source"]) for video_path, entry in by_video.items()
        ]

    def __len__(self) -> int:
        return len(self.queries)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["shared_videos"] = sum(len(gt) > 1 for _, gt, _ in self.queries)
        return info

    def __getitem__(self, idx: int) -> dict[str, Any]:
        video_path, gt_ids, source = self.queries[idx]
        skipped: list[str] = []
        try:
            frames, mask = self._read_clip(video_path, None)
            ok = True
        except MediaError as err:
            frames, mask = self._zero_frames()
            ok, skipped = False, [str(err)]
        return {
            "frames": frames,
            "frame_mask": mask,
            "query_id": video_id_of(video_path),
            "gt_ids": list(gt_ids),
            "source": source,
            "group": "",
            "ok": ok,
            "skipped": skipped,
        }


class MovingFashionGallery(_MovingFashionBase):
    """The shop images of a split, one item per unique image path; unreadable ones give ``ok=False``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "test",
        *,
        transform: ImageTransform | None = None,
    ) -> None:
        super().__init__(root, split, 1, transform, False, "auto", False)
        self.images: list[str] = list(dict.fromkeys(r.img_path for r in self.records))

    def _check_media(self) -> None:  # the gallery only needs the images
        self.missing, self.empty, self.num_prepared = [], [], 0
        for rel in dict.fromkeys(r.img_path for r in self.records):
            self._stat(rel)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        img_path = self.images[idx]
        skipped: list[str] = []
        try:
            image = self._read_image(img_path, None)
            ok = True
        except MediaError as err:
            size = self.transform.image_size
            image, ok, skipped = torch.zeros(3, size, size), False, [str(err)]
        return {"image": image, "image_id": image_id_of(img_path), "group": "", "ok": ok, "skipped": skipped}

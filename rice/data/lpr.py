"""LPR750K / LPR4M datasets over the official annotation files (shared/docs/datasets.md).

- `LPRTrainPairs`: one (clip, shop image) pair per line of ``annotations/training_videoinfo_*.txt`` (columns 0, 1,
  3, 4: clip id, frame paths as a Python-literal list, image id, image path; paths relative to the root).
- `LPRQueries`: ``annotations/query_tenframes.json`` (frames under ``query/``), ground truth from
  ``annotations/test_videoid_to_gtimage_*.json``; group = the clip's live id (first five ``-`` fields).
- `LPRGallery`: ``annotations/gallery_main.txt`` (``<live_id>/<file>`` under ``gallery/``); image id = the first
  five ``-`` fields of the file name; group = live id.

Items follow docs/internals.md. JPEGs are decoded with PIL's draft mode at the transform's resize size. The
frame-list column is parsed with ``ast.literal_eval`` (never ``eval``), one line at a time, through a byte-offset
index (`build_videoinfo_index`, written by ``rice prepare lpr750k``) so a dataset starts in milliseconds.
"""

from __future__ import annotations

import ast
import json
import logging
import mmap
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .frames import DecodedImageCache, load_frames, load_image
from .pixel_items import check_item_pixels, encoded_clip, encoded_image, item_pixels, uint8_chw, uint8_image
from .sampling import FramePolicy, pad_clip
from .transforms import ClipTransform, ImageTransform, build_transform, shop_image_transform
from .video import MediaError

log = logging.getLogger(__name__)
TRAIN_FILES: tuple[str, ...] = ("training_videoinfo_641821.txt", "training_videoinfo_750k.txt")
VAL_FILE = "training_videoinfo_val.txt"


def _hint(root: Path) -> str:
    return f"run `rice download lpr750k --root {root}` then `rice prepare lpr750k --root {root}`"


def live_id_of(name: str) -> str:
    """The livestream id: the first five ``-`` fields (a UUID) of a clip id or file name."""
    return "-".join(name.split("-")[:5])


def gallery_image_id(file_name: str) -> str:
    """Gallery image id: the first five ``-`` fields of the file name (``<uuid>-0.jpg`` -> ``<uuid>``)."""
    stem = os.path.basename(file_name)
    stem = stem.rsplit(".", 1)[0] if stem.count("-") < 5 else stem
    return "-".join(stem.split("-")[:5])


# ------------------------------------------------------------------------------------------------ videoinfo index
@dataclass(frozen=True)
class VideoinfoRecord:
    video_id: str
    frames: list[str]  # relative to the root
    image_id: str
    image_path: str  # relative to the root


@dataclass(frozen=True)
class VideoinfoIndex:
    path: Path
    offsets: np.ndarray  # (N,) int64 byte offset of each well-formed line whose clip is on disk
    bad_lines: int = 0
    missing_clips: int = 0  # well-formed lines whose clip folder is absent (a partial download)

    @property
    def count(self) -> int:
        return len(self.offsets)


def parse_videoinfo_line(line: str) -> VideoinfoRecord:
    """One TAB-separated line of a training videoinfo file (columns 0, 1, 3, 4).

    Raises:
        ValueError: fewer than 5 columns or a frame list that is not a non-empty list of strings.
    """
    cols = line.rstrip("\r\n").split("\t")
    if len(cols) < 5:
        raise ValueError(f"expected at least 5 TAB-separated columns, got {len(cols)}")
    text = cols[1].strip()
    try:
        frames = json.loads(text) if text.startswith('["') else ast.literal_eval(text)  # literal only, never eval
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(f"column 2 is not a list literal ({type(err).__name__})") from None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
        raise ValueError("column 2 must be a non-empty list of frame paths")
    return VideoinfoRecord(cols[0], frames, cols[3], cols[4])


def _index_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".index.npy"), path.with_name(path.name + ".index.json")


def _stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"source": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": 1}


def present_video_parts(root: Path) -> list[str]:
    """The ``training_video_*`` folders on disk (LPR750K ships the clips in eight parts)."""
    return sorted(p.name for p in root.glob("training_video_*") if p.is_dir())


class _ClipFolders:
    """Whether a clip's frame folder exists, from one listing per part folder (not one stat per clip)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listed: dict[str, set[str]] = {}

    def present(self, rec: VideoinfoRecord) -> bool:
        parts = rec.frames[0].replace("\\", "/").split("/")
        if len(parts) < 3:  # not the <part>/<clip>/<frame> layout: only the file itself can tell
            return (self.root / rec.frames[0]).is_file()
        if parts[0] not in self._listed:
            folder = self.root / parts[0]
            self._listed[parts[0]] = set(os.listdir(folder)) if folder.is_dir() else set()
        return parts[1] in self._listed[parts[0]]


def build_videoinfo_index(path: str | Path, root: str | Path | None = None) -> VideoinfoIndex:
    """Validate every line of ``path`` and save the byte offsets of the good ones beside it.

    With ``root``, a line whose clip folder is not under ``root`` (a part not downloaded) is left out and
    counted in ``missing_clips``, so training runs on the clips that are there.
    """
    path = Path(path)
    clips = _ClipFolders(Path(root)) if root is not None else None
    offsets, bad, missing, position = [], 0, 0, 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    rec = parse_videoinfo_line(raw.decode("utf-8"))
                    if clips is None or clips.present(rec):
                        offsets.append(position)
                    else:
                        missing += 1
                except (ValueError, UnicodeDecodeError):
                    bad += 1
            position += len(raw)
    npy, stamp = _index_paths(path)
    array = np.asarray(offsets, dtype=np.int64)
    np.save(npy, array)
    meta = {**_stamp(path), "count": len(array), "bad_lines": bad, "missing_clips": missing}
    if root is not None:
        meta["parts"] = present_video_parts(Path(root))  # the index is stale once another part arrives
    stamp.write_text(json.dumps(meta))
    return VideoinfoIndex(path, array, bad, missing)


def load_videoinfo_index(path: str | Path) -> VideoinfoIndex:
    """The saved index when it matches the file (size and mtime), else a quick newline scan (not validated)."""
    path = Path(path)
    npy, stamp = _index_paths(path)
    try:
        meta = json.loads(stamp.read_text())
        parts_unchanged = "parts" not in meta or meta["parts"] == present_video_parts(path.parent.parent)
        if all(meta.get(k) == v for k, v in _stamp(path).items()) and parts_unchanged:
            return VideoinfoIndex(path, np.load(npy, allow_pickle=False), int(meta.get("bad_lines", 0)),
                                  int(meta.get("missing_clips", 0)))
    except (OSError, ValueError):
        pass
    log.warning("%s has no up-to-date index; scanning it (run `rice prepare lpr750k` to index and validate it)", path)
    size = path.stat().st_size
    if size == 0:
        return VideoinfoIndex(path, np.zeros(0, dtype=np.int64))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        newlines = np.flatnonzero(np.frombuffer(mm, dtype=np.uint8) == ord("\n"))
        starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
        ends = np.concatenate([newlines, [size]]).astype(np.int64)
    keep = ends - starts > 1  # drop empty lines (and the empty tail after the last newline)
    return VideoinfoIndex(path, starts[keep])


def videoinfo_files(root: str | Path) -> list[Path]:
    return sorted((Path(root) / "annotations").glob("training_videoinfo_*.txt"))


def resolve_videoinfo(root: Path, split: str) -> Path:
    """``"train"`` -> the official training file (641821, else 750k, else any non-val one); ``"val"``; or a name."""
    ann = root / "annotations"
    if split == "val":
        candidates = [ann / VAL_FILE]
    elif split == "train":
        candidates = [ann / n for n in TRAIN_FILES] + [p for p in videoinfo_files(root) if p.name != VAL_FILE]
    else:
        candidates = [ann / split, Path(split)]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no training videoinfo file for split {split!r} under {ann} (looked for "
                            f"{', '.join(TRAIN_FILES) if split == 'train' else split}); {_hint(root)}")


# ------------------------------------------------------------------------------------------------------- datasets
def _zero_clip(num_frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(num_frames, 3, size, size), torch.zeros(num_frames, dtype=torch.bool)


class LPRTrainPairs(Dataset):
    """Training pairs (one per line of the videoinfo file); a bad line or image is replaced by the next one.

    Args:
        root: the LPR750K root (``annotations/``, ``training_video_0X/``, ``training_image/``).
        split: ``"train"``, ``"val"`` or a videoinfo file name under ``annotations/``.
        num_frames: T; transform: the image transform (default 224 px CLIP, train mode).
        image_transform: the shop image's transform; None = ``transform`` (see `shop_image_transform`).
        train: random temporal offsets and tail dropping; tail_drop_prob: chance to keep only the head.
        seed: ``None``: torch's RNG (seeded per worker); an int: randomness depends on (seed, epoch, index).
        decoded_cache_mb: keep decoded frames and shop images in memory up to this many MiB per loader process
            (`DecodedImageCache`; 0 = off).
        pixels: ``"float"``, ``"uint8"`` or ``"jpeg"``: what the items carry (`rice.data.pixel_items`).
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", *, num_frames: int = 10,
                 transform: ImageTransform | None = None, image_transform: ImageTransform | None = None,
                 train: bool = True, tail_drop_prob: float = 0.5, seed: int | None = None, max_tries: int = 32,
                 frame_policy: FramePolicy | None = None, decoded_cache_mb: float = 0.0, pixels: str = "float") -> None:
        self.root = Path(root).expanduser()
        self.decoded = DecodedImageCache(decoded_cache_mb)
        self.pixels = check_item_pixels(pixels)
        self.frame_policy = frame_policy or FramePolicy()
        if not self.root.is_dir():
            raise FileNotFoundError(f"LPR root {self.root} not found; {_hint(self.root)}")
        self.path = resolve_videoinfo(self.root, split)
        self.index = load_videoinfo_index(self.path)
        if self.index.count == 0:
            raise ValueError(f"{self.path} has no usable lines; re-download the annotations")
        self.num_frames, self.train, self.seed, self.epoch = num_frames, train, seed, 0
        self.tail_drop_prob = tail_drop_prob if train else 0.0
        self.transform = transform if transform is not None else build_transform(224, train=train)
        self.clip_transform = ClipTransform(self.transform)
        self.image_transform = image_transform or self.transform
        self.max_tries = max(1, max_tries)
        self._fh: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return self.index.count

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers (spawn) get a copy without the open file
        return {**self.__dict__, "_fh": None, "_pid": -1}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def describe(self) -> dict[str, Any]:
        return {"dataset": "lpr", "kind": "LPRTrainPairs", "file": str(self.path), "items": len(self),
                "bad_lines": self.index.bad_lines}

    def record(self, idx: int) -> VideoinfoRecord:
        if self._fh is None or self._pid != os.getpid():  # one handle per DataLoader worker process
            self._fh, self._pid = open(self.path, "rb"), os.getpid()  # noqa: SIM115 - lives as long as the dataset
        self._fh.seek(int(self.index.offsets[idx]))
        return parse_videoinfo_line(self._fh.readline().decode("utf-8"))

    def _rng(self, idx: int) -> random.Random:
        if self.seed is None:
            return random.Random(int(torch.randint(0, 2**62, ()).item()))
        return random.Random(f"{self.seed}:{self.epoch}:{idx}")

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx %= len(self)
        skipped: list[str] = []
        for attempt in range(min(self.max_tries, len(self))):
            current = (idx + attempt) % len(self)
            rng = self._rng(current)
            try:
                rec = self.record(current)
                picks = self.frame_policy.indices(
                    len(rec.frames), self.num_frames, self.train, self.tail_drop_prob, rng
                )
                draft = self.transform.resize_size
                paths = [self.root / rec.frames[i] for i in picks]
                if self.pixels == "jpeg":  # the bytes and the crop draws; the device stage decodes (pixel_items)
                    fields = encoded_clip(self.clip_transform, paths, self.num_frames, rng)
                    fields.update(encoded_image(self.image_transform, self.root / rec.image_path, rng))
                else:
                    frames = self.decoded.load_frames(paths, draft)
                    clip = (self.clip_transform(frames, rng) if self.pixels == "float"
                            else uint8_chw(self.clip_transform.arrays(frames, rng)))  # fmt: skip
                    clip, mask = pad_clip(clip, self.num_frames)
                    shop = self.decoded.load_image(self.root / rec.image_path, draft)
                    image = (self.image_transform(shop, rng) if self.pixels == "float"
                             else uint8_image(self.image_transform, shop, rng))  # fmt: skip
                    fields = {"frames": clip, "frame_mask": mask, "image": image}
            except (MediaError, ValueError, UnicodeDecodeError) as err:
                skipped.append(f"{self.path.name} line #{current}: {err}")
                continue
            return {**fields, "video_id": rec.video_id, "image_id": rec.image_id, "skipped": skipped}
        raise RuntimeError(f"{len(skipped)} consecutive training pairs from index {idx} of {self.path} are "
                           f"unreadable (first: {skipped[0]}); check the data with `rice prepare lpr750k`")


def _gt_file(root: Path) -> Path:
    files = sorted((root / "annotations").glob("test_videoid_to_gtimage_*.json"))
    if not files:
        raise FileNotFoundError(f"{root / 'annotations'}/test_videoid_to_gtimage_*.json not found; {_hint(root)}")
    return files[0]


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is one ValueError line naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # JSONDecodeError is a ValueError
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(f"{path}: not valid JSON ({detail}); re-download the annotations") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by clip id, found {type(data).__name__}; "
                         "re-download the annotations")
    return data


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _query_frames(path: Path) -> dict[str, list[str]]:
    """``query_tenframes.json``: clip id -> {"frames": [paths], ...}."""
    frames: dict[str, list[str]] = {}
    for cid, entry in _read_json_object(path).items():
        listed = entry.get("frames") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not (listed is None or _strings(listed)):
            raise ValueError(f"{path}: clip {cid[:80]!r} must map to an object with a list of frame paths "
                             f"under 'frames'; re-download the annotations")
        frames[cid] = list(listed or [])
    return frames


def _ground_truth(path: Path) -> dict[str, list[str]]:
    """``test_videoid_to_gtimage_*.json``: clip id -> an image id or a list of them."""
    gt: dict[str, list[str]] = {}
    for cid, ids in _read_json_object(path).items():
        if not (isinstance(ids, str) or ids is None or _strings(ids)):
            raise ValueError(f"{path}: clip {cid[:80]!r} must map to an image id or a list of image ids; "
                             "re-download the annotations")
        gt[cid] = [ids] if isinstance(ids, str) else list(ids or [])
    return gt


class LPRQueries(Dataset):
    """Query clips of the LPR4M protocol: every clip of the query file and of the ground-truth file.

    A clip listed in the ground truth without frames (or with unreadable frames) gives ``ok=False`` and
    counts as a miss, so the denominator is every ground-truth query (20,079 for LPR4M).
    """

    def __init__(self, root: str | os.PathLike[str], *, num_frames: int = 10,
                 transform: ImageTransform | None = None, gt_file: str | os.PathLike[str] | None = None,
                 frame_policy: FramePolicy | None = None) -> None:
        self.root = Path(root).expanduser()
        self.frame_policy = frame_policy or FramePolicy()
        query_file = self.root / "annotations" / "query_tenframes.json"
        if not query_file.is_file():
            raise FileNotFoundError(f"{query_file} not found; {_hint(self.root)}")
        queries = _query_frames(query_file)
        gt = _ground_truth(Path(gt_file or _gt_file(self.root)))
        self.ids = list(dict.fromkeys([*queries, *gt]))
        self.frames = {cid: queries.get(cid, []) for cid in self.ids}
        self.gt = {cid: gt.get(cid, []) for cid in self.ids}
        self.without_frames = [cid for cid in self.ids if not self.frames[cid]]
        self.without_gt = [cid for cid in self.ids if not self.gt[cid]]
        self.num_frames = num_frames
        self.transform = transform if transform is not None else build_transform(224, train=False)
        self.clip_transform = ClipTransform(self.transform)

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict[str, Any]:
        return {"dataset": "lpr", "kind": "LPRQueries", "items": len(self),
                "without_frames": len(self.without_frames), "without_gt": len(self.without_gt)}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        cid = self.ids[idx]
        item: dict[str, Any] = {"query_id": cid, "gt_ids": self.gt[cid], "source": -1, "group": live_id_of(cid)}
        paths = self.frames[cid]
        try:
            if not paths:
                raise MediaError(f"query {cid}: no frames listed in query_tenframes.json")
            picks = self.frame_policy.indices(len(paths), self.num_frames, False, 0.0, None)
            # Full decode at evaluation (no JPEG draft): pixel-identical to the public code's preprocessing.
            frames = load_frames([self.root / "query" / paths[i] for i in picks])
            clip, mask = pad_clip(self.clip_transform(frames), self.num_frames)
            item.update(frames=clip, frame_mask=mask, ok=True, skipped=[])
        except MediaError as err:
            clip, mask = _zero_clip(self.num_frames, self.transform.image_size)
            item.update(frames=clip, frame_mask=mask, ok=False, skipped=[str(err)])
        return item


class LPRGallery(Dataset):
    """Gallery shop images (``gallery_main.txt``); an unreadable image gives ``ok=False`` and a zero tensor."""

    def __init__(self, root: str | os.PathLike[str], *, transform: ImageTransform | None = None) -> None:
        self.root = Path(root).expanduser()
        listing = self.root / "annotations" / "gallery_main.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} not found; {_hint(self.root)}")
        self.lines: list[str] = []
        try:
            text = listing.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{listing}: not UTF-8 text ({err.reason}); re-download the annotations") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if line.count("/") != 1 or ".." in line.split("/") or not all(line.split("/")):
                raise ValueError(f"{listing} line {n}: {line[:120]!r} must be <live_id>/<file name> (exactly one "
                                 "'/', no '..')")
            self.lines.append(line)
        self.transform = transform if transform is not None else build_transform(224, train=False)

    def __len__(self) -> int:
        return len(self.lines)

    def describe(self) -> dict[str, Any]:
        return {"dataset": "lpr", "kind": "LPRGallery", "items": len(self),
                "groups": len({line.split("/")[0] for line in self.lines})}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        live_id, name = self.lines[idx].split("/")
        item: dict[str, Any] = {"image_id": gallery_image_id(name), "group": live_id}
        try:
            image = self.transform(load_image(self.root / "gallery" / live_id / name))
            item.update(image=image, ok=True, skipped=[])
        except MediaError as err:
            size = self.transform.image_size
            item.update(image=torch.zeros(3, size, size), ok=False, skipped=[str(err)])
        return item


# ------------------------------------------------------------------------------------ config constructors (factory)
def _check_split(split: str) -> None:
    if split != "test":
        raise ValueError(f"LPR evaluation split {split!r} is not available; choose from ['test'] "
                         "(the validation pairs in training_videoinfo_val.txt are a training-format file)")


def train_from_config(cfg: Any, transform: ImageTransform, seed: int | None) -> Dataset:
    """`DatasetSpec.train` for ``--dataset lpr`` (cfg: `rice.config.DataConfig`)."""
    return LPRTrainPairs(cfg.resolved_root(), "train", num_frames=cfg.num_frames, transform=transform,
                         image_transform=shop_image_transform(transform, cfg.shop_augment), train=True,
                         tail_drop_prob=cfg.tail_drop_prob, seed=seed,
                         frame_policy=FramePolicy(tail_drop=cfg.tail_drop, train_sampling=cfg.train_frame_sampling),
                         decoded_cache_mb=cfg.decoded_cache_mb, pixels=item_pixels(cfg.normalize_on, cfg.decode_device))


def queries_from_config(cfg: Any, transform: ImageTransform, split: str, frame_policy: FramePolicy | None = None,
                        ) -> Dataset:
    _check_split(split)
    return LPRQueries(cfg.resolved_root(), num_frames=cfg.num_frames, transform=transform, frame_policy=frame_policy)


def gallery_from_config(cfg: Any, transform: ImageTransform, split: str) -> Dataset:
    _check_split(split)
    return LPRGallery(cfg.resolved_root(), transform=transform)


__all__: Sequence[str] = [
    "LPRGallery", "LPRQueries", "LPRTrainPairs", "VideoinfoIndex", "VideoinfoRecord", "build_videoinfo_index",
    "gallery_image_id", "live_id_of", "load_videoinfo_index", "parse_videoinfo_line", "videoinfo_files",
]

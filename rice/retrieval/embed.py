"""Batch embedding of shop images and query clips with a model's eval preprocessing.

Items are file paths (an image, a video file, or a folder of frames), PIL images, or tensors that are already
preprocessed ((3, S, S) for an image, (T, 3, S, S) for a clip). Files are read in DataLoader workers; an unreadable
file is skipped and listed in ``EmbeddingBatch.skipped`` as ``"path: reason"``, never a crash half-way through a
catalogue of 100,000 items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from rice.data.frames import load_image
from rice.data.model_input import MediaKind, clip_input, eval_transform, image_input, media_kind, query_frames
from rice.data.sampling import pad_clip
from rice.data.transforms import ClipTransform, ImageTransform
from rice.data.video import MediaError
from rice.models.precision import inference_dtype

Item = str | os.PathLike[str] | Image.Image | torch.Tensor


@dataclass
class EmbeddingBatch:
    """The embeddings of the readable items, in input order.

    ``positions[i]`` is the index in the input list of row ``i`` (skipped items leave gaps).
    """

    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    ids: list[str]
    paths: list[str | None]
    positions: np.ndarray  # (N,) int64
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def embed_image(model: Any, path: str | os.PathLike[str]) -> torch.Tensor:
    """L2-normalised embedding (D,) of one shop image file, with the model's eval preprocessing."""
    device = next(model.parameters()).device
    return model.encode_image(image_input(path, model.preprocess)[None].to(device))[0].cpu()


@torch.no_grad()
def embed_video(model: Any, path: str | os.PathLike[str], num_frames: int | None = None) -> torch.Tensor:
    """L2-normalised embedding (D,) of one query: a video file, a folder of frames or an image, from ``num_frames``
    evenly spaced frames (default: the T the model was trained with), as at evaluation."""
    clip = clip_input(path, model.preprocess, num_frames or default_num_frames(model))
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    device = next(model.parameters()).device
    return model.encode_video(clip[None].to(device), mask.to(device))[0].cpu()


def default_num_frames(model: torch.nn.Module) -> int:
    """The T the model was trained with (its config), else the default of DataConfig."""
    from rice.config import DataConfig

    config = getattr(model, "config", None)
    return int(config.data.num_frames) if config is not None else DataConfig().num_frames


class _MediaItems(Dataset):
    """One item per input; an unreadable item yields ``ok=False`` and zeros, so batches keep their shape."""

    def __init__(self, items: Sequence[Item], kind: MediaKind, transform: ImageTransform, num_frames: int) -> None:
        self.items, self.kind, self.transform, self.num_frames = items, kind, transform, num_frames

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, item: Item) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(item, torch.Tensor):
            tensor = item.float()
        elif self.kind == "image":
            tensor = self.transform(item if isinstance(item, Image.Image) else load_image(item))
        elif isinstance(item, Image.Image):
            tensor = self.transform(item).unsqueeze(0)  # a single still image as a one-frame clip
        else:
            tensor = ClipTransform(self.transform)(query_frames(item, self.num_frames))
        if self.kind == "image":
            return tensor, torch.ones((), dtype=torch.bool)
        if tensor.ndim != 4 or tensor.shape[0] > self.num_frames:
            raise MediaError(f"expected a clip tensor (T<={self.num_frames}, 3, S, S), got {tuple(tensor.shape)}")
        return pad_clip(tensor, self.num_frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        size = self.transform.image_size
        try:
            tensor, mask = self._load(self.items[index])
            return {"tensor": tensor, "mask": mask, "ok": True, "reason": "", "index": index}
        except (MediaError, OSError, IndexError, TypeError) as err:
            shape = (3, size, size) if self.kind == "image" else (self.num_frames, 3, size, size)
            mask = torch.ones((), dtype=torch.bool) if self.kind == "image" else torch.zeros(self.num_frames).bool()
            name = _describe(self.items[index], index)
            reason = " ".join(str(err).split())
            reason = reason if reason.startswith(name) else f"{name}: {reason}"
            return {"tensor": torch.zeros(shape), "mask": mask, "ok": False, "reason": reason, "index": index}


def _describe(item: Item, index: int) -> str:
    return str(item) if isinstance(item, str | os.PathLike) else f"item {index} ({type(item).__name__})"


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tensor": torch.stack([i["tensor"] for i in items]),
        "mask": torch.stack([i["mask"] for i in items]),
        "ok": [i["ok"] for i in items],
        "reason": [i["reason"] for i in items],
        "index": [i["index"] for i in items],
    }


def model_device(model: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    """``device``, or where the model's parameters are when it is None."""
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def _embed(
    model: torch.nn.Module,
    items: Sequence[Item],
    kind: MediaKind,
    batch_size: int,
    workers: int,
    device: torch.device | str | None,
    num_frames: int,
    ids: Sequence[str] | None,
    progress: bool,
    precision: str | None = None,
) -> EmbeddingBatch:
    if ids is not None and len(ids) != len(items):
        raise ValueError(f"{len(ids)} ids for {len(items)} items: give one id per item")
    device = model_device(model, device)
    was_training = model.training
    model.eval()
    dataset = _MediaItems(list(items), kind, eval_transform(model.preprocess), num_frames)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate)
    dtype = embedding_dtype(precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    parts, positions, skipped = [], [], []
    with _progress(progress, len(dataset), kind) as advance, autocast:
        for batch in loader:
            ok = torch.tensor(batch["ok"], dtype=torch.bool)
            skipped += [reason for reason, good in zip(batch["reason"], batch["ok"]) if not good]
            if ok.any():
                tensor = batch["tensor"][ok].to(device, non_blocking=True)
                if kind == "image":
                    emb = model.encode_image(tensor)
                else:
                    emb = model.encode_video(tensor, batch["mask"][ok].to(device))
                parts.append(emb.float().cpu().numpy())
                positions += [index for index, good in zip(batch["index"], batch["ok"]) if good]
            advance(len(batch["ok"]))
    model.train(was_training)
    dim = int(model.embed_dim)
    embeddings = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    positions_arr = np.asarray(positions, dtype=np.int64)
    all_ids = list(ids) if ids is not None else [_default_id(item, i) for i, item in enumerate(items)]
    paths = [str(items[p]) if isinstance(items[p], str | os.PathLike) else None for p in positions_arr]
    return EmbeddingBatch(
        embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
        ids=[all_ids[p] for p in positions_arr],
        paths=paths,
        positions=positions_arr,
        skipped=skipped,
    )


def embedding_dtype(precision: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype that embeds media at ``precision`` on ``device`` (None: plain fp32).

    ``None`` (the default) is bf16 autocast on a GPU (the tensor cores' format) and fp32 on a CPU, so that a
    catalogue's vectors do not depend on which CPU built it; ``auto``, ``fp32`` and ``bf16`` are the inference
    precisions of `rice.models.precision` (``auto``: bf16 where the hardware multiplies it, a CPU with AMX or
    AVX512-BF16 included, where an index of rice_vit_b32 builds 3x faster: docs/search.md)."""
    if precision is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    return inference_dtype(precision, device)


def resolved_precision(precision: str | None, device: torch.device | str) -> str:
    """What ``precision`` means on ``device``: "bf16" or "fp32" (recorded with a catalogue's model)."""
    return "fp32" if embedding_dtype(precision, device) is None else "bf16"


def _default_id(item: Item, index: int) -> str:
    return Path(item).stem if isinstance(item, str | os.PathLike) else str(index)


class _progress:
    """A rich progress bar when asked for (the CLI), nothing otherwise (tests, notebooks that do not want one)."""

    def __init__(self, enabled: bool, total: int, kind: str) -> None:
        self.enabled, self.total, self.kind = enabled, total, kind

    def __enter__(self):  # noqa: ANN204
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.__enter__()
        task = self._bar.add_task(f"embedding {self.kind}s", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)


def embed_images(
    model: torch.nn.Module,
    items: Sequence[Item],
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str | None = None,
    ids: Sequence[str] | None = None,
    progress: bool = False,
    precision: str | None = None,
) -> EmbeddingBatch:
    """L2-normalised embeddings of shop images (paths, PIL images or preprocessed (3, S, S) tensors).

    Args:
        ids: one id per item; default: the file stem of a path, the position otherwise.
        device: where the model runs; default: where its parameters are.
        precision: None (bf16 autocast on CUDA, fp32 on a CPU), or auto / fp32 / bf16 (`embedding_dtype`).
    """
    return _embed(model, items, "image", batch_size, workers, device, default_num_frames(model), ids, progress,
                  precision)  # fmt: skip


def embed_videos(
    model: torch.nn.Module,
    items: Sequence[Item],
    batch_size: int = 8,
    workers: int = 0,
    device: torch.device | str | None = None,
    num_frames: int | None = None,
    ids: Sequence[str] | None = None,
    progress: bool = False,
    precision: str | None = None,
) -> EmbeddingBatch:
    """L2-normalised embeddings of clips: video files, folders of frames, or preprocessed (T, 3, S, S) tensors.

    ``num_frames`` (default: the model's training T) frames are sampled evenly, as at evaluation; ``precision``:
    as `embed_images`.
    """
    frames = num_frames or default_num_frames(model)
    return _embed(model, items, "video", batch_size, workers, device, frames, ids, progress, precision)


def embed_media(
    model: torch.nn.Module, items: Sequence[Item], kind: MediaKind, batch_size: int | None = None, **kwargs: Any
) -> EmbeddingBatch:
    """`embed_images` or `embed_videos` by ``kind``."""
    if kind == "image":
        return embed_images(model, items, batch_size=batch_size or 64, **kwargs)
    return embed_videos(model, items, batch_size=batch_size or 8, **kwargs)


def embed_query(model: torch.nn.Module, path: str | os.PathLike[str], num_frames: int | None = None) -> np.ndarray:
    """Embedding (D,) of one query: a video file, a folder of frames, or an image.

    Raises:
        MediaError: the query cannot be read (one line naming the file and why).
    """
    kind = media_kind(path)
    batch = embed_media(model, [path], kind, num_frames=num_frames) if kind == "video" else embed_images(model, [path])
    if batch.skipped:
        raise MediaError(batch.skipped[0])
    return batch.embeddings[0]

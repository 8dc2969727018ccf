"""Config -> datasets. Datasets are chosen by the explicit `DATASETS` mapping (no name sniffing).

To add a dataset format, write three small constructors with the `DatasetSpec` signatures and add one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch.utils.data import Dataset

import rice.data.lpr as _lpr

from ..config import DataConfig, EvalConfig
from .movingfashion import MovingFashionGallery, MovingFashionPairs, MovingFashionQueries
from .pixel_items import item_pixels
from .sampling import FramePolicy
from .transforms import ImageTransform, build_transform, shop_image_transform


class Preprocess(Protocol):
    """What the model tells the data about its input (``model.preprocess``)."""

    input_size: int
    mean: Any
    std: Any
    resize_size: int | None


@dataclass(frozen=True)
class DatasetSpec:
    """The constructors of one dataset format.

    ``train(cfg, transform, seed)``, ``queries(cfg, transform, split, frame_policy)``, ``gallery(cfg, transform,
    split)``; the transform is already built (train or eval) from the model's preprocess and the config overrides.
    """

    train: Callable[[DataConfig, ImageTransform, int | None], Dataset]
    queries: Callable[[DataConfig, ImageTransform, str, FramePolicy], Dataset]
    gallery: Callable[[DataConfig, ImageTransform, str], Dataset]


def _mf_train(cfg: DataConfig, transform: ImageTransform, seed: int | None) -> Dataset:
    return MovingFashionPairs(
        cfg.resolved_root(),
        "train",
        num_frames=cfg.num_frames,
        transform=transform,
        image_transform=shop_image_transform(transform, cfg.shop_augment),
        train=True,
        tail_drop_prob=cfg.tail_drop_prob,
        video_backend=cfg.video_backend,
        use_prepared_frames=cfg.use_prepared_frames,
        seed=seed,
        frame_policy=FramePolicy(tail_drop=cfg.tail_drop, train_sampling=cfg.train_frame_sampling),
        decoded_cache_mb=cfg.decoded_cache_mb,
        pixels=item_pixels(cfg.normalize_on, cfg.decode_device),
    )


def _mf_queries(cfg: DataConfig, transform: ImageTransform, split: str, policy: FramePolicy) -> Dataset:
    return MovingFashionQueries(
        cfg.resolved_root(),
        split,
        num_frames=cfg.num_frames,
        transform=transform,
        video_backend=cfg.video_backend,
        use_prepared_frames=cfg.use_prepared_frames,
        frame_policy=policy,
        shared_video_gt=cfg.shared_video_gt,
    )


def _mf_gallery(cfg: DataConfig, transform: ImageTransform, split: str) -> Dataset:
    return MovingFashionGallery(cfg.resolved_root(), split, transform=transform)


DATASETS: dict[str, DatasetSpec] = {
    "movingfashion": DatasetSpec(train=_mf_train, queries=_mf_queries, gallery=_mf_gallery),
    "lpr": DatasetSpec(train=_lpr.train_from_config, queries=_lpr.queries_from_config,
                       gallery=_lpr.gallery_from_config),
}


def _spec(cfg: DataConfig) -> DatasetSpec:
    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset {cfg.dataset!r} is not available in this build; choose from {sorted(DATASETS)}")
    return DATASETS[cfg.dataset]


def build_data_transform(cfg: DataConfig, preprocess: Preprocess, train: bool) -> ImageTransform:
    """The transform for ``preprocess``, with ``cfg.image_size`` / ``cfg.resize_size`` overriding it when set."""
    image_size = cfg.image_size if cfg.image_size is not None else int(preprocess.input_size)
    if cfg.resize_size is not None:
        resize_size = cfg.resize_size
    elif cfg.image_size is not None:
        resize_size = None  # a new crop size: the model's resize no longer fits, use the 256/224 rule
    else:
        resize_size = getattr(preprocess, "resize_size", None)
    return build_transform(
        image_size, train, tuple(preprocess.mean), tuple(preprocess.std), resize_size,
        per_frame_crops=train and cfg.clip_crops == "frame", color_jitter=cfg.color_jitter if train else 0.0,
        crop_scale=cfg.crop_scale if train else None,
        interpolation=getattr(preprocess, "interpolation", "bilinear"),
    )  # fmt: skip


def build_train_dataset(data_cfg: DataConfig, preprocess: Preprocess, seed: int | None = None) -> Dataset:
    """Training pairs of ``data_cfg.dataset`` (items: docs/internals.md)."""
    return _spec(data_cfg).train(data_cfg, build_data_transform(data_cfg, preprocess, train=True), seed)


def build_eval_datasets(
    data_cfg: DataConfig, preprocess: Preprocess, split: str = "test", eval_cfg: EvalConfig | None = None
) -> tuple[Dataset, Dataset]:
    """``(queries, gallery)`` of ``data_cfg.dataset`` for ``split``, with deterministic eval preprocessing.

    ``eval_cfg`` (default: `EvalConfig()`) chooses the query frames: how they are sampled (``frame_sampling``) and
    how many (``num_frames``, else the training ``data_cfg.num_frames``). Scoring and its report pass the same one,
    so a report shows the frames that were scored."""
    eval_cfg = eval_cfg or EvalConfig()
    if eval_cfg.num_frames is not None:  # a model trained on few frames can still be scored on the protocol's 10
        data_cfg = data_cfg.model_copy(update={"num_frames": eval_cfg.num_frames})
    spec = _spec(data_cfg)
    transform = build_data_transform(data_cfg, preprocess, train=False)
    policy = FramePolicy(eval_sampling=eval_cfg.frame_sampling)
    return spec.queries(data_cfg, transform, split, policy), spec.gallery(data_cfg, transform, split)

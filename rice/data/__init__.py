"""Data: video/image readers, transforms, MovingFashion datasets, synthetic data, config factories."""

from .collate import collate_batch as collate_batch
from .factory import DATASETS as DATASETS
from .factory import DatasetSpec as DatasetSpec
from .factory import build_data_transform as build_data_transform
from .factory import build_eval_datasets as build_eval_datasets
from .factory import build_train_dataset as build_train_dataset
from .frames import load_image as load_image
from .movingfashion import MovingFashionGallery as MovingFashionGallery
from .movingfashion import MovingFashionPairs as MovingFashionPairs
from .movingfashion import MovingFashionQueries as MovingFashionQueries
from .movingfashion import load_split as load_split
from .sampling import drop_tail as drop_tail
from .sampling import pad_clip as pad_clip
from .sampling import sample_frame_indices as sample_frame_indices
from .synthetic import write_synthetic_dataset as write_synthetic_dataset
from .transforms import CLIP_MEAN as CLIP_MEAN
from .transforms import CLIP_STD as CLIP_STD
from .transforms import ClipTransform as ClipTransform
from .transforms import ImageTransform as ImageTransform
from .transforms import build_transform as build_transform
from .video import MediaError as MediaError
from .video import VideoInfo as VideoInfo
from .video import read_video_frames as read_video_frames
from .video import video_info as video_info
from .video import video_num_frames as video_num_frames

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DATASETS",
    "ClipTransform",
    "DatasetSpec",
    "ImageTransform",
    "MediaError",
    "MovingFashionGallery",
    "MovingFashionPairs",
    "MovingFashionQueries",
    "VideoInfo",
    "build_data_transform",
    "build_eval_datasets",
    "build_train_dataset",
    "build_transform",
    "collate_batch",
    "drop_tail",
    "load_image",
    "load_split",
    "pad_clip",
    "read_video_frames",
    "sample_frame_indices",
    "video_info",
    "video_num_frames",
    "write_synthetic_dataset",
]

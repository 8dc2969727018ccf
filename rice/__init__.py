"""rice: video-to-shop product retrieval (RICE, ICCV 2023) and its baselines."""

__version__ = "0.1.0"

from rice.api import embed_image as embed_image
from rice.api import embed_video as embed_video
from rice.api import load as load
from rice.config import RunConfig as RunConfig
from rice.config import build_config as build_config
from rice.models import RiceModel as RiceModel
from rice.models import create_model as create_model
from rice.models import list_models as list_models

__all__ = [
    "Index",
    "RiceModel",
    "RunConfig",
    "__version__",
    "build_config",
    "create_model",
    "embed_image",
    "embed_images",
    "embed_video",
    "embed_videos",
    "list_models",
    "load",
]

# The catalogue API (rice.Index, rice.embed_images, rice.embed_videos) loads FAISS: only on first use.
_LAZY = {
    "Index": "rice.retrieval.catalogue",
    "embed_images": "rice.retrieval.embed",
    "embed_videos": "rice.retrieval.embed",
}


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    if name not in _LAZY:
        raise AttributeError(f"module 'rice' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

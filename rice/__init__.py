"""rice: video-to-shop product retrieval (RICE, ICCV 2023) and its baselines.

The public names below are loaded on first use (PEP 562 module ``__getattr__``): ``import rice.cli`` must not pay
for torch, timm and torchvision, which take seconds to import, when it only prints help or lists models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rice._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "embed_image": "rice.retrieval.embed",
    "embed_video": "rice.retrieval.embed",
    "load": "rice.models.loading",
    "RunConfig": "rice.config",
    "build_config": "rice.config",
    "RiceModel": "rice.models",
    "create_model": "rice.models",
    "list_models": "rice.models",
    # the catalogue API loads FAISS: only on first use
    "Index": "rice.retrieval.catalogue",
    "embed_images": "rice.retrieval.embed",
    "embed_videos": "rice.retrieval.embed",
    # livestream scanning: rice.scan(model, index, source) -> an iterable ScanRun with .timeline
    "scan": "rice.scanning.engine",
    "Timeline": "rice.scanning.timeline",
    # a client of `rice serve` (standard library only)
    "Client": "rice.serve.client",
}

__all__ = [
    "Client",
    "Index",
    "RiceModel",
    "RunConfig",
    "Timeline",
    "__version__",
    "build_config",
    "create_model",
    "embed_image",
    "embed_images",
    "embed_video",
    "embed_videos",
    "list_models",
    "load",
    "scan",
]

if TYPE_CHECKING:  # static analysers and IDEs see the real objects
    from rice.config import RunConfig, build_config
    from rice.models import RiceModel, create_model, list_models
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index
    from rice.retrieval.embed import embed_image, embed_images, embed_video, embed_videos
    from rice.scanning.engine import scan
    from rice.scanning.timeline import Timeline
    from rice.serve.client import Client


__getattr__ = lazy_getattr("rice", _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

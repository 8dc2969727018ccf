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
    "RiceModel",
    "RunConfig",
    "__version__",
    "build_config",
    "create_model",
    "embed_image",
    "embed_video",
    "list_models",
    "load",
]

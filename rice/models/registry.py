"""The model registry: one function per variant, named as the variant (timm style), plus a catalogue of the
built-in variants' sizes.

The catalogue is plain data so that listing models (``rice models``) needs neither torch nor a model build; a
built-in variant's module is imported the first time the variant is created. ``register_model`` refuses a
built-in variant missing from the catalogue, and tests/models/test_registry_info.py checks every entry against a
real build, so the figures cannot drift from the code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    """What `rice models` shows about a variant, known without building it."""

    module: str  # the module whose import registers the variant function
    params: int  # parameter count of ``create_model(name, pretrained=False)`` (no PMD decoder)
    input_size: int  # square side, in pixels, of the images and frames the encoder takes
    embed_dim: int  # size of the retrieval embedding
    # Forward FLOPs of embedding one image at input_size, in 1e9, counting a multiply-add as 2 FLOPs (torch's
    # FlopCounterMode on the meta device; tests/models/test_registry_info.py recounts it). Video models count one
    # frame; PMD re-ranking is extra.
    gflops: float = 0.0


_RICE = "rice.models.rice_model"
_BASELINES = "rice.models.baselines"

BUILTIN_MODELS: dict[str, ModelInfo] = {
    "rice_vit_b32": ModelInfo(_RICE, params=87_849_217, input_size=224, embed_dim=512, gflops=8.82),
    "rice_tiny": ModelInfo(_RICE, params=241_369, input_size=64, embed_dim=128, gflops=0.0609),
    "swin_b": ModelInfo(_BASELINES, params=87_267_513, input_size=224, embed_dim=512, gflops=30.86),
    "swin_b_tiny": ModelInfo(_BASELINES, params=20_005, input_size=32, embed_dim=24, gflops=0.0011),
    "timesformer": ModelInfo(_BASELINES, params=114_571_009, input_size=224, embed_dim=512, gflops=46.23),
    "timesformer_tiny": ModelInfo(_BASELINES, params=42_081, input_size=32, embed_dim=24, gflops=0.0013),
    "fashionnet": ModelInfo(_BASELINES, params=136_357_697, input_size=224, embed_dim=512, gflops=30.94),
    "fashionnet_tiny": ModelInfo(_BASELINES, params=262_305, input_size=32, embed_dim=24, gflops=0.0018),
    "rice_siglip2_b16": ModelInfo(_RICE, params=93_474_049, input_size=224, embed_dim=768, gflops=35.42),
    "rice_dfn_b16": ModelInfo(_RICE, params=86_193_153, input_size=224, embed_dim=512, gflops=35.13),
    "rice_eva02_b16": ModelInfo(_RICE, params=86_263_041, input_size=224, embed_dim=512, gflops=35.13),
    "rice_dinov2_b14": ModelInfo(_RICE, params=86_317_057, input_size=224, embed_dim=768, gflops=47.08),
}

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    if fn.__module__ in {_RICE, _BASELINES} and name not in BUILTIN_MODELS:
        raise ValueError(f"built-in model {name!r} has no entry in rice.models.registry.BUILTIN_MODELS: add one")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Built-in variants and any registered by user code; imports no model code."""
    return sorted(set(BUILTIN_MODELS) | set(_MODELS))


def model_info(name: str) -> ModelInfo | None:
    """The catalogue entry of a built-in variant; None for a variant registered by user code."""
    return BUILTIN_MODELS.get(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``kwargs`` go to the variant function (pretrained, pretrained_file, ...)."""
    if name not in _MODELS and name in BUILTIN_MODELS:
        importlib.import_module(BUILTIN_MODELS[name].module)  # registers the variant function
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {list_models()}")
    return _MODELS[name](**kwargs)

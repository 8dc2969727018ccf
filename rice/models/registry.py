"""A plain dict of model constructors: one function per variant, named as the variant (timm style)."""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``kwargs`` go to the variant function (pretrained, pretrained_file, ...)."""
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {list_models()}")
    return _MODELS[name](**kwargs)

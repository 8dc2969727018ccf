"""Models: the registry, encoders, RiceModel and its variants.

The registry is imported eagerly (it is plain Python); encoders and models load on first use, so that listing
models or printing CLI help never imports torch.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from rice._lazy import lazy_getattr
from rice.models.registry import ModelInfo, create_model, list_models, model_info, register_model

if TYPE_CHECKING:
    from rice.models.encoders import EncoderOutput, ImageEncoder, Preprocess
    from rice.models.rice_model import RiceModel

__all__ = [
    "EncoderOutput",
    "ImageEncoder",
    "ModelInfo",
    "Preprocess",
    "RiceModel",
    "build_for_weights",
    "build_model",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]

_LAZY = {
    "EncoderOutput": "rice.models.encoders",
    "ImageEncoder": "rice.models.encoders",
    "Preprocess": "rice.models.encoders",
    "RiceModel": "rice.models.rice_model",
}


__getattr__ = lazy_getattr("rice.models", _LAZY, globals())


def build_model(cfg, with_decoder: bool = False, with_reconstruction: bool = False) -> RiceModel:
    """Build the model a ModelConfig describes; ``with_decoder`` adds the PMD decoder (PMD/PFR runs) and
    ``with_reconstruction`` its PFR head-merging convs (PFR runs only, so every parameter gets a gradient)."""
    with tempfile.TemporaryDirectory(prefix="rice-weights-") as tmp:
        pretrained_file = cfg.pretrained_file
        if pretrained_file is not None and getattr(cfg, "trust_torchscript", False):
            # The user vouched for this TorchScript file: read it once here, so the loaders stay code-free.
            from rice.models.clip_weights import trusted_torchscript_as_state_dict

            pretrained_file = str(trusted_torchscript_as_state_dict(pretrained_file, tmp))
        model = create_model(
            cfg.name,
            pretrained=cfg.pretrained,
            pretrained_file=pretrained_file,
            logit_scale_init=cfg.logit_scale_init,
        )
    if with_decoder:
        # The PMD decoder is built by rice.models.decoder (issue 3); it is attached to model.decoder.
        from rice.models.decoder import build_decoder

        model.decoder = build_decoder(
            model.encoder, heads=cfg.decoder_heads, attn_drop=cfg.decoder_attn_drop,
            reconstruction=with_reconstruction, self_attn_drop=cfg.decoder_self_attn_drop,
            norm_kv=cfg.decoder_norm_kv, match_head_init=cfg.match_head_init,
        )  # fmt: skip
    return model


def build_for_weights(model_cfg, with_decoder: bool = False, with_reconstruction: bool = False) -> RiceModel:
    """The model that a state dict is about to fill: built on the meta device and given uninitialised CPU storage,
    so no time goes on a random initialisation that the weights overwrite anyway (`rice.load` of a rice_vit_b32
    checkpoint: 0.30 s against 1.06 s on these CPUs, `benchmarks/startup.py`). Load every tensor of its state dict
    into it.

    A model with buffers that its state dict does not hold (computed at construction: Swin's relative position
    index, EVA02's rotary tables) is built the ordinary way, since uninitialised storage would lose them."""
    import torch  # not at import: listing models and CLI help never import torch

    with torch.device("meta"):
        model = build_model(model_cfg, with_decoder=with_decoder, with_reconstruction=with_reconstruction)
    stored = model.state_dict().keys()
    if any(name not in stored for name, _ in model.named_buffers()):
        return build_model(model_cfg, with_decoder=with_decoder, with_reconstruction=with_reconstruction)
    return model.to_empty(device="cpu")

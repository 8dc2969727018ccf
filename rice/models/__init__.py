"""Models: the registry, encoders, RiceModel and its variants."""

from rice.models import baselines as _baselines  # noqa: F401  (registers swin_b, timesformer, fashionnet + tiny)
from rice.models import rice_model as _rice_model  # noqa: F401  (registers rice_vit_b32, rice_tiny)
from rice.models.encoders import EncoderOutput, ImageEncoder, Preprocess
from rice.models.registry import create_model, list_models, register_model
from rice.models.rice_model import RiceModel

__all__ = [
    "EncoderOutput",
    "ImageEncoder",
    "Preprocess",
    "RiceModel",
    "build_model",
    "create_model",
    "list_models",
    "register_model",
]


def build_model(cfg, with_decoder: bool = False, with_reconstruction: bool = False) -> RiceModel:
    """Build the model a ModelConfig describes; ``with_decoder`` adds the PMD decoder (PMD/PFR runs) and
    ``with_reconstruction`` its PFR head-merging convs (PFR runs only, so every parameter gets a gradient)."""
    model = create_model(
        cfg.name,
        pretrained=cfg.pretrained,
        pretrained_file=cfg.pretrained_file,
        logit_scale_init=cfg.logit_scale_init,
    )
    if with_decoder:
        # The PMD decoder is built by rice.models.decoder (issue 3); it is attached to model.decoder.
        from rice.models.decoder import build_decoder

        model.decoder = build_decoder(
            model.encoder, heads=cfg.decoder_heads, attn_drop=cfg.decoder_attn_drop,
            reconstruction=with_reconstruction, self_attn_drop=cfg.decoder_self_attn_drop,
            norm_kv=cfg.decoder_norm_kv,
        )  # fmt: skip
    return model

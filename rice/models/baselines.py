"""The baselines of the seed's comparison table: Swin-B, TimeSformer and FashionNet (each with a tiny variant).

All honour the encoder contract (docs/internals.md), so ``rice train`` / ``rice eval`` and the PMD decoder work on
them unchanged. Swin-B and FashionNet encode frames one by one (masked-mean clips, as RICE); TimeSformer runs
divided space-time attention over the whole clip, so it comes with ``TimeSformerModel``, a ``RiceModel`` whose
video path goes through the temporal model. Pretrained weights come from timm's hub only when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.vgg import VGG

from rice.models.encoders import EncoderOutput, ImageEncoder, Preprocess
from rice.models.registry import register_model
from rice.models.rice_model import RiceModel

_IMAGENET = dict(mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD))


def _timm_backbone(name: str, pretrained: bool, pretrained_file: str | None, **kwargs: Any) -> nn.Module:
    """A timm model without classifier; hub weights only when ``pretrained``, or a local timm checkpoint."""
    if pretrained and pretrained_file is None:
        try:
            return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
        except Exception as err:  # hub errors come in many types
            raise RuntimeError(
                f"could not fetch pretrained weights for {name!r} from the model hub ({type(err).__name__}). "
                f"Offline? Pass --pretrained-file PATH (a timm checkpoint) or --no-pretrained."
            ) from err
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if pretrained_file is not None:
        file = Path(pretrained_file)
        if not file.is_file():
            raise FileNotFoundError(f"pretrained file {file} not found; pass an existing timm checkpoint")
        state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        # the hub checkpoint's classifier is not part of an encoder (num_classes=0): drop it by name, load the rest
        state = {k: v for k, v in state.items() if not k.startswith(("head.fc.", "head.weight", "head.bias"))}
        model.load_state_dict(state, strict=True)
    return model


def _with_mean_token(fmap_tokens: torch.Tensor) -> torch.Tensor:
    """(N, P, C) feature-map tokens -> (N, 1+P, C) with their mean first (the contract's token 0)."""
    return torch.cat([fmap_tokens.mean(1, keepdim=True), fmap_tokens], dim=1)


# ---------------------------------------------------------------------------------------------- Swin-B -----------
class SwinEncoder(ImageEncoder):
    """timm Swin: tokens = last stage's feature map before the final norm (mean token first); embedding =
    proj(mean of the normed map), a bias-free projection to ``embed_dim``."""

    def __init__(self, backbone: nn.Module, preprocess: Preprocess, embed_dim: int = 512):
        super().__init__()
        self.backbone = backbone
        self.width = backbone.num_features
        self.embed_dim = embed_dim
        self.proj = nn.Linear(self.width, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.width**-0.5)
        grid = backbone.patch_embed.grid_size[0] // 2 ** (len(backbone.layers) - 1)
        self.num_tokens = grid * grid + 1
        self.preprocess = preprocess

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        x = self.backbone.layers(self.backbone.patch_embed(images))  # (N, h, w, C), NHWC as timm's Swin
        patches = x.flatten(1, 2)  # (N, h*w, C) before the final norm
        pooled = self.backbone.norm(patches).mean(1)
        return EncoderOutput(self.proj(pooled), _with_mean_token(patches))

    def no_weight_decay_names(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


@register_model
def swin_b(pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0) -> RiceModel:
    """Swin-B (timm ``swin_base_patch4_window7_224``) as the shared image/frame encoder, masked-mean clips."""
    backbone = _timm_backbone("swin_base_patch4_window7_224", pretrained, pretrained_file)
    return RiceModel(SwinEncoder(backbone, Preprocess(input_size=224, **_IMAGENET)), logit_scale_init)


@register_model
def swin_b_tiny(
    pretrained: bool = False, pretrained_file: str | None = None, logit_scale_init: float = 4.0
) -> RiceModel:
    """A 2-stage Swin at 32 px for tests; always random."""
    backbone = timm.models.swin_transformer.SwinTransformer(
        img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(2, 2), num_classes=0
    )
    return RiceModel(SwinEncoder(backbone, Preprocess(input_size=32, **_IMAGENET), embed_dim=24), logit_scale_init)


# ---------------------------------------------------------------------------------------------- TimeSformer ------
class TemporalAttention(nn.Module):
    """Pre-norm attention over time for each patch position; the output projection starts at zero, so a fresh
    TimeSformer is exactly its image model."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """x: (M, T, W) one sequence per (clip, patch); frame_mask: (M, T) bool, padded frames never attended."""
        q, k, v = self.qkv(self.norm(x)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (M, H, T, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=frame_mask[:, None, None, :])
        return x + self.proj(out.transpose(1, 2).flatten(2))


class TimeSformerEncoder(ImageEncoder):
    """ViT with divided space-time attention (TimeSformer): before each spatial block, temporal attention across
    the clip's frames at each patch position. One CLS token per clip: each spatial block sees it copied into every
    frame, and its outputs are averaged over the valid frames. Images are 1-frame clips.

    ``encode_clip`` gives the clip embedding (its CLS output) and per-frame tokens (B, T, L, W) whose token 0 is the
    clip's CLS; ``forward`` (the image contract) runs each image as T=1.
    """

    def __init__(self, vit: nn.Module, preprocess: Preprocess, embed_dim: int = 512, max_frames: int = 16):
        super().__init__()
        self.backbone = vit
        self.width = vit.num_features
        self.embed_dim = embed_dim
        self.num_tokens = vit.patch_embed.num_patches + 1
        self.preprocess = preprocess
        heads = vit.blocks[0].attn.num_heads
        self.temporal = nn.ModuleList(TemporalAttention(self.width, heads) for _ in vit.blocks)
        self.time_embed = nn.Parameter(torch.zeros(1, max_frames, 1, self.width))  # zero: starts as the image model
        self.proj = nn.Linear(self.width, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.width**-0.5)

    def encode_clip(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, S, S), frame_mask (B, T) bool -> clip embedding (B, D) and tokens (B, T, L, W)."""
        vit = self.backbone
        b, t = frames.shape[:2]
        if t > self.time_embed.shape[1]:
            raise ValueError(f"{t} frames exceed TimeSformer's {self.time_embed.shape[1]} time embeddings")
        mask = frame_mask.bool()
        weights = mask.to(frames.dtype)[..., None] / mask.sum(1).clamp_min(1)[:, None, None]  # (B, T, 1)
        x = vit.patch_embed(frames.flatten(0, 1)) + vit.pos_embed[:, 1:]  # (B*T, N, W)
        n, w = x.shape[1:]
        x = (x.view(b, t, n, w) + self.time_embed[:, :t]).view(b * t, n, w)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(b, 1, w)  # (B, 1, W)
        time_mask = mask.repeat_interleave(n, dim=0)  # (B*N, T)
        for block, temporal in zip(vit.blocks, self.temporal):
            xt = x.view(b, t, n, w).transpose(1, 2).reshape(b * n, t, w)  # (B*N, T, W)
            x = temporal(xt, time_mask).view(b, n, t, w).transpose(1, 2).reshape(b * t, n, w)
            y = block(torch.cat([cls.repeat_interleave(t, dim=0), x], dim=1))  # spatial, per frame (B*T, 1+N, W)
            cls = (y[:, :1].view(b, t, w) * weights).sum(1, keepdim=True)  # masked mean of the frames' CLS
            x = y[:, 1:]
        tokens = torch.cat([cls[:, None].expand(b, t, 1, w), x.view(b, t, n, w)], dim=2)  # (B, T, 1+N, W)
        return self.proj(vit.norm(cls[:, 0])), tokens

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        ones = torch.ones(images.shape[0], 1, dtype=torch.bool, device=images.device)
        embedding, tokens = self.encode_clip(images[:, None], ones)
        return EncoderOutput(embedding, tokens[:, 0])

    def last_blocks(self, n: int) -> list[nn.Module] | None:
        blocks = list(self.backbone.blocks)
        return blocks[-n:] if len(blocks) >= n else None

    def no_weight_decay_names(self) -> set[str]:
        return {"time_embed"} | {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


class TimeSformerModel(RiceModel):
    """RiceModel whose clips go through the temporal encoder: the clip embedding is the CLS output, not a mean."""

    encoder: TimeSformerEncoder

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        if frame_mask is None:
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return F.normalize(self.encoder.encode_clip(frames, frame_mask)[0], dim=-1)

    def encode_video_tokens(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, tokens = self.encoder.encode_clip(frames, frame_mask)
        return F.normalize(embedding, dim=-1), tokens

    def forward(
        self, images: torch.Tensor, frames: torch.Tensor, frame_mask: torch.Tensor, return_tokens: bool = False,
        frame_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        # frame_index (the packed frames' positions) is unused: the temporal encoder runs every frame, masked
        image = self.encoder(images)
        clip_embedding, video_tokens = self.encoder.encode_clip(frames, frame_mask)
        out = {
            "image_features": F.normalize(image.embedding, dim=-1),
            "video_features": F.normalize(clip_embedding, dim=-1),
            "logit_scale": self.logit_scale,
        }
        if return_tokens:
            out.update(image_tokens=image.tokens, video_tokens=video_tokens, frame_mask=frame_mask)
        return out


@register_model
def timesformer(
    pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0
) -> TimeSformerModel:
    """TimeSformer (divided space-time) on a ViT-B/16 (timm ``vit_base_patch16_224``, ImageNet weights)."""
    vit = _timm_backbone("vit_base_patch16_224", pretrained, pretrained_file)
    encoder = TimeSformerEncoder(vit, Preprocess(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3))
    return TimeSformerModel(encoder, logit_scale_init)


@register_model
def timesformer_tiny(
    pretrained: bool = False, pretrained_file: str | None = None, logit_scale_init: float = 4.0
) -> TimeSformerModel:
    """A 2-block, width-32 TimeSformer at 32 px for tests; always random."""
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0
    )
    encoder = TimeSformerEncoder(vit, Preprocess(input_size=32, **_IMAGENET), embed_dim=24)
    return TimeSformerModel(encoder, logit_scale_init)


# ---------------------------------------------------------------------------------------------- FashionNet -------
class FashionNetEncoder(ImageEncoder):
    """FashionNet's global branch: VGG-16 convolutions, then fc6/fc7 (timm's ConvMlp ``pre_logits``), projected to
    ``embed_dim``. Tokens: the last conv feature map (before the final pooling), mean token first."""

    def __init__(self, vgg: VGG, preprocess: Preprocess, embed_dim: int = 512):
        super().__init__()
        self.backbone = vgg
        self.width = vgg.feature_info[-1]["num_chs"]
        self.embed_dim = embed_dim
        hidden = vgg.pre_logits.fc2.out_channels  # fc7 width (4096)
        self.proj = nn.Linear(hidden, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=hidden**-0.5)
        grid = preprocess.input_size // (vgg.feature_info[-1]["reduction"] // 2)  # tokens come before the last pool
        self.num_tokens = grid * grid + 1
        self.preprocess = preprocess
        self._last_pool = len(vgg.features) - 1  # the final max-pool, after which fc6 starts

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        fmap = self.backbone.features[: self._last_pool](images)  # (N, C, h, w) last conv stage
        tokens = _with_mean_token(fmap.flatten(2).transpose(1, 2))
        pooled = self.backbone.pre_logits(self.backbone.features[self._last_pool](fmap))  # fc6, fc7: (N, F, h', w')
        return EncoderOutput(self.proj(pooled.mean((2, 3))), tokens)


@register_model
def fashionnet(pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0) -> RiceModel:
    """FashionNet-style VGG-16 global branch (timm ``vgg16``, ImageNet weights) as image and frame encoder."""
    vgg = _timm_backbone("vgg16", pretrained, pretrained_file)
    return RiceModel(FashionNetEncoder(vgg, Preprocess(input_size=224, **_IMAGENET)), logit_scale_init)


@register_model
def fashionnet_tiny(
    pretrained: bool = False, pretrained_file: str | None = None, logit_scale_init: float = 4.0
) -> RiceModel:
    """A 3-conv VGG at 32 px with small fc layers for tests; always random."""
    vgg = VGG([8, "M", 16, "M", 16, "M"], num_classes=0, mlp_ratio=1 / 128)
    return RiceModel(FashionNetEncoder(vgg, Preprocess(input_size=32, **_IMAGENET), embed_dim=24), logit_scale_init)

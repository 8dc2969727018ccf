"""RiceModel: one encoder shared by shop images and video frames, clip pooling, a learnable scale, and the
optional Pairwise Matching Decoder used by the PMD/PFR losses (and by re-ranking)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rice.models.encoders import ConvStemEncoder, ImageEncoder, Preprocess, create_timm_vit
from rice.models.registry import register_model


def real_frame_index(frame_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask of real frames -> (V,) long positions of the real frames in the flattened B*T frames.

    Its length depends on the mask's values: on a device tensor this waits for the device, so the training loader
    calls it on its CPU mask (``rice.data.collate_batch``) and the step receives the result.
    """
    return frame_mask.reshape(-1).nonzero().squeeze(1)


class RiceModel(nn.Module):
    """Dual encoder for video-to-shop retrieval.

    Args:
        encoder: any module honouring the encoder contract (docs/internals.md).
        logit_scale_init: the learnable scale s; training logits are s^2 * cos(video, image).
    """

    def __init__(self, encoder: ImageEncoder, logit_scale_init: float = 4.0):
        super().__init__()
        self.encoder = encoder
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.decoder: nn.Module | None = None

    @property
    def preprocess(self) -> Preprocess:
        return self.encoder.preprocess

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    def _encode(
        self,
        images: torch.Tensor | None,
        frames: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        frame_index: torch.Tensor | None = None,
    ):
        """Encode images and the real frames of clips in one backbone call (padded frames are never run).

        ``frame_index`` (V,) long: the positions of the real frames in the flattened (B*T) frames, i.e.
        `real_frame_index` of the mask. The training loader computes it from its CPU mask (``collate_batch``), so
        the step needs no ``nonzero`` on the device: that would wait for the device (a host sync) and give the
        backbone a batch size only known at run time. None: computed here from ``frame_mask``.

        ``frame_index`` may also list padded frames after the real ones (`train.frame_buckets`: the loader pads the
        count to one of a few sizes, so a compiled encoder sees a few shapes, not one per count). They are run and
        their outputs zeroed through ``frame_mask`` (a select, no host sync), so outputs, losses and gradients are
        those of the real frames alone; `rice.train.compile.resolve_frame_buckets` refuses encoders with
        BatchNorm, whose batch statistics the padded frames would change.
        """
        chunks = [images] if images is not None else []
        if frames is not None:
            b, t = frames.shape[:2]
            given_index = frame_index is not None
            if frame_index is None:
                frame_index = real_frame_index(frame_mask)
            chunks.append(frames.reshape(b * t, *frames.shape[2:]).index_select(0, frame_index))
        out = self.encoder(torch.cat(chunks) if len(chunks) > 1 else chunks[0])
        n_img = images.shape[0] if images is not None else 0
        image_out = (out.embedding[:n_img], out.tokens[:n_img]) if images is not None else None
        video_out = None
        if frames is not None:
            emb = out.embedding.new_zeros(b * t, out.embedding.shape[-1])
            tok = out.tokens.new_zeros(b * t, *out.tokens.shape[1:])
            emb = emb.index_put((frame_index,), out.embedding[n_img:])
            tok = tok.index_put((frame_index,), out.tokens[n_img:])
            if given_index:  # padded frames the loader listed for a bucket: zero their outputs (and gradients)
                real = frame_mask.reshape(b * t, 1).bool()
                emb = torch.where(real, emb, 0.0)
                tok = torch.where(real.unsqueeze(-1), tok, 0.0)
            video_out = (emb.reshape(b, t, -1), tok.reshape(b, t, *tok.shape[1:]))
        return image_out, video_out

    @staticmethod
    def pool_frames(frame_embeddings: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of unnormalised frame embeddings (B, T, D) -> L2-normalised clip embedding (B, D)."""
        mask = frame_mask.to(frame_embeddings.dtype).unsqueeze(-1)  # (B, T, 1)
        summed = (frame_embeddings * mask).sum(1)
        return F.normalize(summed / mask.sum(1).clamp_min(1.0), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D) L2-normalised."""
        (embedding, _), _ = self._encode(images, None, None)
        return F.normalize(embedding, dim=-1)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) with a (B, T) bool mask of real frames -> (B, D) L2-normalised."""
        if frame_mask is None:
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        _, (frame_emb, _) = self._encode(None, frames, frame_mask)
        return self.pool_frames(frame_emb, frame_mask)

    def encode_video_tokens(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip embedding (B, D) and the frame tokens (B, T, L, W), for re-ranking."""
        _, (frame_emb, frame_tokens) = self._encode(None, frames, frame_mask)
        return self.pool_frames(frame_emb, frame_mask), frame_tokens

    def encode_image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (embedding, tokens), _ = self._encode(images, None, None)
        return F.normalize(embedding, dim=-1), tokens

    def forward(
        self,
        images: torch.Tensor,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        return_tokens: bool = False,
        frame_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training forward. Keys match the loss keyword names (open_clip style). ``frame_index``: the real
        frames' positions from the loader (see `_encode`), or None to compute them from ``frame_mask``."""
        (image_emb, image_tokens), (frame_emb, frame_tokens) = self._encode(images, frames, frame_mask, frame_index)
        out = {
            "image_features": F.normalize(image_emb, dim=-1),
            "video_features": self.pool_frames(frame_emb, frame_mask),
            "logit_scale": self.logit_scale,
        }
        if return_tokens:
            out.update(image_tokens=image_tokens, video_tokens=frame_tokens, frame_mask=frame_mask)
        return out

    def embed_video(self, path: str, num_frames: int | None = None) -> torch.Tensor:
        """Embedding (D,) of a video file with the eval preprocessing; see `rice.embed_video`."""
        from rice.retrieval.embed import embed_video  # reading files lives above the model (rice.data.model_input)

        return embed_video(self, path, num_frames)

    def embed_image(self, path: str) -> torch.Tensor:
        """Embedding (D,) of an image file with the eval preprocessing; see `rice.embed_image`."""
        from rice.retrieval.embed import embed_image

        return embed_image(self, path)

    def no_weight_decay_names(self) -> set[str]:
        return {"logit_scale"} | {f"encoder.{n}" for n in self.encoder.no_weight_decay_names()}

    def head_parameter_names(self) -> set[str]:
        """Parameters trained at the head learning rate (100x): everything but the pretrained encoder."""
        return {name for name, _ in self.named_parameters() if not name.startswith("encoder.")}


@register_model
def rice_vit_b32(
    pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0
) -> RiceModel:
    """RICE on the CLIP ViT-B/32 visual tower (timm's QuickGELU variant: the OpenAI weights' activation)."""
    encoder = create_timm_vit(
        "vit_base_patch32_clip_quickgelu_224.openai",
        pretrained=pretrained,
        pretrained_file=pretrained_file,
        preprocess=Preprocess(input_size=224, resize_size=256),
    )
    return RiceModel(encoder, logit_scale_init)


@register_model
def rice_tiny(pretrained: bool = False, pretrained_file: str | None = None, logit_scale_init: float = 4.0) -> RiceModel:
    """A few-layer conv-stem transformer at 64 px for tests and the CPU demo; always trained from scratch."""
    if pretrained and pretrained_file is None:
        raise ValueError(
            "rice_tiny has no pretrained weights; pass pretrained=False (or --no-pretrained), or a file of your own "
            "with pretrained_file=PATH"
        )
    encoder = ConvStemEncoder(input_size=64, width=96, depth=2, heads=4, embed_dim=128)
    if pretrained_file is not None:
        state = torch.load(pretrained_file, map_location="cpu", weights_only=True)
        encoder.load_state_dict(state.get("encoder", state))
    return RiceModel(encoder, logit_scale_init)



# Stronger image towers (issue 23), through timm. Each takes its preprocessing from timm's pretrained config
# (`timm_preprocess`); weights come from the hub only with pretrained=True, or from a local file. ``timm_overrides``
# go to ``timm.create_model``: the tests build each variant small (img_size, depth, embed_dim, num_heads).


def _timm_variant(
    timm_name: str, pretrained: bool, pretrained_file: str | None, logit_scale_init: float, **timm_overrides: object
) -> RiceModel:
    encoder = create_timm_vit(
        timm_name, pretrained=pretrained, pretrained_file=pretrained_file, preprocess=None, proj_bias=True,
        **timm_overrides,
    )  # fmt: skip
    return RiceModel(encoder, logit_scale_init)


@register_model
def rice_siglip2_b16(
    pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0, **timm_overrides
) -> RiceModel:
    """RICE on SigLIP 2 ViT-B/16 at 224 px (timm vit_base_patch16_siglip_224.v2_webli): attention-pool embedding
    (768-d), 196 patch tokens plus their mean as token 0."""
    return _timm_variant("vit_base_patch16_siglip_224.v2_webli", pretrained, pretrained_file, logit_scale_init,
                         **timm_overrides)  # fmt: skip


@register_model
def rice_dfn_b16(
    pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0, **timm_overrides
) -> RiceModel:
    """RICE on Apple's DFN-2B CLIP ViT-B/16 (timm vit_base_patch16_clip_224.dfn2b): 512-d, 197 tokens."""
    return _timm_variant("vit_base_patch16_clip_224.dfn2b", pretrained, pretrained_file, logit_scale_init,
                         **timm_overrides)  # fmt: skip


@register_model
def rice_eva02_b16(
    pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0, **timm_overrides
) -> RiceModel:
    """RICE on EVA02-CLIP B/16 (timm eva02_base_patch16_clip_224.merged2b): 512-d, 197 tokens, rotary positions.
    Its blocks are not plain ViT blocks, so the PMD decoder starts from random weights."""
    return _timm_variant("eva02_base_patch16_clip_224.merged2b", pretrained, pretrained_file, logit_scale_init,
                         **timm_overrides)  # fmt: skip


@register_model
def rice_dinov2_b14(
    pretrained: bool = True, pretrained_file: str | None = None, logit_scale_init: float = 4.0, **timm_overrides
) -> RiceModel:
    """RICE on DINOv2 ViT-B/14 with 4 registers (timm vit_base_patch14_reg4_dinov2.lvd142m) at 224 px (the weights
    were trained at 518; timm resamples the position embedding): 768-d, 1 CLS + 4 registers + 256 patch tokens."""
    timm_overrides.setdefault("img_size", 224)
    return _timm_variant("vit_base_patch14_reg4_dinov2.lvd142m", pretrained, pretrained_file, logit_scale_init,
                         **timm_overrides)  # fmt: skip

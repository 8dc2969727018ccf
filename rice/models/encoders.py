"""Image/frame encoders: a backbone -> global embedding + pre-final-norm tokens (the encoder contract)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """What the data pipeline must do to feed this model."""

    input_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize_size: int | None = None  # None: input_size * 256 / 224 (square resize, as the public code)

    def __call__(self, image: Any) -> torch.Tensor:
        """The eval preprocessing of one PIL image (or uint8 (H, W, 3) array) -> float32 (3, S, S) tensor."""
        from rice.data.transforms import build_transform  # lazy: the models never import the data code at load

        return build_transform(self.input_size, False, self.mean, self.std, self.resize_size)(image)


@dataclass
class EncoderOutput:
    embedding: torch.Tensor  # (N, D) global embedding, not normalised
    tokens: torch.Tensor  # (N, L, W) last-block output before the final norm, CLS (or mean) token first


class ImageEncoder(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward``."""

    width: int
    embed_dim: int
    num_tokens: int
    preprocess: Preprocess

    def forward(self, images: torch.Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def last_blocks(self, n: int) -> list[nn.Module] | None:
        """The last ``n`` transformer blocks, for initialising the PMD decoder; None when there are none."""
        return None

    def no_weight_decay_names(self) -> set[str]:
        return set()


class TimmViTEncoder(ImageEncoder):
    """A timm VisionTransformer: global embedding = head(norm(CLS)); tokens = blocks' output before ``norm``.

    The projection is kept as our own bias-free ``proj`` Linear (CLIP's ``visual.proj``), so the module tree
    maps one-to-one onto the OpenAI CLIP visual tower.
    """

    def __init__(self, backbone: nn.Module, preprocess: Preprocess):
        super().__init__()
        head = backbone.head
        embed_dim = head.out_features if isinstance(head, nn.Linear) else backbone.num_features
        self.proj = nn.Linear(backbone.num_features, embed_dim, bias=False)
        if isinstance(head, nn.Linear):
            with torch.no_grad():
                self.proj.weight.copy_(head.weight)
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.width = backbone.num_features
        self.embed_dim = embed_dim
        self.num_tokens = backbone.patch_embed.num_patches + backbone.num_prefix_tokens
        self.preprocess = preprocess

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        vit = self.backbone
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        tokens = vit.blocks(x)  # (N, L, W) before the final norm
        pooled = vit.norm(tokens)[:, 0]
        return EncoderOutput(self.proj(pooled), tokens)

    def last_blocks(self, n: int) -> list[nn.Module] | None:
        blocks = list(self.backbone.blocks)
        return blocks[-n:] if len(blocks) >= n else None

    def no_weight_decay_names(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}


class ConvStemEncoder(ImageEncoder):
    """A small convolutional stem whose feature map gives the tokens, then a few transformer blocks.

    A plain tiny ViT learns far too slowly from scratch for tests and the CPU demo; the convolutions give it the
    locality bias it lacks. Token 0 is the mean of the feature-map tokens (a learned CLS would start uninformed).
    """

    def __init__(self, input_size: int = 64, width: int = 96, depth: int = 2, heads: int = 4, embed_dim: int = 128):
        super().__init__()
        if input_size % 8:
            raise ValueError(f"input_size {input_size} must be a multiple of 8 (the stem downsamples 8x)")

        def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(
            conv(3, width // 4, 2), conv(width // 4, width // 2, 1),
            conv(width // 2, width // 2, 2), conv(width // 2, width, 2),
        )  # fmt: skip
        grid = input_size // 8
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=2.0) for _ in range(depth)])
        for block in self.blocks:
            # The explicit attention product, not PyTorch's fused kernel: on the CPU the fused kernel's backward
            # in bf16 costs ~9x its fp32 time at this size (45 vs 5 ms a block on the hard demo's step), which made
            # bf16 training slower than fp32; explicitly, bf16 is ~1.6x faster. Same maths; a few tokens, so the
            # fused kernel's memory saving does not matter.
            block.attn.fused_attn = False
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        self.width, self.embed_dim, self.num_tokens = width, embed_dim, grid * grid + 1
        self.preprocess = Preprocess(input_size=input_size)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        # Channels-last activations: oneDNN's convolutions and batch norms run about 15% faster so on the CPU
        # (forward and backward of a training step, 2 cores); the weights stay contiguous for saving.
        fmap = self.stem(images.contiguous(memory_format=torch.channels_last))  # (N, W, g, g)
        patches = fmap.flatten(2).transpose(1, 2)  # (N, g*g, W)
        x = torch.cat([patches.mean(1, keepdim=True), patches], dim=1) + self.pos_embed
        tokens = self.blocks(x)
        return EncoderOutput(self.proj(self.norm(tokens[:, 0])), tokens)

    def no_weight_decay_names(self) -> set[str]:
        return {"pos_embed"}


def create_timm_vit(
    timm_name: str,
    pretrained: bool,
    pretrained_file: str | None,
    preprocess: Preprocess,
    **timm_kwargs: object,
) -> TimmViTEncoder:
    """Build a timm ViT encoder; weights from the hub only when asked, or from a local file."""
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise FileNotFoundError(
                f"pretrained file {pretrained_file} not found; pass an existing file to --pretrained-file"
            )
        backbone = timm.create_model(timm_name, pretrained=False, **timm_kwargs)
        load_pretrained_file(backbone, pretrained_file)
    elif pretrained:
        try:
            backbone = timm.create_model(timm_name, pretrained=True, **timm_kwargs)
        except Exception as err:  # hub errors come in many types (OSError, HTTP errors, LocalEntryNotFound)
            raise RuntimeError(
                f"could not fetch pretrained weights for {timm_name!r} from the model hub ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Pass --pretrained-file PATH (a timm "
                f"checkpoint or OpenAI CLIP ViT-B-32.pt) or --no-pretrained."
            ) from err
    else:
        backbone = timm.create_model(timm_name, pretrained=False, **timm_kwargs)
    return TimmViTEncoder(backbone, preprocess)


def load_pretrained_file(backbone: nn.Module, path: str) -> None:
    """Load a local timm checkpoint or an OpenAI CLIP ``ViT-B-32.pt`` (JIT archive or plain state dict)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"pretrained file {file} not found; pass an existing file to --pretrained-file")
    from rice.models.clip_weights import read_pretrained_state_dict

    state = read_pretrained_state_dict(file, backbone)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(
            f"{file}: weights do not fit {type(backbone).__name__} (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); pass a checkpoint of the same architecture"
        )


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)

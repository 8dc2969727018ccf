"""Image/frame encoders: a backbone -> global embedding + pre-final-norm tokens (the encoder contract)."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from rice.models.patch_embed import patch_tokens

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """What the data pipeline must do to feed this model."""

    input_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize_size: int | None = None  # None: input_size * 256 / 224 (square resize, as the public code)
    # The resampling filter of the weights' own recipe (timm's pretrained config), recorded with the model, its
    # checkpoints and exports; every transform built from the model's preprocessing resamples with it.
    interpolation: str = "bilinear"

    def __call__(self, image: Any) -> torch.Tensor:
        """The eval preprocessing of one PIL image (or uint8 (H, W, 3) array) -> float32 (3, S, S) tensor."""
        from rice.data.model_input import eval_transform  # lazy: the models never import the data code at load

        return eval_transform(self)(image)


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def preprocess_record(pre: Preprocess) -> dict[str, Any]:
    """The JSON-able record of a model's preprocessing that checkpoints and exports carry."""
    resize = None if pre.resize_size is None else int(pre.resize_size)
    return {"input_size": int(pre.input_size), "mean": [float(v) for v in pre.mean],
            "std": [float(v) for v in pre.std], "resize_size": resize, "interpolation": str(pre.interpolation)}


def preprocess_from_record(record: Any, input_size: int, where: str) -> Preprocess:
    """The `Preprocess` a checkpoint or export stored, checked: the input size must be the built model's (its
    position embedding is sized by it), mean and std three finite numbers (std > 0), the resize at least the crop.

    Raises:
        ValueError: one line naming ``where`` (the file) and what is wrong.
    """
    again = f"{where}: bad stored preprocessing"
    fix = "save or export the model again"
    if not isinstance(record, dict):
        raise ValueError(f"{again} (expected an object, got {type(record).__name__}); {fix}")
    size, resize = record.get("input_size"), record.get("resize_size")
    if not isinstance(size, int) or size != input_size:
        raise ValueError(f"{again} (input_size {size!r:.20} but the model is built for {input_size}); {fix}")
    if resize is not None and (not isinstance(resize, int) or not size <= resize <= 4 * size):
        raise ValueError(f"{again} (resize_size {resize!r:.20} must be an integer from {size} to {4 * size}); {fix}")
    stats = {}
    for key in ("mean", "std"):
        values = record.get(key)
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)
                and all(math.isfinite(v) and -10 < v < 10 for v in values)):  # fmt: skip
            raise ValueError(f"{again} ({key} must be 3 numbers, got {values!r:.60}); {fix}")
        stats[key] = tuple(float(v) for v in values)
    if min(stats["std"]) <= 0:
        raise ValueError(f"{again} (std {list(stats['std'])} must be positive); {fix}")
    interpolation = record.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"{again} (interpolation {interpolation!r:.30} is none of {list(INTERPOLATIONS)}); {fix}")
    return Preprocess(size, stats["mean"], stats["std"], resize, interpolation)


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
    """A timm ViT (VisionTransformer or Eva): global embedding = proj(timm's pooled feature); tokens = the blocks'
    output before the final ``norm``.

    The pooling is the backbone's own (CLS token for CLIP, DFN, EVA02 and DINOv2; SigLIP's attention pool), through
    timm's ``forward_head``. A backbone without a class token (SigLIP) gets the mean of its patch tokens prepended,
    so that token 0 is always a summary token, as the PMD decoder and the encoder contract expect. Register tokens
    (DINOv2 reg4) stay in the token grid: PMD and PFR attend over every token the backbone produces.

    The projection is our own ``proj`` Linear (CLIP's ``visual.proj``), a copy of timm's head when the weights have
    one (a CLIP-style image-text projection), else the identity (SigLIP and DINOv2 embed at their width), so the
    module tree maps one-to-one onto the OpenAI CLIP visual tower.
    """

    def __init__(self, backbone: nn.Module, preprocess: Preprocess, proj_bias: bool = False):
        super().__init__()
        head = backbone.head
        embed_dim = head.out_features if isinstance(head, nn.Linear) else backbone.num_features
        proj_bias = proj_bias and isinstance(head, nn.Linear) and head.bias is not None
        self.proj = nn.Linear(backbone.num_features, embed_dim, bias=proj_bias)
        with torch.no_grad():
            if isinstance(head, nn.Linear):
                self.proj.weight.copy_(head.weight)
                if proj_bias:
                    self.proj.bias.copy_(head.bias)
            elif not self.proj.weight.is_meta:
                # No projection in the weights: start as the identity, so the embedding is the backbone's own.
                self.proj.weight.copy_(torch.eye(embed_dim, backbone.num_features))
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.width = backbone.num_features
        self.embed_dim = embed_dim
        self.mean_token = backbone.num_prefix_tokens == 0  # no CLS: prepend the patch-token mean as token 0
        self.num_tokens = backbone.patch_embed.num_patches + backbone.num_prefix_tokens + int(self.mean_token)
        self.preprocess = preprocess

    def _blocks(self, images: torch.Tensor) -> torch.Tensor:
        vit = self.backbone
        x = patch_tokens(vit.patch_embed, images)  # timm's patch_embed(images), as one matrix product (issue 24)
        if _is_eva(vit):
            x, rope = vit._pos_embed(x)  # Eva returns its rotary embedding beside the tokens
            x = vit.norm_pre(x)
            for block in vit.blocks:
                x = block(x, rope=rope)
            return x
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        return vit.blocks(x)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        vit = self.backbone
        tokens = self._blocks(images)  # (N, L, W) before the final norm
        pooled = vit.forward_head(vit.norm(tokens), pre_logits=True)
        if self.mean_token:
            tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        return EncoderOutput(self.proj(pooled), tokens)

    def last_blocks(self, n: int) -> list[nn.Module] | None:
        """The last ``n`` blocks when they are timm ViT ``Block``s (the decoder copies their layout); a block's
        LayerScale (DINOv2) is folded into copies of its output projections, which is exact. None for Eva blocks
        (rotary embedding, SwiGLU): the decoder then starts from random weights."""
        from timm.models.vision_transformer import Block as VitBlock

        blocks = list(self.backbone.blocks)
        if len(blocks) < n or not all(type(b) is VitBlock for b in blocks[-n:]):
            return None
        return [_fold_layer_scale(b) for b in blocks[-n:]]

    def no_weight_decay_names(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}


def _is_eva(backbone: nn.Module) -> bool:
    from timm.models.eva import Eva

    return isinstance(backbone, Eva)


@torch.no_grad()
def _fold_layer_scale(block: nn.Module) -> nn.Module:
    """``block`` itself when it has no LayerScale, else a copy whose attn.proj and mlp.fc2 absorb gamma:
    gamma * (W x + b) = (diag(gamma) W) x + gamma b."""
    from timm.layers import LayerScale

    if not isinstance(block.ls1, LayerScale) and not isinstance(block.ls2, LayerScale):
        return block
    block = copy.deepcopy(block)
    for scale, linear in ((block.ls1, block.attn.proj), (block.ls2, block.mlp.fc2)):
        if isinstance(scale, LayerScale):
            linear.weight.mul_(scale.gamma[:, None])
            if linear.bias is not None:
                linear.bias.mul_(scale.gamma)
    block.ls1, block.ls2 = nn.Identity(), nn.Identity()
    return block


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


def timm_preprocess(backbone: nn.Module) -> Preprocess:
    """The eval preprocessing of a timm backbone's pretrained weights (its ``pretrained_cfg``), at the size the
    backbone was built for: mean/std and interpolation as the weights were trained, and the resize before the
    centre crop from the config's ``crop_pct`` (timm: resize to floor(size / crop_pct), crop size)."""
    cfg = backbone.pretrained_cfg
    size = int(backbone.patch_embed.img_size[0])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    return Preprocess(
        input_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        resize_size=math.floor(size / crop_pct),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
    )


def create_timm_vit(
    timm_name: str,
    pretrained: bool,
    pretrained_file: str | None,
    preprocess: Preprocess | None,
    proj_bias: bool = False,
    **timm_kwargs: object,
) -> TimmViTEncoder:
    """Build a timm ViT encoder; weights from the hub only when asked, or from a local file.

    ``preprocess`` None: the weights' own preprocessing from timm's pretrained config (`timm_preprocess`).
    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``img_size``; the tests shrink ``depth`` and ``embed_dim``).
    """
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise FileNotFoundError(
                f"pretrained file {pretrained_file} not found; pass an existing file to --pretrained-file"
            )
        backbone = timm.create_model(timm_name, pretrained=False, **timm_kwargs)
        load_pretrained_file(backbone, pretrained_file, timm_filter=preprocess is None)
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
    return TimmViTEncoder(backbone, preprocess or timm_preprocess(backbone), proj_bias=proj_bias)


def load_pretrained_file(backbone: nn.Module, path: str, timm_filter: bool = False) -> None:
    """Load a local timm checkpoint (``.safetensors`` as on the hub, or a torch file) or an OpenAI CLIP
    ``ViT-B-32.pt`` (JIT archive or plain state dict).

    ``timm_filter``: pass the weights through the timm model's own ``checkpoint_filter_fn``, as timm does when it
    loads from the hub (open_clip key names, position embeddings resampled to the built size, e.g. DINOv2's 518 px
    grid to 224 px).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"pretrained file {file} not found; pass an existing file to --pretrained-file")
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{file}: reading .safetensors needs safetensors; pip install safetensors") from None
        try:
            state = {k: v.float() for k, v in load_file(str(file)).items()}
        except Exception as err:  # SafetensorError, OSError
            raise ValueError(f"{file}: not a readable safetensors file ({err}); pass the model's weights") from None
    else:
        from rice.models.clip_weights import read_pretrained_state_dict

        state = read_pretrained_state_dict(file, backbone)
    filter_fn = getattr(sys.modules[type(backbone).__module__], "checkpoint_filter_fn", None)
    if timm_filter and filter_fn is not None:
        state = filter_fn(state, backbone)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(
            f"{file}: weights do not fit {type(backbone).__name__} (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); pass a checkpoint of the same architecture"
        )


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)

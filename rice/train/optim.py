"""AdamW with the two learning-rate groups of the public code, and warm-up + cosine decay."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from rice.config import OptimConfig
from rice.models import RiceModel


def build_optimizer(model: RiceModel, cfg: OptimConfig) -> torch.optim.AdamW:
    """Encoder at ``cfg.lr``; decoder, heads and the logit scale at ``cfg.head_lr`` (100x in the paper).

    Weight decay (``cfg.decay_exempt``): ``vectors_and_embeddings`` exempts biases, norms, embeddings and scalars
    (anything with fewer than 2 dims, plus the encoder's own no-decay list such as the position and class
    embeddings); ``bias`` exempts only the parameters whose name contains "bias", as the public code (its list
    also names ``LayerNorm.weight``, which matches none of its parameters: its norms are ``ln_*`` and
    ``layer_norm``), so norm weights, embeddings and the logit scale are decayed. ``cfg.logit_scale_group ==
    "encoder"`` (the public code) trains the logit scale with the encoder: encoder learning rate, with weight decay.
    """
    no_decay_names = model.no_weight_decay_names()
    head_names = model.head_parameter_names()
    if cfg.logit_scale_group == "encoder":
        head_names = head_names - {"logit_scale"}
        no_decay_names = no_decay_names - {"logit_scale"}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name in head_names
        if cfg.decay_exempt == "bias":
            decay = "bias" not in name
        else:
            decay = name not in no_decay_names and (param.ndim >= 2 or name == "logit_scale")
        groups.setdefault((is_head, decay), []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": cfg.head_lr if is_head else cfg.lr,
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "name": f"{'head' if is_head else 'encoder'}{'' if decay else '_no_decay'}",
        }
        for (is_head, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps)


def warmup_cosine(warmup_steps: int, max_steps: int):
    """Multiplier for LambdaLR: linear warm-up from 0, then cosine to 0 at ``max_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    warmup = min(cfg.warmup_steps, max(0, max_steps - 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, max_steps))

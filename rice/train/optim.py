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
    kernel = adamw_kernel({param.device.type for group in param_groups for param in group["params"]})
    optimizer = torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps, **kernel)
    keep_kernel_on_load(optimizer)
    return optimizer


def adamw_kernel(device_types: set[str]) -> dict[str, bool]:
    """AdamW's implementation for parameters on these device types: ``fused=True`` when all are on CUDA (the
    whole update in one multi-tensor kernel, instead of the foreach path's kernel per arithmetic step: issue 24),
    nothing elsewhere, so the CPU keeps torch's default exactly as before."""
    return {"fused": True} if device_types == {"cuda"} else {}


def keep_kernel_on_load(optimizer: torch.optim.Optimizer) -> None:
    """Keep the implementation chosen at build time when a checkpoint's optimizer state is loaded.

    ``load_state_dict`` takes each group's ``fused``/``foreach`` from the checkpoint, so a run saved on the CPU (or
    before fused AdamW) would resume on a GPU unfused, and a fused run resumed on the CPU would stay fused. The
    hook puts back this build's choice and hosts each ``step`` counter where that choice keeps it (fused: a
    float32 on the parameter's device; otherwise on the CPU, so reading it never waits on the GPU).
    """
    chosen = {key: optimizer.defaults.get(key) for key in ("fused", "foreach")}

    def restore(opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            group.update(chosen)
            for param in group["params"]:
                step = opt.state.get(param, {}).get("step")
                if isinstance(step, torch.Tensor):
                    fused = bool(chosen["fused"]) or bool(group.get("capturable"))
                    device = param.device if fused else torch.device("cpu")
                    opt.state[param]["step"] = step.to(device=device, dtype=torch.float32 if fused else step.dtype)

    optimizer.register_load_state_dict_post_hook(restore)


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

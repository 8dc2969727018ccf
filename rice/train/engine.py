"""The training loop: ``fit(cfg)`` builds everything, resumes, trains, checkpoints. Reads top to bottom."""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from rice import distributed
from rice.config import RunConfig, TrainConfig
from rice.data import build_train_dataset, collate_batch
from rice.models import RiceModel, build_model
from rice.task import RiceTask, product_keys
from rice.train.checkpoint import atomic_copy, read_checkpoint, resolve_resume, save_checkpoint, set_rng_state
from rice.train.logging import RunLogger
from rice.train.optim import build_optimizer, build_scheduler


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can skip the first batches of an epoch, so a resumed run sees new samples."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0  # only for the epoch being resumed
        return iter(indices[skip:])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; use --set train.device=cpu")
    return torch.device(name)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 on GPU by default; fp16 (with a GradScaler) when asked; none on CPU unless asked."""
    if cfg.amp == "none" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "fp16":
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class SkipReport:
    """Bad samples seen in one epoch (each replaced by the next good one), reported when the epoch ends."""

    messages: list[str] = field(default_factory=list)

    def add(self, messages: list[str]) -> None:
        self.messages.extend(messages)

    def flush(self, epoch: int, log: RunLogger) -> None:
        gathered = distributed.all_gather_object(self.messages)
        unique = sorted({m for part in gathered for m in part})
        if unique:
            log.print(f"[yellow]epoch {epoch}: skipped {len(unique)} bad sample(s):")
            for message in unique[:20]:
                log.print(f"  {message}")
            if len(unique) > 20:
                log.print(f"  ... and {len(unique) - 20} more")
        self.messages = []


def build_train_loader(cfg: RunConfig, model: RiceModel, world: distributed.WorldInfo) -> DataLoader:
    dataset = build_train_dataset(cfg.data, model.preprocess, seed=cfg.train.seed)
    per_rank = cfg.train.batch_size
    if len(dataset) < per_rank * world.world_size:
        raise ValueError(
            f"the training set has {len(dataset)} pairs, fewer than one global batch "
            f"({per_rank} x {world.world_size} ranks); lower --batch-size"
        )
    # drop_last: the contrastive loss gathers equal-sized batches from every rank.
    sampler = ResumableSampler(
        dataset, num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=cfg.train.seed, drop_last=True
    )
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.data.workers,
        collate_fn=collate_batch,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        # Not persistent: workers are re-forked each epoch so they see the dataset's new epoch (set_epoch).
        persistent_workers=False,
        worker_init_fn=_seed_worker,
    )


def _seed_worker(worker_id: int) -> None:
    # Each worker gets torch's per-worker seed; derive python/numpy seeds from it (random crops, tail drops).
    seed = torch.initial_seed() % 2**32
    torch.set_num_threads(1)  # workers decode and transform; intra-op threads would fight the training process
    random.seed(seed)
    np.random.seed(seed)


def fit(cfg: RunConfig) -> Path:
    """Train as ``cfg`` says; returns the path of the final checkpoint (``<out>/last.pt``)."""
    # --- setup: device, process group, seeds, run dir -------------------------------------------------------
    device = resolve_device(cfg.train.device)
    world = distributed.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    seed_everything(cfg.train.seed + world.rank)
    out_dir = Path(cfg.train.out)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    distributed.barrier()

    # --- model, task, data, optimiser -----------------------------------------------------------------------
    model = build_model(
        cfg.model, with_decoder="pmd" in cfg.loss.losses, with_reconstruction="pfr" in cfg.loss.losses
    ).to(device)
    task = RiceTask(model, cfg.loss).to(device)
    loader = build_train_loader(cfg, model, world)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    amp_dtype = autocast_dtype(cfg.train, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # --- resume ----------------------------------------------------------------------------------------------
    step, epoch = 0, 0
    resume_path = resolve_resume(cfg.train.resume, out_dir)
    if resume_path is not None:
        state = read_checkpoint(resume_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, epoch = state["step"], state["epoch"]
        if world.world_size == 1:
            set_rng_state(state["rng"])  # per-rank RNG streams are not saved; ranks > 0 keep their fresh seeds
        steps_per_epoch = len(loader) // cfg.train.grad_accum
        done_in_epoch = step - epoch * steps_per_epoch if steps_per_epoch else 0
        loader.sampler.skip = max(0, done_in_epoch) * cfg.train.grad_accum * cfg.train.batch_size

    # DDP wraps the task so the losses' gathered features and the parameters' all-reduce line up.
    train_module = DistributedDataParallel(task) if world.world_size > 1 else task

    # --- train -----------------------------------------------------------------------------------------------
    with RunLogger(out_dir, world.is_main, cfg.train.max_steps, step, cfg.train.tensorboard) as log:
        if resume_path is not None:
            log.print(f"resumed from {resume_path} at step {step}")
        skipped = SkipReport()
        while step < cfg.train.max_steps:
            # A new shuffle each epoch, identical on every rank so their shards stay disjoint (DistributedSampler).
            loader.sampler.set_epoch(epoch)
            if hasattr(loader.dataset, "set_epoch"):  # per-item augmentation seeds depend on (seed, epoch, index)
                loader.dataset.set_epoch(epoch)
            step = train_one_epoch(
                train_module, task, loader, optimizer, scheduler, scaler, amp_dtype, device, cfg, step, epoch, log,
                skipped,
            )
            skipped.flush(epoch, log)
            if step < cfg.train.max_steps:
                epoch += 1
        if world.is_main:
            _save(out_dir / "last.pt", model, optimizer, scheduler, scaler, step, epoch, cfg)
            if cfg.train.eval_at_end:
                _evaluate_at_end(model, cfg, device, out_dir, log)
    distributed.barrier()
    return out_dir / "last.pt"


def _evaluate_at_end(model: RiceModel, cfg: RunConfig, device: torch.device, out_dir: Path, log: RunLogger) -> None:
    """Rank 0 scores the test split with the final weights and writes ``eval.json`` (the others wait)."""
    from rice.evaluation import evaluate_model  # evaluation builds eval datasets; only needed here

    results, _ = evaluate_model(model, cfg.data, cfg.eval, device=device)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
    log.print("eval: " + "  ".join(f"{k} {v:.2f}" for k, v in results.items() if k.startswith("R@")))
    model.train()


def train_one_epoch(
    train_module, task: RiceTask, loader: DataLoader, optimizer, scheduler, scaler, amp_dtype, device, cfg: RunConfig,
    step: int, epoch: int, log: RunLogger, skipped: SkipReport,
) -> int:  # fmt: skip
    """Run optimizer steps over one pass of ``loader`` (or until ``max_steps``); returns the new step."""
    tcfg = cfg.train
    world = distributed.world_info()
    model = task.model
    micro, tic, clips = 0, time.perf_counter(), 0
    running: dict[str, float] = {}
    # Micro-batches left over at the end of the last epoch (len(loader) % grad_accum) must not leak into this one.
    optimizer.zero_grad(set_to_none=True)
    for batch in loader:
        skipped.add(batch["skipped"])
        images = batch["image"].to(device, non_blocking=True)
        frames = batch["frames"].to(device, non_blocking=True)
        frame_mask = batch["frame_mask"].to(device, non_blocking=True)
        micro += 1
        last_micro = micro % tcfg.grad_accum == 0
        # Skip the gradient all-reduce on accumulation micro-steps; it runs once, on the last one.
        sync = contextlib.nullcontext() if last_micro or world.world_size == 1 else train_module.no_sync()
        with sync, torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            product_ids = product_keys(batch["image_id"]).to(device) if task.mask_same_product else None
            losses = train_module(images, frames, frame_mask, product_ids)
            loss = losses["loss"] / tcfg.grad_accum
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the learning rate or use amp=none")
        with sync:
            (scaler.scale(loss) if scaler else loss).backward()
        for key, value in losses.items():
            running[key] = running.get(key, 0.0) + value.detach().float().item() / tcfg.grad_accum
        clips += images.shape[0] * world.world_size
        if not last_micro:
            continue

        # --- optimizer step ---------------------------------------------------------------------------------
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.optim.grad_clip)
        stepped = True
        if scaler:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            stepped = scaler.get_scale() >= scale  # fp16 overflow: the scaler skipped this update
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if stepped:
            scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.sqrt(100.0))  # cap logits at 100*cos, as CLIP does
        step += 1

        elapsed = time.perf_counter() - tic
        record = {"step": step, "lr": scheduler.get_last_lr()[0], "head_lr": _head_lr(optimizer)}
        record.update({k: round(v, 6) for k, v in running.items()})
        record["logit_scale"] = round(model.logit_scale.item(), 4)
        record["clips_per_s"] = round(clips / max(elapsed, 1e-9), 2)
        log.advance(step, f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['clips_per_s']:.1f} clips/s")
        if step % tcfg.log_every == 0 or step == tcfg.max_steps:
            log.log(record)
        if world.is_main and step % tcfg.save_every == 0:
            _save(Path(tcfg.out) / f"step_{step}.pt", model, optimizer, scheduler, scaler, step, epoch, cfg)
        running, clips, tic = {}, 0, time.perf_counter()
        if step >= tcfg.max_steps:
            break
    return step


def _head_lr(optimizer) -> float:
    for group in optimizer.param_groups:
        if group["name"].startswith("head"):
            return group["lr"]
    return 0.0


def _save(path: Path, model, optimizer, scheduler, scaler, step: int, epoch: int, cfg: RunConfig) -> None:
    save_checkpoint(
        path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, step=step, epoch=epoch, config=cfg
    )
    if path.name != "last.pt":
        atomic_copy(path, path.parent / "last.pt")  # same bytes: copy the file instead of serialising again

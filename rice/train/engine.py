"""The training loop: ``fit(cfg)`` builds everything, resumes, trains, checkpoints. Reads top to bottom.

Exact resume: a checkpoint holds, besides weights and optimiser, every rank's RNG streams and how many batches
of the current epoch were consumed. The data order is a function of (seed, epoch) (DistributedSampler), each
item's augmentation a function of (seed, epoch, index) (the datasets), and the DataLoader's worker seeds come
from its own generator re-seeded from (seed, rank, epoch) at the start of each epoch, so creating an iterator
never draws from the global RNG that dropout uses. A run resumed from step N therefore repeats the
uninterrupted run bit for bit on CPU (tests/train/test_exact_resume.py).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from rice import distributed
from rice.config import RunConfig, TrainConfig
from rice.data import build_train_dataset, collate_batch
from rice.data.device_stage import DeviceStage
from rice.data.prefetch import DevicePrefetcher
from rice.models import RiceModel, build_model
from rice.models.precision import cpu_has_native_bf16
from rice.train.checkpoint import (
    atomic_copy,
    check_run_dir,
    clear_run_dir,
    find_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
    truncate_metrics,
)
from rice.train.compile import (
    check_compile_settings,
    compile_encoder,  # noqa: F401 - its old home: benchmarks import it from here
    compile_regions,
    resolve_frame_buckets,
    use_compile_cache,
)
from rice.train.grad_cache import BatchPlan, average_gradients_over_ranks, grad_cache_step, plan_batches
from rice.train.logging import RunLogger, run_summary
from rice.train.metrics import MetricWindow
from rice.train.optim import build_optimizer, build_scheduler
from rice.train.task import RiceTask, product_keys
from rice.train.validation import Validator


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
    """bf16 on GPU by default; fp16 (with a GradScaler) when asked; none on CPU unless asked, or unless ``native``
    and the CPU multiplies bf16 in hardware (emulated bf16 would slow a CPU run down)."""
    if cfg.amp == "none" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "native" and device.type == "cpu" and not cpu_has_native_bf16():
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
    """Bad samples (each replaced by the next good one), reported when an epoch ends: each bad file is listed with
    its reason the first epoch it is met, later epochs give only a count (a 200-step run on a small set used to list
    the same two paths 44 times)."""

    messages: list[str] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)  # files already listed in this run

    def add(self, messages: list[str]) -> None:
        self.messages.extend(messages)

    def flush(self, epoch: int, log: RunLogger) -> None:
        gathered = distributed.all_gather_object(self.messages)
        unique = sorted({m for part in gathered for m in part})
        self.messages = []
        if not unique:
            return
        new = [message for message in unique if _skipped_file(message) not in self.reported]
        self.reported.update(_skipped_file(message) for message in new)
        if not new:
            log.print(f"[yellow]epoch {epoch}: skipped {len(unique)} bad sample(s), all listed before")
            return
        known = f" ({len(unique) - len(new)} listed before, {len(new)} new)" if len(new) < len(unique) else ""
        log.print(f"[yellow]epoch {epoch}: skipped {len(unique)} bad sample(s){known}:")
        for message in new[:20]:
            log.print(f"  {message}")
        if len(new) > 20:
            log.print(f"  ... and {len(new) - 20} more")


def _skipped_file(message: str) -> str:
    """The file a ``"path: reason"`` message names (a file may be skipped for different reasons in different epochs,
    say a timeout once; it is still listed once)."""
    return message.split(": ", 1)[0]


@dataclass
class Progress:
    """Where the run is: optimizer steps done, the epoch, and the batches of that epoch already consumed."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    stopped: bool = False  # True when a SIGTERM ended the run early (a checkpoint was saved)


class StopRequest:
    """SIGTERM (preemption) asks the loop to save a checkpoint and leave at the next safe point."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread (a notebook worker): no handler, no early stop
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


def build_train_loader(cfg: RunConfig, model: RiceModel, world: distributed.WorldInfo,
                       plan: BatchPlan | None = None) -> DataLoader:  # fmt: skip
    dataset = build_train_dataset(cfg.data, model.preprocess, seed=cfg.train.seed)
    plan = plan or plan_batches(cfg.train, world.world_size)
    per_rank = plan.loader_batch
    if len(dataset) < per_rank * world.world_size:
        raise ValueError(
            f"the training set has {len(dataset)} pairs, fewer than one global batch "
            f"({per_rank} x {world.world_size} ranks); lower train.global_batch_size or --batch-size"
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
        # Frame buckets (train.frame_buckets): a few encoder batch shapes for compiled blocks, not one per count.
        collate_fn=functools.partial(collate_batch, frame_buckets=resolve_frame_buckets(
            cfg.train.frame_buckets, cfg.train.compile, model.encoder)),
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        # Not persistent: workers are re-forked each epoch so they see the dataset's new epoch (set_epoch).
        persistent_workers=False,
        worker_init_fn=_seed_worker,
        # Its own generator (re-seeded every epoch in `start_epoch`): without one, each new iterator draws its
        # base seed from the global RNG, and a resumed run's dropout masks would differ from the original's.
        generator=torch.Generator(),
    )


def _seed_worker(worker_id: int) -> None:
    # Each worker gets torch's per-worker seed; derive python/numpy seeds from it (random crops, tail drops).
    seed = torch.initial_seed() % 2**32
    torch.set_num_threads(1)  # workers decode and transform; intra-op threads would fight the training process
    # A preemption SIGTERM often reaches the whole process group (SLURM, a terminal): workers ignore it, the main
    # process saves a checkpoint and then shuts them down as usual.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    random.seed(seed)
    np.random.seed(seed)


def start_epoch(loader: DataLoader, epoch: int, seed: int, rank: int) -> None:
    """Everything an epoch's data depends on, set from (seed, epoch, rank) only."""
    # A new shuffle each epoch, identical on every rank so their shards stay disjoint (DistributedSampler).
    loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):  # per-item augmentation seeds depend on (seed, epoch, index)
        loader.dataset.set_epoch(epoch)
    # Worker seeds: a function of (seed, rank, epoch), the same whether this epoch is run or resumed.
    loader.generator.manual_seed(int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0]))


def fit(cfg: RunConfig) -> Path:
    """Train as ``cfg`` says; returns the path of the final checkpoint (``<out>/last.pt``)."""
    # --- setup: device, process group, seeds, run dir -------------------------------------------------------
    device = resolve_device(cfg.train.device)
    world = distributed.init_from_env(device.type, timeout_minutes=cfg.train.dist_timeout_minutes)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    seed_everything(cfg.train.seed + world.rank)
    compile_mode = check_compile_settings(cfg.train.compile, cfg.train.compile_backend, cfg.train.cuda_graphs, device,
                                          cfg.train.grad_cache)  # fmt: skip
    # A relative --root is saved absolute (config.yaml, every checkpoint): `rice eval RUN` may run from elsewhere.
    cfg = cfg.model_copy(update={"data": cfg.data.with_absolute_root()})
    out_dir = Path(cfg.train.out)
    resume = cfg.train.resume
    if distributed.restart_count() > 0:
        resume = "latest"  # torchrun restarted the workers (--max-restarts): continue from the newest checkpoint
    check_run_dir(out_dir, resume, cfg.train.overwrite)  # on every rank, before any rank writes
    point = find_resume(resume, out_dir)  # read (and checked) before anything is written
    distributed.barrier()
    if world.is_main:
        if cfg.train.overwrite and resume is None:
            clear_run_dir(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    distributed.barrier()

    # --- model, task, data, optimiser -----------------------------------------------------------------------
    model = build_model(
        cfg.model, with_decoder="pmd" in cfg.loss.losses, with_reconstruction="pfr" in cfg.loss.losses
    ).to(device)
    task = RiceTask(model, cfg.loss).to(device)
    plan = plan_batches(cfg.train, world.world_size)  # the recipe's global batch -> this launch's per-rank batch
    loader = build_train_loader(cfg, model, world, plan)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    amp_dtype = autocast_dtype(cfg.train, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # --- resume ----------------------------------------------------------------------------------------------
    progress = Progress()
    notes: list[str] = []
    if point is not None:
        state = point.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        progress.step, progress.epoch = state["step"], state["epoch"]
        progress.batches_done = state.get("batches_done", _batches_done_of_old_checkpoint(state, cfg, len(loader)))
        loader.sampler.skip = progress.batches_done * plan.loader_batch
        notes += [point.note] if point.note else []
        notes += [_restore_rng(state.get("rng"), world)]
        if world.is_main:
            truncate_metrics(out_dir / "metrics.jsonl", progress.step)

    # DDP wraps the task so the losses' gathered features and the parameters' all-reduce line up. Gradient
    # caching back-propagates outside one forward, so it averages the gradients itself (grad_cache.py).
    train_module = DistributedDataParallel(task) if world.world_size > 1 and plan.chunk is None else task
    if train_module is task:
        distributed.broadcast_module(task)  # what DDP's wrapping does: every rank starts from rank 0's weights
    if cfg.train.compile:
        if cfg.train.compile_cache:
            use_compile_cache(cfg.train.compile_cache)
        compiled = compile_regions(model, cfg.train.compile_backend, compile_mode)
    saver = Saver(out_dir, model, optimizer, scheduler, scaler, cfg, world)
    # Validation runs on rank 0 only; the other ranks wait for it at their next collective.
    validator = Validator(cfg, out_dir, device, model.preprocess) if cfg.train.eval_every and world.is_main else None

    # --- train -----------------------------------------------------------------------------------------------
    with RunLogger(out_dir, world.is_main, cfg.train.max_steps, progress.step, cfg.train.tensorboard) as log, \
            StopRequest() as stop:  # fmt: skip
        for line in run_summary(device=device, world_size=world.world_size, plan=plan, train_pairs=len(loader.dataset),
                                model=model, optimizer=optimizer, amp_dtype=amp_dtype, cfg=cfg):  # fmt: skip
            log.print(line)
        if cfg.train.compile:
            log.print(compiled.describe())
        if point is not None:
            log.print(f"resumed from {point.path} at step {progress.step}")
        for note in filter(None, [*notes, plan.warning]):
            log.print(f"[yellow]{note}")
        skipped, window = SkipReport(), MetricWindow(progress.step)
        while progress.step < cfg.train.max_steps and not progress.stopped:
            start_epoch(loader, progress.epoch, cfg.train.seed, world.rank)
            train_one_epoch(train_module, task, loader, optimizer, scheduler, scaler, amp_dtype, device, cfg,
                            progress, log, skipped, window, saver, stop, plan, validator)  # fmt: skip
            skipped.flush(progress.epoch, log)
            if progress.step < cfg.train.max_steps and not progress.stopped:
                progress.epoch, progress.batches_done = progress.epoch + 1, 0
        if progress.stopped:
            log.print(f"stopped by SIGTERM at step {progress.step}; last.pt saved, continue with --resume latest")
        elif saver.saved_step != progress.step:
            saver.save(out_dir / "last.pt", progress)
        # Only rank 0 evaluates; the other ranks leave now instead of waiting at a barrier (a long evaluation
        # would otherwise run into the process group's timeout, train.dist_timeout_minutes).
        if world.is_main and cfg.train.eval_at_end and not progress.stopped:
            _evaluate_at_end(model, cfg, device, out_dir, log)
    return out_dir / "last.pt"


def _batches_done_of_old_checkpoint(state: dict, cfg: RunConfig, batches_per_epoch: int) -> int:
    """Checkpoints from before ``batches_done`` was saved: every epoch has the same number of steps."""
    steps_per_epoch = batches_per_epoch // cfg.train.grad_accum
    done = state["step"] - state["epoch"] * steps_per_epoch if steps_per_epoch else 0
    return max(0, done) * cfg.train.grad_accum


def _restore_rng(saved: object, world: distributed.WorldInfo) -> str | None:
    """Put back this rank's RNG streams; returns a warning when they cannot be (the run is then not exact)."""
    if isinstance(saved, dict) and world.world_size == 1:  # checkpoints that saved rank 0's streams only
        saved = [saved]
    if isinstance(saved, list) and len(saved) == world.world_size:
        set_rng_state(saved[world.rank])
        return None
    count = len(saved) if isinstance(saved, list) else "no"
    return (f"RNG streams saved for {count} rank(s), running with {world.world_size}: the run continues with "
            "fresh streams, so it will not repeat the original bit for bit")  # fmt: skip


class Saver:
    """Writes checkpoints: every rank hands in its RNG streams (a collective), rank 0 writes the file."""

    def __init__(self, out_dir: Path, model, optimizer, scheduler, scaler, cfg: RunConfig,
                 world: distributed.WorldInfo) -> None:  # fmt: skip
        self.out_dir, self.model, self.cfg, self.world = out_dir, model, cfg, world
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.saved_step = -1

    def save(self, path: Path, progress: Progress) -> None:
        rngs = distributed.all_gather_object(rng_state())  # every rank, so a resumed rank r gets its own streams
        if self.world.is_main:
            save_checkpoint(
                path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                step=progress.step, epoch=progress.epoch, config=self.cfg,
                extra={"rng": rngs, "batches_done": progress.batches_done, "world_size": self.world.world_size},
            )  # fmt: skip
            if path.name != "last.pt":
                atomic_copy(path, path.parent / "last.pt")  # same bytes: copy the file instead of serialising again
        self.saved_step = progress.step


def _evaluate_at_end(model: RiceModel, cfg: RunConfig, device: torch.device, out_dir: Path, log: RunLogger) -> None:
    """Rank 0 scores the test split with the final weights and writes ``eval.json``."""
    import json

    from rice.retrieval.evaluate_model import evaluate_model  # evaluation builds eval datasets; only needed here

    results, _ = evaluate_model(model, cfg.data, cfg.eval, device=device)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
    log.print("eval: " + "  ".join(f"{k} {v:.2f}" for k, v in results.items() if k.startswith("R@")))
    model.train()


def train_one_epoch(
    train_module, task: RiceTask, loader: DataLoader, optimizer, scheduler, scaler, amp_dtype, device, cfg: RunConfig,
    progress: Progress, log: RunLogger, skipped: SkipReport, window: MetricWindow, saver: Saver, stop: StopRequest,
    plan: BatchPlan | None = None, validator: Validator | None = None,
) -> None:  # fmt: skip
    """Run optimizer steps over the rest of ``loader``'s epoch (or until ``max_steps``), updating ``progress``.

    No host sync per micro-step: the logged values are summed on the device and read every ``log_every`` steps,
    before each checkpoint and at the end (`MetricWindow`); a non-finite loss is caught at that read and stops
    the run before a checkpoint could store non-finite weights.
    """
    tcfg = cfg.train
    world = distributed.world_info()
    model = task.model
    window.discard_micro_steps()  # micro-batches left over at the end of the last epoch never made a step
    micro = 0
    # Micro-batches left over at the end of the last epoch (len(loader) % grad_accum) must not leak into this one.
    optimizer.zero_grad(set_to_none=True)
    # uint8 / JPEG items (data.normalize_on, data.decode_device) become the float batch on the device; on CUDA the
    # next batch is copied (and staged) on a side stream while this one trains: its tensors arrive on ``device``.
    stage = DeviceStage.for_dataset(getattr(loader, "dataset", None), device)
    for batch in DevicePrefetcher(loader, device, stage):
        skipped.add(batch["skipped"])
        images, frames, frame_mask = batch["image"], batch["frames"], batch["frame_mask"]
        frame_index = batch["frame_index"]
        micro += 1
        progress.batches_done += 1
        last_micro = micro % tcfg.grad_accum == 0
        # Skip the gradient all-reduce on accumulation micro-steps; it runs once, on the last one.
        sync = contextlib.nullcontext() if last_micro or world.world_size == 1 else train_module.no_sync()
        # frame_index and product_ids are found on the CPU and copied without waiting: the step never waits for
        # the device.
        product_ids = product_keys(batch["image_id"]).to(device, non_blocking=True) if task.mask_same_product else None
        autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
        if tcfg.cuda_graphs:
            # Each micro-step is a new generation of the CUDA graphs: their output buffers may be reused from here
            # on (the last step's outputs are no longer read), also with grad_accum > 1, where torch's own
            # detection of a new iteration is not documented to hold.
            torch.compiler.cudagraph_mark_step_begin()
        if plan is not None and plan.chunk is not None:  # train.grad_cache: the whole batch, chunk by chunk
            losses, _ = grad_cache_step(task, images, frames, frame_mask, product_ids, plan.chunk, autocast,
                                        scaler.scale if scaler else None, frame_index,
                                        batch.get("frame_counts"))  # fmt: skip
            average_gradients_over_ranks(task)
        else:
            with sync, autocast:
                losses = train_module(images, frames, frame_mask, product_ids, frame_index=frame_index)
                loss = losses["loss"] / tcfg.grad_accum
            with sync:
                (scaler.scale(loss) if scaler else loss).backward()
        window.add_micro_step(losses, tcfg.grad_accum, images.shape[0] * world.world_size)
        if not last_micro:
            continue

        # --- optimizer step ---------------------------------------------------------------------------------
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.optim.grad_clip)
        stepped = True
        if scaler:
            scale = scaler.get_scale()  # fp16 only: one read per optimizer step (bf16, the GPU default, has none)
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
        progress.step += 1
        step = progress.step
        window.end_step()

        # --- read the logged values, save, stop -------------------------------------------------------------
        save_now = step % tcfg.save_every == 0  # every rank takes part in a save (its RNG streams)
        read_now = step % tcfg.log_every == 0 or step >= tcfg.max_steps or save_now
        # Preemption: one process stops at once; ranks agree at a read so that they all stop at the same step.
        stop_now = stop.requested if world.world_size == 1 else (read_now and distributed.any_rank(stop.requested))
        if read_now or stop_now:
            record = window.read(step, model.logit_scale)  # the one host sync of the window; raises if not finite
            record.update(lr=scheduler.get_last_lr()[0], head_lr=_head_lr(optimizer))
            log.log(record)
            log.advance(step, f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['clips_per_s']:.1f} clips/s")
        else:
            log.advance(step)
        if save_now:
            saver.save(Path(tcfg.out) / f"step_{step}.pt", progress)
        if validator is not None and validator.due(step):
            validator.run(step, progress.epoch, saver, log)
        if stop_now:
            if saver.saved_step != step:
                saver.save(Path(tcfg.out) / "last.pt", progress)
            progress.stopped = True
            return
        if step >= tcfg.max_steps:
            return


def _head_lr(optimizer) -> float:
    for group in optimizer.param_groups:
        if group["name"].startswith("head"):
            return group["lr"]
    return 0.0

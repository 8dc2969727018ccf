"""Run logging: metrics.jsonl, optional TensorBoard, a rich progress bar. Only the main rank writes.

In a batch job (stderr not a terminal: a file, a pipe) a live bar would only be rendered when the run ends, so
the logger prints one plain line per read of the logged values (every ``train.log_every`` steps) instead, each
flushed at once, and the start-of-run summary (`run_summary`) says what is being trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

logger = logging.getLogger("rice")


class RunLogger:
    def __init__(self, out_dir: Path, enabled: bool, total_steps: int, start_step: int, tensorboard: bool = False):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.plain = not self.console.is_terminal  # batch job: plain lines instead of a live bar
        self.total_steps = total_steps
        self._metrics = open(out_dir / "metrics.jsonl", "a") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional extra: rice-retrieval[tensorboard]
            except ImportError as err:
                raise RuntimeError("tensorboard logging needs: pip install 'rice-retrieval[tensorboard]'") from err
            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, disable=not enabled or self.plain,
        )  # fmt: skip
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, info="")

    def __enter__(self) -> RunLogger:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
        if self._metrics:
            self._metrics.close()
        if self._tb:
            self._tb.close()

    def advance(self, step: int, info: str | None = None) -> None:
        """Move the bar; ``info`` (the latest logged values) changes only when values were read."""
        if info is None:
            self._progress.update(self._task, completed=step)
        elif self.plain:
            self.print(f"step {step}/{self.total_steps}  {info}")
        else:
            self._progress.update(self._task, completed=step, info=info)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, record["step"])

    def print(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message, soft_wrap=True)  # one line per message, never wrapped
            self.console.file.flush()  # a batch job's log shows each line as it is printed


def run_summary(*, device, world_size: int, plan, train_pairs: int, model, optimizer, amp_dtype, cfg) -> list[str]:
    """The start-of-run summary: where it runs, the batch, the data, the model, the optimiser and the recipe."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    groups = ", ".join(
        f"{g.get('name', i)} {sum(p.numel() for p in g['params']):,} params lr {g.get('initial_lr', g['lr']):.1e} "
        f"wd {g['weight_decay']}"
        for i, g in enumerate(optimizer.param_groups)
    )
    precision = {None: "fp32"}.get(amp_dtype, str(amp_dtype).removeprefix("torch."))
    split = f" x {plan.grad_accum} micro-steps of {plan.loader_batch}" if plan.grad_accum > 1 else ""
    split += f" in chunks of {plan.chunk} (grad_cache)" if plan.chunk else ""
    t, o, m = cfg.train, cfg.optim, cfg.model
    return [
        f"device {device}, world size {world_size}, precision {precision}"
        + (f", torch.compile ({t.compile_backend})" if t.compile and not plan.chunk else ""),
        f"batch: global {plan.global_batch} = {world_size} rank(s) x {plan.per_rank} per rank{split}",
        f"training pairs {train_pairs:,} ({cfg.data.dataset}, {cfg.data.num_frames} frames per clip), "
        f"{train_pairs // plan.global_batch:,} steps per epoch",
        f"model {m.name} ({'pretrained' if m.pretrained else 'from scratch'}), parameters {params:,} "
        f"({trainable:,} trainable)",
        f"learning-rate groups: {groups}",
        f"recipe: losses {'+'.join(cfg.loss.losses)}, {t.max_steps} steps, warm-up {o.warmup_steps} then cosine, "
        f"AdamW betas {tuple(o.betas)}, log every {t.log_every}, save every {t.save_every}, "
        f"eval every {t.eval_every or '-'}; full config in {t.out}/config.yaml",
    ]

"""Run logging: metrics.jsonl, optional TensorBoard, a rich progress bar. Only the main rank writes."""

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
        self._metrics = open(out_dir / "metrics.jsonl", "a") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional extra: rice[tensorboard]
            except ImportError as err:
                raise RuntimeError("tensorboard logging needs the extra: pip install 'rice[tensorboard]'") from err
            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, disable=not enabled,
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

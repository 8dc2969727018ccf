"""Logged training values, kept on the device between reads so the loop never waits for the GPU per step."""

from __future__ import annotations

import math
import time

import torch


class MetricWindow:
    """Sums of the loss components since the last read, as device tensors (no host sync until `read`).

    ``add_micro_step`` collects one micro-batch, ``end_step`` commits the micro-batches of an optimizer step,
    ``read`` copies the window's means to the host once, checks them and starts a new window.
    """

    def __init__(self, step: int) -> None:
        self.start_step = step
        self.sums: dict[str, torch.Tensor] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.clips = self.pending_clips = 0
        self.tic = time.perf_counter()

    def add_micro_step(self, losses: dict[str, torch.Tensor], grad_accum: int, clips: int) -> None:
        for key, value in losses.items():
            value = value.detach().float() / grad_accum
            self.pending[key] = self.pending[key] + value if key in self.pending else value
        self.pending_clips += clips

    def discard_micro_steps(self) -> None:
        self.pending, self.pending_clips = {}, 0

    def end_step(self) -> None:
        for key, value in self.pending.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.clips += self.pending_clips
        self.discard_micro_steps()

    def read(self, step: int, logit_scale: torch.Tensor) -> dict[str, float]:
        """Means over the window's steps, plus ``logit_scale`` and ``clips_per_s``; raises on a non-finite loss.

        The sums carry a NaN or inf from any micro-step of the window, so checking them here catches every
        non-finite loss, at most ``log_every`` steps late; the caller reads before each checkpoint, so no
        checkpoint holds weights updated from a non-finite loss.
        """
        keys = list(self.sums)
        values = torch.stack([self.sums[key] for key in keys] + [logit_scale.detach().float()]).tolist()  # 1 sync
        steps = max(1, step - self.start_step)
        bad = [key for key, value in zip(keys, values) if not math.isfinite(value)]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} between steps {self.start_step + 1} and {step} (no checkpoint holds "
                "it: they are written after this check); lower optim.lr / optim.head_lr, set optim.grad_clip or "
                "use train.amp=none, then --resume latest"
            )
        elapsed = time.perf_counter() - self.tic
        record: dict[str, float] = {"step": step}
        record.update({key: round(value / steps, 6) for key, value in zip(keys, values)})
        record["logit_scale"] = round(values[-1], 4)
        record["clips_per_s"] = round(self.clips / max(elapsed, 1e-9), 2)
        self.start_step, self.sums, self.clips, self.tic = step, {}, 0, time.perf_counter()
        return record

"""Watch the model that ``rice.train.engine.fit`` builds, without changing any of rice's code.

A global forward pre-hook (torch's, not a mock) records the first ``RiceModel`` that runs a forward pass: its
weights at that moment (the starting point of training) and every batch it is fed. After ``fit`` returns, the
recorded model holds this process's final weights, so tests can read what one optimizer step did, and 2-rank runs
can compare the weights each rank holds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from rice.models import RiceModel


@dataclass
class Watched:
    model: RiceModel | None = None
    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def final(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.model.state_dict().items()}

    def moved(self) -> dict[str, torch.Tensor]:
        """final - initial for every trainable parameter."""
        final = self.final()
        return {name: final[name] - self.initial[name] for name, p in self.model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def watch_model():
    watched = Watched()

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if not isinstance(module, RiceModel) or not torch.is_grad_enabled():
            return  # evaluation passes (no grad) are not training batches
        if watched.model is None:
            watched.model = module
            watched.initial = {name: value.detach().clone() for name, value in module.state_dict().items()}
        if module is watched.model:
            watched.batches.append(tuple(a.detach().clone() for a in args[:3]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield watched
    finally:
        handle.remove()

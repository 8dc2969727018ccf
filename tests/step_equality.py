"""One comparison for tests that check a training step against a reference implementation of it."""

from __future__ import annotations

import torch


def assert_same_step(task: torch.nn.Module, got: tuple[dict, dict], expected: tuple[dict, dict],
                     tol: float = 1e-5) -> None:  # fmt: skip
    """``got`` and ``expected``: (losses by name, gradients by parameter name) of one step each. Every loss and
    every gradient equal within ``tol``, and every parameter of ``task`` has a gradient."""
    (losses, grads), (expected_losses, expected_grads) = got, expected
    assert losses.keys() == expected_losses.keys()
    for name in losses:
        torch.testing.assert_close(losses[name], expected_losses[name], rtol=tol, atol=tol,
                                   msg=lambda m, name=name: f"{name}: {m}")  # fmt: skip
    assert grads.keys() == expected_grads.keys()
    assert len(grads) == sum(1 for _ in task.parameters())  # every parameter gets a gradient
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=tol, atol=tol,
                                   msg=lambda m, name=name: f"{name}: {m}")  # fmt: skip

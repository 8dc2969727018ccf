"""What one optimizer step of ``fit`` must do, checked against computations made outside the training loop.

The runs read the update of one step as a gradient: AdamW's first step moves a parameter by
``lr * g / (|g| + eps)``, so with ``lr = eps = 1e6`` (and no weight decay or warm-up) it moves by ``-g`` to about
one part in a million. ``rice_tiny`` has no dropout or stochastic depth (its BatchNorm uses the statistics of the
batch it is given), so a batch's gradient depends on that batch only and a reference can recompute it.
"""

import math

import torch

from rice.config import build_config
from rice.models import build_model
from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit
from rice.train.task import RiceTask
from tests.training_watch import watch_model

GRADIENT_READOUT = [
    "optim.lr=1e6", "optim.head_lr=1e6", "optim.eps=1e6", "optim.weight_decay=0", "optim.warmup_steps=0",
]  # fmt: skip


def run_config(root, out, *overrides: str, model: str = "rice_tiny"):
    return build_config(overrides=[
        f"model.name={model}", "model.pretrained=false", f"data.root={root}", "data.workers=0",
        "data.num_frames=2", f"train.out={out}", "train.device=cpu", "train.amp=none", "train.batch_size=4",
        "train.max_steps=1", "train.save_every=100000", *overrides,
    ])  # fmt: skip


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([tensors[name].flatten().double() for name in sorted(tensors)])


def _assert_vectors_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    error = (actual - expected).norm() / expected.norm()
    assert error < rel, f"relative error {error:.2e} (|actual| {actual.norm():.4g}, |expected| {expected.norm():.4g})"


def test_grad_accum_2_steps_along_the_mean_of_its_two_micro_batch_losses(synthetic_root, tmp_path):
    cfg = run_config(synthetic_root, tmp_path / "run", "train.grad_accum=2", *GRADIENT_READOUT)
    with watch_model() as seen:
        fit(cfg)
    assert len(seen.batches) == 2, "one optimizer step with grad_accum 2 must consume exactly two micro-batches"
    step = seen.moved()

    # Independently: the starting weights, each micro-batch's loss computed on its own, the gradient of their mean.
    reference = build_model(cfg.model)
    reference.load_state_dict(seen.initial)
    task = RiceTask(reference, cfg.loss).train()
    losses = [task(*batch)["loss"] for batch in seen.batches]
    torch.stack(losses).mean().backward()
    gradient = {name: p.grad for name, p in reference.named_parameters() if name in step}
    assert set(gradient) == set(step)
    _assert_vectors_close(_flat(step), -_flat(gradient))
    assert not torch.allclose(losses[0], losses[1])  # two different micro-batches, or the test means little


def test_grad_clip_scales_the_step_to_the_clip_norm(synthetic_root, tmp_path):
    with watch_model() as free:
        fit(run_config(synthetic_root, tmp_path / "free", *GRADIENT_READOUT))
    unclipped = _flat(free.moved())
    clip = 0.25 * unclipped.norm().item()
    with watch_model() as clipped_run:
        fit(run_config(synthetic_root, tmp_path / "clipped", *GRADIENT_READOUT, f"optim.grad_clip={clip}"))
    clipped = _flat(clipped_run.moved())
    assert all(torch.equal(free.initial[name], clipped_run.initial[name]) for name in free.initial)  # same start
    # the same direction, the norm of the clip (clip_grad_norm_ over all parameters)
    _assert_vectors_close(clipped, unclipped * (clip / unclipped.norm()))


def test_logit_scale_is_clamped_to_sqrt_100_after_a_step(synthetic_root, tmp_path):
    fit(run_config(synthetic_root, tmp_path / "run", "model.logit_scale_init=30", "optim.head_lr=1e-6"))
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    assert state["model"]["logit_scale"].item() == math.sqrt(100.0)  # logits capped at 100 * cos, as CLIP


def test_fp16_overflow_skips_the_optimizer_and_the_scheduler_step(synthetic_root, tmp_path):
    """A GradScaler starts at 2**16; with logits 100 * cos in fp16 the scaled gradients overflow, the scaler skips
    those updates and halves its scale. The scheduler must step only with the optimizer."""
    cfg = run_config(synthetic_root, tmp_path / "run", "train.amp=fp16", "train.max_steps=3",
                     "model.logit_scale_init=10", model="swin_b_tiny")  # fmt: skip  (fp16 convolutions are slow on CPU)
    with watch_model() as seen:
        fit(cfg)
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    skipped = round(math.log2(65536.0 / state["scaler"]["scale"]))  # each overflow halves the scale
    optimizer_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()} or {0}  # empty: never stepped
    assert skipped >= 1, "no overflow happened: the test needs one"
    assert optimizer_steps == {3 - skipped}
    assert state["scheduler"]["last_epoch"] == 3 - skipped, (state["scheduler"], skipped)
    if skipped == 3:  # no update at all
        for name, value in seen.moved().items():
            assert not value.any(), name


def test_dataloader_workers_give_the_same_training_as_the_main_process(synthetic_root, tmp_path):
    """The default is 2 workers; per-item seeds make the batches, and so the weights, independent of them.
    (swin_b_tiny: its stochastic depth draws from the main process's RNG, which workers must not disturb.)"""
    runs = {}
    for workers in (0, 2):
        with watch_model() as seen:
            fit(run_config(synthetic_root, tmp_path / f"w{workers}", f"data.workers={workers}", "train.max_steps=2",
                           model="swin_b_tiny"))
        runs[workers] = seen
    assert len(runs[2].batches) == len(runs[0].batches) == 2
    for a, b in zip(runs[0].batches, runs[2].batches):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    for name, value in runs[0].final().items():
        assert torch.equal(value, runs[2].final()[name]), name

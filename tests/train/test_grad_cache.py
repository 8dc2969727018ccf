"""Gradient caching (train.grad_cache) gives the gradients of one pass over the whole batch, in chunks.

The model is a tiny timm ViT (no BatchNorm: a layer that looks across the batch would make chunks differ by
design) in float64, so the comparison with the full-batch pass is exact to rounding. The references are computed
here, with autograd over the whole batch, never with rice.train.grad_cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from rice.config import LossConfig, TrainConfig, build_config
from rice.losses.matching import mine_hard_negatives
from rice.models import RiceModel
from rice.models.decoder import build_decoder
from rice.models.encoders import Preprocess, TimmViTEncoder
from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit
from rice.train.grad_cache import grad_cache_step, plan_batches
from rice.train.task import RiceTask
from tests.training_watch import watch_model

REPO = Path(__file__).resolve().parents[2]
BATCH, FRAMES, SIZE = 10, 3, 32


def tiny_task(losses: list[str], drop: float = 0.0) -> RiceTask:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                            num_classes=16, proj_drop_rate=drop, attn_drop_rate=drop)  # fmt: skip
    encoder = TimmViTEncoder(vit, Preprocess(input_size=SIZE))
    model = RiceModel(encoder, logit_scale_init=4.0)
    if "pmd" in losses:
        model.decoder = build_decoder(encoder, heads=2, attn_drop=0.0, reconstruction="pfr" in losses)
    cfg = LossConfig(losses=losses, pmd_negatives=3, pmd_chunk_size=7)
    return RiceTask(model, cfg).double().train()


def tiny_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen, dtype=torch.float64)
    frames = torch.randn(BATCH, FRAMES, 3, SIZE, SIZE, generator=gen, dtype=torch.float64)
    mask = torch.ones(BATCH, FRAMES, dtype=torch.bool)
    mask[1, 2:] = mask[6, 1:] = False  # clips shorter than T, as tail drop makes them
    return images, frames, mask


def grads(task: RiceTask) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}


def assert_same_grads(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], rel: float = 1e-5) -> None:
    """Each gradient equals its reference to ``rel`` of its own norm, except those whose true value is zero.

    A parameter on a shift-invariant path (a bias before a softmax, a conv bias before a normalisation) has a
    gradient of exactly zero in exact arithmetic; both sides are then rounding noise (~1e-18 in float64) and their
    relative difference is anything. Those are recognised against the largest gradient of the model and must be
    zero to rounding on both sides; every other gradient is compared relative to itself.
    """
    assert actual.keys() == expected.keys()
    scale = max(value.norm() for value in expected.values())
    assert scale > 0, "every reference gradient is zero: the comparison would mean nothing"
    zero = 1e-9 * scale  # float64 rounding of a sum of O(scale) terms is ~1e-16 * scale; leave a wide margin
    compared = 0
    for name, value in expected.items():
        if value.norm() < zero:
            assert actual[name].norm() < zero, f"{name}: expected a zero gradient, got norm {actual[name].norm():.2e}"
            continue
        error = (actual[name] - value).norm() / value.norm()
        assert error < rel, f"{name}: relative gradient error {error:.2e}"
        compared += 1
    assert compared > 0.8 * len(expected), f"only {compared} of {len(expected)} gradients are non-zero"


def full_batch_grads(task: RiceTask, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    task.zero_grad(set_to_none=True)
    loss = task(*batch)["loss"]
    loss.backward()
    return grads(task), loss.detach()


@pytest.mark.parametrize("losses", [["icl"], ["icl", "pmd", "pfr"]])
@pytest.mark.parametrize("chunk", [1, 4])
def test_grad_cache_gradients_equal_one_full_batch_pass(losses, chunk):
    task, batch = tiny_task(losses), tiny_batch()
    expected, expected_loss = full_batch_grads(task, batch)
    task.zero_grad(set_to_none=True)
    got, _ = grad_cache_step(task, *batch, product_ids=None, chunk=chunk)
    assert torch.allclose(got["loss"], expected_loss, rtol=1e-10)
    assert_same_grads(grads(task), expected)
    encoder_grad = task.model.encoder.backbone.blocks[0].attn.qkv.weight.grad
    assert encoder_grad is not None and encoder_grad.norm() > 0  # the encoder learns through the cached gradients


def test_pmd_mines_its_hard_negatives_from_the_whole_cached_batch():
    task, batch = tiny_task(["icl", "pmd"]), tiny_batch()
    with torch.no_grad():
        full = task.model(*batch, return_tokens=True)
    _, cached = grad_cache_step(task, *batch, product_ids=None, chunk=3)
    positives = torch.arange(BATCH)
    expected = mine_hard_negatives(full["image_features"], full["video_features"], positives, 3)
    mined = mine_hard_negatives(cached["image_features"], cached["video_features"], positives, 3)
    assert torch.equal(mined, expected)
    # The point of the cache: negatives come from other chunks, which a chunk-by-chunk loss could not see.
    own_chunk = positives[:, None] // 3
    assert (mined // 3 != own_chunk).any()


def test_dropout_masks_are_replayed_chunk_by_chunk():
    """With dropout, the reference embeds the chunks with a graph in one go from the same RNG state: the cached
    gradients only fit the second forward if it draws the same masks as the first (the RNG is replayed)."""
    task, batch = tiny_task(["icl"], drop=0.3), tiny_batch()
    chunk = 4
    torch.manual_seed(123)
    pieces = [task.model(*(t[s : s + chunk] for t in batch), return_tokens=False) for s in range(0, BATCH, chunk)]
    out = {key: torch.cat([p[key] for p in pieces]) for key in ("image_features", "video_features")}
    task.losses_from_outputs({**out, "logit_scale": task.model.logit_scale}, batch[2])["loss"].backward()
    expected = grads(task)
    task.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    grad_cache_step(task, *batch, product_ids=None, chunk=chunk)
    assert_same_grads(grads(task), expected)


def test_global_batch_gives_the_per_rank_batch_and_refuses_what_does_not_divide():
    cfg = TrainConfig(global_batch_size=96, batch_size=7)
    assert plan_batches(cfg, 1).loader_batch == 96 and plan_batches(cfg, 2).loader_batch == 48
    with pytest.raises(ValueError, match="global_batch_size 96 does not divide over 5 ranks"):
        plan_batches(cfg, 5)
    accum = plan_batches(TrainConfig(global_batch_size=96, grad_accum=4), 2)
    assert (accum.per_rank, accum.loader_batch) == (48, 12)
    assert "fewer negatives" in accum.warning and "grad_cache" in accum.warning
    cached = plan_batches(TrainConfig(global_batch_size=96, grad_cache=True, grad_cache_chunk=16), 1)
    assert (cached.loader_batch, cached.chunk, cached.warning) == (96, 16, None)
    assert plan_batches(TrainConfig(batch_size=8), 3).global_batch == 24  # without a global batch: as before


@pytest.mark.parametrize("name", ["movingfashion_rice", "movingfashion_icl", "movingfashion_icl_pmd", "lpr750k_rice"])
def test_recipes_state_the_global_batch(name):
    expected = 128 if name.startswith("lpr") else 96
    assert build_config(config_file=name).train.global_batch_size == expected


def run_config(root, out, *overrides: str):
    return build_config(overrides=[
        "model.name=rice_tiny", "model.pretrained=false", f"data.root={root}", "data.workers=0", "data.num_frames=2",
        f"train.out={out}", "train.device=cpu", "train.amp=none", "train.global_batch_size=6", "train.grad_cache=true",
        "train.grad_cache_chunk=4", "train.max_steps=3", "train.save_every=1", "loss.losses=[icl,pmd]",
        "optim.warmup_steps=1", *overrides,
    ])  # fmt: skip


@pytest.fixture
def one_thread():
    """PMD's backward scatters into the gathered clips (index_put with accumulate), which sums in a thread-dependent
    order; one thread makes runs comparable bit for bit, as tests/train/test_exact_resume.py does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_grad_cache_run_resumed_from_a_step_checkpoint_repeats_the_run(synthetic_root, tmp_path, one_thread):
    """The decoder's attention dropout (0.1) draws in the loss pass between the chunks' passes: exact resume must
    still hold, RNG replays included."""
    whole = fit(run_config(synthetic_root, tmp_path / "whole"))
    resumed = fit(run_config(synthetic_root, tmp_path / "resumed", f"train.resume={tmp_path / 'whole' / 'step_1.pt'}"))
    a, b = read_checkpoint(whole), read_checkpoint(resumed)
    assert a["step"] == b["step"] == 3
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_two_ranks_with_grad_cache_equal_one_process_on_the_whole_batch(synthetic_root, tmp_path):
    """Real torchrun (gloo): 2 ranks x 2 pairs embedded one pair at a time, the gradients averaged by
    rice.distributed (no DDP wrapper), equal one process taking the 4 pairs in one plain pass. ``timesformer_tiny``
    has no BatchNorm and the decoder's dropout is off, so the two are the same computation. The step is read as
    a gradient (lr = eps = 1e6: AdamW's first update is -g), so fp32 rounding is not magnified by Adam."""
    from tests.train.test_training_behaviour import GRADIENT_READOUT, _assert_vectors_close, _flat
    from tests.train.test_training_behaviour import run_config as behaviour_config

    common = ["train.max_steps=1", "train.global_batch_size=4", "loss.losses=[icl,pmd]", "model.decoder_attn_drop=0",
              *GRADIENT_READOUT]  # fmt: skip
    ddp = behaviour_config(synthetic_root, tmp_path / "ddp", *common, "train.grad_cache=true",
                           "train.grad_cache_chunk=1", model="timesformer_tiny")  # fmt: skip
    ddp.save(tmp_path / "ddp.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "tests.ddp_fit_worker", str(tmp_path / "ddp.yaml"), str(tmp_path / "weights")],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"weights.rank{r}.pt", weights_only=True) for r in range(2)]
    with watch_model() as single:
        fit(behaviour_config(synthetic_root, tmp_path / "single", *common, model="timesformer_tiny"))
    names = [name for name, p in single.model.named_parameters() if p.requires_grad]
    for name in names:
        assert torch.equal(ranks[0]["final"][name], ranks[1]["final"][name]), f"ranks disagree on {name}"
        assert torch.equal(ranks[0]["initial"][name], single.initial[name]), f"different starts for {name}"
    step = {"ranks": {}, "single": {}}
    for name in names:
        step["ranks"][name] = ranks[0]["final"][name] - ranks[0]["initial"][name]
        step["single"][name] = single.final()[name] - single.initial[name]
    moved = sum(int(step["single"][name].abs().max() > 0) for name in names)
    assert moved > 0.8 * len(names), f"only {moved} of {len(names)} parameters moved: the comparison would mean little"
    _assert_vectors_close(_flat(step["ranks"]), _flat(step["single"]))


def test_chunks_take_their_frame_positions_from_the_loader_without_nonzero():
    """With the batch's frame_index and frame_counts (collate_batch), no chunk runs ``nonzero`` (on a GPU, a wait
    for the device) and the gradients equal the chunks finding their own positions."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from rice.data import collate_batch

    class CountNonzero(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.nonzero, torch.ops.aten.nonzero_static):
                CountNonzero.calls += 1
            return func(*args, **(kwargs or {}))

    images, frames, mask = tiny_batch()
    collated = collate_batch([{"frame_mask": m} for m in mask])
    results = []
    for from_loader in (False, True):
        task = tiny_task(["icl", "pmd"])
        extra = dict(frame_index=collated["frame_index"], frame_counts=collated["frame_counts"]) if from_loader else {}
        CountNonzero.calls = 0
        with CountNonzero():
            grad_cache_step(task, images, frames, mask, product_ids=None, chunk=3, **extra)
        results.append((CountNonzero.calls, grads(task)))
    (calls_own, expected), (calls_loader, got) = results
    assert calls_own > 0  # the check sees the nonzero of chunks that find their own positions
    assert calls_loader == 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)

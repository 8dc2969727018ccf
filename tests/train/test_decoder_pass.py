"""One batched decoder pass shared by PMD and PFR (issue 24, item 1).

A training step computes the decoder's per-image states (self-attention block) and per-clip keys/values once,
scores the positive pairs in one call (with the cross-attention PFR reads) and the mined negatives in another.
Its losses and every gradient (parameters and the encoder's tokens) must equal an independent reference that runs
the decoder on each (image, clip) pair on its own, with padded clips (tail drop, short videos) in the batch, for
the batched path and the memory-bounded chunked path (``loss.pmd_pass``), with and without same-product masking.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from rice.config import LossConfig
from rice.data import collate_batch
from rice.data.sampling import pad_clip
from rice.losses.matching import mine_hard_negatives
from rice.models import create_model
from rice.models.decoder import build_decoder
from rice.train.task import RiceTask
from tests.step_equality import assert_same_step

FRAMES, SIZE, NEGATIVES = 3, 64, 3
CLIP_LENGTHS = (3, 2, 1, 3, 2, 3)
PRODUCTS = torch.tensor([11, 12, 11, 13, 14, 12])  # pairs 0/2 and 1/5 show the same product


def tiny_task(pmd_pass: str, mask_same_product: bool, pfr_softmax: str) -> RiceTask:
    torch.manual_seed(0)
    model = create_model("rice_tiny", pretrained=False)
    # no attention dropout: the reference draws no masks in the same order as the batched calls would
    model.decoder = build_decoder(model.encoder, reconstruction=True, attn_drop=0.0)
    cfg = LossConfig(losses=["icl", "pmd", "pfr"], pmd_negatives=NEGATIVES, pmd_pass=pmd_pass, pmd_chunk_size=4,
                     mask_same_product=mask_same_product, pfr_softmax=pfr_softmax)  # fmt: skip
    return RiceTask(model, cfg).train()


def tiny_inputs(mask_same_product: bool) -> dict:
    gen = torch.Generator().manual_seed(1)
    items = []
    for length in CLIP_LENGTHS:
        frames, mask = pad_clip(torch.randn(length, 3, SIZE, SIZE, generator=gen), FRAMES)
        items.append({"frames": frames, "frame_mask": mask, "image": torch.randn(3, SIZE, SIZE, generator=gen)})
    batch = collate_batch(items)
    return dict(images=batch["image"], frames=batch["frames"], frame_mask=batch["frame_mask"],
                product_ids=PRODUCTS if mask_same_product else None, frame_index=batch["frame_index"])  # fmt: skip


def reference_losses(task: RiceTask, inputs: dict) -> dict[str, torch.Tensor]:
    """The same losses with the decoder run on one (image, clip) pair per call (`PairwiseMatchingDecoder.forward`)."""
    model, decoder = task.model, task.model.decoder
    out = model(inputs["images"], inputs["frames"], inputs["frame_mask"], return_tokens=True)
    images, clips, mask = out["image_tokens"], out["video_tokens"], inputs["frame_mask"]
    batch = images.shape[0]

    def pair(i: int, j: int, attention: bool = False):
        return decoder(images[i : i + 1], clips[j : j + 1], mask[j : j + 1], return_attention=attention)

    products = inputs["product_ids"]
    excluded = None if products is None else products[:, None] == products[None, :]
    negatives, valid = mine_hard_negatives(out["image_features"], out["video_features"], torch.arange(batch),
                                           NEGATIVES, excluded, return_valid=True)  # fmt: skip
    pmd_terms = []
    for i in range(batch):
        scores = torch.stack([pair(i, i).scores[0], *(pair(i, int(j)).scores[0] for j in negatives[i])])
        if products is not None:
            scores = scores.masked_fill(~torch.cat([torch.tensor([True]), valid[i]]), float("-inf"))
        pmd_terms.append(-torch.log_softmax(scores, 0)[0])
    attention = torch.cat([pair(i, i, attention=True).attention for i in range(batch)])
    losses = {
        "icl_loss": task.losses["icl"](**{**out, "product_ids": products}),
        "pmd_loss": torch.stack(pmd_terms).mean(),
        "pfr_loss": task.losses["pfr"](images, clips, mask, decoder, positive_attention=attention),
    }
    losses["loss"] = sum(losses.values())
    return losses


def losses_and_grads(task: RiceTask, inputs: dict, reference: bool) -> tuple[dict, dict]:
    losses = reference_losses(task, inputs) if reference else task(**inputs)
    losses["loss"].backward()
    grads = {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in losses.items()}, grads


@pytest.mark.parametrize("pmd_pass", ["batched", "chunked"])
@pytest.mark.parametrize("mask_same_product,pfr_softmax", [(False, "valid"), (True, "all")])
def test_losses_and_every_gradient_equal_a_per_pair_reference(pmd_pass, mask_same_product, pfr_softmax) -> None:
    task = tiny_task(pmd_pass, mask_same_product, pfr_softmax)
    reference_task = copy.deepcopy(task)
    inputs = tiny_inputs(mask_same_product)
    got = losses_and_grads(task, inputs, reference=False)
    assert_same_step(task, got, losses_and_grads(reference_task, inputs, reference=True))


def test_the_batched_pass_runs_the_decoder_blocks_once_per_step() -> None:
    """Batched: the self-attention block runs once (on the B images), the cross block's key/value projection once
    (on the clips) and the cross block's queries twice (positives, negatives), whatever the chunk size says;
    chunked runs the query side once per chunk."""
    calls = {}
    for pmd_pass in ("batched", "chunked"):
        task = tiny_task(pmd_pass, False, "valid")
        decoder = task.model.decoder
        counts = {"self": 0, "kv": 0, "query": 0}

        def count(name):
            def hook(*_):
                counts[name] += 1
            return hook

        decoder.self_block.register_forward_hook(count("self"))
        project_kv = decoder.cross_block.attn.project_kv
        decoder.cross_block.attn.project_kv = lambda context, f=project_kv: (count("kv")(), f(context))[1]
        attend = decoder.cross_block.attn.attend
        decoder.cross_block.attn.attend = lambda *a, f=attend, **k: (count("query")(), f(*a, **k))[1]
        task(**tiny_inputs(False))["loss"].backward()
        calls[pmd_pass] = dict(counts)
    assert calls["batched"] == {"self": 1, "kv": 1, "query": 2}
    # chunks of 4: the 6 positives in 2 calls (kept for PFR's attention); the 18 negatives in 5 calls, of which the
    # first 4 run again in the backward (recomputed instead of stored)
    assert calls["chunked"] == {"self": 1, "kv": 1, "query": 2 + 5 + 4}


def test_pfr_reads_the_attention_of_the_shared_positive_pass() -> None:
    """PFR's loss in the task equals PFR computed from the positives' attention of a standalone decoder pass."""
    task = tiny_task("batched", False, "valid")
    inputs = tiny_inputs(False)
    with torch.no_grad():
        losses = task(**inputs)
        out = task.model(inputs["images"], inputs["frames"], inputs["frame_mask"], return_tokens=True)
        shared = task.losses["pmd"].decoder_pass(task.model.decoder, out["image_tokens"], out["video_tokens"],
                                                 inputs["frame_mask"], return_attention=True)  # fmt: skip
        pfr = task.losses["pfr"](out["image_tokens"], out["video_tokens"], inputs["frame_mask"], task.model.decoder,
                                 positive_attention=shared.positive_attention)  # fmt: skip
    torch.testing.assert_close(losses["pfr_loss"], pfr)
    assert shared.positive_attention.shape[0] == len(CLIP_LENGTHS)
    assert F.mse_loss(shared.positive_attention, shared.positive_attention.flip(0)) > 0  # a real per-pair map

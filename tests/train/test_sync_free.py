"""The training step has no host synchronisation (issue 24, item 3).

Nothing in the forward or the losses may have an output whose shape depends on tensor values (``nonzero``,
``unique``, boolean-mask indexing) or read a tensor back to Python (``.item()``): on a GPU each waits for the device,
and it splits the step into several graphs, so no CUDA graph can hold it. The real frames' positions come from the
loader's CPU mask (``collate_batch``'s ``frame_index``), the decoder picks the rows it runs from the shapes alone.

1. With dynamo's capture of data-dependent output shapes and of scalar outputs off, the whole task step (encoder,
   ICL, PMD, PFR, a tail-dropped clip in the batch) traces into one graph with no break (before: 11 breaks).
2. Losses and every parameter gradient equal the previous implementation, kept here as the reference:
   ``RiceModel._encode`` with boolean-mask packing; ``score_pairs`` against its version with ``torch.unique`` (the
   step's shared decoder pass is checked against a per-pair reference in tests/train/test_decoder_pass.py).
3. On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` around a training step (copy, forward, backward,
   optimizer step) raises nothing.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch.utils.checkpoint import checkpoint

from rice.config import LossConfig, OptimConfig
from rice.data import collate_batch
from rice.data.sampling import pad_clip
from rice.models import RiceModel, create_model
from rice.models.decoder import DecoderOutput, PairwiseMatchingDecoder, build_decoder, score_pairs
from rice.models.rice_model import real_frame_index
from rice.train.optim import build_optimizer
from rice.train.task import RiceTask
from tests.step_equality import assert_same_step

FRAMES, SIZE = 3, 64
CLIP_LENGTHS = (3, 2, 1, 3, 2)  # clips shorter than T: tail drop / short videos, zero-padded by pad_clip
LOSS_SETTINGS = {
    "softmax": dict(icl_form="softmax", pfr_softmax="valid", mask_same_product=False),
    "sigmoid-same-product": dict(icl_form="sigmoid", pfr_softmax="all", mask_same_product=True),
}
PRODUCTS = torch.tensor([11, 12, 11, 13, 14])  # pairs 0 and 2 show the same product


def tiny_task(setting: str) -> RiceTask:
    torch.manual_seed(0)
    model = create_model("rice_tiny", pretrained=False)
    model.decoder = build_decoder(model.encoder, reconstruction=True)
    cfg = LossConfig(losses=["icl", "pmd", "pfr"], pmd_negatives=3, pmd_chunk_size=4, **LOSS_SETTINGS[setting])
    return RiceTask(model, cfg).train()


def tiny_batch(seed: int = 1) -> dict:
    """A real collated batch of training pairs, some clips padded."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for length in CLIP_LENGTHS:
        frames, mask = pad_clip(torch.randn(length, 3, SIZE, SIZE, generator=gen), FRAMES)
        items.append({"frames": frames, "frame_mask": mask, "image": torch.randn(3, SIZE, SIZE, generator=gen)})
    return collate_batch(items)


def step_inputs(batch: dict, setting: str) -> dict:
    product_ids = PRODUCTS if LOSS_SETTINGS[setting]["mask_same_product"] else None
    return dict(images=batch["image"], frames=batch["frames"], frame_mask=batch["frame_mask"],
                product_ids=product_ids, frame_index=batch["frame_index"])  # fmt: skip


def test_the_collated_frame_index_lists_the_real_frames() -> None:
    batch = tiny_batch()
    expected = [b * FRAMES + t for b, length in enumerate(CLIP_LENGTHS) for t in range(length)]
    assert batch["frame_index"].tolist() == expected
    assert torch.equal(real_frame_index(batch["frame_mask"]), batch["frame_index"])


# ------------------------------------------------------------------------------------------------ 1. one graph
@pytest.mark.parametrize("setting", list(LOSS_SETTINGS))
def test_the_task_step_traces_into_one_graph_without_data_dependent_shapes(setting: str) -> None:
    task = tiny_task(setting)
    inputs = step_inputs(tiny_batch(), setting)

    def forward_and_losses(**kwargs: torch.Tensor) -> torch.Tensor:  # explain traces the forward, not the backward
        return task(**kwargs)["loss"]

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False, capture_scalar_outputs=False):
        report = torch._dynamo.explain(forward_and_losses)(**inputs)
    torch._dynamo.reset()
    reasons = [f"{r.user_stack[-1].name if r.user_stack else '?'}: {' '.join(str(r.reason).split())[:160]}"
               for r in report.break_reasons]  # fmt: skip
    assert report.graph_break_count == 0, reasons
    assert report.graph_count == 1


# ------------------------------------------------------------------------- 2. equal to the previous implementation
def previous_encode(model: RiceModel, images, frames, frame_mask, frame_index=None):
    """RiceModel._encode before issue 24: boolean-mask packing and ``nonzero`` to scatter back."""
    chunks = [images] if images is not None else []
    if frames is not None:
        b, t = frames.shape[:2]
        valid = frame_mask.reshape(-1).bool()
        chunks.append(frames.reshape(b * t, *frames.shape[2:])[valid])
    out = model.encoder(torch.cat(chunks) if len(chunks) > 1 else chunks[0])
    n_img = images.shape[0] if images is not None else 0
    image_out = (out.embedding[:n_img], out.tokens[:n_img]) if images is not None else None
    video_out = None
    if frames is not None:
        emb = out.embedding.new_zeros(b * t, out.embedding.shape[-1])
        tok = out.tokens.new_zeros(b * t, *out.tokens.shape[1:])
        rows = (valid.nonzero().squeeze(1),)
        emb = emb.index_put(rows, out.embedding[n_img:])
        tok = tok.index_put(rows, out.tokens[n_img:])
        video_out = (emb.reshape(b, t, -1), tok.reshape(b, t, *tok.shape[1:]))
    return image_out, video_out


def _previous_chunk_scores(decoder, states, k, v, key_mask, ii, jj):
    return decoder.score_states(states[ii], k[jj], v[jj], key_mask[jj]).scores


def previous_score_pairs(
    decoder: PairwiseMatchingDecoder, image_tokens, video_tokens, frame_mask, image_index, clip_index, chunk_size,
    return_attention: bool = False,
) -> DecoderOutput:  # fmt: skip
    """score_pairs before issue 24: each distinct image and clip found with ``torch.unique``."""
    if image_index.numel() == 0:
        return DecoderOutput(image_tokens.new_zeros(0), None)
    images, image_index = torch.unique(image_index, return_inverse=True)
    clips, clip_index = torch.unique(clip_index, return_inverse=True)
    states = decoder.image_states(image_tokens[images])
    k, v, key_mask = decoder.clip_states(video_tokens[clips], frame_mask[clips])
    scores, attentions = [], []
    recompute = torch.is_grad_enabled() and not return_attention
    total = image_index.numel()
    starts = [0, *range(total % chunk_size or chunk_size, total, chunk_size)]
    for start, end in zip(starts, [*starts[1:], total]):
        ii, jj = image_index[start:end], clip_index[start:end]
        if recompute and end < total:
            scores.append(checkpoint(_previous_chunk_scores, decoder, states, k, v, key_mask, ii, jj,
                                     use_reentrant=False))  # fmt: skip
            continue
        out = decoder.score_states(states[ii], k[jj], v[jj], key_mask[jj], return_attention=return_attention)
        scores.append(out.scores)
        if return_attention:
            attentions.append(out.attention)
    return DecoderOutput(torch.cat(scores), torch.cat(attentions) if return_attention else None)


def run_step(task: RiceTask, inputs: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(5)  # the decoder's attention dropout draws the same masks in both runs
    losses = task(**inputs)
    losses["loss"].backward()
    grads = {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in losses.items()}, grads


@pytest.mark.parametrize("setting", list(LOSS_SETTINGS))
def test_losses_and_gradients_equal_the_previous_implementation(setting: str, monkeypatch) -> None:
    task = tiny_task(setting)
    reference_task = copy.deepcopy(task)
    inputs = step_inputs(tiny_batch(), setting)
    got = run_step(task, inputs)

    monkeypatch.setattr(RiceModel, "_encode", previous_encode)
    assert_same_step(task, got, run_step(reference_task, inputs))


@pytest.mark.parametrize("attention", [False, True])
def test_score_pairs_equals_the_previous_implementation_with_fewer_and_more_pairs_than_rows(attention: bool) -> None:
    """The two ways the decoder picks its rows: every row (pairs >= rows), one per pair (fewer pairs, e.g. one
    rank's negatives among the clips of all ranks), with repeated images and clips."""
    torch.manual_seed(0)
    decoder = build_decoder(create_model("rice_tiny", pretrained=False).encoder, attn_drop=0.0).train()
    gen = torch.Generator().manual_seed(3)
    image_tokens = torch.randn(4, 5, decoder.width, generator=gen, requires_grad=True)
    video_tokens = torch.randn(6, FRAMES, 5, decoder.width, generator=gen, requires_grad=True)
    frame_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    pair_lists = {
        "more pairs than rows": ([0, 0, 1, 1, 2, 2, 3, 3], [5, 2, 0, 2, 1, 1, 3, 4]),
        "fewer pairs than rows": ([2, 2, 0], [4, 1, 4]),
    }
    for label, (images, clips) in pair_lists.items():
        results = []
        for score in (score_pairs, previous_score_pairs):
            image_tokens.grad = video_tokens.grad = None
            decoder.zero_grad(set_to_none=True)
            out = score(decoder, image_tokens, video_tokens, frame_mask, torch.tensor(images), torch.tensor(clips),
                        3, return_attention=attention)  # fmt: skip
            total = out.scores.square().sum() + (out.attention.square().sum() if attention else 0.0)
            total.backward()
            decoder_grads = [p.grad for p in decoder.parameters() if p.grad is not None]
            grads = [image_tokens.grad, video_tokens.grad, *decoder_grads]
            results.append((out.scores.detach(), [g.clone() for g in grads]))
        (scores, grads), (expected_scores, expected_grads) = results
        torch.testing.assert_close(scores, expected_scores, rtol=1e-5, atol=1e-5, msg=lambda m: f"{label}: {m}")
        assert len(grads) == len(expected_grads), label
        for got, expected in zip(grads, expected_grads):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{label}: {m}")


# ---------------------------------------------------------------------------------------------- 3. on a GPU
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs CUDA: torch.cuda.set_sync_debug_mode('error') checks that a GPU training step never waits for "
    "the device",
)
@pytest.mark.parametrize("setting", list(LOSS_SETTINGS))
def test_a_cuda_training_step_never_synchronises_with_the_host(setting: str) -> None:
    device = torch.device("cuda")
    task = tiny_task(setting).to(device)
    optimizer = build_optimizer(task.model, OptimConfig())
    batch = {key: value.pin_memory() for key, value in tiny_batch().items() if isinstance(value, torch.Tensor)}

    def training_step() -> torch.Tensor:
        inputs = {key: value.to(device, non_blocking=True) if value is not None else None
                  for key, value in step_inputs(batch, setting).items()}  # fmt: skip
        losses = task(**inputs)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses["loss"].detach()

    training_step()  # the first step creates the library handles and optimizer state (allowed to wait)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = training_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()

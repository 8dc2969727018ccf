"""PMD loss: hard-negative mining against a brute-force loop, chunking, and a naive per-pair reference."""

import dataclasses

import torch
import torch.nn.functional as F

from rice.losses.matching import PairwiseMatchingLoss, mine_hard_negatives
from rice.models.decoder import PairwiseMatchingDecoder


def _batch(b=6, t=3, l=4, w=16, d=8, seed=0):  # noqa: E741 (l = tokens per image, as in the paper)
    g = torch.Generator().manual_seed(seed)
    return dict(
        image_features=F.normalize(torch.randn(b, d, generator=g), dim=-1),
        video_features=F.normalize(torch.randn(b, d, generator=g), dim=-1),
        image_tokens=torch.randn(b, l, w, generator=g, requires_grad=True),
        video_tokens=torch.randn(b, t, l, w, generator=g, requires_grad=True),
        frame_mask=torch.tensor([[True] * t] * (b - 1) + [[True] + [False] * (t - 1)]),
    )


def test_mining_matches_brute_force_over_gathered_batch():
    g = torch.Generator().manual_seed(3)
    local_images = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    gathered_videos = F.normalize(torch.randn(15, 8, generator=g), dim=-1)  # 3 ranks x 5
    rank = 1
    positive = torch.arange(5) + rank * 5
    got = mine_hard_negatives(local_images, gathered_videos, positive, 3)
    for i in range(5):
        candidates = [(float(local_images[i] @ gathered_videos[j]), j) for j in range(15) if j != positive[i]]
        expected = [j for _, j in sorted(candidates, reverse=True)[:3]]
        assert got[i].tolist() == expected


def test_chunk_size_does_not_change_loss_or_grads():
    torch.manual_seed(0)
    dec = PairwiseMatchingDecoder(16, heads=4).eval()
    results = []
    for chunk in (None, 1, 7, 100):  # None: one call for the positives, one for the negatives
        batch = _batch()
        loss = PairwiseMatchingLoss(num_negatives=3, chunk_size=chunk, rank=0)(**batch, decoder=dec)
        dec.zero_grad()
        loss.backward()
        results.append((loss.detach(), batch["video_tokens"].grad.clone(), dec.match_head.weight.grad.clone()))
    for loss, grad, head_grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(head_grad, results[0][2], rtol=1e-5, atol=1e-6)


def test_loss_equals_naive_per_pair_loop():
    torch.manual_seed(1)
    dec = PairwiseMatchingDecoder(16, heads=4).eval().double()
    batch = {k: (v.detach().double() if v.is_floating_point() else v) for k, v in _batch(seed=4).items()}
    loss = PairwiseMatchingLoss(num_negatives=2, chunk_size=4, rank=0)(**batch, decoder=dec)
    b = batch["image_tokens"].shape[0]
    terms = []
    for i in range(b):
        sims = [(float(batch["image_features"][i] @ batch["video_features"][j]), j) for j in range(b) if j != i]
        clips = [i] + [j for _, j in sorted(sims, reverse=True)[:2]]
        img, vid, mask = batch["image_tokens"], batch["video_tokens"], batch["frame_mask"]
        scores = torch.stack([dec(img[i : i + 1], vid[j : j + 1], mask[j : j + 1]).scores[0] for j in clips])
        terms.append(-torch.log_softmax(scores, 0)[0])
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-10, atol=1e-10)


def test_a_shared_decoder_pass_gives_the_same_loss_and_is_the_one_read():
    torch.manual_seed(2)
    dec = PairwiseMatchingDecoder(16, heads=4).eval()
    batch = _batch()
    loss_fn = PairwiseMatchingLoss(num_negatives=3, rank=0)
    shared = loss_fn.decoder_pass(dec, batch["image_tokens"], batch["video_tokens"], batch["frame_mask"])
    direct = dec(batch["image_tokens"], batch["video_tokens"], batch["frame_mask"]).scores
    torch.testing.assert_close(shared.positive_scores, direct)
    torch.testing.assert_close(loss_fn(**batch, decoder=dec, decoder_pass=shared), loss_fn(**batch, decoder=dec))
    # the positives' scores come from the pass handed in, not from a second decoder call
    raised = dataclasses.replace(shared, positive_scores=shared.positive_scores + 5.0)
    assert loss_fn(**batch, decoder=dec, decoder_pass=raised) < loss_fn(**batch, decoder=dec) - 1.0


def test_negatives_clamped_to_batch():
    dec = PairwiseMatchingDecoder(16, heads=4).eval()
    batch = _batch(b=2)
    assert torch.isfinite(PairwiseMatchingLoss(num_negatives=5, rank=0)(**batch, decoder=dec))
    one = {k: v[:1] for k, v in _batch(b=2).items()}
    assert PairwiseMatchingLoss(num_negatives=3, rank=0)(**one, decoder=dec).item() == 0.0

"""loss.mask_same_product: clips and images of the same product are not negatives (ICL and PMD mining)."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from rice.distributed import all_gather_no_grad, all_gather_with_grad
from rice.losses import InstanceContrastiveLoss, PairwiseMatchingLoss
from rice.losses.matching import mine_hard_negatives
from rice.models.decoder import PairwiseMatchingDecoder
from rice.train.task import product_keys
from tests.distributed_utils import run_gloo
from tests.linear_towers import LinearTowers, tower_inputs

PRODUCTS = [0, 1, 0, 2, 1, 3, 0, 4]  # pairs 0, 2, 6 show one product, pairs 1 and 4 another


def naive_masked_icl(videos: np.ndarray, images: np.ndarray, scale: float, products: list[int]) -> float:
    """Symmetric InfoNCE with explicit loops (float64); a same-product pair other than (i, i) is skipped."""
    n = len(videos)
    total = 0.0
    for i in range(n):
        row = [scale**2 * videos[i] @ images[j] for j in range(n) if j == i or products[j] != products[i]]
        col = [scale**2 * videos[j] @ images[i] for j in range(n) if j == i or products[j] != products[i]]
        total -= scale**2 * videos[i] @ images[i] - math.log(sum(math.exp(x) for x in row))
        total -= scale**2 * videos[i] @ images[i] - math.log(sum(math.exp(x) for x in col))
    return total / (2 * n)


def test_masked_icl_equals_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    videos = F.normalize(torch.randn(8, 16, generator=g, dtype=torch.float64), dim=-1)
    images = F.normalize(torch.randn(8, 16, generator=g, dtype=torch.float64), dim=-1)
    ids = torch.tensor(PRODUCTS)
    loss = InstanceContrastiveLoss()(images, videos, torch.tensor(4.0, dtype=torch.float64), product_ids=ids)
    expected = naive_masked_icl(videos.numpy(), images.numpy(), 4.0, PRODUCTS)
    assert math.isclose(loss.item(), expected, rel_tol=1e-12)
    unmasked = InstanceContrastiveLoss()(images, videos, torch.tensor(4.0, dtype=torch.float64))
    assert not math.isclose(unmasked.item(), expected, rel_tol=1e-3)  # the mask changes the loss here
    distinct = InstanceContrastiveLoss()(images, videos, torch.tensor(4.0, dtype=torch.float64),
                                         product_ids=torch.arange(8))
    assert math.isclose(distinct.item(), unmasked.item(), rel_tol=1e-12)  # all products distinct: no change


def test_masked_mining_skips_the_same_product():
    g = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(8, 8, generator=g), dim=-1)
    videos = F.normalize(torch.randn(8, 8, generator=g), dim=-1)
    ids = torch.tensor(PRODUCTS)
    excluded = ids[:, None] == ids[None, :]
    got, valid = mine_hard_negatives(images, videos, torch.arange(8), 3, excluded, return_valid=True)
    for i in range(8):
        allowed = [(float(images[i] @ videos[j]), j) for j in range(8) if PRODUCTS[j] != PRODUCTS[i]]
        assert got[i].tolist() == [j for _, j in sorted(allowed, reverse=True)[:3]]
    assert valid.all()


def test_masked_pmd_equals_a_naive_loop_even_when_negatives_run_out():
    torch.manual_seed(1)
    dec = PairwiseMatchingDecoder(16, heads=4).eval().double()
    g = torch.Generator().manual_seed(5)
    b, t, l_tok, w = 5, 2, 3, 16
    batch = dict(
        image_features=F.normalize(torch.randn(b, 8, generator=g, dtype=torch.float64), dim=-1),
        video_features=F.normalize(torch.randn(b, 8, generator=g, dtype=torch.float64), dim=-1),
        image_tokens=torch.randn(b, l_tok, w, generator=g, dtype=torch.float64),
        video_tokens=torch.randn(b, t, l_tok, w, generator=g, dtype=torch.float64),
        frame_mask=torch.ones(b, t, dtype=torch.bool),
    )
    products = [7, 7, 7, 8, 9]  # images 0-2 have only 2 other-product clips: the third negative runs out
    loss = PairwiseMatchingLoss(num_negatives=3, chunk_size=2, rank=0)(
        **batch, decoder=dec, product_ids=torch.tensor(products)
    )
    terms = []
    img, vid, mask = batch["image_tokens"], batch["video_tokens"], batch["frame_mask"]
    for i in range(b):
        sims = [(float(batch["image_features"][i] @ batch["video_features"][j]), j)
                for j in range(b) if products[j] != products[i]]
        clips = [i] + [j for _, j in sorted(sims, reverse=True)[:3]]
        scores = torch.stack([dec(img[i : i + 1], vid[j : j + 1], mask[j : j + 1]).scores[0] for j in clips])
        terms.append(-torch.log_softmax(scores, 0)[0])
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-10, atol=1e-10)


def test_product_keys_are_stable_and_equal_for_equal_ids():
    keys = product_keys(["imgs/a.jpg", "b", "imgs/a.jpg"])
    assert keys.dtype == torch.int64 and keys[0] == keys[2] and keys[0] != keys[1]
    assert torch.equal(keys, product_keys(["imgs/a.jpg", "b", "imgs/a.jpg"]))


def _ddp_worker(rank, world_size, out_dir, per_rank):
    model = DistributedDataParallel(LinearTowers())
    v, u = tower_inputs(per_rank * world_size)
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    video_f, image_f, scale = model(v[sl], u[sl])
    ids = torch.tensor(PRODUCTS)[sl]  # duplicates across the two ranks: only the gathered ids see them
    loss = InstanceContrastiveLoss(gather=all_gather_with_grad, gather_no_grad=all_gather_no_grad)(
        image_features=image_f, video_features=video_f, logit_scale=scale, product_ids=ids
    )
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.module.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, f"{out_dir}/rank{rank}.pt")


def test_two_gloo_ranks_equal_one_process_with_the_mask(tmp_path):
    per_rank = 4
    run_gloo(_ddp_worker, 2, (str(tmp_path), per_rank))
    model = LinearTowers()
    v, u = tower_inputs(2 * per_rank)
    video_f, image_f, scale = model(v, u)
    loss = InstanceContrastiveLoss()(image_f, video_f, scale, product_ids=torch.tensor(PRODUCTS))
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(result["loss"], loss.detach(), atol=1e-6)
        for name, p in model.named_parameters():
            assert torch.allclose(result["grads"][name], p.grad, atol=1e-6), name

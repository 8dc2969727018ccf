import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from rice.distributed import all_gather_with_grad
from rice.losses import InstanceContrastiveLoss
from tests.distributed_utils import run_gloo
from tests.linear_towers import LinearTowers, tower_inputs


def reference_icl(videos: np.ndarray, images: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE written out with explicit loops (float64)."""
    n = len(videos)
    logits = scale**2 * videos @ images.T
    total = 0.0
    for i in range(n):
        row = logits[i]
        total += -(row[i] - math.log(np.exp(row).sum()))
        col = logits[:, i]
        total += -(col[i] - math.log(np.exp(col).sum()))
    return total / (2 * n)


def test_icl_matches_hand_computed_reference():
    gen = torch.Generator().manual_seed(0)
    videos = F.normalize(torch.randn(7, 16, generator=gen, dtype=torch.float64), dim=-1)
    images = F.normalize(torch.randn(7, 16, generator=gen, dtype=torch.float64), dim=-1)
    scale = torch.tensor(4.0, dtype=torch.float64)
    loss = InstanceContrastiveLoss()(image_features=images, video_features=videos, logit_scale=scale)
    assert math.isclose(loss.item(), reference_icl(videos.numpy(), images.numpy(), 4.0), rel_tol=1e-12)


def test_icl_perfect_alignment_is_small_and_permutation_equivariant():
    feats = torch.eye(8)
    loss = InstanceContrastiveLoss()(image_features=feats, video_features=feats, logit_scale=torch.tensor(10.0))
    assert loss.item() < 1e-6
    gen = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(6, 5, generator=gen), dim=-1)
    u = F.normalize(torch.randn(6, 5, generator=gen), dim=-1)
    perm = torch.randperm(6, generator=gen)
    fn = InstanceContrastiveLoss()
    s = torch.tensor(4.0)
    assert torch.allclose(fn(image_features=u, video_features=v, logit_scale=s),
                          fn(image_features=u[perm], video_features=v[perm], logit_scale=s), atol=1e-6)


def _ddp_worker(rank, world_size, out_dir, per_rank):
    model = DistributedDataParallel(LinearTowers())
    v, u = tower_inputs(per_rank * world_size)
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    video_f, image_f, scale = model(v[sl], u[sl])
    loss = InstanceContrastiveLoss(gather=all_gather_with_grad)(
        image_features=image_f, video_features=video_f, logit_scale=scale
    )
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.module.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, f"{out_dir}/rank{rank}.pt")


def test_two_gloo_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    per_rank = 5
    run_gloo(_ddp_worker, 2, (str(tmp_path), per_rank))

    model = LinearTowers()
    v, u = tower_inputs(2 * per_rank)
    video_f, image_f, scale = model(v, u)
    loss = InstanceContrastiveLoss()(image_features=image_f, video_features=video_f, logit_scale=scale)
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(result["loss"], loss.detach(), atol=1e-6)
        for name, p in model.named_parameters():
            assert torch.allclose(result["grads"][name], p.grad, atol=1e-6), name

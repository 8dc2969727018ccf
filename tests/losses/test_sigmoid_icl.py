"""The sigmoid pairwise form of ICL (``loss.icl_form: sigmoid``, SigLIP style): against a naive double loop, with
product masking, and across two real gloo ranks equal to one process, without an N x N matrix on any rank."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from torch.overrides import TorchFunctionMode

from rice.config import LossConfig
from rice.losses.contrastive import InstanceContrastiveLoss, SigmoidContrastiveLoss
from rice.train.task import LOSSES
from tests.distributed_utils import run_gloo
from tests.linear_towers import LinearTowers, tower_inputs


def naive_sigmoid_icl(videos, images, scale, bias, product_ids=None):
    """-1/N sum over every (clip i, image j) pair of log sigmoid(z_ij * logit_ij), one pair at a time (float64)."""
    n = len(videos)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if product_ids is not None and i != j and product_ids[i] == product_ids[j]:
                continue  # same product, not the positive: neither positive nor negative
            logit = scale**2 * sum(videos[i][k] * images[j][k] for k in range(len(videos[i]))) + bias
            z = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-z * logit))  # -log sigmoid(z * logit)
    return total / n


def _features(n, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    videos = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=-1)
    images = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=-1)
    return videos, images


def test_matches_a_naive_double_loop():
    videos, images = _features(7)
    for scale, bias in ((4.0, -10.0), (2.5, 0.0), (1.0, 3.0)):
        loss = SigmoidContrastiveLoss(bias)(image_features=images, video_features=videos,
                                            logit_scale=torch.tensor(scale, dtype=torch.float64))  # fmt: skip
        assert math.isclose(loss.item(), naive_sigmoid_icl(videos.tolist(), images.tolist(), scale, bias),
                            rel_tol=1e-12)  # fmt: skip


def test_gradients_match_the_naive_loss_written_in_torch():
    videos, images = _features(5, seed=1)
    scale = torch.tensor(3.0, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (videos, images, scale)]
    SigmoidContrastiveLoss(-4.0)(video_features=leaves[0], image_features=leaves[1], logit_scale=leaves[2]).backward()
    ref = [t.clone().requires_grad_() for t in (videos, images, scale)]
    total = sum(
        -F.logsigmoid((1.0 if i == j else -1.0) * (ref[2] ** 2 * (ref[0][i] * ref[1][j]).sum() - 4.0))
        for i in range(5)
        for j in range(5)
    )
    (total / 5).backward()
    for ours, theirs in zip(leaves, ref):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-12)


def test_pairs_of_the_same_product_are_left_out():
    videos, images = _features(6, seed=2)
    ids = torch.tensor([0, 1, 0, 2, 1, 3])
    scale = torch.tensor(2.0, dtype=torch.float64)
    loss = SigmoidContrastiveLoss(-2.0)(image_features=images, video_features=videos, logit_scale=scale,
                                        product_ids=ids)
    expected = naive_sigmoid_icl(videos.tolist(), images.tolist(), 2.0, -2.0, ids.tolist())
    assert math.isclose(loss.item(), expected, rel_tol=1e-12)
    assert not math.isclose(expected, naive_sigmoid_icl(videos.tolist(), images.tolist(), 2.0, -2.0), rel_tol=1e-6)


def test_config_selects_the_form():
    assert isinstance(LOSSES["icl"](LossConfig()), InstanceContrastiveLoss)
    sigmoid = LOSSES["icl"](LossConfig(icl_form="sigmoid", sigmoid_bias=-3.0))
    assert isinstance(sigmoid, SigmoidContrastiveLoss) and sigmoid.bias == -3.0
    with pytest.raises(ValidationError, match="icl_form"):
        LossConfig(icl_form="softplus")


class _Shapes(TorchFunctionMode):
    """Records the shape of every tensor a torch function returns while active."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


def _ddp_worker(rank, world_size, out_dir, per_rank):
    model = DistributedDataParallel(LinearTowers())
    v, u = tower_inputs(per_rank * world_size)
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    video_f, image_f, scale = model(v[sl], u[sl])
    loss_fn = LOSSES["icl"](LossConfig(icl_form="sigmoid", sigmoid_bias=-2.0))  # the training wiring: gathers
    with _Shapes() as seen:
        loss = loss_fn(image_features=image_f, video_features=video_f, logit_scale=scale)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.module.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads, "shapes": seen.shapes}, f"{out_dir}/rank{rank}.pt")


def test_two_gloo_ranks_equal_one_process_without_a_global_matrix(tmp_path):
    per_rank = 5
    run_gloo(_ddp_worker, 2, (str(tmp_path), per_rank))

    model = LinearTowers()
    v, u = tower_inputs(2 * per_rank)
    video_f, image_f, scale = model(v, u)
    loss = SigmoidContrastiveLoss(-2.0)(image_features=image_f, video_features=video_f, logit_scale=scale)
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(result["loss"], loss.detach(), atol=1e-6)
        for name, p in model.named_parameters():
            assert torch.allclose(result["grads"][name], p.grad, atol=1e-6), name
        # the biggest pairwise block a rank builds is its own clips against every image: (5, 10), never (10, 10)
        assert (per_rank, 2 * per_rank) in result["shapes"]
        assert (2 * per_rank, 2 * per_rank) not in result["shapes"]

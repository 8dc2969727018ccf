"""2-rank gloo parity of the PMD loss (real processes) against one process on the concatenated batch.

Negatives are mined over the gathered global batch, and the tokens of negatives owned by the other rank flow
back through ``all_gather_with_grad``. Expected relations (docs in PairwiseMatchingLoss):
- the mean of the per-rank losses equals the single-process loss on the 2B batch;
- each rank's input gradients equal world_size x the single-process ones (the gather backward sums over ranks;
  DDP's 1/world_size averaging removes the factor);
- the rank-average of the decoder parameter gradients (what DDP computes) equals the single-process gradients.
"""

import torch
import torch.nn.functional as F

from rice.losses.matching import PairwiseMatchingLoss
from rice.models.decoder import PairwiseMatchingDecoder
from tests.distributed_utils import run_gloo

WORLD, B, T, L, W, D = 2, 4, 3, 4, 16, 8


def _global_batch():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(WORLD * B, T, dtype=torch.bool)
    mask[1, 1:] = False
    mask[6, 2:] = False
    return dict(
        image_features=F.normalize(torch.randn(WORLD * B, D, generator=g), dim=-1),
        video_features=F.normalize(torch.randn(WORLD * B, D, generator=g), dim=-1),
        image_tokens=torch.randn(WORLD * B, L, W, generator=g),
        video_tokens=torch.randn(WORLD * B, T, L, W, generator=g),
        frame_mask=mask,
    )


def _decoder():
    torch.manual_seed(0)
    return PairwiseMatchingDecoder(W, heads=4).eval().double()


def _run(batch, decoder, loss_fn):
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    batch["image_tokens"].requires_grad_(True)
    batch["video_tokens"].requires_grad_(True)
    loss = loss_fn(**batch, decoder=decoder)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in decoder.named_parameters()}
    return loss.detach(), batch["image_tokens"].grad, batch["video_tokens"].grad, grads


def _worker(rank, world_size, out_dir):
    from rice import distributed

    local = {k: v[rank * B : (rank + 1) * B] for k, v in _global_batch().items()}
    loss_fn = PairwiseMatchingLoss(
        num_negatives=3,
        chunk_size=None,  # one decoder call for the positives (read at this rank's offset), one for the negatives
        gather_with_grad=distributed.all_gather_with_grad,
        gather_no_grad=distributed.all_gather_no_grad,
    )  # rank comes from rice.distributed.world_info()
    torch.save(_run(local, _decoder(), loss_fn), f"{out_dir}/rank{rank}.pt")


def test_two_rank_gloo_matches_single_process(tmp_path):
    run_gloo(_worker, WORLD, (str(tmp_path),))  # real gloo processes; the rendezvous port is bound first
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    loss, img_grad, vid_grad, param_grads = _run(_global_batch(), _decoder(), PairwiseMatchingLoss(3, 5, rank=0))

    torch.testing.assert_close(sum(r[0] for r in ranks) / WORLD, loss)
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]) / WORLD, img_grad)
    torch.testing.assert_close(torch.cat([r[2] for r in ranks]) / WORLD, vid_grad)
    for name, grad in param_grads.items():
        torch.testing.assert_close(sum(r[3][name] for r in ranks) / WORLD, grad, msg=name)
    # the global batch matters: some negatives of rank 0 must come from rank 1 for the test to mean anything
    local_only = _run({k: v[:B] for k, v in _global_batch().items()}, _decoder(), PairwiseMatchingLoss(3, 5, rank=0))
    assert not torch.allclose(local_only[0], ranks[0][0])

"""PFR loss: stop-gradient on the token features, gradient on the attention path, masking, naive reference."""

import math

import torch
import torch.nn.functional as F

from rice.losses.reconstruction import PatchFeatureReconstructionLoss
from rice.models.decoder import PairwiseMatchingDecoder
from tests.reference_decoder import reference_scores


def _batch(b=3, t=4, l=5, w=16, seed=0):  # noqa: E741 (l = tokens per image, as in the paper)
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 2:] = False
    return (
        torch.randn(b, l, w, generator=g, requires_grad=True),
        torch.randn(b, t, l, w, generator=g, requires_grad=True),
        mask,
    )


def test_gradient_only_on_attention_path():
    torch.manual_seed(0)
    dec = PairwiseMatchingDecoder(16, heads=4, reconstruction=True).eval()
    img, vid, mask = _batch()
    attention = dec(img, vid, mask, return_attention=True).attention.detach().requires_grad_(True)
    loss = PatchFeatureReconstructionLoss()(img, vid, mask, decoder=dec, positive_attention=attention)
    loss.backward()
    assert img.grad is None and vid.grad is None  # both feature sets are stop-gradient
    assert attention.grad is not None and attention.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.head_merge.parameters())


def test_gradient_reaches_decoder_query_key_through_attention():
    torch.manual_seed(1)
    dec = PairwiseMatchingDecoder(16, heads=4, reconstruction=True).eval()
    img, vid, mask = _batch()
    PatchFeatureReconstructionLoss(chunk_size=2)(img, vid, mask, decoder=dec).backward()
    assert dec.cross_block.attn.in_proj_weight.grad[:32].abs().sum() > 0  # Q and K rows
    assert dec.cross_block.attn.in_proj_weight.grad[32:].abs().sum() == 0  # V rows: not on the attention path
    assert dec.match_head.weight.grad is None


def test_matches_naive_reference_and_ignores_padding():
    torch.manual_seed(2)
    dec = PairwiseMatchingDecoder(16, heads=4, reconstruction=True).eval().double()
    img, vid, mask = (x.detach().double() if x.is_floating_point() else x for x in _batch())
    vid[0, 2:] = 1e3  # padded frames must not matter
    loss = PatchFeatureReconstructionLoss()(img, vid, mask, decoder=dec)
    terms = []
    for i in range(3):
        t_valid = int(mask[i].sum())
        v = vid[i : i + 1, :t_valid]
        # the attention comes from an independent forward of the decoder's weights, not from the decoder under test
        _, (attn,) = reference_scores(
            dec.state_dict(), img[i : i + 1], v, mask[i : i + 1, :t_valid], heads=4, normalize_context=False
        )  # the default (public) cross block normalises the queries only
        conv0, conv2 = dec.head_merge.convs[0], dec.head_merge.convs[2]
        a = attn * math.sqrt(4)  # (H, L, T*L), head_dim = 16 / 4
        h = F.relu(torch.einsum("oh,hqk->oqk", conv0.weight[:, :, 0, 0], a) + conv0.bias[:, None, None])
        merged = F.relu(torch.einsum("oh,hqk->oqk", conv2.weight[:, :, 0, 0], h) + conv2.bias[:, None, None])[0]
        recon = merged.softmax(-1) @ v.reshape(-1, 16)
        terms.append(((recon - img[i]) ** 2).mean())
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-10, atol=1e-10)

"""PFR with `loss.pfr_softmax: all` (the public code): the softmax runs over every key, padded frames included.

The reference is a hand loop written from the public behaviour: the cross-attention of each pair over its valid
frames (an independent decoder forward), a probability of exactly 0 for each padded key, the two 1x1 convolutions
applied key by key, a softmax as exp / sum over all T*L keys, and the padded frames' tokens set to zero.
"""

import math

import pytest
import torch

from rice.config import build_config
from rice.losses.reconstruction import PatchFeatureReconstructionLoss
from rice.models.decoder import PairwiseMatchingDecoder
from rice.train.task import LOSSES
from tests.reference_decoder import reference_scores

B, T, L, W, HEADS = 3, 4, 5, 16, 4


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 2:] = False  # a short clip: 2 of 4 frames
    mask[2, 3:] = False  # a tail-dropped clip: 3 of 4 frames
    image = torch.randn(B, L, W, generator=g, dtype=torch.float64)
    video = torch.randn(B, T, L, W, generator=g, dtype=torch.float64)
    video[~mask] = 1e3  # what the encoder gives for a padding frame is not zero: the loss must not read it
    return image, video, mask


def _decoder(seed=0):
    torch.manual_seed(seed)
    dec = PairwiseMatchingDecoder(W, heads=HEADS, reconstruction=True).eval().double()
    with torch.no_grad():  # trained biases: a padded key's merged logit is then not 0
        for conv in (dec.head_merge.convs[0], dec.head_merge.convs[2]):
            conv.bias.uniform_(0.2, 0.8)
    return dec


def _reference_loss(dec, image, video, mask) -> torch.Tensor:
    conv0, conv2 = dec.head_merge.convs[0], dec.head_merge.convs[2]
    w0, b0 = conv0.weight.detach()[:, :, 0, 0].tolist(), conv0.bias.detach().tolist()
    w1, b1 = conv2.weight.detach()[0, :, 0, 0].tolist(), float(conv2.bias.detach()[0])
    total, count = 0.0, 0
    for i in range(B):
        valid = int(mask[i].sum())
        _, (attn,) = reference_scores(
            dec.state_dict(), image[i : i + 1], video[i : i + 1, :valid], mask[i : i + 1, :valid], heads=HEADS,
            normalize_context=False,
        )  # fmt: skip
        attn = attn * math.sqrt(W // HEADS)  # (H, L, valid*L)
        tokens = [video[i, f, p] if mask[i, f] else torch.zeros(W, dtype=torch.float64)
                  for f in range(T) for p in range(L)]  # fmt: skip
        for q in range(L):
            logits = []
            for key in range(T * L):
                probs = [float(attn[h, q, key]) if key < valid * L else 0.0 for h in range(HEADS)]
                hidden = [max(0.0, sum(w0[o][h] * probs[h] for h in range(HEADS)) + b0[o]) for o in range(len(b0))]
                logits.append(max(0.0, sum(w1[o] * hidden[o] for o in range(len(b0))) + b1))
            exps = [math.exp(z) for z in logits]
            norm = sum(exps)
            recon = sum((e / norm) * tok for e, tok in zip(exps, tokens))
            total += float(((recon - image[i, q]) ** 2).sum())
            count += W
    return torch.tensor(total / count, dtype=torch.float64)


def test_all_keys_softmax_matches_a_hand_loop_of_the_public_behaviour():
    dec = _decoder()
    image, video, mask = _inputs()
    loss = PatchFeatureReconstructionLoss(softmax_keys="all")(image, video, mask, decoder=dec)
    torch.testing.assert_close(loss, _reference_loss(dec, image, video, mask), rtol=1e-9, atol=1e-9)


def test_padded_keys_take_a_share_only_in_the_public_form():
    dec = _decoder(1)
    image, video, mask = _inputs(1)
    valid = PatchFeatureReconstructionLoss(softmax_keys="valid")(image, video, mask, decoder=dec)
    public = PatchFeatureReconstructionLoss(softmax_keys="all")(image, video, mask, decoder=dec)
    assert not torch.isclose(valid, public)  # the two forms differ when clips are padded ...
    full = torch.ones(B, T, dtype=torch.bool)
    torch.testing.assert_close(  # ... and agree when no clip is
        PatchFeatureReconstructionLoss(softmax_keys="valid")(image, video, full, decoder=dec),
        PatchFeatureReconstructionLoss(softmax_keys="all")(image, video, full, decoder=dec),
    )


def test_the_setting_reaches_the_loss_and_the_default_keeps_masking():
    assert LOSSES["pfr"](build_config().loss).softmax_keys == "valid"
    assert LOSSES["pfr"](build_config(overrides=["loss.pfr_softmax=all"]).loss).softmax_keys == "all"
    with pytest.raises(ValueError, match="softmax_keys"):
        PatchFeatureReconstructionLoss(softmax_keys="padded")

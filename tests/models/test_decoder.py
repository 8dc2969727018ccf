"""PairwiseMatchingDecoder: shapes, padded-frame masking, fused vs manual attention, encoder initialisation."""

import torch

from rice.models import create_model
from rice.models.decoder import PairwiseMatchingDecoder, build_decoder, score_pairs


def _inputs(b=3, t=4, l=5, w=16, seed=0):  # noqa: E741 (l = tokens per image, as in the paper)
    g = torch.Generator().manual_seed(seed)
    image_tokens = torch.randn(b, l, w, generator=g)
    video_tokens = torch.randn(b, t, l, w, generator=g)
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    return image_tokens, video_tokens, frame_mask


def test_shapes_and_attention():
    dec = PairwiseMatchingDecoder(16, heads=4, reconstruction=True).eval()
    img, vid, mask = _inputs()
    out = dec(img, vid, mask, return_attention=True)
    assert out.scores.shape == (3,)
    assert out.attention.shape == (3, 4, 5, 4 * 5)
    assert torch.allclose(out.attention.sum(-1), torch.ones(3, 4, 5))
    assert out.scores.abs().max() <= 10.0 + 1e-5  # 10 * cos
    assert dec.merge_heads(out.attention).shape == (3, 5, 20)
    assert dec(img, vid, mask).attention is None


def test_padded_frames_change_nothing():
    torch.manual_seed(0)
    dec = PairwiseMatchingDecoder(16, heads=4).eval()
    img, vid, _ = _inputs(b=2, t=6)
    padded = torch.cat([vid, torch.randn(2, 4, 5, 16) * 100], dim=1)  # 6 real frames padded to 10 with garbage
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :6] = True
    full = dec(img, vid, torch.ones(2, 6, dtype=torch.bool), return_attention=True)
    pad = dec(img, padded, mask, return_attention=True)
    torch.testing.assert_close(pad.scores, full.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pad.attention[..., : 6 * 5], full.attention, rtol=1e-5, atol=1e-6)
    assert pad.attention[..., 6 * 5 :].abs().max() == 0
    torch.testing.assert_close(dec(img, padded, mask).scores, full.scores, rtol=1e-5, atol=1e-5)  # fused path


def test_fused_and_manual_attention_agree():
    torch.manual_seed(1)
    dec = PairwiseMatchingDecoder(32, heads=8).eval().double()
    img, vid, mask = (x.double() if x.is_floating_point() else x for x in _inputs(b=4, w=32))
    mask[1, 2:] = False
    manual = dec(img, vid, mask, return_attention=True).scores
    fused = dec(img, vid, mask).scores
    torch.testing.assert_close(manual, fused, rtol=1e-10, atol=1e-10)


def test_score_pairs_independent_of_chunk_size():
    torch.manual_seed(2)
    dec = PairwiseMatchingDecoder(16, heads=4).eval()
    img, vid, mask = _inputs(b=4)
    ii = torch.tensor([0, 1, 2, 3, 0, 3, 2])
    jj = torch.tensor([0, 1, 2, 3, 2, 1, 0])
    a = score_pairs(dec, img, vid, mask, ii, jj, chunk_size=1, return_attention=True)
    b = score_pairs(dec, img, vid, mask, ii, jj, chunk_size=5, return_attention=True)
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.attention, b.attention)


def test_init_from_encoder_blocks_and_random_for_tiny():
    vit = create_model("rice_vit_b32", pretrained=False)
    dec = build_decoder(vit.encoder, heads=8)
    blocks = vit.encoder.last_blocks(2)
    assert dec.heads == 8 and dec.width == 768
    assert torch.equal(dec.self_block.attn.in_proj_weight, blocks[0].attn.qkv.weight)
    assert torch.equal(dec.cross_block.mlp.c_proj.weight, blocks[1].mlp.fc2.weight)
    tiny = create_model("rice_tiny")
    dec_tiny = build_decoder(tiny.encoder)
    assert dec_tiny.width == tiny.encoder.width and tiny.encoder.width % dec_tiny.heads == 0


def _saved_bytes(num_pairs: int, chunk_size: int) -> int:
    """Bytes of distinct storages autograd keeps for backward while scoring ``num_pairs`` pairs."""
    torch.manual_seed(0)
    dec = PairwiseMatchingDecoder(16, heads=4)
    img, vid, mask = _inputs(b=8, t=4, l=5, w=16)
    img.requires_grad_(True)
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    index = torch.arange(num_pairs) % 8
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        scores = score_pairs(dec, img, vid, mask, index, index.flip(0), chunk_size).scores
    scores.sum().backward()  # the recomputation still gives gradients
    assert img.grad is not None and img.grad.abs().sum() > 0
    return sum(storages.values())


def test_training_memory_does_not_grow_with_the_number_of_pairs():
    # Chunks are recomputed in backward, so 8x more pairs keep about the same activations alive.
    few, many = _saved_bytes(8, 4), _saved_bytes(64, 4)
    assert many < 1.5 * few, (few, many)


def test_shared_image_and_clip_states_equal_one_call_per_pair():
    """score_pairs runs the self block once per image and the key/value projections once per clip; scores,
    attention maps and gradients equal plain decoder calls on each (image, clip) pair."""
    torch.manual_seed(3)
    dec = PairwiseMatchingDecoder(16, heads=4).eval().double()
    img, vid, mask = (x.double() if x.is_floating_point() else x for x in _inputs(b=4))
    mask[2, 1:] = False
    ii = torch.tensor([0, 1, 2, 3, 0, 0, 3, 2])
    jj = torch.tensor([0, 1, 2, 3, 2, 1, 1, 0])
    results = []
    for shared in (True, False):
        img_, vid_ = img.clone().requires_grad_(True), vid.clone().requires_grad_(True)
        if shared:
            out = score_pairs(dec, img_, vid_, mask, ii, jj, chunk_size=3, return_attention=True)
            scores, attention = out.scores, out.attention
        else:
            outs = [dec(img_[i : i + 1], vid_[j : j + 1], mask[j : j + 1], return_attention=True)
                    for i, j in zip(ii.tolist(), jj.tolist())]
            scores, attention = torch.cat([o.scores for o in outs]), torch.cat([o.attention for o in outs])
        (scores * torch.arange(1.0, 9.0, dtype=torch.float64)).sum().backward()
        results.append((scores.detach(), attention.detach(), img_.grad, vid_.grad))
    for shared, plain in zip(*results):
        torch.testing.assert_close(shared, plain, rtol=1e-10, atol=1e-10)
    with torch.enable_grad():  # the recomputed (checkpointed) path gives the same gradients
        vid_ = vid.clone().requires_grad_(True)
        (score_pairs(dec, img, vid_, mask, ii, jj, chunk_size=3).scores * torch.arange(1.0, 9.0)).sum().backward()
    torch.testing.assert_close(vid_.grad, results[1][3], rtol=1e-10, atol=1e-10)

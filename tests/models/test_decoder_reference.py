"""The PMD decoder equals an independent forward pass of its block structure (tests/reference_decoder.py)."""

import pytest
import torch

from rice.models.decoder import PairwiseMatchingDecoder, score_pairs
from tests.reference_decoder import reference_scores

B, T, L, W, HEADS = 3, 4, 5, 16, 4


def _decoder(seed: int = 0, norm_kv: bool = False) -> PairwiseMatchingDecoder:
    torch.manual_seed(seed)
    decoder = PairwiseMatchingDecoder(W, heads=HEADS, norm_kv=norm_kv).eval().double()
    with torch.no_grad():  # move the norms off their (1, 0) start, so a missing or shared LayerNorm shows
        for name, param in decoder.named_parameters():
            if "ln_" in name or "layer_norm" in name:
                param.add_(0.3 * torch.randn_like(param))
    return decoder


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    image_tokens = torch.randn(B, L, W, generator=g, dtype=torch.float64)
    # clip tokens on another scale than the image tokens, as pre-final-norm encoder outputs of frames can be
    video_tokens = 3.0 * torch.randn(B, T, L, W, generator=g, dtype=torch.float64) + 1.0
    frame_mask = torch.ones(B, T, dtype=torch.bool)
    frame_mask[0, 2:] = False
    frame_mask[2, 1:] = False
    video_tokens[~frame_mask] = 1e4  # padded frames hold garbage: they must not matter
    return image_tokens, video_tokens, frame_mask


@pytest.mark.parametrize("norm_kv", [False, True], ids=["public-queries-only", "norm-kv"])
def test_decoder_equals_the_reference_forward_of_its_block_structure(norm_kv):
    decoder = _decoder(norm_kv=norm_kv)
    image_tokens, video_tokens, frame_mask = _inputs()
    expected, expected_attention = reference_scores(
        decoder.state_dict(), image_tokens, video_tokens, frame_mask, HEADS, normalize_context=norm_kv
    )
    for return_attention in (False, True):  # the fused and the manual attention paths
        out = decoder(image_tokens, video_tokens, frame_mask, return_attention=return_attention)
        torch.testing.assert_close(out.scores, expected, rtol=1e-9, atol=1e-9)
    for b in range(B):  # attention over the real frames equals the reference; padded keys get exactly zero
        real = int(frame_mask[b].sum()) * L
        torch.testing.assert_close(out.attention[b, ..., :real], expected_attention[b], rtol=1e-9, atol=1e-9)
        assert not out.attention[b, ..., real:].any()
    chunked = score_pairs(decoder, image_tokens, video_tokens, frame_mask, torch.arange(B), torch.arange(B), 2)
    torch.testing.assert_close(chunked.scores, expected, rtol=1e-9, atol=1e-9)


def test_norm_kv_changes_the_cross_block_clearly():
    """The public cross block normalises the queries only (the default); ``norm_kv=True`` sends the clip tokens
    through ln_1 too. The two structures must differ clearly on these inputs, so the test above tells them apart
    (a decoder that dropped or added the clip-token LayerNorm fails it)."""
    image_tokens, video_tokens, frame_mask = _inputs()
    for norm_kv in (False, True):
        decoder = _decoder(norm_kv=norm_kv)
        both, _ = reference_scores(decoder.state_dict(), image_tokens, video_tokens, frame_mask, HEADS)
        queries_only, _ = reference_scores(
            decoder.state_dict(), image_tokens, video_tokens, frame_mask, HEADS, normalize_context=False
        )
        assert (both - queries_only).abs().max() > 0.05, (both, queries_only)
        scores = decoder(image_tokens, video_tokens, frame_mask).scores
        other = queries_only if norm_kv else both
        assert (scores - other).abs().max() > 0.05

"""`model.match_head_init: linear_default` (the public code): the PMD match vector w keeps nn.Linear's own init.

The reference is the distribution nn.Linear(768, 1) documents, U(-1/sqrt(768), 1/sqrt(768)), checked on the
decoder the recipe builds (width 768): the bound, a Kolmogorov-Smirnov distance to that uniform law over 20 seeds,
and the norm (about sqrt(1/3) = 0.58, where rice's N(0, 768^-1/2) gives about 1).
"""

from __future__ import annotations

import math

import pytest
import torch

from rice.config import build_config
from rice.models.decoder import PairwiseMatchingDecoder

WIDTH, SEEDS = 768, 20


def _vectors(init: str) -> torch.Tensor:
    rows = []
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        rows.append(PairwiseMatchingDecoder(WIDTH, heads=8, match_head_init=init).match_head.weight.detach()[0])
    return torch.stack(rows)  # (SEEDS, WIDTH)


def test_linear_default_is_nn_linears_uniform_law():
    w = _vectors("linear_default")
    bound = 1 / math.sqrt(WIDTH)
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    sample = w.flatten().sort().values
    n = sample.numel()
    cdf = (sample + bound) / (2 * bound)  # the uniform law's CDF at each sorted value
    ranks = torch.arange(1, n + 1, dtype=sample.dtype) / n
    ks = torch.maximum((ranks - cdf).abs(), (ranks - 1 / n - cdf).abs()).max()
    assert ks < 1.63 / math.sqrt(n)  # the 1% critical value of the KS statistic
    norms = w.norm(dim=1)
    assert ((norms > 0.53) & (norms < 0.63)).all(), norms


def test_rices_default_is_normal_with_norm_about_one():
    w = _vectors("normal")
    norms = w.norm(dim=1)
    assert ((norms > 0.9) & (norms < 1.1)).all(), norms
    assert w.abs().max() > 1 / math.sqrt(WIDTH)  # not bounded like the uniform law


def test_the_setting_reaches_the_decoder():
    from rice.models import build_model

    for overrides, expected in (([], "normal"), (["model.match_head_init=linear_default"], "linear_default")):
        cfg = build_config(overrides=["model.name=rice_tiny", *overrides])
        assert cfg.model.match_head_init == expected
    cfg = build_config(overrides=["model.name=rice_tiny", "model.match_head_init=linear_default"])
    torch.manual_seed(0)
    w = build_model(cfg.model, with_decoder=True).decoder.match_head.weight
    assert w.abs().max() <= 1 / math.sqrt(w.shape[1])  # the uniform law's bound for the tiny model's width
    with pytest.raises(ValueError, match="match_head_init"):
        PairwiseMatchingDecoder(16, heads=4, match_head_init="zeros")

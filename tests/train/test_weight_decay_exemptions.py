"""`optim.decay_exempt: bias` (the public code): only parameters whose name contains "bias" skip weight decay.

The reference is the public rule written per parameter, as its optimizer builder does: one dict per named
parameter, weight decay 0 when the name contains any of "bias", "LayerNorm.bias", "LayerNorm.weight", else the
configured decay. Checked on the recipe's model (CLIP ViT-B/32 layout, random weights) with the PMD decoder and PFR's
convolutions, parameter by parameter.
"""

from __future__ import annotations

import pytest

from rice.config import build_config
from rice.models import build_model
from rice.train.optim import build_optimizer

PUBLIC_NO_DECAY = ["bias", "LayerNorm.bias", "LayerNorm.weight"]


@pytest.fixture(scope="module")
def recipe_model():
    cfg = build_config("movingfashion_rice", overrides=["model.pretrained=false"])
    return cfg, build_model(cfg.model, with_decoder=True, with_reconstruction=True)


def _per_parameter(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def test_public_exemptions_match_the_public_rule_parameter_by_parameter(recipe_model):
    cfg, model = recipe_model
    assert cfg.optim.decay_exempt == "bias"  # the recipe sets it
    got = _per_parameter(build_optimizer(model, cfg.optim))
    named = list(model.named_parameters())
    assert len(got) == len(named)  # every parameter in exactly one group
    for name, param in named:
        expected = 0.0 if any(nd in name for nd in PUBLIC_NO_DECAY) else cfg.optim.weight_decay
        assert got[id(param)][1] == expected, name
    decayed = {name for name, p in named if got[id(p)][1] > 0}
    # what the public code decays and rice's default does not: norm weights, embeddings, the pooler's norm
    for name in ("encoder.backbone.pos_embed", "encoder.backbone.cls_token", "encoder.backbone.blocks.0.norm1.weight",
                 "encoder.backbone.norm_pre.weight", "decoder.pooler.layer_norm.weight", "logit_scale"):
        assert name in decayed, name
    assert not any("bias" in name for name in decayed)


def test_default_exempts_vectors_and_embeddings_and_learning_rates_do_not_change(recipe_model):
    cfg, model = recipe_model
    ours = cfg.optim.model_copy(update={"decay_exempt": "vectors_and_embeddings"})
    got, public = _per_parameter(build_optimizer(model, ours)), _per_parameter(build_optimizer(model, cfg.optim))
    for name, param in model.named_parameters():
        assert got[id(param)][0] == public[id(param)][0], name  # the same learning rate in both forms
        if name in ("encoder.backbone.pos_embed", "encoder.backbone.cls_token") or (
            param.ndim < 2 and name != "logit_scale"
        ):
            assert got[id(param)][1] == 0.0, name
        else:
            assert got[id(param)][1] == cfg.optim.weight_decay, name
    assert build_config().optim.decay_exempt == "vectors_and_embeddings"

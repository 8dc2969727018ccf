"""The bundled public-code recipes set every replica setting to the public code's value; rice's defaults (and the
CPU recipe) keep rice's behaviour. Each setting's behaviour is tested against a naive reference of the public code
in its own module (tests/losses/test_pfr_padded_keys.py, tests/data/test_train_frame_sampling.py, ...)."""

from __future__ import annotations

import pytest

from rice.config import RunConfig, build_config

PUBLIC_RECIPES = ["movingfashion_icl", "movingfashion_icl_pmd", "movingfashion_rice", "lpr750k_rice"]

# dotted setting -> (the public code's value, rice's default)
REPLICA_SETTINGS = {
    "loss.pfr_softmax": ("all", "valid"),
    "data.train_frame_sampling": ("official", "jitter"),
    "eval.precision": ("fp32", "auto"),
    "optim.decay_exempt": ("bias", "vectors_and_embeddings"),
    "model.match_head_init": ("linear_default", "normal"),
}
MOVINGFASHION_ONLY = {"data.shared_video_gt": ("official", "any")}  # LPR has no video listed by two products


def _get(cfg: RunConfig, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


@pytest.mark.parametrize("recipe", PUBLIC_RECIPES)
def test_every_public_recipe_sets_the_public_value(recipe):
    cfg = build_config(recipe)
    settings = {**REPLICA_SETTINGS, **(MOVINGFASHION_ONLY if recipe.startswith("movingfashion") else {})}
    wrong = {k: _get(cfg, k) for k, (public, _) in settings.items() if _get(cfg, k) != public}
    assert not wrong, f"{recipe}: not the public code's value: {wrong}"


def test_defaults_and_the_cpu_recipe_keep_rices_behaviour():
    for cfg in (build_config(), build_config("cpu_tiny")):
        settings = {**REPLICA_SETTINGS, **MOVINGFASHION_ONLY}
        wrong = {k: _get(cfg, k) for k, (_, ours) in settings.items() if _get(cfg, k) != ours}
        assert not wrong, f"not rice's default: {wrong}"


@pytest.mark.parametrize("recipe", PUBLIC_RECIPES)
def test_public_recipes_evaluate_without_autocast_on_a_gpu(recipe):
    from rice.retrieval.evaluate import autocast_dtype

    assert autocast_dtype(build_config(recipe).eval.precision, "cuda") is None  # plain fp32, as the public scripts
    assert autocast_dtype(build_config().eval.precision, "cuda") is not None  # rice's default: bf16 on CUDA


def test_readme_names_every_replica_setting_with_both_values():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## What matches the paper, what differs") : readme.index("## Licence")]
    for dotted, (public, ours) in {**REPLICA_SETTINGS, **MOVINGFASHION_ONLY}.items():
        assert f"`{dotted}: {public}`" in section, dotted
        assert f"`{dotted}: {ours}`" in section, dotted

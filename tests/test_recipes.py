"""The bundled recipes: `rice recipes` lists them, the CPU recipe is the hard demo's, `train.amp: native`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rice.cli import app
from rice.config import BUNDLED_CONFIGS, TrainConfig, build_config, bundled_configs

runner = CliRunner()


def test_rice_recipes_lists_every_bundled_recipe_with_what_it_is():
    result = runner.invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    names = bundled_configs()
    assert "cpu_tiny" in names and len(names) == len(list(BUNDLED_CONFIGS.glob("*.yaml")))
    for name in names:
        assert name in result.output
    assert "The CPU recipe" in result.output  # the first sentence of cpu_tiny.yaml's comment


def test_the_cpu_recipe_is_the_hard_demos_and_sets_what_the_docs_say(tmp_path):
    from rice.train.demo import HARD_STEPS, demo_config

    recipe = build_config("cpu_tiny")
    demo = demo_config(tmp_path, tmp_path / "data", HARD_STEPS, hard=True)
    # the demo trains with the file itself: everything but where it reads and writes is equal
    assert demo.model == recipe.model and demo.loss == recipe.loss and demo.eval == recipe.eval
    assert demo.data.model_copy(update={"root": None}) == recipe.data.model_copy(update={"root": None})
    assert demo.train.model_copy(update={"out": recipe.train.out}) == recipe.train
    d, t = recipe.data, recipe.train
    assert (recipe.model.name, recipe.model.pretrained) == ("rice_tiny", False)
    assert (d.color_jitter, d.clip_crops, d.crop_scale, d.shop_augment) == (0.4, "frame", (0.5, 1.0), "crop_flip")
    assert (d.num_frames, recipe.eval.num_frames, d.workers, d.decoded_cache_mb) == (4, 10, 0, 256)
    assert (t.batch_size, t.max_steps, t.amp) == (16, 2000, "native")


def test_native_precision_is_bf16_on_gpu_and_on_cpus_with_bf16_units_only():
    from rice.train.engine import autocast_dtype, cpu_has_native_bf16

    cfg = TrainConfig(amp="native")
    assert autocast_dtype(cfg, torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(cfg, torch.device("cpu")) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert autocast_dtype(TrainConfig(amp="auto"), torch.device("cpu")) is None  # auto keeps fp32 on the CPU


def test_rice_train_config_cpu_tiny_trains_and_saves_the_recipe(synthetic_root, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", "cpu_tiny", "--dataset", "movingfashion", "--root",
                                 str(synthetic_root), "--out", str(out), "--max-steps", "2",
                                 "--batch-size", "4"])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["color_jitter"] == 0.4 and saved["train"]["amp"] == "native"
    assert saved["train"]["max_steps"] == 2 and Path(saved["data"]["root"]) == Path(synthetic_root).resolve()
    assert (out / "last.pt").is_file()


@pytest.mark.parametrize("name", bundled_configs())
def test_every_bundled_recipe_loads(name):
    build_config(name)

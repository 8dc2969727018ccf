"""CLI and API conventions (issue 10, item 7): --version, --precision, dataset names, help text, no fake
pretrained weights, a callable preprocess."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from rice.cli import app
from rice.config import DataConfig, build_config
from rice.data import build_transform
from rice.models import create_model

runner = CliRunner()


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_version_flag():
    import rice

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"rice {rice.__version__}"


def test_help_shows_defaults_and_config_keys():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    text = _plain(result.output)
    assert result.exit_code == 0
    assert "(default: 5000) [config: train.max_steps]" in text  # Rich used to drop the bracketed key
    assert "[config: data.root]" in text and "[config: train.amp]" in text


def test_no_help_text_shows_a_markup_escape():
    """Help is plain click output: a Rich escape (``\\[config: ...]``) would be printed as typed."""
    import typer

    root = typer.main.get_command(app)
    commands = [[name] for name in root.commands]
    commands += [[name, sub] for name, group in root.commands.items() for sub in getattr(group, "commands", {})]
    for args in commands:
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "\\[" not in result.output, (args, result.output)


def test_the_generated_flag_help_matches_the_config_fields():
    from rice.cli.flag_help import HELP
    from rice.config import flag_help_table

    assert HELP == flag_help_table(), (
        "rice/cli/flag_help.py is stale: run python -c 'import rice.config as c; c.write_flag_help()'"
    )


def test_precision_flag_checks_its_value():
    result = runner.invoke(app, ["train", "--precision", "fp8", "--max-steps", "1"])
    assert result.exit_code == 2 and "--precision 'fp8' is unknown" in result.output


def test_dataset_names_are_one_set():
    assert DataConfig(dataset="lpr750k").dataset == "lpr" and DataConfig(dataset="lpr4m").dataset == "lpr"
    assert build_config(data__dataset="lpr4m").data.dataset == "lpr"
    with pytest.raises(ValueError):
        DataConfig(dataset="imagenet")


def test_tiny_model_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="rice_tiny has no pretrained weights"):
        create_model("rice_tiny", pretrained=True)
    assert build_config(model__name="rice_tiny").model.pretrained is False  # its recipe: from scratch


def test_preprocess_is_callable_on_a_pil_image():
    model = create_model("rice_tiny")
    array = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    out = model.preprocess(Image.fromarray(array))
    pre = model.preprocess
    expected = build_transform(pre.input_size, False, pre.mean, pre.std, pre.resize_size)(Image.fromarray(array))
    assert out.shape == (3, 64, 64) and torch.equal(out, expected)
    with torch.no_grad():
        assert model.eval().encode_image(out[None]).shape == (1, model.embed_dim)

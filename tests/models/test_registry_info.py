"""The registry's catalogue (what `rice models` prints without building anything) equals real builds."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from rice.cli import app
from rice.models import create_model, list_models, model_info, register_model


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_catalogue_matches_a_build(name):
    info = model_info(name)
    if name.endswith("_tiny"):
        model = create_model(name, pretrained=False)  # cheap: build for real
    else:
        with torch.device("meta"):  # shapes only, nothing allocated: the big ones cost no memory or time
            model = create_model(name, pretrained=False)
    assert (info.params, info.input_size, info.embed_dim) == (
        _count(model),
        model.preprocess.input_size,
        model.embed_dim,
    )
    size = info.input_size
    with torch.device("cpu" if name.endswith("_tiny") else "meta"), FlopCounterMode(display=False) as counter:
        model.encode_image(torch.zeros(1, 3, size, size))  # on meta: shapes only, the count is exact and free
    assert info.gflops == pytest.approx(counter.get_total_flops() / 1e9, rel=0.005, abs=5e-5)


def test_models_command_prints_the_catalogue():
    out = CliRunner().invoke(app, ["models"]).output
    for name in list_models():
        assert name in out
    assert f"{model_info('rice_vit_b32').params / 1e6:.2f}" in out  # 87.85
    assert "GFLOPs" in out and f"{model_info('rice_dinov2_b14').gflops:.2f}" in out  # 47.08


def test_built_in_variant_without_catalogue_entry_is_refused():
    def rice_unlisted():
        raise AssertionError("never built")

    rice_unlisted.__module__ = "rice.models.rice_model"
    with pytest.raises(ValueError, match="BUILTIN_MODELS"):
        register_model(rice_unlisted)

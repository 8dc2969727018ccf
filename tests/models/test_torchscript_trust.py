"""A TorchScript --pretrained-file runs code when loaded: only OpenAI's ViT-B-32.pt (by sha256) or an explicit
--trust-torchscript gets it read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rice.models.clip_weights import OPENAI_VIT_B32_SHA256, read_pretrained_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


class _Crafted(torch.nn.Module):
    """Loading this archive runs ``__setstate__``: it prints a marker and multiplies the weights by 7."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("CRAFTED-SETSTATE-RAN")
        self.weight = state[0] * 7
        self.training = state[1]


@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    path = tmp_path / "ViT-B-32.pt"  # the name of the real file: the name proves nothing
    torch.jit.script(_Crafted()).save(str(path))
    return path


def test_crafted_torchscript_is_refused_without_running_its_code(crafted: Path, capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="TorchScript archive.*--trust-torchscript.*state_dict\\(\\)") as info:
        read_pretrained_state_dict(crafted, torch.nn.Identity())
    assert "\n" not in str(info.value) and OPENAI_VIT_B32_SHA256[:12] in str(info.value)
    assert "CRAFTED-SETSTATE-RAN" not in capfd.readouterr().out


def test_crafted_torchscript_loads_when_trusted(crafted: Path, capfd: pytest.CaptureFixture) -> None:
    state = read_pretrained_state_dict(crafted, torch.nn.Identity(), trust_torchscript=True)
    assert torch.equal(state["weight"], torch.full((2, 2), 7.0))  # __setstate__ did run: the user asked for it
    assert "CRAFTED-SETSTATE-RAN" in capfd.readouterr().out


def test_trust_flag_reaches_the_model_config(crafted: Path) -> None:
    from rice.config import build_config

    cfg = build_config(base={"model": {"name": "rice_tiny", "pretrained_file": str(crafted)}},
                       model__trust_torchscript=True)
    assert cfg.model.trust_torchscript is True
    assert build_config().model.trust_torchscript is False

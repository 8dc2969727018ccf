"""AdamW's implementation (issue 24, item 5): fused on CUDA, torch's default on the CPU, kept across a resume."""

from __future__ import annotations

import pytest
import torch

from rice.config import build_config
from rice.models import build_model
from rice.train.optim import adamw_kernel, build_optimizer, keep_kernel_on_load


def _model_and_cfg():
    cfg = build_config(model__name="rice_tiny", model__pretrained=False)
    torch.manual_seed(0)
    return build_model(cfg.model, with_decoder=False, with_reconstruction=False), cfg


def _fake_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=gen).to(param.device)
    optimizer.step()


def test_fused_is_chosen_only_when_every_parameter_is_on_cuda():
    assert adamw_kernel({"cuda"}) == {"fused": True}
    assert adamw_kernel({"cpu"}) == {}
    assert adamw_kernel({"cuda", "cpu"}) == {}  # fused refuses a mix: keep the default
    assert adamw_kernel({"meta"}) == {}


def test_cpu_optimizer_is_torchs_default_adamw():
    """On the CPU nothing changes: the groups carry torch's default (fused and foreach unset) and two steps give
    bit-identical parameters to a plain AdamW built from the same groups."""
    model, cfg = _model_and_cfg()
    reference_model, _ = _model_and_cfg()
    optimizer = build_optimizer(model, cfg.optim)
    assert optimizer.defaults["fused"] is None and optimizer.defaults["foreach"] is None
    assert all(g["fused"] is None and g["foreach"] is None for g in optimizer.param_groups)
    by_id = dict(zip((id(p) for p in model.parameters()), reference_model.parameters(), strict=True))
    groups = [{**{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
               "params": [by_id[id(p)] for p in g["params"]]} for g in optimizer.param_groups]  # fmt: skip
    reference = torch.optim.AdamW(groups, betas=cfg.optim.betas, eps=cfg.optim.eps)
    for seed in (1, 2):
        _fake_step(model, optimizer, seed)
        _fake_step(reference_model, reference, seed)
    for ours, theirs in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def _fused_twin(optimizer: torch.optim.Optimizer) -> torch.optim.AdamW:
    """A fused AdamW over the same groups (CPU fused AdamW stands in for CUDA's: the same flag, the same rule for
    where the step counters live), with the build's load hook."""
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in optimizer.param_groups]
    twin = torch.optim.AdamW(groups, fused=True)
    keep_kernel_on_load(twin)
    return twin


def test_loading_a_checkpoint_keeps_the_kernel_of_this_build():
    """A checkpoint's groups name the kernel of the run that saved it; the loaded optimizer keeps its own."""
    model, cfg = _model_and_cfg()
    default = build_optimizer(model, cfg.optim)
    _fake_step(model, default, 1)
    fused = _fused_twin(default)
    _fake_step(model, fused, 2)
    saved_default, saved_fused = default.state_dict(), fused.state_dict()
    assert all(g["fused"] is None for g in saved_default["param_groups"])
    assert all(g["fused"] is True for g in saved_fused["param_groups"])

    # a default-kernel checkpoint (a CPU run, or one saved before fused AdamW) into a fused build: stays fused
    resumed = _fused_twin(default)
    resumed.load_state_dict(saved_default)
    assert all(g["fused"] is True and g["foreach"] is None for g in resumed.param_groups)
    assert all(s["step"].dtype == torch.float32 for s in resumed.state.values())
    _fake_step(model, resumed, 3)

    # a fused checkpoint into the CPU build: back to torch's default, step counters on the CPU
    cpu = build_optimizer(model, cfg.optim)
    cpu.load_state_dict(saved_fused)
    assert all(g["fused"] is None and g["foreach"] is None for g in cpu.param_groups)
    assert all(s["step"].device.type == "cpu" for s in cpu.state.values())
    _fake_step(model, cpu, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_build_is_fused_and_steps():
    model, cfg = _model_and_cfg()
    model = model.cuda()
    optimizer = build_optimizer(model, cfg.optim)
    assert all(g["fused"] is True for g in optimizer.param_groups)
    _fake_step(model, optimizer, 1)
    assert all(s["step"].device.type == "cuda" for s in optimizer.state.values())

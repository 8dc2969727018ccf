"""`train.compile`: the engine trains through torch.compile, and the compiled run takes the same steps as eager.

The test uses the ``aot_eager`` backend (the graph capture and autograd tracing of torch.compile, no C++ compiler
needed) so it runs on any CI machine; the GPU script (`benchmarks/gpu.py`) times the default inductor backend.
"""

import pytest
import torch
import torch._dynamo

from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit
from tests.train.test_training_behaviour import run_config


@pytest.mark.parametrize(
    "extra", [[], ["train.grad_cache=true", "train.grad_cache_chunk=2"]], ids=["plain", "grad_cache"]
)
def test_train_compile_runs_the_steps_through_torch_compile_and_matches_eager(synthetic_root, tmp_path, extra):
    eager = read_checkpoint(fit(run_config(synthetic_root, tmp_path / "eager", "train.max_steps=2", *extra)))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled_cfg = run_config(synthetic_root, tmp_path / "compiled", "train.max_steps=2", "train.compile=true",
                              "train.compile_backend=aot_eager", *extra)  # fmt: skip
    compiled = read_checkpoint(fit(compiled_cfg))
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert frames > 0, "train.compile=true but no graph went through torch.compile"
    assert compiled["step"] == eager["step"] == 2
    for name, value in eager["model"].items():
        torch.testing.assert_close(compiled["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)

"""`train.compile_cache`: a second process compiling the same regions loads them from the cache directory.

Inductor (the only backend with these caches) compiles C++ on the CPU: the first run compiles rice_tiny's block
once (a minute at most on two cores), the second, a fresh process, must find every graph in the cache (FX graph
cache and AOT autograd cache hits, no miss) and compute the same embedding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rice.models import create_model

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
import torch
from torch._dynamo.utils import counters
from rice.models import create_model
from rice.train.compile import compile_regions, use_compile_cache

use_compile_cache(sys.argv[1])
torch.manual_seed(0)
model = create_model("rice_tiny", pretrained=False).eval()
compile_regions(model, "inductor")
with torch.no_grad():
    embedding = model.encode_image(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
print(json.dumps({"inductor": dict(counters["inductor"]), "aot_autograd": dict(counters["aot_autograd"]),
                  "embedding": embedding.tolist()}))
"""


def compile_in_a_new_process(cache: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TORCHINDUCTOR_")}
    env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"  # no pool of compile workers for one small graph on two cores
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cache)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_restarted_run_loads_the_compiled_regions_from_the_cache(tmp_path) -> None:
    cache = tmp_path / "compile-cache"
    first = compile_in_a_new_process(cache)
    assert first["inductor"].get("fxgraph_cache_miss", 0) >= 1 and not first["inductor"].get("fxgraph_cache_hit")
    assert any(cache.iterdir())  # the graphs went to the directory asked for

    second = compile_in_a_new_process(cache)
    assert second["inductor"].get("fxgraph_cache_hit", 0) >= 1
    assert second["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert second["aot_autograd"].get("autograd_cache_hit", 0) >= 1
    assert second["aot_autograd"].get("autograd_cache_miss", 0) == 0

    torch.manual_seed(0)
    eager = create_model("rice_tiny", pretrained=False).eval()
    with torch.no_grad():
        expected = eager.encode_image(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    for run in (first, second):
        torch.testing.assert_close(torch.tensor(run["embedding"]), expected, rtol=1e-4, atol=1e-5)

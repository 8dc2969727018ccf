"""benchmarks/gpu.py's table of bf16 peaks tells the SXM cards from the NVL and PCIe parts of the same name, and
its MFU uses the fixed analytic count (issue 24), so a step that drops redundant work cannot report less."""

import pytest

from tests.benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def gpu():
    with benchmark_module("gpu") as module:
        yield module


@pytest.mark.parametrize(
    "device_name,peak",
    [("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12), ("NVIDIA H100 80GB HBM3", 989e12),
     ("NVIDIA H100 NVL", 835e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA A100-SXM4-80GB", 312e12),
     ("NVIDIA GeForce RTX 4090", None)],
)  # fmt: skip
def test_the_peak_of_each_card(gpu, device_name, peak):
    assert gpu.bf16_peak(device_name) == peak


def test_mfu_is_taken_over_the_fixed_count(gpu):
    assert gpu.TRAIN_GFLOP_PER_CLIP == 303.0

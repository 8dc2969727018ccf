import os

import pytest
import torch

# Keep the suite polite on a 2-core CI machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic MovingFashion-layout dataset shared by the end-to-end tests."""
    from rice.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, num_products=12, videos_per_product=1, frames=8, size=32, seed=3)

"""Two linear towers and a learnable scale: the smallest model whose gathered-loss gradients the two-rank ICL tests
(tests/losses/test_contrastive.py, test_same_product.py) compare with one process."""

import torch
import torch.nn.functional as F


class LinearTowers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.video = torch.nn.Linear(12, 8)
        self.image = torch.nn.Linear(12, 8)
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, v, u):
        return F.normalize(self.video(v), dim=-1), F.normalize(self.image(u), dim=-1), self.scale


def tower_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded (video, image) input rows, the same in every process."""
    gen = torch.Generator().manual_seed(42)
    return torch.randn(n, 12, generator=gen), torch.randn(n, 12, generator=gen)

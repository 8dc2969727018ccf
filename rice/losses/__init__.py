"""Losses: plain nn.Modules that take named tensors and return a scalar."""

from rice.losses.contrastive import InstanceContrastiveLoss

__all__ = ["InstanceContrastiveLoss"]

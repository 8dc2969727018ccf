"""Losses: plain nn.Modules that take named tensors and return a scalar."""

from rice.losses.contrastive import InstanceContrastiveLoss
from rice.losses.matching import PairwiseMatchingLoss
from rice.losses.reconstruction import PatchFeatureReconstructionLoss

__all__ = ["InstanceContrastiveLoss", "PairwiseMatchingLoss", "PatchFeatureReconstructionLoss"]

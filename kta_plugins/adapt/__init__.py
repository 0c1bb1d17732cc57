"""Domain adaptation as plugins: DANN, Deep CORAL, MMD (DAN), CDAN, paired feature matching,
and Daumé's feature augmentation as a model wrapper.

Unlabeled target data reaches the plugins as described in
:mod:`kta_plugins.adapt.target`; every alignment plugin also runs over a stream
of domains (``stream=True``, see :mod:`kta_plugins.adapt.base`).
"""
from .base import AlignmentPlugin
from .cdan import CDAN, multilinear_map
from .coral import CORAL, coral_loss
from .dann import DANN
from .feature_augmentation import FeatureAugmentation, augment
from .feature_matching import FeatureMatching
from .mmd import MMD, mmd_loss
from .target import UNLABELED, MaskedCrossEntropy, TargetSampler

__all__ = [
    "AlignmentPlugin", "CDAN", "CORAL", "DANN", "MMD", "FeatureAugmentation", "FeatureMatching",
    "MaskedCrossEntropy", "TargetSampler", "UNLABELED", "augment", "coral_loss", "mmd_loss", "multilinear_map",
]

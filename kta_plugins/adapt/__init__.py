"""Domain adaptation as plugins: DANN, Deep CORAL, MMD (DAN), CDAN, paired feature matching,
and Daumé's feature augmentation as a model wrapper; gradual self-training over unlabeled
domains (:mod:`.self_training`) and an adversary against a protected attribute (:mod:`.fair`).

Unlabeled target data reaches the plugins as described in
:mod:`kta_plugins.adapt.target`; every alignment plugin also runs over a stream
of domains (``stream=True``, see :mod:`kta_plugins.adapt.base`). Collapse guards
(:mod:`.guards`: ``CollapseWarning`` / ``CollapseError``) watch every adversarial and
alignment plugin; :mod:`.select` picks a setting without target labels (IWCV, DEV, SND,
entropy).
"""
from .base import AlignmentPlugin
from .cdan import CDAN, multilinear_map
from .coral import CORAL, coral_loss
from .dann import DANN, GaninLR
from . import select
from .fair import FairAdversary, adversary_loss, attribute_probe
from .guards import CollapseError, CollapseWarning
from .feature_augmentation import FeatureAugmentation, augment
from .feature_matching import FeatureMatching
from .mmd import MMD, mmd_loss
from .self_training import SelfTraining, pseudo_label
from .target import UNLABELED, MaskedCrossEntropy, TargetSampler

__all__ = [
    "AlignmentPlugin", "CDAN", "CORAL", "CollapseError", "CollapseWarning", "DANN", "FairAdversary", "FeatureAugmentation", "FeatureMatching", "GaninLR",
    "MMD", "MaskedCrossEntropy", "SelfTraining", "TargetSampler", "UNLABELED", "adversary_loss",
    "attribute_probe", "augment", "coral_loss", "mmd_loss", "multilinear_map", "pseudo_label",
    "select",
]

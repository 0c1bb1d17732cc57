"""Knowledge distillation: each method a loss ``nn.Module`` usable in any training loop,
wrapped by a plugin that feeds it during Avalanche training.

========== ============================ ==========================================
plugin     loss                         paper
========== ============================ ==========================================
``kd``     :class:`KDLoss`              Hinton, Vinyals & Dean 2015
``fitnets``:class:`FitNetsLoss`         Romero et al. 2015
``attention`` :class:`AttentionTransferLoss` Zagoruyko & Komodakis 2017
``rkd``    :class:`RKDLoss`             Park, Kim, Lu & Cho 2019
``dkd``    :class:`DKDLoss`             Zhao et al. 2022
``pkt``    :class:`PKTLoss`             Passalis & Tefas 2018
========== ============================ ==========================================

Every plugin takes ``teacher=`` an ``nn.Module``, a checkpoint path, or
``"previous"`` (the student at the end of the previous experience); see
:mod:`kta_plugins.distill.base`.
"""
from .attention import AttentionTransfer, AttentionTransferLoss, attention_map
from .base import DistillationPlugin, load_teacher_checkpoint
from .dkd import DKD, DKDLoss
from .fitnets import FitNets, FitNetsLoss, make_regressor
from .kd import KD, KDLoss
from .pkt import PKT, PKTLoss
from .rkd import RKD, RKDLoss, pairwise_distances, triplet_angles

__all__ = [
    "DistillationPlugin", "load_teacher_checkpoint",
    "KD", "KDLoss", "FitNets", "FitNetsLoss", "make_regressor", "AttentionTransfer", "AttentionTransferLoss",
    "attention_map", "RKD", "RKDLoss", "pairwise_distances", "triplet_angles", "DKD", "DKDLoss", "PKT", "PKTLoss",
]

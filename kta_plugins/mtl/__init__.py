"""Multi-task learning plugins (feature-table rows M2, M5-M9): loss weighting and gradient surgery.

One module per technique: :mod:`.static_weights`, :mod:`.uncertainty`
(Kendall et al. 2018), :mod:`.dwa` (Liu et al. 2019), :mod:`.gradnorm` (Chen
et al. 2018), :mod:`.pcgrad` (Yu et al. 2020), :mod:`.mgda` (Sener & Koltun
2018), :mod:`.cagrad` (Liu et al. 2021) and :mod:`.soft_sharing` (the L2 tie of
soft parameter sharing); :mod:`.quantile` (pinball loss, interval coverage and crossing of
quantile heads, Koenker & Bassett 1978) and :mod:`.affinity` (lookahead inter-task affinity and
task grouping, Fifty et al. 2021). :mod:`.terms` holds what they share: the loss terms
(per-task losses under :class:`strategies.multitask.MultiTask`; new / replay /
regularizer terms under any other strategy, M9) and per-task gradients w.r.t.
shared parameters or the shared representation. Models live in
:mod:`kta_plugins.nn.multitask`.
"""
from .affinity import TaskAffinity, lookahead_affinity, suggest_groups
from .cagrad import CAGrad, cagrad
from .dwa import DWA, dwa_weights
from .gradnorm import GradNorm, gradnorm_update
from .mgda import MGDA, min_norm_two, min_norm_weights
from .pcgrad import PCGrad, pcgrad
from .quantile import crossing_rate, interval_coverage, pinball_loss
from .soft_sharing import SoftSharingPenalty
from .static_weights import StaticWeights, check_weights
from .terms import loss_terms
from .uncertainty import Uncertainty, uncertainty_loss

__all__ = [
    "CAGrad", "cagrad", "DWA", "dwa_weights", "GradNorm", "gradnorm_update", "MGDA", "min_norm_two",
    "min_norm_weights", "PCGrad", "pcgrad", "SoftSharingPenalty", "StaticWeights", "check_weights",
    "loss_terms", "Uncertainty", "uncertainty_loss", "TaskAffinity", "lookahead_affinity", "suggest_groups",
    "pinball_loss", "interval_coverage", "crossing_rate",
]

"""Transfer learning and fine-tuning as Avalanche plugins (feature-table rows T1-T10, S7).

One module per technique: :mod:`.freeze` (freezing / linear probing),
:mod:`.gradual_unfreeze`, :mod:`.layerwise_lr`, :mod:`.lpft`, :mod:`.l2sp`,
:mod:`.kl_anchor`, :mod:`.adabn`, :mod:`.lora` (LoRA and bottleneck adapters),
:mod:`.fish` (FISH mask) and :mod:`.transferability` (LogME, LEEP, checkpoint
selection). Layers live in :mod:`kta_plugins.nn.lora`, backbones in
:mod:`kta_plugins.nn.backbones`.
"""
from .adabn import AdaBN, adapt_bn
from .fish import FishMask, fish_mask, fisher_diagonal
from .freeze import Freeze, freeze, layer_groups, unfreeze
from .gradual_unfreeze import GradualUnfreeze
from .kl_anchor import KLAnchor, kl_anchor_loss
from .l2sp import L2SP, l2sp_penalty
from .layerwise_lr import LayerwiseLR
from .lora import Adapter, LoRA
from .lpft import LPFT
from .transferability import leep, logme, score_model, select_checkpoint

__all__ = [
    "AdaBN", "adapt_bn", "FishMask", "fish_mask", "fisher_diagonal", "Freeze", "freeze", "layer_groups",
    "unfreeze", "GradualUnfreeze", "KLAnchor", "kl_anchor_loss", "L2SP", "l2sp_penalty", "LayerwiseLR",
    "Adapter", "LoRA", "LPFT", "leep", "logme", "score_model", "select_checkpoint",
]

"""A complete KTA plugin: the example of docs/plugins.md ("Write your own plugin").

    kta run --import examples/my_plugin.py --plugin l2-init:weight=0.01
"""
import torch

from kta_plugins import KTAPlugin, check_positive, register_plugin
from kta_plugins.compose import add_loss_term


@register_plugin("l2-init")
class L2Init(KTAPlugin):
    """Pull the weights towards their values when training started (an L2-SP-style regularizer).

    loss <- loss + weight * sum_i ||w_i - w_i^0||^2, with w^0 taken at the first experience.

    Args:
        weight: weight of the penalty (> 0, default 0.01).
    """

    state_attrs = ("anchor",)  # saved by state_dict(), restored by load_state_dict()

    def __init__(self, weight: float = 0.01):
        super().__init__()
        self.weight = check_positive("weight", weight)  # errors name the argument
        self.anchor = None

    def before_training_exp(self, strategy, **kwargs):
        if self.anchor is None:
            self.anchor = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}

    def before_backward(self, strategy, **kwargs):
        penalty = sum(((p - self.anchor[n]) ** 2).sum() for n, p in strategy.model.named_parameters())
        # a named term of the strategy's loss ledger (logged as train/loss/l2-init)
        add_loss_term(strategy, "l2-init", penalty, weight=self.weight, owner=self)

"""check_plugin: every KTA plugin passes it, and each broken plugin is caught by the clause it breaks."""
import random

import pytest
import torch

from kta_plugins.base import KTAPlugin, check_positive, frozen_copy
from kta_plugins.registry import PLUGINS, load_all
from kta_plugins.testing import CLAUSES, PluginContractError, check_plugin

load_all()


class GoodL2(KTAPlugin):
    """A correct plugin: an L2 penalty towards the weights the model had when training started."""

    state_attrs = ("anchor", "n_updates")

    def __init__(self, strength: float = 0.1):
        super().__init__()
        self.strength = check_positive("strength", strength)
        self.anchor = None
        self.n_updates = 0

    def before_training_exp(self, strategy, **kwargs):
        if self.anchor is None:
            self.anchor = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}

    def before_backward(self, strategy, **kwargs):
        pen = sum(((p - self.anchor[n]) ** 2).sum() for n, p in strategy.model.named_parameters())
        strategy.loss = strategy.loss + self.strength * pen

    def after_update(self, strategy, **kwargs):
        self.n_updates += 1


def test_good_plugin_passes_every_clause():
    report = check_plugin(GoodL2)
    assert all(report.passed(c) for c in CLAUSES), str(report)


class LeaksTeacher(GoodL2):
    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        self.teacher = frozen_copy(strategy.model)
        strategy.optimizer.add_param_group({"params": list(self.teacher.parameters())})


class ChangesWeightsInEval(GoodL2):
    def after_eval_forward(self, strategy, **kwargs):
        with torch.no_grad():
            next(strategy.model.parameters()).add_(1.0)


class ForgetsState(GoodL2):
    def load_state_dict(self, state):
        pass  # drops the anchor: the resumed run's penalty differs


class IgnoresSeed(GoodL2):
    def before_backward(self, strategy, **kwargs):
        super().before_backward(strategy, **kwargs)
        strategy.loss = strategy.loss + random.SystemRandom().random()


class NoKwargs(GoodL2):
    def after_update(self, strategy):
        self.n_updates += 1


class NamesNothing(KTAPlugin):
    def __init__(self, strength: float = 0.1):
        super().__init__()
        if not strength > 0:
            raise ValueError("must be positive")
        self.strength = strength


@pytest.mark.parametrize("plugin, clause", [
    (LeaksTeacher, "frozen-out-of-optimizer"),
    (ChangesWeightsInEval, "eval-is-pure"),
    (ForgetsState, "state-round-trip"),
    (IgnoresSeed, "seeded"),
    (NoKwargs, "hooks-accept-kwargs"),
    (NamesNothing, "argument-errors"),
])
def test_broken_plugins_are_caught_by_their_clause(plugin, clause):
    with pytest.raises(PluginContractError) as info:
        check_plugin(plugin, clauses=[clause])
    msg = str(info.value)
    assert f"[failed] {clause}" in msg and "expected" in msg


def test_unknown_clause_is_named():
    with pytest.raises(ValueError, match="clauses"):
        check_plugin(GoodL2, clauses=["nope"])


def _kta_plugin_names():
    names = []
    for name, factory in PLUGINS.items():
        try:
            plugin = factory(**getattr(factory, "check_args", {}))
        except Exception:  # noqa: BLE001 - a plugin whose defaults cannot build is caught below
            names.append(name)
            continue
        if isinstance(plugin, KTAPlugin):
            names.append(name)
    return names


@pytest.mark.parametrize("name", _kta_plugin_names())
def test_every_registered_kta_plugin_passes(name):
    """A plugin whose defaults need more (a layer name, a BatchNorm model) says so with
    ``check_args`` (constructor keyword arguments) and ``check_model`` (a model factory)."""
    factory = PLUGINS.get(name)
    args = getattr(factory, "check_args", {})
    check_plugin(lambda: factory(**args), constructor=factory)


# Avalanche's own plugins: which clauses they pass is a finding (README), not a reason to weaken the check.
AVALANCHE_FINDINGS = {
    "ReplayPlugin": {"state-round-trip": "failed", "argument-errors": "failed"},
    "LwFPlugin": {"state-round-trip": "failed", "argument-errors": "failed"},
    "EWCPlugin": {"state-round-trip": "failed", "argument-errors": "failed"},
}


@pytest.mark.parametrize("cls_name", sorted(AVALANCHE_FINDINGS))
def test_avalanche_plugins_report(cls_name):
    import avalanche.training.plugins as av

    cls = getattr(av, cls_name)
    defaults = {"EWCPlugin": lambda: cls(ewc_lambda=1.0)}.get(cls_name, cls)
    report = check_plugin(defaults, constructor=cls, raise_on_failure=False)
    for clause in CLAUSES:
        expected = AVALANCHE_FINDINGS[cls_name].get(clause, "passed")
        assert report.results[clause][0] == expected, str(report)


@pytest.mark.parametrize("name", ["replay", "lwf", "ewc"])
def test_kta_wrappers_of_avalanche_plugins_validate_arguments(name):
    check_plugin(PLUGINS.get(name), clauses=["trains", "argument-errors", "hooks-accept-kwargs"])

"""Loss weighting and gradient surgery: each mechanism as its paper states, on hand-made tensors."""
import math
import warnings

import pytest
import torch
from torch import nn

from kta_plugins.mtl import (
    CAGrad, DWA, GradNorm, MGDA, PCGrad, SoftSharingPenalty, StaticWeights, Uncertainty, cagrad, dwa_weights,
    gradnorm_update, min_norm_two, min_norm_weights, pcgrad, uncertainty_loss,
)
from kta_plugins.mtl.terms import redirect_gradient, task_gradients


class _S:
    """A stand-in for a strategy in the middle of an iteration."""

    def __init__(self, task_losses, tasks=None, extra=0.0):
        self.task_losses = task_losses
        self.tasks = tasks or {n: 3 for n in task_losses}
        self.loss = sum(task_losses.values()) + extra
        self.device = torch.device("cpu")


# ------------------------------------------------------------------ uncertainty
def test_uncertainty_loss_equals_kendalls_formula():
    l_cls, l_reg = torch.tensor(0.7), torch.tensor(2.5)
    s_cls, s_reg = torch.tensor(0.3), torch.tensor(-0.4)
    got = uncertainty_loss([l_cls, l_reg], [s_cls, s_reg], ["classification", "regression"])
    sig2_c, sig2_r = math.exp(0.3), math.exp(-0.4)
    # L_c / sigma_c^2 + log sigma_c  +  L_r / (2 sigma_r^2) + log sigma_r
    want = 0.7 / sig2_c + math.log(math.sqrt(sig2_c)) + 2.5 / (2 * sig2_r) + math.log(math.sqrt(sig2_r))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_uncertainty_plugin_sets_the_loss_and_learns_sigma():
    plugin = Uncertainty(init_log_var=0.5, lr=0.1)
    a = torch.tensor(2.0, requires_grad=True)
    s = _S({"points": a * 1.0, "size": a * 0.5}, {"points": 5, "size": "regression"}, extra=a * 0.0 + 0.25)
    plugin.before_backward(s)
    want = (math.exp(-0.5) * 2.0 + 0.25) + (0.5 * math.exp(-0.5) * 1.0 + 0.25) + 0.25  # + rest
    assert float(s.loss) == pytest.approx(want, rel=1e-6)
    s.loss.backward()
    plugin.after_update(s)
    # d/ds [exp(-s) L + s/2] = 1/2 - exp(-s) L < 0 for L=2: the classification sigma grows
    assert float(plugin.log_vars["points"]) > 0.5
    state = plugin.state_dict()
    fresh = Uncertainty()
    fresh.load_state_dict(state)
    assert fresh.log_vars["points"].requires_grad and float(fresh.log_vars["points"]) == float(plugin.log_vars["points"])


# ------------------------------------------------------------------ PCGrad
def test_pcgrad_projects_conflicting_gradients_exactly():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g1 . g2 = -1: conflict
    g1_pc = torch.tensor([1.0, 0.0]) - (-1.0 / 2.0) * torch.tensor([-1.0, 1.0])  # [0.5, 0.5]
    g2_pc = torch.tensor([-1.0, 1.0]) - (-1.0 / 1.0) * torch.tensor([1.0, 0.0])  # [0, 1]
    assert torch.allclose(pcgrad(g), g1_pc + g2_pc)
    assert float(g1_pc @ g[1]) == 0 and float(g2_pc @ g[0]) == 0  # each projected onto the other's normal plane
    # no conflict: gradients untouched
    h = torch.tensor([[1.0, 0.5], [0.2, 1.0]])
    assert torch.equal(pcgrad(h), h.sum(0))


def test_redirect_gradient_gives_the_shared_parameters_the_wanted_gradient():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3))
    head = nn.Parameter(torch.randn(3))
    l1, l2 = (w * torch.tensor([1.0, -2.0, 0.5])).sum() + head.sum(), (w ** 2).sum()

    class S:
        loss = l1 + l2 + 0.1 * (w ** 2).sum()

    g = task_gradients([l1, l2], [w])
    wanted = pcgrad(g)
    before = float(S.loss)
    redirect_gradient(S, [w], g.sum(0), wanted)
    assert float(S.loss) == pytest.approx(before)  # value unchanged
    S.loss.backward()
    assert torch.allclose(w.grad, wanted + 0.2 * w.detach(), atol=1e-6)  # surgery + the untouched penalty
    assert torch.allclose(head.grad, torch.ones(3))  # task-specific part keeps its gradient


# ------------------------------------------------------------------ MGDA
def test_mgda_two_task_weights_solve_the_min_norm_problem_in_closed_form():
    g1, g2 = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    a = min_norm_two(float(g1 @ g1), float(g1 @ g2), float(g2 @ g2))
    closed = float((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)))  # (g2-g1).g2 / ||g1-g2||^2
    assert a == pytest.approx(closed)
    grid = torch.linspace(0, 1, 100001)
    norms = ((grid[:, None] * g1 + (1 - grid[:, None]) * g2) ** 2).sum(1)
    assert a == pytest.approx(float(grid[norms.argmin()]), abs=1e-4)
    w = min_norm_weights(torch.stack([g1, g2]))
    assert torch.allclose(w, torch.tensor([a, 1 - a]))
    # the min-norm combination is orthogonal to g1 - g2 (first-order optimality inside (0, 1))
    d = a * g1 + (1 - a) * g2
    assert float(d @ (g1 - g2)) == pytest.approx(0, abs=1e-6)
    # one gradient dominated by the other: a clipped weight
    assert min_norm_two(1.0, 2.0, 4.0) == 1.0


def test_mgda_frank_wolfe_finds_the_min_norm_point_for_three_tasks():
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # the origin is in the hull: norm 0
    w = min_norm_weights(g.double())
    assert float((w @ g.double()).norm()) < 1e-3 and float(w.sum()) == pytest.approx(1)
    g = torch.tensor([[1.0, 0.2], [0.3, 1.0], [2.0, 2.0]])  # min norm on the edge of g1, g2
    w = min_norm_weights(g.double())
    a = min_norm_two(float(g[0] @ g[0]), float(g[0] @ g[1]), float(g[1] @ g[1]))
    assert torch.allclose(w, torch.tensor([a, 1 - a, 0.0], dtype=torch.float64), atol=1e-3)


# ------------------------------------------------------------------ GradNorm
def test_gradnorm_moves_weights_as_the_paper_states():
    # equal training rates: the task with the larger gradient norm loses weight, the other gains
    w = gradnorm_update([1.0, 1.0], grad_norms=[4.0, 1.0], loss_ratios=[0.5, 0.5], alpha=1.5, lr=0.01)
    assert w[0] < 1.0 < w[1] and sum(w) == pytest.approx(2.0)
    # equal gradient norms: the task that trains more slowly (larger L(t)/L(0)) gains weight
    w = gradnorm_update([1.0, 1.0], grad_norms=[1.0, 1.0], loss_ratios=[0.9, 0.3], alpha=1.5, lr=0.01)
    assert w[0] > 1.0 > w[1]
    # alpha = 0 and equal norms: balanced already, weights stay
    assert gradnorm_update([1.0, 1.0], [2.0, 2.0], [0.9, 0.3], alpha=0.0, lr=0.01) == pytest.approx([1.0, 1.0])


# ------------------------------------------------------------------ DWA, CAGrad, static
def test_dwa_weights_follow_the_formula():
    prev, before = {"a": 0.5, "b": 0.9}, {"a": 1.0, "b": 1.0}
    r = [0.5, 0.9]
    e = [math.exp(x / 2.0) for x in r]
    assert dwa_weights(prev, before, ["a", "b"], 2.0) == pytest.approx([2 * v / sum(e) for v in e])
    assert dwa_weights(prev, {}, ["a", "b"], 2.0) == [1.0, 1.0]  # first epochs: equal


def test_cagrad_with_zero_radius_is_the_summed_gradient_and_helps_the_worst_task():
    g = torch.tensor([[1.0, 0.0], [-0.8, 0.4]])
    assert torch.allclose(cagrad(g, c=0.0), g.sum(0), atol=1e-6)
    d = cagrad(g, c=0.5)
    assert float((g @ d).min()) > float((g @ g.sum(0)).min())  # worst task's first-order gain improves


def test_static_weights_and_their_errors():
    a = torch.tensor(1.0, requires_grad=True)
    s = _S({"x": a * 2.0, "y": a * 3.0}, extra=torch.tensor(0.5))
    StaticWeights({"y": 0.1}).before_backward(s)
    assert float(s.loss) == pytest.approx(2.0 + 0.3 + 0.5)
    with pytest.raises(ValueError, match="positive"):
        StaticWeights([0.0, 0.0])
    with pytest.raises(ValueError, match="weights"):
        StaticWeights([1.0, -1.0])
    with pytest.raises(ValueError, match="positive"):
        StaticWeights({"x": 0.0, "y": 0.0}).before_backward(_S({"x": a * 1.0, "y": a * 1.0}))
    with pytest.raises(ValueError, match="name no loss term"):
        StaticWeights({"depth": 1.0}).before_backward(_S({"x": a * 1.0}))
    with pytest.raises(ValueError, match="3 weights but there are 2 tasks"):
        StaticWeights([1.0, 1.0, 1.0]).before_backward(_S({"x": a * 1.0, "y": a * 1.0}))


@pytest.mark.parametrize("make, arg", [
    (lambda: DWA(temperature=0.0), "temperature"), (lambda: GradNorm(alpha=float("nan")), "alpha"),
    (lambda: PCGrad(wrt="weights"), "wrt"), (lambda: MGDA(normalize="loss++"), "normalize"),
    (lambda: CAGrad(c=-1.0), "c"), (lambda: SoftSharingPenalty(weight=-1.0), "weight"),
    (lambda: Uncertainty(lr=0.0), "lr"), (lambda: PCGrad(shared=3), "shared"),
])
def test_bad_arguments_name_the_argument(make, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        make()


def test_soft_sharing_penalty_is_the_l2_tie():
    from kta_plugins.nn.multitask import SoftSharing

    net = SoftSharing({"a": 3, "b": "regression"}, input_shape=(4,), hidden=(2,))
    with torch.no_grad():
        for p, q in zip(net.towers["a"].parameters(), net.towers["b"].parameters()):
            q.copy_(p + 0.5)
    n = sum(p.numel() for p in net.towers["a"].parameters())
    assert float(SoftSharingPenalty().penalty(net)) == pytest.approx(0.25 * n)
    with pytest.raises(ValueError, match="towers"):
        SoftSharingPenalty(towers="columns").penalty(net)

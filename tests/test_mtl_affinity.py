"""Inter-task affinity (TAG, Fifty et al. 2021): the lookahead formula by hand, the sign on tasks that
help / hurt each other, that measuring leaves training unchanged, the state, and network selection."""
import copy
import io
import warnings

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from kta_plugins.mtl.affinity import TaskAffinity, lookahead_affinity, suggest_groups
from scenarios.multitask import MultiTaskDataset, multitask_stream
from strategies.multitask import MultiTask

warnings.filterwarnings("ignore")


class Shared(nn.Module):
    """One shared linear map, no head parameters: every task reads the same scalar."""

    tasks = {"a": "regression", "b": "regression", "c": "regression"}

    def __init__(self):
        super().__init__()
        self.features = nn.Linear(4, 1)
        with torch.no_grad():
            self.features.weight.mul_(0.1)

    def forward(self, x):
        h = self.features(x).squeeze(-1)
        return {n: h for n in self.tasks}


def _data(n, seed):
    # a and b: the same target (they help each other); c: the opposite target (it hurts them)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    t = x @ torch.tensor([3.0, -2.0, 1.0, 2.0])
    return MultiTaskDataset(x, {"a": t, "b": t + 0.1 * torch.randn(n, generator=g), "c": -t}, Shared.tasks)


@pytest.fixture(scope="module")
def bm():
    return multitask_stream((_data(256, 0), _data(64, 1)))


def _strategy(net, plugins, epochs=1):
    return MultiTask(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), train_epochs=epochs,
                     train_mb_size=32, plugins=plugins, progress=False, seed=0)


def test_lookahead_affinity_equals_hand_computation(bm):
    class Check(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.pairs = []

        def before_backward(self, strategy, **kwargs):
            if self.pairs:
                return
            model = strategy.model
            params = list(model.features.parameters())
            names, z = lookahead_affinity(strategy, params, lr=0.05)
            y = strategy.mb_targets
            x = strategy.mb_x
            before = {n: float(((model(x)[n] - y[n]) ** 2).mean()) for n in names}
            for i, ni in enumerate(names):
                moved = copy.deepcopy(model)
                loss = ((moved(x)[ni] - y[ni]) ** 2).mean()
                grads = torch.autograd.grad(loss, list(moved.features.parameters()))
                with torch.no_grad():
                    for p, g in zip(moved.features.parameters(), grads):
                        p -= 0.05 * g
                    out = moved(x)
                for j, nj in enumerate(names):
                    hand = 1 - float(((out[nj] - y[nj]) ** 2).mean()) / before[nj]
                    self.pairs.append((float(z[i, j]), hand))

    torch.manual_seed(0)
    check = Check()
    _strategy(Shared(), [check]).train(bm.train_stream[0])
    assert len(check.pairs) == 9
    for got, hand in check.pairs:
        assert got == pytest.approx(hand, rel=1e-4, abs=1e-6)


def test_affinity_is_positive_for_helping_tasks_and_negative_for_opposing_ones(bm):
    torch.manual_seed(0)
    aff = TaskAffinity()
    _strategy(Shared(), [aff], epochs=2).train(bm.train_stream[0])
    names, z = aff.affinity()
    assert names == ["a", "b", "c"] and aff.counts["a"]["c"] == 16  # 8 iterations x 2 epochs
    a, b, c = 0, 1, 2
    assert z[a, b] > 0 and z[b, a] > 0
    assert z[a, c] < 0 and z[c, a] < 0 and z[b, c] < 0 and z[c, b] < 0
    assert suggest_groups(z, 2, names)["groups"] == [("a", "b"), ("c",)]


def test_measuring_does_not_change_training_and_state_round_trips(bm):
    def losses(plugins):
        torch.manual_seed(0)
        net = Shared()
        rec = []

        class Rec(SupervisedPlugin):
            def before_backward(self, strategy, **kwargs):
                rec.append(float(strategy.loss))

        _strategy(net, plugins + [Rec()]).train(bm.train_stream[0])
        return rec, net.features.weight.detach().clone()

    aff = TaskAffinity(every=3, lr=0.1)
    with_plugin, w1 = losses([aff])
    without, w2 = losses([])
    assert with_plugin == without and torch.equal(w1, w2)
    assert aff.n_iterations == 8 and aff.counts["a"]["b"] == 3  # iterations 1, 4, 7
    buf = io.BytesIO()
    torch.save(aff.state_dict(), buf)
    buf.seek(0)
    fresh = TaskAffinity()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.affinity()[1], aff.affinity()[1]) and fresh.affinity()[0] == ["a", "b", "c"]


def test_suggest_groups_on_a_hand_made_affinity_matrix():
    #       a     b     c     d        (row i, column j: Z_{i->j})
    z = [[0.0, 0.5, -0.3, -0.3],
         [0.5, 0.0, -0.3, -0.3],
         [-0.3, -0.3, 0.0, 0.4],
         [-0.3, -0.3, 0.4, 0.0]]
    two = suggest_groups(z, 2, ["a", "b", "c", "d"])
    assert two["groups"] == [("a", "b"), ("c", "d")] and two["score"] == pytest.approx(1.8)
    one = suggest_groups(z, 1, ["a", "b", "c", "d"])  # one network must hold every task
    assert one["groups"] == [("a", "b", "c", "d")]
    assert one["score"] == pytest.approx(2 * (0.5 - 0.6) / 3 + 2 * (0.4 - 0.6) / 3)
    # c gains from a and from b, but a and b hurt each other: overlapping groups serve c twice
    z2 = [[0.0, -0.5, 0.4], [-0.5, 0.0, 0.3], [0.15, 0.2, 0.0]]
    over = suggest_groups(z2, 2, ["a", "b", "c"])
    assert sorted(over["groups"]) == [("a", "c"), ("b", "c")] and over["served_by"]["c"] == ("a", "c")
    assert over["score"] == pytest.approx(0.15 + 0.2 + 0.4)
    part = suggest_groups(z2, 2, ["a", "b", "c"], overlap=False)  # {a, c} + {b}: 0.55 > {b, c} + {a}: 0.5
    assert sorted(part["groups"]) == [("a", "c"), ("b",)] and part["score"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="n_groups must be <= the number of tasks"):
        suggest_groups(z2, 4)
    with pytest.raises(ValueError, match="affinity must be a square"):
        suggest_groups([[0.0, 1.0]], 1)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="every"):
        TaskAffinity(every=0)
    with pytest.raises(ValueError, match="lr"):
        TaskAffinity(lr=-1.0)
    with pytest.raises(TypeError, match="shared"):
        TaskAffinity(shared=3)


def test_conv_batchnorm_trunk_trains_identically_with_the_plugin():
    # deeper trunks save their weights for backward, and batch norm keeps running statistics:
    # the lookahead must leave both alone
    from kta_plugins.nn.multitask import HardSharing
    from scenarios.multitask import stars

    bm = multitask_stream(stars(n_train=96, n_test=32, image_size=8, min_radius=2.0, max_radius=4.0, seed=0))

    def run(plugins):
        torch.manual_seed(0)
        trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                              nn.Flatten())
        net = HardSharing(bm.tasks, input_shape=bm.input_shape, trunk=trunk)
        _strategy(net, plugins).train(bm.train_stream[0])
        return {k: v.clone() for k, v in net.state_dict().items()}

    aff = TaskAffinity(lr=0.05)
    with_plugin, without = run([aff]), run([])
    assert all(torch.equal(with_plugin[k], without[k]) for k in without)
    names, z = aff.affinity()
    assert names == ["points", "size"] and bool(torch.isfinite(z).all()) and aff.counts["points"]["size"] == 3

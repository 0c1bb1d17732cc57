"""Quantile regression heads: the pinball loss (Koenker & Bassett 1978), non-crossing heads, the
coverage / crossing metrics, the MultiTask strategy's quantile metrics, and calibration end to end."""
import warnings

import pytest
import torch

from kta_plugins.mtl.quantile import crossing_rate, interval_coverage, median_index, pinball_loss
from kta_plugins.nn.multitask import HardSharing, QuantileHead, check_quantiles, resolve_quantiles
from scenarios.multitask import MultiTaskDataset, multitask_stream, stars
from strategies.multitask import MultiTask, MultiTaskLoss

warnings.filterwarnings("ignore")

LEVELS = (0.1, 0.5, 0.9)


def test_pinball_loss_equals_hand_computation():
    pred = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.5, 3.0]])
    y = torch.tensor([1.0, 0.0])
    # sample 1: u = y - q = (1, 0, -1)  -> (0.1*1, 0, 0.1*1)      = (0.1, 0, 0.1)
    # sample 2: u = (-1, -1.5, -3)      -> (0.9*1, 0.5*1.5, 0.1*3) = (0.9, 0.75, 0.3)
    expected = torch.tensor([[0.1, 0.0, 0.1], [0.9, 0.75, 0.3]])
    assert torch.allclose(pinball_loss(pred, y, LEVELS, reduction="none"), expected)
    assert float(pinball_loss(pred, y, LEVELS)) == pytest.approx(2.15 / 6)
    assert float(pinball_loss(pred, y, LEVELS, reduction="sum")) == pytest.approx(2.15)


def test_pinball_gradient_pushes_under_predictions_up_with_weight_tau():
    tau = torch.tensor(LEVELS)
    pred = torch.zeros(1, 3, requires_grad=True)
    pinball_loss(pred, torch.tensor([5.0]), LEVELS, reduction="sum").backward()
    assert torch.allclose(pred.grad[0], -tau)        # below the target: descent raises q, by tau
    pred.grad = None
    pinball_loss(pred, torch.tensor([-5.0]), LEVELS, reduction="sum").backward()
    assert torch.allclose(pred.grad[0], 1 - tau)     # above the target: descent lowers q, by 1 - tau


def test_monotone_head_never_crosses_and_free_head_can():
    torch.manual_seed(0)
    head = QuantileHead(8, (0.05, 0.25, 0.5, 0.75, 0.95))
    with torch.no_grad():
        head.linear.weight.mul_(50)
        head.linear.bias.copy_(torch.tensor([3.0, -20.0, -5.0, 10.0, -30.0]))
    q = head(torch.randn(500, 8))
    assert q.shape == (500, 5)
    assert bool((q.diff(dim=1) >= 0).all()) and crossing_rate(q) == 0.0
    free = QuantileHead(8, LEVELS, monotone=False)
    with torch.no_grad():
        free.linear.weight.zero_()
        free.linear.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))  # inverted quantiles
    assert crossing_rate(free(torch.randn(10, 8))) == 1.0


def test_coverage_and_crossing_rate_on_a_hand_example():
    pred = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [2.0, 1.0, 3.0]])
    y = torch.tensor([0.5, 1.0, 1.5, 2.5])
    # inside [q_1, q_3]: 0.5 yes, 1.0 yes (bounds included), 1.5 no, 2.5 yes -> 3 / 4
    assert interval_coverage(pred, y) == 0.75
    assert crossing_rate(pred) == 0.25  # only the last row decreases (2 -> 1)
    assert median_index(LEVELS) == 1 and median_index((0.2, 0.4, 0.9)) == 1


def test_bad_quantiles_are_clear_errors():
    with pytest.raises(ValueError, match="quantiles must be strictly increasing"):
        check_quantiles((0.9, 0.1))
    with pytest.raises(ValueError, match=r"quantiles: every quantile level must be a number in \(0, 1\)"):
        check_quantiles((0.1, 1.0))
    with pytest.raises(ValueError, match=r"\['points'\] are not regression tasks"):
        resolve_quantiles({"points": LEVELS}, {"points": 5, "size": "regression"})
    with pytest.raises(ValueError, match="task 'size': expected quantile predictions of shape"):
        MultiTaskLoss({"size": "regression"}, {"size": LEVELS})({"size": torch.zeros(4)}, {"size": torch.zeros(4)})


@pytest.fixture(scope="module")
def bm():
    return multitask_stream(stars(n_train=192, n_test=64, seed=1), n_experiences=1)


def test_strategy_reports_coverage_pinball_and_crossing(bm):
    torch.manual_seed(0)
    net = HardSharing(bm.tasks, input_shape=bm.input_shape, quantiles=LEVELS, monotone=False)
    s = MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), train_epochs=1,
                  train_mb_size=32, progress=False, seed=0)
    assert s.quantiles == {"size": LEVELS}
    s.train(bm.train_stream[0])
    res = s.eval(bm.test_stream)
    from scenarios.loaders import tensor_view

    x, _, y, _ = tensor_view(bm.test_stream[0].dataset)
    with torch.no_grad():
        q = net(x)["size"]
    assert q.shape == (64, 3)
    assert res["MTL/Coverage/test_stream/size"] == pytest.approx(interval_coverage(q, y))
    assert res["MTL/Crossing/test_stream/size"] == pytest.approx(crossing_rate(q))
    assert res["MTL/Pinball/test_stream/size"] == pytest.approx(float(pinball_loss(q, y, LEVELS)), rel=1e-5)
    assert res["MTL/MAE/test_stream/size"] == pytest.approx(float((q[:, 1] - y).abs().mean()), rel=1e-5)
    assert "MTL/Acc/test_stream/points" in res and "MTL/Coverage/test_stream/points" not in res


def test_quantile_strategy_from_the_registry_builds_quantile_heads(bm):
    from kta_plugins.nn import make_model
    from strategies.registry import STRATEGIES, load_all

    load_all()
    torch.manual_seed(0)
    net = make_model("mlp", bm.input_shape, bm.n_classes)
    s = STRATEGIES.build("quantile:quantiles=[0.2,0.5,0.8]", model=net,
                         optimizer=torch.optim.SGD(net.parameters(), lr=0.05), train_epochs=1,
                         train_mb_size=64, progress=False, seed=0)
    s.train(bm.train_stream[0])
    assert isinstance(s.model.heads["size"], QuantileHead) and s.quantiles == {"size": (0.2, 0.5, 0.8)}
    res = s.eval(bm.test_stream)
    assert 0.0 <= res["MTL/Coverage/test_stream/size"] <= 1.0 and res["MTL/Crossing/test_stream/size"] == 0.0
    with pytest.raises(ValueError, match="do not match the model's quantile heads"):
        MultiTask(model=HardSharing(bm.tasks, input_shape=bm.input_shape), optimizer=torch.optim.SGD(
            net.parameters(), lr=0.1), quantiles=LEVELS, progress=False).train(bm.train_stream[0])


def _heteroscedastic(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 2 - 1
    y = x[:, 0] + (0.05 + 0.4 * x[:, 0].abs()) * torch.randn(n, generator=g)
    return MultiTaskDataset(x, {"sign": (x[:, 0] > 0).long(), "y": y}, {"sign": 2, "y": "regression"})


def test_trained_10_90_interval_is_calibrated_on_heteroscedastic_data():
    torch.manual_seed(0)
    bm = multitask_stream((_heteroscedastic(2000, 0), _heteroscedastic(2000, 1)))
    net = HardSharing(bm.tasks, input_shape=(1,), hidden=(32, 32), quantiles=LEVELS)
    s = MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-2), train_epochs=60,
                  train_mb_size=512, progress=False, seed=0)  # large batches: steadier outer quantiles
    s.train(bm.train_stream[0])
    res = s.eval(bm.test_stream)
    assert res["MTL/Coverage/test_stream/y"] == pytest.approx(0.8, abs=0.05)
    assert res["MTL/Crossing/test_stream/y"] == 0.0
    with torch.no_grad():
        q = net(torch.tensor([[0.0], [0.9]]))["y"]
    width = q[:, 2] - q[:, 0]
    assert float(width[1]) > 2 * float(width[0])  # wider where the noise is larger

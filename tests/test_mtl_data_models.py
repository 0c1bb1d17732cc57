"""Multi-task data (stars, multi-task MNIST-1D, streams) and architectures (hard/soft sharing,
cross-stitch, MMoE)."""
import pytest
import torch
from torch import nn

from kta_plugins.nn.multitask import CrossStitch, CrossStitchUnit, HardSharing, MMoE, SoftSharing
from scenarios.loaders import tensor_view
from scenarios.multitask import MultiTaskDataset, find_tasks, multitask_mnist1d, multitask_stream, stars

TASKS = {"points": 5, "size": "regression"}


def test_stars_targets_are_the_drawn_quantities():
    tr, te = stars(n_train=200, n_test=50, seed=3)
    assert tr.x.shape == (200, 1, 16, 16) and len(te) == 50
    assert tr.tasks == TASKS
    assert set(tr.target("points").tolist()) <= set(range(5))
    size = tr.target("size")
    assert size.dtype == torch.float32 and size.min() >= -1 and size.max() <= 1
    # bigger stars cover more pixels: the size target correlates with the ink
    ink = (tr.x > 0.5).float().sum((1, 2, 3))
    assert torch.corrcoef(torch.stack([ink, size]))[0, 1] > 0.7
    again, _ = stars(n_train=200, n_test=50, seed=3)
    assert torch.equal(again.x, tr.x) and torch.equal(again.target("size"), size)


def test_multitask_mnist1d_signals_equal_mnist1d_and_scale_is_recorded():
    from scenarios.datasets import mnist1d

    tr, te = multitask_mnist1d(quantity="scale", num_samples=400)
    ref, ref_te = mnist1d(num_samples=400)
    assert torch.allclose(tr.x, ref.x) and torch.equal(tr.target("digit"), ref.y)
    q = tr.target("scale")
    assert abs(float(q.mean())) < 1e-5 and abs(float(q.std()) - 1) < 0.01  # standardised on train
    with pytest.raises(ValueError, match="quantity"):
        multitask_mnist1d(quantity="colour", num_samples=400)


def test_multitask_mnist1d_with_several_quantities():
    one, _ = multitask_mnist1d(quantity="shear", num_samples=400)
    tr, te = multitask_mnist1d(quantity="scale+shear+translation", num_samples=400)
    assert tr.tasks == {"digit": 10, "scale": "regression", "shear": "regression", "translation": "regression"}
    assert torch.equal(tr.target("shear"), one.target("shear")) and len(te.tasks) == 4
    assert list(multitask_mnist1d(quantity=["padding", "scale"], num_samples=400)[0].tasks) == \
        ["digit", "padding", "scale"]
    with pytest.raises(ValueError, match="quantity"):
        multitask_mnist1d(quantity="scale+scale", num_samples=400)


def test_stream_minibatch_carries_every_target_and_the_tasks():
    bm = multitask_stream(stars(n_train=120, n_test=40), n_experiences=2)
    assert bm.tasks == TASKS and bm.n_classes == 5 and bm.input_shape == (1, 16, 16)
    fields = tensor_view(bm.train_stream[0].dataset)
    assert [f.dtype for f in fields] == [torch.float32, torch.int64, torch.float32, torch.int64]
    assert len(fields[0]) == 60
    assert find_tasks(bm.train_stream[1].dataset) == TASKS
    with pytest.raises(ValueError, match="n_experiences"):
        multitask_stream(stars(n_train=120, n_test=40), n_experiences=2, split="classes")


def test_dataset_bad_input_is_named():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="targets"):
        MultiTaskDataset(x, {"size": torch.zeros(4)}, TASKS)
    with pytest.raises(ValueError, match="tasks"):
        MultiTaskDataset(x, {"a": torch.zeros(4)}, {"a": 1})


@pytest.mark.parametrize("cls", [HardSharing, SoftSharing, CrossStitch, MMoE])
def test_models_return_one_output_per_task(cls):
    net = cls(TASKS, input_shape=(1, 16, 16))
    out = net(torch.randn(7, 1, 16, 16))
    assert list(out) == ["points", "size"]
    assert out["points"].shape == (7, 5) and out["size"].shape == (7,)


def test_cross_stitch_at_identity_reproduces_separate_networks():
    torch.manual_seed(0)
    net = CrossStitch(TASKS, input_shape=(1, 4, 4), hidden=(8, 6), self_weight=1.0)
    assert all(torch.equal(s.alpha, torch.eye(2)) for s in net.stitches)
    x = torch.randn(5, 1, 4, 4)
    out = net(x)
    for name in TASKS:  # an independent MLP with the same weights as this task's column
        col = net.columns[name]
        separate = nn.Sequential(*col, net.heads[name].linear)  # Flatten, Linear-ReLU, Linear-ReLU, head
        assert torch.allclose(out[name], separate(x).squeeze(-1) if name == "size" else separate(x), atol=1e-6)
    # and a non-identity unit mixes the columns: the paper's 0.9 / 0.1
    unit = CrossStitchUnit(2, self_weight=0.9)
    a, b = torch.ones(3, 2), torch.zeros(3, 2)
    mixed = unit([a, b])
    assert torch.allclose(mixed[0], 0.9 * a) and torch.allclose(mixed[1], 0.1 * a)


def test_cross_stitch_with_conv_columns():
    def column():
        return [nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU()), nn.Sequential(nn.Conv1d(4, 4, 3), nn.ReLU()), nn.Flatten()]

    net = CrossStitch(TASKS, input_shape=(1, 12), column_factory=column)
    assert len(net.stitches) == 2
    out = net(torch.randn(3, 1, 12))
    assert out["points"].shape == (3, 5) and out["size"].shape == (3,)


def test_mmoe_gates_mix_experts_per_task():
    torch.manual_seed(0)
    net = MMoE(TASKS, input_shape=(1, 4, 4), n_experts=3, expert_hidden=(6,), tower_hidden=4)
    x = torch.randn(2, 1, 4, 4)
    e = torch.stack([ex(x) for ex in net.experts], 1)
    g = torch.softmax(net.gates["points"](x.flatten(1)), -1)
    expected = net.heads["points"](net.towers["points"]((g.unsqueeze(-1) * e).sum(1)))
    assert torch.allclose(net(x)["points"], expected)
    with pytest.raises(ValueError, match="n_experts"):
        MMoE(TASKS, input_shape=(1, 4, 4), n_experts=0)


def test_hard_sharing_from_backbone_reuses_the_trunk():
    from kta_plugins.nn import MLP

    mlp = MLP((1, 16, 16), 5, hidden=(12,))
    net = HardSharing.from_backbone(mlp, TASKS)
    assert net.features is mlp.features and net.feature_dim == 12
    with pytest.raises(ValueError, match="features"):
        HardSharing.from_backbone(nn.Linear(3, 3), TASKS)

"""AdaBN, FISH mask, LogME / LEEP, checkpoint selection and torchvision backbones."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from avalanche.core import SupervisedPlugin
from torch import nn

from kta_plugins.nn import MLP, SmallCNN
from kta_plugins.nn.backbones import backbone, head_name
from kta_plugins.transfer import AdaBN, FishMask, adapt_bn, fish_mask, leep, logme, select_checkpoint
from kta_plugins.transfer.fish import fisher_diagonal
from scenarios import class_incremental, domain_incremental
from scenarios.shifts import GaussianNoise, Identity
from strategies import Naive


@pytest.fixture(scope="module")
def split():
    return class_incremental("digits", n_experiences=2, seed=0)


# ------------------------------------------------------------------ AdaBN
def test_adapt_bn_moves_statistics_to_the_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(3), nn.Linear(3, 2))
    model.train()
    for _ in range(50):  # source statistics: mean 0, var 1
        model(torch.randn(32, 3))
    target = torch.randn(200, 3) * torch.tensor([2.0, 0.5, 1.0]) + torch.tensor([5.0, -3.0, 1.0])
    w = model[1].weight.detach().clone()
    adapt_bn(model, target, batch_size=64)
    bn = model[1]
    assert torch.allclose(bn.running_mean, target.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, target.var(0), atol=1e-5)
    assert torch.equal(bn.weight, w) and bn.momentum == 0.1 and model.training
    with pytest.raises(ValueError, match="model.*BatchNorm"):
        adapt_bn(nn.Linear(3, 2), target)


def test_adabn_plugin_eval_mode_adapts_and_restores():
    bm = domain_incremental("digits", [Identity(), GaussianNoise(0.5, seed=0)])
    torch.manual_seed(0)
    model = SmallCNN((1, 8, 8), 10, channels=4)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
              plugins=[AdaBN(when="eval")])
    s.train(bm.train_stream[0])
    stats = model.features[1].running_mean.clone()
    seen = []

    class Spy(SupervisedPlugin):  # observe the statistics used while evaluating the noisy domain
        def after_eval_exp(self, strategy, **kwargs):
            seen.append(strategy.model.features[1].running_mean.clone())

    s.plugins.insert(0, Spy())  # runs before AdaBN restores the statistics
    s.eval(bm.test_stream[1:])
    assert not torch.allclose(seen[0], stats)                    # adapted to the target during eval
    assert torch.equal(model.features[1].running_mean, stats)     # restored afterwards
    with pytest.raises(ValueError, match="when"):
        AdaBN(when="always")


def test_adabn_plugin_train_mode(split):
    torch.manual_seed(0)
    model = SmallCNN((1, 8, 8), 10, channels=4)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
              plugins=[AdaBN(when="train")])
    s.train(split.train_stream[0])
    assert model.features[1].num_batches_tracked > 0


# ------------------------------------------------------------------ FISH
def test_fisher_diagonal_hand_computation():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([0, 1])
    # zero weights: p = (1/2, 1/2); d log p_y / dW = (onehot(y) - p) x^T
    g1 = torch.outer(torch.tensor([0.5, -0.5]), x[0])
    g2 = torch.outer(torch.tensor([-0.5, 0.5]), x[1])
    f = fisher_diagonal(lin, x, y)["weight"]
    assert torch.allclose(f, (g1 ** 2 + g2 ** 2) / 2)
    masks = fish_mask({"w": torch.tensor([3.0, 1.0, 2.0, 0.5])}, keep_ratio=0.5)
    assert masks["w"].tolist() == [True, False, True, False]


def test_fish_changes_only_masked_entries(split):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    plugin = FishMask(keep_ratio=0.1, n_samples=64)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2),
              progress=False, plugins=[plugin], train_epochs=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    s.train(split.train_stream[0])
    total = sum(m.numel() for m in plugin.masks.values())
    kept = sum(int(m.sum()) for m in plugin.masks.values())
    assert kept == round(0.1 * total)
    n_changed = 0
    for n, p in model.named_parameters():
        moved = p.detach() != before[n]
        assert not (moved & ~plugin.masks[n]).any(), n   # nothing outside the mask moved
        n_changed += int(moved.sum())
    assert 0 < n_changed <= kept
    with pytest.raises(ValueError, match="keep_ratio"):
        FishMask(keep_ratio=0.0)
    with pytest.raises(ValueError, match="keep_ratio"):
        FishMask(keep_ratio=1.5)


# ------------------------------------------------------------------ LogME / LEEP
def _direct_evidence(f, y):
    n, d = f.shape

    def neg(logs):
        a, b = np.exp(logs)
        A = a * np.eye(d) + b * f.T @ f
        m = b * np.linalg.solve(A, f.T @ y)
        ev = (n / 2 * np.log(b) + d / 2 * np.log(a) - n / 2 * np.log(2 * np.pi)
              - b / 2 * np.sum((f @ m - y) ** 2) - a / 2 * m @ m - 0.5 * np.linalg.slogdet(A)[1])
        return -ev

    best = min((minimize(neg, x0, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
                for x0 in ([0.0, 0.0], [2.0, 2.0], [-2.0, 1.0])), key=lambda r: r.fun)
    return -best.fun / n


def test_logme_equals_direct_maximisation_of_the_evidence():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 4))
    labels = (f[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(int) + (f[:, 1] > 1).astype(int)
    direct = np.mean([_direct_evidence(f, (labels == c).astype(float)) for c in np.unique(labels)])
    assert logme(f, labels) == pytest.approx(direct, abs=1e-4)
    # informative features score higher than noise
    assert logme(f, labels) > logme(rng.normal(size=(30, 4)), labels)


def test_leep_hand_computation():
    theta = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    y = np.array([0, 1, 1])
    # P(y, z): y=0 -> [0.8, 0.2]/3 ; y=1 -> [0.8, 1.2]/3 ; P(z) = [1.6, 1.4]/3
    cond = np.array([[0.8 / 1.6, 0.2 / 1.4], [0.8 / 1.6, 1.2 / 1.4]])
    hand = np.mean([np.log(theta[i] @ cond[y[i]]) for i in range(3)])
    assert leep(theta, y) == pytest.approx(hand)
    with pytest.raises(ValueError, match="source_probs"):
        leep(np.array([[2.0, 1.0]]), np.array([0]))


def test_select_checkpoint_prefers_the_trained_model(split, tmp_path):
    torch.manual_seed(0)
    trained = MLP((1, 8, 8), 10, hidden=(32,))
    s = Naive(model=trained, optimizer=torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9),
              progress=False, train_epochs=3)
    s.train(split.train_stream[0])
    torch.manual_seed(1)
    path = tmp_path / "random.pt"
    torch.save(MLP((1, 8, 8), 10, hidden=(32,)).state_dict(), path)
    for metric in ("logme", "leep"):
        best, scores = select_checkpoint({"trained": trained, "random": str(path)}, split.train_stream[0],
                                         metric=metric, layer="features",
                                         build=lambda: MLP((1, 8, 8), 10, hidden=(32,)))
        assert best == "trained" and set(scores) == {"trained", "random"}
    with pytest.raises(ValueError, match="build"):
        select_checkpoint({"x": str(path)}, split.train_stream[0])


# ------------------------------------------------------------------ backbones
@pytest.mark.parametrize("name,head", [("resnet18", "fc"), ("densenet121", "classifier"),
                                       ("mobilenet_v3_small", "classifier.3"), ("mobilenet_v2", "classifier.1")])
def test_backbone_loads_local_checkpoint_and_replaces_head(tmp_path, name, head):
    import torchvision

    torch.manual_seed(0)
    src = torchvision.models.get_model(name)
    path = tmp_path / f"{name}.pt"
    torch.save(src.state_dict(), path)
    model = backbone(name, weights=str(path), num_classes=3)
    assert model.kta_head == head == head_name(model, name)
    assert model.get_submodule(head).out_features == 3
    body = {k: v for k, v in src.state_dict().items() if not k.startswith(head + ".")}
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in body.items())


def test_vgg_head_is_found_and_replaced():
    import torchvision

    from kta_plugins.nn.backbones import replace_head

    with torch.device("meta"):  # VGG is 130M parameters: build it without memory
        vgg = torchvision.models.vgg11()
    assert head_name(vgg, "vgg11") == "classifier.6"
    replace_head(vgg, "classifier.6", 4)
    assert vgg.classifier[6].out_features == 4 and vgg.classifier[6].in_features == 4096


def test_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights"):
        backbone("resnet18", weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="num_classes"):
        backbone("resnet18", num_classes=0)
    torch.save(MLP((1, 8, 8), 10).state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match="weights.*does not match"):
        backbone("resnet18", weights=str(tmp_path / "mlp.pt"))
    with pytest.raises(ValueError, match="name"):
        backbone("not_a_model_xyz")

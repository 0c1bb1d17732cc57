"""mnist5k (real MNIST offline), the named continual-learning benchmarks, and the models ``--model`` builds."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from kta_plugins.nn import MODELS, MultiHead, build_model, make_model
from scenarios.datasets import mnist5k
from scenarios.registry import SCENARIOS, load_all
from strategies.cli import main

load_all()


def test_mnist5k_is_real_stratified_and_seeded():
    train, test = mnist5k(seed=0)
    assert (len(train), len(test)) == (4000, 1000)
    assert tuple(train.x.shape[1:]) == (1, 28, 28) and train.x.dtype == torch.float32
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert torch.bincount(train.y).tolist() == [400] * 10 and torch.bincount(test.y).tolist() == [100] * 10
    # grey levels are k/255: real 8-bit images, not generated
    assert torch.allclose(train.x * 255, (train.x * 255).round(), atol=1e-4)
    again, _ = mnist5k(seed=0)
    other, _ = mnist5k(seed=1)
    assert torch.equal(again.x, train.x) and not torch.equal(other.x, train.x)
    # train and test are disjoint images
    tr = {bytes(v) for v in (train.x * 255).round().to(torch.uint8).flatten(1).numpy()}
    te = [bytes(v) for v in (test.x * 255).round().to(torch.uint8).flatten(1).numpy()]
    assert sum(t in tr for t in te) <= 5  # MNIST has a few duplicate images; the split itself is disjoint


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, "a"])
def test_mnist5k_names_bad_test_fraction(bad):
    with pytest.raises((ValueError, TypeError), match="test_fraction"):
        mnist5k(test_fraction=bad)


@pytest.mark.parametrize("name, kind, n_classes", [
    ("split-mnist", "class-incremental", 10), ("split-mnist-tasks", "task-incremental", 10),
    ("split-mnist-domain", "domain-incremental", 2), ("permuted-mnist", "domain-incremental", 10),
    ("rotated-mnist", "domain-incremental", 10), ("split-digits-domain", "domain-incremental", 2),
    ("split-mnist1d-tasks", "task-incremental", 10), ("split-mnist1d-domain", "domain-incremental", 2),
    ("permuted-mnist1d", "domain-incremental", 10),
])
def test_named_benchmarks(name, kind, n_classes):
    bm = SCENARIOS.build(name, seed=0)
    assert bm.kind == kind and bm.n_classes == n_classes and len(bm.train_stream) == 5
    labels = [e.task_label for e in bm.train_stream]
    assert labels == (list(range(5)) if kind == "task-incremental" else [0] * 5)


def test_split_mnist_domain_labels_are_positions_in_the_pair():
    order = [3, 8, 1, 7, 0, 9, 2, 4, 5, 6]
    dom = SCENARIOS.build(f"split-mnist-domain:class_order={order},per_class=20".replace(" ", ""), seed=0)
    cls = SCENARIOS.build(f"split-mnist:class_order={order},per_class=20".replace(" ", ""), seed=0)
    assert dom.class_groups == [[3, 8], [1, 7], [0, 9], [2, 4], [5, 6]]
    for e_dom, e_cls, group in zip(dom.train_stream, cls.train_stream, dom.class_groups):
        y_dom = torch.tensor([int(e_dom.dataset[i][1]) for i in range(len(e_dom.dataset))])
        y_cls = torch.tensor([int(e_cls.dataset[i][1]) for i in range(len(e_cls.dataset))])
        assert torch.equal(y_dom, (y_cls == group[1]).long())  # same images, label = position in the pair


def test_per_class_and_class_order_options():
    bm = SCENARIOS.build("split-mnist:per_class=10,class_order=[0,1,2,3,4,5,6,7,8,9]", seed=0)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert all(len(e.dataset) == 20 for e in bm.train_stream)


def test_multihead_masks_each_task_to_its_classes():
    bm = SCENARIOS.build("split-mnist-tasks:per_class=10", seed=0)
    net = build_model("mlp:hidden=[16]", bm)
    assert isinstance(net, MultiHead) and net.n_tasks == 5
    x = torch.rand(5, 1, 28, 28)
    out = net(x, torch.arange(5))
    for t, group in enumerate(bm.classes_per_experience):
        allowed = out[t] > -1e3
        assert sorted(torch.nonzero(allowed).flatten().tolist()) == sorted(group)
    # a batch mixing tasks equals the per-task forwards
    for t in range(5):
        assert torch.allclose(out[t], net.forward_single_task(x[t:t + 1], t)[0])


def test_multihead_learns_the_task_masks_from_the_data_when_not_given():
    from strategies.base import Naive

    bm = SCENARIOS.build("split-mnist-tasks:per_class=10", seed=0)
    torch.manual_seed(0)
    net = MultiHead(make_model("mlp:hidden=[16]", (1, 28, 28), 10), n_tasks=5)
    s = Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.train(bm.train_stream[0])
        s.train(bm.train_stream[1])
    assert net.task_mask.sum(1).tolist() == [2, 2, 0, 0, 0]
    assert sorted(torch.nonzero(net.task_mask[1]).flatten().tolist()) == sorted(bm.classes_per_experience[1])


def test_task_il_multihead_beats_single_head_forgetting():
    """With task identity, one head per task keeps old pairs answerable (van de Ven & Tolias's Task-IL)."""
    from strategies.base import Naive
    from strategies.results import train_and_evaluate

    accs = {}
    for name in ("split-mnist-tasks", "split-mnist"):
        bm = SCENARIOS.build(f"{name}:per_class=40,n_experiences=5", seed=0)
        torch.manual_seed(0)
        net = build_model("mlp:hidden=[64]", bm)
        s = Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), train_epochs=3,
                  train_mb_size=32, seed=0, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            accs[name] = train_and_evaluate(s, bm)[-1].mean()
    assert accs["split-mnist-tasks"] > 0.8 and accs["split-mnist"] < 0.4


def test_model_registry_names_and_widths():
    assert {"mlp", "cnn", "cnn1d", "cnn1d-gap", "slim-resnet18", "resnet18"} <= set(MODELS.names())
    net = make_model("mlp:hidden=400-400", (1, 28, 28), 10)
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [400, 400, 10]
    assert make_model("mlp", (1, 8, 8), 4, hidden=[8]).classifier.in_features == 8


@pytest.mark.parametrize("spec, shape", [("slim-resnet18:nf=4", (1, 28, 28)), ("slim-resnet18:nf=4", (3, 32, 32)),
                                         ("resnet18", (1, 28, 28)), ("cnn", (1, 8, 8))])
def test_image_models_forward(spec, shape):
    net = make_model(spec, shape, 10)
    assert net(torch.rand(2, *shape)).shape == (2, 10)
    assert net.get_features(torch.rand(2, *shape)).shape == (2, net.feature_dim)


def test_resnet18_loads_a_local_checkpoint_with_weights_only(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pt")
    net = make_model(f"resnet18:weights={tmp_path / 'r18.pt'}", (3, 32, 32), 5)
    assert torch.equal(net.features[0].conv1.weight, ref.conv1.weight)
    assert net.classifier.out_features == 5
    with pytest.raises(FileNotFoundError, match="weights"):
        make_model(f"resnet18:weights={tmp_path / 'missing.pt'}", (3, 32, 32), 5)


@pytest.mark.parametrize("scenario, model, words", [
    ("split-mnist1d", "resnet18", ["--model", "resnet18", "images"]),
    ("split-mnist1d", "slim-resnet18", ["--model", "images"]),
    ("split-mnist-tasks:per_class=4", "mlp:heads=single", ["--model", "heads=single", "task"]),
    ("split-mnist:per_class=4", "mlp:heads=multi", ["--model", "heads=multi"]),
    ("split-mnist:per_class=4", "mlp:hidden=a-b", ["--model", "hidden"]),
    ("split-mnist:per_class=4", "mlp:depth=3", ["--model", "depth"]),
])
def test_bad_model_scenario_pairings_fail_before_training(scenario, model, words, tmp_path, capsys):
    rc = main(["run", "--scenario", scenario, "--strategy", "naive", "--model", model, "--log-dir", "none",
               "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("scenario", ["split-mnist", "split-mnist-tasks", "split-mnist-domain", "permuted-mnist",
                                      "rotated-mnist", "split-digits-domain", "split-mnist1d-tasks",
                                      "split-mnist1d-domain", "permuted-mnist1d"])
def test_every_new_scenario_runs_one_epoch_from_the_command_line(scenario, tmp_path):
    opts = ":per_class=8,n_experiences=2" if "mnist" in scenario and "mnist1d" not in scenario else ":n_experiences=2"
    model = "mlp:hidden=8"
    assert main(["run", "--scenario", scenario + opts, "--strategy", "naive", "--model", model, "--log-dir", "none",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert np.isfinite(np.array(__import__("json").loads((tmp_path / "r.json").read_text())["accuracy_matrix"])).all()


@pytest.mark.parametrize("model", ["slim-resnet18:nf=2", "resnet18"])
def test_new_models_run_one_epoch_from_the_command_line(model, tmp_path):
    assert main(["run", "--scenario", "split-mnist-tasks:per_class=4,n_experiences=2", "--strategy", "naive",
                 "--model", model, "--batch-size", "8", "--log-dir", "none"]) == 0

"""Transfer learning with few labels: pretrain on classes 0-4, transfer to classes 5-9.

A network (MNIST-1D: the CNN1d baseline; ``--dataset digits``: an MLP
64-128-64-10) is pretrained on all training examples of the source classes
0-4. The target task is the classes 5-9 with only ``--shots`` labelled
examples per class; the test set is all test examples of 5-9. Each method
starts from the pretrained network with a freshly initialised head (except "scratch", which starts from random weights)
and trains on the target for ``--epochs`` epochs with KTA's Naive strategy and
the transfer plugins:

    scratch          random init, everything trains
    linear probe     LinearProbe strategy: frozen backbone (Freeze plugin)
    fine-tune        everything trains
    LP-FT            LPFT plugin: half the epochs probing, then all at 0.1x rate
    L2-SP            fine-tune + L2SP plugin (alpha=0.1, beta=0.001)
    LoRA             LoRA plugin (rank 4, alpha 4) on every conv / hidden Linear, head trains
    gradual unfreeze GradualUnfreeze plugin: head first, one more layer group every epochs/3 epochs

Prints mean ± std of target test accuracy over seeds.

    python examples/transfer_learning.py            # shots 5 and 20, 3 seeds
    python examples/transfer_learning.py --quick    # shots 5, 3 seeds, fewer epochs (~1 minute)
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from kta_plugins.nn import CNN1d, MLP
from kta_plugins.transfer import L2SP, GradualUnfreeze, LoRA
from scenarios import class_incremental
from scenarios.datasets import TensorClassificationDataset, digits, mnist1d
from strategies import Naive
from strategies.finetune import LinearProbe, LPFTStrategy

SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
METHODS = ["scratch", "linear probe", "fine-tune", "LP-FT", "L2-SP", "LoRA", "gradual unfreeze"]
ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


def _subset(ds, classes, shots=None, seed=0):
    y = ds.y.numpy()
    rng = np.random.default_rng(seed)
    idx = []
    for c in classes:
        ci = np.flatnonzero(y == c)
        idx.append(rng.permutation(ci)[:shots] if shots else ci)
    idx = np.sort(np.concatenate(idx))
    return TensorClassificationDataset(ds.x[idx], ds.y[idx])


def _stream(train, test):
    return class_incremental((train, test), n_experiences=1, class_order=sorted(set(train.y.tolist())))


DATA = {"digits": lambda: digits(seed=0), "mnist1d": lambda: mnist1d()}
_cache = {}


def _data(name):
    if name not in _cache:
        _cache[name] = DATA[name]()
    return _cache[name]


def _model(seed, dataset):
    torch.manual_seed(seed)
    if dataset == "mnist1d":
        return CNN1d((1, 40), 10)
    return MLP((1, 8, 8), 10, hidden=(128, 64))


def pretrain(seed, epochs, dataset):
    train, test = _data(dataset)
    bm = _stream(_subset(train, SOURCE), _subset(test, SOURCE))
    model = _model(seed, dataset)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
              train_epochs=epochs, progress=False, seed=seed)
    s.train(bm.train_stream[0])
    return model, s.eval(bm.test_stream)[ACC]


def transfer(method, pretrained, seed, shots, epochs, dataset):
    train, test = _data(dataset)
    bm = _stream(_subset(train, TARGET, shots, seed), _subset(test, TARGET))
    if method == "scratch":
        model = _model(seed + 1000, dataset)
    else:
        model = copy.deepcopy(pretrained)
        torch.manual_seed(seed)
        model.classifier.reset_parameters()  # a new head for the new classes
    common = dict(train_epochs=epochs, train_mb_size=16, progress=False, seed=seed)
    sgd = lambda lr, m=0.9: torch.optim.SGD(model.parameters(), lr=lr, momentum=m)  # noqa: E731
    if method == "linear probe":
        s = LinearProbe(model=model, optimizer=sgd(0.05), head=["classifier"], **common)
    elif method == "LP-FT":
        s = LPFTStrategy(model=model, optimizer=sgd(0.05), head=["classifier"], probe_epochs=epochs // 2,
                         ft_lr_scale=0.1, **common)
    elif method == "L2-SP":
        s = Naive(model=model, optimizer=sgd(0.05), plugins=[L2SP(alpha=0.1, beta=0.001)], **common)
    elif method == "LoRA":
        s = Naive(model=model, optimizer=sgd(0.1, 0.0), plugins=[
            LoRA(patterns=["features.*"], rank=4, alpha=4.0, train=["classifier"])], **common)
    elif method == "gradual unfreeze":
        s = Naive(model=model, optimizer=sgd(0.05), plugins=[GradualUnfreeze(every=max(1, epochs // 3))], **common)
    else:  # scratch, fine-tune
        s = Naive(model=model, optimizer=sgd(0.05), **common)
    s.train(bm.train_stream[0])
    return s.eval(bm.test_stream)[ACC]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shots 5 only, 30 target epochs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shots", type=int, nargs="+", default=None, help="labels per target class")
    ap.add_argument("--epochs", type=int, default=None, help="target epochs")
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--dataset", choices=sorted(DATA), default="mnist1d")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    shots_list = args.shots or ([5] if args.quick else [5, 20])
    epochs = args.epochs or (30 if args.quick else 60)
    t0 = time.time()
    results = {(m, k): [] for m in METHODS for k in shots_list}
    src_acc = []
    for seed in range(args.seeds):
        pretrained, acc = pretrain(seed, args.pretrain_epochs, args.dataset)
        src_acc.append(acc)
        for k in shots_list:
            for m in METHODS:
                results[(m, k)].append(transfer(m, pretrained, seed, k, epochs, args.dataset))
    print(f"source ({args.dataset} 0-4) test accuracy after pretraining: "
          f"{100 * np.mean(src_acc):.1f} ± {100 * np.std(src_acc):.1f}")
    print(f"target: {args.dataset} 5-9, {epochs} epochs, batch 16, {args.seeds} seeds; test accuracy (%) mean ± std")
    heads = [f"{k} labels/class" for k in shots_list]
    print(f"| {'method':<17} | " + " | ".join(heads) + " |")
    print("|" + "-" * 19 + "|" + "|".join("-" * (len(h) + 2) for h in heads) + "|")
    for m in METHODS:
        cells = [f"{100 * np.mean(results[(m, k)]):.1f} ± {100 * np.std(results[(m, k)]):.1f}".ljust(len(h))
                 for k, h in zip(shots_list, heads)]
        print(f"| {m:<17} | " + " | ".join(cells) + " |")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

"""Knowledge distillation on MNIST-1D, offline on CPU.

Part 1 (offline): a CNN teacher (``kta_plugins.nn.CNN1d``) is trained on
MNIST-1D, then a small MLP student is trained alone and with each of KTA's
distillation plugins (kd, fitnets, attention, rkd, dkd, pkt), at the same
training budget. Test accuracy, mean ± std over 3 seeds.

Part 2 (continual): split MNIST-1D (5 experiences of 2 classes, class-
incremental), an MLP trained with Naive fine-tuning, Avalanche's LwF, KTA's
distillation from the previous experience's model with each loss, replay, and
replay + KD. Final average accuracy and forgetting, mean ± std over 3 seeds.

    python examples/distillation.py            # the full run (see README.md)
    python examples/distillation.py --quick    # about a minute
    python examples/distillation.py --part offline --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from kta_plugins.distill import DKD, KD, PKT, RKD, AttentionTransfer, FitNets
from kta_plugins.nn import CNN1d, MLP
from scenarios import class_incremental
from strategies import Naive
from strategies.results import average_accuracy, forgetting, train_and_evaluate


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def fit(model, bm, optimizer, epochs, plugins=(), seed=0):
    """Train ``model`` over ``bm``'s stream with KTA's Naive; the accuracy matrix."""
    strategy = Naive(model=model, optimizer=optimizer, train_epochs=epochs, train_mb_size=64,
                     plugins=list(plugins), seed=seed, progress=False)
    return train_and_evaluate(strategy, bm)


# ---------------------------------------------------------------- part 1: offline teacher -> student
def offline_methods(teacher):
    """Student-side plugins, built fresh for every run."""
    return {
        "student alone": lambda: [],
        "kd (T=4, alpha=0.9)": lambda: [KD(teacher, temperature=4.0, alpha=0.9)],
        "fitnets (weight=1)": lambda: [FitNets(teacher, student_layer="features", teacher_layer="features", weight=1.0)],
        "attention (weight=1000)": lambda: [AttentionTransfer(teacher, student_layer="features",
                                                            teacher_layer="features.4", resize=True)],
        "rkd (25/50)": lambda: [RKD(teacher, student_layer="features", teacher_layer="features")],
        "dkd (1/8, T=4, warmup 5)": lambda: [DKD(teacher, alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=5)],
        "dkd (1/1, T=4)": lambda: [DKD(teacher, alpha=1.0, beta=1.0, temperature=4.0)],
        "pkt (weight=3e4)": lambda: [PKT(teacher, student_layer="features", teacher_layer="features")],
    }


def _select(methods, only):
    """Keep the methods whose name contains one of ``only`` (all when empty); the baseline always."""
    base = next(iter(methods))
    return {k: v for k, v in methods.items() if not only or k == base or any(o in k for o in only)}


def part_offline(seeds, teacher_epochs, student_epochs, hidden, only=()):
    bm = class_incremental("mnist1d", n_experiences=1, seed=0)  # one experience: all 10 classes
    results = {}
    teacher_acc = []
    for seed in seeds:
        t0 = time.time()
        torch.manual_seed(seed)
        teacher = CNN1d((1, 40), 10)
        teacher_acc.append(fit(teacher, bm, torch.optim.Adam(teacher.parameters(), lr=1e-2),
                               teacher_epochs, seed=seed)[-1, 0])
        for name, plugins in _select(offline_methods(teacher), only).items():
            torch.manual_seed(1000 + seed)  # the same student initialisation for every method
            student = MLP((1, 40), 10, hidden=hidden)
            acc = fit(student, bm, sgd(student, 0.05), student_epochs, plugins(), seed=seed)[-1, 0]
            results.setdefault(name, []).append(acc)
        print(f"  seed {seed}: teacher {100 * teacher_acc[-1]:.1f}%  ({time.time() - t0:.0f} s)", flush=True)
    print(f"\nOffline MNIST-1D: CNN1d teacher {_ms(teacher_acc)} (Adam 1e-2, {teacher_epochs} epochs) -> "
          f"MLP{tuple(hidden)} student (SGD 0.05 m0.9, batch 64, {student_epochs} epochs), "
          f"{len(seeds)} seeds")
    print(f"{'method':<24}{'test accuracy %':>18}{'vs alone':>10}")
    base = np.mean(results["student alone"])
    for name, accs in results.items():
        print(f"{name:<24}{_ms(accs):>18}{100 * (np.mean(accs) - base):>+10.1f}")
    return results


# ---------------------------------------------------------------- part 2: continual, teacher = previous
def continual_methods():
    from avalanche.training.plugins import LwFPlugin, ReplayPlugin

    return {
        "naive": lambda: [],
        "avalanche lwf (1, T=2)": lambda: [LwFPlugin(alpha=1.0, temperature=2.0)],
        "kd prev (T=2, a=0.5)": lambda: [KD("previous", temperature=2.0, alpha=0.5)],
        "fitnets prev (weight=1)": lambda: [FitNets("previous", weight=1.0)],
        "attention prev": lambda: [AttentionTransfer("previous")],
        "rkd prev": lambda: [RKD("previous")],
        "dkd prev (1/8, T=4)": lambda: [DKD("previous")],
        "pkt prev": lambda: [PKT("previous")],
        "replay (200)": lambda: [ReplayPlugin(mem_size=200)],
        "replay + kd prev": lambda: [ReplayPlugin(mem_size=200), KD("previous", temperature=2.0, alpha=0.5)],
    }


def part_continual(seeds, epochs, hidden, only=()):
    results = {}
    for seed in seeds:
        t0 = time.time()
        bm = class_incremental("mnist1d", n_experiences=5, seed=seed)
        for name, plugins in _select(continual_methods(), only).items():
            torch.manual_seed(seed)
            model = MLP((1, 40), 10, hidden=hidden)
            A = fit(model, bm, sgd(model, 0.05), epochs, plugins(), seed=seed)
            results.setdefault(name, []).append((average_accuracy(A), forgetting(A)))
        print(f"  seed {seed}: {time.time() - t0:.0f} s", flush=True)
    print(f"\nSplit MNIST-1D (5 experiences x 2 classes, class-incremental), MLP{tuple(hidden)}, "
          f"SGD 0.05 m0.9, batch 64, {epochs} epochs/experience, {len(seeds)} seeds")
    print(f"{'method':<26}{'final avg acc %':>18}{'forgetting %':>16}")
    for name, rows in results.items():
        acc, fgt = zip(*rows)
        print(f"{name:<26}{_ms(acc):>18}{_ms(fgt):>16}")
    return results


def _ms(values):
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.1f} ± {v.std():.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short budgets (about a minute)")
    p.add_argument("--part", choices=["offline", "continual", "both"], default="both")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=[], help="only methods whose name contains one of these")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    warnings.showwarning = lambda *a, **k: None  # Avalanche re-enables its deprecation warnings
    torch.set_num_threads(1)
    if args.quick:
        budget = dict(teacher_epochs=5, student_epochs=4, continual_epochs=1)
    else:
        budget = dict(teacher_epochs=60, student_epochs=40, continual_epochs=10)
    start = time.time()
    if args.part in ("offline", "both"):
        part_offline(args.seeds, budget["teacher_epochs"], budget["student_epochs"], hidden=(64,), only=args.methods)
    if args.part in ("continual", "both"):
        part_continual(args.seeds, budget["continual_epochs"], hidden=(256,), only=args.methods)
    print(f"\ntotal {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

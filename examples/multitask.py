"""Multi-task learning on stars and multi-task MNIST-1D: architectures and loss weightings.

Rows: single-task networks (one per task; a hard-sharing net whose other task
has weight 0), hard sharing (shared trunk + heads) with equal weights,
uncertainty weighting, DWA, GradNorm, PCGrad, MGDA, CAGrad; soft sharing (one
tower per task + L2 tie); cross-stitch; MMoE. Columns: accuracy of the
classification task, MAE and R^2 of the regression task on the test set,
mean +- std over 3 seeds.

    python examples/multitask.py            # full run (see README.md)
    python examples/multitask.py --quick    # about a minute
    python examples/multitask.py --datasets stars --rows equal,pcgrad --seeds 0
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from kta_plugins.mtl import CAGrad, DWA, GradNorm, MGDA, PCGrad, SoftSharingPenalty, StaticWeights, Uncertainty
from kta_plugins.nn import CNN1d
from kta_plugins.nn.multitask import CrossStitch, HardSharing, MMoE, SoftSharing
from scenarios.multitask import multitask_mnist1d, multitask_stream, stars
from strategies.multitask import MultiTask

ROWS = ["single-task", "equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "mgda", "cagrad",
        "soft-sharing", "cross-stitch", "mmoe"]


def cnn_blocks(channels=25):
    """MNIST-1D's CNN (Greydanus 2020) as blocks, for cross-stitch columns."""
    return [nn.Sequential(nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU()),
            nn.Flatten()]


def build(row: str, tasks: dict, input_shape, dataset: str, only: str | None = None):
    """The model and plugins of one row (``only``: the single task a single-task net learns)."""
    conv = dataset == "mnist1d"

    def trunk():
        return CNN1d(input_shape, 1).features if conv else None

    def hard():
        t = trunk()
        return HardSharing(tasks, input_shape=input_shape, trunk=t) if t is not None else \
            HardSharing(tasks, input_shape=input_shape)

    if row == "single-task":
        return hard(), [StaticWeights({n: float(n == only) for n in tasks})]
    if row == "soft-sharing":
        net = SoftSharing(tasks, input_shape, tower_factory=(lambda: CNN1d(input_shape, 1).features) if conv else None)
        return net, [SoftSharingPenalty(strength=1e-3)]
    if row == "cross-stitch":
        return CrossStitch(tasks, input_shape, column_factory=cnn_blocks if conv else None), []
    if row == "mmoe":
        return MMoE(tasks, input_shape, n_experts=4,
                    expert_factory=(lambda: CNN1d(input_shape, 1, channels=16).features) if conv else None), []
    plugins = {"equal": [], "uncertainty": [Uncertainty(lr=0.01)], "dwa": [DWA(temperature=2.0)],
               "gradnorm": [GradNorm(alpha=1.5)], "pcgrad": [PCGrad()], "mgda": [MGDA(wrt="representation")],
               "cagrad": [CAGrad(c=0.4)]}[row]
    return hard(), plugins


def run_one(bm, row, dataset, seed, epochs, lr, only=None):
    torch.manual_seed(seed)
    net, plugins = build(row, bm.tasks, bm.input_shape, dataset, only)
    s = MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), lr=lr), train_epochs=epochs,
                  train_mb_size=64, plugins=plugins, progress=False, seed=seed)
    for exp in bm.train_stream:
        s.train(exp)
    s.eval(bm.test_stream)
    return s.last_task_metrics["test_stream"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs, one seed (about a minute)")
    ap.add_argument("--datasets", default="stars,mnist1d")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None, help="default: 20 (stars), 30 (mnist1d); quick: 3")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; known: {ROWS}")
    seeds = [int(s) for s in args.seeds.split(",")] if not args.quick else [0]
    for dataset in args.datasets.split(","):
        t0 = time.time()
        if dataset == "stars":
            pair = stars(n_train=600, n_test=300) if args.quick else stars()
            epochs = args.epochs or (3 if args.quick else 20)
        elif dataset == "mnist1d":
            pair = multitask_mnist1d(quantity="scale")
            if args.quick:
                pair = (pair[0].subset(range(800)), pair[1].subset(range(400)))
            epochs = args.epochs or (3 if args.quick else 30)
        else:
            ap.error(f"--datasets: unknown {dataset!r}; known: stars, mnist1d")
        cls_task = next(n for n, s in pair[0].tasks.items() if s != "regression")
        reg_task = next(n for n, s in pair[0].tasks.items() if s == "regression")
        print(f"\n## {dataset}: {cls_task} (accuracy) + {reg_task} (regression), {epochs} epochs, "
              f"Adam lr {args.lr}, batch 64, seeds {seeds}")
        print(f"| model / weighting | {cls_task} acc (%) | {reg_task} MAE | {reg_task} R^2 |")
        print("|---|---|---|---|")
        for row in rows:
            acc, mae, r2 = [], [], []
            for seed in seeds:
                bm = multitask_stream(pair, n_experiences=1, seed=seed)
                if row == "single-task":
                    m_cls = run_one(bm, row, dataset, seed, epochs, args.lr, only=cls_task)
                    m_reg = run_one(bm, row, dataset, seed, epochs, args.lr, only=reg_task)
                else:
                    m_cls = m_reg = run_one(bm, row, dataset, seed, epochs, args.lr)
                acc.append(100 * m_cls[cls_task]["Acc"])
                mae.append(m_reg[reg_task]["MAE"])
                r2.append(m_reg[reg_task]["R2"])

            def f(v, d):
                return f"{np.mean(v):.{d}f} ± {np.std(v):.{d}f}"

            label = {"single-task": "single-task (separate nets)", "equal": "hard sharing, equal weights",
                     "soft-sharing": "soft sharing (L2 tie 1e-3)", "cross-stitch": "cross-stitch",
                     "mmoe": "MMoE (4 experts)"}.get(row, f"hard sharing + {row}")
            print(f"| {label} | {f(acc, 1)} | {f(mae, 3)} | {f(r2, 3)} |", flush=True)
        print(f"({dataset}: {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

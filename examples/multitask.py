"""Multi-task learning on stars and multi-task MNIST-1D: architectures and loss weightings.

Rows: single-task networks (one per task; a hard-sharing net whose other task
has weight 0), hard sharing (shared trunk + heads) with equal weights,
uncertainty weighting, DWA, GradNorm, PCGrad, MGDA, CAGrad; soft sharing (one
tower per task + L2 tie); cross-stitch; MMoE. Columns: accuracy of the
classification task, MAE and R^2 of the regression task on the test set,
mean +- std over 3 seeds.

``--part quantile``: quantile heads (0.1, 0.5, 0.9; pinball loss, Koenker &
Bassett 1978) on the regression task of stars (size) and MNIST-1D (amplitude
scale), monotone (non-crossing) and free, against the plain MSE head: MAE of the
median (of the mean for MSE), coverage of the 10-90% interval (0.8 when
calibrated), pinball loss, crossing rate.

``--part affinity``: TAG's lookahead inter-task affinity (Fifty et al. 2021)
recorded while training one hard-sharing net on MNIST-1D with five tasks (digit,
scale, shear, translation, padding), the groupings it suggests (2 and 3 groups),
and the test metrics of one net per suggested group against the 5-task net and
single-task nets.

    python examples/multitask.py            # full run (see README.md)
    python examples/multitask.py --quick    # about a minute
    python examples/multitask.py --datasets stars --rows equal,pcgrad --seeds 0
    python examples/multitask.py --part quantile [--quick]
    python examples/multitask.py --part affinity [--quick]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from kta_plugins.mtl import (CAGrad, DWA, GradNorm, MGDA, PCGrad, SoftSharingPenalty, StaticWeights, TaskAffinity,
                             Uncertainty, suggest_groups)
from kta_plugins.nn import CNN1d
from kta_plugins.nn.multitask import CrossStitch, HardSharing, MMoE, SoftSharing
from scenarios.multitask import MultiTaskDataset, multitask_mnist1d, multitask_stream, stars
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
        return net, [SoftSharingPenalty(weight=1e-3)]
    if row == "cross-stitch":
        return CrossStitch(tasks, input_shape, column_factory=cnn_blocks if conv else None), []
    if row == "mmoe":
        return MMoE(tasks, input_shape, n_experts=4,
                    expert_factory=(lambda: CNN1d(input_shape, 1, channels=16).features) if conv else None), []
    plugins = {"equal": [], "uncertainty": [Uncertainty(lr=0.01)], "dwa": [DWA(temperature=2.0)],
               "gradnorm": [GradNorm(alpha=1.5)], "pcgrad": [PCGrad()], "mgda": [MGDA(wrt="representation")],
               "cagrad": [CAGrad(c=0.4)]}[row]
    return hard(), plugins


def run_one(bm, row, dataset, seed, epochs, lr, only=None, net=None, plugins=None, strategy=False):
    torch.manual_seed(seed)
    if net is None:
        net, plugins = build(row, bm.tasks, bm.input_shape, dataset, only)
    s = MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), lr=lr), train_epochs=epochs,
                  train_mb_size=64, plugins=plugins or [], progress=False, seed=seed)
    for exp in bm.train_stream:
        s.train(exp)
    s.eval(bm.test_stream)
    return (s.last_task_metrics["test_stream"], s) if strategy else s.last_task_metrics["test_stream"]


def load(dataset: str, quick: bool, epochs, quantity: str = "scale"):
    """``(train, test)`` pair and epochs of ``dataset`` (``--quick``: 600/300 or 800/400 samples, 3 epochs)."""
    if dataset == "stars":
        pair = stars(n_train=600, n_test=300) if quick else stars()
        return pair, epochs or (3 if quick else 20)
    if dataset == "mnist1d":
        pair = multitask_mnist1d(quantity=quantity)
        if quick:
            pair = (pair[0].subset(range(800)), pair[1].subset(range(400)))
        return pair, epochs or (3 if quick else 30)
    raise ValueError(f"--datasets: unknown {dataset!r}; known: stars, mnist1d")


def _f(v, d):
    return f"{np.mean(v):.{d}f} ± {np.std(v):.{d}f}"


QUANTILES = (0.1, 0.5, 0.9)


def first_tasks(pair):
    """Names of the dataset's first classification task and first regression task."""
    tasks = pair[0].tasks.items()
    return next(n for n, s in tasks if s != "regression"), next(n for n, s in tasks if s == "regression")


def quantile_part(args, seeds):
    """MSE head vs quantile heads (monotone / free) on each dataset's regression task."""
    for dataset in args.datasets.split(","):
        t0 = time.time()
        pair, epochs = load(dataset, args.quick, args.epochs)
        cls_task, reg_task = first_tasks(pair)
        print(f"\n## {dataset}: quantile heads {QUANTILES} on {reg_task}, hard sharing, {epochs} epochs, "
              f"Adam lr {args.lr}, batch 64, seeds {seeds}")
        print(f"| {reg_task} head | {cls_task} acc (%) | {reg_task} MAE | {reg_task} R^2 | 10-90% coverage | "
              f"coverage on train | pinball | crossing rate |")
        print("|---|---|---|---|---|---|---|---|")
        for row in ("mse", "quantile", "quantile-free"):
            cols = {k: [] for k in ("acc", "MAE", "R2", "Coverage", "train", "Pinball", "Crossing")}
            for seed in seeds:
                bm = multitask_stream(pair, n_experiences=1, seed=seed)
                torch.manual_seed(seed)
                q = None if row == "mse" else QUANTILES
                trunk = CNN1d(bm.input_shape, 1).features if dataset == "mnist1d" else None
                net = HardSharing(bm.tasks, input_shape=bm.input_shape, trunk=trunk, quantiles=q,
                                  monotone=row == "quantile")
                m, s = run_one(bm, row, dataset, seed, epochs, args.lr, net=net, strategy=True)
                cols["acc"].append(100 * m[cls_task]["Acc"])
                for k in ("MAE", "R2", "Coverage", "Pinball", "Crossing"):
                    if k in m[reg_task]:
                        cols[k].append(m[reg_task][k])
                if q is not None:  # coverage on the training data: calibration vs. generalisation
                    cols["train"].append(s.eval(bm.train_stream)[f"MTL/Coverage/train_stream/{reg_task}"])
            label = {"mse": "MSE, one output (mean)", "quantile": "quantiles, monotone (median)",
                     "quantile-free": "quantiles, free (median)"}[row]
            cells = [_f(cols["acc"], 1)] + [_f(cols[k], 3) if cols[k] else "-" for k in
                                            ("MAE", "R2", "Coverage", "train", "Pinball", "Crossing")]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        print(f"({dataset}: {time.time() - t0:.0f} s)")


AFFINITY_QUANTITIES = "scale+shear+translation+padding"


def group_run(pair, group, seed, epochs, lr):
    """Test metrics of a hard-sharing net trained on the tasks in ``group`` only."""
    sub = tuple(MultiTaskDataset(d.x, {n: d.target(n) for n in group}, {n: d.tasks[n] for n in group})
                for d in pair)
    bm = multitask_stream(sub, n_experiences=1, seed=seed)
    torch.manual_seed(seed)
    net = HardSharing(bm.tasks, input_shape=bm.input_shape, trunk=CNN1d(bm.input_shape, 1).features)
    return run_one(bm, "equal", "mnist1d", seed, epochs, lr, net=net)


def affinity_part(args, seeds):
    """TAG affinity on MNIST-1D with 5 tasks; mean over seeds and the suggested groups."""
    t0 = time.time()
    pair, epochs = load("mnist1d", args.quick, args.epochs, quantity=AFFINITY_QUANTITIES)
    names, mats = list(pair[0].tasks), []
    print(f"\n## mnist1d, tasks {names}: lookahead affinity Z_(row -> column) of TAG, hard sharing "
          f"(MNIST-1D CNN trunk), {epochs} epochs, Adam lr {args.lr}, batch 64, measured every "
          f"{args.affinity_every} iterations with an SGD lookahead of lr {args.affinity_lr or args.lr}, seeds {seeds}")
    metrics = []
    for seed in seeds:
        bm = multitask_stream(pair, n_experiences=1, seed=seed)
        torch.manual_seed(seed)
        net = HardSharing(bm.tasks, input_shape=bm.input_shape, trunk=CNN1d(bm.input_shape, 1).features)
        aff = TaskAffinity(every=args.affinity_every, lr=args.affinity_lr)
        metrics.append(run_one(bm, "equal", "mnist1d", seed, epochs, args.lr, net=net, plugins=[aff]))
        got, z = aff.affinity()
        assert got == names, (got, names)
        mats.append(z)
    z = torch.stack(mats)
    scale = 1e3
    print("\nmean ± std over seeds, x 1e3 (Z > 0: a step on the row task lowers the column task's loss)\n")
    print("| from \\ to | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, n in enumerate(names):
        print(f"| {n} | " + " | ".join(_f((scale * z[:, i, j]).tolist(), 2) for j in range(len(names))) + " |")
    mean = z.mean(0)
    rows = {"one net, all 5 tasks (the measuring runs)": metrics}
    for k in (2, 3):
        g = suggest_groups(mean, k, names)
        per_seed = [sorted(suggest_groups(m, k, names)["groups"]) for m in mats]
        print(f"\n{k} groups (mean matrix): {g['groups']} (total affinity {scale * g['score']:.2f} x 1e-3); "
              f"per seed: {per_seed}")
        # train one net per suggested group; each task is read from the group that serves it
        rows[f"TAG {k} groups: " + " + ".join("{" + ", ".join(gr) + "}" for gr in g["groups"])] = [
            {t: m for gr in g["groups"] for t, m in group_run(pair, gr, seed, epochs, args.lr).items()
             if g["served_by"][t] == gr} for seed in seeds]
    rows["single-task nets"] = [{t: group_run(pair, (t,), seed, epochs, args.lr)[t] for t in names} for seed in seeds]
    print("\ntest metrics, mean ± std over seeds (digit: accuracy %, others: R^2)\n")
    print("| grouping | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, ms in rows.items():
        cells = [_f([100 * m[n]["Acc"] for m in ms], 1) if "Acc" in ms[0][n] else _f([m[n]["R2"] for m in ms], 3)
                 for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print(f"(affinity: {time.time() - t0:.0f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs, one seed (about a minute)")
    ap.add_argument("--part", choices=("table", "quantile", "affinity"), default="table",
                    help="table: architectures and weightings (default); quantile: quantile heads; "
                         "affinity: TAG inter-task affinity and grouping")
    ap.add_argument("--datasets", default="stars,mnist1d")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None, help="default: 20 (stars), 30 (mnist1d); quick: 3")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--affinity-every", type=int, default=5, help="--part affinity: measure every N iterations")
    ap.add_argument("--affinity-lr", type=float, default=None,
                    help="--part affinity: lookahead SGD step size (default: the optimizer's, --lr)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; known: {ROWS}")
    seeds = [int(s) for s in args.seeds.split(",")] if not args.quick else [0]
    unknown = [d for d in args.datasets.split(",") if d not in ("stars", "mnist1d")]
    if unknown:
        ap.error(f"--datasets: unknown {unknown}; known: stars, mnist1d")
    if args.part == "quantile":
        return quantile_part(args, seeds)
    if args.part == "affinity":
        return affinity_part(args, seeds)
    for dataset in args.datasets.split(","):
        t0 = time.time()
        pair, epochs = load(dataset, args.quick, args.epochs)
        cls_task, reg_task = first_tasks(pair)
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
            f = _f
            label = {"single-task": "single-task (separate nets)", "equal": "hard sharing, equal weights",
                     "soft-sharing": "soft sharing (L2 tie 1e-3)", "cross-stitch": "cross-stitch",
                     "mmoe": "MMoE (4 experts)"}.get(row, f"hard sharing + {row}")
            print(f"| {label} | {f(acc, 1)} | {f(mae, 3)} | {f(r2, 3)} |", flush=True)
        print(f"({dataset}: {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

"""Unsupervised domain adaptation on offline source -> target benchmarks, and over a stream of domains.

Part 1 (offline): two benchmarks with a real gap,

* ``mnist1d-shear``: MNIST-1D, source = the default generator, target =
  ``shear_scale=2.0`` (generator seed 43; MNIST-1D's "shear" adds a linear ramp
  ``-c * linspace(-0.5, 0.5)`` with ``c`` uniform in ``[-1, 1]`` instead of
  ``[-0.375, 0.375]``); a 1-D CNN with BatchNorm and global average pooling
  (``CNN1dGAP``);
* ``digits-to-blurred``: scikit-learn digits -> the same digits blurred with a
  Gaussian of sigma 1 pixel (disjoint halves of the training set); an MLP;

and for each: source-only, DANN, CORAL, MMD, CDAN and the target oracle
(trained on the labeled target training set), target test accuracy, mean ± std
over 3 seeds, and the fraction of the source-only -> oracle gap each method
closes: ``(acc - source_only) / (oracle - source_only)``. On ``mnist1d-shear`` a
control row, "no align (BN)", runs the target minibatches through the model with
alignment weight 0: what BatchNorm alone gains from seeing target batches.

The recipe (README.md, "Domain adaptation"): alignment on the pooled / penultimate
features (``layer="features"``); DANN with Ganin's lambda schedule to
``lambda_max=1`` over the whole run and a 100-unit domain head; SGD, momentum
0.9, batch 64, constant learning rate. Weights were chosen on the accuracy on the
*labeled target training set* (labels the plugins never see), never on target test.

Part 2 (stream of domains): ``domain-stream-digits`` (clean, blur, noise,
rotation 30, inversion; labels only in the first domain), naive vs each
alignment plugin with ``stream=True`` (a 200-sample buffer of past domains, whose
labeled samples are also replayed), and "replay only" (the same buffer and
replay, alignment weight 0); accuracy on every domain after the last experience.

    python examples/domain_adaptation.py            # the full run (README.md)
    python examples/domain_adaptation.py --quick    # about a minute
    python examples/domain_adaptation.py --part offline --benchmarks mnist1d-shear --seeds 0 --save m0.json
    python examples/domain_adaptation.py --merge m0.json m1.json m2.json   # one table from per-seed runs
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from kta_plugins.adapt import CDAN, CORAL, DANN, MMD
from kta_plugins.adapt.dann import GaninLR
from kta_plugins.adapt.target import MaskedCrossEntropy
from kta_plugins.nn import MLP
from kta_plugins.nn.models import CNN1dGAP
from scenarios.domains import digits_to_blurred, domain_stream_digits, mnist1d_shear
from scenarios.shifts import Identity
from scenarios.streams import domain_incremental
from strategies import Naive
from strategies.results import accuracy_row

# The recipe (see README.md): every method shares the source-only run's model, optimizer (SGD,
# momentum 0.9, constant learning rate), epochs and batch size; alignment sits on "features" (the pooled
# conv features of CNN1dGAP, the hidden layer of the MLP); DANN/CDAN use Ganin's lambda schedule over
# the whole run with a 100-unit domain head. Weights picked on labeled target *training* accuracy.
BENCHMARKS = {
    "mnist1d-shear": dict(
        make=lambda seed: mnist1d_shear(seed=seed), model=lambda: CNN1dGAP((1, 40), 10), lr=0.05, epochs=20,
        # control: the target minibatches go through the model (and its BatchNorm) but the alignment weight
        # is 0, so any gain over "source only" here is BatchNorm seeing target batches, not alignment
        controls={"no align (BN)": lambda: CORAL(weight=0.0)},
        methods={
            "DANN": lambda: DANN(lambda_max=1.0, weight=1.0),
            "CORAL": lambda: CORAL(weight=30.0),
            "MMD": lambda: MMD(weight=1.0),
            "CDAN": lambda: CDAN(lambda_max=1.0, weight=1.0),
        }),
    "digits-to-blurred": dict(
        make=lambda seed: digits_to_blurred(seed=seed), model=lambda: MLP((1, 8, 8), 10, hidden=(128,)),
        lr=0.05, epochs=30,
        methods={
            "DANN": lambda: DANN(lambda_max=1.0, weight=0.3, head_lr=0.01),
            "CORAL": lambda: CORAL(weight=10000.0),
            "MMD": lambda: MMD(weight=1.0),
            "CDAN": lambda: CDAN(lambda_max=1.0, weight=0.3, head_lr=0.01),
        }),
}


def train(model, exp, epochs, lr, plugins, seed, anneal=False):
    plugins = [GaninLR(), *plugins] if anneal else list(plugins)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                     criterion=MaskedCrossEntropy(), train_epochs=epochs, train_mb_size=64,
                     plugins=plugins, seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy.train(exp)
    return strategy


def target_accuracy(strategy, bm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accuracy_row(strategy.eval(bm.test_stream), 2)[1])


def run_benchmark(name, seeds, epochs=None, methods=None, anneal=False):
    cfg = BENCHMARKS[name]
    epochs = epochs or cfg["epochs"]
    controls = cfg.get("controls", {})
    names = ["source only", *controls, *(methods or cfg["methods"]), "target oracle"]
    makers = {**controls, **cfg["methods"]}
    acc = {m: [] for m in names}
    for seed in seeds:
        bm = cfg["make"](seed)
        oracle_exp = domain_incremental((bm.target_train, bm.target_test), [Identity()]).train_stream[0]
        for m in names:
            torch.manual_seed(seed)
            model = cfg["model"]()
            plugins = [] if m in ("source only", "target oracle") else [makers[m]()]
            exp = oracle_exp if m == "target oracle" else bm.train_stream[0]
            s = train(model, exp, epochs, cfg["lr"], plugins, seed, anneal)
            acc[m].append(target_accuracy(s, bm))
    return acc


def gap_table(name, acc, epochs):
    src, orc = np.mean(acc["source only"]), np.mean(acc["target oracle"])
    ctrl = next(iter(BENCHMARKS.get(name, {}).get("controls", {})), None)   # e.g. "no align (BN)"
    lines = [f"\n{name}  (target test accuracy %, mean ± std over {len(acc['source only'])} seeds, {epochs} epochs)",
             f"{'method':<16}{'target acc':>16}{'gap closed':>12}" + (f"{'beyond ' + ctrl:>24}" if ctrl else "")]
    for m, v in acc.items():
        v = 100 * np.asarray(v)
        closed = "" if m in ("source only", "target oracle") else \
            f"{100 * (np.mean(v) / 100 - src) / (orc - src):+.0f}%"
        beyond = ""
        if ctrl and m not in ("source only", "target oracle", ctrl):  # the share of the gap left by the control
            c = np.mean(acc[ctrl])
            beyond = f"{100 * (np.mean(v) / 100 - c) / (orc - c):+.0f}%"
        lines.append(f"{m:<16}{np.mean(v):>9.1f} ± {np.std(v):4.1f}{closed:>12}" + (f"{beyond:>24}" if ctrl else ""))
    return "\n".join(lines)


STREAM_METHODS = {
    "naive": lambda: [],
    "replay only": lambda: [CORAL(stream=True, weight=0.0)],
    "DANN (stream)": lambda: [DANN(stream=True, lambda_max=0.3)],
    "CORAL (stream)": lambda: [CORAL(stream=True, weight=10000.0)],
    "MMD (stream)": lambda: [MMD(stream=True, weight=1.0)],
    "CDAN (stream)": lambda: [CDAN(stream=True, lambda_max=0.3)],
}


def run_stream(seeds, epochs):
    rows = {m: [] for m in STREAM_METHODS}
    for seed in seeds:
        bm = domain_stream_digits(seed=seed)
        for m, make in STREAM_METHODS.items():
            torch.manual_seed(seed)
            model = MLP(bm.input_shape, 10, hidden=(128,))
            strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                             criterion=MaskedCrossEntropy(), train_epochs=epochs, plugins=make(), seed=seed,
                             progress=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for exp in bm.train_stream:
                    strategy.train(exp)
                rows[m].append(accuracy_row(strategy.eval(bm.test_stream), len(bm.test_stream)))
    names = ["clean*", "blur", "noise", "rot30", "invert"]
    lines = [f"\ndomain-stream-digits (labels only in the first domain *; accuracy % on every domain after the "
             f"last experience, mean ± std over {len(seeds)} seeds, {epochs} epochs per domain)",
             f"{'method':<16}" + "".join(f"{n:>14}" for n in names) + f"{'mean':>8}"]
    for m, r in rows.items():
        r = 100 * np.asarray(r)
        lines.append(f"{m:<16}" + "".join(f"{a:>8.1f} ± {s:3.1f}" for a, s in zip(r.mean(0), r.std(0)))
                     + f"{r.mean():>8.1f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, few epochs, one benchmark (about a minute)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--part", choices=["offline", "stream", "all"], default="all")
    ap.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    ap.add_argument("--anneal", action="store_true",
                    help="Ganin's learning-rate annealing (GaninLR) in every offline run (not the recipe)")
    ap.add_argument("--save", help="also write the offline accuracies to this JSON file")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="print the offline tables of runs saved with --save (e.g. one file per seed) and exit")
    args = ap.parse_args(argv)
    if args.merge:
        merged = {}
        for path in args.merge:
            with open(path) as f:
                for name, (epochs, acc) in json.load(f).items():
                    slot = merged.setdefault(name, (epochs, {}))[1]
                    for m, v in acc.items():
                        slot.setdefault(m, []).extend(v)
        for name, (epochs, acc) in merged.items():
            print(gap_table(name, acc, epochs))
        return
    torch.set_num_threads(1)
    t0 = time.time()
    seeds = [0] if args.quick else args.seeds
    if args.part in ("offline", "all"):
        saved = {}
        for name in (["digits-to-blurred"] if args.quick else args.benchmarks):
            epochs = 10 if args.quick else BENCHMARKS[name]["epochs"]
            saved[name] = (epochs, run_benchmark(name, seeds, epochs, anneal=args.anneal))
            print(gap_table(name, saved[name][1], epochs), flush=True)
            if args.save:
                with open(args.save, "w") as f:
                    json.dump(saved, f)
    if args.part in ("stream", "all"):
        print(run_stream(seeds, 3 if args.quick else 10), flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

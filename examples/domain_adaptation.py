"""Unsupervised domain adaptation on offline source -> target benchmarks, and over a stream of domains.

Part 1 (offline): two benchmarks with a real gap,

* ``mnist1d-shear``: MNIST-1D, source = the default generator, target =
  ``shear_scale=2.0`` (generator seed 43); a 1-D CNN (``CNN1d``);
* ``digits-to-blurred``: scikit-learn digits -> the same digits blurred with a
  Gaussian of sigma 1 pixel (disjoint halves of the training set); an MLP;

and for each: source-only, DANN, CORAL, MMD, CDAN and the target oracle
(trained on the labeled target training set), target test accuracy, mean ± std
over 3 seeds, and the fraction of the source-only -> oracle gap each method
closes: ``(acc - source_only) / (oracle - source_only)``.

Part 2 (stream of domains): ``domain-stream-digits`` (clean, blur, noise,
rotation 30, inversion; labels only in the first domain), naive vs each
alignment plugin with ``stream=True`` (a 200-sample buffer of past domains, whose
labeled samples are also replayed), and "replay only" (the same buffer and
replay, alignment weight 0); accuracy on every domain after the last experience.

    python examples/domain_adaptation.py            # the full run (README.md)
    python examples/domain_adaptation.py --quick    # about a minute
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from kta_plugins.adapt import CDAN, CORAL, DANN, MMD
from kta_plugins.adapt.target import MaskedCrossEntropy
from kta_plugins.nn import CNN1d, MLP
from scenarios.domains import digits_to_blurred, domain_stream_digits, mnist1d_shear
from scenarios.shifts import Identity
from scenarios.streams import domain_incremental
from strategies import Naive
from strategies.results import accuracy_row

# The recipe (see README.md): every method shares the source-only run's model,
# optimizer (SGD, momentum 0.9), epochs and batch size; alignment sits on the penultimate layer
# ("features"); DANN/CDAN use Ganin's schedule over the whole run with a capped lambda_max and a
# domain head trained at the same rate.
BENCHMARKS = {
    "mnist1d-shear": dict(
        make=lambda seed: mnist1d_shear(seed=seed), model=lambda: CNN1d((1, 40), 10), lr=0.05, epochs=20,
        methods={
            "DANN": lambda: DANN(lambda_max=1.0, weight=0.3, head_lr=0.01),
            "CORAL": lambda: CORAL(weight=100.0),
            "MMD": lambda: MMD(weight=0.1),
            "CDAN": lambda: CDAN(lambda_max=0.3),
        }),
    "digits-to-blurred": dict(
        make=lambda seed: digits_to_blurred(seed=seed), model=lambda: MLP((1, 8, 8), 10, hidden=(128,)),
        lr=0.05, epochs=30,
        methods={
            "DANN": lambda: DANN(lambda_max=0.3),
            "CORAL": lambda: CORAL(weight=10000.0),
            "MMD": lambda: MMD(weight=1.0),
            "CDAN": lambda: CDAN(lambda_max=0.3),
        }),
}


def train(model, exp, epochs, lr, plugins, seed):
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                     criterion=MaskedCrossEntropy(), train_epochs=epochs, train_mb_size=64,
                     plugins=list(plugins), seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy.train(exp)
    return strategy


def target_accuracy(strategy, bm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accuracy_row(strategy.eval(bm.test_stream), 2)[1])


def run_benchmark(name, seeds, epochs=None, methods=None):
    cfg = BENCHMARKS[name]
    epochs = epochs or cfg["epochs"]
    names = ["source only", *(methods or cfg["methods"]), "target oracle"]
    acc = {m: [] for m in names}
    for seed in seeds:
        bm = cfg["make"](seed)
        oracle_exp = domain_incremental((bm.target_train, bm.target_test), [Identity()]).train_stream[0]
        for m in names:
            torch.manual_seed(seed)
            model = cfg["model"]()
            plugins = [] if m in ("source only", "target oracle") else [cfg["methods"][m]()]
            exp = oracle_exp if m == "target oracle" else bm.train_stream[0]
            s = train(model, exp, epochs, cfg["lr"], plugins, seed)
            acc[m].append(target_accuracy(s, bm))
    return acc


def gap_table(name, acc, epochs):
    src, orc = np.mean(acc["source only"]), np.mean(acc["target oracle"])
    lines = [f"\n{name}  (target test accuracy %, mean ± std over {len(acc['source only'])} seeds, {epochs} epochs)",
             f"{'method':<16}{'target acc':>16}{'gap closed':>12}"]
    for m, v in acc.items():
        v = 100 * np.asarray(v)
        closed = "" if m in ("source only", "target oracle") else \
            f"{100 * (np.mean(v) / 100 - src) / (orc - src):+.0f}%"
        lines.append(f"{m:<16}{np.mean(v):>9.1f} ± {np.std(v):4.1f}{closed:>12}")
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
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    seeds = [0] if args.quick else args.seeds
    if args.part in ("offline", "all"):
        for name in (["digits-to-blurred"] if args.quick else args.benchmarks):
            epochs = 10 if args.quick else BENCHMARKS[name]["epochs"]
            print(gap_table(name, run_benchmark(name, seeds, epochs), epochs), flush=True)
    if args.part in ("stream", "all"):
        print(run_stream(seeds, 3 if args.quick else 10), flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

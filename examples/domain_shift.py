"""Domain bridges and concept drift on scikit-learn digits (CPU, offline).

Part ``bridge`` (:mod:`scenarios.bridges`): digits blurred from sigma 0 to 2, and
rotated from 0 to 60 degrees, over 5 experiences (strengths 0, 1/4, ..., 1; disjoint
chunks of ~250 training images each), crossed step by step (**bridge**) or
source-then-target (**jump**: strengths 0, 1, 1, 1, 1, the same chunks, epochs and steps). Labeled (every domain labeled):
naive and replay. Unlabeled (labels only on the source): source only and gradual
self-training (Kumar et al. 2020, ``self-training``, ``fraction=0.9``). Target test
accuracy and the mean over the 5 domains' test sets after the last experience.

Part ``drift`` (:mod:`scenarios.drift`, :mod:`strategies.drift`): 5 experiences of
~250 digits each; 4 classes' labels are permuted cyclically, suddenly from experience 2
or gradually (fraction k/4 of their samples at experience k). Naive vs replay: accuracy
on the final concept, Chaudhry forgetting of the accuracy matrix (which counts drift as
forgetting), and the split of the mean accuracy drop on old concepts into forgetting
(inputs whose label did not change) and drift (inputs whose label changed).

    python examples/domain_shift.py                  # both parts, 3 seeds (README)
    python examples/domain_shift.py --part bridge    # one part
    python examples/domain_shift.py --quick          # 1 seed, 10 epochs (about a minute)
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from kta_plugins.adapt.self_training import SelfTraining
from kta_plugins.adapt.target import MaskedCrossEntropy
from kta_plugins.nn import MLP
from kta_plugins.registry import replay
from scenarios.bridges import bridge
from scenarios.drift import drift_stream
from strategies import Naive
from strategies.drift import train_with_drift_split
from strategies.results import forgetting, train_and_evaluate

# One recipe for every run: MLP(128), SGD lr 0.05 momentum 0.9, batch 32; replay: Avalanche's ReplayPlugin, 200 samples.
LR, MOMENTUM, BATCH, MEM = 0.05, 0.9, 32, 200

BRIDGE_METHODS = {
    # name: (labels, plugins factory)
    "naive (labeled)": ("all", lambda: []),
    "replay (labeled)": ("all", lambda: [replay(mem_size=MEM)]),
    "source only (unlabeled)": ("source", lambda: []),
    "self-training (unlabeled)": ("source", lambda: [SelfTraining(fraction=0.9)]),
}


def _strategy(bm, plugins, epochs, seed):
    torch.manual_seed(seed)
    model = MLP(bm.input_shape, bm.n_classes, hidden=(128,))
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
                 criterion=MaskedCrossEntropy(), train_mb_size=BATCH, train_epochs=epochs, plugins=plugins,
                 seed=seed, progress=False)


#: the bridges: (shift family, what strength 1 means)
BRIDGES = {"blur": ("blur", 2.0), "rotation": ("rotation", 60.0)}
BRIDGE_TITLES = {"blur": "Gaussian blur sigma 0 -> 2", "rotation": "rotation 0 -> 60 degrees"}


def run_bridge(family, seeds, epochs, n_experiences=5):
    """{method: {"bridge"|"jump": [A per seed]}}"""
    shift, top = BRIDGES[family]
    out = {m: {"bridge": [], "jump": []} for m in BRIDGE_METHODS}
    for seed in seeds:
        for m, (labels, plugins) in BRIDGE_METHODS.items():
            for variant in ("bridge", "jump"):
                bm = bridge("digits", shift, n_experiences=n_experiences, max_strength=top,
                            labels=labels, jump=variant == "jump", seed=seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out[m][variant].append(train_and_evaluate(_strategy(bm, plugins(), epochs, seed), bm))
    return out


def _ms(values):
    v = 100 * np.asarray(values)
    return f"{v.mean():5.1f} ± {v.std():4.1f}"


def bridge_table(family, out, epochs, n_seeds):
    lines = [f"\nbridge-digits: {BRIDGE_TITLES[family]}, 5 experiences, {epochs} epochs each; accuracy % after the "
             f"last experience, mean ± std over {n_seeds} seeds",
             f"{'method':<27}{'target: bridge':>16}{'target: jump':>16}{'all domains: bridge':>22}"
             f"{'all domains: jump':>20}"]
    for m, r in out.items():
        tb = [A[-1, -1] for A in r["bridge"]]
        tj = [A[-1, -1] for A in r["jump"]]
        mb = [A[-1].mean() for A in r["bridge"]]
        mj = [A[-1].mean() for A in r["jump"]]
        lines.append(f"{m:<27}{_ms(tb):>16}{_ms(tj):>16}{_ms(mb):>22}{_ms(mj):>20}")
    src = out["self-training (unlabeled)"]["bridge"]
    per_domain = " / ".join(f"{100 * np.mean([A[0, j] for A in src]):.1f}" for j in range(src[0].shape[1]))
    lines.append(f"(source model, after experience 0, on the target: {_ms([A[0, -1] for A in src])}; "
                 f"on each domain: {per_domain})")
    st = out["self-training (unlabeled)"]["bridge"]
    lines.append("self-training over the bridge, accuracy on the domain just reached (diagonal): "
                 + " / ".join(f"{100 * np.mean([A[j, j] for A in st]):.1f}" for j in range(st[0].shape[0])))
    return "\n".join(lines)


DRIFT_METHODS = {"naive": lambda: [], "replay": lambda: [replay(mem_size=MEM)]}


def run_drift(seeds, epochs, kinds=("sudden", "gradual")):
    out = {(k, m): [] for k in kinds for m in DRIFT_METHODS}
    for seed in seeds:
        for kind in kinds:
            bm = drift_stream("digits", n_experiences=5, drift=kind, n_remapped=4, seed=seed)
            for m, plugins in DRIFT_METHODS.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out[(kind, m)].append(train_with_drift_split(_strategy(bm, plugins(), epochs, seed), bm))
    return out


def drift_table(out, epochs, n_seeds):
    lines = [f"\ndrift-digits: 4 of 10 labels permuted (sudden: from experience 2; gradual: fraction k/4), "
             f"5 experiences, {epochs} epochs each; mean ± std over {n_seeds} seeds, %",
             f"{'stream / method':<18}{'final concept':>15}{'Chaudhry forg.':>16}{'old-concept drop':>18}"
             f"{'= forgetting':>15}{'+ drift':>15}{'adaptation':>15}"]
    for (kind, m), runs in out.items():
        A = [a for a, _ in runs]
        means = [s["mean"] for _, s in runs]
        lines.append(f"{kind + ' / ' + m:<18}{_ms([a[-1, -1] for a in A]):>15}{_ms([forgetting(a) for a in A]):>16}"
                     f"{_ms([s['drop'] for s in means]):>18}{_ms([s['forgetting_part'] for s in means]):>15}"
                     f"{_ms([s['drift_part'] for s in means]):>15}{_ms([s['adaptation'] for s in means]):>15}")
    lines.append("(old-concept drop: mean over earlier experiences j of acc(after j) - acc(final), both under j's "
                 "labels; forgetting = the part on inputs whose label did not change, drift = on those whose "
                 "label changed; adaptation = final accuracy on the changed inputs under the new labels)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["bridge", "drift", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="1 seed, 10 epochs (about a minute)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="epochs per experience (default 20, quick 10)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    # Avalanche re-enables its deprecation warnings on every call (simplefilter "always"), so
    # filters are not enough to keep the tables readable (as in strategies/cli.py).
    warnings.showwarning = lambda *a, **k: None
    epochs = args.epochs or (10 if args.quick else 20)
    seeds = args.seeds[:1] if args.quick else args.seeds
    t0 = time.time()
    if args.part in ("bridge", "all"):
        for family in BRIDGES:
            print(bridge_table(family, run_bridge(family, seeds, epochs), epochs, len(seeds)), flush=True)
    if args.part in ("drift", "all"):
        print(drift_table(run_drift(seeds, epochs), epochs, len(seeds)), flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

"""Fair / invariant representations: an attribute adversary behind gradient reversal, and a probe afterwards.

Scenario ``fair-digits`` (:mod:`scenarios.attributes`): scikit-learn digits with a
binary *background* attribute (a grey intensity offset on the whole image)
that agrees with the label group (digits 0-4 vs 5-9) for ``correlation`` of
the training samples. An MLP is trained without adversary, and with
:class:`~kta_plugins.adapt.FairAdversary` on its ``features`` layer at a few
weights (Edwards & Storkey's adversary, and Zhang et al.'s conditional one that
also sees the label). For each run:

* task accuracy on the test set with the training correlation, and on the same
  test digits with the attribute drawn independently of the label;
* probe accuracy: :func:`~kta_plugins.adapt.attribute_probe` (logistic
  regression on the frozen ``features``, fit on half of the independent test
  set, scored on the other half) against the majority-class chance level;
* adversary accuracy: the trained adversary itself (frozen) on the features of
  the whole independent test set: "fooled" (near chance) is not "removed"
  (probe near chance).

Mean ± std over seeds.

    python examples/fair_representations.py             # 3 seeds, 30 epochs, SGD lr 0.05 (README.md)
    python examples/fair_representations.py --lr 0.01   # the same at a lower learning rate (README.md)
    python examples/fair_representations.py --quick     # 3 seeds, 10 epochs (about 20 s)
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from kta_plugins.adapt import FairAdversary, attribute_probe
from kta_plugins.nn import MLP
from scenarios.attributes import fair_digits
from strategies import Naive
from strategies.results import accuracy_row

# Recipe: MLP (1x8x8 -> 128 -> 10), SGD lr 0.05 momentum 0.9, batch 64; the adversary (100 hidden units,
# trained in the same optimizer at the same rate) reads "features" through the reversal layer with a constant
# lambda = 1 (one row with Ganin's schedule, gamma=10); only the weight of the adversary's loss varies.
METHODS = {
    "no adversary": None,
    "adversary w=0.3": dict(weight=0.3, schedule=False),
    "adversary w=1": dict(weight=1.0, schedule=False),
    "adversary w=1.25": dict(weight=1.25, schedule=False),
    "adversary w=1.5": dict(weight=1.5, schedule=False),
    "adversary w=2": dict(weight=2.0, schedule=False),
    "Ganin schedule w=1": dict(weight=1.0),
    "conditional w=1": dict(weight=1.0, conditional=True, schedule=False),
    # the adversary kept near its best response: 5 extra SGD steps (lr 0.1) of the adversary alone per update
    "w=1 + 5 adv. steps": dict(weight=1.0, schedule=False, adversary_steps=5, adversary_lr=0.1),
    "w=1 + 10 adv. steps": dict(weight=1.0, schedule=False, adversary_steps=10, adversary_lr=0.1),
}


def run(method, seed, epochs, correlation, lr=0.05, momentum=0.9):
    """One method on one seed: the table's five numbers, or None when training diverged."""
    bm = fair_digits(seed=seed, correlation=correlation)
    torch.manual_seed(seed)
    model = MLP(bm.input_shape, bm.n_classes, hidden=(128,))
    kwargs = METHODS[method]
    plugins = [] if kwargs is None else [FairAdversary(seed=seed, **kwargs)]
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
              train_epochs=epochs, train_mb_size=64, plugins=plugins, seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.train(bm.train_stream[0])
        acc = accuracy_row(s.eval(bm.test_stream), 2)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        return None  # the adversarial game diverged on this seed: reported as such, not averaged
    probe = attribute_probe(model, "features", bm.test_sets[1], seed=seed)
    return [100 * acc[0], 100 * acc[1], 100 * probe["accuracy"], 100 * probe["chance"],
            100 * adversary_accuracy(model, plugins[0], bm.test_sets[1]) if plugins else float("nan")]


def adversary_accuracy(model, fair, data):
    """The trained adversary itself, frozen, on the features of the whole independent test set."""
    model.eval()
    with torch.no_grad():
        h = model.features(data.x)
        if fair.conditional:
            h = torch.cat([h, torch.nn.functional.one_hot(data.y, fair.n_classes).float()], 1)
        return float((fair.head(h).argmax(1) == data.a).float().mean())


def table(rows, seeds, epochs, correlation, lr=0.05, momentum=0.9):
    lines = [f"\nfair-digits (background attribute, training correlation {correlation}; MLP 128, SGD lr {lr} "
             f"momentum {momentum}, {epochs} epochs; "
             f"mean ± std over {len(seeds)} seeds)",
             f"{'method':<20}{'task acc (corr.)':>18}{'task acc (indep.)':>19}{'probe acc':>15}{'chance':>8}"
             f"{'adversary acc':>15}   probe per seed"]
    for m, runs in rows.items():
        diverged = sum(r is None for r in runs)
        r = np.asarray([r for r in runs if r is not None])
        if not len(r):
            lines.append(f"{m:<20}   diverged on every seed")
            continue
        mu, sd = r.mean(0), r.std(0)
        lines.append(f"{m:<20}{mu[0]:>11.1f} ± {sd[0]:4.1f}{mu[1]:>12.1f} ± {sd[1]:4.1f}"
                     f"{mu[2]:>8.1f} ± {sd[2]:4.1f}{mu[3]:>8.1f}"
                     + (f"{mu[4]:>8.1f} ± {sd[4]:4.1f}" if np.isfinite(mu[4]) else f"{'-':>15}")
                     + "   " + " / ".join(f"{v:.1f}" for v in r[:, 2])
                     + (f"   ({diverged} of {len(runs)} seeds diverged: left out)" if diverged else ""))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs (about 20 s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--correlation", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    epochs = args.epochs or (10 if args.quick else 30)
    rows = {m: [run(m, seed, epochs, args.correlation, args.lr, args.momentum) for seed in args.seeds] for m in METHODS}
    print(table(rows, args.seeds, epochs, args.correlation, args.lr, args.momentum), flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

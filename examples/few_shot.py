"""Few-shot learning: eight meta-learning methods on generated glyphs and MNIST-1D.

For each scenario (glyphs 5-way 1-shot, glyphs 5-way 5-shot, MNIST-1D 4-way
1-shot with meta-training classes 0-5 and unseen test classes 6-9) and each
method (MAML, FOMAML, Meta-SGD, ANIL, ProtoNet, MatchingNet, RelationNet,
Siamese), meta-train with :func:`strategies.meta.run_few_shot` and report the
mean accuracy on 600 episodes of unseen classes with its 95% confidence
interval, averaged over seeds, and the standard deviation across seeds.

    python examples/few_shot.py            # 3 seeds, the full budget (see README.md)
    python examples/few_shot.py --quick    # 1 seed, a few dozen meta-iterations, 100 episodes (~1 minute)
    python examples/few_shot.py --methods maml --scenarios mnist1d-4way-1shot --jobs 2   # one row, 2 processes
    python examples/few_shot.py --methods maml --scenarios mnist1d-4way-1shot --set inner_lr=0.4 --set adaptation_steps=1

CPU only, offline; torch uses one thread.
"""
from __future__ import annotations

import argparse
import ast
import json
import statistics
import time
import warnings

import torch

from strategies.meta import METHODS, run_few_shot

SCENARIOS = ("glyphs-5way-1shot", "glyphs-5way-5shot", "mnist1d-4way-1shot")


def _run(spec):
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    scenario, method, seed, quick, overrides = spec
    return run_few_shot(scenario, method, seed=seed, quick=quick, **overrides)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, short meta-training, 100 test episodes")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 with --quick)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--json", default=None, help="write every run's result to this file")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (each uses one torch thread)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of strategies.meta.method_settings for every run (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    methods = [m for m in args.methods.split(",") if m]
    scenarios = [s for s in args.scenarios.split(",") if s]
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            ap.error(f"--set {key}: {value!r} is not a Python literal")
    runs = [(sc, m, seed, args.quick, overrides) for sc in scenarios for m in methods for seed in seeds]
    results, t0 = [], time.perf_counter()
    if args.jobs == 1:
        done = map(_run, runs)
    else:  # every run is seeded on its own: the same results as one process, in the same order
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(args.jobs)
        done = pool.imap(_run, runs)
    for r in done:
        results.append(r)
        print(f"  {r['scenario']:<20} {r['strategy']:<12} seed {r['seed']}: {100 * r['accuracy']:5.1f} +- "
              f"{100 * r['ci95']:.1f}  ({r['episodes']} episodes, {r['seconds']:.1f} s)", flush=True)
    if args.jobs > 1:
        pool.close()
        pool.join()
    print(f"\nMean accuracy (%) on unseen classes +- 95% CI over {results[0]['episodes']} episodes "
          f"(averaged over {len(seeds)} seed(s)); sd = std over seeds. Chance: 20 / 20 / 25.")
    head = f"{'method':<12}" + "".join(f"{sc:>26}" for sc in scenarios)
    print(head)
    print("-" * len(head))
    for m in methods:
        row = f"{m:<12}"
        for sc in scenarios:
            rs = [r for r in results if r["scenario"] == sc and r["strategy"] == m]
            acc = [100 * r["accuracy"] for r in rs]
            ci = statistics.mean(100 * r["ci95"] for r in rs)
            sd = f" sd {statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
            row += f"{f'{statistics.mean(acc):.1f} +- {ci:.1f}{sd}':>26}"
        print(row)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

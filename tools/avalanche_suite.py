"""Run Avalanche's own strategy tests with KTA's ``Naive``/``Cumulative``/``JointTraining`` in their place.

Given a checkout of Avalanche (its ``tests/`` folder, e.g. ``git archive v0.6.0 tests``), this runs
``tests/training/test_strategies.py``, ``test_plugins.py`` and ``test_replay.py`` (or the files given)
under pytest in one process, after replacing ``avalanche.training.Naive``, ``Cumulative`` and
``JointTraining`` (every module that exports them) by KTA's classes. It counts, for every training and
evaluation epoch the KTA strategies run, whether the loader was one of KTA's tensor loaders (the fast path)
or Avalanche's per-sample loader, and prints the counts after pytest's summary.

    python tools/avalanche_suite.py /tmp/avalanche            # KTA's strategies
    python tools/avalanche_suite.py /tmp/avalanche --unmodified  # Avalanche's own, for comparison
    python tools/avalanche_suite.py /tmp/avalanche --avalanche-defaults  # KTA's, batch sizes 1 as Avalanche's
    python tools/avalanche_suite.py /tmp/avalanche -- -x -k replay  # extra pytest arguments after --

Avalanche's code is not part of this repository: the checkout is read where it lies.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

FILES = ("tests/training/test_strategies.py", "tests/training/test_plugins.py", "tests/training/test_replay.py")


def _with_avalanche_defaults(cls):
    """``cls`` with Avalanche's defaults ``train_mb_size=1``, ``eval_mb_size=None`` instead of KTA's 64 / 256."""

    class Strategy(cls):
        def __init__(self, *, model, optimizer, criterion=None, train_mb_size=1, eval_mb_size=None, **kwargs):
            super().__init__(model=model, optimizer=optimizer, criterion=criterion, train_mb_size=train_mb_size,
                             eval_mb_size=eval_mb_size, **kwargs)

    Strategy.__name__ = Strategy.__qualname__ = cls.__name__
    return Strategy


def substitute(avalanche_defaults=False):
    """Replace Avalanche's Naive/Cumulative/JointTraining by KTA's; return the fast-path counter."""
    import avalanche.training as at
    import avalanche.training.supervised as sup
    import avalanche.training.supervised.cumulative as cum
    import avalanche.training.supervised.joint_training as jt
    import avalanche.training.supervised.strategy_wrappers as sw

    from scenarios.loaders import TensorBatchLoader, TensorMultiLoader
    from strategies.base import Cumulative, JointTraining, KTAStrategyMixin, Naive

    if avalanche_defaults:
        Naive, Cumulative, JointTraining = map(_with_avalanche_defaults, (Naive, Cumulative, JointTraining))
    for mod in (at, sup, sw):
        mod.Naive = Naive
    for mod in (at, sup, cum):
        mod.Cumulative = Cumulative
    for mod in (at, sup, jt):
        mod.JointTraining = JointTraining

    counts = collections.Counter()

    def counting(name, phase):
        own = KTAStrategyMixin.__dict__.get(name)  # the mixin's own (training_epoch), else the template's

        def wrapper(self, **kwargs):
            fast = isinstance(self.dataloader, (TensorBatchLoader, TensorMultiLoader))
            counts[(phase, "fast" if fast else "avalanche loader")] += 1
            return (own or original_of(self))(self, **kwargs)

        def original_of(self):
            for klass in type(self).__mro__[1:]:
                if klass is not KTAStrategyMixin and name in klass.__dict__:
                    return klass.__dict__[name]
            raise AttributeError(name)

        setattr(KTAStrategyMixin, name, wrapper)

    counting("training_epoch", "train epochs")
    counting("eval_epoch", "eval experiences")
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", help="folder holding Avalanche's tests/ (e.g. from `git archive v0.6.0 tests`)")
    ap.add_argument("--unmodified", action="store_true", help="run with Avalanche's own strategies")
    ap.add_argument("--avalanche-defaults", action="store_true",
                    help="KTA's strategies with Avalanche's batch-size defaults (train_mb_size=1, eval_mb_size=None)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = ap.parse_args(argv)
    args.pytest_args = extra_args
    import pytest

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkout = os.path.abspath(args.checkout)
    sys.path[:0] = [checkout, repo]
    os.chdir(checkout)
    counts = None if args.unmodified else substitute(args.avalanche_defaults)
    files = [a for a in args.pytest_args if a.startswith("tests/")] or list(FILES)
    extra = [a for a in args.pytest_args if not a.startswith("tests/")]
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-rfE", *files, *extra])
    if counts is not None:
        print("KTA fast path:", ", ".join(f"{p} {k}: {n}" for (p, k), n in sorted(counts.items())))
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())

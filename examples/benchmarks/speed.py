"""Training speed: plain PyTorch loop vs Avalanche ``Naive`` vs KTA's ``Naive``.

All three train the same model (same initial weights) on the same
class-incremental stream, with the same batch size, epochs and optimizer, in
one process. Each variant runs once to warm up, then ``--repeats`` times,
interleaved; the best time of each (as ``timeit`` does: the least disturbed by
other load) is printed with its ratio to the plain loop. Evaluation is not
timed. Torch uses one thread (``--threads``) so runs do not fight over cores.

    python examples/benchmarks/speed.py [--quick]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from kta_plugins.nn import CNN1d, MLP
from scenarios import class_incremental
from scenarios.loaders import tensor_view


def plain_loop(model, bm, epochs, bs, lr, seed):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    model.train()
    for exp in bm.train_stream:
        x, y, _ = tensor_view(exp.dataset.train())
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), bs):
                idx = perm[i:i + bs]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()


def strategy_loop(cls, model, bm, epochs, bs, lr, seed, **kw):
    from avalanche.training.plugins import EvaluationPlugin
    import warnings

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = cls(model=model, optimizer=opt, train_mb_size=bs, train_epochs=epochs, eval_mb_size=256, **kw)
        for exp in bm.train_stream:
            s.train(exp)


def bench(name, bm, make_model, epochs, bs, lr, repeats):
    from avalanche.training import Naive as AvNaive
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.evaluation.metrics import accuracy_metrics
    from strategies import Naive as KTANaive

    torch.manual_seed(0)
    init = make_model()
    runs = {
        "plain PyTorch loop": lambda m: plain_loop(m, bm, epochs, bs, lr, 0),
        # Avalanche's Naive with an evaluator comparable to KTA's default one.
        "Avalanche Naive": lambda m: strategy_loop(
            AvNaive, m, bm, epochs, bs, lr, 0,
            evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])),
        "KTA Naive": lambda m: strategy_loop(KTANaive, m, bm, epochs, bs, lr, 0, progress=False),
    }
    times = {k: [] for k in runs}
    for f in runs.values():  # warm-up
        f(copy.deepcopy(init))
    for _ in range(repeats):
        for k, f in runs.items():  # interleaved, so drifts in machine load hit all three
            m = copy.deepcopy(init)
            t = time.perf_counter()
            f(m)
            times[k].append(time.perf_counter() - t)
    base = min(times["plain PyTorch loop"])
    print(f"\n{name}: {epochs} epochs x {len(bm.train_stream)} experiences, batch {bs}, "
          f"best of {repeats} runs (median in brackets)")
    for k, ts in times.items():
        print(f"  {k:<20} {min(ts):7.3f} s   {min(ts) / base:5.2f}x   "
              f"({statistics.median(ts):.3f} s, {statistics.median(ts) / statistics.median(times['plain PyTorch loop']):.2f}x)")
    return {k: min(v) / base for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    epochs = 2 if args.quick else 20
    digits = class_incremental("digits", n_experiences=5, seed=0)
    bench("MLP(256) on split digits", digits, lambda: MLP((1, 8, 8), 10), epochs, 64, 0.05, repeats)
    m1d = class_incremental("mnist1d", n_experiences=5, seed=0)
    bench("MNIST-1D CNN on split MNIST-1D", m1d, lambda: CNN1d((1, 40), 10), max(1, epochs // 2), 64, 0.05, repeats)


if __name__ == "__main__":
    main()

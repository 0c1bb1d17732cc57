"""Meta-learning speed: KTA's MAML and ProtoNet strategies vs plain learn2learn loops; task sampling.

1. Time per meta-iteration. Each pair trains the same model (same initial
   weights) on the same episodes (the same seeded :class:`EpisodeSampler`,
   built inside the timed region in both cases), same meta-batch, same Adam
   optimizer, in one process: KTA's strategy (``strategy.train(experience)``,
   Avalanche's meta-learning template, default evaluator) against a
   hand-written learn2learn loop. Runs are interleaved after a warm-up; the
   best time of each is reported with the ratio (target <= 1.10x).
2. Task-sampling throughput (target >= 2,000 tasks/s) with the strategies'
   15 queries per class: KTA's sampler (learn2learn ``Taskset`` with
   ``FusedNWaysKShots`` and a ``task_collate`` that keeps the indices; the samples
   gathered by ``index_select``), one task per call and 32 per call, against the
   stock learn2learn pipeline (``LoadData``, ``RemapLabels``, ``ConsecutiveLabels``).
   Each rate is given per second of wall-clock time and per second of this
   process's CPU time (``time.process_time``): on a shared, overloaded machine
   the first depends on the load, the second much less.

    python examples/benchmarks/meta_speed.py [--quick] [--part all|training|sampling]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

from strategies.meta._l2l import l2l  # learn2learn without gym's start-up notice
import torch
from torch.nn import functional as F

from scenarios.episodes import EpisodeSampler, learn2learn_taskset
from scenarios.registry import SCENARIOS, load_all
from strategies.meta import MAML, ProtoNet, default_backbone
from strategies.meta.protonet import prototypes

N, K, Q, B, INNER_LR, SEED = 5, 1, 15, 4, 0.4, 0


def plain_maml(model, exp, iters):
    sampler = EpisodeSampler(exp, N, K, Q, seed=SEED * 2000)
    maml = l2l.algorithms.MAML(model, lr=INNER_LR, allow_unused=True)
    opt = torch.optim.Adam(maml.parameters(), 1e-3)
    model.train()
    for _ in range(iters):
        sx, sy, qx, qy, _ = sampler.sample_batch(B)
        opt.zero_grad()
        losses = []
        for i in range(B):
            learner = maml.clone()
            learner.adapt(F.cross_entropy(learner(sx[i]), sy[i]))
            losses.append(F.cross_entropy(learner(qx[i]), qy[i]))
        torch.stack(losses).mean().backward()
        opt.step()


def plain_protonet(model, exp, iters):
    sampler = EpisodeSampler(exp, N, K, Q, seed=SEED * 2000)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(iters):
        sx, sy, qx, qy, _ = sampler.sample_batch(1)
        opt.zero_grad()
        protos = prototypes(model.features(sx[0]), sy[0])
        loss = F.cross_entropy(-torch.cdist(model.features(qx[0]), protos).pow(2), qy[0])
        loss.backward()
        opt.step()


def kta(cls, model, exp, iters, **kw):
    s = cls(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3), n_ways=N, k_shots=K, q_queries=Q,
            iterations_per_epoch=iters, progress=False, seed=SEED, **kw)
    s.train(exp)


def bench(name, runs, init, exp, iters, repeats):
    times = {k: [] for k in runs}
    for f in runs.values():  # warm-up
        f(copy.deepcopy(init), exp, max(2, iters // 10))
    for _ in range(repeats):
        for k, f in runs.items():
            m = copy.deepcopy(init)
            t = time.perf_counter()
            f(m, exp, iters)
            times[k].append(time.perf_counter() - t)
    base_key = next(iter(runs))
    base = min(times[base_key])
    print(f"\n{name}: {iters} meta-iterations, best of {repeats} (median in brackets)")
    for k, ts in times.items():
        print(f"  {k:<28} {1000 * min(ts) / iters:7.2f} ms/iteration   {min(ts) / base:5.2f}x   "
              f"({1000 * statistics.median(ts) / iters:.2f} ms, "
              f"{statistics.median(ts) / statistics.median(times[base_key]):.2f}x)")


def rate(f, per_call, seconds):
    """Tasks per second of wall-clock time and per second of CPU time."""
    f()
    n, t, c = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t < seconds:
        f()
        n += per_call
    return n / (time.perf_counter() - t), n / max(time.process_time() - c, 1e-9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=("all", "training", "sampling"), default="all",
                    help="time the meta-iterations, the task sampling, or both (default)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    load_all()
    iters, repeats, seconds = (50, 3, 0.5) if args.quick else (200, 5, 1.0)
    bm = SCENARIOS.build("glyphs-5way-1shot", seed=0)
    exp = bm.train_stream[0]
    torch.manual_seed(0)
    init = default_backbone(bm.input_shape, N)
    print(f"glyphs, {N}-way {K}-shot {Q}-query, model {type(init).__name__}, torch threads {args.threads}")
    if args.part != "sampling":
        training(init, exp, iters, repeats)
    if args.part != "training":
        sampling(bm, exp, repeats, seconds)


def training(init, exp, iters, repeats):
    bench(f"MAML (second order, 1 inner step, meta-batch {B})",
          {"plain learn2learn loop": plain_maml,
           "KTA MAML strategy": lambda m, e, i: kta(MAML, m, e, i, inner_lr=INNER_LR, meta_batch_size=B)},
          init, exp, iters, repeats)
    bench("ProtoNet (1 episode per iteration)",
          {"plain loop": plain_protonet, "KTA ProtoNet strategy": lambda m, e, i: kta(ProtoNet, m, e, i)},
          init, exp, iters * 4, repeats)


def sampling(bm, exp, repeats, seconds):
    print(f"\nTask sampling, {bm.train_stream[0].dataset.__len__()} samples of "
          f"{len(bm.meta_train_classes)} classes, best of {repeats} interleaved runs of {seconds:g} s: "
          f"tasks per wall-clock second (tasks per CPU second)")
    for k in (1, 5):
        s = EpisodeSampler(exp, N, k, Q, seed=0)
        ts = learn2learn_taskset(exp, N, k, Q)
        runs = {"one": lambda: s.sample_batch(1), "many": lambda: s.sample_batch(32), "stock": ts.sample}
        per = {"one": 1, "many": 32, "stock": 1}
        best = {key: (0.0, 0.0) for key in runs}
        for _ in range(repeats):  # interleaved, like the timings above
            for key, f in runs.items():
                w, c = rate(f, per[key], seconds)
                best[key] = (max(best[key][0], w), max(best[key][1], c))
        fmt = {key: f"{w:6.0f} ({c:6.0f})" for key, (w, c) in best.items()}
        print(f"  {N}-way {k}-shot {Q}-query: KTA sampler {fmt['one']} 1 per call, {fmt['many']} 32 per call;  "
              f"stock learn2learn pipeline {fmt['stock']}")


if __name__ == "__main__":
    main()

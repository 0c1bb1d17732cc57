"""Training speed and memory: a plain PyTorch loop vs Avalanche vs KTA, per workload.

Every workload trains the same model (same initial weights) on the same stream, with the same batch
size, epochs and optimizer, three ways: a plain PyTorch loop that computes the same losses (written
out by hand below), Avalanche's ``Naive`` with Avalanche's plugin where Avalanche has one, and KTA's
``Naive`` (or ``MultiTask``) with the plugin a KTA user would pick. Evaluation is not timed.

* Time: in one process, each variant runs once to warm up, then ``--repeats`` times, interleaved (so
  drifts of the machine's load hit every variant alike); the best time (as ``timeit`` reports: the
  least disturbed) and the median are printed with their ratios to the plain loop's. Torch uses one
  thread (``--threads``). Before each timed run the garbage of the previous one is collected
  (``gc.collect()``; the collector stays on during the run): otherwise the collection that Avalanche's
  run leaves pending (its strategy and datasets are hundreds of thousands of objects) lands in whichever
  run comes next.
* Memory (``--memory``): each variant once more in a fresh subprocess; printed: the peak resident
  memory over the run minus the resident memory just before it (``ru_maxrss`` delta: tensors, model
  copies, buffers, loaders) and the peak of Python-level allocations (``tracemalloc``), with ratios.
* ``--stream-length``: KTA ``Naive`` + replay on 5 and on 20 experiences of the same size
  (domain-incremental digits): time per experience of each and their ratio.
* ``--composition``: the cost of KTA's composition layer (loss ledger, optimizer assembly;
  ``kta_plugins.compose``): KTA ``Naive`` against the same class with the layer bypassed (Avalanche's
  ``criterion``/``backward``/``make_optimizer``), without a plugin and with one penalty term added
  through the ledger vs ``strategy.loss +=``; MLP(128) on split digits, 20 epochs x 5, interleaved.

Workloads (``--workloads``, default all):

=============  ===========================================================================
naive-mlp      MLP(256) on split digits, 20 epochs x 5 experiences
naive-cnn      MNIST-1D CNN on split MNIST-1D, 10 epochs x 5
replay         MLP(256) on split digits + replay of 200 (batch 64 + 64 from memory), 20 x 5
kd-fixed       MNIST-1D CNN + logit KD from a fixed teacher (T=4, alpha=0.9), 3 x 5
kd-fixed-cache the same with KTA's per-sample teacher-output cache (``kd.cache_teacher = True``)
kd-previous    MNIST-1D CNN + KD from the previous experience's model, 3 x 5
lwf            MLP(256) on split digits + LwF (alpha=1, T=2): Avalanche's plugin / KTA's ``lwf``, 20 x 5
ewc            MLP(256) on split digits + EWC (lambda=100): Avalanche's plugin / KTA's ``ewc``, 20 x 5
dann           MLP(256), digits -> noisy digits, DANN (domain head 256x2, dropout 0.5), 20 epochs
pcgrad         MNIST-1D multi-task (digit + scale regression), hard sharing + PCGrad, 20 epochs
=============  ===========================================================================

    python examples/benchmarks/speed.py [--quick] [--workloads replay,kd-fixed] [--memory] [--stream-length]
                                        [--composition]
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from kta_plugins.nn import CNN1d, MLP
from scenarios import class_incremental
from scenarios.loaders import tensor_view

BS, LR = 64, 0.05


def _sgd(model, extra=()):
    return torch.optim.SGD(list(model.parameters()) + list(extra), lr=LR, momentum=0.9)


def _fields(exp):
    return tensor_view(exp.dataset.train())


def _batches(n, bs, g):
    perm = torch.randperm(n, generator=g)
    return [perm[i:i + bs] for i in range(0, n, bs)]


def _quiet(fn):
    def run(*a, **k):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*a, **k)
    return run


# ---- plain loops -------------------------------------------------------------------------------------
def plain_naive(model, bm, epochs, **_):
    opt, g = _sgd(model), torch.Generator().manual_seed(0)
    model.train()
    for exp in bm.train_stream:
        x, y, _t = _fields(exp)
        for _ in range(epochs):
            for idx in _batches(len(x), BS, g):
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()


def plain_replay(model, bm, epochs, mem_size=200, **_):
    """Experience-balanced memory of ``mem_size`` (random samples, mem_size / k per past experience);
    each batch: 64 current samples + 64 memory samples (the memory cycled when it runs out)."""
    opt, g = _sgd(model), torch.Generator().manual_seed(0)
    groups = []  # per past experience: (x, y) of a random subset
    model.train()
    for exp in bm.train_stream:
        x, y, _t = _fields(exp)
        if groups:
            mx, my = torch.cat([a for a, _ in groups]), torch.cat([b for _, b in groups])
        for _ in range(epochs):
            mem = []
            for idx in _batches(len(x), BS, g):
                xb, yb = x[idx], y[idx]
                if groups:
                    if not mem:
                        mem = _batches(len(mx), BS, g)
                    m = mem.pop(0)
                    xb, yb = torch.cat([xb, mx[m]]), torch.cat([yb, my[m]])
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
        k = len(groups) + 1
        sizes = [mem_size // k + (1 if i < mem_size % k else 0) for i in range(k)]
        keep = torch.randperm(len(x), generator=g)[: sizes[-1]]
        groups = [(a[: s], b[: s]) for (a, b), s in zip(groups, sizes)] + [(x[keep], y[keep])]


def _kd_soft(s, t, T):
    return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T


def plain_kd(model, bm, epochs, teacher=None, T=4.0, alpha=0.9, **_):
    """``(1 - alpha) CE + alpha T^2 KL`` from ``teacher`` (None: the previous experience's model, on the
    classes it has seen; nothing distilled during the first experience)."""
    opt, g = _sgd(model), torch.Generator().manual_seed(0)
    previous = teacher is None
    seen: list = []
    model.train()
    for exp in bm.train_stream:
        x, y, _t = _fields(exp)
        cols = torch.tensor(sorted(seen)) if previous and seen else None
        for _ in range(epochs):
            for idx in _batches(len(x), BS, g):
                opt.zero_grad()
                out = model(x[idx])
                loss = F.cross_entropy(out, y[idx])
                if teacher is not None:
                    with torch.no_grad():
                        t_out = teacher(x[idx])
                    s_out = out
                    if cols is not None:
                        s_out, t_out = out.index_select(1, cols), t_out.index_select(1, cols)
                    loss = (1 - alpha) * loss + alpha * _kd_soft(s_out, t_out, T)
                loss.backward()
                opt.step()
        if previous:
            teacher = copy.deepcopy(model).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            seen = sorted(set(seen) | set(int(c) for c in exp.classes_in_this_experience))


def plain_lwf(model, bm, epochs, alpha=1.0, T=2.0, **_):
    """Avalanche's LwF: ``CE + alpha * KL(softmax(prev/T) || softmax(out/T))`` on the previous classes."""
    opt, g = _sgd(model), torch.Generator().manual_seed(0)
    prev, seen = None, set()
    model.train()
    for exp in bm.train_stream:
        x, y, _t = _fields(exp)
        au = sorted(seen)
        for _ in range(epochs):
            for idx in _batches(len(x), BS, g):
                opt.zero_grad()
                out = model(x[idx])
                loss = F.cross_entropy(out, y[idx])
                if prev is not None:
                    with torch.no_grad():
                        p_out = prev(x[idx])
                    loss = loss + alpha * F.kl_div(torch.log_softmax(out[:, au] / T, 1),
                                                   torch.softmax(p_out[:, au] / T, 1), reduction="batchmean")
                loss.backward()
                opt.step()
        prev = copy.deepcopy(model)
        seen |= set(int(c) for c in exp.classes_in_this_experience)


def plain_ewc(model, bm, epochs, ewc_lambda=100.0, **_):
    """Avalanche's EWC (separate): ``CE + lambda * sum_e sum_p F_e (p - p_e)^2``, ``F_e`` the mean over
    minibatches of squared gradients at the end of experience ``e``."""
    opt, g = _sgd(model), torch.Generator().manual_seed(0)
    saved = []  # (importances, params) per past experience
    model.train()
    for exp in bm.train_stream:
        x, y, _t = _fields(exp)
        for _ in range(epochs):
            for idx in _batches(len(x), BS, g):
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), y[idx])
                if saved:
                    pen = torch.zeros(())
                    for imps, params in saved:
                        for p, i, q in zip(model.parameters(), imps, params):
                            pen = pen + (i * (p - q).pow(2)).sum()
                    loss = loss + ewc_lambda * pen
                loss.backward()
                opt.step()
        model.eval()
        imps = [torch.zeros_like(p) for p in model.parameters()]
        n = 0
        for i in range(0, len(x), BS):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + BS]), y[i:i + BS]).backward()
            for imp, p in zip(imps, model.parameters()):
                imp += p.grad.pow(2)
            n += 1
        model.train()
        saved.append(([i / n for i in imps], [p.detach().clone() for p in model.parameters()]))


class _GRL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.lam * g, None


def _dann_head(width):
    return nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 256), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(256, 1))


def plain_dann(model, bm, epochs, target=None, **_):
    """``CE(source) + 0.5 (BCE(D(R(h_s)), 0) + BCE(D(R(h_t)), 1))``, ``R`` the gradient reversal with
    Ganin's ramp ``lambda_p = 2 / (1 + exp(-10 p)) - 1``, one target minibatch per source minibatch."""
    g = torch.Generator().manual_seed(0)
    head = _dann_head(model.feature_dim)
    opt = _sgd(model, head.parameters())
    model.train()
    for exp in bm.train_stream:
        x, y, _t = _fields(exp)
        steps = epochs * math.ceil(len(x) / BS)
        step = 0
        for _ in range(epochs):
            for idx in _batches(len(x), BS, g):
                lam = 2.0 / (1.0 + math.exp(-10.0 * min(1.0, step / steps))) - 1.0
                step += 1
                tidx = torch.randint(len(target), (len(idx),), generator=g)
                opt.zero_grad()
                hs = model.features(x[idx])
                ht = model.features(target[tidx])
                loss = F.cross_entropy(model.classifier(hs), y[idx])
                z = head(_GRL.apply(torch.cat([hs, ht]), lam)).squeeze(1)
                zs, zt = z[: len(idx)], z[len(idx):]
                dom = 0.5 * (F.binary_cross_entropy_with_logits(zs, torch.zeros_like(zs))
                             + F.binary_cross_entropy_with_logits(zt, torch.ones_like(zt)))
                (loss + dom).backward()
                opt.step()


def plain_pcgrad(model, bm, epochs, **_):
    """Per-task losses (CE / MSE); on the shared trunk, PCGrad's ``sum_k g_k^PC`` (random orders); on the
    heads, the summed loss's gradient."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    shared = list(model.features.parameters())
    tasks = bm.tasks
    model.train()
    step = 0
    for exp in bm.train_stream:
        x, *targets, _t = _fields(exp)
        targets = dict(zip(tasks, targets))
        for _ in range(epochs):
            for idx in _batches(len(x), BS, g):
                out = model(x[idx])
                losses = [F.mse_loss(out[n], targets[n][idx].to(out[n].dtype)) if s == "regression"
                          else F.cross_entropy(out[n], targets[n][idx].long()) for n, s in tasks.items()]
                grads = torch.stack([torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(
                    loss, shared, retain_graph=True)]) for loss in losses])
                step += 1
                gen = torch.Generator().manual_seed(step)
                pc = torch.zeros_like(grads[0])
                for i in range(len(losses)):
                    gi = grads[i].clone()
                    for j in torch.randperm(len(losses), generator=gen).tolist():
                        if j != i:
                            dot = torch.dot(gi, grads[j])
                            if dot < 0:
                                gi = gi - dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
                    pc += gi
                opt.zero_grad()
                sum(losses).backward()
                off = 0
                for p in shared:
                    p.grad.copy_(pc[off:off + p.numel()].view_as(p))
                    off += p.numel()
                opt.step()


# ---- strategies ----------------------------------------------------------------------------------------
@_quiet
def avalanche_run(model, bm, epochs, plugins=(), **_):
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive as AvNaive
    from avalanche.training.plugins import EvaluationPlugin

    s = AvNaive(model=model, optimizer=_sgd(model), train_mb_size=BS, train_epochs=epochs, eval_mb_size=256,
                plugins=list(plugins),
                evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[]))
    for exp in bm.train_stream:
        s.train(exp)


@_quiet
def kta_run(model, bm, epochs, plugins=(), cls=None, optimizer=None, **_):
    from strategies import Naive

    cls = cls or Naive
    s = cls(model=model, optimizer=optimizer(model) if optimizer else _sgd(model), train_mb_size=BS,
            train_epochs=epochs, eval_mb_size=256, plugins=list(plugins), progress=False)
    for exp in bm.train_stream:
        s.train(exp)


# ---- workloads -----------------------------------------------------------------------------------------
def workloads(quick: bool):
    """name -> (description, stream factory, model factory, epochs, {variant: runner(model, bm, epochs)})."""
    from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin

    from kta_plugins.adapt.dann import DANN
    from kta_plugins.distill import KD

    ep_mlp, ep_cnn, ep_kd = (2, 2, 1) if quick else (20, 10, 3)
    digits = lambda: class_incremental("digits", n_experiences=5, seed=0)  # noqa: E731
    m1d = lambda: class_incremental("mnist1d", n_experiences=5, seed=0)  # noqa: E731
    mlp = lambda: MLP((1, 8, 8), 10)  # noqa: E731
    cnn = lambda: CNN1d((1, 40), 10)  # noqa: E731

    def teacher():
        torch.manual_seed(123)
        t = CNN1d((1, 40), 10).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        return t

    def cached_kd(teacher):
        kd = KD(teacher=teacher)
        kd.cache_teacher = True  # DistillationPlugin's option (kta_plugins.distill.cache)
        return kd

    def dann_stream():
        from scenarios import domain_incremental

        return domain_incremental("digits", [lambda x: x])

    def target_x(bm):
        x = tensor_view(bm.test_stream[0].dataset)[0]
        return x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def multitask():
        from scenarios.multitask import multitask_mnist1d, multitask_stream

        return multitask_stream(multitask_mnist1d("scale"), n_experiences=1, seed=0)

    def hard_sharing(bm):
        from kta_plugins.nn.multitask import HardSharing

        return lambda: HardSharing(bm.tasks, input_shape=bm.input_shape)

    def mtl_kta(model, bm, epochs):
        from kta_plugins.mtl import PCGrad
        from strategies.multitask import MultiTask

        kta_run(model, bm, epochs, plugins=[PCGrad()], cls=MultiTask,
                optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-3))

    out = {
        "naive-mlp": ("MLP(256) on split digits", digits, mlp, ep_mlp, {
            "plain": plain_naive, "avalanche": avalanche_run, "kta": kta_run}),
        "naive-cnn": ("MNIST-1D CNN on split MNIST-1D", m1d, cnn, ep_cnn, {
            "plain": plain_naive, "avalanche": avalanche_run, "kta": kta_run}),
        "replay": ("MLP(256) on split digits, replay 200 (64 + 64)", digits, mlp, ep_mlp, {
            "plain": plain_replay,
            "avalanche": lambda m, bm, e: avalanche_run(m, bm, e, plugins=[ReplayPlugin(mem_size=200)]),
            "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[_registry("replay:mem_size=200")])}),
        "kd-fixed": ("MNIST-1D CNN, KD from a fixed teacher", m1d, cnn, ep_kd, {
            "plain": lambda m, bm, e: plain_kd(m, bm, e, teacher=teacher()),
            "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[KD(teacher=teacher())])}),
        "kd-previous": ("MNIST-1D CNN, KD from the previous model", m1d, cnn, ep_kd, {
            "plain": plain_kd,
            "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[KD(teacher="previous")])}),
        "lwf": ("MLP(256) on split digits, LwF", digits, mlp, ep_mlp, {
            "plain": plain_lwf,
            "avalanche": lambda m, bm, e: avalanche_run(m, bm, e, plugins=[LwFPlugin(alpha=1.0, temperature=2.0)]),
            "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[_registry("lwf:alpha=1.0,temperature=2.0")])}),
        "ewc": ("MLP(256) on split digits, EWC", digits, mlp, ep_mlp, {
            "plain": plain_ewc,
            "avalanche": lambda m, bm, e: avalanche_run(m, bm, e, plugins=[EWCPlugin(ewc_lambda=100.0)]),
            "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[_registry("ewc:ewc_lambda=100")])}),
        "dann": ("MLP(256), digits -> noisy digits, DANN", dann_stream, mlp, ep_mlp, {
            "plain": lambda m, bm, e: plain_dann(m, bm, e, target=target_x(bm)),
            "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[DANN(target=target_x(bm), guards="off")])}),
    }
    out["kd-fixed-cache"] = ("MNIST-1D CNN, KD from a fixed teacher, cached teacher outputs", m1d, cnn, ep_kd, {
        "plain": lambda m, bm, e: plain_kd(m, bm, e, teacher=teacher()),
        "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[cached_kd(teacher())])})
    mt = {}

    def mt_bm():
        if "bm" not in mt:
            mt["bm"] = multitask()
        return mt["bm"]

    out["pcgrad"] = ("MNIST-1D multi-task (digit + scale), hard sharing + PCGrad", mt_bm,
                     lambda: hard_sharing(mt_bm())(), 1 if quick else 20, {"plain": plain_pcgrad, "kta": mtl_kta})
    return out


def _registry(spec):
    from kta_plugins.registry import PLUGINS, load_all

    load_all()
    return PLUGINS.build(spec)


def bench(name, spec, repeats):
    desc, make_bm, make_model, epochs, runs = spec
    bm = make_bm()
    torch.manual_seed(0)
    init = make_model()
    times = {k: [] for k in runs}
    for f in runs.values():  # warm-up
        f(copy.deepcopy(init), bm, epochs)
    for _ in range(repeats):
        for k, f in runs.items():  # interleaved, so drifts in machine load hit every variant
            m = copy.deepcopy(init)
            gc.collect()
            t = time.perf_counter()
            f(m, bm, epochs)
            times[k].append(time.perf_counter() - t)
    best0, med0 = min(times["plain"]), statistics.median(times["plain"])
    print(f"\n{name}: {desc}; {epochs} epochs x {len(bm.train_stream)} experiences, batch {BS}; "
          f"best of {repeats} (median)", flush=True)
    row = {}
    for k, ts in times.items():
        b, m = min(ts), statistics.median(ts)
        row[k] = (b / best0, m / med0)
        print(f"  {k:<10} {b:8.3f} s  {b / best0:5.2f}x   ({m:8.3f} s  {m / med0:5.2f}x)", flush=True)
    return row


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def memory_one(name, variant, quick):
    """Run one variant once in this (fresh) process; print its peak RSS delta and tracemalloc peak (KiB)."""
    import resource
    import tracemalloc

    desc, make_bm, make_model, epochs, runs = workloads(quick)[name]
    bm = make_bm()
    torch.manual_seed(0)
    model = make_model()
    tensor_view(bm.train_stream[0].dataset)  # imports and lazy caches outside the measured window
    base = _rss_kb()
    tracemalloc.start()
    runs[variant](model, bm, epochs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_kb": max(0, peak_rss - base), "py_kb": peak // 1024}))


def memory(name, spec, quick, threads):
    runs = spec[4]
    res = {}
    for k in runs:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-one", name, k, "--threads", str(threads)]
        if quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[k] = json.loads(out)
    p = res["plain"]
    print(f"  memory ({name}): peak RSS delta / tracemalloc peak, ratio to the plain loop", flush=True)
    for k, r in res.items():
        print(f"  {k:<10} {r['rss_kb'] / 1024:8.1f} MiB {r['rss_kb'] / max(1, p['rss_kb']):5.2f}x   "
              f"{r['py_kb'] / 1024:8.1f} MiB {r['py_kb'] / max(1, p['py_kb']):5.2f}x", flush=True)
    return res


def stream_length(repeats, quick):
    """KTA Naive + replay: time per experience on 5 and on 20 experiences of the same size."""
    from scenarios import domain_incremental
    from scenarios.shifts import Permutation

    epochs = 1 if quick else 3
    streams = {n: domain_incremental("digits", [Permutation(seed=i) for i in range(n)]) for n in (5, 20)}
    torch.manual_seed(0)
    init = MLP((1, 8, 8), 10)
    runs = {
        "plain": plain_replay,
        "kta": lambda m, bm, e: kta_run(m, bm, e, plugins=[_registry("replay:mem_size=200")]),
    }
    per = {(k, n): [] for k in runs for n in streams}
    for k, f in runs.items():
        f(copy.deepcopy(init), streams[5], epochs)  # warm-up
    for _ in range(repeats):
        for n, bm in streams.items():
            for k, f in runs.items():
                m = copy.deepcopy(init)
                gc.collect()
                t = time.perf_counter()
                f(m, bm, epochs)
                per[(k, n)].append((time.perf_counter() - t) / n)
    print(f"\nstream length: replay 200, MLP(256), domain-incremental digits (permutations), {epochs} epochs "
          f"per experience; seconds per experience, best of {repeats} (median)", flush=True)
    for k in runs:
        b5, b20 = min(per[(k, 5)]), min(per[(k, 20)])
        m5, m20 = statistics.median(per[(k, 5)]), statistics.median(per[(k, 20)])
        print(f"  {k:<6} 5 exps {b5:.3f} s/exp ({m5:.3f})   20 exps {b20:.3f} s/exp ({m20:.3f})   "
              f"20/5: {b20 / b5:.2f}x ({m20 / m5:.2f}x)", flush=True)


def composition_overhead(repeats, quick):
    """KTA ``Naive`` with and without its composition layer (see the module docstring)."""
    from avalanche.core import SupervisedPlugin
    from avalanche.training.templates import SupervisedTemplate

    from kta_plugins.compose import add_loss_term
    from strategies import Naive

    class Bypassed(Naive):  # the same strategy, the composition layer bypassed
        def criterion(self):
            return SupervisedTemplate.criterion(self)

        def backward(self):
            SupervisedTemplate.backward(self)

        def make_optimizer(self, **kw):
            SupervisedTemplate.make_optimizer(self, **kw)

        def _before_training_exp(self, **kw):
            SupervisedTemplate._before_training_exp(self, **kw)

    def penalty(model):
        return sum((p ** 2).sum() for p in model.parameters())

    class Raw(SupervisedPlugin):
        def before_backward(self, strategy, **kw):
            strategy.loss = strategy.loss + 1e-4 * penalty(strategy.model)

    class Ledger(SupervisedPlugin):
        def before_backward(self, strategy, **kw):
            add_loss_term(strategy, "penalty", penalty(strategy.model), weight=1e-4, owner=self)

    bm = class_incremental("digits", n_experiences=5, seed=0)
    epochs = 2 if quick else 20

    @_quiet
    def one(cls, plugin):
        torch.manual_seed(0)
        model = MLP(bm.input_shape, bm.n_classes, hidden=(128,))
        s = cls(model=model, optimizer=_sgd(model), train_mb_size=BS, train_epochs=epochs,
                plugins=[plugin()] if plugin else [], progress=False)
        t = time.perf_counter()
        for exp in bm.train_stream:
            s.train(exp)
        return time.perf_counter() - t

    cases = {"no plugin, layer bypassed": (Bypassed, None), "no plugin, KTA": (Naive, None),
             "a penalty, loss +=, bypassed": (Bypassed, Raw), "a penalty via the ledger, KTA": (Naive, Ledger)}
    times = {k: [] for k in cases}
    for k, (cls, plugin) in cases.items():  # warm-up
        one(cls, plugin)
    for _ in range(repeats):
        for k, (cls, plugin) in cases.items():
            times[k].append(one(cls, plugin))
    print(f"\ncomposition layer: MLP(128) on split digits, {epochs} epochs x 5, batch {BS}; best of {repeats} (median)")
    for k, v in times.items():
        print(f"  {k:<32} {min(v):.3f} s   ({statistics.median(v):.3f} s)")
    for kta, base in (("no plugin, KTA", "no plugin, layer bypassed"),
                      ("a penalty via the ledger, KTA", "a penalty, loss +=, bypassed")):
        print(f"  {kta} / bypassed: {min(times[kta]) / min(times[base]):.2f}x "
              f"({statistics.median(times[kta]) / statistics.median(times[base]):.2f}x)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--workloads", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (subprocesses)")
    ap.add_argument("--stream-length", action="store_true", help="also time 5 vs 20 experiences")
    ap.add_argument("--composition", action="store_true",
                    help="also time KTA's composition layer (ledger, optimizer assembly) against it bypassed")
    ap.add_argument("--memory-one", nargs=2, metavar=("WORKLOAD", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Avalanche's deprecation notices (ReplayPlugin's storage_policy.update) re-enable themselves with
    # simplefilter("once") on every call: silence the printing instead of the filter.
    warnings.showwarning = lambda *a, **k: None
    if args.memory_one:
        return memory_one(*args.memory_one, args.quick)
    repeats = args.repeats or (3 if args.quick else 5)
    specs = workloads(args.quick)
    names = args.workloads.split(",") if args.workloads is not None else list(specs)
    names = [n for n in names if n]  # --workloads "" runs none (e.g. with --composition only)
    unknown = [n for n in names if n not in specs]
    if unknown:
        ap.error(f"--workloads: unknown {unknown}; choose from {list(specs)}")
    for name in names:
        bench(name, specs[name], repeats)
        if args.memory:
            memory(name, specs[name], args.quick, args.threads)
    if args.stream_length:
        stream_length(repeats, args.quick)
    if args.composition:
        composition_overhead(repeats, args.quick)


if __name__ == "__main__":
    main()

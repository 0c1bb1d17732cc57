"""Where the runs of a compare go: this process, a local process pool, or a Ray cluster.

Every executor calls the same :func:`run_safe` (:func:`strategies.compare.runner.run_one` that
turns an exception into a failed result), so outputs, checkpoints and resume are the same.
"""
from __future__ import annotations

import multiprocessing
import os
import traceback
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

from ..runs import import_extensions, one_line
from .runner import failed, run_one

__all__ = ["EXECUTORS", "run_safe", "run_all", "import_ray"]

#: ``compare(executor=...)`` / ``kta compare --executor``.
EXECUTORS = ("process", "ray")


def run_safe(args) -> dict:
    """``run_one(spec, out, force=force)`` after importing ``imports``; an exception becomes a failed result."""
    spec, out, imports, force = args
    try:
        if imports:  # a fresh (Ray) worker has not registered the user's plugins yet
            import_extensions(imports)
        return run_one(spec, out, force=force)
    except Exception as e:  # one broken run must not stop the others
        return {**failed(spec, one_line(f"{type(e).__name__}: {e}")), "trace": traceback.format_exc()}


def import_ray():
    """``import ray``, or ``ImportError`` naming the optional extra."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"executor 'ray' needs Ray, an optional extra: pip install 'kta-plugins[ray]' ({e})") from None
    return ray


def _run_on_ray(todo: list, address: Optional[str], jobs: Optional[int], progress) -> list[dict]:
    """One Ray task per run; results in the order of ``todo``."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:  # connect to the given cluster, or start a local one for this call
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(run_safe)  # max_retries (3): a dead worker's run is re-run
        results: list = [None] * len(todo)
        pending: dict = {}
        queue = list(enumerate(todo))
        while queue or pending:
            while queue and (jobs is None or len(pending) < jobs):
                i, args = queue.pop(0)
                cuda = str(dict(args[0].settings).get("device", "cpu")).startswith("cuda")
                pending[task.options(num_gpus=1 if cuda else 0).remote(args)] = i  # Ray hides GPUs not asked for
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as e:  # the worker died more often than Ray retries, or the task was cancelled
                results[i] = failed(todo[i][0], f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            progress.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


def _worker_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def run_all(todo: list, executor: str = "process", jobs: Optional[int] = None,
            ray_address: Optional[str] = None) -> list[dict]:
    """Run ``todo`` (``(spec, out, imports, force)`` tuples) with ``executor``; results in order."""
    from tqdm.auto import tqdm

    if executor == "ray":
        with tqdm(total=len(todo), desc="runs", leave=False) as bar:
            return _run_on_ray(todo, ray_address, jobs, bar)
    if (jobs or 1) == 1:
        return [run_safe(a) for a in tqdm(todo, desc="runs", leave=False)]
    # "spawn", not Linux's default "fork": a child forked after the parent used torch (the dry build of
    # every run) inherits torch's OpenMP thread pool in a state it cannot use, and hangs at its first op.
    # Each worker gets its share of the cores: torch's default (one thread per core in every worker)
    # oversubscribes them, and spinning OpenMP threads made small runs 10-30 times slower.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_threads, initargs=(threads,)) as pool:
        return list(tqdm(pool.map(run_safe, todo), total=len(todo), desc="runs", leave=False))

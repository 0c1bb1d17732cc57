"""Running the runs of a compare config: the dry build, one run with checkpoints, the folder lock.

* :func:`prepare` dry-builds every (scenario, strategy entry) of a config with
  :func:`strategies.runs.probe_run` (scenario, model, strategy, plugins, one
  training iteration) before anything is trained, collects every error with
  its ``file:line: key``, and gives each run its identity: the hash of its
  resolved settings (:func:`strategies.runs.run_hash`).
* :func:`run_one` trains one run in ``runs/<scenario>__<name>__seed<seed>__<hash>/``,
  checkpointing after every experience. A finished run with the same hash is
  skipped; a changed setting gives another hash, so another folder: a result
  is never reused for other settings. ``force=True`` re-runs.
* :func:`folder_lock` keeps two ``kta compare`` from working in one folder.
* :func:`selection_scores`: the label-free scores of a trained run of a ``group`` (config ``select``),
  from the scenario's held-out source split, its source training inputs and its unlabeled target
  inputs; no target label is read. Stored in the run's ``result.json`` as ``selection_scores``.
"""
from __future__ import annotations

import io
import json
import os
import random
import resource
import shutil
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..runs import (NonFiniteLoss, SettingError, atomic_write_text, build_run, non_finite_guard, one_line, probe_run,
                    resolve, run_hash)
from .config import Config, ConfigError, RunSpec

__all__ = ["prepare", "run_one", "failed", "folder_lock", "FolderBusy", "check_run_files", "selection_scores", "RESULT",
           "CHECKPOINT", "LOCK"]

RESULT, CHECKPOINT, LOCK = "result.json", "checkpoint.pt", ".kta-compare.lock"


class FolderBusy(RuntimeError):
    """Another ``kta compare`` holds the output folder's lock."""


def prepare(cfg: Config) -> list[RunSpec]:
    """Dry-build every (scenario, strategy entry) of ``cfg`` and return its runs with their hashes.

    Raises :class:`ConfigError` listing every error (``file:line: key: message``); writes nothing.
    """
    errors, runs = [], []
    for k, sc in enumerate(cfg.scenarios):
        for i, st in enumerate(cfg.strategies):
            settings = cfg.entry_settings(i)
            plugins = tuple(st.get("plugins", []))
            try:
                first = probe_run(sc, st["strategy"], plugins, seed=cfg.seeds[0], **settings)
            except SettingError as e:
                errors.append(f"{cfg.locate(e.key, i, k)}: {e}")
                continue
            model = settings.get("model") or first["model"]["name"]  # the default model, by name
            for seed in cfg.seeds:
                resolved = first if seed == cfg.seeds[0] else resolve(
                    sc, st["strategy"], plugins, seed=seed, **{**settings, "model": model})
                spec = RunSpec(sc, st["name"], st["strategy"], plugins, seed,
                               tuple(sorted({**settings, "model": model}.items())), **cfg.selection(i))
                runs.append(replace(spec, digest=run_hash(resolved), resolved=json.dumps(resolved, sort_keys=True)))
    if errors:
        raise ConfigError(errors)
    order = {(s.scenario, s.name, s.seed): n for n, s in enumerate(cfg.runs())}
    return sorted(runs, key=lambda s: order[(s.scenario, s.name, s.seed)])


@contextmanager
def folder_lock(out: Path):
    """Hold ``out/.kta-compare.lock`` (``fcntl.flock``, released by the kernel even on SIGKILL);
    :class:`FolderBusy` when another process holds it."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    f = open(out / LOCK, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise FolderBusy(f"{out} is in use by another kta compare (pid {pid}); wait for it to finish "
                             "or choose another output folder") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def check_run_files(specs, out: Path) -> list[str]:
    """Errors for unreadable ``result.json`` / ``checkpoint.pt`` files of ``specs`` in ``out``."""
    import torch

    errors = []
    for s in specs:
        d = out / "runs" / s.run_id
        if (d / RESULT).exists():
            try:
                json.loads((d / RESULT).read_text())["status"]
            except Exception as e:
                errors.append(f"{d / RESULT}: unreadable result ({one_line(e)}); delete it or re-run with --force")
        elif (d / CHECKPOINT).exists():
            try:
                torch.load(d / CHECKPOINT, weights_only=True)["next_exp"]
            except Exception as e:
                errors.append(f"{d / CHECKPOINT}: unreadable checkpoint ({one_line(e)[:200]}); delete it or "
                              "re-run with --force")
    return errors


# ------------------------------------------------------------------ one run
def _rng_state(strategy) -> dict:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "data": strategy._data_generator.get_state(),
    }


def _set_rng_state(strategy, st: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((st["python_version"], tuple(st["python"]), None))
    strategy._data_generator.set_state(st["data"])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def selection_scores(model, bm) -> dict:
    """:func:`kta_plugins.adapt.select.score_model` of a trained ``model`` on a source-target scenario ``bm``.

    Reads ``bm.source_val`` (held-out labeled source samples, never trained on), the inputs of
    ``bm.source_train`` and ``bm.target_unlabeled`` (inputs only): no target label, no test data.
    The model is moved to the CPU (the run is over).
    """
    from kta_plugins.adapt.select import score_model

    val = getattr(bm, "source_val", None)
    if getattr(bm, "kind", None) != "source-target" or val is None:
        raise ValueError("label-free selection needs a source-target scenario with a held-out source split "
                         "(val_fraction > 0)")
    xv, yv = (val.tensors[0], val.tensors[1]) if hasattr(val, "tensors") else val
    model.cpu()
    return score_model(model, (xv, yv), bm.source_train.tensors[0], bm.target_unlabeled)


def run_one(spec: RunSpec, out_dir, log: bool = True, force: bool = False) -> dict:
    """Train one (scenario, strategy, seed) run with a checkpoint after every experience.

    A finished run (``result.json``) is returned as it is unless ``force``; an unfinished one
    continues from its checkpoint. ``spec.digest`` should be set (:func:`prepare`); without it,
    the run is resolved here.
    """
    import numpy as np
    import torch
    from avalanche.core import SupervisedPlugin

    from ..base import JointTraining
    from ..results import accuracy_row, average_accuracy, bwt, forgetting

    settings = dict(spec.settings)
    if not spec.digest:
        resolved = probe_run(spec.scenario, spec.strategy, list(spec.plugins), seed=spec.seed, **settings)
        spec = replace(spec, digest=run_hash(resolved), resolved=json.dumps(resolved, sort_keys=True))
        settings["model"] = settings.get("model") or resolved["model"]["name"]
    run_dir = Path(out_dir) / "runs" / spec.run_id
    result_path, ckpt_path = run_dir / RESULT, run_dir / CHECKPOINT
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if result_path.exists():
        done = json.loads(result_path.read_text())
        if not (spec.score and done.get("status") == "finished" and "selection_scores" not in done):
            return done
        shutil.rmtree(run_dir)  # finished without the selection scores (no select then): train it again
    run_dir.mkdir(parents=True, exist_ok=True)
    bm, strat = build_run(spec.scenario, spec.strategy, list(spec.plugins), seed=spec.seed,
                          log_dir=str(run_dir / "tb") if log else None, progress=False, **settings)
    user_plugins = list(strat.kta_user_plugins)  # the config's plugins (a strategy may add its own)
    strat.plugins.insert(0, non_finite_guard())
    n = len(bm.test_stream)
    state = {"next_exp": 0, "rows": [], "times": [], "peak_rss_mb": [], "baseline": None, "resumed_from": None}
    note = ""
    if ckpt_path.exists():
        try:
            ck = torch.load(ckpt_path, weights_only=True)
        except Exception as e:
            raise RuntimeError(f"{ckpt_path}: unreadable checkpoint ({one_line(e)[:200]}); delete it or re-run "
                               "with --force") from None
        if all(hasattr(p, "load_state_dict") for p in user_plugins):
            strat.model.load_state_dict(ck["model"])
            for p, sd in zip(user_plugins, ck["plugins"]):
                p.load_state_dict(sd)
            for k, v in ck["clock"].items():
                setattr(strat.clock, k, v)
            _set_rng_state(strat, ck["rng"])
            pending = [ck["optimizer"]]

            class LoadOptimizer(SupervisedPlugin):  # after Avalanche rebuilt the optimizer for the experience
                def before_training_exp(self, s, **kw):
                    if pending:
                        s.optimizer.load_state_dict(pending.pop())

            strat.plugins.insert(0, LoadOptimizer())
            state.update({k: ck[k] for k in ("next_exp", "rows", "times", "peak_rss_mb", "baseline")})
            state["resumed_from"] = ck["next_exp"]
        else:
            note = "restarted from the first experience: a plugin has no state_dict to resume from"
    if state["baseline"] is None:  # forward-transfer reference: the random-init model
        state["baseline"] = accuracy_row(strat.eval(bm.test_stream), n).tolist()
    status, message = "finished", note
    joint = isinstance(strat, JointTraining)  # trained once on the whole stream: one row, no checkpoint
    exps = [bm.train_stream] if joint else list(bm.train_stream)
    try:
        for i in range(state["next_exp"], len(exps)):
            t0 = time.perf_counter()
            strat.train(exps[i])
            state["times"].append(time.perf_counter() - t0)
            state["peak_rss_mb"].append(_peak_rss_mb())
            state["rows"].append(accuracy_row(strat.eval(bm.test_stream), n).tolist())
            state["next_exp"] = i + 1
            if i + 1 < len(exps):
                buf = io.BytesIO()
                torch.save({
                    **{k: state[k] for k in ("next_exp", "rows", "times", "peak_rss_mb", "baseline")},
                    "model": strat.model.state_dict(), "optimizer": strat.optimizer.state_dict(),
                    "plugins": [p.state_dict() if hasattr(p, "state_dict") else None for p in user_plugins],
                    "clock": {k: v for k, v in vars(strat.clock).items() if isinstance(v, int)},
                    "rng": _rng_state(strat),
                }, buf)
                tmp = ckpt_path.with_suffix(".tmp")
                tmp.write_bytes(buf.getvalue())
                tmp.replace(ckpt_path)
    except NonFiniteLoss as e:
        status, message = "failed", str(e)
    A = np.array(state["rows"]) if state["rows"] else np.zeros((0, n))
    # collapse guards of the domain-adaptation plugins (kta_plugins.adapt.guards): the run is marked
    guard_events = [e for p in strat.plugins for e in getattr(p, "guard_events", None) or []]
    if guard_events:
        marks = "; ".join(f"{e['plugin']} {e['guard']} guard at step {e['step']}" for e in guard_events)
        message = f"{message}; {marks}" if message else f"collapse guard: {marks}"
    result = {
        "run": spec.run_id, "run_hash": spec.digest, "scenario": spec.scenario, "name": spec.name,
        "strategy": spec.strategy, "plugins": list(spec.plugins), "seed": spec.seed, "settings": settings,
        "resolved": json.loads(spec.resolved) if spec.resolved else None, "status": status,
        "message": message, "accuracy_matrix": A.tolist(), "baseline_accuracy": state["baseline"],
        "train_time_s": state["times"], "peak_rss_mb": state["peak_rss_mb"],
        "resumed_from_experience": state["resumed_from"], "joint": joint, "guard_events": guard_events,
    }
    if status == "finished" and len(A):
        b = np.array(state["baseline"])
        result.update({
            "average_accuracy": average_accuracy(A), "forgetting": forgetting(A), "bwt": bwt(A),
            "forward_transfer": float(np.mean([A[j - 1, j] - b[j] for j in range(1, min(A.shape))]))
            if min(A.shape) > 1 else float("nan"),
        })
    if spec.score:
        result["group"] = spec.group
    if spec.score and status == "finished" and len(A):
        result["target_accuracy"] = float(A[-1, -1])  # test stream [source, target]: for the oracle only
        try:
            result["selection_scores"] = selection_scores(strat.model, bm)
        except Exception as e:  # the training is kept; the report leaves the run out of the selection
            result["selection_scores"] = None
            result["message"] = f"{result['message']}; " if result["message"] else ""
            result["message"] += f"selection scores failed: {one_line(f'{type(e).__name__}: {e}')}"
    atomic_write_text(result_path, json.dumps(result, indent=2, default=float) + "\n")
    ckpt_path.unlink(missing_ok=True)
    return result


def failed(spec: RunSpec, message: str) -> dict:
    """The result of a run that could not run."""
    return {"run": spec.run_id, "run_hash": spec.digest, "scenario": spec.scenario, "name": spec.name,
            "seed": spec.seed, "status": "failed", "message": message}

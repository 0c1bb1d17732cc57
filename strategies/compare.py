"""``kta compare CONFIG.yaml``: strategies x scenarios x seeds, resumable, one report.

Config (YAML, read with ``yaml.safe_load`` semantics; every key is checked, and
errors name the key and its line in the file)::

    seeds: [0, 1, 2]
    scenarios: [split-digits, "split-mnist1d:n_experiences=5"]
    settings: {epochs: 1, lr: 0.1, batch_size: 16}      # kta run's options (optional)
    strategies:
      - {name: naive, strategy: naive}
      - {name: replay, strategy: naive, plugins: ["replay:mem_size=200"]}

Output folder (``--out``, default ``results/<config name>``):

* ``runs/<run>/result.json`` per run (accuracy matrix, average accuracy,
  forgetting, BWT, forward transfer against the random-init model, training
  time and peak memory per experience), written atomically;
* ``runs/<run>/checkpoint.pt`` after every experience (model, optimizer,
  plugin ``state_dict``s, RNG states, the rows so far), loaded with
  ``weights_only=True``. Re-running the same command skips finished runs and
  continues unfinished ones from their last experience, ending with the same
  numbers as an uninterrupted run. A plugin without ``state_dict`` cannot be
  restored: such a run restarts from its first experience (same numbers,
  more time) and says so;
* ``results.csv`` (one row per run), ``summary.md`` (mean ± std over seeds),
  ``heatmaps/<scenario>__<name>.png`` (mean accuracy matrix) and
  ``comparison.png`` (average accuracy per strategy and scenario);
* TensorBoard logs under ``runs/<run>/tb``.

A NaN or infinite loss stops that run (its ``result.json`` says why) and the
others go on.

Executors (``executor=``, ``--executor``):

* ``"process"`` (default): ``--jobs 1`` runs one run after the other in this
  process; ``--jobs N`` runs N at a time in a local process pool.
* ``"ray"`` (optional extra: ``pip install 'kta-plugins[ray]'``): one Ray task
  (one CPU, plus one GPU when ``settings.device`` is ``cuda...``) per run, on the cluster at ``ray_address`` / ``--ray-address`` /
  ``$RAY_ADDRESS``, else on a local cluster started for the call (and shut down
  after it); ``--jobs N`` then caps the runs in flight. Each task is the same
  :func:`run_one` as above, so outputs, checkpoints and resume are the same; a
  task whose worker dies is retried by Ray and continues from its last
  checkpoint. On a multi-node cluster the output folder and the ``--import``
  files must be on a file system every node sees at the same path.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import resource
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from avalanche.core import SupervisedPlugin

__all__ = ["ConfigError", "load_config", "compare", "run_one", "RunSpec", "EXECUTORS"]

#: ``compare(executor=...)`` / ``kta compare --executor``.
EXECUTORS = ("process", "ray")

_TOP_KEYS = {"seeds": list, "scenarios": list, "strategies": list, "settings": dict, "output": str}
_STRATEGY_KEYS = {"name": str, "strategy": str, "plugins": list}
_SETTINGS = {"epochs": int, "lr": float, "momentum": float, "batch_size": int, "model": str, "device": str}


class ConfigError(ValueError):
    """A bad compare config; the message names the file, line and key."""


class NonFiniteLoss(RuntimeError):
    pass


# ------------------------------------------------------------------ config
def _load_with_lines(text: str):
    """``yaml.safe_load`` that also records the line of every mapping key (1-based)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        out = _LineDict(mapping)
        out.lines = lines
        out.line = node.start_mark.line + 1
        return out

    def construct_sequence(loader, node, deep=False):
        out = _LineList(yaml.SafeLoader.construct_sequence(loader, node, deep=True))
        out.lines = [n.start_mark.line + 1 for n in node.value]
        out.line = node.start_mark.line + 1
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return yaml.load(text, Loader=Loader)  # SafeLoader underneath: no arbitrary objects


class _LineDict(dict):
    lines: dict = {}
    line: int = 0


class _LineList(list):
    lines: list = []
    line: int = 0


@dataclass(frozen=True)
class RunSpec:
    scenario: str
    name: str
    strategy: str
    plugins: tuple
    seed: int
    settings: tuple  # sorted (key, value) pairs

    @property
    def run_id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{self.scenario}__{self.name}__seed{self.seed}")


@dataclass
class Config:
    path: Path
    seeds: list
    scenarios: list
    strategies: list
    settings: dict = field(default_factory=dict)
    output: Optional[str] = None

    def runs(self) -> list[RunSpec]:
        return [
            RunSpec(sc, st["name"], st["strategy"], tuple(st.get("plugins", [])), seed,
                    tuple(sorted(self.settings.items())))
            for sc in self.scenarios for st in self.strategies for seed in self.seeds
        ]


def load_config(path) -> Config:
    """Read and validate a compare config; raise :class:`ConfigError` naming the key and line."""
    from scenarios.registry import RegistryError, parse_spec

    from .cli import _registries

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = _load_with_lines(path.read_text())
    except Exception as e:  # yaml errors carry their own position
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping with keys {sorted(_TOP_KEYS)}")

    def err(key, line, msg):
        return ConfigError(f"{path}:{line}: {key}: {msg}")

    for key in data:
        if key not in _TOP_KEYS:
            raise err(key, data.lines.get(key, data.line), f"unknown key; expected one of {sorted(_TOP_KEYS)}")
    for key in ("seeds", "scenarios", "strategies"):
        if key not in data:
            raise err(key, data.line, "missing (required)")
    for key, typ in _TOP_KEYS.items():
        if key in data and not isinstance(data[key], typ):
            raise err(key, data.lines[key], f"must be a {typ.__name__}, got {type(data[key]).__name__}")
    SCENARIOS, STRATEGIES, PLUGINS = _registries()
    for i, seed in enumerate(data["seeds"]):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise err(f"seeds[{i}]", data["seeds"].lines[i], f"must be an integer, got {seed!r}")
    if not data["seeds"] or not data["scenarios"] or not data["strategies"]:
        empty = next(k for k in ("seeds", "scenarios", "strategies") if not data[k])
        raise err(empty, data.lines[empty], "must not be empty")

    def check_spec(reg, spec, key, line):
        if not isinstance(spec, str):
            raise err(key, line, f"must be a string like 'name:key=value', got {spec!r}")
        try:
            name, raw = parse_spec(spec)
            reg.parse_kwargs(name, raw)
        except RegistryError as e:
            raise err(key, line, str(e)) from None

    for i, sc in enumerate(data["scenarios"]):
        check_spec(SCENARIOS, sc, f"scenarios[{i}]", data["scenarios"].lines[i])
    names = set()
    for i, st in enumerate(data["strategies"]):
        line = data["strategies"].lines[i]
        if not isinstance(st, dict):
            raise err(f"strategies[{i}]", line, "must be a mapping with keys name, strategy, plugins")
        for k in st:
            if k not in _STRATEGY_KEYS:
                raise err(f"strategies[{i}].{k}", st.lines.get(k, line),
                          f"unknown key; expected one of {sorted(_STRATEGY_KEYS)}")
        for k in ("name", "strategy"):
            if k not in st:
                raise err(f"strategies[{i}].{k}", line, "missing (required)")
        for k, typ in _STRATEGY_KEYS.items():
            if k in st and not isinstance(st[k], typ):
                raise err(f"strategies[{i}].{k}", st.lines[k], f"must be a {typ.__name__}, got {type(st[k]).__name__}")
        if st["name"] in names:
            raise err(f"strategies[{i}].name", st.lines["name"], f"duplicate name {st['name']!r}")
        names.add(st["name"])
        check_spec(STRATEGIES, st["strategy"], f"strategies[{i}].strategy", st.lines["strategy"])
        for j, p in enumerate(st.get("plugins", [])):
            check_spec(PLUGINS, p, f"strategies[{i}].plugins[{j}]", st["plugins"].lines[j])
    settings = dict(data.get("settings", {}))
    for k, v in settings.items():
        line = data["settings"].lines.get(k, data["settings"].line)
        if k not in _SETTINGS:
            raise err(f"settings.{k}", line, f"unknown setting; expected one of {sorted(_SETTINGS)}")
        typ = _SETTINGS[k]
        ok = isinstance(v, typ) and not isinstance(v, bool) or (typ is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise err(f"settings.{k}", line, f"must be {typ.__name__}, got {type(v).__name__} {v!r}")
    return Config(path, list(data["seeds"]), list(data["scenarios"]),
                  [dict(s) for s in data["strategies"]], settings, data.get("output"))


# ------------------------------------------------------------------ one run
def _rng_state(strategy) -> dict:
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
    import torch

    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((st["python_version"], tuple(st["python"]), None))
    strategy._data_generator.set_state(st["data"])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _guard_plugin():
    class NonFiniteGuard(SupervisedPlugin):
        """Stops the run at the first NaN / infinite loss."""

        def before_backward(self, strategy, **kwargs):
            if not bool(torch_isfinite(strategy.loss)):
                raise NonFiniteLoss(
                    f"non-finite loss {float(strategy.loss.detach().sum())} at experience "
                    f"{strategy.experience.current_experience}, iteration {strategy.clock.train_epoch_iterations}")

    return NonFiniteGuard()


def torch_isfinite(t):
    import torch

    return torch.isfinite(t.detach()).all()


def run_one(spec: RunSpec, out_dir, log: bool = True) -> dict:
    """Train one (scenario, strategy, seed) run with a checkpoint after every experience."""
    import torch

    from .cli import atomic_write_text, build_run
    from .results import accuracy_row, average_accuracy, bwt, forgetting

    run_dir = Path(out_dir) / "runs" / spec.run_id
    result_path, ckpt_path = run_dir / "result.json", run_dir / "checkpoint.pt"
    if result_path.exists():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(spec.settings)
    bm, strat = build_run(spec.scenario, spec.strategy, list(spec.plugins), seed=spec.seed,
                          log_dir=str(run_dir / "tb"), progress=False, **settings)
    user_plugins = list(strat.plugins[: len(spec.plugins)])  # build_run puts them first
    strat.plugins.insert(0, _guard_plugin())
    n = len(bm.test_stream)
    state = {"next_exp": 0, "rows": [], "times": [], "peak_rss_mb": [], "baseline": None, "resumed_from": None}
    note = ""
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=True)
        if all(hasattr(p, "load_state_dict") for p in user_plugins):
            strat.model.load_state_dict(ck["model"])
            for p, sd in zip(user_plugins, ck["plugins"]):
                p.load_state_dict(sd)
            for k, v in ck["clock"].items():
                setattr(strat.clock, k, v)
            _set_rng_state(strat, ck["rng"])
            pending = [ck["optimizer"]]

            class _LoadOptimizer(SupervisedPlugin):  # after Avalanche rebuilt the optimizer for the experience
                def before_training_exp(self, s, **kw):
                    if pending:
                        s.optimizer.load_state_dict(pending.pop())

            strat.plugins.insert(0, _LoadOptimizer())
            state.update({k: ck[k] for k in ("next_exp", "rows", "times", "peak_rss_mb", "baseline")})
            state["resumed_from"] = ck["next_exp"]
        else:
            note = "restarted from the first experience: a plugin has no state_dict to resume from"
    if state["baseline"] is None:  # forward-transfer reference: the random-init model
        state["baseline"] = accuracy_row(strat.eval(bm.test_stream), n).tolist()
    status, message = "finished", note
    exps = list(bm.train_stream)
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
    result = {
        "run": spec.run_id, "scenario": spec.scenario, "name": spec.name, "strategy": spec.strategy,
        "plugins": list(spec.plugins), "seed": spec.seed, "settings": settings, "status": status,
        "message": message, "accuracy_matrix": A.tolist(), "baseline_accuracy": state["baseline"],
        "train_time_s": state["times"], "peak_rss_mb": state["peak_rss_mb"],
        "resumed_from_experience": state["resumed_from"],
    }
    if status == "finished" and len(A):
        b = np.array(state["baseline"])
        result.update({
            "average_accuracy": average_accuracy(A), "forgetting": forgetting(A), "bwt": bwt(A),
            "forward_transfer": float(np.mean([A[j - 1, j] - b[j] for j in range(1, min(A.shape))]))
            if min(A.shape) > 1 else float("nan"),
        })
    atomic_write_text(result_path, json.dumps(result, indent=2, default=float) + "\n")
    ckpt_path.unlink(missing_ok=True)
    return result


def _run_safe(args):
    spec, out, imports = args
    try:
        if imports:  # a fresh (Ray) worker has not registered the user's plugins yet
            from .cli import import_extensions

            import_extensions(imports)
        return run_one(spec, out)
    except Exception as e:  # one broken run must not stop the others
        return {**_failed(spec, f"{type(e).__name__}: {e}"), "trace": traceback.format_exc()}


# ------------------------------------------------------------------ report
_METRICS = ("average_accuracy", "forgetting", "bwt", "forward_transfer")


def _fmt(values, pct=True):
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "n/a"
    k = 100 if pct else 1
    return f"{k * np.mean(v):.1f} ± {k * np.std(v):.1f}"


def write_report(results: Sequence[dict], out_dir) -> str:
    from .cli import atomic_write_text

    out = Path(out_dir)
    fields = ["run", "scenario", "name", "strategy", "plugins", "seed", "status", *_METRICS, "train_time_s", "message"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in results:
        row = dict(r)
        row["plugins"] = " ".join(r.get("plugins", []))
        row["train_time_s"] = round(sum(r.get("train_time_s", [])), 3)
        w.writerow(row)
    atomic_write_text(out / "results.csv", buf.getvalue())
    groups: dict = {}
    for r in results:
        groups.setdefault((r["scenario"], r["name"]), []).append(r)
    lines = ["| scenario | strategy | runs | average accuracy (%) | forgetting (%) | BWT (%) | forward transfer (%) | train time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for (sc, name), rs in groups.items():
        ok = [r for r in rs if r["status"] == "finished"]
        failed = len(rs) - len(ok)
        lines.append(f"| {sc} | {name} | {len(ok)}" + (f" (+{failed} failed)" if failed else "") + " | "
                     + " | ".join(_fmt([r.get(m) for r in ok]) for m in _METRICS)
                     + f" | {_fmt([sum(r['train_time_s']) for r in ok], pct=False)} |")
    failures = [f"- {r['run']}: {r['message']}" for r in results if r["status"] != "finished"]
    md = "\n".join(lines) + ("\n\nFailed runs:\n" + "\n".join(failures) if failures else "") + "\n"
    atomic_write_text(out / "summary.md", md)
    _plots(groups, out)
    return md


def _plots(groups, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "heatmaps").mkdir(parents=True, exist_ok=True)
    for (sc, name), rs in groups.items():
        mats = [np.array(r["accuracy_matrix"]) for r in rs if r["status"] == "finished"]
        if not mats or any(m.shape != mats[0].shape for m in mats):
            continue
        M = 100 * np.mean(mats, axis=0)
        fig, ax = plt.subplots(figsize=(1 + 0.6 * M.shape[1], 1 + 0.6 * M.shape[0]))
        ax.imshow(M, vmin=0, vmax=100, cmap="viridis")
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                ax.text(j, i, f"{M[i, j]:.0f}", ha="center", va="center", color="w" if M[i, j] < 60 else "k", fontsize=8)
        ax.set_xlabel("evaluated on experience")
        ax.set_ylabel("trained up to experience")
        ax.set_title(f"{sc} | {name}", fontsize=9)
        fig.tight_layout()
        fname = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{sc}__{name}") + ".png"
        fig.savefig(out / "heatmaps" / fname, dpi=100)
        plt.close(fig)
    scen = sorted({sc for sc, _ in groups})
    names = list(dict.fromkeys(n for _, n in groups))
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(names), 3.5))
    width = 0.8 / max(len(scen), 1)
    for k, sc in enumerate(scen):
        means, stds = [], []
        for n in names:
            v = [r["average_accuracy"] for r in groups.get((sc, n), []) if r["status"] == "finished"]
            means.append(100 * np.mean(v) if v else 0)
            stds.append(100 * np.std(v) if v else 0)
        ax.bar(np.arange(len(names)) + k * width, means, width, yerr=stds, label=sc)
    ax.set_xticks(np.arange(len(names)) + width * (len(scen) - 1) / 2, names, rotation=30, ha="right")
    ax.set_ylabel("average accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=100)
    plt.close(fig)


def _failed(spec: RunSpec, message: str) -> dict:
    return {"run": spec.run_id, "scenario": spec.scenario, "name": spec.name, "seed": spec.seed,
            "status": "failed", "message": message}


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"executor 'ray' needs Ray, an optional extra: pip install 'kta-plugins[ray]' ({e})") from None
    return ray


def _run_on_ray(todo: list, address: Optional[str], jobs: Optional[int], progress) -> list[dict]:
    """One Ray task per run; results in the order of ``todo``."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:  # connect to the given cluster, or start a local one for this call
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(_run_safe)  # max_retries (3): a dead worker's run is re-run
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
                results[i] = _failed(todo[i][0], f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            progress.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


def compare(config, out_dir=None, jobs: Optional[int] = None, executor: str = "process",
            ray_address: Optional[str] = None, imports: Sequence[str] = ()) -> list[dict]:
    """Run every (scenario, strategy, seed) of ``config`` (a path or :class:`Config`); resumable.

    Args:
        config: a YAML file or a :class:`Config`.
        out_dir: output folder (default: the config's ``output``, else ``results/<config name>``).
        jobs: runs at a time: the process-pool size (default 1: in this process), or the
            most runs in flight on Ray (default: as many as the cluster has CPUs for).
        executor: ``"process"`` or ``"ray"`` (see the module docstring).
        ray_address: Ray cluster address (default ``$RAY_ADDRESS``, else a local cluster).
        imports: modules or ``.py`` files that register user plugins / strategies /
            scenarios, imported in each Ray worker (import them here yourself first).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        _import_ray()  # fail before anything is written
    out = Path(out_dir or cfg.output or Path("results") / cfg.path.stem)
    specs = cfg.runs()
    # Absolute paths: a Ray worker does not necessarily run in this folder.
    imports = tuple(str(Path(t).resolve()) if t.endswith(".py") else t for t in imports)
    todo = [(s, str(out.resolve()), imports if executor == "ray" else ()) for s in specs]
    from tqdm.auto import tqdm

    if executor == "ray":
        with tqdm(total=len(todo), desc="runs", leave=False) as bar:
            results = _run_on_ray(todo, ray_address, jobs, bar)
    elif (jobs or 1) == 1:
        results = [_run_safe(a) for a in tqdm(todo, desc="runs", leave=False)]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(tqdm(pool.map(_run_safe, todo), total=len(todo), desc="runs", leave=False))
    write_report(results, out)
    return results

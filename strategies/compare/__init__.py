"""``kta compare CONFIG.yaml``: strategies x scenarios x seeds, resumable, one report.

Config (YAML, read with ``yaml.safe_load`` semantics; every key is checked, and
errors name the key and its line in the file)::

    seeds: [0, 1, 2]
    scenarios: [split-digits, "split-mnist1d:n_experiences=5"]
    settings: {epochs: 1, lr: 0.1, batch_size: 16}      # kta run's options (optional)
    strategies:
      - {name: naive, strategy: naive}
      - {name: replay, strategy: naive, plugins: ["replay:mem_size=200"]}
      - {name: adam, strategy: naive, optimizer: adam, lr: 0.001}   # per-entry settings

Before anything is trained or written, every (scenario, strategy entry) is
built dry (scenario, model, strategy, plugins, one training iteration;
:func:`prepare`); every error is reported at once as ``file:line: key: message``.
A run's identity is the hash of its fully resolved settings
(:func:`strategies.runs.resolve`): a changed setting never reuses a result,
an identical re-run skips finished runs, ``force=True`` (``--force``) re-runs.
One ``kta compare`` at a time per output folder (a lock file).

Output folder (``--out``, default ``results/<config name>``):

* ``runs/<scenario>__<name>__seed<seed>__<hash>/result.json`` per run (accuracy matrix, average accuracy,
  forgetting, BWT, forward transfer against the random-init model, training
  time and peak memory per experience, the resolved settings and their hash), written atomically;
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
* with ``select: CRITERION`` and entries with ``group: NAME`` (see :mod:`strategies.compare.config`):
  each grouped run's ``result.json`` holds ``selection_scores`` (label-free, from the scenario's
  held-out source split and unlabeled target inputs) and ``target_accuracy``, and ``summary.md``
  the selection table: the criterion's pick per group, scenario and seed next to the oracle's.

A NaN or infinite loss stops that run (its ``result.json`` says why) and the
others go on.

Executors (``executor=``, ``--executor``):

* ``"process"`` (default): ``--jobs 1`` runs one run after the other in this
  process; ``--jobs N`` runs N at a time in a local process pool.
* ``"ray"`` (optional extra: ``pip install 'kta-plugins[ray]'``): one Ray task
  (one CPU, plus one GPU when ``settings.device`` is ``cuda...``) per run, on the cluster at ``ray_address`` / ``--ray-address`` /
  ``$RAY_ADDRESS``, else on a local cluster started for the call (and shut down
  after it); ``--jobs N`` then caps the runs in flight. Each task is the same
  :func:`~strategies.compare.runner.run_one` as above, so outputs, checkpoints and resume are the same; a
  task whose worker dies is retried by Ray and continues from its last
  checkpoint. On a multi-node cluster the output folder and the ``--import``
  files must be on a file system every node sees at the same path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..runs import NonFiniteLoss, check_writable, SettingError
from .config import Config, ConfigError, RunSpec, load_config, load_run_config
from .executors import EXECUTORS, import_ray, run_all, run_safe
from .report import write_report
from .runner import FolderBusy, check_run_files, folder_lock, prepare, run_one

__all__ = ["ConfigError", "Config", "RunSpec", "load_config", "load_run_config", "prepare", "compare", "run_one",
           "run_safe", "write_report", "folder_lock", "FolderBusy", "import_ray", "EXECUTORS", "NonFiniteLoss",
           "output_folder"]


def output_folder(cfg: Config, out_dir=None) -> Path:
    """``out_dir``, else the config's ``output``, else ``results/<config name>``."""
    return Path(out_dir or cfg.output or Path("results") / cfg.path.stem)


def compare(config, out_dir=None, jobs: Optional[int] = None, executor: str = "process",
            ray_address: Optional[str] = None, imports: Sequence[str] = (), force: bool = False) -> list[dict]:
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
        force: re-run the config's runs even when they finished (or have a checkpoint).

    Raises :class:`ConfigError` (every bad key, with its line; also unreadable result or checkpoint
    files), :class:`FolderBusy` (another compare works in the folder) or ``ValueError`` before
    anything is trained.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        import_ray()  # fail before anything is written
    out = output_folder(cfg, out_dir)
    try:
        check_writable(out, "out", folder=True)
    except SettingError as e:
        raise ConfigError(f"output folder: {e}") from None
    specs = prepare(cfg)  # the dry build: every error before anything is written
    with folder_lock(out):
        if not force:
            errors = check_run_files(specs, out)
            if errors:
                raise ConfigError(errors)
        # Absolute paths: a Ray worker does not necessarily run in this folder.
        imports = tuple(str(Path(t).resolve()) if t.endswith(".py") else t for t in imports)
        todo = [(s, str(out.resolve()), imports if executor == "ray" else (), force) for s in specs]
        results = run_all(todo, executor, jobs, ray_address)
        write_report(results, out, select=cfg.select)
    return results

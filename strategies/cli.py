"""The ``kta`` command (argument parsing only; runs are built in :mod:`strategies.runs`).

    kta run --scenario split-digits --strategy naive --epochs 1 --seed 0 \\
            [--plugin NAME:key=value,...] [--optimizer adam --lr 0.001 --lr-schedule cosine] \\
            [--config run.yaml] [--log-dir runs/x] [--json results.json]
    kta list [--details NAME]        # every scenario, strategy, plugin and model name
    kta compare CONFIG.yaml [--jobs N] [--executor ray [--ray-address ADDR]] [--force]
    torchrun --nproc_per_node 2 -m strategies.cli run ... --distributed   # one run, data-parallel

Every error a user can cause exits with status 2 and one line that names the
option (or the config file, line and key) before anything is trained or
written. ``--help``, ``list`` and unknown names answer without importing torch
(from :mod:`strategies.catalog`'s index).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "make_parser", "run", "build_run", "import_extensions", "UsageError"]

#: Command-line flag of each run key.
FLAGS = {
    "scenario": "--scenario", "strategy": "--strategy", "seed": "--seed", "epochs": "--epochs",
    "optimizer": "--optimizer", "lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay",
    "lr_schedule": "--lr-schedule", "batch_size": "--batch-size", "model": "--model", "device": "--device",
    "import": "--import", "json": "--json", "log_dir": "--log-dir", "out": "--out", "name": "--config",
}
_RUN_DEFAULTS = {"scenario": "split-digits", "strategy": "naive", "plugins": [], "seed": 0}


class UsageError(Exception):
    """A bad command-line value; ``option`` names the flag (or ``file:line: key``)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {' '.join(str(message).split())}")
        self.option = option


def run(*args, **kwargs) -> dict:
    """:func:`strategies.runs.run` (kept here for scripts that import it from the command's module)."""
    from .runs import run as _run

    return _run(*args, **kwargs)


def import_extensions(paths: Sequence[str]) -> None:
    """:func:`strategies.runs.import_extensions`; errors as :class:`UsageError` (``--import``)."""
    from .runs import SettingError, import_extensions as _import

    try:
        _import(paths)
    except SettingError as e:
        raise UsageError("--import", str(e)) from None


def build_run(*args, **kwargs):
    """:func:`strategies.runs.build_run`."""
    from .runs import build_run as _build

    return _build(*args, **kwargs)


# ------------------------------------------------------------------------------- kta run
def _resolve_args(args):
    """``(values, origin)``: the run's keys from defaults < ``--config`` < flags given, and where
    each came from (a flag, or ``file:line: key``)."""
    from .runs import SETTINGS

    values = {**_RUN_DEFAULTS, **{k: d for k, (_, d, _) in SETTINGS.items()}}
    origin = dict(FLAGS)
    if args.config:
        from .compare.config import ConfigError, load_run_config

        try:
            cfg, where = load_run_config(args.config)
        except ConfigError as e:
            raise UsageError("--config", e.errors[0]) from None
        values.update(cfg)
        origin.update(where)
    for key in list(values):
        given = getattr(args, "plugin" if key == "plugins" else key, None)
        if key == "plugins":
            if given:
                values["plugins"] = list(given)
                origin.update({f"plugins[{j}]": "--plugin" for j in range(len(given))})
        elif given is not None:
            values[key] = given
            origin[key] = FLAGS[key]
    return values, origin


def _origin(origin: dict, key: str) -> str:
    if key in origin:
        return origin[key]
    return "--plugin" if key.startswith("plugins") else FLAGS.get(key, key)


def _static_checks(values: dict, origin: dict, live: bool) -> None:
    """Checks that need no torch: setting values, the seed, names against the index, output paths."""
    from . import catalog
    from .runs import SETTINGS, SettingError, check_seed, check_settings

    try:
        check_settings({k: values[k] for k in SETTINGS}, device=False)
        check_seed(values["seed"])
        if live:
            return
        for kind, key, spec in [("scenario", "scenario", values["scenario"]), ("strategy", "strategy", values["strategy"]),
                                *[("plugin", f"plugins[{j}]", p) for j, p in enumerate(values["plugins"])],
                                *([("model", "model", values["model"])] if values["model"] else [])]:
            name = spec.partition(":")[0].strip()
            if catalog.lookup(kind, name) is None and not _registered_here(kind, name) \
                    and not (catalog.maybe_registered(name) and _live_has(kind, name)):
                known = sorted(catalog.load_index().get(kind, {}))
                raise SettingError(key, f"unknown {kind} {name!r}; known: {', '.join(known)}")
            limit = catalog.limit_of(kind, name)
            if limit:
                raise SettingError(key, f"{kind} {name!r} cannot run from the command line: {limit}")
    except SettingError as e:
        raise UsageError(_origin(origin, e.key), str(e)) from None


def _registered_here(kind: str, name: str) -> bool:
    """Whether ``name`` is in a registry this process has already imported (a script that registers
    its own names in Python, then calls :func:`main`); imports nothing."""
    module, attr = {"scenario": ("scenarios.registry", "SCENARIOS"), "strategy": ("strategies.registry", "STRATEGIES"),
                    "plugin": ("kta_plugins.base", "PLUGINS"), "model": ("kta_plugins.nn.models", "MODELS")}[kind]
    reg = getattr(sys.modules.get(module), attr, None)
    return reg is not None and name in reg


def _live_has(kind: str, name: str) -> bool:
    """A name missing from the static index may be newer than the index: ask the registries."""
    from .runs import model_names, registries

    if kind == "model":
        return name in model_names()
    return name in dict(zip(("scenario", "strategy", "plugin"), registries()))[kind]


def _cmd_run(args) -> int:
    from .runs import check_writable, safe_name, SettingError

    values, origin = _resolve_args(args)
    try:
        if args.json:
            check_writable(args.json, "json")
        if args.log_dir and args.log_dir.lower() != "none":
            check_writable(args.log_dir, "log_dir", folder=True)
    except SettingError as e:
        raise UsageError(_origin(origin, e.key), str(e)) from None
    _static_checks(values, origin, live=bool(args.imports))
    import numpy as np

    from . import distributed
    from .runs import NonFiniteLoss, import_extensions, probe_run, run_hash, run as run_training, SETTINGS
    from .results import format_loss_terms, format_report

    settings = {k: values[k] for k in SETTINGS}
    scenario, strategy, plugins, seed = values["scenario"], values["strategy"], values["plugins"], values["seed"]
    try:
        import_extensions(args.imports)
        from .runs import check_device

        check_device(settings["device"])
        resolved = probe_run(scenario, strategy, plugins, seed=seed, **settings)  # the dry build
    except SettingError as e:
        raise UsageError(_origin(origin, e.key), str(e)) from None
    digest = run_hash(resolved)
    log_dir = args.log_dir
    if log_dir is None:  # unique per resolved run
        log_dir = str(Path("runs") / f"{safe_name(f'{scenario}__{strategy}__seed{seed}')}__{digest}")
    elif log_dir.lower() == "none":
        log_dir = None
    created = None  # the outermost folder this run creates for its logs (removed if it fails)
    if log_dir is not None:
        for folder in [Path(log_dir), *Path(log_dir).parents]:
            if folder.exists():
                break
            created = folder
    ddp = args.distributed or distributed.torchrun_env()  # torchrun with N > 1 means data-parallel
    if ddp:
        try:
            distributed.init_distributed(seed, device=settings["device"])
        except RuntimeError as e:
            raise UsageError("--distributed", str(e)) from None
    main_process = not ddp or distributed.is_main_process()
    try:
        result = run_training(
            scenario, strategy, plugins, seed=seed, log_dir=log_dir if main_process else None,  # only rank 0 logs
            **({} if main_process else {"progress": False}), **settings,
        )
    except SettingError as e:
        raise UsageError(_origin(origin, e.key), str(e)) from None
    except NonFiniteLoss as e:
        if created is not None and main_process:
            import shutil

            shutil.rmtree(created, ignore_errors=True)  # nothing half-written
        print(f"kta: error: {e}; the run diverged (try a lower {_origin(origin, 'lr')}); nothing was written",
              file=sys.stderr)
        return 1
    finally:
        if ddp:
            distributed.shutdown()
    if not main_process:
        return 0
    title = f"{scenario} | {strategy}" + "".join(f" + {p}" for p in plugins) + \
        f" | {settings['epochs']} epoch(s), seed {seed}"
    if settings["optimizer"] != "sgd" or settings["lr_schedule"] != "none":
        title += f" | {settings['optimizer']} lr {settings['lr']:g}" + \
            (f", {settings['lr_schedule']} schedule" if settings["lr_schedule"] != "none" else "")
    if ddp:
        result["data_parallel"] = {"world_size": int(os.environ["WORLD_SIZE"]), "batch_size_per_rank": settings["batch_size"]}
        title += f" | data-parallel, {result['data_parallel']['world_size']} ranks x batch {settings['batch_size']}"
    print(format_report(np.array(result["accuracy_matrix"]), title=title, joint=result["joint"]))
    if any(set(r) - {"experience", "criterion", "total"} for r in result.get("loss_terms", ())):
        print("\n" + format_loss_terms(result["loss_terms"]))
    if "drift_split" in result:
        from .drift import format_drift

        print("\nConcept drift: accuracy drop on each earlier experience under its own labels, split into "
              "forgetting (labels unchanged) and drift (labels changed)")
        print(format_drift(result["drift_split"]))
    if args.json:
        from .runs import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(result, indent=2, default=float) + "\n")
    return 0


# ------------------------------------------------------------------------------- kta compare
def _config_errors(e) -> int:
    """Every error of a config, one line each (``file:line: key: message``); status 2."""
    for line in e.errors:
        print(f"kta: error: {' '.join(line.split())}", file=sys.stderr)
    return 2


def _cmd_compare(args) -> int:
    from .compare import ConfigError, FolderBusy, compare, import_ray, load_config, output_folder
    from .runs import SettingError, check_writable, import_extensions

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs", f"must be >= 1, got {args.jobs}")
    try:
        import_extensions(args.imports)
    except SettingError as e:
        raise UsageError("--import", str(e)) from None
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return _config_errors(e)
    out = output_folder(cfg, args.out)
    try:
        check_writable(out, "out", folder=True)
    except SettingError as e:
        raise UsageError("--out" if args.out else "config: output", str(e)) from None
    if args.executor == "ray":
        try:
            import_ray()
        except ImportError as e:
            raise UsageError("--executor", str(e)) from None
    try:
        results = compare(cfg, out_dir=out, jobs=args.jobs, executor=args.executor,
                          ray_address=args.ray_address, imports=args.imports, force=args.force)
    except ConfigError as e:
        return _config_errors(e)
    except FolderBusy as e:
        raise UsageError("--out" if args.out else "config: output", str(e)) from None
    print((Path(out) / "summary.md").read_text(), end="")
    print(f"{sum(r['status'] == 'finished' for r in results)}/{len(results)} runs finished; results in {out}/")
    return 0 if all(r["status"] == "finished" for r in results) else 1


# ------------------------------------------------------------------------------- kta list
def _cmd_list(args) -> int:
    from . import catalog

    if args.imports:
        from .runs import SettingError, import_extensions

        try:
            import_extensions(args.imports)
        except SettingError as e:
            raise UsageError("--import", str(e)) from None
    index = catalog.load_index(live=bool(args.imports))
    if args.details:
        lines = catalog.describe(index, args.details)
        if not lines and not args.imports and any(_live_has(k, args.details) for k in catalog.KINDS):
            lines = catalog.describe(catalog.load_index(live=True), args.details)
        if not lines:
            names = sorted({n for kind in index.values() for n in kind})
            raise UsageError("--details", f"no scenario, strategy, plugin or model is called {args.details!r}; "
                                          f"see `kta list` ({len(names)} names)")
        print("\n".join(lines))
        return 0
    print("\n".join(catalog.list_lines(index)))
    return 0


# ------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"kta: error: {' '.join(message.split())}\n")


def make_parser() -> argparse.ArgumentParser:
    from .catalog import load_index
    from .runs import LR_SCHEDULES, OPTIMIZERS, SETTINGS

    models = ", ".join(sorted(load_index().get("model", {})))
    p = _Parser(prog="kta", description="Knowledge transfer and adaptation on Avalanche.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="train a strategy over a stream and print the accuracy matrix")
    r.add_argument("--config", default=None, metavar="RUN.yaml",
                   help="read the run's keys (scenario, strategy, plugins, seed and the settings below, as in one "
                        "`kta compare` entry) from a YAML file; flags given on the command line win")
    r.add_argument("--scenario", default=None, help="scenario name[:key=value,...] (default split-digits; see `kta list`)")
    r.add_argument("--strategy", default=None, help="strategy name[:key=value,...] (default naive)")
    r.add_argument("--plugin", action="append", default=None, metavar="NAME:key=value,...",
                   help="add a plugin (repeatable)")
    r.add_argument("--epochs", type=int, default=None, help=f"epochs per experience (default {SETTINGS['epochs'][1]})")
    r.add_argument("--seed", type=int, default=None, help="seed of the data order and the model (default 0)")
    r.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="optimizer (default sgd)")
    r.add_argument("--lr", type=float, default=None, help=f"learning rate (default {SETTINGS['lr'][1]})")
    r.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0)")
    r.add_argument("--weight-decay", dest="weight_decay", type=float, default=None, help="weight decay (default 0)")
    r.add_argument("--lr-schedule", dest="lr_schedule", default=None, metavar="|".join(LR_SCHEDULES),
                   help="learning-rate schedule over the epochs of each experience: none (default), cosine, "
                        "or step[:every=E,gamma=G] (x G every E epochs; default every=1, gamma=0.1)")
    r.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="training minibatch size (default 16)")
    r.add_argument("--model", default=None, help=f"{models} (default: by input shape)")
    r.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or mps")
    r.add_argument("--log-dir", dest="log_dir", default=None,
                   help="TensorBoard log folder (default runs/<scenario>__<strategy>__seed<seed>__<hash of the "
                        "resolved settings>; 'none' for no logs)")
    r.add_argument("--json", default=None, help="also write the results as JSON to this file")
    r.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE.py",
                   help="import a module that registers your own plugins / strategies / scenarios / models")
    r.add_argument("--distributed", action="store_true",
                   help="data-parallel training under torchrun (CPU, gloo; implied when torchrun starts "
                        "more than one process); --batch-size is per rank; only rank 0 prints and writes")
    r.set_defaults(func=_cmd_run)
    c = sub.add_parser("compare", help="strategies x scenarios x seeds from a YAML config; resumable")
    c.add_argument("config", help="YAML config (see docs/runs.md)")
    c.add_argument("--out", default=None, help="output folder (default: results/<config name>)")
    c.add_argument("--jobs", type=int, default=None,
                   help="runs at a time: local process pool size (default 1), or the most runs in flight on Ray")
    c.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="where runs go: this machine's processes (default) or a Ray cluster "
                        "(optional extra: pip install 'kta-plugins[ray]')")
    c.add_argument("--ray-address", default=None,
                   help="Ray cluster address (default $RAY_ADDRESS, else a local cluster for this command)")
    c.add_argument("--force", action="store_true", help="re-run the config's finished or checkpointed runs")
    c.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE.py")
    c.set_defaults(func=_cmd_compare)
    ls = sub.add_parser("list", help="list scenario, strategy, plugin and model names")
    ls.add_argument("--details", default=None, metavar="NAME",
                    help="the options (types, defaults) and the description of NAME")
    ls.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE.py")
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    # Avalanche re-enables its deprecation warnings on every call (simplefilter "once"),
    # so filters are not enough: the command line shows no library warnings at all.
    shown = warnings.showwarning
    warnings.showwarning = lambda *a, **k: None
    try:
        return args.func(args)
    except UsageError as e:
        print(f"kta: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())

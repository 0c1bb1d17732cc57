"""The ``kta`` command.

    kta run --scenario split-digits --strategy naive --epochs 1 --seed 0 \\
            [--plugin NAME:key=value,...] [--log-dir runs/x] [--json results.json]
    kta list            # every scenario, strategy and plugin name
    kta compare CONFIG.yaml [--jobs N] [--executor ray [--ray-address ADDR]]
    torchrun --nproc_per_node 2 -m strategies.cli run ... --distributed   # one run, data-parallel

Unknown names and bad values exit with status 2 and a one-line message that
names the option.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "run"]


class UsageError(Exception):
    """A bad command-line value; ``option`` names the flag."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _registries():
    from kta_plugins.base import PLUGINS
    from scenarios.registry import SCENARIOS, load_all as load_scenarios

    from .registry import STRATEGIES, load_all

    load_scenarios()
    load_all()

    return SCENARIOS, STRATEGIES, PLUGINS


def build_run(scenario: str, strategy: str, plugins: Sequence[str] = (), *, epochs: int = 1, seed: int = 0,
              lr: float = 0.1, momentum: float = 0.0, batch_size: int = 16, model: Optional[str] = None, device: str = "cpu",
              log_dir: Optional[str] = None, progress: Optional[bool] = None):
    """Build ``(benchmark, strategy)`` from command-line style specs. Raises :class:`UsageError`."""
    import torch

    from kta_plugins.nn import default_model_name, make_model
    from scenarios.registry import RegistryError

    SCENARIOS, STRATEGIES, PLUGINS = _registries()
    if epochs < 1:
        raise UsageError("--epochs", f"must be >= 1, got {epochs}")
    if not lr > 0:
        raise UsageError("--lr", f"must be > 0, got {lr}")
    if batch_size < 1:
        raise UsageError("--batch-size", f"must be >= 1, got {batch_size}")
    seed_everything(seed)
    try:
        bm = SCENARIOS.build(scenario, seed=seed)
    except RegistryError as e:
        raise UsageError("--scenario", str(e)) from None
    try:
        net = make_model(model or default_model_name(bm.input_shape), bm.input_shape, bm.n_classes)
    except ValueError as e:
        raise UsageError("--model", str(e)) from None
    built = []
    for spec in plugins:
        try:
            built.append(PLUGINS.build(spec))
        except RegistryError as e:
            raise UsageError("--plugin", str(e)) from None
    if not 0 <= momentum < 1:
        raise UsageError("--momentum", f"must be in [0, 1), got {momentum}")
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    try:
        strat = STRATEGIES.build(
            strategy, model=net, optimizer=opt, train_epochs=epochs, train_mb_size=batch_size,
            plugins=built, seed=seed, device=device, log_dir=log_dir, progress=progress,
        )
    except RegistryError as e:
        raise UsageError("--strategy", str(e)) from None
    from .distributed import check_strategy, is_distributed

    if is_distributed():
        try:
            check_strategy(strat)
        except ValueError as e:
            raise UsageError("--strategy", str(e)) from None
    return bm, strat


def run(scenario: str = "split-digits", strategy: str = "naive", plugins: Sequence[str] = (), **kwargs) -> dict:
    """Train ``strategy`` over ``scenario`` and return the accuracy matrix and its summary."""
    from .base import JointTraining
    from .results import average_accuracy, bwt, forgetting, train_and_evaluate

    bm, strat = build_run(scenario, strategy, plugins, **kwargs)
    joint = isinstance(strat, JointTraining)
    extra = {}
    if getattr(bm, "kind", None) == "concept-drift" and not joint:
        # P(y|x) changes: Chaudhry's forgetting mixes forgetting with following the new concept;
        # strategies.drift splits the drop of accuracy into the two.
        from .drift import train_with_drift_split

        A, extra["drift_split"] = train_with_drift_split(strat, bm)
    else:
        A = train_and_evaluate(strat, bm, joint=joint)
    return {
        "scenario": scenario, "strategy": strategy, "plugins": list(plugins),
        "settings": {k: v for k, v in kwargs.items() if k != "progress"},
        "joint": joint, "accuracy_matrix": A.tolist(), "average_accuracy": average_accuracy(A),
        "forgetting": forgetting(A), "bwt": bwt(A), **extra,
    }


def import_extensions(paths: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` files) so that their plugins, strategies
    and scenarios register before names are resolved."""
    import importlib
    import importlib.util

    for target in paths:
        try:
            if target.endswith(".py"):
                path = Path(target)
                if not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                spec = importlib.util.spec_from_file_location(f"kta_user_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(target)
        except ValueError as e:
            raise UsageError("--import", f"{target}: {e}") from None
        except (ImportError, OSError) as e:
            raise UsageError("--import", f"cannot import {target}: {e}") from None


def _cmd_run(args) -> int:
    import numpy as np

    import_extensions(args.imports)
    from . import distributed
    from .results import format_report

    log_dir = args.log_dir
    if log_dir is None:
        log_dir = str(Path("runs") / re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{args.scenario}__{args.strategy}__seed{args.seed}"))
    elif log_dir.lower() == "none":
        log_dir = None
    ddp = args.distributed or distributed.torchrun_env()  # torchrun with N > 1 means data-parallel
    if ddp:
        try:
            distributed.init_distributed(args.seed, device=args.device)
        except RuntimeError as e:
            raise UsageError("--distributed", str(e)) from None
    main_process = not ddp or distributed.is_main_process()
    try:
        result = run(
            args.scenario, args.strategy, args.plugin, epochs=args.epochs, seed=args.seed, lr=args.lr,
            momentum=args.momentum, batch_size=args.batch_size, model=args.model, device=args.device,
            log_dir=log_dir if main_process else None,  # only rank 0 logs and writes
            **({} if main_process else {"progress": False}),
        )
    finally:
        if ddp:
            distributed.shutdown()
    if not main_process:
        return 0
    title = f"{args.scenario} | {args.strategy}" + "".join(f" + {p}" for p in args.plugin) + \
        f" | {args.epochs} epoch(s), seed {args.seed}"
    if ddp:
        result["data_parallel"] = {"world_size": int(os.environ["WORLD_SIZE"]), "batch_size_per_rank": args.batch_size}
        title += f" | data-parallel, {result['data_parallel']['world_size']} ranks x batch {args.batch_size}"
    print(format_report(np.array(result["accuracy_matrix"]), title=title, joint=result["joint"]))
    if "drift_split" in result:
        from .drift import format_drift

        print("\nConcept drift: accuracy drop on each earlier experience under its own labels, split into "
              "forgetting (labels unchanged) and drift (labels changed)")
        print(format_drift(result["drift_split"]))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2, default=float) + "\n")
    return 0


def _cmd_compare(args) -> int:
    from .compare import ConfigError, _import_ray, compare, load_config

    import_extensions(args.imports)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        raise UsageError("config", str(e)) from None
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs", f"must be >= 1, got {args.jobs}")
    if args.executor == "ray":
        try:
            _import_ray()
        except ImportError as e:
            raise UsageError("--executor", str(e)) from None
    results = compare(cfg, out_dir=args.out, jobs=args.jobs, executor=args.executor,
                      ray_address=args.ray_address, imports=args.imports)
    out = args.out or cfg.output or str(Path("results") / cfg.path.stem)
    print((Path(out) / "summary.md").read_text(), end="")
    print(f"{sum(r['status'] == 'finished' for r in results)}/{len(results)} runs finished; results in {out}/")
    return 0 if all(r["status"] == "finished" for r in results) else 1


def _cmd_list(args) -> int:
    for reg in _registries():
        print(f"{reg.kind}s:".replace("ys:", "ies:"))
        for name in reg.names():
            print(f"  {name:<22} {reg.help(name)}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"kta: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kta", description="Knowledge transfer and adaptation on Avalanche.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="train a strategy over a stream and print the accuracy matrix")
    r.add_argument("--scenario", default="split-digits", help="scenario name[:key=value,...] (see `kta list`)")
    r.add_argument("--strategy", default="naive", help="strategy name[:key=value,...]")
    r.add_argument("--plugin", action="append", default=[], metavar="NAME:key=value,...",
                   help="add a plugin (repeatable)")
    r.add_argument("--epochs", type=int, default=1, help="epochs per experience (default 1)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    r.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    r.add_argument("--batch-size", type=int, default=16, help="training minibatch size (default 16)")
    r.add_argument("--model", default=None, help="mlp, cnn1d, cnn1d-gap or cnn (default: by input shape)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--log-dir", default=None,
                   help="TensorBoard log folder (default runs/<scenario>__<strategy>__seed<seed>; 'none' for no logs)")
    r.add_argument("--json", default=None, help="also write the results as JSON to this file")
    r.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE.py",
                   help="import a module that registers your own plugins / strategies / scenarios")
    r.add_argument("--distributed", action="store_true",
                   help="data-parallel training under torchrun (CPU, gloo; implied when torchrun starts "
                        "more than one process); --batch-size is per rank; only rank 0 prints and writes")
    r.set_defaults(func=_cmd_run)
    c = sub.add_parser("compare", help="strategies x scenarios x seeds from a YAML config; resumable")
    c.add_argument("config", help="YAML config (see strategies/compare.py)")
    c.add_argument("--out", default=None, help="output folder (default: results/<config name>)")
    c.add_argument("--jobs", type=int, default=None,
                   help="runs at a time: local process pool size (default 1), or the most runs in flight on Ray")
    c.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="where runs go: this machine's processes (default) or a Ray cluster "
                        "(optional extra: pip install 'kta-plugins[ray]')")
    c.add_argument("--ray-address", default=None,
                   help="Ray cluster address (default $RAY_ADDRESS, else a local cluster for this command)")
    c.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE.py")
    c.set_defaults(func=_cmd_compare)
    ls = sub.add_parser("list", help="list scenario, strategy and plugin names")
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    # Avalanche re-enables its deprecation warnings on every call (simplefilter "always"),
    # so filters are not enough: the command line shows no library warnings at all.
    warnings.showwarning = lambda *a, **k: None
    try:
        return args.func(args)
    except UsageError as e:
        print(f"kta: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

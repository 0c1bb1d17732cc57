"""van de Ven & Tolias (2019), "Three scenarios for continual learning", on mnist5k.

Runs every (scenario, method, seed) of ``examples/three_scenarios.yaml`` through
the Python API (the same registries, model builder and strategies as
``kta compare examples/three_scenarios.yaml``), prints the table of final
average accuracies (mean ± std over seeds) next to the paper's split-MNIST
numbers, and writes ``three_scenarios.json`` and ``three_scenarios.png`` to the
output folder.

    python examples/three_scenarios.py [--out results/three_scenarios] [--seeds 0 1 2]
    python examples/three_scenarios.py --from-compare results/three_scenarios   # after kta compare
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: van de Ven & Tolias (2019), arXiv:1904.07734, Table 4 (split MNIST), final average accuracy (%).
PAPER = {
    "none": (87.19, 59.21, 19.90), "ewc": (85.26, 63.95, 20.01), "online-ewc": (85.04, 64.32, 19.96),
    "si": (99.09, 65.36, 19.99), "lwf": (99.57, 71.50, 23.85), "joint": (99.66, 98.42, 97.94),
}
SCENARIO_COLUMNS = {"split-mnist-tasks": "Task-IL", "split-mnist-domain": "Domain-IL", "split-mnist": "Class-IL"}


def run_one(scenario: str, strategy: str, plugins: list, seed: int, settings: dict) -> np.ndarray:
    from kta_plugins.base import PLUGINS
    from kta_plugins.nn import build_model
    from scenarios.registry import SCENARIOS
    from strategies.registry import STRATEGIES
    from strategies.results import train_and_evaluate

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    bm = SCENARIOS.build(scenario, seed=seed)
    net = build_model(settings["model"], bm)
    built = [PLUGINS.build(p) for p in plugins]
    opt = torch.optim.SGD(net.parameters(), lr=settings["lr"], momentum=settings["momentum"])
    strat = STRATEGIES.build(strategy, model=net, optimizer=opt, train_epochs=settings["epochs"],
                             train_mb_size=settings["batch_size"], plugins=built, seed=seed, progress=False)
    return train_and_evaluate(strat, bm, joint=strategy == "joint")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE / "three_scenarios.yaml"))
    ap.add_argument("--out", default="results/three_scenarios")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--from-compare", default=None, metavar="DIR",
                    help="read the runs of `kta compare examples/three_scenarios.yaml --out DIR` instead of training")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    warnings.showwarning = lambda *a, **k: None
    torch.set_num_threads(1)
    from kta_plugins.registry import load_all as load_plugins
    from scenarios.registry import load_all as load_scenarios
    from strategies.registry import load_all as load_strategies

    load_scenarios(), load_plugins(), load_strategies()
    cfg = yaml.safe_load(Path(args.config).read_text())
    seeds = args.seeds if args.seeds is not None else cfg["seeds"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "three_scenarios.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    failed = []
    if args.from_compare:
        from strategies.compare import load_config, prepare

        # only this config's runs: a folder may also hold runs of earlier settings (other hashes)
        wanted = {spec.digest for spec in prepare(load_config(args.config))}
        results = {}
        for f in sorted(Path(args.from_compare).glob("runs/*/result.json")):
            r = json.loads(f.read_text())
            if r.get("run_hash") not in wanted:
                continue
            if r["status"] != "finished":
                failed.append(f"{r['scenario']}|{r['name']}|{r['seed']}: {r['message']}")
                continue
            results[f"{r['scenario']}|{r['name']}|{r['seed']}"] = {
                "accuracy_matrix": r["accuracy_matrix"], "average_accuracy": r["average_accuracy"]}
    for sc in ([] if args.from_compare else cfg["scenarios"]):
        for st in cfg["strategies"]:
            for seed in seeds:
                key = f"{sc}|{st['name']}|{seed}"
                if key in results:
                    continue
                t0 = time.perf_counter()
                A = run_one(sc, st["strategy"], st.get("plugins", []), seed, cfg["settings"])
                results[key] = {"accuracy_matrix": A.tolist(), "average_accuracy": float(A[-1].mean()),
                                "seconds": time.perf_counter() - t0}
                results_path.write_text(json.dumps(results, indent=1))
                print(f"{key}: {100 * A[-1].mean():.1f}% ({time.perf_counter() - t0:.1f} s)", flush=True)
    names = [st["name"] for st in cfg["strategies"]]
    lines = ["| method | " + " | ".join(f"{SCENARIO_COLUMNS.get(s, s)} (KTA) | {SCENARIO_COLUMNS.get(s, s)} (paper)"
                                          for s in cfg["scenarios"]) + " |",
             "|---|" + "---|---|" * len(cfg["scenarios"])]
    means = {}
    for n in names:
        cells = []
        for j, sc in enumerate(cfg["scenarios"]):
            v = [100 * results[f"{sc}|{n}|{s}"]["average_accuracy"] for s in seeds if f"{sc}|{n}|{s}" in results]
            means[(sc, n)] = (np.mean(v), np.std(v))
            paper = PAPER.get(n, (None,) * 3)[list(SCENARIO_COLUMNS).index(sc)] if sc in SCENARIO_COLUMNS else None
            n_failed = len(seeds) - len(v)
            cells.append(f"{np.mean(v):.1f} ± {np.std(v):.1f}" + (f" ({n_failed} of {len(seeds)} diverged)"
                                                                   if n_failed else ""))
            cells.append("-" if paper is None else f"{paper:.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    for f in failed:
        print("failed:", f)
    (out / "three_scenarios.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg["scenarios"]), figsize=(4 * len(cfg["scenarios"]), 3.4), sharey=True)
    for ax, sc in zip(np.atleast_1d(axes), cfg["scenarios"]):
        x = np.arange(len(names))
        m = [means[(sc, n)][0] for n in names]
        e = [means[(sc, n)][1] for n in names]
        ax.bar(x - 0.2, m, 0.4, yerr=e, label="KTA, mnist5k")
        col = list(SCENARIO_COLUMNS).index(sc) if sc in SCENARIO_COLUMNS else None
        p = [PAPER[n][col] if n in PAPER and col is not None else np.nan for n in names]
        ax.bar(x + 0.2, p, 0.4, label="paper, MNIST", alpha=0.6)
        ax.set_xticks(x, names, rotation=40, ha="right")
        ax.set_title(SCENARIO_COLUMNS.get(sc, sc))
        ax.set_ylim(0, 100)
    np.atleast_1d(axes)[0].set_ylabel("final average accuracy (%)")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "three_scenarios.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

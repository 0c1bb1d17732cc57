"""The report of a compare: ``results.csv``, ``summary.md`` (mean ± std over seeds), heatmaps and a bar chart.

With a ``select`` criterion, ``summary.md`` also holds the label-free selection table
(:func:`selection_table`): per group x scenario x seed, the entry the criterion picks from the
runs' ``selection_scores`` (no target label) and the oracle's pick (best target test accuracy).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Optional, Sequence

from ..runs import atomic_write_text, safe_name

__all__ = ["write_report", "selection_table", "METRICS"]

METRICS = ("average_accuracy", "forgetting", "bwt", "forward_transfer")


def _fmt(values, pct=True):
    import numpy as np

    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "n/a"
    k = 100 if pct else 1
    return f"{k * np.mean(v):.1f} ± {k * np.std(v):.1f}"


def selection_table(results: Sequence[dict], criterion: str) -> str:
    """The label-free selection table (markdown), or "" when no run has selection scores.

    One row per (group, scenario, seed): the entry with the best ``criterion`` score (read from
    ``selection_scores``: held-out source data and unlabeled target inputs only) and its target
    test accuracy, the entry with the best target test accuracy ("oracle": what one would pick with
    target labels) and its accuracy, and the gap in points (oracle - selected); then the mean over rows.
    """
    from kta_plugins.adapt.select import select

    cells: dict = {}
    for r in results:
        if r.get("status") == "finished" and r.get("group") and r.get("selection_scores"):
            cells.setdefault((r["group"], r["scenario"], r["seed"]), []).append(r)
    if not cells:
        return ""
    sizes: dict = {}
    for r in results:
        if r.get("group"):
            sizes.setdefault((r["group"], r["scenario"], r["seed"]), set()).add(r["name"])
    lines = [f"Label-free selection by {criterion} (target labels only in the oracle columns):", "",
             f"| group | scenario | seed | candidates | selected by {criterion} | target accuracy (%) | oracle | "
             "target accuracy (%) | gap (points) |", "|---|---|---|---|---|---|---|---|---|"]
    sel_acc, orc_acc = [], []
    for (g, sc, seed), rs in cells.items():
        picked = rs[select([r["selection_scores"] for r in rs], criterion)]
        oracle = max(rs, key=lambda r: r["target_accuracy"])  # ties: the first
        a, b = 100 * picked["target_accuracy"], 100 * oracle["target_accuracy"]
        sel_acc.append(a)
        orc_acc.append(b)
        n = len(sizes[(g, sc, seed)])
        lines.append(f"| {g} | {sc} | {seed} | {len(rs)}" + (f" of {n}" if n != len(rs) else "")
                     + f" | {picked['name']} | {a:.1f} | {oracle['name']} | {b:.1f} | {b - a:.1f} |")
    ma, mb = sum(sel_acc) / len(sel_acc), sum(orc_acc) / len(orc_acc)
    lines.append(f"| mean over {len(cells)} | | | | | {ma:.1f} | | {mb:.1f} | {mb - ma:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[dict], out_dir, select: Optional[str] = None) -> str:
    """Write ``results.csv``, ``summary.md``, ``heatmaps/*.png`` and ``comparison.png``; return the summary.
    ``select``: the label-free criterion of the config (adds :func:`selection_table` to the summary)."""
    out = Path(out_dir)
    fields = ["run", "run_hash", "scenario", "name", "strategy", "plugins", "seed", "status", *METRICS,
              "train_time_s", "message"]
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
        n_failed = len(rs) - len(ok)
        lines.append(f"| {sc} | {name} | {len(ok)}" + (f" (+{n_failed} failed)" if n_failed else "") + " | "
                     + " | ".join(_fmt([r.get(m) for r in ok]) for m in METRICS)
                     + f" | {_fmt([sum(r['train_time_s']) for r in ok], pct=False)} |")
    failures = [f"- {r['run']}: {r['message']}" for r in results if r["status"] != "finished"]
    md = "\n".join(lines) + ("\n\nFailed runs:\n" + "\n".join(failures) if failures else "") + "\n"
    table = selection_table(results, select) if select else ""
    if table:
        md += "\n" + table
    atomic_write_text(out / "summary.md", md)
    _plots(groups, out)
    return md


def _plots(groups, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
        fig.savefig(out / "heatmaps" / (safe_name(f"{sc}__{name}") + ".png"), dpi=100)
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

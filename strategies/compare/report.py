"""The report of a compare: ``results.csv``, ``summary.md`` (mean ± std over seeds), heatmaps and a bar chart."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from ..runs import atomic_write_text, safe_name

__all__ = ["write_report", "METRICS"]

METRICS = ("average_accuracy", "forgetting", "bwt", "forward_transfer")


def _fmt(values, pct=True):
    import numpy as np

    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "n/a"
    k = 100 if pct else 1
    return f"{k * np.mean(v):.1f} ± {k * np.std(v):.1f}"


def write_report(results: Sequence[dict], out_dir) -> str:
    """Write ``results.csv``, ``summary.md``, ``heatmaps/*.png`` and ``comparison.png``; return the summary."""
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

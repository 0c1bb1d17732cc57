"""Faults: no lost and no stale results (edited configs, --force, corrupted files, concurrent
compares, SIGKILL mid-run), and `kta run`'s non-finite guard."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from strategies.cli import main
from strategies.compare import FolderBusy, compare, folder_lock

CFG = """\
seeds: [0]
scenarios: ["split-digits:n_experiences=2"]
settings: {epochs: EPOCHS}
strategies:
  - {name: naive, strategy: naive}
  - {name: l2sp, strategy: naive, plugins: ["l2sp:alpha=ALPHA"]}
"""


def _cfg(tmp_path, epochs=1, alpha=0.1):
    p = tmp_path / "cfg.yaml"
    p.write_text(CFG.replace("EPOCHS", str(epochs)).replace("ALPHA", str(alpha)))
    return p


def _results(out):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")}


def test_edited_config_gives_new_runs_identical_config_skips_force_reruns(tmp_path):
    out = tmp_path / "out"
    first = compare(_cfg(tmp_path, epochs=1), out_dir=out)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    assert len(stamps) == 2 and all(r["resolved"]["epochs"] == 1 for r in first)
    # identical config: nothing re-runs
    assert compare(_cfg(tmp_path, epochs=1), out_dir=out) == first
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # epochs 1 -> 2: both runs are new (new hashes), nothing is reused, the report has only them
    second = compare(_cfg(tmp_path, epochs=2), out_dir=out)
    assert {r["run_hash"] for r in second}.isdisjoint({r["run_hash"] for r in first})
    assert all(r["resolved"]["epochs"] == 2 and r["settings"]["epochs"] == 2 for r in second)
    assert all(a["accuracy_matrix"] != b["accuracy_matrix"] for a, b in zip(first, second))
    csv = (out / "results.csv").read_text()
    assert all(r["run_hash"] in csv for r in second) and not any(r["run_hash"] in csv for r in first)
    # one plugin argument changed: only that run is new
    third = compare(_cfg(tmp_path, epochs=2, alpha=0.5), out_dir=out)
    assert third[0] == second[0] and third[1]["run_hash"] != second[1]["run_hash"]
    assert third[1]["resolved"]["plugins"][0]["args"]["alpha"] == 0.5
    # --force re-runs, with the same numbers
    stamp = (out / "runs" / third[0]["run"] / "result.json").stat().st_mtime_ns
    forced = compare(_cfg(tmp_path, epochs=2, alpha=0.5), out_dir=out, force=True)
    assert (out / "runs" / third[0]["run"] / "result.json").stat().st_mtime_ns != stamp
    assert [r["accuracy_matrix"] for r in forced] == [r["accuracy_matrix"] for r in third]


def test_corrupted_checkpoint_names_its_file_and_force(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    (r, _) = compare(cfg, out_dir=out)
    run_dir = out / "runs" / r["run"]
    (run_dir / "result.json").unlink()
    (run_dir / "checkpoint.pt").write_bytes(b"not a zip archive")
    capsys.readouterr()
    assert main(["compare", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{run_dir / 'checkpoint.pt'}: unreadable checkpoint" in err and "--force" in err
    assert main(["compare", str(cfg), "--out", str(out), "--force"]) == 0
    again = json.loads((run_dir / "result.json").read_text())
    assert again["accuracy_matrix"] == r["accuracy_matrix"] and not (run_dir / "checkpoint.pt").exists()


def test_corrupted_result_names_its_file(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    (r, _) = compare(cfg, out_dir=out)
    (out / "runs" / r["run"] / "result.json").write_text("{half a fi")
    capsys.readouterr()
    assert main(["compare", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "result.json: unreadable result" in err and "--force" in err and len(err.splitlines()) == 1


def test_second_compare_on_a_busy_folder_exits_2_and_writes_nothing(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    with folder_lock(out):  # another kta compare holds the folder
        assert main(["compare", str(cfg), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("kta: error: --out:") and "in use by another kta compare" in err
        assert len(err.splitlines()) == 1 and not (out / "runs").exists()
        with pytest.raises(FolderBusy):
            compare(cfg, out_dir=out)
    assert len(compare(cfg, out_dir=out)) == 2  # free again


def test_concurrent_compares_never_duplicate_or_lose_runs(tmp_path):
    """Two processes on one folder: one runs everything, the other exits 2 at once (or, if it
    started after the first finished, skips every run). Every run is there once."""
    cfg = _cfg(tmp_path, epochs=3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "strategies.cli", "compare", str(cfg), "--out", str(out)]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".kta-compare.lock").exists() and time.time() < deadline and a.poll() is None:
        time.sleep(0.05)
    b = subprocess.run(cmd, capture_output=True, text=True)
    a_out, a_err = a.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes in ([0, 2], [0, 0]), (a_err, b.stderr)
    if b.returncode == 2:
        assert "in use by another kta compare" in b.stderr and len(b.stderr.strip().splitlines()) == 1
    results = _results(out)
    assert len(results) == 2 and all(r["status"] == "finished" for r in results.values())


def test_sigkill_then_edited_config_never_resumes_a_stale_checkpoint(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seeds: [0]\nscenarios: [split-digits]\nsettings: {epochs: 4}\n"
                   "strategies:\n  - {name: l2sp, strategy: naive, plugins: ['l2sp:alpha=0.1']}\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "strategies.cli", "compare", str(cfg), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(out.glob("runs/*/checkpoint.pt")) if out.exists() else []
        if ckpts:
            try:
                if torch.load(ckpts[0], weights_only=True)["next_exp"] >= 1:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = ckpts[0]
                    break
            except Exception:  # being replaced right now
                pass
        time.sleep(0.02)
    proc.wait()
    assert killed is not None, "the run finished before it could be killed"
    assert not list(out.glob("runs/*/result.json"))
    # The config is edited before the re-run: the half-done run (other settings) is not resumed.
    cfg.write_text(cfg.read_text().replace("epochs: 4", "epochs: 1"))
    (r,) = compare(cfg, out_dir=out)
    assert r["status"] == "finished" and r["resumed_from_experience"] is None and r["resolved"]["epochs"] == 1
    assert r["run"] != killed.parent.name and killed.exists()  # the old run's checkpoint is left alone
    # The original config resumes its own checkpoint and ends like an uninterrupted run.
    cfg.write_text(cfg.read_text().replace("epochs: 1", "epochs: 4"))
    (resumed,) = compare(cfg, out_dir=out)
    assert resumed["run"] == killed.parent.name and resumed["resumed_from_experience"] >= 1
    (full,) = compare(cfg, out_dir=tmp_path / "full")
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]


def test_kta_run_stops_on_a_non_finite_loss_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--scenario", "split-digits:n_experiences=2", "--lr", "1e30", "--json", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "non-finite loss" in err and "--lr" in err
    assert not out.exists() and not (tmp_path / "runs").exists()

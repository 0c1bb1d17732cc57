import json
import subprocess
import sys

import numpy as np
import pytest

from scenarios.registry import Registry, RegistryError, parse_spec
from strategies.cli import main, run


def test_kta_run_prints_5x5_matrix(capsys):
    assert main(["run", "--scenario", "split-digits", "--strategy", "naive", "--epochs", "1", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.startswith("exp ")]
    assert len(rows) == 5 and all(len(r.split()) == 2 + 5 for r in rows)
    assert "average accuracy" in out and "forgetting" in out and "BWT" in out


def test_kta_run_prints_each_experiences_loss_terms(capsys, tmp_path):
    """The ledger's terms (criterion, each plugin's, total) per training experience, printed and in the
    JSON; the terms of each row add up to its total (the ledger's sum is the loss)."""
    out = tmp_path / "r.json"
    argv = ["run", "--scenario", "split-digits", "--plugin", "kd:teacher=previous", "--plugin", "l2sp",
            "--epochs", "1", "--seed", "0", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Mean loss terms per training experience" in text
    header = next(l for l in text.splitlines() if l.startswith("exp ") and "criterion" in l)
    assert header.split()[1:] == ["criterion", "l2sp", "kd", "total"]
    rows = json.loads(out.read_text())["loss_terms"]
    assert [r["experience"] for r in rows] == [0, 1, 2, 3, 4]
    assert "kd" not in rows[0] and all("kd" in r for r in rows[1:])  # no previous model on the first experience
    for r in rows:
        parts = sum(v for k, v in r.items() if k not in ("experience", "total"))
        assert r["total"] == pytest.approx(parts, rel=1e-5)


def test_replay_clearly_beats_naive():
    naive = run("split-digits", "naive", epochs=1, seed=0, progress=False)
    replay = run("split-digits", "naive", ["replay:mem_size=200"], epochs=1, seed=0, progress=False)
    assert np.array(naive["accuracy_matrix"]).shape == (5, 5)
    assert replay["average_accuracy"] > naive["average_accuracy"] + 0.15


def test_json_output_is_written(tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "--scenario", "split-digits", "--epochs", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["accuracy_matrix"]) == 5 and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("argv, needle", [
    (["--scenario", "nope"], "--scenario: unknown scenario 'nope'"),
    (["--scenario", "split-digits:n_experiences=3"], "n_experiences=3 does not divide"),
    (["--strategy", "nope"], "--strategy: unknown strategy 'nope'"),
    (["--plugin", "nope"], "--plugin: unknown plugin 'nope'"),
    (["--plugin", "replay:mem_size=abc"], "option 'mem_size': expected int"),
    (["--plugin", "replay:size=3"], "has no option 'size'"),
    (["--plugin", "replay:mem_size=0"], "mem_size must be >= 1"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main(["run", *argv, "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "strategies.cli", "run", "--scenario", "bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown scenario" in r.stderr


def test_kta_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("split-digits", "permuted-digits", "rotated-digits", "split-digits-tasks", "split-mnist1d",
                 "naive", "cumulative", "joint", "replay", "lwf", "ewc"):
        assert name in out


def test_registry_parsing_from_signature():
    from typing import Literal, Optional

    reg = Registry("thing")

    @reg.register("t")
    def make(a: int = 1, b: float = 0.5, c: bool = False, d: Optional[int] = None,
             e: Literal["x", "y"] = "x", f=3, g: str = "s"):
        return dict(a=a, b=b, c=c, d=d, e=e, f=f, g=g)

    assert reg.build("t:a=4,b=1e-3,c=true,d=none,e=y,f=7,g=hello") == \
        dict(a=4, b=1e-3, c=True, d=None, e="y", f=7, g="hello")
    assert reg.build("t:d=5")["d"] == 5
    with pytest.raises(RegistryError, match="option 'e'"):
        reg.build("t:e=z")
    with pytest.raises(RegistryError, match="expected a boolean"):
        reg.build("t:c=maybe")
    assert parse_spec("kd:teacher=previous,T=4") == ("kd", {"teacher": "previous", "T": "4"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("t", lambda: None)


def test_kta_run_writes_tensorboard_logs_under_runs_one_folder_per_resolved_run(tmp_path, capsys):
    assert main(["run", "--scenario", "split-digits", "--epochs", "1"]) == 0  # cwd is tmp_path (conftest)
    assert main(["run", "--scenario", "split-digits", "--epochs", "1", "--plugin", "replay:mem_size=50"]) == 0
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("split-digits__naive__seed0__") for f in folders)
    for f in folders:
        logs = list(f.glob("events.out.tfevents.*"))
        assert len(logs) == 1 and logs[0].stat().st_size > 0
    assert main(["run", "--scenario", "split-digits", "--epochs", "1", "--seed", "1", "--log-dir", "none"]) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_python_quick_start_equals_the_command_line(tmp_path):
    """docs/runs.md's quick start: seed_everything first, then the same objects as `kta run` builds."""
    import torch

    from kta_plugins.nn import MLP
    from kta_plugins.registry import replay
    from scenarios import class_incremental
    from strategies import Naive, seed_everything, train_and_evaluate

    seed_everything(0)
    bm = class_incremental("digits", n_experiences=5, seed=0)
    model = MLP(bm.input_shape, bm.n_classes)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     train_mb_size=16, plugins=[replay(mem_size=200)], seed=0)
    A = train_and_evaluate(strategy, bm)
    cli = run("split-digits", "naive", ["replay:mem_size=200"], epochs=1, seed=0, progress=False)
    assert A.tolist() == cli["accuracy_matrix"]


def test_optimizers_and_schedules(tmp_path):
    base = run("split-digits:n_experiences=2", "naive", epochs=2, seed=0, progress=False)
    adam = run("split-digits:n_experiences=2", "naive", epochs=2, seed=0, progress=False, optimizer="adam", lr=0.01)
    cos = run("split-digits:n_experiences=2", "naive", epochs=2, seed=0, progress=False, lr_schedule="cosine")
    wd = run("split-digits:n_experiences=2", "naive", epochs=2, seed=0, progress=False, optimizer="adamw",
             lr=0.01, weight_decay=0.1)
    hashes = {r["run_hash"] for r in (base, adam, cos, wd)}
    assert len(hashes) == 4 and adam["resolved"]["optimizer"]["name"] == "adam"
    assert cos["resolved"]["lr_schedule"] == {"name": "cosine", "args": {}}
    for r in (adam, cos, wd):
        assert r["accuracy_matrix"] != base["accuracy_matrix"] and r["average_accuracy"] > 0.3


def test_cosine_schedule_sets_the_learning_rate_of_each_epoch():
    from strategies.runs import build_run

    bm, strat = build_run("split-digits:n_experiences=2", "naive", seed=0, epochs=4, lr=0.1, lr_schedule="cosine",
                          progress=False)
    seen = []
    from avalanche.core import SupervisedPlugin

    class Rec(SupervisedPlugin):
        def before_training_epoch(self, s, **k):
            seen.append(round(s.optimizer.param_groups[0]["lr"], 6))

    strat.plugins.append(Rec())
    strat.train(bm.train_stream[0])
    strat.train(bm.train_stream[1])
    import math

    expected = [round(0.1 * 0.5 * (1 + math.cos(math.pi * e / 4)), 6) for e in range(4)]
    assert seen == expected + expected  # restarts at each experience


def test_run_config_file_and_flags_override(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("scenario: split-digits:n_experiences=2\nstrategy: naive\nplugins: ['replay:mem_size=20']\n"
                   "seed: 3\nepochs: 1\noptimizer: adam\nlr: 0.01\n")
    out = tmp_path / "r.json"
    assert main(["run", "--config", str(cfg), "--json", str(out), "--log-dir", "none"]) == 0
    r = json.loads(out.read_text())
    assert r["settings"]["optimizer"] == "adam" and r["settings"]["seed"] == 3 and r["plugins"] == ["replay:mem_size=20"]
    assert main(["run", "--config", str(cfg), "--seed", "4", "--json", str(out), "--log-dir", "none"]) == 0
    assert json.loads(out.read_text())["settings"]["seed"] == 4
    cfg.write_text("scenario: split-digits\nepochs: 0\n")
    capsys.readouterr()
    assert main(["run", "--config", str(cfg), "--log-dir", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kta: error: {cfg}:2: epochs: must be >= 1, got 0"


def test_kta_list_details_and_limits(capsys):
    assert main(["list", "--details", "replay"]) == 0
    out = capsys.readouterr().out
    assert "plugin replay:" in out and "mem_size" in out and "int" in out and "default 200" in out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.strip().startswith("feature-matching"))
    assert "not from the command line" in line
    assert main(["list", "--details", "nothing-called-this"]) == 2
    assert "--details" in capsys.readouterr().err


def test_help_and_list_do_not_import_torch():
    code = ("import sys, contextlib, io\nfrom strategies.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "    main(['run', '--scenario', 'nope'])\n"
            "print(sorted(m for m in ('torch', 'avalanche', 'yaml', 'numpy') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr

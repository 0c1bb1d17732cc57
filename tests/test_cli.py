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


def test_kta_run_writes_tensorboard_logs_under_runs(tmp_path):
    assert main(["run", "--scenario", "split-digits", "--epochs", "1"]) == 0  # cwd is tmp_path (conftest)
    logs = list((tmp_path / "runs" / "split-digits__naive__seed0").glob("events.out.tfevents.*"))
    assert logs and logs[0].stat().st_size > 0
    assert main(["run", "--scenario", "split-digits", "--epochs", "1", "--seed", "1", "--log-dir", "none"]) == 0
    assert not (tmp_path / "runs" / "split-digits__naive__seed1").exists()

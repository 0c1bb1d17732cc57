"""learn2learn is optional (the `meta` extra): everything but the meta strategies works without it.

The checks run in a fresh interpreter in which ``import learn2learn`` fails
(a ``sitecustomize`` puts ``None`` in ``sys.modules['learn2learn']``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    out = {}
    try:
        import learn2learn  # noqa: F401
        out["learn2learn_hidden"] = False
    except ImportError:
        out["learn2learn_hidden"] = True
    from strategies.cli import main
    from strategies.registry import STRATEGIES, load_all
    load_all()
    out["strategies"] = STRATEGIES.names()
    out["maml_help"] = STRATEGIES.help("maml")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out["list_rc"] = main(["list"])
    out["list_has_naive"] = "naive" in buf.getvalue()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        out["run_rc"] = main(["run", "--scenario", "split-digits", "--strategy", "naive", "--epochs", "1",
                              "--seed", "0", "--log-dir", "none"])
    out["run_report"] = buf.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        out["meta_rc"] = main(["run", "--scenario", "glyphs-5way-1shot", "--strategy", "protonet", "--epochs", "1",
                               "--log-dir", "none"])
    out["meta_error"] = err.getvalue()
    print("RESULT" + json.dumps(out))
""")


def test_list_and_a_non_meta_run_work_without_learn2learn(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['learn2learn'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["learn2learn_hidden"]
    # every strategy registers, the meta ones included, and says how to get learn2learn
    assert {"naive", "finetune", "maml", "protonet"} <= set(out["strategies"])
    assert "pip install" in out["maml_help"] and "[meta]" in out["maml_help"]
    assert out["list_rc"] == 0 and out["list_has_naive"]
    assert out["run_rc"] == 0 and "average accuracy" in out["run_report"]
    # a meta strategy fails before training with a one-line error that says how to install learn2learn
    assert out["meta_rc"] == 2
    assert "learn2learn" in out["meta_error"] and "[meta]" in out["meta_error"]
    assert "Traceback" not in out["meta_error"]

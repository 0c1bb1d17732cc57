import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from strategies.cli import main
from strategies.compare import ConfigError, compare, load_config

CONFIG = """\
seeds: [0]
scenarios: [split-digits]
settings: {epochs: 5, batch_size: 16}
strategies:
  - name: replay-free
    strategy: naive
    plugins: ["ewc:ewc_lambda=5"]
"""


def _write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_kill_midway_and_resume_gives_identical_results(tmp_path):
    """SIGKILL after the second experience's checkpoint; the re-run ends with the uninterrupted numbers."""
    plugin_cfg = CONFIG.replace('["ewc:ewc_lambda=5"]', '["l2-init:weight=0.001"]')
    cfg = _write(tmp_path, plugin_cfg)
    example = str(Path(__file__).parent.parent / "examples" / "my_plugin.py")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "strategies.cli", "compare", str(cfg), "--out", str(out), "--import", example]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ckpt = next(iter((out / "runs").glob("split-digits__replay-free__seed0__*/checkpoint.pt")), None) \
            if (out / "runs").exists() else None
        if ckpt is not None and ckpt.exists():
            try:
                n = torch.load(ckpt, weights_only=True)["next_exp"]
            except Exception:  # being replaced right now
                n = 0
            if n >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = n
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, "the run finished before it could be killed"
    result_file = ckpt.parent / "result.json"
    assert not result_file.exists()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    resumed = json.loads(result_file.read_text())
    assert resumed["resumed_from_experience"] == killed_at
    from strategies.cli import import_extensions

    import_extensions([example])
    (full,) = compare(cfg, out_dir=tmp_path / "full")  # uninterrupted, in this process
    assert full["resumed_from_experience"] is None
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    for key in ("average_accuracy", "forgetting", "bwt", "forward_transfer"):
        assert resumed[key] == full[key]


def test_outputs_and_skip_finished(tmp_path):
    cfg = _write(tmp_path, """\
seeds: [0, 1]
scenarios: [split-digits]
settings: {epochs: 1}
strategies:
  - {name: naive, strategy: naive}
  - {name: replay, strategy: naive, plugins: ["replay:mem_size=100"]}
""")
    out = tmp_path / "out"
    results = compare(cfg, out_dir=out)
    assert len(results) == 4 and all(r["status"] == "finished" for r in results)
    for f in ("results.csv", "summary.md", "comparison.png", "heatmaps/split-digits__naive.png"):
        assert (out / f).exists(), f
    r = results[0]
    assert len(r["accuracy_matrix"]) == 5 and len(r["train_time_s"]) == 5 and len(r["peak_rss_mb"]) == 5
    assert "forward_transfer" in r and "| split-digits | replay | 2 |" in (out / "summary.md").read_text()
    assert not list(out.rglob("checkpoint.pt")) and not list(out.rglob("*.tmp"))
    stamp = (out / "runs" / r["run"] / "result.json").stat().st_mtime_ns
    again = compare(cfg, out_dir=out)
    assert again == results and (out / "runs" / r["run"] / "result.json").stat().st_mtime_ns == stamp


def test_process_pool_finishes_with_the_numbers_of_one_process(tmp_path):
    """``--jobs 2`` (a pool of spawned processes; forked children hung at their first torch op once the
    parent had used torch) gives the results of the in-process run."""
    import concurrent.futures

    cfg = _write(tmp_path, """\
seeds: [0]
scenarios: [split-digits]
settings: {epochs: 1}
strategies:
  - {name: naive, strategy: naive}
  - {name: replay, strategy: naive, plugins: ["replay:mem_size=100"]}
""")
    with concurrent.futures.ThreadPoolExecutor(1) as watchdog:  # a hang fails the test instead of CI
        pooled = watchdog.submit(compare, cfg, out_dir=tmp_path / "pool", jobs=2).result(timeout=240)
    serial = compare(cfg, out_dir=tmp_path / "serial")
    assert [r["status"] for r in pooled] == ["finished"] * 2
    assert [r["accuracy_matrix"] for r in pooled] == [r["accuracy_matrix"] for r in serial]


def test_nan_loss_stops_that_run_only(tmp_path):
    cfg = _write(tmp_path, """\
seeds: [0]
scenarios: [split-digits]
settings: {epochs: 1, lr: 1.0e+30}
strategies:
  - {name: exploding, strategy: naive}
""")
    (res,) = compare(cfg, out_dir=tmp_path / "out")
    assert res["status"] == "failed" and "non-finite loss" in res["message"]
    assert "failed" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("text, needle", [
    ("seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: nope}\n",
     ":4: strategies[0].strategy: unknown strategy 'nope'"),
    ("seeds: [0]\nscenarios: [nowhere]\nstrategies:\n  - {name: a, strategy: naive}\n",
     ":2: scenarios[0]: unknown scenario 'nowhere'"),
    ("seeds: [0]\nstrategies:\n  - {name: a, strategy: naive}\n", "scenarios: missing"),
    ("seeds: zero\nscenarios: [split-digits]\nstrategies: []\n", ":1: seeds: must be a list"),
    ("seeds: [0]\nscenarios: [split-digits]\nsettings:\n  epochs: many\nstrategies:\n  - {name: a, strategy: naive}\n",
     ":4: settings.epochs: must be int"),
    ("seeds: [0]\nscenarios: [split-digits]\nsettings:\n  epochs: 0\nstrategies:\n  - {name: a, strategy: naive}\n",
     ":4: settings.epochs: must be >= 1, got 0"),
    ("seeds: [0]\nscenarios: [split-digits]\nsettings: {lr: .nan}\nstrategies:\n  - {name: a, strategy: naive}\n",
     ":3: settings.lr: must be finite"),
    ("seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: naive, plugins: ['replay:mem_size=-3']}\n",
     ":4: strategies[0].plugins[0]: plugin 'replay': mem_size must be >= 1"),
    ("seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: naive, plugins: ['freeze']}\n",
     ":4: strategies[0].plugins[0]: plugin 'freeze': Freeze: patterns=['*']"),
    ("seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: naive, optimizer: adam, momentum: 0.9}\n",
     ":4: strategies[0].momentum: only the sgd optimizer has momentum"),
    ("seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: naive, plugins: ['replay:mem_size=x']}\n",
     "strategies[0].plugins[0]: plugin 'replay': option 'mem_size'"),
    ("seeds: [0]\nscenarios: [split-digits]\ncolour: blue\nstrategies:\n  - {name: a, strategy: naive}\n",
     ":3: colour: unknown key"),
])
def test_bad_configs_exit_2_naming_the_key_and_write_nothing(tmp_path, capsys, text, needle):
    cfg = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["compare", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_config_is_safe_yaml(tmp_path):
    cfg = _write(tmp_path, "seeds: !!python/object/apply:os.system ['echo hi']\nscenarios: []\nstrategies: []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg)


def test_executor_ray_without_ray_names_the_extra_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    cfg = _write(tmp_path, "seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: naive}\n")
    out = tmp_path / "out"
    assert main(["compare", str(cfg), "--out", str(out), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kta: error: --executor:") and "kta-plugins[ray]" in err and len(err.splitlines()) == 1
    with pytest.raises(ImportError, match=r"pip install 'kta-plugins\[ray\]'"):
        compare(cfg, out_dir=out, executor="ray")
    with pytest.raises(ValueError, match="executor must be one of"):
        compare(cfg, out_dir=out, executor="dask")
    assert not out.exists()


def test_shipped_example_configs_build_and_compare_yaml_finishes(tmp_path):
    """Every examples/*.yaml passes the dry build; examples/compare.yaml (1 seed, 1 epoch here; the
    full config is measured in docs/runs.md) finishes every run."""
    from strategies.compare import Config, load_config, prepare

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
    assert any(p.name == "compare.yaml" for p in examples)
    for path in examples:
        if path.name == "run.yaml":  # a `kta run --config` file
            assert main(["run", "--config", str(path), "--log-dir", "none"]) == 0
            continue
        cfg = load_config(path)
        if path.name == "compare.yaml":
            small = Config(cfg.path, [0], cfg.scenarios, cfg.strategies, {**cfg.settings, "epochs": 1})
            results = compare(small, out_dir=tmp_path / path.stem)
            assert len(results) == 14 and all(r["status"] == "finished" for r in results), \
                [r["message"] for r in results if r["status"] != "finished"]
        else:
            assert len(prepare(Config(cfg.path, cfg.seeds[:1], cfg.scenarios, cfg.strategies, cfg.settings))) \
                == len(cfg.scenarios) * len(cfg.strategies)


def test_no_import_cycle_among_the_run_modules():
    """cli -> compare -> runs, one way: no cycle, module-level or inside functions."""
    import ast

    from test_imports import parse

    root = Path(__file__).parent.parent / "strategies"
    files = {f"strategies.{p.stem}": p for p in root.glob("*.py") if p.stem != "__init__"}
    files.update({f"strategies.compare.{p.stem}" if p.stem != "__init__" else "strategies.compare": p
                  for p in (root / "compare").glob("*.py")})
    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(parse(path)):  # (test_imports.parse: a CPython 3.11 workaround)
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files and n != mod}
        graph[mod] = deps
    seen, stack = set(), []

    def visit(m):
        assert m not in stack, " -> ".join(stack[stack.index(m):] + [m])
        if m in seen:
            return
        stack.append(m)
        for d in graph.get(m, ()):
            visit(d)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)
    assert "strategies.runs" in graph["strategies.cli"] and "strategies.cli" not in graph["strategies.compare.runner"]


def test_joint_training_runs_once_on_the_whole_stream(tmp_path):
    cfg = _write(tmp_path, "seeds: [0]\nscenarios: ['split-digits:n_experiences=2']\nsettings: {epochs: 1}\n"
                           "strategies:\n  - {name: joint, strategy: joint}\n")
    (r,) = compare(cfg, out_dir=tmp_path / "out")
    assert r["status"] == "finished" and r["joint"] and len(r["accuracy_matrix"]) == 1
    assert r["average_accuracy"] > 0.5

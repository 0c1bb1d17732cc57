"""The bad-input corpus: every input a user can get wrong exits with status 2 and one line that
names the culprit (the flag, or the config file's line and key), before anything is trained or
written. The CLI runs in this process (``strategies.cli.main``) to keep it fast."""
import os
import textwrap
from pathlib import Path

import pytest

from strategies.cli import main

ROOT = Path(__file__).resolve().parents[1]

# A user module with a model whose outputs are too few, one that takes a fixed input size,
# and a plugin that fails at its first step.
USER = textwrap.dedent('''
    import torch
    from torch import nn
    from kta_plugins.nn import MODELS


    class ThreeOut(nn.Module):
        """Always 3 outputs."""

        def __init__(self, input_shape, n_classes):
            super().__init__()
            self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), 3)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class Fixed100(nn.Module):
        """Takes 100 inputs whatever the data."""

        def __init__(self, input_shape, n_classes):
            super().__init__()
            self.fc = nn.Linear(100, n_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))


    MODELS.register("three-out", ThreeOut)
    MODELS.register("fixed-100", Fixed100)
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "user_models.py").write_text(USER)
    (d / "syntax_error.py").write_text("def broken(:\n    pass\n")
    (d / "clash.py").write_text(textwrap.dedent('''
        from kta_plugins import KTAPlugin, register_plugin


        @register_plugin("replay")
        class MyReplay(KTAPlugin):
            """Clashes with the built-in replay."""
    '''))
    (d / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    (d / "a_file").write_text("x")
    ro = d / "read_only"
    ro.mkdir()
    ro.chmod(0o500)
    (d / "run_bad_key.yaml").write_text("scenario: split-digits\ncolour: blue\n")
    (d / "run_bad_type.yaml").write_text("scenario: split-digits\nepochs: many\n")
    (d / "run_bad_value.yaml").write_text("scenario: split-digits\nlr: -1.0\n")
    (d / "run_bad_plugin.yaml").write_text("scenario: split-digits\nplugins: ['replay:mem_size=0']\n")
    (d / "run_bad_yaml.yaml").write_text("scenario: [split-digits\n")
    (d / "run_list.yaml").write_text("- scenario: split-digits\n")
    yield d
    ro.chmod(0o700)


def _kta(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err.strip()


def _one_line(rc, err, needle):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("kta: error:"), err
    assert "Traceback" not in err
    assert needle in err, err


# (arguments after `kta run`, what the one line must contain). {d} is the folder of the files above.
RUN_CASES = [
    # argparse: types and unknown flags
    (["--epochs", "x"], "argument --epochs: invalid int value"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value"),
    (["--seed", "zero"], "argument --seed: invalid int value"),
    (["--lr", "fast"], "argument --lr: invalid float value"),
    (["--momentum", "high"], "argument --momentum: invalid float value"),
    (["--weight-decay", "x"], "argument --weight-decay: invalid float value"),
    (["--batch-size", "big"], "argument --batch-size: invalid int value"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--epochs"], "argument --epochs: expected one argument"),
    # setting values
    (["--epochs", "0"], "--epochs: must be >= 1, got 0"),
    (["--epochs", "-2"], "--epochs: must be >= 1"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--lr", "nan"], "--lr: must be finite"),
    (["--lr", "inf"], "--lr: must be finite"),
    (["--momentum", "1"], "--momentum: must be in [0, 1)"),
    (["--momentum", "-0.1"], "--momentum: must be in [0, 1)"),
    (["--momentum", "nan"], "--momentum: must be finite"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum: only the sgd optimizer has momentum"),
    (["--weight-decay", "-1"], "--weight-decay: must be >= 0"),
    (["--weight-decay", "inf"], "--weight-decay: must be finite"),
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--seed", "-1"], "--seed: must be in [0, 2**32 - 1], got -1"),
    (["--seed", str(2 ** 32)], "--seed: must be in [0, 2**32 - 1]"),
    (["--lr-schedule", "linear"], "--lr-schedule: must be one of ['none', 'cosine', 'step'], got 'linear'"),
    (["--lr-schedule", "step:every=0"], "--lr-schedule: step: every must be >= 1"),
    (["--lr-schedule", "step:gamma=2"], "--lr-schedule: step: gamma must be in (0, 1]"),
    (["--lr-schedule", "step:gamma=x"], "--lr-schedule: option 'gamma': expected float"),
    (["--lr-schedule", "step:size=2"], "--lr-schedule: 'step' has no option 'size'"),
    (["--lr-schedule", "cosine:every=2"], "--lr-schedule: 'cosine' has no option 'every'"),
    (["--lr-schedule", "step:every"], "--lr-schedule: step: expected key=value"),
    (["--device", "banana"], "--device: unknown device 'banana'"),
    (["--device", "cuda:99"], "--device: 'cuda:99'"),
    (["--device", "meta"], "--device: unsupported device 'meta'"),
    # names and options
    (["--scenario", "nope"], "--scenario: unknown scenario 'nope'"),
    (["--strategy", "nope"], "--strategy: unknown strategy 'nope'"),
    (["--plugin", "nope"], "--plugin: unknown plugin 'nope'"),
    (["--model", "nope"], "--model: unknown model 'nope'"),
    (["--scenario", "split-digits:n_experiences=3"], "--scenario: scenario 'split-digits': n_experiences=3 does not divide"),
    (["--scenario", "split-digits:n_experiences=0"], "--scenario: scenario 'split-digits'"),
    (["--scenario", "split-digits:n_experiences=two"], "--scenario: scenario 'split-digits': option 'n_experiences': expected int"),
    (["--scenario", "split-digits:colour=red"], "--scenario: scenario 'split-digits' has no option 'colour'"),
    (["--scenario", "split-digits:n_experiences"], "--scenario: split-digits: expected key=value"),
    (["--scenario", "rotated-digits:n_experiences=0"], "--scenario: scenario 'rotated-digits': n_experiences must be >= 1"),
    (["--scenario", "split-torchvision:root=/nonexistent/data"], "--scenario: scenario 'split-torchvision:root=/nonexistent/data': MNIST (train split) not found under /nonexistent/data"),
    (["--scenario", "split-torchvision:dataset=imagenet7"], "--scenario: scenario 'split-torchvision'"),
    (["--strategy", "naive:eval_mb_size=0"], "--strategy: strategy 'naive': eval_mb_size must be"),
    (["--strategy", "naive:colour=red"], "--strategy: strategy 'naive' has no option 'colour'"),
    (["--strategy", "finetune:bogus=1"], "--strategy: strategy 'finetune' has no option 'bogus'"),
    (["--plugin", "replay:mem_size=abc"], "--plugin: plugin 'replay': option 'mem_size': expected int"),
    (["--plugin", "replay:size=3"], "--plugin: plugin 'replay' has no option 'size'"),
    (["--plugin", "replay:mem_size=0"], "--plugin: plugin 'replay': mem_size must be >= 1"),
    (["--plugin", "replay:mem_size=-3"], "--plugin: plugin 'replay': mem_size must be >= 1"),
    (["--plugin", "replay:mem_size=2.5"], "--plugin: plugin 'replay': option 'mem_size': expected int"),
    (["--plugin", "lwf:alpha=fast"], "--plugin: plugin 'lwf': option 'alpha': expected float"),
    (["--plugin", "lwf:alpha=nan"], "--plugin: plugin 'lwf': alpha"),
    (["--plugin", "ewc:ewc_lambda=-1"], "--plugin: plugin 'ewc': ewc_lambda"),
    (["--plugin", "ewc:mode=sometimes"], "--plugin: plugin 'ewc': option 'mode': expected one of"),
    (["--plugin", "kd:temperature=-1"], "--plugin: plugin 'kd': temperature"),
    (["--plugin", "kd:alpha=2"], "--plugin: plugin 'kd': alpha"),
    (["--plugin", "kd:teacher=/no/such/teacher.pt"], "--plugin: plugin 'kd'"),
    (["--plugin", "l2sp:alpha=-1"], "--plugin: plugin 'l2sp': alpha"),
    (["--plugin", "l2sp:anchor=yesterday"], "--plugin: plugin 'l2sp'"),
    (["--plugin", "lora:rank=0"], "--plugin: plugin 'lora': rank"),
    (["--plugin", "lora:patterns=['nothing*']"], "--plugin: plugin \"lora:patterns=['nothing*']\":"),
    (["--plugin", "freeze"], "--plugin: plugin 'freeze': Freeze: patterns=['*'] exclude=[] froze every parameter"),
    (["--plugin", "freeze:patterns=['nothing']"], "--plugin: plugin \"freeze:patterns=['nothing']\":"),
    (["--plugin", "feature-matching"], "--plugin: plugin 'feature-matching' cannot run from the command line: needs paired inputs"),
    (["--plugin", "soft-sharing"], "--plugin: plugin 'soft-sharing' cannot run from the command line: needs a model with one tower"),
    (["--plugin", ":mem_size=3"], "--plugin: unknown plugin ''"),
    (["--plugin", "replay", "--plugin", "replay:mem_size=0"], "--plugin: plugin 'replay': mem_size must be >= 1"),
    (["--scenario", "domain-stream-digits", "--strategy", "domain-adaptation"],
     "--strategy: strategy 'domain-adaptation'"),
    # models that do not fit the scenario
    (["--model", "cnn", "--scenario", "split-mnist1d"], "--model: model 'cnn': SmallCNN needs input_shape (C, H, W)"),
    (["--model", "cnn1d", "--scenario", "split-digits"], "--model: model 'cnn1d': CNN1d needs input_shape (channels, length)"),
    (["--model", "mlp:heads=multi"], "--model: model 'mlp' with heads=multi needs a task-incremental stream"),
    (["--model", "mlp:heads=single", "--scenario", "split-digits-tasks"], "--model: model 'mlp' with heads=single"),
    (["--model", "mlp:colour=red"], "--model: model 'mlp' has no option 'colour'"),
    (["--import", "{d}/user_models.py", "--model", "three-out"], "--model: 'three-out' gives 3 outputs but the scenario has 10 classes"),
    (["--import", "{d}/user_models.py", "--model", "fixed-100"], "--model: 'fixed-100' cannot take this scenario's input (shape (1, 8, 8))"),
    # paths and files
    (["--json", "{d}/read_only/r.json"], "--json: cannot create {d}/read_only/r.json: {d}/read_only is not writable"),
    (["--json", "{d}/a_file/r.json"], "--json: cannot create {d}/a_file/r.json: {d}/a_file is a file"),
    (["--json", "{d}"], "--json: {d} is a folder, not a file"),
    (["--json", "/proc/kta-test/r.json"], "--json: cannot create /proc/kta-test/r.json: /proc is not writable"),
    (["--log-dir", "/proc/kta-test"], "--log-dir: cannot create /proc/kta-test: /proc is not writable"),
    (["--log-dir", "{d}/a_file"], "--log-dir: {d}/a_file exists and is not a folder"),
    (["--log-dir", "{d}/read_only/tb"], "--log-dir: cannot create {d}/read_only/tb: {d}/read_only is not writable"),
    (["--import", "{d}/missing.py"], "--import: no such file: {d}/missing.py"),
    (["--import", "{d}/syntax_error.py"], "--import: {d}/syntax_error.py: syntax error at line 1"),
    (["--import", "no_such_module_xyz"], "--import: cannot import no_such_module_xyz"),
    (["--import", "{d}/clash.py"], "--import: {d}/clash.py: ValueError: plugin name 'replay' is already registered to <function replay"),
    (["--import", "{d}/raises.py"], "--import: {d}/raises.py: RuntimeError: boom at import"),
    (["--config", "{d}/missing.yaml"], "--config: {d}/missing.yaml: no such config file"),
    (["--config", "{d}/run_bad_key.yaml"], "--config: {d}/run_bad_key.yaml:2: colour: unknown key"),
    (["--config", "{d}/run_bad_type.yaml"], "--config: {d}/run_bad_type.yaml:2: epochs: must be int, got str"),
    (["--config", "{d}/run_bad_value.yaml"], "kta: error: {d}/run_bad_value.yaml:2: lr: must be > 0, got -1.0"),
    (["--config", "{d}/run_bad_plugin.yaml"], "kta: error: {d}/run_bad_plugin.yaml:2: plugins[0]: plugin 'replay': mem_size must be >= 1"),
    (["--config", "{d}/run_bad_yaml.yaml"], "--config: {d}/run_bad_yaml.yaml: not valid YAML"),
    (["--config", "{d}/run_list.yaml"], "--config: {d}/run_list.yaml:1: a run config must be a mapping"),
    (["--distributed"], "--distributed: needs torchrun's environment"),
]


@pytest.mark.parametrize("argv, needle", RUN_CASES, ids=[" ".join(a)[:60] for a, _ in RUN_CASES])
def test_kta_run_bad_input(argv, needle, files, capsys, tmp_path, monkeypatch):
    for var in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    if os.geteuid() == 0 and "read_only" in " ".join(argv):
        pytest.skip("root can write anywhere")
    argv = [a.replace("{d}", str(files)) for a in argv]
    extra = [] if "--log-dir" in argv or "--json" in argv else ["--json", str(tmp_path / "never.json")]
    rc, err = _kta(["run", *argv, *extra], capsys)
    _one_line(rc, err, needle.replace("{d}", str(files)))
    assert not (tmp_path / "never.json").exists() and not (tmp_path / "runs").exists()


# Compare configs: (config text, what the one line must contain). Lines are 1-based.
HEAD = "seeds: [0]\nscenarios: [split-digits]\n"
ONE = "strategies:\n  - {name: a, strategy: naive}\n"
CONFIG_CASES = [
    ("seeds: [0]\nscenarios: [split-digits]\nstrategies:\n  - {name: a, strategy: nope}\n", ":4: strategies[0].strategy: unknown strategy 'nope'"),
    ("seeds: [0]\nscenarios: [nowhere]\n" + ONE, ":2: scenarios[0]: unknown scenario 'nowhere'"),
    ("seeds: [0]\n" + ONE, ":1: scenarios: missing (required)"),
    ("scenarios: [split-digits]\n" + ONE, ":1: seeds: missing (required)"),
    (HEAD, ":1: strategies: missing (required)"),
    ("seeds: zero\nscenarios: [split-digits]\n" + ONE, ":1: seeds: must be a list"),
    ("seeds: []\nscenarios: [split-digits]\n" + ONE, ":1: seeds: must not be empty"),
    ("seeds: [-1]\nscenarios: [split-digits]\n" + ONE, ":1: seeds[0]: must be in [0, 2**32 - 1], got -1"),
    ("seeds: [a]\nscenarios: [split-digits]\n" + ONE, ":1: seeds[0]: must be an integer, got 'a'"),
    ("seeds: [0, 0]\nscenarios: [split-digits]\n" + ONE, ":1: seeds: duplicate seeds"),
    ("seeds: [0]\nscenarios: []\n" + ONE, ":2: scenarios: must not be empty"),
    ("seeds: [0]\nscenarios: split-digits\n" + ONE, ":2: scenarios: must be a list"),
    ("seeds: [0]\nscenarios: [3]\n" + ONE, ":2: scenarios[0]: must be a string like 'name:key=value', got 3"),
    ("seeds: [0]\nscenarios: ['split-digits:n_experiences=x']\n" + ONE, ":2: scenarios[0]: scenario 'split-digits': option 'n_experiences': expected int"),
    ("seeds: [0]\nscenarios: ['split-digits:n_experiences=3']\n" + ONE, ":2: scenarios[0]: scenario 'split-digits': n_experiences=3 does not divide"),
    (HEAD + "colour: blue\n" + ONE, ":3: colour: unknown key"),
    (HEAD + "output: [a]\n" + ONE, ":3: output: must be a str"),
    (HEAD + "strategies: {a: naive}\n", ":3: strategies: must be a list"),
    (HEAD + "strategies: []\n", ":3: strategies: must not be empty"),
    (HEAD + "strategies:\n  - naive\n", ":4: strategies[0]: must be a mapping"),
    (HEAD + "strategies:\n  - {strategy: naive}\n", ":4: strategies[0].name: missing (required)"),
    (HEAD + "strategies:\n  - {name: a}\n", ":4: strategies[0].strategy: missing (required)"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, colour: red}\n", ":4: strategies[0].colour: unknown key"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive}\n  - {name: a, strategy: naive}\n", ":5: strategies[1].name: duplicate name 'a'"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, plugins: replay}\n", ":4: strategies[0].plugins: must be a list"),
    (HEAD + "strategies:\n  - {name: 3, strategy: naive}\n", ":4: strategies[0].name: must be a str"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, plugins: ['nope']}\n", ":4: strategies[0].plugins[0]: unknown plugin 'nope'"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, plugins: ['replay:mem_size=x']}\n", ":4: strategies[0].plugins[0]: plugin 'replay': option 'mem_size'"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, plugins: ['replay:mem_size=-3']}\n", ":4: strategies[0].plugins[0]: plugin 'replay': mem_size must be >= 1"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, plugins: ['freeze']}\n", ":4: strategies[0].plugins[0]: plugin 'freeze': Freeze: patterns=['*']"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, plugins: ['feature-matching']}\n", ":4: strategies[0].plugins[0]: plugin 'feature-matching' cannot run from the command line"),
    (HEAD + "strategies:\n  - {name: a, strategy: 'naive:colour=red'}\n", ":4: strategies[0].strategy: strategy 'naive' has no option 'colour'"),
    (HEAD + "settings: {epochs: 0}\n" + ONE, ":3: settings.epochs: must be >= 1, got 0"),
    (HEAD + "settings: {epochs: many}\n" + ONE, ":3: settings.epochs: must be int, got str"),
    (HEAD + "settings: {lr: .nan}\n" + ONE, ":3: settings.lr: must be finite"),
    (HEAD + "settings: {lr: -0.1}\n" + ONE, ":3: settings.lr: must be > 0"),
    (HEAD + "settings: {momentum: 1.5}\n" + ONE, ":3: settings.momentum: must be in [0, 1)"),
    (HEAD + "settings: {batch_size: 0}\n" + ONE, ":3: settings.batch_size: must be >= 1"),
    (HEAD + "settings: {optimizer: rmsprop}\n" + ONE, ":3: settings.optimizer: must be one of ['sgd', 'adam', 'adamw']"),
    (HEAD + "settings: {lr_schedule: linear}\n" + ONE, ":3: settings.lr_schedule: must be one of"),
    (HEAD + "settings: {weight_decay: -1}\n" + ONE, ":3: settings.weight_decay: must be >= 0"),
    (HEAD + "settings: {device: banana}\n" + ONE, ":3: settings.device: unknown device 'banana'"),
    (HEAD + "settings: {model: nope}\n" + ONE, ":3: settings.model: unknown model 'nope'"),
    (HEAD + "settings: {model: cnn1d}\n" + ONE, ":3: settings.model: model 'cnn1d': CNN1d needs input_shape"),
    (HEAD + "settings: {colour: red}\n" + ONE, ":3: settings.colour: unknown setting"),
    (HEAD + "settings: [1]\n" + ONE, ":3: settings: must be a dict"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, optimizer: adam, momentum: 0.9}\n", ":4: strategies[0].momentum: only the sgd optimizer has momentum"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, epochs: 0}\n", ":4: strategies[0].epochs: must be >= 1, got 0"),
    (HEAD + "strategies:\n  - {name: a, strategy: naive, lr_schedule: 'step:every=0'}\n", ":4: strategies[0].lr_schedule: step: every must be >= 1"),
    ("seeds: [0]\nscenarios: [domain-stream-digits]\nstrategies:\n  - {name: a, strategy: domain-adaptation}\n",
     ":4: strategies[0].strategy: strategy 'domain-adaptation'"),
    ("seeds: [0\n", "not valid YAML"),
    ("- 1\n- 2\n", ":1: the config must be a mapping"),
    ("seeds: !!python/object/apply:os.system ['echo hi']\nscenarios: []\nstrategies: []\n", "not valid YAML"),
]


@pytest.mark.parametrize("text, needle", CONFIG_CASES, ids=[f"cfg{i}" for i in range(len(CONFIG_CASES))])
def test_kta_compare_bad_config(text, needle, capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    rc, err = _kta(["compare", str(cfg), "--out", str(out)], capsys)
    _one_line(rc, err, needle)
    assert str(cfg) in err and not out.exists()


COMPARE_FLAG_CASES = [
    (["--jobs", "0"], "--jobs: must be >= 1, got 0"),
    (["--jobs", "x"], "argument --jobs: invalid int value"),
    (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
    (["--out", "{d}/a_file"], "--out: {d}/a_file exists and is not a folder"),
    (["--import", "{d}/syntax_error.py"], "--import: {d}/syntax_error.py: syntax error at line 1"),
]


@pytest.mark.parametrize("argv, needle", COMPARE_FLAG_CASES, ids=[" ".join(a) for a, _ in COMPARE_FLAG_CASES])
def test_kta_compare_bad_flags(argv, needle, files, capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(HEAD + ONE)
    argv = [a.replace("{d}", str(files)) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "out")]
    rc, err = _kta(["compare", str(cfg), *argv, *out], capsys)
    _one_line(rc, err, needle.replace("{d}", str(files)))
    assert not (tmp_path / "out").exists()


def test_compare_missing_config_file(capsys, tmp_path):
    rc, err = _kta(["compare", str(tmp_path / "none.yaml")], capsys)
    _one_line(rc, err, "none.yaml: no such config file")


def test_every_config_error_at_once(capsys, tmp_path):
    """Two bad keys and a bad plugin value: three lines, one per error, nothing written."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seeds: [-1]\nscenarios: [split-digits]\nsettings: {epochs: 0}\nstrategies:\n"
                   "  - {name: a, strategy: naive, plugins: ['replay:size=3']}\n")
    rc, err = _kta(["compare", str(cfg), "--out", str(tmp_path / "out")], capsys)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 3, err
    assert any(":1: seeds[0]:" in l for l in lines) and any(":3: settings.epochs:" in l for l in lines)
    assert any(":5: strategies[0].plugins[0]: plugin 'replay' has no option 'size'" in l for l in lines)
    assert not (tmp_path / "out").exists()


def test_every_dry_build_error_at_once(capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seeds: [0]\nscenarios: [split-digits, split-mnist1d]\nstrategies:\n"
                   "  - {name: a, strategy: naive, plugins: ['freeze']}\n  - {name: b, strategy: naive, model: cnn}\n")
    rc, err = _kta(["compare", str(cfg), "--out", str(tmp_path / "out")], capsys)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 3, err  # freeze on both scenarios, cnn on MNIST-1D only
    assert sum("strategies[0].plugins[0]: plugin 'freeze'" in l for l in lines) == 2
    assert sum(":5: strategies[1].model: model 'cnn': SmallCNN needs input_shape" in l for l in lines) == 1
    assert not (tmp_path / "out").exists()


def test_list_bad_inputs(capsys, files):
    rc, err = _kta(["list", "--details", "nope"], capsys)
    _one_line(rc, err, "--details: no scenario, strategy, plugin or model is called 'nope'")
    rc, err = _kta(["list", "--import", str(files / "syntax_error.py")], capsys)
    _one_line(rc, err, "--import:")
    rc, err = _kta(["frobnicate"], capsys)
    _one_line(rc, err, "invalid choice: 'frobnicate'")
    rc, err = _kta([], capsys)
    _one_line(rc, err, "the following arguments are required: command")


def test_corpus_size():
    n = len(RUN_CASES) + len(CONFIG_CASES) + len(COMPARE_FLAG_CASES) + 4 + 2 + 1
    assert n >= 100, n


def test_static_index_equals_the_live_registries():
    """`kta list` and the first checks read strategies/catalog_index.py: regenerate it with
    `python -m strategies.catalog` when a name or an option changes."""
    from strategies import catalog
    from strategies.catalog_index import INDEX

    live = catalog.build_index()
    stale = sorted(f"{kind} {name}" for kind in set(live) | set(INDEX)
                   for name in set(live.get(kind, {})) | set(INDEX.get(kind, {}))
                   if live.get(kind, {}).get(name) != INDEX.get(kind, {}).get(name))
    assert not stale, f"stale entries {stale}: regenerate with `python -m strategies.catalog`"

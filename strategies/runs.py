"""One run: its settings, their checks, its identity, and building it.

A run is a scenario, a strategy with its plugins, a seed and the settings of
:data:`SETTINGS` (epochs, optimizer, learning rate and its schedule, batch
size, model, device). ``kta run``, ``kta run --config`` and every entry of a
``kta compare`` config go through the same functions here:

* :func:`check_settings` checks the values (one :class:`SettingError` naming
  the key; no torch needed except for the device);
* :func:`build_run` builds ``(benchmark, strategy)``; every error it raises is a
  :class:`SettingError` naming the key (``scenario``, ``strategy``,
  ``plugins[j]``, ``epochs``, ...);
* :func:`probe_run` builds the run once more without logs and trains it for a
  single iteration on its first experience: errors that plugins, models and
  strategies can only raise once they see the data (a LoRA pattern that
  matches nothing, ``freeze`` with its defaults, a model whose input shape or
  number of outputs does not fit the scenario, a domain-adaptation strategy
  on a stream without target data) become a :class:`SettingError` naming the
  key of the culprit, before anything is trained or written;
* :func:`resolve` gives the fully resolved settings (every option of the
  scenario, strategy and plugins with its default filled in, the optimizer,
  the model name, the seed and KTA's version) and :func:`run_hash` their
  hash: the run's identity (result folders, default log folders).

Seeding: :func:`seed_everything` (Avalanche's ``RNGManager``: Python, NumPy and
torch) is called before the scenario and the model are built, so a Python
script that calls it first builds the same model as the command line::

    >>> from strategies import seed_everything
    >>> seed_everything(0)   # before building the model
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = [
    "SettingError", "NonFiniteLoss", "SETTINGS", "OPTIMIZERS", "LR_SCHEDULES", "CLI_LIMITS",
    "registries", "seed_everything", "check_settings", "check_seed", "check_device", "check_writable",
    "build_run", "probe_run", "resolve", "run_hash", "kta_version", "non_finite_guard", "import_extensions",
    "atomic_write_text", "one_line", "safe_name", "run", "make_optimizer", "model_names", "models",
]

#: Run settings shared by ``kta run`` (as ``--flags``), ``kta run --config`` and ``kta compare``
#: (``settings:`` and per-strategy keys): key -> (type, default, help).
SETTINGS = {
    "epochs": (int, 1, "epochs per experience"),
    "optimizer": (str, "sgd", "sgd, adam or adamw"),
    "lr": (float, 0.1, "learning rate"),
    "momentum": (float, 0.0, "SGD momentum"),
    "weight_decay": (float, 0.0, "weight decay (L2 for sgd/adam, decoupled for adamw)"),
    "lr_schedule": (str, "none", "none, cosine or step[:every=E,gamma=G], over the epochs of each experience"),
    "batch_size": (int, 16, "training minibatch size"),
    "model": (str, None, "model name (default: by the scenario's input shape)"),
    "device": (str, "cpu", "cpu, cuda, cuda:N or mps"),
}

#: ``--optimizer`` names: the torch optimizers they build.
OPTIMIZERS = ("sgd", "adam", "adamw")

#: ``--lr-schedule`` names and their options (name -> {option: (type, default)}).
LR_SCHEDULES = {"none": {}, "cosine": {}, "step": {"every": (int, 1), "gamma": (float, 0.1)}}

#: Registered names that the command line cannot run, and why (shown by ``kta list`` and raised
#: as one line before anything is built). Python users can still use them.
CLI_LIMITS = {
    ("plugin", "feature-matching"): "needs paired inputs (pairs=(source, target)), which the command line "
                                    "cannot give; use it from Python",
    ("plugin", "soft-sharing"): "needs a model with one tower per task (e.g. kta_plugins.nn.SoftSharing), "
                                "which the command line cannot build; use it from Python",
}

#: Registered names that run from the command line only with some scenarios (shown by ``kta list``).
CLI_NOTES = {
    ("strategy", "domain-adaptation"): "needs a scenario with unlabeled target data (digits-to-*, mnist1d-*)",
}


class SettingError(ValueError):
    """A bad run setting. ``key`` names it: ``scenario``, ``strategy``, ``plugins[j]``, or a key of
    :data:`SETTINGS` / ``seed``; the message is one line."""

    def __init__(self, key: str, message: str):
        super().__init__(one_line(message))
        self.key = key


class NonFiniteLoss(RuntimeError):
    """A NaN or infinite training loss."""


def one_line(text) -> str:
    """``text`` on one line (error messages of libraries can span several)."""
    return " ".join(str(text).split())


def safe_name(text: str) -> str:
    """``text`` usable as a file name."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)  # mkstemp creates 0600; give the file the mode open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def registries():
    """``(SCENARIOS, STRATEGIES, PLUGINS)`` with every built-in name registered."""
    from kta_plugins.base import PLUGINS
    from scenarios.registry import SCENARIOS, load_all as load_scenarios

    from .registry import STRATEGIES, load_all

    load_scenarios()
    load_all()
    return SCENARIOS, STRATEGIES, PLUGINS


def models():
    """The model registry (``kta_plugins.nn.MODELS``): names -> factories."""
    from kta_plugins.nn import MODELS

    return MODELS


def model_names() -> list:
    m = models()
    return sorted(m.names() if hasattr(m, "names") else m)


def import_extensions(paths: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` files) so that their plugins, strategies,
    scenarios and models register. The built-in names register first, so a clash names the
    built-in owner. Raises :class:`SettingError` with key ``import``."""
    import importlib
    import importlib.util

    if not paths:
        return
    registries()
    for target in paths:
        try:
            if target.endswith(".py"):
                path = Path(target)
                if not path.is_file():
                    raise SettingError("import", f"no such file: {path}")
                name = f"kta_user_{path.stem}"
                if getattr(sys.modules.get(name), "__file__", None) == str(path.resolve()):
                    continue  # imported already (a second call in one process)
                spec = importlib.util.spec_from_file_location(name, path.resolve())
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(spec.name, None)
                    raise
            else:
                importlib.import_module(target)
        except SettingError:
            raise
        except SyntaxError as e:
            raise SettingError("import", f"{target}: syntax error at line {e.lineno}: {e.msg}") from None
        except (ImportError, OSError) as e:
            raise SettingError("import", f"cannot import {target}: {e}") from None
        except Exception as e:  # the user's module raised while importing (a name clash, a bug)
            raise SettingError("import", f"{target}: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------------- checks
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (Avalanche's ``RNGManager.set_random_seeds``).

    ``kta run`` calls it before building the scenario and the model; call it first in a
    Python script to get the same initial model (and numbers) as the command line."""
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(check_seed(seed))


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SettingError("seed", f"must be an integer, got {seed!r}")
    if not 0 <= seed < 2 ** 32:
        raise SettingError("seed", f"must be in [0, 2**32 - 1], got {seed}")
    return seed


def _number(key, value, typ):
    if isinstance(value, bool) or not isinstance(value, (int, float) if typ is float else int):
        raise SettingError(key, f"must be {'a number' if typ is float else 'an integer'}, got {value!r}")
    if typ is float and not math.isfinite(value):
        raise SettingError(key, f"must be finite, got {value!r}")
    return typ(value)


def parse_lr_schedule(spec: str) -> tuple[str, dict]:
    """``"step:every=2,gamma=0.5"`` -> ``("step", {"every": 2, "gamma": 0.5})`` with defaults filled in.
    (Parsed here, not with the registries' ``parse_spec``: no option takes a nested value, and this
    check runs before torch is imported.)"""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in LR_SCHEDULES:
        raise SettingError("lr_schedule", f"must be one of {list(LR_SCHEDULES)}, got {name!r}")
    opts = {k: d for k, (_, d) in LR_SCHEDULES[name].items()}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        k, eq, v = (x.strip() for x in item.partition("="))
        if not eq or not k:
            raise SettingError("lr_schedule", f"{name}: expected key=value, got {item!r}")
        if k not in opts:
            raise SettingError("lr_schedule", f"{name!r} has no option {k!r}; options: "
                                              f"{', '.join(opts) or '(none)'}")
        typ = LR_SCHEDULES[name][k][0]
        try:
            opts[k] = typ(v) if typ is float else int(v, 10)
        except ValueError:
            raise SettingError("lr_schedule", f"option {k!r}: expected {typ.__name__}, got {v!r}") from None
    if name == "step":
        if opts["every"] < 1:
            raise SettingError("lr_schedule", f"step: every must be >= 1, got {opts['every']}")
        if not (0 < opts["gamma"] <= 1):
            raise SettingError("lr_schedule", f"step: gamma must be in (0, 1], got {opts['gamma']}")
    return name, opts


def check_device(device: str) -> str:
    """``device`` if torch knows it and it is present here."""
    if not isinstance(device, str):
        raise SettingError("device", f"must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise SettingError("device", f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SettingError("device", f"{device!r}: no CUDA device on this machine (use --device cpu)")
        if d.index is not None and d.index >= n:
            raise SettingError("device", f"{device!r}: this machine has {n} CUDA device(s)")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise SettingError("device", f"{device!r}: MPS is not available on this machine")
    elif d.type != "cpu":
        raise SettingError("device", f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return device


def check_settings(settings: dict, device: bool = True) -> dict:
    """Check the values of :data:`SETTINGS` keys (defaults filled in); :class:`SettingError` names the key.

    ``device=False`` skips the device check (it imports torch)."""
    out = {k: d for k, (_, d, _) in SETTINGS.items()}
    for key, value in settings.items():
        if key not in SETTINGS:
            raise SettingError(key, f"unknown setting; expected one of {sorted(SETTINGS)}")
        out[key] = value
    out["epochs"] = _number("epochs", out["epochs"], int)
    if out["epochs"] < 1:
        raise SettingError("epochs", f"must be >= 1, got {out['epochs']}")
    out["batch_size"] = _number("batch_size", out["batch_size"], int)
    if out["batch_size"] < 1:
        raise SettingError("batch_size", f"must be >= 1, got {out['batch_size']}")
    out["lr"] = _number("lr", out["lr"], float)
    if not out["lr"] > 0:
        raise SettingError("lr", f"must be > 0, got {out['lr']}")
    out["momentum"] = _number("momentum", out["momentum"], float)
    if not 0 <= out["momentum"] < 1:
        raise SettingError("momentum", f"must be in [0, 1), got {out['momentum']}")
    out["weight_decay"] = _number("weight_decay", out["weight_decay"], float)
    if out["weight_decay"] < 0:
        raise SettingError("weight_decay", f"must be >= 0, got {out['weight_decay']}")
    if out["optimizer"] not in OPTIMIZERS:
        raise SettingError("optimizer", f"must be one of {list(OPTIMIZERS)}, got {out['optimizer']!r}")
    if out["optimizer"] != "sgd" and out["momentum"] != 0:
        raise SettingError("momentum", f"only the sgd optimizer has momentum; got optimizer {out['optimizer']!r}")
    if not isinstance(out["lr_schedule"], str):
        raise SettingError("lr_schedule", f"must be a string, got {out['lr_schedule']!r}")
    parse_lr_schedule(out["lr_schedule"])
    if out["model"] is not None and not isinstance(out["model"], str):
        raise SettingError("model", f"must be a model name, got {out['model']!r}")
    if not isinstance(out["device"], str):
        raise SettingError("device", f"must be a string such as 'cpu', got {out['device']!r}")
    if device:
        check_device(out["device"])
    return out


def check_writable(path, key: str, folder: bool = False) -> None:
    """Raise :class:`SettingError` unless ``path`` (a file, or a folder when ``folder``) can be
    created or overwritten. Creates nothing."""
    p = Path(path)
    if p.exists():
        if folder and not p.is_dir():
            raise SettingError(key, f"{path} exists and is not a folder")
        if not folder and p.is_dir():
            raise SettingError(key, f"{path} is a folder, not a file")
        if not os.access(p if folder else p.parent, os.W_OK) or (not folder and not os.access(p, os.W_OK)):
            raise SettingError(key, f"{path} is not writable")
        return
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SettingError(key, f"cannot create {path}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK) or not _can_create_in(parent):
        raise SettingError(key, f"cannot create {path}: {parent} is not writable")


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: ``os.access`` says yes to root everywhere,
    /proc included); the file is gone when this returns."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_cli_name(kind: str, name: str, key: str) -> None:
    reason = CLI_LIMITS.get((kind, name))
    if reason:
        raise SettingError(key, f"{kind} {name!r} cannot run from the command line: {reason}")


# ----------------------------------------------------------------------------------- building
def make_optimizer(name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    """``torch.optim.SGD`` / ``Adam`` / ``AdamW`` over ``params``."""
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise SettingError("optimizer", f"must be one of {list(OPTIMIZERS)}, got {name!r}")


def lr_schedule_plugin(spec: str, epochs: int):
    """A plugin that scales the learning rate over the epochs of each experience (``None`` for ``none``)."""
    name, opts = parse_lr_schedule(spec)
    if name == "none":
        return None
    from avalanche.core import SupervisedPlugin

    from kta_plugins.compose import set_lr_factor

    class EpochLRSchedule(SupervisedPlugin):
        """Cosine (``0.5 (1 + cos(pi e / E))``) or step (``gamma ** (e // every)``) factor on every
        group's learning rate at epoch ``e`` of ``E``, restarting at each experience. Through
        ``set_lr_factor``, not a torch scheduler: KTA strategies re-assemble the optimizer's groups
        each experience, and factors compose with plugins' own (LP-FT, GaninLR)."""

        def __init__(self):
            super().__init__()
            self.epoch = 0

        def before_training_exp(self, strategy, **kwargs):
            self.epoch = 0
            set_lr_factor(strategy, self, 1.0)

        def after_training_epoch(self, strategy, **kwargs):
            self.epoch += 1
            if name == "cosine":
                factor = 0.5 * (1 + math.cos(math.pi * self.epoch / epochs))
            else:
                factor = opts["gamma"] ** (self.epoch // opts["every"])
            set_lr_factor(strategy, self, max(factor, 1e-12))

        def after_training_exp(self, strategy, **kwargs):
            set_lr_factor(strategy, self, 1.0)

    return EpochLRSchedule()


def non_finite_guard():
    """A plugin that raises :class:`NonFiniteLoss` at the first NaN / infinite training loss."""
    import torch
    from avalanche.core import SupervisedPlugin

    class NonFiniteGuard(SupervisedPlugin):
        """Stops the run at the first NaN / infinite loss."""

        def before_backward(self, strategy, **kwargs):
            if not bool(torch.isfinite(strategy.loss.detach()).all()):
                raise NonFiniteLoss(
                    f"non-finite loss {float(strategy.loss.detach().sum())} at experience "
                    f"{strategy.experience.current_experience}, iteration {strategy.clock.train_epoch_iterations}")

    return NonFiniteGuard()


def build_run(scenario: str, strategy: str, plugins: Sequence[str] = (), *, seed: int = 0,
              log_dir: Optional[str] = None, progress: Optional[bool] = None, **settings):
    """Build ``(benchmark, strategy)`` from command-line style specs and :data:`SETTINGS` values.

    The user's plugins come first in ``strategy.plugins`` (then the learning-rate schedule, if any).
    Raises :class:`SettingError` naming the key of any bad value.
    """
    from scenarios.registry import RegistryError

    settings = check_settings(settings)
    check_seed(seed)
    SCENARIOS, STRATEGIES, PLUGINS = registries()
    from scenarios.registry import parse_spec

    seed_everything(seed)
    try:
        check_cli_name("scenario", parse_spec(scenario)[0], "scenario")
        bm = SCENARIOS.build(scenario, seed=seed)
    except SettingError:
        raise
    except RegistryError as e:
        raise SettingError("scenario", str(e)) from None
    except (ValueError, TypeError, OSError) as e:
        raise SettingError("scenario", f"scenario {scenario!r}: {e}") from None
    model_name = settings["model"] or default_model(bm)
    net = build_model(model_name, bm)
    built = []
    for j, spec in enumerate(plugins):
        try:
            check_cli_name("plugin", parse_spec(spec)[0], f"plugins[{j}]")
            built.append(PLUGINS.build(spec))
        except SettingError:
            raise
        except RegistryError as e:
            raise SettingError(f"plugins[{j}]", str(e)) from None
        except (ValueError, TypeError, OSError) as e:
            raise SettingError(f"plugins[{j}]", f"plugin {spec!r}: {e}") from None
    schedule = lr_schedule_plugin(settings["lr_schedule"], settings["epochs"])
    if schedule is not None:
        built.append(schedule)
    opt = make_optimizer(settings["optimizer"], net.parameters(), settings["lr"], settings["momentum"],
                         settings["weight_decay"])
    try:
        check_cli_name("strategy", parse_spec(strategy)[0], "strategy")
        strat = STRATEGIES.build(
            strategy, model=net, optimizer=opt, train_epochs=settings["epochs"],
            train_mb_size=settings["batch_size"], plugins=built, seed=seed, device=settings["device"],
            log_dir=log_dir, progress=progress,
        )
    except SettingError:
        raise
    except (RegistryError, ValueError, TypeError) as e:
        raise SettingError("strategy", str(e)) from None
    strat.kta_model_name = model_name
    strat.kta_user_plugins = list(built[: len(plugins)])  # the --plugin objects, in order
    from .distributed import check_strategy, is_distributed

    if is_distributed():
        try:
            check_strategy(strat)
        except ValueError as e:
            raise SettingError("strategy", str(e)) from None
    return bm, strat


def default_model(bm) -> str:
    from kta_plugins.nn import default_model_name

    try:
        return default_model_name(bm.input_shape)
    except (AttributeError, ValueError, TypeError) as e:
        raise SettingError("model", f"no default model for this scenario ({e}); name one") from None


def build_model(spec: str, bm):
    """``kta_plugins.nn.build_model`` (the model registry's ``NAME[:key=value]``, sized for ``bm``)."""
    from kta_plugins.nn import build_model as build

    name = spec.partition(":")[0].strip()
    if name not in model_names():
        raise SettingError("model", f"unknown model {name!r}; known: {', '.join(model_names())}")
    try:
        return build(spec, bm)
    except (ValueError, TypeError, OSError) as e:
        raise SettingError("model", str(e)) from None


# ----------------------------------------------------------------------------------- probing
class _ProbeDone(Exception):
    pass


def _first_batch(bm, n: int = 2):
    """``(x, task_labels)`` of the first ``n`` training samples of the first experience, or ``None``."""
    import torch

    try:
        ds = bm.train_stream[0].dataset
        items = [ds[i] for i in range(min(n, len(ds)))]
        x = torch.stack([it[0] for it in items])
        t = torch.tensor([int(it[-1]) for it in items]) if len(items[0]) >= 3 else torch.zeros(len(items), dtype=torch.long)
        return x, t
    except Exception:  # a stream KTA cannot sample this way (episodes, multi-target...): the probe's step checks
        return None


def check_model_fits(bm, strat, model_name: str) -> None:
    """One eval-mode forward of the first training samples: the model takes the scenario's input and,
    for a cross-entropy strategy, has at least as many outputs as the scenario has classes."""
    import torch
    from avalanche.models.utils import avalanche_forward
    from torch import nn

    batch = _first_batch(bm)
    if batch is None:
        return
    x, t = batch
    model = strat.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = avalanche_forward(model, x.to(strat.device), t.to(strat.device))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise SettingError("model", f"{model_name!r} cannot take this scenario's input (shape "
                                    f"{tuple(x.shape[1:])}): {e}") from None
    finally:
        model.train(was_training)
    n_classes = getattr(bm, "n_classes", None)
    crit = getattr(strat, "_criterion", None)
    if isinstance(out, torch.Tensor) and out.ndim == 2 and isinstance(n_classes, int) \
            and isinstance(crit, nn.CrossEntropyLoss) and out.shape[1] < n_classes:
        raise SettingError("model", f"{model_name!r} gives {out.shape[1]} outputs but the scenario has "
                                    f"{n_classes} classes")


def _culprit(exc, strat, n_user_plugins: int) -> str:
    """The key of what raised ``exc``: a user plugin, the model, or else the strategy."""
    user = {id(p): f"plugins[{j}]" for j, p in enumerate(getattr(strat, "kta_user_plugins", [])[:n_user_plugins])}
    modules = {id(m) for m in strat.model.modules()}
    found_model = False
    tb = exc.__traceback__
    plugin_key = None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None:
            if id(owner) in user and plugin_key is None:
                plugin_key = user[id(owner)]
            elif id(owner) in modules:
                found_model = True
            elif type(owner).__name__ == "EpochLRSchedule" and plugin_key is None:
                plugin_key = "lr_schedule"
        tb = tb.tb_next
    return plugin_key or ("model" if found_model else "strategy")


def probe_run(scenario: str, strategy: str, plugins: Sequence[str] = (), *, seed: int = 0, **settings) -> dict:
    """Build the run without logs, check that the model fits the scenario and train one iteration of
    the first experience; return the resolved settings (:func:`resolve`).

    Raises :class:`SettingError` naming the culprit's key for the errors plugins and strategies raise
    once they see the model and the data. Nothing is written.
    """
    import warnings

    from .base import JointTraining

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm, strat = build_run(scenario, strategy, plugins, seed=seed, log_dir=None, progress=False, **settings)
        model_name = strat.kta_model_name
        check_model_fits(bm, strat, model_name)
        from avalanche.core import SupervisedPlugin

        class StopAfterFirstIteration(SupervisedPlugin):
            def after_training_iteration(self, strategy, **kwargs):
                raise _ProbeDone

        strat.plugins.append(StopAfterFirstIteration())
        if hasattr(strat, "_kta_hooks_plugins"):
            strat._kta_hooks_plugins = None
        try:
            strat.train(bm.train_stream if isinstance(strat, JointTraining) else bm.train_stream[0])
        except _ProbeDone:
            pass
        except NonFiniteLoss:
            pass  # a training outcome, not a setting error: the run reports it
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError, NotImplementedError, OSError) as e:
            key = _culprit(e, strat, len(plugins))
            msg = f"{type(e).__name__ + ': ' if type(e) not in (ValueError, TypeError) else ''}{e}"
            if key.startswith("plugins["):
                msg = f"plugin {plugins[int(key[8:-1])]!r}: {msg}"
            elif key == "model":
                msg = f"model {model_name!r} on scenario {scenario!r}: {msg}"
            elif key == "strategy":
                msg = f"strategy {strategy!r} on scenario {scenario!r}: {msg}"
            raise SettingError(key, msg) from None
    return resolve(scenario, strategy, plugins, seed=seed, **{**settings, "model": model_name})


# ----------------------------------------------------------------------------------- identity
def kta_version() -> str:
    try:
        from importlib.metadata import version

        return version("kta-plugins")
    except Exception:
        return "unknown"


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))  # no memory addresses: the hash must be stable


# Arguments build_run passes to every strategy itself (covered by the top-level settings) or that do
# not change the numbers.
_STRATEGY_COMMON = ("model", "optimizer", "train_epochs", "train_mb_size", "plugins", "seed", "device",
                    "log_dir", "progress", "evaluator")


def _resolved_spec(reg, spec: str, skip=(), extra=()) -> dict:
    import inspect

    from scenarios.registry import parse_spec

    name, raw = parse_spec(spec)
    outside = {k: raw.pop(k) for k in extra if k in raw}  # options the registry's factory does not take
    given = reg.parse_kwargs(name, raw)
    args = {}
    for p in reg.signature(name).values():
        if p.name in skip:
            continue
        if p.name in given:
            args[p.name] = given[p.name]
        elif p.default is not inspect.Parameter.empty:
            args[p.name] = p.default
    return {"name": name, "args": _jsonable(args), **outside}


def resolve(scenario: str, strategy: str, plugins: Sequence[str] = (), *, seed: int = 0, **settings) -> dict:
    """The fully resolved settings of a run (what its identity hashes): the scenario, strategy and
    plugins with every option (defaults filled in), the seed, the :data:`SETTINGS` values, the model
    name (``settings["model"]``; pass the resolved default) and KTA's version. JSON-serialisable."""
    SCENARIOS, STRATEGIES, PLUGINS = registries()
    s = check_settings(settings, device=False)
    sched, sched_opts = parse_lr_schedule(s["lr_schedule"])
    sc = _resolved_spec(SCENARIOS, scenario)
    sc["args"]["seed"] = seed
    return {
        "kta_version": kta_version(),
        "scenario": sc,
        "strategy": _resolved_spec(STRATEGIES, strategy, skip=_STRATEGY_COMMON),
        "plugins": [_resolved_spec(PLUGINS, p) for p in plugins],
        "seed": seed,
        "epochs": s["epochs"],
        "batch_size": s["batch_size"],
        "optimizer": {"name": s["optimizer"], "lr": s["lr"], "momentum": s["momentum"],
                      "weight_decay": s["weight_decay"]},
        "lr_schedule": {"name": sched, "args": sched_opts},
        "model": _resolved_spec(models(), s["model"], skip=("input_shape", "n_classes"), extra=("heads",))
        if s["model"] else None,
        "device": s["device"],
    }


def run_hash(resolved: dict) -> str:
    """The run's identity: 12 hex digits of the SHA-256 of its resolved settings."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def format_exception_line(e: BaseException) -> str:
    return one_line(f"{type(e).__name__}: {e}")


def last_frames(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


# ----------------------------------------------------------------------------------- a whole run
def loss_term_recorder(strat):
    """On a composing strategy with plugins, record each training experience's mean loss terms
    (``kta_plugins.compose``'s ledger: ``criterion``, each plugin's terms, ``total``) in the
    returned plugin's ``per_experience`` list; ``None`` otherwise."""
    from avalanche.core import SupervisedPlugin

    if not getattr(strat, "kta_composes", False) or not strat.plugins:
        return None

    class LossTermRecorder(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.per_experience = []

        def before_training_exp(self, strategy, **kwargs):
            strategy.loss_term_means(reset=True)  # drop what an earlier phase recorded

        def after_training_exp(self, strategy, **kwargs):
            self.per_experience.append({"experience": int(strategy.experience.current_experience),
                                        **strategy.loss_term_means(reset=True)})

    strat.track_loss_terms = True
    recorder = LossTermRecorder()
    strat.plugins.append(recorder)
    return recorder


def run(scenario: str = "split-digits", strategy: str = "naive", plugins: Sequence[str] = (), *,
        seed: int = 0, log_dir: Optional[str] = None, progress: Optional[bool] = None, **settings) -> dict:
    """Train ``strategy`` over ``scenario`` (what ``kta run`` does) and return the accuracy matrix, its
    summary, the resolved settings and their hash. A NaN / infinite loss raises :class:`NonFiniteLoss`."""
    from .base import JointTraining
    from .results import average_accuracy, bwt, forgetting, train_and_evaluate

    bm, strat = build_run(scenario, strategy, plugins, seed=seed, log_dir=log_dir, progress=progress, **settings)
    strat.plugins.insert(0, non_finite_guard())
    resolved = resolve(scenario, strategy, plugins, seed=seed, **{**settings, "model": strat.kta_model_name})
    joint = isinstance(strat, JointTraining)
    extra = {}
    terms = loss_term_recorder(strat)
    if getattr(bm, "kind", None) == "concept-drift" and not joint:
        # P(y|x) changes: Chaudhry's forgetting mixes forgetting with following the new concept;
        # strategies.drift splits the drop of accuracy into the two.
        from .drift import train_with_drift_split

        A, extra["drift_split"] = train_with_drift_split(strat, bm)
    else:
        A = train_and_evaluate(strat, bm, joint=joint)
    return {
        "scenario": scenario, "strategy": strategy, "plugins": list(plugins),
        "settings": {"seed": seed, **check_settings(settings, device=False), "model": strat.kta_model_name},
        "run_hash": run_hash(resolved), "resolved": resolved,
        "joint": joint, "accuracy_matrix": A.tolist(), "average_accuracy": average_accuracy(A),
        "forgetting": forgetting(A), "bwt": bwt(A), **extra,
        **({"loss_terms": terms.per_experience} if terms is not None else {}),
    }

import importlib.util
from pathlib import Path

from kta_plugins.testing import check_plugin
from strategies.cli import main


def _load():
    path = Path(__file__).parent.parent / "examples" / "my_plugin.py"
    spec = importlib.util.spec_from_file_location("my_plugin", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_plugin_honours_the_contract():
    check_plugin(_load().L2Init)


def test_readme_plugin_runs_from_the_command_line(capsys):
    path = str(Path(__file__).parent.parent / "examples" / "my_plugin.py")
    assert main(["run", "--import", path, "--plugin", "l2-init:weight=0.01", "--epochs", "1"]) == 0
    assert "l2-init" in capsys.readouterr().out

"""``kta compare --executor ray`` on a local Ray cluster (2 CPUs, started once for the module)."""
import json
import os

import pytest
import ray

from strategies.compare import compare

# A plugin that kills its Ray worker process before experience 2 the first time
# (when its marker file does not exist yet): a machine dying halfway through a run.
DIE_ONCE = '''
import os
from avalanche.core import SupervisedPlugin
from kta_plugins.base import register_plugin


@register_plugin("die-once")
class DieOnce(SupervisedPlugin):
    """Test only: os._exit(1) before experience ``at`` unless ``marker`` exists (then creates it)."""

    def __init__(self, marker: str = "", at: int = 2):
        super().__init__()
        self.marker, self.at = marker, at

    def before_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
'''


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    # Workers inherit the driver's environment at ray.init: give them the tests' dataset cache.
    old = os.environ.get("KTA_DATA")
    os.environ["KTA_DATA"] = os.environ.get("KTA_TEST_DATA") or str(tmp_path_factory.getbasetemp() / "kta-data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("KTA_DATA", None)
    else:
        os.environ["KTA_DATA"] = old


def test_ray_runs_resume_after_a_worker_dies_and_equal_local_runs(local_cluster, tmp_path):
    plugin_file = tmp_path / "die_once.py"
    plugin_file.write_text(DIE_ONCE)
    marker = tmp_path / "died"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""\
seeds: [0]
scenarios: [split-digits]
settings: {{epochs: 1}}
strategies:
  - {{name: naive, strategy: naive}}
  - {{name: dies, strategy: naive, plugins: ["die-once:marker={marker}"]}}
""")
    from strategies.cli import import_extensions

    import_extensions([str(plugin_file)])  # the driver validates the config's plugin names
    out = tmp_path / "ray"
    naive, dies = compare(cfg, out_dir=out, executor="ray", imports=[str(plugin_file)])
    assert marker.exists()  # the worker did die once; Ray re-ran the task, which resumed
    assert dies["status"] == "finished" and dies["resumed_from_experience"] == 2
    assert naive["status"] == "finished" and naive["resumed_from_experience"] is None
    # Same numbers as uninterrupted runs in this process (the marker exists now: no death).
    local = compare(cfg, out_dir=tmp_path / "local")
    for r, l in zip((naive, dies), local):
        assert l["resumed_from_experience"] is None
        assert r["accuracy_matrix"] == l["accuracy_matrix"]
        for key in ("average_accuracy", "forgetting", "bwt", "forward_transfer", "baseline_accuracy"):
            assert r[key] == l[key], key
    assert (out / "summary.md").exists() and (out / "results.csv").exists()
    # Re-running skips finished runs: nothing is rewritten, the same results come back.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    again = compare(cfg, out_dir=out, executor="ray", imports=[str(plugin_file)])
    assert again == [naive, dies]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == stamps
    assert json.loads((out / "runs" / dies["run"] / "result.json").read_text()) == dies

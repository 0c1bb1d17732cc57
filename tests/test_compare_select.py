"""``kta compare`` with label-free model selection: ``group`` entries, ``select: CRITERION``."""
import json
from types import SimpleNamespace

import pytest
import torch

import scenarios.domains as domains
from strategies.cli import main
from strategies.compare.report import selection_table
from strategies.compare.runner import selection_scores

GRID = """\
seeds: [0]
select: dev
scenarios: ["digits-to-blurred:val_fraction=0.2"]
settings: {epochs: 1, model: mlp, batch_size: 32}
strategies:
  - {name: dann-0.1, group: dann, strategy: "domain-adaptation:method=dann,weight=0.1"}
  - {name: dann-3, group: dann, strategy: "domain-adaptation:method=dann,weight=3"}
"""
HEAD = "seeds: [0]\nsettings: {epochs: 1}\n"


def _write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_held_out_source_split_is_stratified_seeded_and_not_trained_on():
    bm = domains.source_target("digits", domains.GaussianBlur(1.0), seed=0, val_fraction=0.2)
    plain = domains.source_target("digits", domains.GaussianBlur(1.0), seed=0)
    assert plain.source_val is None
    assert len(bm.source_train) + len(bm.source_val) == len(plain.source_train)
    assert len(bm.train_stream[0].dataset) == len(bm.source_train)   # the held-out part is not trained on
    counts = torch.bincount(bm.source_val.tensors[1], minlength=10).float()
    assert counts.min() >= 0.15 * torch.bincount(plain.source_train.tensors[1]).float().min()
    again = domains.source_target("digits", domains.GaussianBlur(1.0), seed=0, val_fraction=0.2)
    assert torch.equal(again.source_val.tensors[0], bm.source_val.tensors[0])
    with pytest.raises(ValueError, match="val_fraction"):
        domains.source_target("digits", domains.GaussianBlur(1.0), val_fraction=1.0)


@pytest.mark.parametrize("text, needle", [
    (HEAD + 'select: devv\nscenarios: ["digits-to-blurred:val_fraction=0.2"]\nstrategies:\n'
     "  - {name: a, group: g, strategy: naive}\n",
     ":3: select: unknown criterion 'devv'; expected one of iwcv, dev, snd, entropy"),
    (HEAD + 'select: dev\nscenarios: ["digits-to-blurred:val_fraction=0.2"]\nstrategies:\n'
     "  - {name: a, strategy: naive}\n",
     ":3: select: needs at least one strategy entry with 'group: NAME'"),
    (HEAD + "select: dev\nscenarios: [digits-to-blurred]\nstrategies:\n  - {name: a, group: g, strategy: naive}\n",
     ":4: scenarios[0]: select: label-free selection needs a held-out labeled source split; add val_fraction, "
     "e.g. 'digits-to-blurred:val_fraction=0.2'"),
    (HEAD + "select: dev\nscenarios: [split-digits]\nstrategies:\n  - {name: a, group: g, strategy: naive}\n",
     ":4: scenarios[0]: select: 'split-digits' is not a source-target scenario"),
    (HEAD + 'select: dev\nscenarios: ["digits-to-blurred:val_fraction=0.2"]\nstrategies:\n'
     "  - {name: a, group: 3, strategy: naive}\n",
     ":6: strategies[0].group: must be a str"),
])
def test_selection_config_errors_are_one_line_with_file_and_line(tmp_path, capsys, text, needle):
    cfg = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["compare", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


class _NoLabels:
    """Target data with labels: any use during a selection run fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"target labelled data read: .{name}")

    def __len__(self):
        raise AssertionError("target labelled data read: len()")


def test_compare_selects_label_free_and_reports_it_next_to_the_oracle(tmp_path, capsys, monkeypatch):
    build = domains.source_target

    def no_target_labels(*args, **kwargs):  # the registered scenario, its target label sets poisoned
        bm = build(*args, **kwargs)
        bm.target_train = bm.target_test = _NoLabels()
        return bm

    monkeypatch.setattr(domains, "source_target", no_target_labels)
    cfg = _write(tmp_path, GRID)
    out = tmp_path / "out"
    assert main(["compare", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    assert len(results) == 2
    for r in results:
        assert r["group"] == "dann" and set(r["selection_scores"]) == {"iwcv", "dev", "snd", "entropy"}
        assert 0 <= r["target_accuracy"] <= 1
    summary = (out / "summary.md").read_text()
    assert "| selected by dev |" in summary and "| oracle |" in summary and "| mean over 1 |" in summary
    assert "Label-free selection by dev" in printed
    picked = min(results, key=lambda r: r["selection_scores"]["dev"])["name"]
    row = next(line for line in summary.splitlines() if line.startswith("| dann |"))
    assert row.split(" | ")[4] == picked
    # the oracle column is the only one that depends on target labels: random target accuracies
    # change the oracle, never the label-free pick
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        shuffled = [{**r, "target_accuracy": float(torch.rand(1, generator=gen))} for r in results]
        assert selection_table(shuffled, "dev").splitlines()[4].split(" | ")[4] == picked


def test_selection_scores_read_only_source_data_and_target_inputs():
    """The scoring gets a benchmark with nothing but the held-out source split, the source training
    set and the unlabeled target inputs: any other attribute (target labels, test streams) would raise."""
    full = domains.source_target("digits", domains.GaussianBlur(1.0), seed=0, val_fraction=0.2)
    bm = SimpleNamespace(kind="source-target", source_val=full.source_val,
                         source_train=SimpleNamespace(tensors=(full.source_train.tensors[0], _NoLabels())),
                         target_unlabeled=full.target_unlabeled)
    model = torch.nn.Sequential()
    model.add_module("features", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU()))
    model.add_module("classifier", torch.nn.Linear(16, 10))
    scores = selection_scores(model, bm)
    assert set(scores) == {"iwcv", "dev", "snd", "entropy"}
    assert all(v == v for v in scores.values())
    with pytest.raises(ValueError, match="val_fraction"):
        selection_scores(model, SimpleNamespace(kind="source-target", source_val=None))

"""Data-parallel training of one run: ``torchrun --nproc_per_node 2 -m strategies.cli run --distributed``.

Why a 2-rank run should equal a single-process run with twice the batch: both
ranks use the same seed, so the same initial model and the same permutation of
each epoch; rank ``r`` takes samples ``r, r + 2, r + 4, ...`` of it, so step
``k`` of the two ranks (batch ``B`` each) covers exactly the samples of step
``k`` of one process with batch ``2B``. DDP averages the two ranks' mean-loss
gradients, which is the mean over the global batch when both ranks' batches
have the same size (experience sizes are even here: 1258 samples), and the
SGD updates are then the same up to floating-point summation order.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from avalanche.core import SupervisedPlugin

from scenarios.loaders import TensorBatchLoader

SCENARIO = "permuted-digits:n_experiences=2"  # two experiences of 1258 training samples (even)


def test_rank_shards_make_up_the_single_process_batches():
    x = torch.arange(11)
    single = [b[0].tolist() for b in TensorBatchLoader([x], 4, shuffle=True, generator=torch.Generator().manual_seed(3))]
    ranks = [[b[0].tolist() for b in TensorBatchLoader([x], 2, shuffle=True, generator=torch.Generator().manual_seed(3),
                                                       rank=r, world_size=2)] for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 11 samples padded to 12, DistributedSampler's rule
    for k in range(2):  # step k of the two ranks = step k of one process with the double batch
        assert sorted(single[k]) == sorted(ranks[0][k] + ranks[1][k])
    assert sorted(single[2] + [single[0][0]]) == sorted(ranks[0][2] + ranks[1][2])  # the pad repeats sample 0


class SaveParams(SupervisedPlugin):
    """Saves each rank's parameters after training (registered only in the torchrun workers below)."""

    def __init__(self, folder: str = "."):
        super().__init__()
        self.folder = folder

    def after_training(self, strategy, **kwargs):
        torch.save(strategy.model.state_dict(), Path(self.folder) / f"rank{os.environ['RANK']}.pt")


def test_two_ranks_match_one_process_with_the_global_batch(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           "run", "--scenario", SCENARIO, "--epochs", "1", "--batch-size", "16", "--lr", "0.1", "--seed", "0",
           "--plugin", f"save-params:folder={tmp_path}", "--json", str(tmp_path / "ddp.json"),
           "--log-dir", str(tmp_path / "tb"), "--distributed"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only rank 0 printed, logged and wrote the JSON file.
    assert proc.stdout.count("average accuracy") == 1 and "2 ranks x batch 16" in proc.stdout
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == 1
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["data_parallel"] == {"world_size": 2, "batch_size_per_rank": 16}
    # Both ranks end with bit-identical parameters (DDP all-reduces every gradient).
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # One process, batch 32 = 2 x 16, same seed: the same updates up to summation order.
    from strategies.cli import build_run
    from strategies.results import train_and_evaluate

    bm, strat = build_run(SCENARIO, "naive", epochs=1, batch_size=32, lr=0.1, seed=0, progress=False)
    A = train_and_evaluate(strat, bm)
    single = strat.model.state_dict()
    for k in r0:
        assert torch.allclose(r0[k], single[k], atol=1e-6, rtol=0), (k, (r0[k] - single[k]).abs().max())  # measured: 4.5e-8
    assert ddp["accuracy_matrix"] == A.tolist()


def test_distributed_outside_torchrun_exits_2(capsys, monkeypatch):
    from strategies.cli import main

    for var in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["run", "--distributed", "--log-dir", "none"]) == 2
    assert "--distributed: needs torchrun's environment" in capsys.readouterr().err


def test_strategies_that_override_forward_are_refused(capsys, monkeypatch):
    """Meta-learning strategies run their own forward (episodes), outside the DDP wrapper: exit 2."""
    import socket

    from strategies import distributed
    from strategies.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
        monkeypatch.setenv(k, v)  # a one-process group, as torchrun would set it up
    try:
        code = main(["run", "--strategy", "protonet", "--scenario", "glyphs-5way-1shot", "--distributed",
                     "--log-dir", "none"])
    finally:
        distributed.shutdown()
    assert code == 2
    assert "--strategy: strategy ProtoNet does not support data-parallel training" in capsys.readouterr().err


if __name__ == "__main__":  # a torchrun worker: the real CLI, plus the SaveParams plugin
    from kta_plugins.base import register_plugin
    from strategies.cli import main

    register_plugin("save-params", SaveParams)
    sys.exit(main(sys.argv[1:]))

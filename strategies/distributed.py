"""Data-parallel training of one run under ``torchrun``, through Avalanche's ``DistributedHelper``.

    torchrun --nproc_per_node 2 -m strategies.cli run --scenario split-digits --distributed

Each of the ``N`` processes (ranks) builds the same run (same seed, so the
same model, stream and shuffling), then:

* :func:`init_distributed` starts ``torch.distributed`` (gloo, CPU) through
  Avalanche 0.6's ``DistributedHelper.init_distributed``, which also seeds
  every random generator with the run's seed on every rank;
* KTA's strategies (:class:`strategies.base.KTAStrategyMixin`) run the
  training forward pass through ``DistributedHelper.wrap_model(model)`` (a
  ``DistributedDataParallel``), so each backward pass averages the gradients
  of all ranks; ``strategy.model`` stays the plain module (plugins,
  evaluation, checkpoints see the usual parameter names);
* KTA's tensor-batch loader gives rank ``r`` every ``N``-th sample of each
  epoch's permutation (padded like torch's ``DistributedSampler``); Avalanche's
  own loaders (non tensor-backed data, replay) use ``DistributedSampler``;
* evaluation is not sharded: every rank evaluates the whole test stream with
  identical parameters, so every rank gets the same accuracy matrix, and only
  rank 0 prints it and writes the JSON file and the TensorBoard logs.

``--batch-size`` is per rank: one step of ``N`` ranks with batch ``B`` is one
step of a single process with batch ``N * B`` over the same samples (the
gradients are the mean over the global batch when every rank's batch has the
same size: experiences whose size is a multiple of ``N``).

What Avalanche 0.6 does and does not do here (read from its source):
``DistributedHelper`` initialises the process group, seeds, creates loggers on
rank 0 only (``BaseLogger`` raises on other ranks) and makes its loaders use a
``DistributedSampler`` (training *and* evaluation); its templates never call
``DistributedHelper.wrap_model``, so without the hook in ``KTAStrategyMixin``
the ranks would train independent models, and its evaluation metrics are not
reduced across ranks (each rank would report its own shard's accuracy),
which is why KTA evaluates unsharded.

Example (two ranks on one machine; only rank 0 prints):
    $ torchrun --nproc_per_node 2 -m strategies.cli run --scenario split-digits --epochs 1 --batch-size 16 --distributed
"""
from __future__ import annotations

import os

__all__ = ["torchrun_env", "init_distributed", "is_distributed", "is_main_process", "check_strategy", "shutdown"]


def torchrun_env() -> bool:
    """True when this process was started by ``torchrun`` with more than one process."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(seed: int, device: str = "cpu") -> None:
    """Start ``torch.distributed`` (gloo) from torchrun's environment via Avalanche's helper.

    Raises ``RuntimeError`` (with the reason) when not started by torchrun or
    when ``device`` is not the CPU.
    """
    from avalanche.distributed import DistributedHelper

    if DistributedHelper.is_distributed:
        return
    if "LOCAL_RANK" not in os.environ:
        raise RuntimeError("needs torchrun's environment (LOCAL_RANK, RANK, WORLD_SIZE, MASTER_ADDR): "
                           "start with `torchrun --nproc_per_node N -m strategies.cli run ...`")
    if str(device) != "cpu":
        raise RuntimeError(f"runs on the CPU (gloo backend) only, got device {device!r}: "
                           "the multi-GPU (NCCL) path has not been tested")
    if not DistributedHelper.init_distributed(seed, backend="gloo", use_cuda=False):
        raise RuntimeError("Avalanche's DistributedHelper could not initialise torch.distributed")


def is_distributed() -> bool:
    from avalanche.distributed import DistributedHelper

    return DistributedHelper.is_distributed


def is_main_process() -> bool:
    from avalanche.distributed import DistributedHelper

    return DistributedHelper.is_main_process


def check_strategy(strategy) -> None:
    """Raise ``ValueError`` when ``strategy`` cannot train data-parallel.

    Gradients are averaged by the DDP wrapper in ``KTAStrategyMixin.forward``;
    a strategy that is not a KTA strategy, or that overrides ``forward``
    (meta-learning's episodes), would train one independent model per rank.
    """
    from .base import KTAStrategyMixin

    if not isinstance(strategy, KTAStrategyMixin) or type(strategy).forward is not KTAStrategyMixin.forward:
        raise ValueError(f"strategy {type(strategy).__name__} does not support data-parallel training "
                         "(it is not a KTA strategy or it overrides forward())")


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()

"""AdaBN: re-estimate BatchNorm statistics on the target domain (Li et al. 2016)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from kta_plugins.base import KTAPlugin, check_choice, check_int, register_plugin

__all__ = ["AdaBN", "adapt_bn"]


def _check_model():
    """A small BatchNorm model for ``check_plugin`` (AdaBN needs BatchNorm layers):
    ``SmallCNN((1, 8, 8), 4, channels=4)``, submodules ``features`` and ``classifier``."""
    from kta_plugins.nn import SmallCNN

    return SmallCNN((1, 8, 8), 4, channels=4)


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _batches(dataset, batch_size):
    from scenarios.loaders import tensor_view

    fields = tensor_view(dataset) if hasattr(dataset, "_flat_data") else None
    if fields is not None:
        x, t = fields[0], fields[-1]
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], t[i:i + batch_size]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        yield batch[0], (batch[-1] if len(batch) > 2 else None)


@torch.no_grad()
def adapt_bn(model: nn.Module, data, batch_size: int = 256, device=None) -> int:
    """Replace every BatchNorm's running mean / variance by the statistics of ``data``.

    ``data`` is an Avalanche / torch dataset (its first field the input), or a
    tensor of inputs. The forward passes run with the BatchNorm layers in
    training mode (each layer normalises with target batch statistics, as in
    AdaBN); the inputs of each BatchNorm are accumulated over all batches, and
    its ``running_mean`` / ``running_var`` become their exact mean and unbiased
    variance per channel. Weights are untouched. Returns the number of
    BatchNorm layers; raises ``ValueError`` when the model has none.
    """
    from avalanche.models.utils import avalanche_forward

    bns = _bn_layers(model)
    if not bns:
        raise ValueError(f"model: {type(model).__name__} has no BatchNorm layer for AdaBN to adapt")
    sums = {m: [0, 0.0, 0.0] for m in bns}

    def hook(m, inputs):
        x = inputs[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        acc = sums[m]
        acc[0] += x.numel() // x.shape[1]
        acc[1] = acc[1] + x.sum(dims)
        acc[2] = acc[2] + (x * x).sum(dims)

    handles = [m.register_forward_pre_hook(hook) for m in bns]
    was_training = model.training
    saved = [(m, m.training, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns]
    model.eval()
    for m in bns:
        m.train()
    try:
        if isinstance(data, torch.Tensor):
            batches = ((data[i:i + batch_size], None) for i in range(0, len(data), batch_size))
        else:
            batches = _batches(data, batch_size)
        for x, t in batches:
            if device is not None:
                x = x.to(device)
            if t is None:
                model(x)
            else:
                avalanche_forward(model, x, t.to(x.device))
    finally:
        for h in handles:
            h.remove()
        for m, training, mean, var, nbt in saved:
            m.train(training)
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(nbt)
        model.train(was_training)
    for m, (n, s1, s2) in sums.items():
        if n < 2:
            raise ValueError("data: AdaBN needs at least 2 values per channel to estimate a variance")
        mean = s1 / n
        var = (s2 - n * mean * mean) / (n - 1)
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.clamp_min(0).to(m.running_var.dtype))
        m.num_batches_tracked.add_(1)
    return len(bns)


@register_plugin("adabn", help="AdaBN (Li et al. 2016): re-estimate BatchNorm statistics on the target data")
class AdaBN(KTAPlugin):
    """Adaptive Batch Normalization (Li, Wang, Shi, Liu & Hou 2016, "Revisiting Batch
    Normalization For Practical Domain Adaptation").

    Every BatchNorm's running statistics are replaced by those of the target
    data, ``mu_t = E_t[h]``, ``sigma_t^2 = Var_t[h]`` (exact averages over the
    data, see :func:`adapt_bn`); the learned weights are untouched.

    Args:
        when: ``"train"``: at the start of every training experience, on its
            training data (the next steps then start from target statistics);
            ``"eval"``: before evaluating every experience, on that experience's
            own (unlabelled) inputs, i.e. transductive test-time adaptation
            (the statistics are restored after the evaluation). Default ``"train"``.
        batch_size: batch size of the statistics passes (default 256).

    Example:
        >>> strategy = Naive(model=SmallCNN((1, 8, 8), 10), optimizer=opt, plugins=[AdaBN(when="eval")])
    """

    #: ``check_plugin`` runs AdaBN on a BatchNorm model (the default MLP has none).
    check_model = staticmethod(_check_model)
    #: it re-estimates the statistics before the first step: other plugins' terms legitimately
    #: change, so check_composition does not compare them with their solo values
    modifies_model = True

    def __init__(self, when: Literal["train", "eval"] = "train", batch_size: int = 256):
        super().__init__()
        self.when = check_choice("when", when, ("train", "eval"))
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self._saved = None

    def before_training_exp(self, strategy, **kwargs):
        if self.when == "train":
            adapt_bn(strategy.model, strategy.adapted_dataset, self.batch_size, strategy.device)

    def before_eval_exp(self, strategy, **kwargs):
        if self.when == "eval":
            self._saved = {k: v.clone() for k, v in strategy.model.state_dict().items()
                           if "running_" in k or "num_batches_tracked" in k}
            adapt_bn(strategy.model, strategy.adapted_dataset, self.batch_size, strategy.device)

    def after_eval_exp(self, strategy, **kwargs):
        if self._saved is not None:
            strategy.model.load_state_dict(self._saved, strict=False)
            self._saved = None

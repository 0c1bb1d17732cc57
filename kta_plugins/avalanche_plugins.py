"""Avalanche 0.6's training plugins by command-line name, with validated arguments.

Each factory below builds one ``avalanche.training.plugins`` plugin. Its
signature carries the types the ``kta`` command converts ``key=value`` options
to; its body checks the values (a bad value is a ``ValueError``/``TypeError``
naming the argument) before Avalanche sees them, since Avalanche's own
constructors accept ``nan``, negative sizes and strings.

Where Avalanche 0.6 has a bug that changes what the method computes, the
factory returns a small subclass that fixes it, and says so:

* ``si``: ``SynapticIntelligencePlugin`` stores weights with
  ``param.detach().cpu().flatten()``; on CPU that is a *view* of the live
  weights, so the anchor and the "old" weights move with the model, every
  weight change it measures is 0, the importances stay 0 and the penalty is 0
  (SI trains exactly like naive fine-tuning). :class:`SynapticIntelligence`
  copies them, and sets negative importances to 0 (with real importances,
  Avalanche's unclipped negative ones make the loss diverge).
* ``rwalk``: NaN penalties after an experience shorter than ``delta_t``
  iterations, and training left in ``eval()`` mode; see :class:`RWalk`.
* ``gss-greedy`` needs the input shape at construction (``input_size``); the
  wrapper allocates its buffer from the first experience instead.
* ``cope`` needs the model's output size (``p_size``); the wrapper reads it
  from the model when training starts unless given.
* ``mir`` and ``rar`` run extra forwards of the model in ``before_backward``
  (virtual-update probes, replay and adversarial batches): here they go
  through the scoped forward (:func:`kta_plugins.compose.extra_forward`'s
  ``suspended``), so other plugins' feature taps keep the current minibatch,
  and their replay loss is a ledger term (``"replay"``). MIR's virtual step
  differentiates only the parameters that train (Avalanche's asks for the
  gradient of every parameter and fails when a plugin froze some).
* ``from-scratch`` resets the optimizer with Avalanche's ``reset_optimizer``,
  which only handles one parameter group; on a composing strategy the wrapper
  re-assembles the optimizer instead (plugin groups, layer-wise rates kept).

Pairs that cannot work together by design are refused before training with a
message naming both (:func:`kta_plugins.compose.check_roles`): ``lfl`` freezes
the model's last layer after each experience, so it is not combined with a
plugin that freezes the other layers (``freeze``, ``lpft``, ``gradual-unfreeze``:
nothing, or a sliver of the model, would train); ``si`` and ``rwalk`` keep
importances by parameter name, so they refuse plugins that rename the model's
parameters (``si``: ``lora``, ``adapter``; ``rwalk``: those and ``cope``);
``mir`` scores samples with a per-sample criterion, which ``cope``'s PPP loss
does not have.

``ewc`` (in :mod:`kta_plugins.registry`) keeps Avalanche's Fisher estimate: the
square of each *minibatch-mean* gradient, averaged over minibatches, not the
mean of per-sample squared gradients of Kirkpatrick et al. (2017). With a
batch of ``B`` samples the importances are roughly ``B`` times smaller than the
paper's, so ``ewc_lambda`` must be about ``B`` times larger for the same
strength (see docs/continual_learning.md).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from avalanche.models.dynamic_optimizers import reset_optimizer
from avalanche.models.utils import avalanche_forward
from avalanche.training import plugins as av

from scenarios.loaders import tensor_view

from .base import check_int, check_positive, check_range, check_type, register_plugin
from .compose import add_loss_term, assemble_optimizer, composes
from .nn.tap import suspended

__all__ = ["EWC", "LwF", "SynapticIntelligence", "RWalk", "GSSGreedy", "CoPE", "MIR", "RAR", "FromScratch", "LFL",
           "AVALANCHE_PLUGINS"]


# ---------------------------------------------------------------- fixed subclasses
class SynapticIntelligence(av.SynapticIntelligencePlugin):
    """Avalanche's ``SynapticIntelligencePlugin`` (Zenke et al. 2017) with the weight snapshots copied.

    Avalanche 0.6 snapshots weights with ``param.detach().cpu().flatten()``,
    which on CPU returns a view that keeps following the weights: the path
    integral ``sum_t g_t * (theta_t - theta_{t-1})`` and the anchor
    ``theta*`` are then computed from identical tensors and every importance
    is 0. Here the two snapshots that must outlive the step (the anchor taken
    when an experience starts and the weights before each update) are cloned;
    the rest is Avalanche's code (importance ``-sum_t g_t dtheta_t / (Delta^2 +
    eps)``, clipped at 0.001; penalty ``si_lambda * sum_i omega_i (theta_i -
    theta*_i)^2``), except that negative importances are set to 0 (Avalanche
    keeps them, and their negative penalty diverges).
    """

    #: importances are kept per parameter name: a plugin that renames parameters cannot join
    refuses_roles = {"layer-surgery": f"{__qualname__} keeps importances by parameter name, which they rename"}

    def _copy(self, data):
        for name in data:
            data[name].data = data[name].data.clone()

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        self._copy(self.ewc_data[0])  # the anchor theta* of this experience

    def before_training_iteration(self, strategy, **kwargs):
        super().before_training_iteration(strategy, **kwargs)
        self._copy(self.syn_data["old_theta"])  # the weights before this update

    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)
        # Avalanche clips the importances from above only (at 0.001); a parameter whose updates
        # raised the loss gets a negative importance, a penalty that rewards moving away from
        # theta* and diverges. Zenke et al.'s omega measures a loss decrease: keep it >= 0.
        for name in self.ewc_data[1]:
            self.ewc_data[1][name].data.clamp_(min=0.0)


class EWC(av.EWCPlugin):
    """Avalanche's ``EWCPlugin`` (Kirkpatrick et al. 2017), the same numbers on KTA's fast path.

    Penalty ``ewc_lambda * sum_e sum_p F_e,p (theta_p - theta*_e,p)^2`` (``mode="separate"``: one term
    per past experience ``e``; ``"online"``: the decayed running Fisher of the last one), added as the
    ledger term ``"ewc"``. The Fisher ``F_e`` is Avalanche's: squared minibatch-mean gradients of the
    criterion at the end of experience ``e``, averaged over the minibatches (see the module
    docstring: about ``B`` times weaker than the paper's per-sample Fisher).

    What differs from Avalanche's code, not from its numbers: the importance pass cuts its batches
    (the same, in the same order) from the experience's tensors when the dataset is tensor-backed,
    instead of Avalanche's per-sample ``DataLoader`` (13 ms of a 20-epoch split-digits run per
    experience); the penalty skips ``expand`` where shapes already agree; the penalty is a ledger
    term instead of an in-place ``strategy.loss +=``.

    Example:
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[EWC(ewc_lambda=100.0)])
    """

    def before_backward(self, strategy, **kwargs):
        exp_counter = strategy.clock.train_exp_counter
        if exp_counter == 0:
            return
        if self.mode == "separate":
            past = range(exp_counter)
        elif self.mode == "online":
            past = [exp_counter - 1]
        else:
            raise ValueError("Wrong EWC mode.")
        named = list(strategy.model.named_parameters())
        penalty = torch.zeros((), device=strategy.device)
        for e in past:
            saved, imps = self.saved_params[e], self.importances[e]
            for k, p in named:
                if k not in saved:
                    continue  # new parameters do not count
                q, imp = saved[k].data, imps[k].data
                if q.shape != p.shape:  # a grown layer: Avalanche's expand
                    q, imp = q.expand(p.shape), imp.expand(p.shape)
                penalty = penalty + (imp * (p - q).pow(2)).sum()
        add_loss_term(strategy, "ewc", penalty, weight=self.ewc_lambda, owner=self)

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        fields = tensor_view(dataset)
        if fields is None or (str(device).startswith("cuda") and any(
                isinstance(m, torch.nn.RNNBase) for m in model.modules())):
            return super().compute_importances(model, criterion, optimizer, dataset, device, batch_size,
                                               num_workers=num_workers)
        from avalanche.training.utils import zerolike_params_dict

        model.eval()
        importances = zerolike_params_dict(model)
        x_all, y_all, t_all = fields[0], fields[1], fields[-1]
        n_batches = 0
        for start in range(0, len(x_all), batch_size):  # DataLoader(dataset, batch_size): no shuffle
            x, y = x_all[start:start + batch_size].to(device), y_all[start:start + batch_size].to(device)
            optimizer.zero_grad()
            loss = criterion(avalanche_forward(model, x, t_all[start:start + batch_size]), y)
            loss.backward()
            for (k1, p), (k2, imp) in zip(model.named_parameters(), importances.items()):
                assert k1 == k2
                if p.grad is not None:
                    imp.data += p.grad.data.pow(2)
            n_batches += 1
        for imp in importances.values():
            imp.data /= float(n_batches)
        model.train()
        return importances


class LwF(av.LwFPlugin):
    """Avalanche's ``LwFPlugin`` (Li & Hoiem 2016), the same numbers on KTA's fast path.

    Penalty ``alpha * KL(softmax(prev(x)[:, seen] / T) || softmax(model(x)[:, seen] / T))``
    (``reduction="batchmean"``), ``prev`` the model as it was after the previous experience and
    ``seen`` the classes of earlier experiences, added as the ledger term ``"lwf"``. As in Avalanche,
    a multi-head model distils every earlier head on its own classes, a single-head one the classes
    of task 0.

    What differs from Avalanche's code, not from its numbers: the classes each task has seen are
    read from the experience's tensors when it is tensor-backed (Avalanche builds a per-task view of
    the dataset: 2 ms per experience on split digits); a single-head model's columns are picked with
    a cached index (Avalanche converts a Python list on every minibatch); the penalty is a ledger term
    instead of an in-place ``strategy.loss +=``.

    Example:
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[LwF(alpha=1.0, temperature=2.0)])
    """

    _units = None  # task 0's seen classes as an index tensor (single-head models)

    def before_backward(self, strategy, **kwargs):
        from avalanche.models import MultiTaskModule

        lwf = self.lwf
        if lwf.prev_model is None:
            return
        alpha = lwf.alpha[lwf.expcount] if isinstance(lwf.alpha, (list, tuple)) else lwf.alpha
        if isinstance(lwf.prev_model, MultiTaskModule):
            penalty = lwf._lwf_penalty(strategy.mb_output, strategy.mb_x, strategy.model)
        else:
            units = self._units
            if units is None:
                return  # no classes of task 0 seen yet: Avalanche adds 0
            if units.device != strategy.mb_output.device:
                units = self._units = units.to(strategy.mb_output.device)
            with torch.no_grad():
                prev = lwf.prev_model(strategy.mb_x)
            T = lwf.temperature
            penalty = torch.nn.functional.kl_div(
                torch.log_softmax(strategy.mb_output.index_select(1, units) / T, dim=1),
                torch.softmax(prev.index_select(1, units) / T, dim=1), reduction="batchmean")
        if isinstance(penalty, torch.Tensor):
            add_loss_term(strategy, "lwf", penalty, weight=float(alpha), owner=self)

    def after_training_exp(self, strategy, **kwargs):
        fields = tensor_view(strategy.experience.dataset)
        if fields is None:
            super().after_training_exp(strategy, **kwargs)
        else:
            lwf = self.lwf  # Avalanche's LearningWithoutForgetting.post_adapt, on tensors
            lwf.expcount += 1
            lwf.prev_model = copy.deepcopy(strategy.model)
            y, t = fields[1], fields[-1]
            for task_id in t.unique().tolist():
                classes = set(y[t == task_id].unique().tolist())
                if task_id not in lwf.prev_classes_by_task:
                    lwf.prev_classes_by_task[task_id] = classes
                else:
                    lwf.prev_classes_by_task[task_id] = lwf.prev_classes_by_task[task_id].union(classes)
        seen = self.lwf.prev_classes_by_task.get(0)
        self._units = torch.tensor(sorted(seen), dtype=torch.long) if seen else None


class RWalk(av.RWalkPlugin):
    """Avalanche's ``RWalkPlugin`` (Chaudhry et al. 2018) with two fixes.

    * Avalanche normalises the scores by their maximum; when an experience has
      fewer than ``delta_t`` iterations no score window closes, the maximum is 0
      and every penalty becomes NaN. Here a zero maximum contributes nothing.
    * Avalanche computes the criterion gradient in ``eval()`` mode and leaves
      the model there, so BatchNorm/dropout models train in eval mode; here the
      previous mode is restored.
    """

    refuses_roles = {"renames-parameters": f"{__qualname__} keeps importances by parameter name, which they rename"}

    def _update_grad(self, strategy):
        was_training = strategy.model.training
        super()._update_grad(strategy)
        strategy.model.train(was_training)

    def after_training_exp(self, strategy, *args, **kwargs):
        super().after_training_exp(strategy, *args, **kwargs)
        max_score = max(float(torch.relu(s.data).max()) for s in self.exp_scores.values())
        max_imp = max(float(i.data.max()) for i in self.exp_importance.values())
        for k, penalty in self.exp_penalties.items():
            imp = self.exp_importance[k].data
            score = torch.relu(self.exp_scores[k].data.expand(imp.shape))
            penalty.data = (imp / max_imp if max_imp > 0 else torch.zeros_like(imp)) + \
                (score / max_score if max_score > 0 else torch.zeros_like(imp))


class GSSGreedy(av.GSS_greedyPlugin):
    """Avalanche's ``GSS_greedyPlugin`` (Aljundi et al. 2019) whose buffer takes the input shape of the
    first training experience (Avalanche needs ``input_size`` at construction), which does not
    crash (``max()`` of an empty sequence) when the memory holds fewer samples than one batch, and
    whose gradient forwards are scoped (other plugins' feature taps keep the current minibatch)."""

    def before_training_exp(self, strategy, **kwargs):
        if self.ext_mem_list_x.dim() == 1:  # input_size was not given: allocate from the data
            shape = tuple(strategy.experience.dataset[0][0].shape)
            self.ext_mem_list_x = torch.zeros(self.mem_size, *shape, device=strategy.device)
        super().before_training_exp(strategy, **kwargs)

    def get_batch_sim(self, strategy, grad_dims, batch_x, batch_y):
        # Avalanche compares the batch with mem_strength memory subsets of len(batch_x) samples; with fewer
        # memory samples than one batch there is no subset and max() of nothing raises ValueError.
        # No subset: no similarity evidence, so the batch does not replace memory samples (score 0).
        if self.ext_mem_list_current_index // max(len(batch_x), 1) == 0:
            return 0.0, torch.zeros(0, sum(grad_dims), device=self.ext_mem_list_x.device)
        return super().get_batch_sim(strategy, grad_dims, batch_x, batch_y)

    def get_each_batch_sample_sim(self, strategy, grad_dims, mem_grads, batch_x, batch_y):
        # The same empty max() while the memory fills up: no subset to compare with; score the samples
        # 0.1, as Avalanche scores the very first insertion.
        if mem_grads.shape[0] == 0:
            return torch.full((batch_x.size(0),), 0.1, device=strategy.device)
        return super().get_each_batch_sample_sim(strategy, grad_dims, mem_grads, batch_x, batch_y)

    def after_forward(self, strategy, **kwargs):
        # its per-sample gradient forwards (memory subsets, each new sample) are extra forwards:
        # scoped, so other plugins' feature taps keep the current minibatch
        with suspended(strategy.model):
            super().after_forward(strategy, **kwargs)


class CoPE(av.CoPEPlugin):
    """Avalanche's ``CoPEPlugin`` (De Lange & Tuytelaars 2021); ``p_size`` (the size of the model's
    output embedding) defaults to the model's number of outputs. It replaces the model's outputs by
    prototype similarities from the first step on (``modifies_model``)."""

    modifies_model = True
    roles = ("renames-parameters", "replaces-criterion")

    def before_training(self, strategy, **kwargs):
        if self.p_size is None:
            linears = [m for m in strategy.model.modules() if isinstance(m, torch.nn.Linear)]
            if not linears:
                raise ValueError("p_size: the model has no nn.Linear output layer; give p_size")
            self.p_size = linears[-1].out_features
        super().before_training(strategy, **kwargs)


class MIR(av.MIRPlugin):
    """Avalanche's ``MIRPlugin`` (Aljundi et al. 2019) made to compose.

    Per iteration: a virtual SGD step ``theta' = theta - lr * grad L(batch)`` on a copy of the model;
    from ``subsample`` memory samples, replay the ``batch_size_mem`` whose loss grows most under the
    virtual step (``L(theta') - L(theta)``), as ledger term ``"replay"``. The same computation as
    Avalanche's ``before_backward``, except that (1) the virtual step differentiates only parameters
    with ``requires_grad`` (frozen ones stay), (2) every forward on other inputs is scoped, so other
    plugins' feature taps keep the current minibatch, (3) the loss is added through the ledger.
    """

    refuses_roles = {"replaces-criterion": "MIR scores memory samples with the criterion per sample "
                                           "(reduction='none'), which that loss does not have"}
    #: the virtual step moves only the parameters that train: next to a freezing plugin the chosen
    #: samples (and so the "replay" term) differ by design (kta_plugins.testing.check_composition)
    terms_read_roles = {"freezes-layers": "its virtual step moves only the parameters that train"}

    def before_backward(self, strategy, **kwargs):
        if self.replay_loader is None:
            return
        x, y, t = (v.to(strategy.device) for v in next(self.replay_loader)[:3])
        model = strategy.model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(strategy.loss, [p for _, p in named], retain_graph=True, allow_unused=True)
        lr = strategy.optimizer.param_groups[0]["lr"]
        with suspended(model):
            virtual = copy.deepcopy(model)
            vparams = dict(virtual.named_parameters())
            for (n, _), g in zip(named, grads):
                if g is not None:
                    vparams[n].data = vparams[n].data - lr * g
            with torch.no_grad():
                crit = strategy._criterion
                old_reduction, crit.reduction = crit.reduction, "none"
                try:
                    diff = crit(avalanche_forward(virtual, x, t), y) - crit(avalanche_forward(model, x, t), y)
                finally:
                    crit.reduction = old_reduction
            chosen = torch.argsort(diff)[len(x) - self.batch_size_mem:]
            replay = strategy._criterion(avalanche_forward(model, x[chosen], t[chosen]), y[chosen])
        add_loss_term(strategy, "replay", replay, owner=self)


class RAR(av.RARPlugin):
    """Avalanche's ``RARPlugin`` (Kumari et al. 2022) whose extra forwards (the adversarial copy, the
    replayed batch) are scoped, so other plugins' feature taps keep the current minibatch."""

    def before_backward(self, strategy, **kwargs):
        with suspended(strategy.model):
            super().before_backward(strategy, **kwargs)


class FromScratch(av.FromScratchTrainingPlugin):
    """Avalanche's ``FromScratchTrainingPlugin``; on a composing strategy the optimizer is reset by
    re-assembling it (Avalanche's ``reset_optimizer`` refuses more than one parameter group)."""

    def before_training_exp(self, strategy, *args, **kwargs):
        reset, self.reset_optimizer = self.reset_optimizer, False
        try:
            super().before_training_exp(strategy, *args, **kwargs)
        finally:
            self.reset_optimizer = reset
        if reset:
            if composes(strategy):
                assemble_optimizer(strategy, reset_state=True)
            else:
                reset_optimizer(strategy.optimizer, strategy.model)


class LFL(av.LFLPlugin):
    """Avalanche's ``LFLPlugin``: it freezes the model's last layer after each experience, so it
    refuses plugins that train only that layer."""

    refuses_roles = {"freezes-layers": "LFL freezes the last layer after each experience, so little or "
                                       "nothing would train"}


# ---------------------------------------------------------------- factories
def _opt_int(name, value, minimum=1):
    return None if value is None else check_int(name, value, minimum=minimum)


@register_plugin("si")
def si(si_lambda: float = 1.0, eps: float = 1e-7):
    """Synaptic Intelligence (Zenke et al. 2017), Avalanche's plugin with its CPU snapshot bug fixed."""
    check_positive("si_lambda", si_lambda, strict=False)
    check_positive("eps", eps)
    return SynapticIntelligence(si_lambda=si_lambda, eps=eps)


@register_plugin("mas")
def mas(lambda_reg: float = 1.0, alpha: float = 0.5):
    """Memory Aware Synapses (Aljundi et al. 2018): importance = mean |d ||f(x)||^2 / d theta|."""
    check_positive("lambda_reg", lambda_reg, strict=False)
    check_range("alpha", alpha, 0, 1)
    return av.MASPlugin(lambda_reg=lambda_reg, alpha=alpha)


@register_plugin("rwalk")
def rwalk(ewc_lambda: float = 0.1, ewc_alpha: float = 0.9, delta_t: int = 10):
    """Riemannian Walk (Chaudhry et al. 2018): online Fisher + path-integral importance."""
    check_positive("ewc_lambda", ewc_lambda, strict=False)
    check_range("ewc_alpha", ewc_alpha, 0, 1)
    check_int("delta_t", delta_t, minimum=1)
    return RWalk(ewc_lambda=ewc_lambda, ewc_alpha=ewc_alpha, delta_t=delta_t)


@register_plugin("gem")
def gem(patterns_per_experience: int = 64, memory_strength: float = 0.5):
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017): project gradients so memory losses do not grow."""
    check_int("patterns_per_experience", patterns_per_experience, minimum=1)
    check_positive("memory_strength", memory_strength, strict=False)
    return av.GEMPlugin(patterns_per_experience=patterns_per_experience, memory_strength=memory_strength)


@register_plugin("agem")
def agem(patterns_per_experience: int = 64, sample_size: int = 64):
    """Averaged GEM (Chaudhry et al. 2019): one projection against the mean memory gradient."""
    check_int("patterns_per_experience", patterns_per_experience, minimum=1)
    check_int("sample_size", sample_size, minimum=1)
    return av.AGEMPlugin(patterns_per_experience=patterns_per_experience, sample_size=sample_size)


@register_plugin("gdumb")
def gdumb(mem_size: int = 200):
    """GDumb (Prabhu et al. 2020): a class-balanced memory; the model is retrained from it each experience."""
    check_int("mem_size", mem_size, minimum=1)
    return av.GDumbPlugin(mem_size=mem_size)


@register_plugin("lfl")
def lfl(lambda_e: float = 1.0):
    """Less-Forgetful Learning (Jung et al. 2016): keep the features close to the previous model's."""
    check_positive("lambda_e", lambda_e, strict=False)
    return LFL(lambda_e=lambda_e)


@register_plugin("mir")
def mir(batch_size_mem: int = 10, mem_size: int = 200, subsample: int = 200):
    """Maximally Interfered Retrieval (Aljundi et al. 2019): replay the memory samples a virtual step hurts most."""
    check_int("batch_size_mem", batch_size_mem, minimum=1)
    check_int("mem_size", mem_size, minimum=1)
    check_int("subsample", subsample, minimum=1)
    return MIR(batch_size_mem=batch_size_mem, mem_size=mem_size, subsample=subsample)


@register_plugin("gss-greedy")
def gss_greedy(mem_size: int = 200, mem_strength: int = 5):
    """Gradient-based Sample Selection, greedy (Aljundi et al. 2019): keep gradient-diverse samples."""
    check_int("mem_size", mem_size, minimum=1)
    check_int("mem_strength", mem_strength, minimum=1)
    return GSSGreedy(mem_size=mem_size, mem_strength=mem_strength, input_size=[])


@register_plugin("cope")
def cope(mem_size: int = 200, n_classes: int = 10, p_size: Optional[int] = None, alpha: float = 0.99,
         T: float = 0.1, max_it_cnt: int = 1):
    """Continual Prototype Evolution (De Lange & Tuytelaars 2021): prototypes, PPP loss, nearest-prototype output."""
    check_int("mem_size", mem_size, minimum=1)
    check_int("n_classes", n_classes, minimum=2)
    _opt_int("p_size", p_size)
    check_range("alpha", alpha, 0, 1)
    check_positive("T", T)
    check_int("max_it_cnt", max_it_cnt, minimum=1)
    return CoPE(mem_size=mem_size, n_classes=n_classes, p_size=p_size, alpha=alpha, T=T, max_it_cnt=max_it_cnt)


@register_plugin("rar")
def rar(batch_size_mem: int = 10, mem_size: int = 200, opt_lr: float = 0.1, use_adversarial_replay: bool = True,
        beta_coef: float = 0.4, decay_factor_fgsm: float = 1.0, epsilon_fgsm: float = 0.0314, iter_fgsm: int = 2):
    """Retrospective Adversarial Replay (Kumari et al. 2022): replay with adversarially perturbed memory samples."""
    check_int("batch_size_mem", batch_size_mem, minimum=1)
    check_int("mem_size", mem_size, minimum=1)
    check_positive("opt_lr", opt_lr)
    check_type("use_adversarial_replay", use_adversarial_replay, bool)
    check_range("beta_coef", beta_coef, 0, 1)
    check_positive("decay_factor_fgsm", decay_factor_fgsm)
    check_positive("epsilon_fgsm", epsilon_fgsm, strict=False)
    check_int("iter_fgsm", iter_fgsm, minimum=1)
    return RAR(batch_size_mem=batch_size_mem, mem_size=mem_size, opt_lr=opt_lr,
                        use_adversarial_replay=use_adversarial_replay, beta_coef=beta_coef,
                        decay_factor_fgsm=decay_factor_fgsm, epsilon_fgsm=epsilon_fgsm, iter_fgsm=iter_fgsm)


@register_plugin("from-scratch")
def from_scratch(reset_optimizer: bool = True):
    """Re-initialise the model before each experience (Avalanche's FromScratchTrainingPlugin): a reference."""
    check_type("reset_optimizer", reset_optimizer, bool)
    return FromScratch(reset_optimizer=reset_optimizer)


#: The Avalanche plugins registered here: KTA name -> Avalanche class.
AVALANCHE_PLUGINS = {
    "si": "SynapticIntelligencePlugin", "mas": "MASPlugin", "rwalk": "RWalkPlugin", "gem": "GEMPlugin",
    "agem": "AGEMPlugin", "gdumb": "GDumbPlugin", "lfl": "LFLPlugin", "mir": "MIRPlugin",
    "gss-greedy": "GSS_greedyPlugin", "cope": "CoPEPlugin", "rar": "RARPlugin",
    "from-scratch": "FromScratchTrainingPlugin",
}

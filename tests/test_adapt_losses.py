"""Domain adaptation mechanisms on fixed tensors: reversal layer, schedule, CORAL, MMD, CDAN, augmentation."""
import math

import pytest
import torch

from kta_plugins.adapt import augment, coral_loss, mmd_loss, multilinear_map
from kta_plugins.adapt.cdan import RandomizedMultilinear, entropy_weights
from kta_plugins.adapt.dann import domain_adversarial_loss, domain_head
from kta_plugins.adapt.mmd import bandwidths_for
from kta_plugins.adapt.target import MaskedCrossEntropy, TargetSampler
from kta_plugins.nn.grl import GradientReversal, ganin_lambda, ganin_lr_factor, grad_reverse


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward(lam):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = GradientReversal(lam)(x)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -lam * w)
    x2 = torch.randn(4, requires_grad=True)
    grad_reverse(x2, lam).sum().backward()
    assert torch.allclose(x2.grad, torch.full((4,), -lam))


def test_gradient_reversal_rejects_bad_lambda():
    with pytest.raises(ValueError, match="lambda_"):
        GradientReversal(-1.0)
    with pytest.raises(ValueError, match="lambda_"):
        GradientReversal(float("nan"))


def test_ganin_schedule_matches_formula():
    for p in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]:
        assert ganin_lambda(p) == pytest.approx(2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
    assert ganin_lambda(0.0) == 0.0 and ganin_lambda(1.0) == pytest.approx(0.99990920)
    assert ganin_lambda(0.5, gamma=2.0) == pytest.approx(2.0 / (1.0 + math.exp(-1.0)) - 1.0)
    with pytest.raises(ValueError, match="p"):
        ganin_lambda(1.5)


def test_ganin_lr_annealing_matches_formula():
    for p in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]:
        assert ganin_lr_factor(p) == pytest.approx(1.0 / (1.0 + 10.0 * p) ** 0.75)
    assert ganin_lr_factor(0.0) == 1.0 and ganin_lr_factor(1.0) == pytest.approx(11.0 ** -0.75)  # ~0.166
    assert ganin_lr_factor(0.5, alpha=2.0, beta=1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="p"):
        ganin_lr_factor(-0.1)


def _direct_cov(h):
    m = h.mean(0, keepdim=True)
    return (h - m).t() @ (h - m) / (len(h) - 1)


def test_coral_equals_direct_computation():
    g = torch.Generator().manual_seed(0)
    hs, ht = torch.randn(20, 4, generator=g), 2 * torch.randn(30, 4, generator=g) + 1
    expected = ((_direct_cov(hs) - _direct_cov(ht)) ** 2).sum() / (4 * 4 ** 2)
    assert torch.allclose(coral_loss(hs, ht), expected, atol=1e-6)
    assert torch.allclose(_direct_cov(hs), torch.cov(hs.t()), atol=1e-6)
    # A hand example: one-dimensional features, variances 1 and 4 -> (1 - 4)^2 / 4.
    a = torch.tensor([[-1.0], [1.0], [0.0]])       # variance 1
    b = torch.tensor([[-2.0], [2.0], [0.0]])       # variance 4
    assert coral_loss(a, b).item() == pytest.approx(9.0 / 4.0)


def test_coral_is_zero_for_identical_distributions_and_shift_invariant():
    h = torch.randn(50, 6)
    assert coral_loss(h, h).item() == pytest.approx(0.0, abs=1e-9)
    assert coral_loss(h, h + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # CORAL sees second moments only
    big = torch.randn(4000, 3)
    assert coral_loss(big[:2000], big[2000:]).item() < 1e-3


def test_mmd_equals_direct_computation():
    g = torch.Generator().manual_seed(1)
    hs, ht = torch.randn(6, 3, generator=g), torch.randn(5, 3, generator=g) + 0.5
    bws = [0.5, 1.0, 2.0]

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / bw) for bw in bws)

    kss = sum(k(a, b) for a in hs for b in hs) / 36
    ktt = sum(k(a, b) for a in ht for b in ht) / 25
    kst = sum(k(a, b) for a in hs for b in ht) / 30
    assert mmd_loss(hs, ht, bandwidths=bws).item() == pytest.approx(kss + ktt - 2 * kst, rel=1e-5)


def test_mmd_bandwidths_and_identical_distributions():
    h = torch.randn(10, 4)
    z = torch.cat([h, h + 1])
    d2 = torch.cdist(z, z) ** 2
    base = float(d2.sum() / (20 * 20 - 20))
    assert bandwidths_for(h, h + 1, 2.0, 3) == pytest.approx([base / 2, base, base * 2])
    assert mmd_loss(h, h).item() == pytest.approx(0.0, abs=1e-6)
    big = torch.randn(600, 2)
    assert mmd_loss(big[:300], big[300:]).item() < 0.05 < mmd_loss(big[:300], big[300:] + 2).item()


def test_losses_reject_different_widths():
    with pytest.raises(ValueError, match="width"):
        coral_loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="width"):
        mmd_loss(torch.randn(4, 3), torch.randn(4, 5))


def test_cdan_multilinear_conditioning_shape_and_values():
    h, g = torch.randn(7, 5), torch.softmax(torch.randn(7, 3), 1)
    t = multilinear_map(h, g)
    assert t.shape == (7, 3 * 5)
    assert torch.allclose(t.view(7, 3, 5), g.unsqueeze(2) * h.unsqueeze(1))
    assert torch.allclose(t[2, 1 * 5 + 4], g[2, 1] * h[2, 4])
    r = RandomizedMultilinear(5, 3, 16, seed=0)
    assert r(h, g).shape == (7, 16)
    assert torch.allclose(r(h, g), (h @ r.r_h) * (g @ r.r_g) / 4.0)


def test_cdan_entropy_weights():
    g = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    w = entropy_weights(g)
    assert w[0].item() == pytest.approx(2.0)                      # H = 0
    assert w[1].item() == pytest.approx(1.0 + math.exp(-math.log(2)))


def test_domain_loss_trains_head_to_discriminate_and_reverses_features():
    torch.manual_seed(0)
    head = domain_head(2, 8, dropout=0.0)
    hs = torch.randn(16, 2, requires_grad=True)
    ht = torch.randn(16, 2) + 2
    loss = domain_adversarial_loss(head, hs, ht, 0.5)
    loss.backward()
    # the head descends the domain loss while the features receive -0.5 times its gradient
    hs2 = hs.detach().clone().requires_grad_(True)
    head.zero_grad()
    plain = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(
        head(hs2).squeeze(1), torch.zeros(16), reduction="mean")
    plain.backward()
    assert torch.allclose(hs.grad, -0.5 * hs2.grad, atol=1e-7)


def test_feature_augmentation_blocks():
    x = torch.arange(6.0).view(2, 1, 3)
    src = augment(x, 0)
    tgt = augment(x, 1)
    assert src.shape == (2, 3, 3)
    assert torch.equal(src[:, 0], x[:, 0]) and torch.equal(src[:, 1], x[:, 0]) and not src[:, 2].any()
    assert torch.equal(tgt[:, 0], x[:, 0]) and not tgt[:, 1].any() and torch.equal(tgt[:, 2], x[:, 0])
    mixed = augment(x, torch.tensor([0, 1]))
    assert torch.equal(mixed[0], src[0]) and torch.equal(mixed[1], tgt[1])
    with pytest.raises(ValueError, match="domain"):
        augment(x, 2)


def test_target_sampler_is_seeded_and_covers_the_data():
    x = torch.arange(10.0).view(10, 1)
    a, b = TargetSampler(x, seed=3), TargetSampler(x, seed=3)
    first = a.draw(4)
    assert torch.equal(first, b.draw(4))
    seen = torch.cat([first, a.draw(6)]).flatten().sort().values
    assert torch.equal(seen, torch.arange(10.0))
    state = a.get_state()
    nxt = a.draw(7)
    c = TargetSampler(x, seed=0)
    c.set_state(state)
    assert torch.equal(c.draw(7), nxt)


def test_masked_cross_entropy_skips_unlabeled():
    logits = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, -1, 2, -1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], y[[0, 2]])
    assert torch.allclose(MaskedCrossEntropy()(logits, y), expected)
    zero = MaskedCrossEntropy()(logits, torch.full((4,), -1))
    assert zero.item() == 0.0 and zero.requires_grad

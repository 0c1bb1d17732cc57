"""Each distillation loss against a hand computation on fixed tensors, and its argument checks."""
import math

import pytest
import torch

from kta_plugins.distill import (
    AttentionTransferLoss, DKDLoss, FitNetsLoss, KDLoss, PKTLoss, RKDLoss, make_regressor,
)

S = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, -0.5, 1.5, 0.0], [2.0, 0.0, 0.0, 1.0]])
T = torch.tensor([[0.5, 1.0, 2.0, 0.0], [1.0, 0.0, 0.5, -1.0], [0.0, 3.0, 1.0, 1.0]])
Y = torch.tensor([1, 2, 0])


def softmax(row, temp=1.0):
    e = [math.exp(v / temp) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_kd_matches_hand_computation():
    temp, alpha = 2.0, 0.7
    soft = sum(kl(softmax(t, temp), softmax(s, temp)) for s, t in zip(S.tolist(), T.tolist())) / 3
    ce = sum(-math.log(softmax(s)[y]) for s, y in zip(S.tolist(), Y.tolist())) / 3
    expected = alpha * temp ** 2 * soft + (1 - alpha) * ce
    got = KDLoss(temperature=temp, alpha=alpha)(S, T, Y)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert KDLoss(temp, alpha)(S, T).item() == pytest.approx(alpha * temp ** 2 * soft, rel=1e-5)
    assert KDLoss(temp, alpha)(T, T).item() == pytest.approx(0.0, abs=1e-6)  # KL(p || p) = 0


def test_dkd_matches_hand_computation():
    temp, a, b = 3.0, 1.5, 4.0
    tckd = nckd = 0.0
    for s, t, y in zip(S.tolist(), T.tolist(), Y.tolist()):
        ps, pt = softmax(s, temp), softmax(t, temp)
        tckd += kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        rest_s = softmax([v for k, v in enumerate(s) if k != y], temp)
        rest_t = softmax([v for k, v in enumerate(t) if k != y], temp)
        nckd += kl(rest_t, rest_s)
    tckd, nckd = temp ** 2 * tckd / 3, temp ** 2 * nckd / 3
    loss = DKDLoss(alpha=a, beta=b, temperature=temp)
    got_t, got_n = loss.parts(S, T, Y)
    assert got_t.item() == pytest.approx(tckd, rel=1e-4)
    assert got_n.item() == pytest.approx(nckd, rel=1e-4)
    assert loss(S, T, Y).item() == pytest.approx(a * tckd + b * nckd, rel=1e-4)


def test_dkd_unknown_target_is_plain_kd_on_all_classes():
    # A sample of a class the teacher does not know (-1): no target term, NCKD = KL over every class.
    temp = 2.0
    got_t, got_n = DKDLoss(temperature=temp).parts(S[:1], T[:1], torch.tensor([-1]))
    assert got_t.item() == 0.0
    assert got_n.item() == pytest.approx(temp ** 2 * kl(softmax(T[0].tolist(), temp), softmax(S[0].tolist(), temp)),
                                         rel=1e-4)


def test_dkd_equals_kd_decomposition():
    # Zhao et al.'s identity: KD = TCKD + (1 - p_t^target) * NCKD, per sample.
    temp = 2.0
    kd = KDLoss(temperature=temp, alpha=1.0)(S[:1], T[:1]).item()
    tckd, nckd = DKDLoss(temperature=temp).parts(S[:1], T[:1], Y[:1])
    pt = softmax(T[0].tolist(), temp)[Y[0]]
    assert kd == pytest.approx(tckd.item() + (1 - pt) * nckd.item(), rel=1e-4)


def test_dkd_is_finite_with_saturated_logits():
    s = torch.tensor([[200.0, -200.0, 0.0]], requires_grad=True)
    t = torch.tensor([[300.0, 0.0, -300.0]])
    loss = DKDLoss(temperature=1.0)(s, t, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_fitnets_matches_hand_computation():
    s, t = S[:, :2], T[:, :3]
    reg = make_regressor(s.shape, t.shape)
    assert isinstance(reg, torch.nn.Linear) and reg.weight.shape == (3, 2)
    with torch.no_grad():
        reg.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        reg.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    mapped = [[r[0], 2 * r[1] + 1, r[0] + r[1] - 1] for r in s.tolist()]
    expected = sum((m - v) ** 2 for mr, tr in zip(mapped, t.tolist()) for m, v in zip(mr, tr)) / 9
    assert FitNetsLoss(reg)(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert FitNetsLoss()(S, T).item() == pytest.approx(((S - T) ** 2).mean().item())


def test_fitnets_regressor_shapes_and_mismatch_names_both_layers():
    assert isinstance(make_regressor((2, 8, 5), (2, 16, 5)), torch.nn.Conv1d)
    assert isinstance(make_regressor((2, 8, 4, 4), (2, 16, 4, 4)), torch.nn.Conv2d)
    with pytest.raises(ValueError, match="features.1.*classifier|'features.1'.*'classifier'"):
        make_regressor((2, 8, 5), (2, 16, 7), "features.1", "classifier")


def test_attention_matches_hand_computation():
    fs = torch.tensor([[[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]]])       # N=1, C=2, L=3
    ft = torch.tensor([[[0.0, 1.0, 1.0], [2.0, 2.0, 0.0], [1.0, 0.0, 0.0]]])  # C=3
    def q(f):
        m = [sum(c[i] ** 2 for c in f) / len(f) for i in range(3)]
        n = math.sqrt(sum(v * v for v in m))
        return [v / n for v in m]
    qs, qt = q(fs[0].tolist()), q(ft[0].tolist())
    expected = sum((a - b) ** 2 for a, b in zip(qs, qt)) / 3
    assert AttentionTransferLoss(p=2)(fs, ft).item() == pytest.approx(expected, rel=1e-6)


def test_attention_mismatched_positions_name_both_layers_unless_resize():
    fs, ft = torch.ones(2, 4, 6), torch.ones(2, 4, 3)
    with pytest.raises(ValueError, match="'block1'.*'block2'"):
        AttentionTransferLoss()(fs, ft, names=("block1", "block2"))
    assert AttentionTransferLoss(resize=True)(fs, ft).item() == pytest.approx(0.0, abs=1e-7)


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_matches_hand_computation():
    s, t = S[:, :3], T
    def dist(e):
        n = len(e)
        d = [[math.dist(e[i], e[j]) for j in range(n)] for i in range(n)]
        mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[v / mu for v in r] for r in d]
    def angles(e):
        n = len(e)
        def unit(v):
            nv = math.sqrt(sum(x * x for x in v))
            return [x / nv for x in v] if nv > 0 else [0.0] * len(v)
        out = {}
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    a = unit([x - y for x, y in zip(e[i], e[j])])
                    b = unit([x - y for x, y in zip(e[k], e[j])])
                    out[j, i, k] = sum(x * y for x, y in zip(a, b))
        return out
    ds, dt = dist(s.tolist()), dist(t.tolist())
    l_d = sum(huber(ds[i][j], dt[i][j]) for i in range(3) for j in range(3)) / 9
    as_, at = angles(s.tolist()), angles(t.tolist())
    l_a = sum(huber(as_[key], at[key]) for key in as_) / 27
    assert RKDLoss(1.0, 0.0)(s, t).item() == pytest.approx(l_d, rel=1e-5)
    assert RKDLoss(0.0, 1.0)(s, t).item() == pytest.approx(l_a, rel=1e-5)
    assert RKDLoss(25.0, 50.0)(s, t).item() == pytest.approx(25 * l_d + 50 * l_a, rel=1e-5)


def test_rkd_is_invariant_to_scale_and_rotation_of_the_teacher():
    # Relations only: a scaled, rotated, translated copy of the student gives zero loss.
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 3.0, 0.0],
                                         [2.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 5.0]]))
    assert RKDLoss()(S, 3.0 * S @ q + 1.0).item() == pytest.approx(0.0, abs=1e-4)


def test_pkt_matches_hand_computation():
    eps = 1e-7
    def cond(e):
        u = [[x / (math.sqrt(sum(v * v for v in r)) + eps) for x in r] for r in e]
        k = [[(sum(a * b for a, b in zip(u[i], u[j])) + 1) / 2 for j in range(len(e))] for i in range(len(e))]
        return [[v / sum(r) for v in r] for r in k]
    ps, pt = cond(S[:, :2].tolist()), cond(T.tolist())
    expected = sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(3) for j in range(3)) / 9
    assert PKTLoss()(S[:, :2], T).item() == pytest.approx(expected, rel=1e-5)
    assert PKTLoss()(S, 2 * S).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("factory, argument", [
    (lambda: KDLoss(temperature=0.0), "temperature"),
    (lambda: KDLoss(alpha=1.5), "alpha"),
    (lambda: DKDLoss(beta=-1.0), "beta"),
    (lambda: DKDLoss(temperature="hot"), "temperature"),
    (lambda: RKDLoss(distance_weight=-1.0), "distance_weight"),
    (lambda: AttentionTransferLoss(p=0), "p"),
    (lambda: AttentionTransferLoss(resize="yes"), "resize"),
    (lambda: FitNetsLoss(regressor="linear"), "regressor"),
    (lambda: PKTLoss(eps=0.0), "eps"),
])
def test_bad_loss_arguments_name_the_argument(factory, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        factory()

"""Per-sample caching of a fixed teacher's outputs (kta_plugins.distill.cache)."""
import pytest
import torch
from torch import nn

from kta_plugins.distill.cache import TeacherCache


def _teacher():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()


def test_lookup_gives_the_teachers_outputs_for_any_order_of_rows():
    teacher = _teacher()
    a, b = torch.randn(30, 3, 4), torch.randn(7, 3, 4)
    calls = []

    def fn(x):
        calls.append(len(x))
        return (teacher(x), x.sum((1, 2)))

    cache = TeacherCache(fn, [a, b], batch_size=16)
    assert len(cache) == 37 and calls == [16, 16, 5]  # built once, in chunks
    x = torch.cat([a, b])[torch.randperm(37)[:11]]
    logits, s = cache.lookup(x)
    with torch.no_grad():
        assert torch.allclose(logits, teacher(x), atol=1e-6)
    assert torch.equal(s, x.sum((1, 2)))
    assert cache.hits == 1


def test_a_row_not_in_the_cache_gives_none():
    cache = TeacherCache(lambda x: (x.flatten(1),), [torch.randn(20, 6)])
    x = cache.x[[3, 5, 7]].clone()
    assert cache.lookup(x) is not None
    x[1, 0] += 1e-6  # an augmented / changed input
    assert cache.lookup(x) is None
    assert cache.lookup(torch.randn(3, 7)) is None  # another shape
    assert cache.misses == 2


def test_duplicate_rows_are_found():
    x = torch.randn(5, 4)
    data = torch.cat([x, x])
    cache = TeacherCache(lambda z: (z * 2,), [data])
    (out,) = cache.lookup(data[[9, 0, 5]])
    assert torch.equal(out, data[[9, 0, 5]] * 2)


def _run_kd(plugin_factory, cache):
    import warnings

    from kta_plugins.nn import MLP
    from scenarios import class_incremental
    from strategies import Naive

    bm = class_incremental("digits", n_experiences=5, seed=0)
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(32,))
    plugin = plugin_factory()
    plugin.cache_teacher = cache
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), plugins=[plugin],
              train_epochs=2, seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in list(bm.train_stream)[:2]:
            s.train(exp)
    return model, plugin


def _teacher_mlp():
    from kta_plugins.nn import MLP

    torch.manual_seed(5)
    return MLP((1, 8, 8), 10, hidden=(16,))


def test_kd_with_cached_teacher_trains_as_without():
    from kta_plugins.distill import KD

    for teacher in (_teacher_mlp, lambda: "previous"):
        plain, _ = _run_kd(lambda: KD(teacher=teacher(), temperature=2.0, alpha=0.5), False)
        cached, plugin = _run_kd(lambda: KD(teacher=teacher(), temperature=2.0, alpha=0.5), True)
        assert plugin._teacher_cache.hits > 0 and plugin._teacher_cache.misses == 0
        for a, b in zip(plain.parameters(), cached.parameters()):
            assert torch.allclose(a, b, atol=1e-5)


def test_feature_distiller_with_cached_teacher_trains_as_without():
    from kta_plugins.distill import FitNets

    make = lambda: FitNets(teacher=_teacher_mlp(), student_layer="features", teacher_layer="features")  # noqa: E731
    plain, _ = _run_kd(make, False)
    cached, plugin = _run_kd(make, True)
    assert plugin._teacher_cache.hits > 0 and plugin._teacher_cache.misses == 0
    for a, b in zip(plain.parameters(), cached.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_every_distiller_takes_cache_teacher_as_an_argument():
    from kta_plugins.registry import PLUGINS

    for name in ("kd", "fitnets", "attention", "rkd", "dkd", "pkt"):
        assert PLUGINS.build(f"{name}:cache_teacher=true").cache_teacher is True
        assert PLUGINS.build(name).cache_teacher is False
        with pytest.raises(TypeError, match="cache_teacher"):
            PLUGINS.get(name)(cache_teacher="yes")

"""``teacher_layer`` is required when the teacher's architecture differs from the student's.

Without it, a feature-distillation plugin used to tap the teacher's module of
the student's name, whatever that module was in the teacher (``PKT(te,
student_layer="net.1")`` quietly read a ReLU of another network).
"""
import pytest
import torch
from torch import nn

from kta_plugins.distill import PKT, RKD, AttentionTransfer, FitNets
from kta_plugins.nn import MLP
from scenarios import class_incremental
from strategies import Naive


@pytest.fixture(scope="module")
def stream():
    return class_incremental("digits", n_experiences=2, seed=0)


class Other(nn.Module):
    """Another architecture that also has a module named ``features``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


def _student():
    torch.manual_seed(0)
    return MLP((1, 8, 8), 10, hidden=(32,))


def _train(student, plugin, stream):
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    Naive(model=student, optimizer=opt, plugins=[plugin], progress=False, seed=0, train_epochs=1) \
        .train(stream.train_stream[0])


@pytest.mark.parametrize("make", [PKT, RKD, FitNets, AttentionTransfer])
def test_a_different_teacher_needs_teacher_layer_before_any_update(stream, make):
    student = _student()
    before = [p.detach().clone() for p in student.parameters()]
    with pytest.raises(ValueError, match="teacher_layer"):
        _train(student, make(Other(), student_layer="features"), stream)
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_naming_the_teacher_layer_trains(stream):
    _train(_student(), PKT(Other(), student_layer="features", teacher_layer="features"), stream)


def test_same_architecture_and_previous_need_no_teacher_layer(stream):
    wider = MLP((1, 8, 8), 10, hidden=(48,))  # same module names and types, other widths
    _train(_student(), PKT(wider, student_layer="features"), stream)
    _train(_student(), PKT("previous", student_layer="features"), stream)


def test_only_the_path_to_the_layer_must_match(stream):
    # a student whose head was replaced (as some continual-learning plugins do) and whose layers carry
    # KTA adapters still has the teacher's "features": no teacher_layer needed
    from kta_plugins.transfer import Adapter

    teacher = _student()
    student = _student()
    student.classifier = nn.Sequential(nn.Linear(32, 10))
    _train(student, PKT(teacher, student_layer="features"), stream)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    plugins = [Adapter(patterns=["features.*"]), PKT(teacher, student_layer="features")]
    s = Naive(model=student, optimizer=opt, plugins=plugins, progress=False, seed=0)
    for exp in stream.train_stream:
        s.train(exp)

"""The methods' claims on a small logistic regression (sklearn digits, full batch)."""

import pytest
import torch
from fedadapt_cases import side_of

import fedadapt

TARGET = 0.4
STEPS = 400


@pytest.fixture(scope="module")
def digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    x, y = sklearn.load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def steps_to_target(digits, name, lr, steps=STEPS, target=TARGET, **kw):
    x, y = digits
    w = torch.zeros(64, 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = fedadapt.build_optimizer(name, [w, b], side=side_of(name), lr=lr, **kw)
    for t in range(steps):
        loss = torch.nn.functional.cross_entropy(x @ w + b, y)
        if loss.item() < target:
            return t, opt
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps, opt


# a good SGD lr on this problem is about 0.5 (reaches the target in ~100 steps); Adam's about 0.01
@pytest.mark.parametrize(
    ("name", "base", "kw", "lr"),
    [
        ("hd", "sgd", {}, 0.05),
        ("hd-mult", "sgd", {}, 0.05),
        ("eg", "sgd", {}, 0.05),
        ("hd", "adam", {"base": "adam"}, 0.001),
        ("hd-mult", "adam", {"base": "adam"}, 0.001),
        ("eg", "adam", {"base": "adam"}, 0.001),
    ],
)
def test_adaptive_methods_recover_from_a_10x_too_small_lr(digits, name, base, kw, lr):
    t_base, _ = steps_to_target(digits, base, lr)
    t_ours, opt = steps_to_target(digits, name, lr, **kw)
    assert t_ours < t_base
    assert t_ours < STEPS
    assert opt.param_groups[0]["lr"] > lr  # it got there by raising the step size


def test_autodrop_drops_on_a_plateauing_run(digits):
    _, opt = steps_to_target(digits, "autodrop", 0.5, steps=300, target=0.0, window=20)
    group = opt.param_groups[0]
    assert group["drops"] >= 1
    assert group["lr"] < 0.5


def test_hd_right_direction_on_a_quadratic():
    """On f = x^2/2 at an lr far too small, consecutive gradients agree, so hd raises the lr."""
    x = torch.tensor([5.0, -3.0], requires_grad=True)
    opt = fedadapt.build_optimizer("hd", [x], lr=1e-3, hyper_lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        (0.5 * (x * x).sum()).backward()
        opt.step()
    assert opt.param_groups[0]["lr"] > 1e-2

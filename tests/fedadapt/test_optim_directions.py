"""The foreach base directions match torch's own optimizers (hd with hyper_lr=0 runs them unchanged)."""

import pytest
import torch
from fedadapt_cases import grad_stream, make_params, set_grads

import fedadapt

TORCH_BASES = [
    ("sgd", {}, lambda ps: torch.optim.SGD(ps, lr=0.1)),
    ("sgd-wd", {"weight_decay": 0.05}, lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05)),
    ("momentum", {"momentum": 0.9}, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    (
        "dampening",
        {"momentum": 0.9, "dampening": 0.3},
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3),
    ),
    (
        "nesterov",
        {"momentum": 0.9, "nesterov": True},
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    ),
    ("adam", {"base": "adam"}, lambda ps: torch.optim.Adam(ps, lr=0.1)),
    (
        "adam-wd",
        {"base": "adam", "weight_decay": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
        lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-6),
    ),
]


def _run_pair(name, kw, ref_factory, make_ours, steps=8, dtype=torch.float64):
    a = make_params(dtype=dtype)
    b = [p.clone() for p in a]
    ours = make_ours(a, kw)
    ref = ref_factory(b)
    for grads in grad_stream(a, steps):
        set_grads(a, grads)
        set_grads(b, grads)
        ours.step()
        ref.step()
        yield a, b, ours, ref


@pytest.mark.parametrize("case", TORCH_BASES, ids=[c[0] for c in TORCH_BASES])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hd_with_zero_hyper_lr_is_its_torch_base(case, dtype):
    name, kw, ref_factory = case
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for a, b, ours, _ in _run_pair(
        name,
        kw,
        ref_factory,
        lambda ps, kw: fedadapt.build_optimizer("hd", ps, lr=0.1, hyper_lr=0.0, **kw),
        dtype=dtype,
    ):
        for x, y in zip(a, b, strict=False):
            torch.testing.assert_close(x, y, **tol)
        assert ours.param_groups[0]["lr"] == 0.1
    if name == "sgd":  # plain SGD is the identical operation: bit-exact
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=False))


def test_momentum_buffer_state_matches_torch():
    a = make_params()
    b = [p.clone() for p in a]
    ours = fedadapt.build_optimizer("hd", a, lr=0.1, hyper_lr=0.0, momentum=0.9)
    ref = torch.optim.SGD(b, lr=0.1, momentum=0.9)
    for grads in grad_stream(a, 4):
        set_grads(a, grads), set_grads(b, grads)
        ours.step(), ref.step()
    for x, y in zip(a, b, strict=False):
        torch.testing.assert_close(
            ours.state[x]["momentum_buffer"], ref.state[y]["momentum_buffer"]
        )


def test_adam_moments_match_torch():
    a = make_params()
    b = [p.clone() for p in a]
    ours = fedadapt.build_optimizer("hd", a, lr=0.1, hyper_lr=0.0, base="adam")
    ref = torch.optim.Adam(b, lr=0.1)
    for grads in grad_stream(a, 4):
        set_grads(a, grads), set_grads(b, grads)
        ours.step(), ref.step()
    for x, y in zip(a, b, strict=False):
        torch.testing.assert_close(ours.state[x]["exp_avg"], ref.state[y]["exp_avg"])
        torch.testing.assert_close(ours.state[x]["exp_avg_sq"], ref.state[y]["exp_avg_sq"])


def test_registry_bases_are_torch_optimizers():
    p = [torch.zeros(2, requires_grad=True)]
    assert type(fedadapt.build_optimizer("sgd", p)) is torch.optim.SGD
    assert type(fedadapt.build_optimizer("adam", p)) is torch.optim.Adam
    assert fedadapt.build_optimizer("adam", p).defaults["foreach"] is True

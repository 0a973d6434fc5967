"""Degenerate settings reduce to the base optimizer (ALGORITHMS.md §7.5)."""

import pytest
import torch
from fedadapt_cases import grad_stream, make_params, set_grads, side_of

import fedadapt

BASES = [
    ({}, lambda ps: torch.optim.SGD(ps, lr=0.1)),
    ({"momentum": 0.9}, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    (
        {"momentum": 0.9, "nesterov": True},
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    ),
    ({"base": "adam"}, lambda ps: torch.optim.Adam(ps, lr=0.1)),
]
IDS = ["sgd", "momentum", "nesterov", "adam"]

DEGENERATE = {
    "hd": {"hyper_lr": 0.0},
    "hd-mult": {"hyper_lr": 0.0},
    "eg": {"scale_lr": 0.0, "gain_lr": 0.0},
    "cprop": {"overconfidence": 1e30},
    "autodrop": {"drop_factor": 1.0, "window": 2, "threshold": 90.0, "patience": 0},
    "autodrop-never": {"window": 2, "threshold": 0.0},
    "dsa": {"param_hyper_lr": 0.0, "tensor_hyper_lr": 0.0, "global_hyper_lr": 0.0},
    "fedhyper-cl": {"max_growth": 1.0, "min_lr": 0.1},
    "fedhyper-g": {"min_lr": 0.1, "max_lr": 0.1},
}


@pytest.mark.parametrize("method", sorted(DEGENERATE))
@pytest.mark.parametrize(("base_kw", "ref"), BASES, ids=IDS)
def test_degenerate_setting_equals_torch_base(method, base_kw, ref):
    name = method.split("-never")[0]
    a = make_params()
    b = [p.clone() for p in a]
    ours = fedadapt.build_optimizer(
        name, a, side=side_of(name), lr=0.1, **DEGENERATE[method], **base_kw
    )
    theirs = ref(b)
    for g in grad_stream(a, 10):
        set_grads(a, g)
        set_grads(b, g)
        ours.step()
        theirs.step()
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert float(ours.param_groups[0]["lr"]) == 0.1


def test_fedexp_with_huge_eps_is_fedavg():
    a = make_params()
    b = [p.clone() for p in a]
    ours = fedadapt.ServerOptimizer(a, "fedexp", extrapolation_eps=1e12, eps_decay=1.0)
    avg = fedadapt.ServerOptimizer(b, "sgd", lr=1.0)
    for r in range(4):
        g = torch.Generator().manual_seed(r)
        clients = [
            [p + torch.randn(p.shape, generator=g, dtype=p.dtype) for p in a] for _ in range(3)
        ]
        ours.step(clients, [1, 2, 3])
        avg.step([[c.clone() for c in cl] for cl in clients], [1, 2, 3])
        assert ours.last_info["lr"] == 1.0
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_fedhyper_gm_with_zero_hyper_lr_is_fedavg():
    a = make_params()
    b = [p.clone() for p in a]
    ours = fedadapt.build_optimizer("fedhyper-gm", a, side="server", hyper_lr=0.0)
    ref = torch.optim.SGD(b, lr=1.0)
    for g in grad_stream(a, 5):
        set_grads(a, g), set_grads(b, g)
        ours.step(), ref.step()
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_cprop_scale_is_one_when_gradients_never_change_sign():
    a = make_params()
    opt = fedadapt.build_optimizer("cprop", a, conformity_beta=0.9, overconfidence=5.0)
    fixed = [torch.ones_like(p) for p in a]
    for _ in range(6):
        set_grads(a, fixed)
        opt.step()
    stats = fedadapt.step_size_stats(opt)
    assert stats["step-min"] == pytest.approx(stats["lr"])

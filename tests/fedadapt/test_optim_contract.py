"""Contract over the registry: every method, every variant."""

import copy
import io
import math
import pickle

import pytest
import torch
from fedadapt_cases import (
    CASE_IDS,
    CASES,
    grad_stream,
    make_params,
    set_grads,
    side_of,
    signals_for,
    state_equal,
)

import fedadapt


def test_every_method_is_registered():
    assert fedadapt.available_optimizers() == sorted(
        [
            "adam",
            "adaptive-fedavg",
            "autodrop",
            "cp-adam",
            "cprop",
            "dsa",
            "eg",
            "fedexp",
            "fedhyper-cl",
            "fedhyper-g",
            "fedhyper-gm",
            "flash",
            "hd",
            "hd-mult",
            "sgd",
        ]
    )


def run_steps(opt, params, name, grads, start=0):
    for i, g in enumerate(grads):
        set_grads(params, g)
        opt.step(**signals_for(name, start + i))


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_finite_and_stats(name, kw):
    params = make_params()
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    run_steps(opt, params, name, grad_stream(params, 10))
    assert all(torch.isfinite(p).all() for p in params)
    stats = fedadapt.step_size_stats(opt)
    assert set(stats) == {"lr", "step-mean", "step-min", "step-max"}
    assert all(math.isfinite(v) and v >= 0 for v in stats.values())
    assert stats["step-min"] <= stats["step-mean"] * (1 + 1e-12) <= stats["step-max"] * (1 + 1e-12)


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_pickle_round_trip_continues_identically(name, kw):
    params = make_params()
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    grads = grad_stream(params, 8)
    run_steps(opt, params, name, grads[:4])
    params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    state_equal(opt, opt2)
    run_steps(opt, params, name, grads[4:], start=4)
    run_steps(opt2, params2, name, grads[4:], start=4)
    assert all(torch.equal(a, b) for a, b in zip(params, params2, strict=True))
    state_equal(opt, opt2)


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_state_dict_resume_gives_the_identical_trajectory(name, kw):
    params = make_params()
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    grads = grad_stream(params, 9)
    run_steps(opt, params, name, grads[:4])
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    params2 = [p.clone() for p in params]
    opt2 = fedadapt.build_optimizer(name, params2, side=side_of(name), **kw)
    opt2.load_state_dict(saved)
    for i, g in enumerate(grads[4:]):
        run_steps(opt, params, name, [g], start=4 + i)
        run_steps(opt2, params2, name, [g], start=4 + i)
        assert all(torch.equal(a, b) for a, b in zip(params, params2, strict=True))
    state_equal(opt, opt2)


@pytest.mark.parametrize(
    ("name", "kw"),
    [c for c in CASES if c[0] not in ("sgd", "adam")],
    ids=[i for i, c in zip(CASE_IDS, CASES, strict=True) if c[0] not in ("sgd", "adam")],
)
def test_nonfinite_gradient_skips_the_step_and_counts_it(name, kw):
    params = make_params()
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    grads = grad_stream(params, 4)
    run_steps(opt, params, name, grads[:3])
    before = [p.clone() for p in params]
    sd = copy.deepcopy(opt.state_dict())
    for bad in (float("nan"), float("inf")):
        g = [t.clone() for t in grads[3]]
        g[1][0] = bad
        run_steps(opt, params, name, [g], start=3)
        assert all(torch.equal(a, b) for a, b in zip(params, before, strict=True))
    after = opt.state_dict()
    assert after["param_groups"][0]["skipped"] == sd["param_groups"][0]["skipped"] + 2
    for group in after["param_groups"]:
        group["skipped"] -= 2
    assert after["param_groups"] == sd["param_groups"]
    for k, st in sd["state"].items():
        for n, v in st.items():
            assert torch.equal(after["state"][k][n], v), n
    run_steps(opt, params, name, [grads[3]], start=3)  # and it goes on
    assert all(torch.isfinite(p).all() for p in params)


BAD = {
    "hd": [
        {"hyper_lr": -1.0},
        {"base": "rmsprop"},
        {"momentum": 1.5},
        {"min_lr": 1.0, "max_lr": 0.5},
        {"nesterov": True},
        {"betas": (0.9, 1.0)},
    ],
    "hd-mult": [{"hyper_lr": 1.5}, {"lr": 0.0}],
    "dsa": [
        {"hyper_beta": 1.0},
        {"scale_bounds": (2.0, 10.0)},
        {"param_hyper_lr": -1.0},
        {"param_hyper_lr": 1.0},
    ],
    "autodrop": [{"window": 0}, {"drop_factor": 0.0}, {"patience": -1}, {"threshold": -1.0}],
    "cprop": [{"conformity_beta": 1.0}, {"overconfidence": 0.0}, {"cdf": "laplace"}],
    "eg": [{"scale_lr": -0.1}, {"gain_lr": float("nan")}, {"min_gain": 2.0}, {"grad_beta": 1.0}],
    "fedexp": [{"extrapolation_eps": -1.0}, {"eps_decay": 0.0}],
    "fedhyper-g": [{"hyper_lr": -1.0}, {"lr": -1.0}],
    "fedhyper-gm": [{"hyper_lr": -1.0}, {"momentum": 1.0}],
    "fedhyper-cl": [{"max_growth": 0.5}, {"global_coef": -1.0}],
    "sgd": [{"lr": -1.0}, {"momentum": -0.5}],
    "adam": [{"lr": -1.0}, {"betas": (1.5, 0.9)}],
    "cp-adam": [{"lr": 0.0}, {"eps": 0.0}, {"scale_rate": -1.0}, {"betas": (0.9, 1.0)}],
    "flash": [{"tau": 0.0}, {"den_floor": 1.5}],
    "adaptive-fedavg": [{"max_ratio": 1.0}, {"betas": (0.7, 0.3)}],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_hyperparameters_raise_value_error(name):
    for kw in BAD[name] + [{"no_such_option": 1}]:
        with pytest.raises(ValueError):
            fedadapt.build_optimizer(name, make_params(), side=side_of(name), **kw)


def test_error_messages_name_the_accepted_values():
    with pytest.raises(ValueError, match="accepted: .*'hd'"):
        fedadapt.build_optimizer("hdd", make_params())
    with pytest.raises(ValueError, match="hyper_lr"):
        fedadapt.build_optimizer("hd", make_params(), hyper_lr=-1.0)
    with pytest.raises(ValueError, match="accepted: .*'lr'"):
        fedadapt.build_optimizer("cprop", make_params(), hyper_lr=1.0)
    with pytest.raises(ValueError, match=r"\['sgd', 'adam'\]"):
        fedadapt.build_optimizer("eg", make_params(), base="yogi")


def test_server_rules_without_signals_raise():
    params = make_params()
    opt = fedadapt.build_optimizer("fedexp", params, side="server")
    set_grads(params, grad_stream(params, 1)[0])
    with pytest.raises(ValueError, match="num_clients"):
        opt.step()
    with pytest.raises(ValueError, match="unknown signals"):
        fedadapt.build_optimizer("hd", params).step(client_sq_mean=[])


def test_required_signals_are_class_attributes():
    assert fedadapt.FedExP.required_signals == ("client_sq_norms_mean", "num_clients")
    for cls in (
        fedadapt.HypergradientDescent,
        fedadapt.CProp,
        fedadapt.FedHyperG,
        fedadapt.FedHyperGM,
        fedadapt.FedHyperCL,
        fedadapt.AutoDrop,
        fedadapt.ExponentiatedGradientStepSize,
        fedadapt.StructuredSelfAdaptive,
        fedadapt.MultiplicativeHypergradientDescent,
    ):
        assert cls.required_signals == ()


def test_lr_scheduler_drives_the_group_lr():
    params = make_params()
    opt = fedadapt.build_optimizer("hd", params, lr=0.1, hyper_lr=0.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for g in grad_stream(params, 3):
        set_grads(params, g)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_param_groups_and_params_without_grad():
    a, b, c = make_params()
    opt = fedadapt.build_optimizer("eg", [{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1)
    assert opt.param_groups[1]["max_lr"] == pytest.approx(5.0)
    a.grad = torch.ones_like(a)
    c0 = c.clone()
    opt.step()  # b, c have no grad: untouched, no state
    assert torch.equal(c, c0) and c not in opt.state


def test_grads_reused_in_place_are_detected():
    """zero_grad(set_to_none=False) refills the same tensors: HD must copy, not keep a reference."""
    x = torch.zeros(3, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    ref = fedadapt.build_optimizer("hd", [x], lr=0.1, hyper_lr=0.01)
    reuse = fedadapt.build_optimizer("hd", [y], lr=0.1, hyper_lr=0.01)
    targets = [
        torch.tensor([1.0, 2.0, 3.0]),
        torch.tensor([2.0, -1.0, 0.5]),
        torch.tensor([0.3, 0.3, 0.3]),
    ] * 2
    for t in targets:
        ref.zero_grad(set_to_none=True)
        ((x - t) ** 2).sum().backward()
        ref.step()
        reuse.zero_grad(set_to_none=False)
        ((y - t) ** 2).sum().backward()
        reuse.step()
    torch.testing.assert_close(x, y)
    assert ref.param_groups[0]["lr"] == pytest.approx(reuse.param_groups[0]["lr"])


def test_fedadapt_never_imports_flwr_or_ray():
    import subprocess
    import sys

    code = "import sys, fedadapt; bad = [m for m in ('flwr', 'ray') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)

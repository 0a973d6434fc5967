"""``fused=True``: the compiled rules match the foreach path, and the flag behaves like torch's.

The parity tests compile (``torch.compile``, CPU backend: needs a C++ compiler); every test
uses the same two small tensors, so each rule compiles once per static configuration (about
5-20 s cold on a loaded 2-core machine) and the module is marked ``slow``. The tests that
need no compiler (validation, fallback) are not slow.
"""

from __future__ import annotations

import copy
import pickle
import shutil
import warnings

import pytest
import torch
from fedadapt_cases import side_of

import fedadapt
from fedadapt._fused import dispatch as _fused

needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("clang++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler",
)

# (method, hyperparameters): every per-coordinate method over SGD, momentum and Adam
PARITY = [
    ("eg", {"lr": 0.05}),
    ("eg", {"lr": 0.01, "base": "adam"}),
    ("eg", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("dsa", {"lr": 0.05}),
    ("dsa", {"lr": 0.01, "base": "adam"}),
    ("dsa", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("cprop", {"lr": 0.05, "conformity_beta": 0.9}),
    ("cprop", {"lr": 0.01, "base": "adam", "overconfidence": 3.0}),
    ("cprop", {"lr": 0.05, "conformity_beta": 0.9, "cdf": "normal", "momentum": 0.5}),
]
STEPS = 6


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(4, 3, generator=g, dtype=dtype).requires_grad_(),
        torch.randn(3, generator=g, dtype=dtype).requires_grad_(),
    ]


def _grads(dtype: torch.dtype, steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    bias = [torch.randn(4, 3, generator=g, dtype=dtype), torch.randn(3, generator=g, dtype=dtype)]
    # a consistent component plus noise, so every adaptive factor moves both ways
    return [
        [b + 0.7 * torch.randn(b.shape, generator=g, dtype=dtype) for b in bias]
        for _ in range(steps)
    ]


def _run(name: str, kw: dict, fused: bool, dtype: torch.dtype = torch.float32, signals=None):
    params = _params(dtype)
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), fused=fused, **kw)
    for i, grads in enumerate(_grads(dtype, STEPS)):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step(**(signals(i, params) if signals else {}))
    return params, opt


def _assert_same(a, b, tol: float) -> None:
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)
    for x, y in zip(pa, pb, strict=True):
        sa, sb = oa.state[x], ob.state[y]
        assert sa.keys() == sb.keys()
        for k, v in sa.items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(
                    v, sb[k], rtol=tol, atol=tol, msg=lambda m, k=k: f"state {k!r}: {m}"
                )
    for ga, gb in zip(oa.param_groups, ob.param_groups, strict=True):
        assert ga["step"] == gb["step"] == STEPS
        assert ga["skipped"] == gb["skipped"] == 0
        assert float(ga["lr"]) == pytest.approx(float(gb["lr"]), rel=tol)


def _compiled_ok(name: str, dtype: torch.dtype) -> None:
    rules = {"eg": ["dot-pairs", "eg"], "dsa": ["dsa-stats", "dsa-update"], "cprop": ["cprop"]}[
        name
    ]
    for rule in rules:
        assert _fused.compile_failed(rule, torch.device("cpu"), dtype) is None
        assert (rule, "cpu", dtype) in _fused._COMPILED


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize(
    ("name", "kw"), PARITY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PARITY)]
)
def test_compiled_rule_matches_foreach(name, kw):
    fused = _run(name, kw, True)
    eager = _run(name, kw, False)
    _compiled_ok(name, torch.float32)  # a fallback to foreach would make the parity vacuous
    _assert_same(eager, fused, tol=2e-5)
    # the rule really adapted something (the parity is not between two no-ops)
    moved = [
        s
        for p in eager[0]
        for k, s in eager[1].state[p].items()
        if k in ("gain", "param_scale", "conformity") and not torch.allclose(s, torch.ones_like(s))
    ]
    assert moved


@pytest.mark.slow
@needs_compiler
def test_dsa_float64_per_tensor_factor_is_written():
    """A 0-dim float64 state tensor written inside a compiled graph (dropped by torch 2.13 unless viewed as (1,))."""
    kw = {"lr": 0.05, "tensor_hyper_lr": 0.2}
    fused = _run("dsa", kw, True, torch.float64)
    eager = _run("dsa", kw, False, torch.float64)
    _compiled_ok("dsa", torch.float64)
    scales = [float(eager[1].state[p]["tensor_scale"]) for p in eager[0]]
    assert any(abs(s - 1.0) > 1e-3 for s in scales)
    _assert_same(eager, fused, tol=1e-10)


@pytest.mark.slow
@needs_compiler
def test_cprop_server_statistics_compiled():
    def signals(i, params):
        return {
            "client_sq_mean": [p.grad * p.grad * (1.5 + 0.1 * i) for p in params],
            "num_clients": 5,
        }

    kw = {"lr": 0.05, "conformity_beta": 0.9}
    _assert_same(
        _run("cprop", kw, False, signals=signals),
        _run("cprop", kw, True, signals=signals),
        tol=2e-5,
    )


@pytest.mark.slow
@needs_compiler
def test_lr_schedule_state_dict_and_pickle_behave_as_without_fused():
    """An LR scheduler drives a fused optimizer without recompiles; state_dict and pickling round-trip."""
    from torch._dynamo.utils import counters

    params = _params(torch.float32)
    opt = fedadapt.build_optimizer("eg", params, lr=0.05, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    grads = _grads(torch.float32, 5)
    for p, g in zip(params, grads[0], strict=True):
        p.grad = g.clone()
    opt.step()
    sched.step()
    before = counters["stats"]["unique_graphs"]
    for gs in grads[1:]:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.clone()
        opt.step()
        sched.step()
    assert counters["stats"]["unique_graphs"] == before  # new lr values are data, not code
    sd = opt.state_dict()
    assert sd["param_groups"][0]["fused"] is True
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.param_groups[0]["fused"] is True
    assert torch.equal(clone.state_dict()["state"][0]["gain"], sd["state"][0]["gain"])
    other = fedadapt.build_optimizer("eg", copy.deepcopy(params), lr=0.05, fused=False)
    other.load_state_dict(sd)  # a fused optimizer's state loads into the foreach one and back
    assert other.param_groups[0]["fused"] is True


def test_fused_must_be_a_bool():
    for name in ("eg", "dsa", "cprop"):
        with pytest.raises(ValueError, match="fused must be True or False"):
            fedadapt.build_optimizer(
                name, _params(torch.float32), side=side_of(name), lr=0.01, fused="yes"
            )


def test_compile_failure_warns_once_and_runs_foreach(monkeypatch):
    """Where compiling is impossible the step still runs, on the foreach path, with one warning."""
    monkeypatch.setattr(_fused, "_COMPILED", {})
    monkeypatch.setattr(_fused, "_FAILED", {})

    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no working C++ compiler found\nsecond line")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(
        RuntimeWarning,
        match="could not compile the 'cprop' rule.*no working C\\+\\+ compiler found",
    ):
        fused = _run("cprop", {"lr": 0.05, "conformity_beta": 0.9}, True)
    eager = _run("cprop", {"lr": 0.05, "conformity_beta": 0.9}, False)
    _assert_same(eager, fused, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per (rule, device, dtype), not per step
        _run("cprop", {"lr": 0.05, "conformity_beta": 0.9}, True)


@pytest.mark.parametrize(
    ("name", "kw", "own", "adam"),
    [
        ("eg", {"lr": 0.01, "base": "adam"}, "grad_avg", "exp_avg"),
        ("cprop", {"lr": 0.01, "base": "adam"}, "conformity_sq_avg", "exp_avg_sq"),
    ],
)
def test_shared_moment_and_checkpoint_round_trip(name, kw, own, adam):
    """One tensor serves the method and Adam; a checkpoint (torch.save, two copies or not) resumes exactly."""
    import io

    grads = _grads(torch.float64, 6)

    def steps(params, opt, gs):
        for step in gs:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()

    params = _params(torch.float64)
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    steps(params, opt, grads[:3])
    assert all(opt.state[p][own] is opt.state[p][adam] for p in params)
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    steps(params, opt, grads[3:])

    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    resumed = [p.clone().requires_grad_() for p in ck["params"]]
    opt2 = fedadapt.build_optimizer(name, resumed, side=side_of(name), **kw)
    sd = ck["opt"]
    for st in sd["state"].values():  # a checkpoint writer that copied each entry separately
        st[own] = st[own].clone()
    opt2.load_state_dict(sd)
    steps(resumed, opt2, grads[3:])
    for a, b in zip(params, resumed, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a][adam], opt2.state[b][adam])
        assert torch.equal(opt.state[a][own], opt2.state[b][own])

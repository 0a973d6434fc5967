"""Properties (hypothesis, small budgets)."""

import math

import torch
from fedadapt_cases import side_of
from hypothesis import given, settings
from hypothesis import strategies as st

import fedadapt
from fedadapt.conformity import conformity_scale

floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)
vec = st.lists(floats, min_size=3, max_size=3)
streams = st.lists(vec, min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(
    grads=streams,
    name=st.sampled_from(["hd", "hd-mult", "eg", "dsa", "fedhyper-cl", "fedhyper-g", "autodrop"]),
    lr=st.floats(min_value=1e-3, max_value=1.0),
)
def test_lr_stays_within_its_bounds(grads, name, lr):
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    kw = {"hyper_lr": 1.0} if name == "hd" else {}
    if name == "autodrop":
        kw = {"window": 1, "patience": 0, "threshold": 90.0}
    opt = fedadapt.build_optimizer(name, [p], side=side_of(name), lr=lr, **kw)
    group = opt.param_groups[0]
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert group["min_lr"] <= float(group["lr"]) <= group["max_lr"]
        assert math.isfinite(float(group["lr"]))


@settings(max_examples=25, deadline=None)
@given(grads=streams)
def test_eg_gains_stay_positive_and_bounded(grads):
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("eg", [p], gain_lr=1.0, min_gain=0.1, max_gain=10.0)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        gain = opt.state[p]["gain"]
        assert bool((gain > 0).all()) and bool((gain >= 0.1).all()) and bool((gain <= 10.0).all())


@settings(max_examples=25, deadline=None)
@given(grads=streams)
def test_dsa_scales_stay_positive_and_bounded(grads):
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer(
        "dsa", [p], param_hyper_lr=0.9, tensor_hyper_lr=1.0, scale_bounds=(0.5, 2.0)
    )
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        s = opt.state[p]["param_scale"] * opt.state[p]["tensor_scale"]
        assert bool((s >= 0.25 - 1e-12).all()) and bool((s <= 4.0 + 1e-12).all())


@settings(max_examples=25, deadline=None)
@given(
    grads=streams,
    cdf=st.sampled_from(["normal", "bft"]),
    c=st.floats(min_value=0.1, max_value=10.0),
)
def test_cprop_scale_in_unit_interval(grads, cdf, c):
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("cprop", [p], conformity_beta=0.5, overconfidence=c, cdf=cdf)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        s = opt.state[p]["conformity"]
        assert bool((s >= 0).all()) and bool((s <= 1).all())


@settings(max_examples=25, deadline=None)
@given(
    deltas=st.lists(vec, min_size=2, max_size=6),
    weights=st.data(),
    cdf=st.sampled_from(["normal", "bft"]),
)
def test_cross_client_conformity_in_unit_interval_and_order_invariant(deltas, weights, cdf):
    w = weights.draw(
        st.lists(
            st.floats(min_value=0.1, max_value=10.0), min_size=len(deltas), max_size=len(deltas)
        )
    )
    perm = weights.draw(st.permutations(list(range(len(deltas)))))
    out = []
    for order in (list(range(len(deltas))), perm):
        ws = [w[i] / sum(w) for i in order]
        ds = [torch.tensor(deltas[i], dtype=torch.float64) for i in order]
        mean = sum(wi * d for wi, d in zip(ws, ds, strict=True))
        sq = sum(wi * d * d for wi, d in zip(ws, ds, strict=True))
        s = conformity_scale([mean], [sq - mean * mean], len(ds), cdf=cdf)[0]
        assert bool((s >= 0).all()) and bool((s <= 1).all())
        out.append(s)
    torch.testing.assert_close(out[0], out[1], rtol=1e-9, atol=1e-9)

"""ServerOptimizer: FedAvg exactness, FedOpt Adam, signals, non-finite rounds, state."""

import io
import math

import numpy as np
import pytest
import torch
from fedadapt_cases import make_params

import fedadapt


def clients_around(params, n, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    return [
        [p + scale * torch.randn(p.shape, generator=g, dtype=p.dtype) + 0.05 for p in params]
        for _ in range(n)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_server_sgd_lr1_is_exactly_the_weighted_mean(dtype):
    params = make_params(dtype=dtype)
    server = fedadapt.ServerOptimizer(params, "sgd", lr=1.0)
    for r in range(3):
        clients = clients_around(params, 4, seed=r)
        weights = [3, 1, 7, 2]
        total = sum(weights)
        expected = [
            sum(
                (w / total) * c[j].to(torch.float64) for w, c in zip(weights, clients, strict=True)
            ).to(dtype)
            for j in range(len(params))
        ]
        # reference in the same order of operations as a plain float64 FedAvg, rounded once
        server.step(clients, weights)
        for p, e in zip(params, expected, strict=True):
            assert torch.equal(p, e)
        assert server.last_info["skipped"] == 0.0
        assert server.last_info["lr"] == 1.0


def test_server_hd_in_float32_matches_the_mean_up_to_rounding():
    params = make_params(dtype=torch.float32)
    server = fedadapt.ServerOptimizer(params, "hd", lr=1.0, hyper_lr=0.0)
    clients = clients_around(params, 3, seed=0)
    mean = [sum(c[j] for c in clients) / 3 for j in range(len(params))]
    server.step(clients, [1, 1, 1])
    for p, m in zip(params, mean, strict=True):
        torch.testing.assert_close(p, m, rtol=1e-6, atol=1e-6)


def fedadam_numpy(x0, deltas, eta, beta1, beta2, tau, exponent_offset, tau_scaled):
    """Flower's FedAdam update (serverapp/strategy/fedadam.py) in numpy.

    Flower: x + eta * sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) * m / (sqrt(v) + tau), t = server round
    from 1 (exponent_offset=1). With exponent_offset=0 and tau_scaled=True (tau * sqrt(1 - b2^t))
    this is algebraically torch's Adam on the pseudo-gradient -Delta.
    """
    x = x0.copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    out = []
    for t, d in enumerate(deltas, start=1):
        m = beta1 * m + (1 - beta1) * d
        v = beta2 * v + (1 - beta2) * d * d
        e = t + exponent_offset
        eta_norm = eta * np.sqrt(1 - beta2**e) / (1 - beta1**e)
        tau_t = tau * np.sqrt(1 - beta2**t) if tau_scaled else tau
        x = x + eta_norm * m / (np.sqrt(v) + tau_t)
        out.append(x.copy())
    return out


def test_server_adam_is_fedadam_with_documented_bias_correction():
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    server = fedadapt.ServerOptimizer([x], "adam", lr=eta, betas=(b1, b2), eps=tau)
    rng = np.random.default_rng(0)
    deltas = [rng.normal(size=3) * 0.1 + 0.05 for _ in range(5)]
    ours = []
    for d in deltas:
        server.step_from_mean([x + torch.from_numpy(d)])
        ours.append(x.numpy().copy())
    same = fedadam_numpy(
        np.array([0.5, -1.0, 2.0]), deltas, eta, b1, b2, tau, exponent_offset=0, tau_scaled=True
    )
    flower = fedadam_numpy(
        np.array([0.5, -1.0, 2.0]), deltas, eta, b1, b2, tau, exponent_offset=1, tau_scaled=False
    )
    for a, b in zip(ours, same, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # Flower's own numbers differ (bias correction one round ahead, unscaled tau), by a bounded amount
    assert not np.allclose(ours[0], flower[0], rtol=1e-6)
    np.testing.assert_allclose(ours[-1], flower[-1], atol=0.2)


def test_server_hd_equals_fedhyper_g_rule():
    """Server SGD-HD (lr 1, hyper_lr 1, lr in [0.2, 5]) reproduces FedHyper-G's reference rule."""
    x = make_params(seed=3)
    y = [p.clone() for p in x]
    hd = fedadapt.ServerOptimizer(x, "hd", lr=1.0, hyper_lr=1.0, min_lr=0.2, max_lr=5.0)
    fh = fedadapt.ServerOptimizer(y, "fedhyper-g", hypergradient="raw")  # the published rule
    ref = [p.clone() for p in x]
    agg, prev = 0.0, None
    for r in range(6):
        clients = clients_around(x, 3, seed=10 + r, scale=0.3)
        deltas = [sum(c[j] for c in clients) / 3 - x[j] for j in range(len(x))]
        # the code: agg = clip(agg + <Delta_{t-1}, Delta_t>, -0.8, 4); x += (1 + agg) Delta
        if prev is not None:
            agg = min(
                4.0,
                max(
                    -0.8, agg + sum(float((a * b).sum()) for a, b in zip(prev, deltas, strict=True))
                ),
            )
        ref = [p + (1 + agg) * d for p, d in zip(ref, deltas, strict=True)]
        prev = deltas
        hd.step_from_mean([p + d for p, d in zip(x, deltas, strict=True)])
        fh.step_from_mean([p + d for p, d in zip(y, deltas, strict=True)])
        for a, b, c in zip(x, y, ref, strict=True):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-10)


def test_nonfinite_round_leaves_everything_untouched():
    params = make_params()
    server = fedadapt.ServerOptimizer(params, "hd", lr=1.0, hyper_lr=0.1)
    server.step(clients_around(params, 2, 0), [1, 1])
    server.step(clients_around(params, 2, 1), [1, 1])
    before = [p.clone() for p in params]
    sd = server.state_dict()
    bad = clients_around(params, 2, 2)
    bad[0][1][0] = float("nan")
    server.step(bad, [1, 1])
    assert server.last_info["skipped"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(params, before, strict=True))
    after = server.optimizer.state_dict()
    assert after["param_groups"][0]["lr"] == sd["optimizer"]["param_groups"][0]["lr"]
    for k, st in sd["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(after["state"][k][name], t)


def test_last_info_cosine_and_stats():
    params = make_params()
    server = fedadapt.ServerOptimizer(params, "eg", lr=1.0)
    server.step(clients_around(params, 2, 0), [1, 2])
    assert math.isnan(server.last_info["cosine"])
    server.step(clients_around(params, 2, 1), [1, 2])
    info = server.last_info
    assert -1.0 <= info["cosine"] <= 1.0
    assert set(info) >= {"lr", "step-mean", "step-min", "step-max", "cosine", "skipped"}
    assert info["step-min"] <= info["step-mean"] <= info["step-max"]


def test_fedexp_signals_computed_from_clients_and_validated():
    params = make_params()
    server = fedadapt.ServerOptimizer(params, "fedexp")
    assert server.required_signals == ("client_sq_norms_mean", "num_clients")
    clients = clients_around(params, 5, 0, scale=1.0)
    x0 = [p.clone() for p in params]
    server.step(clients, [1] * 5)
    deltas = [[c - p for c, p in zip(cl, x0, strict=True)] for cl in clients]
    sq = sum(sum(float((d * d).sum()) for d in dl) for dl in deltas) / 5
    mean = [sum(dl[j] for dl in deltas) / 5 for j in range(len(x0))]
    mm = sum(float((m * m).sum()) for m in mean)
    eta = max(1.0, 0.5 * sq / (mm + 5 * 1e-3 * 0.998**2))
    assert server.last_info["lr"] == pytest.approx(eta, rel=1e-9)
    assert eta > 1.0
    for p, a, m in zip(params, x0, mean, strict=True):
        torch.testing.assert_close(p, a + eta * m)
    with pytest.raises(ValueError, match="client_sq_norms_mean"):
        server.step_from_mean([p.clone() for p in params])


def test_server_state_dict_is_weights_only_safe_and_resumes():
    a = make_params()
    b = [p.clone() for p in a]
    sa = fedadapt.ServerOptimizer(a, "hd", lr=1.0, hyper_lr=0.5)
    for r in range(3):
        sa.step(clients_around(a, 2, r), [1, 3])
    buf = io.BytesIO()
    torch.save(sa.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    for p, q in zip(b, a, strict=True):
        p.copy_(q)
    sb = fedadapt.ServerOptimizer(b, "hd", lr=1.0, hyper_lr=0.5)
    sb.load_state_dict(state)
    for r in range(3, 6):
        sa.step(clients_around(a, 2, r), [1, 3])
        sb.step(clients_around(b, 2, r), [1, 3])
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert sa.last_info == sb.last_info


def test_cross_client_conformity_is_invariant_to_client_order():
    params = make_params()
    clients = clients_around(params, 5, 0, scale=0.5)
    weights = [1, 2, 3, 4, 5]
    outs = []
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
        x = [p.clone() for p in params]
        server = fedadapt.ServerOptimizer(x, "cprop", lr=1.0)
        cs = [clients[i] for i in order]
        ws = [weights[i] for i in order]
        sq = [
            sum((w / 15) * (c[j] - params[j]) ** 2 for w, c in zip(ws, cs, strict=True))
            for j in range(len(x))
        ]
        server.step(cs, ws, client_sq_mean=sq, num_clients=5)
        outs.append((x, server.optimizer.state[x[0]]["conformity"]))
    for a, b in zip(outs[0][0], outs[1][0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)


def test_bad_client_input_raises():
    params = make_params()
    server = fedadapt.ServerOptimizer(params, "sgd", lr=1.0)
    with pytest.raises(ValueError):
        server.step([], [])
    with pytest.raises(ValueError):
        server.step(clients_around(params, 2, 0), [1])
    with pytest.raises(ValueError):
        server.step(clients_around(params, 2, 0), [0, 0])
    with pytest.raises(ValueError, match="unknown optimizer"):
        fedadapt.ServerOptimizer(params, "nope")


def test_signals_a_method_does_not_use_are_ignored():
    params = make_params()
    server = fedadapt.ServerOptimizer(params, "sgd", lr=1.0)
    clients = clients_around(params, 2, 0)
    sq = [torch.zeros_like(p) for p in params]
    server.step(clients, [1, 1], client_sq_mean=sq, client_sq_norms_mean=1.0, num_clients=2)
    assert server.last_info["skipped"] == 0.0
    assert fedadapt.ServerOptimizer(make_params(), "cprop").optional_signals == (
        "client_sq_mean",
        "num_clients",
    )


def test_server_optimizer_pickles_and_continues():
    import pickle

    params = make_params()
    server = fedadapt.ServerOptimizer(params, "eg", lr=1.0)
    server.step(clients_around(params, 2, 0), [1, 1])
    copy = pickle.loads(pickle.dumps(server))
    for r in range(1, 3):
        server.step(clients_around(server.params, 2, r), [1, 1])
        copy.step(clients_around(copy.params, 2, r), [1, 1])
        assert all(torch.equal(a, b) for a, b in zip(server.params, copy.params, strict=True))

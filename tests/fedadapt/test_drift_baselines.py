"""The drift literature's server baselines: Flash (``flash``) and Adaptive-FedAvg (``adaptive-fedavg``).

Hand-computed steps, the equivalences the docs claim (Flash without its drift term is FedAdam
without bias correction; Adaptive-FedAvg's server step is FedAvg), the denominator guard on the
traps of the published formula, the drift reactions, state and pickling.
"""

import io
import math
import pickle

import numpy as np
import pytest
import torch
from fedadapt_cases import grad_stream, make_params, set_grads, side_of, state_equal

import fedadapt
from fedadapt import registry
from fedadapt.adaptive_fedavg import AdaptiveFedAvg
from fedadapt.flash import Flash, flash_early_stop

TAU = 1e-9


def assert_close(actual, expected, rtol=1e-7, atol=1e-7):
    """torch.allclose with the values in the message (torch.testing's first call costs seconds)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual, expected)


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """Register the two methods for these tests when fedadapt does not (yet) do it itself, and
    remove them afterwards so that the registry's own test sees fedadapt's list."""
    added = []
    for name, cls in (("flash", Flash), ("adaptive-fedavg", AdaptiveFedAvg)):
        if name not in fedadapt.available_optimizers():
            fedadapt.register_optimizer(name, cls)
            added.append(name)
    yield
    for name in added:
        registry._REGISTRY.pop(name, None)


def flash_steps(x, deltas, **kw):
    opt = Flash([x], **kw)
    out = []
    for d in deltas:
        x.grad = -d  # the pseudo-gradient g = x - mean = -Delta
        opt.step()
        out.append(x.detach().clone())
    return opt, out


# ---------------------------------------------------------------------------------------- Flash
def test_flash_first_round_by_hand_hits_both_traps():
    """Round 1 (v_0 = 0): coordinate a has |Delta| = 0.5 > 0.101, where the published
    denominator is negative; b is small (no guard); c did not move (beta3 is 0/0). The published
    drift test (``debias_drift=False``): the default's round 1 is in test_flash_debiased_*."""
    x = torch.zeros(3, dtype=torch.float64)
    opt, (x1,) = flash_steps(
        x, [torch.tensor([0.5, 0.01, 0.0], dtype=torch.float64)], debias_drift=False
    )
    st = opt.state[x]
    # m = 0.1 Delta, v = 0.01 Delta^2, beta3 = 0 where Delta != 0, so d = Delta^2 - v = 0.99 Delta^2
    assert_close(
        st["exp_avg"], torch.tensor([0.05, 0.001, 0.0], dtype=torch.float64), rtol=1e-14, atol=0
    )
    assert_close(
        st["exp_avg_sq"], torch.tensor([0.0025, 1e-6, 0.0], dtype=torch.float64), rtol=1e-14, atol=0
    )
    assert_close(
        st["drift"], torch.tensor([0.2475, 9.9e-5, 0.0], dtype=torch.float64), rtol=1e-14, atol=0
    )
    published_a = 0.1 * 0.05 / (0.05 - 0.2475 + TAU)
    assert published_a < 0  # the published step would move a against the clients
    # a: the guard, D = 0.1 * sqrt(v) + tau = 0.005 + tau; b: D = 1e-3 - 9.9e-5 + tau; c: 0 / tau
    expected = torch.tensor(
        [0.1 * 0.05 / (0.005 + TAU), 0.1 * 0.001 / (9.01e-4 + TAU), 0.0], dtype=torch.float64
    )
    assert_close(x1, expected, rtol=1e-12, atol=0)
    assert x1[0].item() == pytest.approx(1.0, rel=1e-5) and x1[1].item() == pytest.approx(
        0.1 / 0.901, rel=1e-5
    )
    assert opt.param_groups[0]["guarded"] == pytest.approx(1 / 3)
    assert opt.param_groups[0]["step"] == 1


def _flash_scalar(deltas, lr=0.1, b1=0.9, b2=0.99, tau=TAU, rho=0.1, debias=False):
    """The guarded Flash step on one coordinate, written out in Python floats; ``debias``: the
    drift test on Adam's unbiased second moment v_t / (1 - b2^t) (the default)."""
    x = m = v = d = 0.0
    out = []
    for t, delta in enumerate(deltas, start=1):
        v_prev = v
        m = b1 * m + (1 - b1) * delta
        v = b2 * v + (1 - b2) * delta * delta
        v_hat = v / (1 - b2**t) if debias else v
        v_hat_prev = (v_prev / (1 - b2 ** (t - 1)) if t > 1 else 0.0) if debias else v_prev
        jump = delta * delta - v_hat
        den = abs(jump) + abs(v_hat_prev)
        b3 = abs(v_hat_prev) / den if den > 0 else 1.0
        d = b3 * d + (1 - b3) * jump
        x += lr * m / (max(math.sqrt(v) - d, rho * math.sqrt(v)) + tau)
        out.append(x)
    return out


def test_flash_three_rounds_match_the_equations():
    rounds = [[0.5, 0.01, 0.0], [0.5, 0.02, 0.0], [-0.2, 0.01, 0.3]]
    x = torch.zeros(3, dtype=torch.float64)
    opt, xs = flash_steps(
        x, [torch.tensor(r, dtype=torch.float64) for r in rounds], debias_drift=False
    )
    for j in range(3):
        ref = _flash_scalar([r[j] for r in rounds])
        for t in range(3):
            assert xs[t][j].item() == pytest.approx(ref[t], rel=1e-12, abs=1e-15), (t, j)
    # round 2 of coordinate a, by hand: v_1 = 0.0025, v_2 = 0.004975, beta3 = 0.0025 / 0.247525
    b3 = 0.0025 / (0.245025 + 0.0025)
    d2 = b3 * 0.2475 + (1 - b3) * 0.245025
    assert opt.state[x]["exp_avg"][0].item() == pytest.approx(
        0.9 * (0.9 * 0.05 + 0.05) + 0.1 * -0.2
    )
    assert d2 > math.sqrt(0.004975)  # still in the warm-up trap: guarded
    assert (xs[1][0] - xs[0][0]).item() == pytest.approx(
        0.1 * 0.095 / (0.1 * math.sqrt(0.004975) + TAU), rel=1e-12
    )
    # coordinate c: no 0/0 in rounds 1-2 (did not move), a first-round-like step in round 3
    assert xs[1][2].item() == 0.0 and math.isfinite(xs[2][2].item()) and xs[2][2].item() > 0


def test_flash_with_b3_forced_to_1_is_fedadam_without_bias_correction():
    rng = np.random.default_rng(0)
    deltas = [rng.normal(size=5) * s for s in (0.05, 0.5, 0.01, 1.0, 0.2, 0.3)]
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    x = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.1], dtype=torch.float64)
    ref_x = x.numpy().copy()
    opt, xs = flash_steps(
        x, [torch.from_numpy(d) for d in deltas], lr=lr, betas=(b1, b2), tau=tau, adaptive_b3=False
    )
    m = np.zeros(5)
    v = np.zeros(5)
    for d, ours in zip(deltas, xs, strict=True):
        # FedAdam, Reddi et al. Algorithm 2, v_0 = 0, no bias correction
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        ref_x = ref_x + lr * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(ours.numpy(), ref_x, rtol=1e-13, atol=1e-15)
    assert torch.count_nonzero(opt.state[x]["drift"]) == 0
    assert opt.param_groups[0]["guarded"] == 0.0


def test_flash_denominator_guard_bounds_every_step():
    """Large updates from round 1 on: the published denominator goes negative, ours stays
    >= rho sqrt(v) + tau, every step has the sign of m and at most c * lr / rho in size."""
    b1, b2, lr, rho = 0.9, 0.99, 0.1, 0.1
    c = (1 - b1) / math.sqrt((1 - b2) * (1 - b1**2 / b2))
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(200, dtype=torch.float64)
    opt = Flash([x], lr=lr, betas=(b1, b2), den_floor=rho)
    negative_published = 0
    for _ in range(20):
        delta = torch.randn(200, generator=g, dtype=torch.float64)
        before = x.clone()
        x.grad = -delta
        opt.step()
        st = opt.state[x]
        published = st["exp_avg_sq"].sqrt() - st["drift"] + TAU
        negative_published += int((published <= 0).sum())
        step = x - before
        assert torch.isfinite(x).all()
        assert (torch.sign(step) == torch.sign(st["exp_avg"])).all()
        assert (step.abs() <= c * lr / rho * (1 + 1e-9)).all()
        assert_close(
            step.abs(),
            lr
            * st["exp_avg"].abs()
            / torch.maximum(published - TAU, rho * st["exp_avg_sq"].sqrt()).add(TAU),
        )
    assert negative_published > 100  # the trap is real on this stream
    stats = opt.step_size_stats()
    assert (
        0
        < stats["step-min"]
        <= stats["step-mean"]
        <= stats["step-max"]
        <= lr / (rho * float(opt.state[x]["exp_avg_sq"].sqrt().min()))
    )


def test_flash_zero_update_at_round_one_is_not_a_nan():
    x = torch.ones(4, dtype=torch.float32)
    opt, (x1,) = flash_steps(x, [torch.zeros(4)])
    assert torch.equal(x1, torch.ones(4))
    for key in ("exp_avg", "exp_avg_sq", "drift"):
        assert torch.count_nonzero(opt.state[x][key]) == 0
    assert math.isfinite(opt.step_size_stats()["step-max"])


def test_flash_drift_raises_the_step_then_damps_it():
    """After v has warmed up (300 rounds of |Delta| ~ 0.1), a jump to 0.3 makes Flash's step
    larger than FedAdam's (d > 0); once the updates are small again d turns negative and Flash's
    step falls below FedAdam's."""
    g = torch.Generator().manual_seed(2)
    base = [0.1 * (1 + 0.1 * torch.randn(3, generator=g, dtype=torch.float64)) for _ in range(360)]
    stream = base[:300] + [torch.full((3,), 0.3, dtype=torch.float64)] * 3 + base[300:]
    x_f, x_a = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    flash, adam = Flash([x_f]), Flash([x_a], adaptive_b3=False)
    ratio, drift = [], []
    for d in stream:
        bf, ba = x_f.clone(), x_a.clone()
        x_f.grad, x_a.grad = -d, -d
        flash.step()
        adam.step()
        ratio.append(((x_f - bf).abs().mean() / (x_a - ba).abs().mean()).item())
        drift.append(flash.state[x_f]["drift"].mean().item())
    assert max(ratio[:300][-50:]) < 1.1  # stable: Flash ~ FedAdam
    assert ratio[300] > 2.0 and drift[300] > 0
    assert min(drift[303:]) < 0 and min(ratio[303:]) < 0.99


def test_flash_nonfinite_round_is_skipped_and_counted():
    x = torch.zeros(3, dtype=torch.float64)
    opt, _ = flash_steps(x, [torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)])
    before = x.clone()
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    x.grad = torch.tensor([0.1, float("nan"), 0.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(x, before)
    assert opt.param_groups[0]["skipped"] == 1 and opt.param_groups[0]["step"] == 1
    for key, val in sd["state"][0].items():
        assert torch.equal(opt.state[x][key], val)


def test_flash_on_change_restarts_m_v_d_and_the_step_counter():
    x = torch.zeros(3, dtype=torch.float64)
    opt, _ = flash_steps(x, [torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)] * 3)
    opt.on_change()
    assert opt.param_groups[0]["step"] == 0 and opt.param_groups[0]["changes"] == 1
    for key in ("exp_avg", "exp_avg_sq", "drift"):
        assert torch.count_nonzero(opt.state[x][key]) == 0
    # the next step is a first step again: the unbiased drift test sees no drift in its first
    # round (v_1 / (1 - b2) = Delta_1^2), so D = sqrt(v_1) + tau = 0.1 |Delta| + tau
    y = x.clone()
    x.grad = torch.tensor([-0.5, -0.01, 0.0], dtype=torch.float64)
    opt.step()
    assert_close(
        x - y,
        torch.tensor(
            [0.1 * 0.05 / (0.05 + TAU), 0.1 * 0.001 / (0.001 + TAU), 0.0], dtype=torch.float64
        ),
        rtol=1e-12,
        atol=0,
    )


def test_flash_through_the_server_moves_towards_the_clients():
    x = make_params(seed=4)
    ref = [p.clone() for p in x]
    server = fedadapt.ServerOptimizer(x, "flash", lr=0.1)
    g = torch.Generator().manual_seed(5)
    clients = [
        [p + 0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in x] for _ in range(3)
    ]
    weights = [1.0, 2.0, 3.0]
    server.step(clients, weights)
    opt, _ = flash_steps(
        ref[0], [sum(w * c[0] for w, c in zip(weights, clients, strict=True)) / 6 - ref[0]]
    )
    assert_close(x[0], ref[0])
    assert server.last_info["skipped"] == 0.0
    assert set(server.last_info) >= {"lr", "step-mean", "step-min", "step-max"}


def test_flash_declares_its_client_hint_and_validates_hyperparameters():
    assert fedadapt.method_spec("flash").client_hints == {"early-stop-gamma": 0.04}
    for bad in (
        {"lr": 0.0},
        {"tau": 0.0},
        {"tau": float("nan")},
        {"den_floor": 0.0},
        {"den_floor": 1.5},
        {"betas": (0.9, 1.0)},
        {"adaptive_b3": 1},
        {"eps": 1e-3},
    ):
        with pytest.raises(ValueError):
            fedadapt.build_optimizer("flash", make_params(), side="server", **bad)
    with pytest.raises(ValueError, match="tau"):
        fedadapt.build_optimizer("flash", make_params(), side="server", tau=-1.0)


def test_flash_early_stop_rule():
    gamma = 0.04
    assert flash_early_stop(math.inf, 2.0, 1, gamma) is False  # nothing to compare with
    assert flash_early_stop(1.0, 0.9, 1, gamma) is False  # fell by 0.1 >= 0.04
    assert flash_early_stop(1.0, 0.97, 1, gamma) is True  # fell by 0.03 < 0.04
    # the threshold shrinks as gamma / e: a 0.03 decrease continues at e = 2 (0.02) but stops at e = 1
    assert flash_early_stop(1.0, 0.97, 2, gamma) is False
    assert flash_early_stop(1.0, 0.99, 2, gamma) is True
    assert flash_early_stop(1.0, 1.2, 5, gamma) is True  # the loss rose
    assert flash_early_stop(1.0, float("nan"), 3, gamma) is True
    for bad in ({"epoch": 0}, {"epoch": 1.5}, {"gamma": -0.1}, {"gamma": float("inf")}):
        kw = {"previous_loss": 1.0, "loss": 0.5, "epoch": 1, "gamma": gamma, **bad}
        with pytest.raises(ValueError):
            flash_early_stop(**kw)


# ------------------------------------------------------------------------------ Adaptive-FedAvg
def clients_around(params, n, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    return [
        [p + scale * torch.randn(p.shape, generator=g, dtype=p.dtype) + 0.05 for p in params]
        for _ in range(n)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adaptive_fedavg_step_is_torch_sgd_at_lr_1_bit_for_bit(dtype):
    x = make_params(dtype=dtype)
    y = [p.clone() for p in x]
    ours = AdaptiveFedAvg(x)
    sgd = torch.optim.SGD(y, lr=1.0)
    for grads in grad_stream(x, 4):
        set_grads(x, grads)
        set_grads(y, [g.clone() for g in grads])
        ours.step()
        sgd.step()
        assert all(torch.equal(a, b) for a, b in zip(x, y, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adaptive_fedavg_through_the_server_is_the_weighted_mean(dtype):
    params = make_params(dtype=dtype)
    server = fedadapt.ServerOptimizer(params, "adaptive-fedavg")
    for r in range(3):
        clients = clients_around(params, 4, seed=r)
        weights = [3, 1, 7, 2]
        expected = [
            sum(
                (w / 13) * c[j].to(torch.float64) for w, c in zip(weights, clients, strict=True)
            ).to(dtype)
            for j in range(len(params))
        ]
        server.step(clients, weights)
        for p, e in zip(params, expected, strict=True):
            if (
                server._exact_mean()
            ):  # the server writes the float64 mean (AdaptiveFedAvg.exact_mean)
                assert torch.equal(p, e)
            else:  # x - (x - mean): one rounding of the pseudo-gradient away from the mean
                assert_close(p, e, rtol=2 * torch.finfo(dtype).eps, atol=2 * torch.finfo(dtype).eps)
        assert server.last_info["lr"] == 1.0 and server.last_info["skipped"] == 0.0


def test_adaptive_fedavg_two_rounds_by_hand():
    x = torch.zeros(2, dtype=torch.float64)
    opt = AdaptiveFedAvg([x])  # betas (0.7, 0.3, 0.7)
    assert opt.client_lr_scale == 1.0
    x.grad = -torch.tensor([0.2, 0.4], dtype=torch.float64)
    opt.step()
    # mu_0 = 0.3 w_0 = 0 -> hat = w_0 = 0; sample var = mean(w_1^2) = 0.1; var_hat = 0.07 / 0.7 = 0.1
    g0 = opt.param_groups[0]
    assert g0["prev_var_hat"] == pytest.approx(0.1, rel=1e-14)
    assert opt.client_lr_scale == pytest.approx(1.0)  # r_1 = 1, R_hat = 1, / t = 1
    # mu_1 = 0.7 * 0 + 0.3 * w_1, bias-corrected by 1 - 0.7^2 = 0.51
    assert_close(
        opt.state[x]["param_avg"], torch.tensor([0.06 / 0.51, 0.12 / 0.51], dtype=torch.float64)
    )
    x.grad = -torch.tensor([0.1, -0.1], dtype=torch.float64)
    opt.step()
    assert torch.equal(x, torch.tensor([0.2 + 0.1, 0.4 - 0.1], dtype=torch.float64))
    mu_hat = [0.06 / 0.51, 0.12 / 0.51]
    sample = ((0.3 - mu_hat[0]) ** 2 + (0.3 - mu_hat[1]) ** 2) / 2
    var = 0.3 * 0.07 + 0.7 * sample
    var_hat = var / (1 - 0.3**2)
    ratio = var_hat / 0.1
    r_avg = 0.7 * 0.3 + 0.3 * ratio
    r_hat = r_avg / (1 - 0.7**2)
    assert g0["prev_var_hat"] == pytest.approx(var_hat, rel=1e-12)
    assert g0["avg_ratio"] == pytest.approx(r_avg, rel=1e-12)
    assert opt.client_lr_scale == pytest.approx(min(1.0, r_hat / 2), rel=1e-12)
    assert opt.client_hints() == {"lr-scale": opt.client_lr_scale}
    assert opt.client_lr_scale < 1.0  # the variance fell: the clients' lr falls


def _run_jump(decay, jump=1.0):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(50, dtype=torch.float64)
    opt = AdaptiveFedAvg([x], decay=decay)
    scales = []
    for r in range(12):
        size = jump if r == 8 else 0.01
        x.grad = -size * torch.randn(50, generator=g, dtype=torch.float64)
        opt.step()
        scales.append(opt.client_lr_scale)
    return scales


def test_adaptive_fedavg_lr_scale_rises_when_the_parameter_variance_jumps():
    scales = _run_jump(decay=True)
    before, at = scales[7], scales[8]
    assert before < 0.3  # stationary: R_hat ~ 1, the scale decays as 1/t
    assert at > 3 * before and at <= 1.0
    quiet = _run_jump(decay=True, jump=0.01)
    assert quiet[8] < 0.3 and scales[8] > 3 * quiet[8]
    # decay=False: no 1/t, the scale stays near 1 on stationary data
    flat = _run_jump(decay=False, jump=0.01)
    assert min(flat[3:]) > 0.5 and max(flat) <= 1.0


def test_adaptive_fedavg_zero_variance_is_not_a_nan():
    x = torch.ones(3)
    opt = AdaptiveFedAvg([x])
    for _ in range(3):
        x.grad = torch.zeros(3)
        opt.step()
        assert opt.client_lr_scale == pytest.approx(
            1.0 / opt.param_groups[0]["step"]
        )  # r = 1 (0/0)
    x.grad = -torch.ones(3)  # after a zero variance: r = max_ratio, the scale opens fully
    opt.step()
    assert opt.client_lr_scale == 1.0
    assert torch.equal(x, torch.full((3,), 2.0))


def test_adaptive_fedavg_on_change_restarts_the_statistics():
    x = torch.zeros(4, dtype=torch.float64)
    opt = AdaptiveFedAvg([x])
    for grads in grad_stream([x], 5):
        set_grads([x], grads)
        opt.step()
    assert opt.client_lr_scale < 1.0
    opt.on_change()
    assert (
        opt.client_lr_scale == 1.0
        and opt.param_groups[0]["step"] == 0
        and opt.param_groups[0]["changes"] == 1
    )
    assert x not in opt.state
    # the next step is a first step again, from the current model
    fresh_x = x.clone()
    fresh = AdaptiveFedAvg([fresh_x])
    g = grad_stream([x], 1, seed=7)[0]
    set_grads([x], g)
    set_grads([fresh_x], [t.clone() for t in g])
    opt.step()
    fresh.step()
    assert opt.param_groups[0]["prev_var_hat"] == fresh.param_groups[0]["prev_var_hat"]
    assert torch.equal(opt.state[x]["param_avg"], fresh.state[fresh_x]["param_avg"])


def test_adaptive_fedavg_validates_hyperparameters():
    for bad in (
        {"betas": (0.7, 0.3)},
        {"betas": (0.7, 1.0, 0.7)},
        {"decay": "yes"},
        {"max_ratio": 1.0},
        {"lr": 0.5},
    ):
        with pytest.raises(ValueError):
            fedadapt.build_optimizer("adaptive-fedavg", make_params(), side="server", **bad)


def test_adaptive_fedavg_nonfinite_round_is_skipped():
    x = torch.zeros(3, dtype=torch.float64)
    opt = AdaptiveFedAvg([x])
    x.grad = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    opt.step()
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    before = x.clone()
    x.grad = torch.tensor([0.1, float("inf"), 0.3], dtype=torch.float64)
    opt.step()
    assert torch.equal(x, before)
    after = opt.state_dict()
    assert after["param_groups"][0]["skipped"] == 1
    after["param_groups"][0]["skipped"] = 0
    assert after["param_groups"] == sd["param_groups"]


# ------------------------------------------------------------------------------------ both: state
CASES = [
    ("flash", {}),
    ("flash", {"adaptive_b3": False, "den_floor": 0.5}),
    ("adaptive-fedavg", {}),
    ("adaptive-fedavg", {"decay": False}),
]


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_state_dict_resume_continues_the_identical_trajectory(name, kw):
    params = make_params()
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    grads = [[0.3 * g for g in gs] for gs in grad_stream(params, 8)]
    for gs in grads[:4]:
        set_grads(params, gs)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    params2 = [p.clone() for p in params]
    opt2 = fedadapt.build_optimizer(name, params2, side=side_of(name), **kw)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for gs in grads[4:]:
        set_grads(params, gs)
        set_grads(params2, [g.clone() for g in gs])
        opt.step()
        opt2.step()
        assert all(torch.equal(a, b) for a, b in zip(params, params2, strict=True))
    state_equal(opt, opt2)
    if name == "adaptive-fedavg":
        assert opt.client_hints() == opt2.client_hints()


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_pickle_round_trip_continues_identically(name, kw):
    params = make_params()
    opt = fedadapt.build_optimizer(name, params, side=side_of(name), **kw)
    grads = [[0.3 * g for g in gs] for gs in grad_stream(params, 6)]
    for gs in grads[:3]:
        set_grads(params, gs)
        opt.step()
    params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    state_equal(opt, opt2)
    for gs in grads[3:]:
        set_grads(params, gs)
        set_grads(params2, [g.clone() for g in gs])
        opt.step()
        opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(params, params2, strict=True))
    state_equal(opt, opt2)
    stats = fedadapt.step_size_stats(opt2)
    assert set(stats) == {"lr", "step-mean", "step-min", "step-max"}
    assert all(math.isfinite(v) and v > 0 for v in stats.values())


def test_the_server_forwards_both_methods_client_hints():
    """What the strategy sends to the clients: ``ServerOptimizer.client_hints()``."""
    x = make_params(seed=6)
    flash = fedadapt.ServerOptimizer(x, "flash", detector=False)
    assert flash.client_hints()["early-stop-gamma"] == 0.04
    y = make_params(seed=6)
    afa = fedadapt.ServerOptimizer(y, "adaptive-fedavg", detector=False)
    assert afa.client_hints()["lr-scale"] == 1.0
    for r in range(4):
        afa.step(clients_around(y, 3, seed=20 + r, scale=0.01), [1, 1, 1])
    assert afa.client_hints()["lr-scale"] == afa.optimizer.client_lr_scale < 1.0

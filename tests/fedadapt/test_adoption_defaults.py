"""The defaults a standard Flower app gets when it adopts a server method with one line
(issue 20 "Done when", RESULTS.md §11): server ``adam`` at FedAdam's eta, Flash's drift test on
an unbiased second moment, FedHyper-G's scale-free hypergradient.

Each default was unsafe before: Adam at lr 1 moved every coordinate by about 1 in its first
step; Flash signalled "drift" in every warm-up round (v biased towards 0) and took up to 10x
FedAdam's step; FedHyper-G's raw inner product of the updates drove its lr from bound to bound
when the updates were large. The published forms stay reachable (``debias_drift=False``,
``hypergradient="raw"``) and are tested in test_drift_baselines.py / test_optim_hand_computed.py.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from test_drift_baselines import _flash_scalar

import fedadapt
from fedadapt.flash import Flash

TAU = 1e-9


# ------------------------------------------------------------------------------------- adam
def test_server_adam_defaults_to_flower_fedadams_eta_and_clients_keep_torchs():
    from flwr.serverapp.strategy import FedAdam

    eta = inspect.signature(FedAdam.__init__).parameters["eta"].default
    assert fedadapt.default_server_lr("adam") == eta == 0.1
    assert fedadapt.method_spec("adam").client_lr == 1e-3  # torch's, unchanged on a client
    from strategies import FedAdapt

    # the one-line adoption: FedAdapt(server_optimizer="adam") steps at the spec's lr
    assert FedAdapt(server_optimizer="adam").server_options["lr"] == pytest.approx(0.1)
    x = [torch.zeros(3)]
    server = fedadapt.ServerOptimizer(x, "adam", lr=fedadapt.default_server_lr("adam"))
    # Adam's first step is lr * sign(Delta) in size: 0.1, not 1, per coordinate
    server.step_from_mean([torch.tensor([2.0, -0.5, 0.01])])
    assert torch.allclose(x[0], torch.tensor([0.1, -0.1, 0.1]), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------ flash
def _steps(deltas, **kw):
    x = torch.zeros(len(deltas[0]), dtype=torch.float64)
    opt = Flash([x], **kw)
    out = []
    for d in deltas:
        x.grad = -torch.tensor(d, dtype=torch.float64)
        opt.step()
        out.append(x.clone())
    return opt, x, out


def test_flash_default_first_round_sees_no_drift_and_is_fedadams_step():
    """v_1 / (1 - b2) = Delta_1^2: the unbiased drift test finds no jump in round 1, so d = 0,
    the guard is idle and the step is lr m / (sqrt(v) + tau) = lr Delta / (|Delta| + 10 tau)."""
    opt, x, _ = _steps([[0.5, 0.01, 0.0]])
    st = opt.state[x]
    assert torch.count_nonzero(st["drift"].abs() > 1e-15) == 0
    assert opt.param_groups[0]["guarded"] == 0.0
    expected = torch.tensor(
        [0.1 * 0.05 / (0.05 + TAU), 0.1 * 0.001 / (0.001 + TAU), 0.0], dtype=torch.float64
    )
    assert torch.allclose(x, expected, rtol=1e-9, atol=0)
    # published: coordinate a takes ten times that step (the guard's 1/rho)
    _, xp, _ = _steps([[0.5, 0.01, 0.0]], debias_drift=False)
    assert xp[0].item() == pytest.approx(10 * x[0].item(), rel=1e-6)


def test_flash_default_three_rounds_match_the_equations():
    rounds = [[0.5, 0.01, 0.0], [0.5, 0.02, 0.0], [-0.2, 0.01, 0.3]]
    _, _, xs = _steps(rounds)
    for j in range(3):
        ref = _flash_scalar([r[j] for r in rounds], debias=True)
        for t in range(3):
            assert xs[t][j].item() == pytest.approx(ref[t], rel=1e-12, abs=1e-15), (t, j)
    # round 2 of coordinate a by hand: v_hat_1 = 0.25, v_2 = 0.004975, v_hat_2 = 0.25 (same
    # Delta twice): no jump, b3 = 1, d stays 0 -> FedAdam's step without bias correction
    m2 = 0.9 * 0.05 + 0.1 * 0.5
    assert (xs[1][0] - xs[0][0]).item() == pytest.approx(
        0.1 * m2 / (math.sqrt(0.004975) + TAU), rel=1e-9
    )


def test_flash_default_does_not_amplify_stationary_warm_up_like_the_published_test():
    """i.i.d. updates of scale 0.1 (no drift): the published test takes 3x+ FedAdam's step in
    rounds 1-2; the unbiased test stays within 2.5x over 20 rounds (docs/DRIFT.md §5 table)."""
    g = torch.Generator().manual_seed(0)
    stream = [0.1 * torch.randn(2000, generator=g, dtype=torch.float64) for _ in range(20)]

    def ratios(**kw):
        x, y = torch.zeros(2000, dtype=torch.float64), torch.zeros(2000, dtype=torch.float64)
        f, a = Flash([x], **kw), Flash([y], adaptive_b3=False)
        out = []
        for d in stream:
            bx, by = x.clone(), y.clone()
            x.grad, y.grad = -d, -d.clone()
            f.step()
            a.step()
            out.append(float((x - bx).abs().mean() / (y - by).abs().mean()))
        return out

    default, published = ratios(), ratios(debias_drift=False)
    assert min(published[:2]) > 3.0
    assert default[0] == pytest.approx(1.0) and max(default) < 2.5


def test_flash_guard_still_bounds_the_default():
    """The denominator never falls below rho sqrt(v) + tau, whatever the stream."""
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(500, dtype=torch.float64)
    opt = Flash([x])
    for t in range(30):
        scale = 5.0 if t in (10, 11, 20) else 0.3
        x.grad = -scale * torch.randn(500, generator=g, dtype=torch.float64)
        opt.step()
        st = opt.state[x]
        den, _ = Flash._denominator(st["exp_avg_sq"], st["drift"], 0.1, TAU)
        assert (den >= 0.1 * st["exp_avg_sq"].sqrt() + TAU * (1 - 1e-12)).all()


def test_flash_debias_drift_is_validated():
    with pytest.raises(ValueError, match="debias_drift"):
        Flash([torch.zeros(2)], debias_drift=1)


# ------------------------------------------------------------------------------- fedhyper-g
G = [[1.0, -1.0], [2.0, 0.5], [0.5, 1.0]]


def _fedhyper_g(grads, scale=1.0, **kw):
    p = torch.tensor([1.0, 2.0], dtype=torch.float64)
    opt = fedadapt.build_optimizer("fedhyper-g", [p], side="server", **kw)
    lrs = []
    for g in grads:
        p.grad = scale * torch.tensor(g, dtype=torch.float64)
        opt.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    return lrs, p


def test_fedhyper_g_default_hypergradient_is_the_cosine_by_hand():
    """eta_t = clip(eta_{t-1} + lr0 * beta * cos(g_t, g_{t-1}), 0.2 lr0, 5 lr0)."""
    lrs, _ = _fedhyper_g(G, lr=1.0)
    cos2 = (2.0 - 0.5) / (math.sqrt(2.0) * math.sqrt(4.25))
    cos3 = (1.0 + 0.5) / (math.sqrt(4.25) * math.sqrt(1.25))
    assert lrs == pytest.approx([1.0, 1.0 + cos2, 1.0 + cos2 + cos3], rel=1e-12)
    lrs, _ = _fedhyper_g(G, lr=0.5, hyper_lr=0.5)  # scaled by lr0 * beta
    assert lrs == pytest.approx([0.5, 0.5 + 0.25 * cos2, 0.5 + 0.25 * (cos2 + cos3)], rel=1e-12)
    lrs, _ = _fedhyper_g([[1.0, 0.0], [-3.0, 0.0]] * 2, lr=1.0)
    assert lrs[1] == pytest.approx(0.2)  # cos = -1: 1 - 1 clipped at the floor
    lrs, _ = _fedhyper_g([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]], lr=1.0)
    assert lrs == [1.0, 1.0, 1.0]  # a zero update: cosine 0, no change
    with pytest.raises(ValueError, match="hypergradient"):
        fedadapt.build_optimizer(
            "fedhyper-g", [torch.zeros(2)], side="server", hypergradient="sign"
        )


def test_fedhyper_g_default_does_not_depend_on_the_update_scale_and_raw_does():
    small, _ = _fedhyper_g(G * 3, lr=1.0)
    large, _ = _fedhyper_g(G * 3, scale=100.0, lr=1.0)
    assert small == pytest.approx(large, rel=1e-12)
    raw_small, _ = _fedhyper_g(G * 3, lr=1.0, hypergradient="raw")
    raw_large, _ = _fedhyper_g(G * 3, scale=100.0, lr=1.0, hypergradient="raw")
    assert raw_small != pytest.approx(raw_large)


def _quadratic(scale, rounds=30, **kw):
    """Clients that move 30% of the way to the optimum x* = 0 from x_t: Delta_t = -0.3 x_t,
    the pseudo-gradient g_t = 0.3 x_t; x_0 of norm ``scale``."""
    x = torch.tensor([0.6, -0.8], dtype=torch.float64) * scale
    opt = fedadapt.build_optimizer("fedhyper-g", [x], side="server", lr=1.0, **kw)
    lrs, norms = [], []
    for _ in range(rounds):
        x.grad = 0.3 * x.detach().clone()
        opt.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
        norms.append(float(x.norm()) / scale)
    return lrs, norms


def test_fedhyper_g_default_converges_on_a_quadratic_at_100x_the_update_scale():
    """At scale 100 the raw rule's inner products are ~1e3: its lr jumps from one bound to the
    other (0.2 <-> 5) round after round; the cosine's lr is the same at every scale, never
    falls to the floor, and the iterate shrinks 1000-fold."""
    lrs1, n1 = _quadratic(1.0)
    lrs100, n100 = _quadratic(100.0)
    assert lrs1 == pytest.approx(lrs100, rel=1e-9)
    assert (
        min(lrs100) > 0.2 and max(lrs100) < 5.0
    )  # it settles between 3 and 4, never bound to bound
    assert n100[-1] < 1e-3 and max(n100) <= 1.0
    raw, raw_n = _quadratic(100.0, hypergradient="raw")
    floor_hits = sum(1 for a in raw if a == pytest.approx(0.2))
    ceiling_hits = sum(1 for a in raw if a == pytest.approx(5.0))
    assert floor_hits >= 3 and ceiling_hits >= 4
    swings = sum(
        1 for a, b in zip(raw, raw[1:], strict=False) if {round(a, 6), round(b, 6)} == {0.2, 5.0}
    )
    assert swings >= 6  # bound to bound in consecutive rounds (until x is small)

"""The change detector, cp-adam and ServerOptimizer's reaction to a change."""

import io
import math
import pickle

import numpy as np
import pytest
import torch

import fedadapt
from fedadapt import ChangeDetector, ServerOptimizer


def noisy_losses(rng, level, n=10, noise=0.25):
    """A cohort's round-start losses: heterogeneous clients around ``level``."""
    return list(level * np.exp(rng.normal(0.0, noise, size=n)))


def test_detector_fires_at_a_step_change_and_only_there():
    rng = np.random.default_rng(0)
    det = ChangeDetector()
    fired = []
    for t in range(1, 41):
        level = 0.7 if t < 20 else 2.1  # a label permutation triples the round-start loss
        if det.update({"start-loss": noisy_losses(rng, level)}):
            fired.append(t)
    assert fired == [20]
    assert det.alarms == [20]


def test_detector_fires_at_every_switch_of_a_recurring_drift():
    # each switch triples the loss, which then falls back as the federation relearns; the
    # steep fall must not widen the band the next switch is measured against
    rng = np.random.default_rng(2)
    det = ChangeDetector()
    fired = []
    for t in range(1, 56):
        since = (t - 15) % 10 if t >= 15 else t + 10
        level = 0.5 + 8.0 * math.exp(-since / 2.5) if t >= 15 else 0.5 + 2.0 * math.exp(-t / 3)
        if det.update({"start-loss": noisy_losses(rng, level)}):
            fired.append(t)
    assert fired == [15, 25, 35, 45, 55]


@pytest.mark.parametrize("seed", range(20))
def test_detector_stays_quiet_on_a_noisy_stationary_series(seed):
    rng = np.random.default_rng(seed)
    det = ChangeDetector()
    for _ in range(60):
        assert not det.update({"start-loss": noisy_losses(rng, 0.8, noise=0.4)})


@pytest.mark.parametrize("seed", range(10))
def test_detector_ignores_falling_loss_of_early_training(seed):
    rng = np.random.default_rng(seed)
    det = ChangeDetector()
    for t in range(40):
        level = 2.3 * math.exp(-t / 6) + 0.2  # steep at first, then flat
        assert not det.update({"start-loss": noisy_losses(rng, level)})


def test_one_outlier_client_cannot_fire_it():
    rng = np.random.default_rng(1)
    det = ChangeDetector()
    for t in range(30):
        losses = noisy_losses(rng, 0.6, noise=0.1)
        if t == 20:
            losses[0] = 500.0  # one client's garbage: the mean jumps, the cohort does not
        assert not det.update({"start-loss": losses})


def test_warmup_and_non_alarming_channels():
    det = ChangeDetector(warmup=3)
    # a jump inside the warm-up only builds the reference
    assert not det.update({"start-loss": 1.0})
    assert not det.update({"start-loss": 10.0})
    # a tracked channel is reported but never alarms
    det2 = ChangeDetector()
    peak = 0.0
    for x in [1.0] * 5 + [50.0] * 3:
        assert not det2.update({"update-norm": x})
        peak = max(peak, det2.last_info["update-norm-cusum"])
    assert peak > det2.threshold


def test_detector_ignores_non_finite_and_non_positive_values():
    det = ChangeDetector()
    for _ in range(10):
        assert not det.update({"start-loss": [0.5, math.nan, -1.0, math.inf, 0.5]})
    assert det.last_info["start-loss"] == pytest.approx(0.5)  # geometric mean of the usable values


def test_detector_state_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    series = [noisy_losses(rng, 0.7 if t < 15 else 2.0) for t in range(30)]
    a = ChangeDetector()
    for s in series[:10]:
        a.update({"start-loss": s})
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ChangeDetector()
    b.load_state_dict(torch.load(buf, weights_only=True))
    for s in series[10:]:
        assert a.update({"start-loss": s}) == b.update({"start-loss": s})
        assert a.last_info == b.last_info
    assert a.alarms == b.alarms == [16]  # series[15] is the 16th round


@pytest.mark.parametrize(
    "bad",
    [
        {"warmup": 0},
        {"threshold": 0.0},
        {"agreement": 1.5},
        {"smoothing": 0.0},
        {"min_std": 0.0},
        {"channels": ()},
    ],
)
def test_detector_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        ChangeDetector(**bad)


# --------------------------------------------------------------------------- cp-adam


def adam_reference(g_seq, lr=0.1, b1=0.9, b2=0.99, eps=1e-8, x0=0.0):
    x, m, v = x0, 0.0, 0.0
    xs = []
    for s, g in enumerate(g_seq, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1**s)) / (math.sqrt(v / (1 - b2**s)) + eps)
        xs.append(x)
    return xs


def flower_fedadam_reference(g_seq, eta=0.1, b1=0.9, b2=0.99, tau=1e-3, x0=0.0):
    """Flower 1.41's FedAdam on one coordinate, written out (delta = -g)."""
    x, m, v = x0, 0.0, 0.0
    xs = []
    for t, g in enumerate(g_seq, start=1):
        delta = -g
        m = b1 * m + (1 - b1) * delta
        v = b2 * v + (1 - b2) * delta * delta
        eta_norm = eta * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
        x = x + eta_norm * m / (math.sqrt(v) + tau)
        xs.append(x)
    return xs


def test_cp_adam_with_fedadams_floor_is_flowers_fedadam_by_hand():
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("cp-adam", [p], side="server", eps=1e-3, eps_rel=0.0)
    gs = [0.5, -0.2, 0.3, 0.01]  # tau = 1e-3: Flower 1.41's FedAdam default
    for g, expected in zip(gs, flower_fedadam_reference(gs), strict=True):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert float(p.detach()) == pytest.approx(expected, rel=1e-12)


def test_the_relative_floor_makes_cp_adam_steps_independent_of_the_update_scale():
    """With the floor relative (eps_rel 1 of each tensor's RMS, eps negligible), clients whose
    lr is 10x smaller, sending 10x smaller updates, move the server by the same steps."""
    torch.manual_seed(0)
    gs = [torch.randn(5, dtype=torch.float64) for _ in range(6)]
    paths = []
    for scale in (1.0, 0.1, 0.001):
        p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
        opt = fedadapt.build_optimizer("cp-adam", [p], side="server", eps=1e-8, eps_rel=1.0)
        for g in gs:
            p.grad = g * scale
            opt.step()
        paths.append(p.detach().clone())
    torch.testing.assert_close(paths[1], paths[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(paths[2], paths[0], rtol=1e-4, atol=0)  # eps 1e-8 is felt here
    # the default, Flower's constant tau, does not have this property
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    tau = fedadapt.build_optimizer("cp-adam", [p], side="server")
    for g in gs:
        p.grad = g * 0.001
        tau.step()
    assert float(p.detach().abs().sum()) < 0.5 * float(paths[0].abs().sum())


def test_cp_adam_with_adams_bias_correction_by_hand():
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer(
        "cp-adam", [p], side="server", bias_correction="adam", eps=1e-8, eps_rel=0.0
    )
    gs = [0.5, -0.2, 0.3]
    for g, expected in zip(gs, adam_reference(gs), strict=True):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert float(p.detach()) == pytest.approx(expected, rel=1e-12)


def test_cp_adam_relative_floor_damps_coordinates_tiny_next_to_their_tensor():
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    plain = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("cp-adam", [p], side="server", eps=1e-12, eps_rel=0.5)
    ref = fedadapt.build_optimizer("cp-adam", [plain], side="server", eps=1e-12, eps_rel=0.0)
    g = torch.tensor([1.0, 1e-4], dtype=torch.float64)
    p.grad, plain.grad = g.clone(), g.clone()
    opt.step()
    ref.step()
    # without the floor both coordinates move by the same sign step; with it the tiny one barely
    assert float(plain[1].detach()) == pytest.approx(float(plain[0].detach()), rel=1e-3)
    assert abs(float(p[1])) < 1e-3 * abs(float(p[0]))


def test_cp_adam_first_moment_reset_keeps_the_second_moment():
    torch.manual_seed(1)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("cp-adam", [p], side="server", reset="first-moment")
    for _ in range(4):
        p.grad = torch.randn(3, dtype=torch.float64)
        opt.step()
    v = opt.state[p]["exp_avg_sq"].clone()
    opt.on_change()
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(opt.state[p]["exp_avg_sq"], v)
    g = opt.param_groups[0]
    assert (g["step"], g["m_step"]) == (4, 0)
    none = fedadapt.build_optimizer(
        "cp-adam", [torch.zeros(1, requires_grad=True)], side="server", reset="none"
    )
    none.on_change()
    assert none.param_groups[0]["changes"] == 1 and none.param_groups[0]["step"] == 0


def test_cp_adam_full_reset_restarts_like_a_fresh_adam():
    torch.manual_seed(0)
    gs = [torch.randn(5, dtype=torch.float64) for _ in range(8)]
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("cp-adam", [p], side="server", reset="all")
    for g in gs[:4]:
        p.grad = g.clone()
        opt.step()
    opt.on_change()
    start = p.detach().clone()
    q = start.clone().requires_grad_(True)
    fresh = fedadapt.build_optimizer("cp-adam", [q], side="server", reset="all")
    for g in gs[4:]:
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        fresh.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15)
    assert opt.param_groups[0]["changes"] == 1


def test_cp_adam_scale_adaptation_shrinks_on_oscillation_and_stays_bounded():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer("cp-adam", [p], side="server", lr=0.1, scale_rate=0.5)
    for t in range(200):
        p.grad = torch.full((3,), 1.0 if t % 2 else -1.0, dtype=torch.float64)  # cos = -1
        opt.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 100)
    opt.on_change()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # re-opened


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0.0},
        {"eps": 0.0},
        {"betas": (1.0, 0.9)},
        {"scale_rate": -1.0},
        {"min_lr": 1.0},
        {"bias_correction": "none"},
        {"local_work": 0.5},
        {"plastic_rounds": -1},
        {"eps_rel": -0.1},
    ],
)
def test_cp_adam_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        fedadapt.build_optimizer(
            "cp-adam", [torch.zeros(1, requires_grad=True)], side="server", **bad
        )


def test_cp_adam_pickles_and_resumes():
    p = torch.zeros(4, requires_grad=True)
    opt = fedadapt.build_optimizer("cp-adam", [p], side="server", scale_rate=0.2)
    for t in range(3):
        p.grad = torch.ones(4) * (t + 1)
        opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    q = clone.param_groups[0]["params"][0]
    for t in range(3):
        p.grad = torch.ones(4) * (-t)
        q.grad = torch.ones(4) * (-t)
        opt.step()
        clone.step()
    assert torch.equal(p, q)


# ------------------------------------------------------------------ ServerOptimizer and changes


def federation_round(params, rng, shift):
    """Clients that move the model toward a target; ``shift`` moves the target (a change)."""
    target = 1.0 if not shift else -3.0
    clients = [
        [p + 0.1 * (target - p) + 0.01 * torch.tensor(rng.normal(size=p.shape)) for p in params]
        for _ in range(6)
    ]
    losses = [
        float(abs(target - float(params[0].mean())) + 0.3) * math.exp(rng.normal(0, 0.1))
        for _ in range(6)
    ]
    return clients, losses


def test_server_detects_a_change_and_resets_before_the_step():
    rng = np.random.default_rng(0)
    params = [torch.zeros(3, dtype=torch.float64)]
    server = ServerOptimizer(params, "cp-adam", lr=0.1)
    assert server.detector is not None  # the method declares it
    changes = []
    for r in range(1, 31):
        clients, losses = federation_round(params, rng, shift=r >= 20)
        server.step(clients, [1.0] * 6, client_start_losses=losses, client_start_weights=[1.0] * 6)
        if server.last_info["change"]:
            changes.append(r)
            assert (
                server.optimizer.param_groups[0]["m_step"] == 1
            )  # m restarted, then this round's step
        assert "detector-start-loss-cusum" in server.last_info
    assert changes == [20]


def test_oracle_change_rounds_reset_any_optimizer_state():
    params = [torch.zeros(2, dtype=torch.float64)]
    server = ServerOptimizer(params, "adam", lr=0.1, change_rounds=[3])
    assert server.detector is None
    for r in range(1, 5):
        server.step_from_pseudo_gradient([torch.ones(2, dtype=torch.float64)])
        st = server.optimizer.state[params[0]]
        assert float(st["step"]) == (r if r < 3 else r - 2)
        assert server.last_info["change"] == float(r == 3)


def test_reset_reopens_a_shrunk_scalar_lr():
    params = [torch.zeros(2, dtype=torch.float64)]
    server = ServerOptimizer(params, "hd-mult", lr=1.0)
    server.optimizer.param_groups[0]["lr"] = 0.01
    server.notify_change()
    assert float(server.optimizer.param_groups[0]["lr"]) == 1.0


def test_detector_state_travels_in_the_server_state_dict():
    rng = np.random.default_rng(5)
    a = ServerOptimizer([torch.zeros(3, dtype=torch.float64)], "cp-adam")
    rounds = [federation_round(a.params, rng, shift=r >= 12) for r in range(1, 20)]
    for clients, losses in rounds[:8]:
        a.step(clients, [1.0] * 6, client_start_losses=losses)
    b = ServerOptimizer([a.params[0].clone()], "cp-adam")
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for clients, losses in rounds[8:]:
        a.step(clients, [1.0] * 6, client_start_losses=losses)
        b.step(clients, [1.0] * 6, client_start_losses=losses)
        assert torch.equal(a.params[0], b.params[0])
        assert a.last_info == b.last_info


def test_server_without_losses_still_steps_and_reports_the_update_norm():
    server = ServerOptimizer([torch.zeros(2)], "cp-adam")
    server.step_from_pseudo_gradient([torch.ones(2)])
    assert server.last_info["change"] == 0.0
    assert server.last_info["detector-update-norm"] == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="detector"):
        ServerOptimizer([torch.zeros(2)], "sgd", detector="yes")

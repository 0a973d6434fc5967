"""Two or three steps per method on 2-element tensors, against the equations worked out by hand."""

import math

import pytest
import torch
from fedadapt_cases import side_of

import fedadapt

G = [[1.0, -1.0], [2.0, 0.5], [0.5, 1.0]]


def run(name, grads, x0=(1.0, 2.0), signals=None, **kw):
    p = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer(name, [p], side=side_of(name), **kw)
    out = []
    for i, g in enumerate(grads):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step(**(signals[i] if signals else {}))
        out.append((p.detach().clone(), float(opt.param_groups[0]["lr"])))
    return out, opt, p


def close(t, values, tol=1e-12):
    torch.testing.assert_close(t, torch.tensor(values, dtype=torch.float64), rtol=tol, atol=tol)


def test_hd_sgd_three_steps():
    out, _, _ = run("hd", G, lr=0.1, hyper_lr=0.01)
    # a1 = 0.1; a2 = 0.1 + 0.01 * <g2, g1> = 0.1 + 0.01 * 1.5; a3 = a2 + 0.01 * <g3, g2> = a2 + 0.015
    assert out[0][1] == pytest.approx(0.1)
    assert out[1][1] == pytest.approx(0.115)
    assert out[2][1] == pytest.approx(0.13)
    close(out[0][0], [0.9, 2.1])
    close(out[1][0], [0.9 - 0.115 * 2.0, 2.1 - 0.115 * 0.5])
    close(out[2][0], [0.67 - 0.13 * 0.5, 2.0425 - 0.13 * 1.0])


def test_hd_momentum_uses_the_buffer_as_direction():
    out, _, _ = run("hd", G[:2], lr=0.1, hyper_lr=0.01, momentum=0.5)
    # step 1: buf = g1, x1 = x0 - 0.1 g1; step 2: a2 = 0.1 + 0.01 <g2, buf1> = 0.115, buf2 = 0.5 g1 + g2
    assert out[1][1] == pytest.approx(0.115)
    buf2 = [0.5 * 1.0 + 2.0, 0.5 * -1.0 + 0.5]
    close(out[1][0], [0.9 - 0.115 * buf2[0], 2.1 - 0.115 * buf2[1]])


def test_hd_adam_two_steps():
    b1, b2, eps, lr, beta = 0.9, 0.999, 1e-8, 0.1, 0.01
    out, _, _ = run("hd", G[:2], lr=lr, hyper_lr=beta, base="adam")
    m = [(1 - b1) * g for g in G[0]]
    v = [(1 - b2) * g * g for g in G[0]]
    d1 = [(mi / (1 - b1)) / (math.sqrt(vi / (1 - b2)) + eps) for mi, vi in zip(m, v, strict=False)]
    x1 = [1.0 - lr * d1[0], 2.0 - lr * d1[1]]
    close(out[0][0], x1)
    a2 = lr + beta * sum(g * d for g, d in zip(G[1], d1, strict=False))
    assert out[1][1] == pytest.approx(a2, rel=1e-12)
    m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, G[1], strict=False)]
    v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, G[1], strict=False)]
    d2 = [
        (mi / (1 - b1**2)) / (math.sqrt(vi / (1 - b2**2)) + eps)
        for mi, vi in zip(m, v, strict=False)
    ]
    close(out[1][0], [x1[0] - a2 * d2[0], x1[1] - a2 * d2[1]])


def test_hd_mult_three_steps():
    out, _, _ = run("hd-mult", G, lr=0.1, hyper_lr=0.5)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=False)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    a2 = 0.1 * (1 + 0.5 * cos(G[1], G[0]))
    a3 = a2 * (1 + 0.5 * cos(G[2], G[1]))
    assert out[1][1] == pytest.approx(a2, rel=1e-12)
    assert out[2][1] == pytest.approx(a3, rel=1e-12)
    x2 = [0.9 - a2 * 2.0, 2.1 - a2 * 0.5]
    close(out[2][0], [x2[0] - a3 * 0.5, x2[1] - a3 * 1.0])


def test_dsa_two_steps_against_the_reconstruction_equations():
    lr, rho, bp, bt, bg = 0.1, 0.5, 0.1, 0.2, 0.3
    out, opt, p = run(
        "dsa",
        G[:2],
        lr=lr,
        hyper_beta=rho,
        param_hyper_lr=bp,
        tensor_hyper_lr=bt,
        global_hyper_lr=bg,
    )
    close(out[0][0], [0.9, 2.1])  # nothing adapts at the first step
    h = [G[1][0] * G[0][0], G[1][1] * G[0][1]]  # g2 * d1 = [2, -0.5]
    hbar = [(1 - rho) * x for x in h]
    rms = math.sqrt(sum(x * x for x in hbar) / 2)
    a_param = [1.0 + bp * max(-1.0, min(1.0, x / rms)) for x in hbar]
    a_tensor = math.exp(bt * (sum(hbar) / 2) / rms)
    a_global = math.exp(bg * sum(hbar) / math.sqrt(2 * sum(x * x for x in hbar)))
    lr2 = lr * a_global
    assert out[1][1] == pytest.approx(lr2, rel=1e-12)
    close(
        out[1][0],
        [0.9 - lr2 * a_tensor * a_param[0] * 2.0, 2.1 - lr2 * a_tensor * a_param[1] * 0.5],
    )
    stats = fedadapt.step_size_stats(opt)
    assert stats["step-max"] == pytest.approx(lr2 * a_tensor * max(a_param), rel=1e-12)
    assert stats["step-min"] == pytest.approx(lr2 * a_tensor * min(a_param), rel=1e-12)


def test_autodrop_drops_when_the_angle_saturates():
    g = [[1.0, 0.0]] * 4
    out, opt, _ = run("autodrop", g, lr=0.1, window=1, threshold=0.5, patience=0, drop_factor=0.2)
    # displacements s1, s2, s3 are all along e1: omega_2 = omega_3 = 0 -> saturation at step 3 -> drop
    lrs = [o[1] for o in out]
    assert lrs == pytest.approx([0.1, 0.1, 0.02, 0.02])
    close(out[3][0], [1.0 - 0.3 - 0.02, 2.0])
    assert opt.param_groups[0]["drops"] == 1
    assert opt.param_groups[0]["threshold"] == pytest.approx(2.0)  # min(0.5 / 0.2, max_threshold=2)


def test_cprop_two_steps():
    beta, c, lr, eps = 0.5, 1.0, 0.1, 1e-8
    out, opt, _ = run("cprop", G[:2], lr=lr, conformity_beta=beta, overconfidence=c, cdf="normal")
    close(out[0][0], [0.9, 2.1])  # s_1 = min(1, c) = 1
    m = [beta * (1 - beta) * a + (1 - beta) * b for a, b in zip(G[0], G[1], strict=False)]
    v = [beta * (1 - beta) * a * a + (1 - beta) * b * b for a, b in zip(G[0], G[1], strict=False)]
    b2 = 1 - beta**2
    n = b2 / (1 - beta)
    s = []
    for mi, vi in zip(m, v, strict=False):
        mh, vh = mi / b2, vi / b2
        se = max(math.sqrt(max(vh - mh * mh, 0.0) / (n - 1 + eps)), eps)
        phi = 0.5 * (1 + math.erf((-mh / se) / math.sqrt(2)))
        s.append(min(1.0, 2 * c * abs(phi - 0.5)))
    close(out[1][0], [0.9 - lr * s[0] * 2.0, 2.1 - lr * s[1] * 0.5], tol=1e-10)
    close(opt.state[opt.param_groups[0]["params"][0]]["conformity"], s, tol=1e-10)


def test_cprop_bft_cdf_matches_the_logistic_fit():
    beta, c = 0.5, 1.0
    out, opt, _ = run("cprop", G[:2], lr=0.1, conformity_beta=beta, overconfidence=c, cdf="bft")
    m = [beta * (1 - beta) * a + (1 - beta) * b for a, b in zip(G[0], G[1], strict=False)]
    v = [beta * (1 - beta) * a * a + (1 - beta) * b * b for a, b in zip(G[0], G[1], strict=False)]
    b2 = 1 - beta**2
    n = b2 / (1 - beta)
    s = []
    for mi, vi in zip(m, v, strict=False):
        mh, vh = mi / b2, vi / b2
        se = max(math.sqrt(max(vh - mh * mh, 0.0) / (n - 1 + 1e-8)), 1e-8)
        z = -mh / se
        phi = 1 / (1 + math.exp(-0.07056 * z**3 - 1.5976 * z))
        s.append(min(1.0, 2 * c * abs(phi - 0.5)))
    close(opt.state[opt.param_groups[0]["params"][0]]["conformity"], s, tol=1e-10)


def test_eg_three_steps():
    lr, es, ep, beta = 0.1, 0.5, 0.1, 0.5
    out, opt, p = run("eg", G, lr=lr, scale_lr=es, gain_lr=ep, grad_beta=beta)
    close(out[0][0], [0.9, 2.1])
    gbar1 = [(1 - beta) * g for g in G[0]]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=False)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    lr2 = lr * math.exp(es * cos(G[1], gbar1))
    gain2 = [
        math.exp(ep * math.copysign(1, a * b)) for a, b in zip(G[1], gbar1, strict=False)
    ]  # [e^0.1, e^-0.1]
    assert out[1][1] == pytest.approx(lr2, rel=1e-12)
    x2 = [0.9 - lr2 * gain2[0] * 2.0, 2.1 - lr2 * gain2[1] * 0.5]
    close(out[1][0], x2)
    gbar2 = [beta * a + (1 - beta) * b for a, b in zip(gbar1, G[1], strict=False)]  # [1.25, 0.0]
    lr3 = lr2 * math.exp(es * cos(G[2], gbar2))

    def sign(x):
        return (x > 0) - (x < 0)

    gain3 = [
        gi * math.exp(ep * sign(a * b)) for gi, a, b in zip(gain2, G[2], gbar2, strict=False)
    ]  # 2nd: sign 0, unchanged
    close(out[2][0], [x2[0] - lr3 * gain3[0] * 0.5, x2[1] - lr3 * gain3[1] * 1.0])
    close(opt.state[p]["gain"], gain3)


def test_fedexp_two_rounds():
    sig = [
        {"client_sq_norms_mean": 40.0, "num_clients": 4},
        {"client_sq_norms_mean": 1.0, "num_clients": 4},
    ]
    out, _, _ = run("fedexp", G[:2], signals=sig, lr=1.0, extrapolation_eps=1e-3, eps_decay=0.998)
    # round 0: eta = max(1, 0.5 * 40 / (||g1||^2 + 4 * 1e-3 * 0.998^2)) ; round 1: ratio < 1 -> 1
    eta1 = 0.5 * 40.0 / (2.0 + 4 * 1e-3 * 0.998**2)
    assert out[0][1] == pytest.approx(eta1, rel=1e-12)
    close(out[0][0], [1.0 - eta1, 2.0 + eta1])
    assert out[1][1] == pytest.approx(1.0)
    close(out[1][0], [1.0 - eta1 - 2.0, 2.0 + eta1 - 0.5])


def test_fedhyper_g_is_clipped_server_hd():
    # the published rule (the raw inner product; the default is its cosine, below)
    out, _, _ = run("fedhyper-g", G, lr=1.0, hypergradient="raw")
    # eta2 = clip(1 + <g2, g1>, 0.2, 5) = 2.5 ; eta3 = clip(2.5 + <g3, g2>, ...) = 4.0
    assert [o[1] for o in out] == pytest.approx([1.0, 2.5, 4.0])
    out, _, _ = run("fedhyper-g", [[1.0, 0.0], [-3.0, 0.0]], lr=1.0, hypergradient="raw")
    assert out[1][1] == pytest.approx(0.2)  # 1 - 3 clipped at the floor


def test_fedhyper_gm_follows_the_reference_code():
    out, _, _ = run("fedhyper-gm", G[:3], lr=1.0, hyper_lr=0.1, momentum=0.9)
    x1 = [1.0 - 1.0, 2.0 + 1.0]  # agg = 0, M1 = g1
    close(out[0][0], x1)
    agg2 = 0.1 * (2.0 * 1.0 + 0.5 * -1.0)  # <M1, g2> = 1.5 -> 0.15
    x2 = [x1[i] - ((1 + agg2) * G[1][i] + 0.9 * agg2 * G[0][i]) for i in range(2)]
    close(out[1][0], x2)
    assert out[1][1] == pytest.approx(1 + agg2)
    m2 = [G[1][i] + 0.9 * G[0][i] for i in range(2)]
    agg3 = min(4.0, agg2 + 0.1 * sum(m * g for m, g in zip(m2, G[2], strict=False)))
    close(out[2][0], [x2[i] - ((1 + agg3) * G[2][i] + 0.9 * agg3 * m2[i]) for i in range(2)])


def test_fedhyper_cl_two_steps_with_a_global_update():
    delta = [0.5, -0.5]
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = fedadapt.build_optimizer(
        "fedhyper-cl",
        [p],
        lr=0.1,
        global_coef=0.2,
        max_growth=1.1,
        global_update=[torch.tensor(delta, dtype=torch.float64)],
    )
    p.grad = torch.tensor(G[0], dtype=torch.float64)
    opt.step()
    u1 = [-0.1 * g for g in G[0]]  # [-0.1, 0.1]
    dot_ud = sum(a * b for a, b in zip(u1, delta, strict=False))  # -0.1
    gamma1 = min(1.1, 1 + 0.2 * dot_ud + dot_ud)  # u_0 = Delta: 1 - 0.02 - 0.1 = 0.88
    lr2 = 0.1 * gamma1
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(lr2, rel=1e-12)
    p.grad = torch.tensor(G[1], dtype=torch.float64)
    opt.step()
    u2 = [-lr2 * g for g in G[1]]
    gamma2 = min(
        1.1,
        1
        + 0.2 * sum(a * b for a, b in zip(u2, delta, strict=False))
        + sum(a * b for a, b in zip(u2, u1, strict=False)),
    )
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(lr2 * gamma2, rel=1e-12)
    close(p.detach(), [1.0 + u1[0] + u2[0], 2.0 + u1[1] + u2[1]])


def test_fedhyper_cl_without_global_update_has_no_global_term():
    out, _, _ = run("fedhyper-cl", G[:3], lr=0.1, max_growth=1.1)
    u1 = [-0.1 * g for g in G[0]]
    assert out[0][1] == pytest.approx(0.1)  # no u_0: no adaptation at the first step
    u2 = [-0.1 * g for g in G[1]]
    gamma = min(1.1, 1 + sum(a * b for a, b in zip(u2, u1, strict=False)))
    assert out[1][1] == pytest.approx(0.1 * gamma, rel=1e-12)

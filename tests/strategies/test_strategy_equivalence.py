"""Degenerate equivalences and reference rules on mock replies (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAdam, FedAvg
from strategy_fakes import FakeGrid, tiny_model, worker

import fedadapt
from strategies import FedAdapt, FedExP, FedHyper, build_strategy

NODES = [1, 2, 3, 4]


def _round_replies(strategy, rnd, arrays):
    msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(), FakeGrid(NODES)))
    return msgs, [worker(m) for m in msgs]


def _np(record):
    return {k: a.numpy() for k, a in record.items()}


def test_server_sgd_lr1_equals_flower_fedavg():
    ours = FedAdapt(
        server_optimizer="sgd",
        server_options={"lr": 1.0},
        num_clients=50,
        clients_per_round=8,
        num_workers=4,
        client_options={"lr": 0.1},
    )
    flower = FedAvg()
    arrays = ArrayRecord(tiny_model().state_dict())
    for rnd in range(1, 4):
        _, replies = _round_replies(ours, rnd, arrays)
        mine, _ = ours.aggregate_train(rnd, replies)
        theirs, _ = flower.aggregate_train(rnd, replies)
        for k in mine:
            assert mine[k].dtype == theirs[k].dtype == "float32"
            np.testing.assert_allclose(mine[k].numpy(), theirs[k].numpy(), rtol=1e-6, atol=1e-7)
        arrays = mine


def test_server_adam_matches_flower_fedadam_up_to_bias_correction():
    """Documented difference: Flower's FedAdam bias-corrects with exponent ``round + 1`` and adds
    ``tau`` to sqrt(v) *before* bias correction; fedadapt's ``adam`` is torch's Adam (exponent =
    step count, ``eps`` after bias correction). Calling Flower with ``round - 1`` and taking
    tau = eps -> 0 removes both differences."""
    eta, b1, b2 = 0.05, 0.9, 0.99
    ours = FedAdapt(
        server_optimizer="adam",
        server_options={"lr": eta, "betas": (b1, b2), "eps": 1e-12},
        num_clients=50,
        clients_per_round=8,
        num_workers=4,
        client_options={"lr": 0.1},
    )
    flower = FedAdam(eta=eta, beta_1=b1, beta_2=b2, tau=1e-12)
    arrays = ArrayRecord(tiny_model().state_dict())
    for rnd in range(1, 5):
        _, replies = _round_replies(ours, rnd, arrays)
        flower.current_arrays = {k: a.numpy() for k, a in arrays.items()}
        theirs, _ = flower.aggregate_train(rnd - 1, replies)
        mine, _ = ours.aggregate_train(rnd, replies)
        assert {a.dtype for a in theirs.values()} == {"float64"}  # Flower's quirk
        assert {a.dtype for a in mine.values()} == {"float32"}
        for k in mine:
            np.testing.assert_allclose(mine[k].numpy(), theirs[k].numpy(), rtol=1e-4, atol=1e-6)
        arrays = mine


def _synthetic_round(strategy, rnd, x, delta, n=(3, 5)):
    """Two clients whose weighted mean update is exactly ``delta`` (client updates differ)."""
    from flwr.app import Message, MetricRecord, RecordDict

    arrays = ArrayRecord({"w": torch.from_numpy(x.astype(np.float32))})
    msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(), FakeGrid([1, 2])))
    spread = np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape) * 0.01
    n1, n2 = n
    # n1*(d + a) + n2*(d - n1/n2 a) = (n1+n2) d
    x1, x2 = x + delta + spread, x + delta - (n1 / n2) * spread
    replies = []
    for m, xi, ni in zip(msgs, (x1, x2), (n1, n2), strict=True):
        cid = m.content["config"]["fedadapt.client-ids"][0]
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": torch.from_numpy(xi.astype(np.float32))}),
                "metrics": MetricRecord({"num-examples": ni}),
                "fedadapt.clients": ConfigRecord(
                    {
                        "ids": [cid],
                        "num-examples": [ni],
                        "train-loss": [0.0],
                        "lr": [0.1],
                        "step-mean": [0.1],
                        "step-min": [0.1],
                        "step-max": [0.1],
                        "sq-norm": [float(np.sum((xi.astype(np.float64) - x) ** 2))],
                        "failed-ids": [],
                        "failed-reasons": [],
                    }
                ),
            }
        )
        replies.append(Message(content, reply_to=m))
    out, _ = strategy.aggregate_train(rnd, replies)
    return out["w"].numpy().astype(np.float64)


def test_fedhyper_g_reproduces_the_reference_rule():
    """ALGORITHMS.md §6.3: agg_t = clip(agg_{t-1} + <Delta_{t-1}, Delta_t>, -0.8, 4);
    x_{t+1} = x_t + (1 + agg_t) Delta_t; round 1 only stores Delta_1 (agg stays 0)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=6)
    deltas = [0.3 * base + 0.1 * rng.normal(size=6) for _ in range(4)]
    deltas += [-2.0 * base for _ in range(3)]  # reversal: agg falls to the floor
    deltas += [3.0 * base for _ in range(3)]  # strong alignment: agg hits the ceiling
    strat = FedHyper(variant="G", num_clients=2, clients_per_round=2, num_workers=2)
    x = np.zeros(6, dtype=np.float64)
    x_ref = x.copy()
    agg, prev = 0.0, None
    hit = set()
    for t, d in enumerate(deltas, start=1):
        d32 = d.astype(np.float32).astype(np.float64)
        x_new = _synthetic_round(strat, t, x.astype(np.float32).astype(np.float64), d32)
        if prev is not None:
            agg = float(np.clip(agg + prev @ d32, -0.8, 4.0))
            hit.add(agg)
        x_ref = x + (1.0 + agg) * d32
        np.testing.assert_allclose(x_new, x_ref, rtol=1e-5, atol=1e-5)
        assert abs(strat.history[-1]["server-lr"] - (1.0 + agg)) < 1e-5
        prev, x = d32, x_new
    assert -0.8 in hit and 4.0 in hit  # both clips exercised


def test_fedexp_uses_client_norms_from_replies():
    strat = FedExP(
        num_clients=2, clients_per_round=2, num_workers=2, server_options={"extrapolation_eps": 0.0}
    )
    x = np.zeros(4)
    d = np.array([0.1, -0.2, 0.05, 0.0])
    out = _synthetic_round(strat, 1, x, d)
    # weights 3/8, 5/8; client updates d + a, d - (3/5) a
    spread = np.linspace(-1, 1, 4, dtype=np.float32) * 0.01
    u1, u2 = d + spread, d - 0.6 * spread
    sq = 3 / 8 * u1 @ u1 + 5 / 8 * u2 @ u2
    eta = max(1.0, 0.5 * sq / (d @ d))
    np.testing.assert_allclose(out, x + eta * d, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("fedadapt", {"server_optimizer": "hd", "server_options": {"lr": 1.0, "hyper_lr": 1e-2}}),
        ("fedexp", {}),
        ("fedadam", {"eta": 0.05}),
        ("fedhyper-g", {}),
    ],
)
def test_model_is_the_same_whether_eight_clients_use_eight_workers_or_two(name, kw):
    def run(workers):
        s = build_strategy(
            name,
            num_clients=1000,
            clients_per_round=8,
            num_workers=workers,
            seed=5,
            client_options={"lr": 0.1},
            **kw,
        )
        res = s.start(
            FakeGrid(list(range(100, 100 + workers))),
            ArrayRecord(tiny_model().state_dict()),
            num_rounds=3,
        )
        return res.arrays, s.history

    a8, h8 = run(8)
    a2, h2 = run(2)
    assert [h["sampled-ids"] for h in h8] == [h["sampled-ids"] for h in h2]
    for k in a8:
        assert a8[k].dtype == a2[k].dtype == "float32"
        np.testing.assert_allclose(a8[k].numpy(), a2[k].numpy(), rtol=1e-5, atol=1e-6)


def test_buffers_are_not_server_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    strat = FedAdapt(
        server_optimizer="sgd",
        server_options={"lr": 2.0},
        num_clients=2,
        clients_per_round=2,
        num_workers=2,
        buffer_keys=["1.bias"],
    )
    strat.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), FakeGrid([1, 2]))
    assert strat.param_keys() == ["0.weight", "0.bias", "1.weight"]
    assert list(strat._params) == strat.param_keys()
    assert "fedhyper-g" in fedadapt.available_optimizers()
